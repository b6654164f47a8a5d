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


class Prerender:
    """A stored reply rendered ahead of being shown, whole, in a thread: neither a frame nor
    a key waits for it, however long one of its blocks (a table, a long code block) takes to
    render, and mounting it then costs nothing."""

    def __init__(self, text: str, console: Console) -> None:
        self._text = text
        self.renderer = BlockRenderer(console=console)
        self.started = False
        self.done = False
        """Set once `run` has rendered all of it: only then is `renderer` anyone else's."""

    def run(self, width: int) -> None:
        """Render all of it at `width` (in a thread, once)."""
        self.renderer.append(self._text)
        self.renderer.lines(width)
        self.done = True
