"""Incremental Markdown rendering for both front ends: a growing reply rendered to lines of
Rich segments, where only the last, still-growing top-level block is re-rendered.

A top-level block is settled once another block follows it whose first line is complete:
later text cannot change how it renders, so its lines are rendered once and kept. At every
point the result is line-for-line what Rich renders for the whole text at once, at a cost per
update proportional to the last block, not to the reply.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.token import Token
from rich.console import Console
from rich.markdown import Markdown
from rich.segment import Segment

CODE_THEME = "monokai"
Line = list[Segment]


def markdown_parser() -> MarkdownIt:
    """The parser configuration of rich.markdown.Markdown, so blocks split where Rich's own
    rendering would put them."""
    return MarkdownIt().enable("strikethrough").enable("table")


def code_blocks(text: str) -> list[str]:
    """The bodies of the fenced and indented code blocks in `text`, in order."""
    return [token.content for token in markdown_parser().parse(text)
            if token.type in ("fence", "code_block")]


class _Markdown(Markdown):
    """rich's Markdown with a parser made once: rich builds a new MarkdownIt per instance,
    most of the cost of re-rendering a short tail. Every other attribute is copied from an
    instance rich made itself, so this follows rich's own settings."""

    _parser = markdown_parser()
    _template: dict[str, object] = {}

    def __init__(self, markup: str) -> None:
        if not _Markdown._template:
            _Markdown._template = dict(Markdown("", code_theme=CODE_THEME).__dict__)
        self.__dict__.update(_Markdown._template)
        self.markup = markup
        self.parsed = self._parser.parse(markup)


class MarkdownLines:
    """A growing Markdown text and its rendering at a given width."""

    def __init__(self, text: str = "", console: Console | None = None) -> None:
        # Set before the first `lines()`; the TUI's widgets get the app's once mounted.
        self.console = console
        self._parser = markdown_parser()
        self._parts: list[str] = [text] if text else []
        self._dirty = bool(text)
        self._width = 0
        # Text up to `_settled_end` is rendered into `_settled`; the rest is the tail.
        self._settled_end = 0
        self._settled: list[Line] = []
        self._settled_blank_after = False
        self._tail: list[Line] = []
        self._tail_end = -1

    @property
    def text(self) -> str:
        # Parts are joined on read, so appending stays O(1) however long the reply grows.
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def append(self, fragment: str) -> None:
        if fragment:
            self._parts.append(fragment)
            self._dirty = True

    @property
    def stable_lines(self) -> int:
        """How many leading lines no later text can change (at the current width)."""
        return len(self._settled)

    def lines(self, width: int) -> list[Line]:
        """All lines at `width`, without trailing blank ones; cheap when nothing changed."""
        width = max(width, 1)
        if width != self._width:
            self._width = width
            self._settled_end = 0
            self._settled = []
            self._settled_blank_after = False
            self._tail_end = -1
            self._dirty = True
        if self._dirty:
            self._update()
            self._dirty = False
        if not self._tail:
            return _trim_end(self._settled)
        if self._needs_gap(self._tail):
            return [*self._settled, [Segment(" " * width)], *self._tail]
        return self._settled + self._tail

    def _needs_gap(self, lines: list[Line]) -> bool:
        """Whether Rich would put a blank line between the settled lines and `lines`.

        Rich separates blocks with one blank line, except after a horizontal rule; a block
        that holds other blocks (a list, a quote) renders its own leading blank line.
        """
        return bool(self._settled and lines and self._settled_blank_after
                    and not _is_blank(lines[0]))

    def _update(self) -> None:
        text = self.text
        pending = text[self._settled_end:]
        tokens = self._parser.parse(pending)
        blocks = [t for t in tokens if t.level == 0 and t.nesting >= 0 and t.map]
        if len(blocks) > 1 and "\n" not in pending[_offset_of_line(pending, _start(blocks[-1])):]:
            # The last block's first line is unfinished and may yet join the block before it
            # ("2" becoming "2. item" of a loose ordered list): that block is not settled.
            blocks.pop()
        if len(blocks) > 1:
            boundary = _offset_of_line(pending, _start(blocks[-1]))
            self._settle(pending[:boundary], blank_after=blocks[-2].type != "hr")
            self._settled_end += boundary
            pending = pending[boundary:]
        if self._tail_end != len(text):
            self._tail = _trim_end(self._render(pending)) if pending.strip() else []
            self._tail_end = len(text)

    def _settle(self, source: str, blank_after: bool) -> None:
        # Settled lines keep their trailing blank lines: in the whole document they are there.
        lines = self._render(source)
        if self._needs_gap(lines):
            self._settled.append([Segment(" " * self._width)])
        self._settled.extend(lines)
        self._settled_blank_after = blank_after

    def _render(self, source: str) -> list[Line]:
        assert self.console is not None, "MarkdownLines.console is not set"
        options = self.console.options.update_width(self._width)
        return self.console.render_lines(_Markdown(source), options, pad=True,
                                         new_lines=False)


def _start(token: Token) -> int:
    assert token.map is not None
    return token.map[0]


def _offset_of_line(text: str, line: int) -> int:
    offset = 0
    for _ in range(line):
        offset = text.index("\n", offset) + 1
    return offset


def _trim_end(lines: list[Line]) -> list[Line]:
    """Without trailing blank lines (Rich ends some blocks with one)."""
    end = len(lines)
    while end and _is_blank(lines[end - 1]):
        end -= 1
    return lines if end == len(lines) else lines[:end]


def _is_blank(line: Line) -> bool:
    """No visible text and no background: a code block's padding line is not blank."""
    return all(not segment.text.strip()
               and (segment.style is None or segment.style.bgcolor is None)
               for segment in line)
