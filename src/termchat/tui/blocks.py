"""Incremental Markdown rendering: a growing document rendered to lines, where only the last,
still-growing top-level block is re-rendered as text arrives.

Every top-level block but the last is settled: later text cannot change how it renders, so
its lines are rendered once and kept. The result is line-for-line what Rich renders for the
whole document at once, at a cost per update proportional to the last block, not the reply.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from rich.console import Console
from rich.markdown import Markdown
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

CODE_THEME = "monokai"


def _parser() -> MarkdownIt:
    # The same parser configuration as rich.markdown.Markdown, so blocks split where Rich's
    # own rendering would put them.
    return MarkdownIt().enable("strikethrough").enable("table")


class BlockRenderer:
    """Renders a growing Markdown text to `Strip`s at a given width."""

    def __init__(self, text: str = "", console: Console | None = None) -> None:
        # Set before the first `lines()`; widgets get theirs from the app once mounted.
        self.console = console
        self._parser = _parser()
        self._parts: list[str] = [text] if text else []
        self._text_cache = text
        self._dirty = bool(text)
        self._width = 0
        # Text up to `_settled_end` is rendered into `_settled`; the rest is the tail.
        self._settled_end = 0
        self._settled: list[Strip] = []
        self._settled_blank_after = False
        self._tail: list[Strip] = []
        self._tail_end = -1

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        self._text_cache = self._parts[0] if self._parts else ""
        return self._text_cache

    def append(self, fragment: str) -> None:
        if fragment:
            self._parts.append(fragment)
            self._dirty = True

    @property
    def stable_lines(self) -> int:
        """How many leading lines no later text can change (at the current width)."""
        return len(self._settled)

    def lines(self, width: int) -> list[Strip]:
        """All lines at `width`; cheap when nothing changed since the last call."""
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
            return [*self._settled, Strip.blank(width), *self._tail]
        return self._settled + self._tail

    def _needs_gap(self, strips: list[Strip]) -> bool:
        """Whether Rich would put a blank line between the settled lines and `strips`.

        Rich separates blocks with one blank line, except after a horizontal rule; a block
        that holds other blocks (a list, a quote) renders its own leading blank line.
        """
        return bool(self._settled and strips and self._settled_blank_after
                    and not _starts_blank(strips))

    def _update(self) -> None:
        text = self.text
        pending = text[self._settled_end:]
        tokens = self._parser.parse(pending)
        starts = [t.map[0] for t in tokens if t.level == 0 and t.nesting >= 0 and t.map]
        if len(starts) > 1:
            boundary = _offset_of_line(pending, starts[-1])
            last_kind = _last_block_type(tokens, starts[-2])
            self._settle(pending[:boundary], blank_after=last_kind != "hr")
            self._settled_end += boundary
            pending = pending[boundary:]
        if self._tail_end != len(text):
            self._tail = _trim_end(self._render(pending)) if pending.strip() else []
            self._tail_end = len(text)

    def _settle(self, source: str, blank_after: bool) -> None:
        strips = self._render(source)
        if self._needs_gap(strips):
            self._settled.append(Strip.blank(self._width))
        self._settled.extend(strips)
        self._settled_blank_after = blank_after

    def _render(self, source: str) -> list[Strip]:
        assert self.console is not None, "BlockRenderer.console is not set"
        markdown = Markdown(source, code_theme=CODE_THEME)
        options = self.console.options.update_width(self._width)
        lines = self.console.render_lines(markdown, options, pad=True, new_lines=False)
        return [Strip(line, self._width) for line in lines]


def _offset_of_line(text: str, line: int) -> int:
    offset = 0
    for _ in range(line):
        offset = text.index("\n", offset) + 1
    return offset


def _last_block_type(tokens: list, start_line: int) -> str:
    for token in tokens:
        if token.level == 0 and token.nesting >= 0 and token.map and token.map[0] == start_line:
            return token.type
    return ""


def _trim_end(strips: list[Strip]) -> list[Strip]:
    """Without trailing blank lines (Rich ends some blocks with one)."""
    end = len(strips)
    while end and _is_blank(list(strips[end - 1])):
        end -= 1
    return strips if end == len(strips) else strips[:end]


def _starts_blank(strips: list[Strip]) -> bool:
    return _is_blank(list(strips[0]))


def _is_blank(line: list[Segment]) -> bool:
    return all(not segment.text.strip() and not _has_background(segment.style)
               for segment in line)


def _has_background(style: Style | None) -> bool:
    return style is not None and style.bgcolor is not None



def code_blocks(text: str) -> list[str]:
    """The bodies of the fenced and indented code blocks in `text`, in order."""
    return [token.content for token in _parser().parse(text)
            if token.type in ("fence", "code_block")]
