"""Streaming Markdown for the TUI: `MarkdownLines` with its lines kept as Textual `Strip`s.

Settled lines never change, so their strips are made once; only the tail's are made anew.
"""

from __future__ import annotations

from rich.console import Console
from textual.strip import Strip

from termchat.markdown_lines import MarkdownLines


class BlockRenderer:
    """Renders a growing Markdown text to `Strip`s at a given width."""

    def __init__(self, text: str = "", console: Console | None = None, *,
                 plain_code: bool = False) -> None:
        self._markdown = MarkdownLines(text, console, plain_code=plain_code)
        self._width = 0
        self._settled: list[Strip] = []

    @property
    def console(self) -> Console | None:
        return self._markdown.console

    @console.setter
    def console(self, console: Console) -> None:
        self._markdown.console = console

    @property
    def text(self) -> str:
        return self._markdown.text

    def append(self, fragment: str) -> None:
        self._markdown.append(fragment)

    @property
    def stable_lines(self) -> int:
        """How many leading lines no later text can change (at the current width)."""
        return self._markdown.stable_lines

    def lines(self, width: int) -> list[Strip]:
        """All lines at `width`; cheap when nothing changed since the last call."""
        lines = self._markdown.lines(width)
        if width != self._width:
            self._width = width
            self._settled = []
        stable = min(self._markdown.stable_lines, len(lines))
        settled = self._settled
        settled.extend(Strip(line, width) for line in lines[len(settled):stable])
        return settled[:stable] + [Strip(line, width) for line in lines[stable:]]


# Text rendered ahead per step: a few milliseconds of Markdown at a time.
PRERENDER_CHARS = 1500


class Prerender:
    """A stored reply rendered ahead of being shown, a slice at a time in idle moments, so
    mounting it costs nothing."""

    def __init__(self, text: str, console: Console) -> None:
        self._text = text
        self._fed = 0
        self.renderer = BlockRenderer(console=console)

    @property
    def done(self) -> bool:
        return self._fed >= len(self._text)

    def step(self, width: int, seconds: float) -> bool:
        """Render on at `width` for about `seconds`; True once all of it is rendered."""
        import time

        deadline = time.perf_counter() + seconds
        while True:
            if self._fed < len(self._text):
                self.renderer.append(self._text[self._fed:self._fed + PRERENDER_CHARS])
                self._fed += PRERENDER_CHARS
            self.renderer.lines(width)
            if self.done or time.perf_counter() >= deadline:
                return self.done
