"""Streaming Markdown for the TUI: `MarkdownLines` with its lines kept as Textual `Strip`s.

Settled lines never change, so their strips are made once; only the tail's are made anew.
"""

from __future__ import annotations

from rich.console import Console
from textual.strip import Strip

from termchat.markdown_lines import MarkdownLines


class BlockRenderer:
    """Renders a growing Markdown text to `Strip`s at a given width."""

    def __init__(self, text: str = "", console: Console | None = None) -> None:
        self._markdown = MarkdownLines(text, console)
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
