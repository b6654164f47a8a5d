"""Incremental Markdown rendering for both front ends: a growing reply rendered to lines of
Rich segments, where only the last, still-growing top-level block is re-rendered.

A top-level block is settled once another block follows it whose first line is complete:
later text cannot change how it renders, so its lines are rendered once and kept. At every
point the result is line-for-line what Rich renders for the whole text at once, at a cost per
update proportional to the last block, not to the reply.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from typing import ClassVar

from markdown_it import MarkdownIt
from markdown_it.token import Token
from rich.console import Console
from rich.markdown import CodeBlock, Markdown, MarkdownElement
from rich.segment import Segment

from termchat.present import CODE_THEME

Line = list[Segment]


def markdown_parser() -> MarkdownIt:
    """The parser configuration of rich.markdown.Markdown, so blocks split where Rich's own
    rendering would put them."""
    return MarkdownIt().enable("strikethrough").enable("table")


def parse(parser: MarkdownIt, text: str) -> list[Token]:
    """`text`'s tokens, with every single newline inside a paragraph a line break: a reply's
    poem, address or list of lines shows as the model wrote it (as in a chat, not in a
    document, where a single newline joins two lines of one paragraph)."""
    tokens = parser.parse(text)
    for token in tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"
    return tokens


def full_markdown(text: str) -> Markdown:
    """`text` as one Rich renderable, rendered as the incremental renderer renders it."""
    return _Markdown(text)


def block_starts(text: str) -> list[int]:
    """The offsets in `text` where its top-level blocks begin, each at the start of a line:
    the text from any of them on renders alone as the end of the whole text renders."""
    # Lines as the parser counts them: CRLF and a lone CR end one too.
    lines = [0, *(match.end() for match in _LINE_END.finditer(text))]
    tokens = _Markdown._parser.parse(text)
    return [lines[tokens[index].map[0]] for index in _block_indices(tokens)]  # type: ignore[index]


_LINE_END = re.compile(r"\r\n|\r|\n")


def _block_indices(tokens: list[Token]) -> list[int]:
    """Where in `tokens` each top-level block opens."""
    return [i for i, t in enumerate(tokens) if t.level == 0 and t.nesting >= 0 and t.map]


def code_blocks(text: str) -> list[str]:
    """The bodies of the fenced and indented code blocks in `text`, in order."""
    return [token.content for token in markdown_parser().parse(text)
            if token.type in ("fence", "code_block")]


def fence_languages(text: str) -> list[str]:
    """The languages `text`'s fenced code blocks name, in order ("text" for none); with its
    own parser, so a thread can call it."""
    return [token.info.partition(" ")[0] or "text" for token in markdown_parser().parse(text)
            if token.type == "fence"]


class _Markdown(Markdown):
    """rich's Markdown with a parser made once: rich builds a new MarkdownIt per instance,
    most of the cost of re-rendering a short tail. Every other attribute is copied from an
    instance rich made itself, so this follows rich's own settings."""

    _parser = markdown_parser()
    _template: dict[str, object] = {}

    def __init__(self, markup: str, parsed: list[Token] | None = None) -> None:
        if not _Markdown._template:
            _Markdown._template = dict(Markdown("", code_theme=CODE_THEME).__dict__)
        self.__dict__.update(_Markdown._template)
        self.markup = markup
        self.parsed = parse(self._parser, markup) if parsed is None else parsed


class _PlainCode(CodeBlock):
    """A code block as it looks highlighted, line for line, but in one colour: no
    highlighter is loaded (the first use of one compiles its rules, 20-80 ms)."""

    @classmethod
    def create(cls, markdown: Markdown, token: Token) -> CodeBlock:
        return cls("text", markdown.code_theme)


class _PlainCodeMarkdown(_Markdown):
    elements: ClassVar[dict[str, type[MarkdownElement]]] = {
        **_Markdown.elements, "fence": _PlainCode, "code_block": _PlainCode}


# The languages replies most often fence code in: their highlighters are loaded ahead (in a
# thread, once the app is up), so the first such block is not a stall in a streaming reply.
COMMON_LANGUAGES = ("python", "bash", "javascript", "typescript", "json", "sql", "rust", "go",
                    "c", "cpp", "java", "html", "yaml", "toml", "diff")


def load_highlighters(languages: Iterable[str]) -> None:
    """Load the highlighters of `languages`, each compiled once per process (a thread can
    do it before text in them is rendered)."""
    from rich.syntax import Syntax

    for language in dict.fromkeys(languages):
        with contextlib.suppress(Exception):  # an unknown language is shown plain
            _ = Syntax("", language).lexer


class MarkdownLines:
    """A growing Markdown text and its rendering at a given width (with `plain_code`, its
    code blocks in one colour)."""

    def __init__(self, text: str = "", console: Console | None = None, *,
                 plain_code: bool = False) -> None:
        # Set before the first `lines()`; the TUI's widgets get the app's once mounted.
        self.console = console
        self._kind = _PlainCodeMarkdown if plain_code else _Markdown
        self._parser = markdown_parser()
        self._parts: list[str] = []
        self._after_cr = False
        self._dirty = False
        self.append(text)
        self._width = 0
        # Text up to `_settled_end` is rendered into `_settled`; the rest is the tail.
        self._settled_end = 0
        self._settled: list[Line] = []
        self._settled_blank_after = False
        # The settled lines end with items of a list that may go on.
        self._mid_list = False
        self._tail: list[Line] = []
        self._tail_end = -1

    @property
    def text(self) -> str:
        # Parts are joined on read, so appending stays O(1) however long the reply grows.
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def append(self, fragment: str) -> None:
        # Line breaks as the parser reads them (CRLF and CR are newlines): token line numbers
        # then count the same lines as the text. A CR ending one fragment was a newline
        # already; an LF starting the next one is part of it.
        if self._after_cr and fragment.startswith("\n"):
            fragment = fragment[1:]
        if not fragment:
            return
        self._after_cr = fragment.endswith("\r")
        if "\r" in fragment:
            fragment = fragment.replace("\r\n", "\n").replace("\r", "\n")
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
            self._mid_list = False
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
        tokens = parse(self._parser, pending)
        blocks = _block_indices(tokens)
        if (len(blocks) > 1
                and "\n" not in pending[_offset_of_line(pending, _start(tokens[blocks[-1]])):]
                and not _cannot_join_the_block_before(
                    pending, tokens[blocks[-2]], tokens[blocks[-1]])):
            # The last block's first line is unfinished and may yet join the block before it
            # ("2" becoming "2. item" of a loose ordered list): that block is not settled.
            blocks.pop()
        head = blocks[-1] if blocks else None
        line = 0  # `pending` starts at this line of the text `tokens` were parsed from
        if head is not None and len(blocks) > 1:
            line = _start(tokens[head])
            boundary = _offset_of_line(pending, line)
            # The blocks before `head` are rendered from the tokens at hand: the same ones
            # parsing them alone would give, since they end where a top-level block starts.
            self._settle(pending[:boundary], blank_after=tokens[blocks[-2]].type != "hr",
                         parsed=tokens[:head])
            self._settled_end += boundary
            pending = pending[boundary:]
        reparse = line != 0
        if head is not None and tokens[head].type == "bullet_list_open":
            # The items of a bullet list render one by one: they settle like blocks, so a long
            # list is not re-rendered whole with every chunk of its last item.
            items = _settled_items(pending, tokens, head, line)
            if items:
                self._settle(pending[:items], blank_after=False, items=True)
                self._settled_end += items
                pending = pending[items:]
                reparse = True
        if self._tail_end != len(text):
            parsed = None if reparse else tokens
            self._tail = _trim_end(self._render(pending, parsed)) if pending.strip() else []
            self._tail_end = len(text)

    def _settle(self, source: str, blank_after: bool, items: bool = False,
                parsed: list[Token] | None = None) -> None:
        # Settled blocks keep their trailing blank lines: in the whole document they are
        # there. Between the `items` of a list that goes on there are none.
        lines = self._render(source, parsed)
        if items:
            lines = _trim_end(lines)
        if self._needs_gap(lines):
            self._settled.append([Segment(" " * self._width)])
        self._settled.extend(lines)
        self._settled_blank_after = blank_after
        self._mid_list = items

    def _render(self, source: str, parsed: list[Token] | None = None) -> list[Line]:
        """`source` rendered as Rich renders it alone (`parsed`: its tokens, if at hand),
        as it shows after the settled lines."""
        assert self.console is not None, "MarkdownLines.console is not set"
        options = self.console.options.update_width(self._width)
        lines = self.console.render_lines(self._kind(source, parsed), options, pad=True,
                                          new_lines=False)
        if self._mid_list and lines and _is_blank(lines[0]):
            # Rich starts a list with a blank line; the rest of a list that began in the
            # settled lines goes on right after them.
            del lines[0]
        return lines


def _start(token: Token) -> int:
    assert token.map is not None
    return token.map[0]


def _cannot_join_the_block_before(text: str, previous: Token, block: Token) -> bool:
    """Whether `block` stays apart from `previous` whatever follows on its unfinished first
    line. A long paragraph is a single source line: without this the block before it would be
    re-rendered with every chunk of the paragraph."""
    if previous.type in ("fence", "heading_open", "hr"):
        return True  # Closed, and nothing continues them.
    line = _start(block)
    if line == 0:
        return False
    start = _offset_of_line(text, line - 1)
    end = text.index("\n", start)
    if text[start:end].strip():
        return False  # No blank line between: it may yet be a lazy continuation.
    if previous.type not in ("bullet_list_open", "ordered_list_open", "code_block"):
        return True  # A blank line ended the paragraph, quote, table or HTML before it.
    # A list goes on with an indented line or a new item; an indented code block with an
    # indented line. Neither starts with any of these.
    first = text[end + 1:end + 2]
    return first.isalpha() or first in "#>`|!["


def _settled_items(text: str, tokens: list[Token], head: int, line: int) -> int:
    """How much of `text` (which starts at source line `line` of `tokens`, with the bullet
    list at `tokens[head]`) is whole items of that list no later text can change: those
    before the last item whose first line is complete."""
    starts = []
    for token in tokens[head + 1:]:
        if token.level == 0:
            break
        if token.type == "list_item_open" and token.level == 1:
            starts.append(_start(token) - line)
    if len(starts) < 2:
        return 0
    last = _offset_of_line(text, starts[-1])
    if "\n" in text[last:]:
        return last
    return _offset_of_line(text, starts[-2]) if len(starts) > 2 else 0


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
