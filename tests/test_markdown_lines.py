"""Incremental Markdown rendering: at every chunk boundary, what the streaming renderer shows
is line for line what Rich renders for the whole text so far."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rich.console import Console
from textual.strip import Strip

from termchat.markdown_lines import (
    MarkdownLines,
    block_starts,
    code_blocks,
    fence_languages,
    full_markdown,
    load_highlighters,
)
from termchat.sample import chunked, long_reply
from termchat.tui.blocks import BlockRenderer

EDGES = (
    "Intro paragraph.\n\n---\n\n- a list right after a rule\n- second\n\n---\n\n"
    "Paragraph after a rule\n\n> a quote\n> on two lines\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    "```python\nprint('a fence right after a table')\n```\n\n1. one\n\n2. two (a loose list)\n\n"
    "Setext heading\n--------------\n\n    indented code\n\nEnd with **bold** and `code`.\n"
)

# Blocks whose first line could, as it grows, still join the block before it, and blocks that
# cannot: a paragraph after a blank line is settled apart before its first line ends.
JOINS = (
    "- a\n- b\n\nafter a list, settled early\n\n1. x\n\n2023 was a year\n\n1. y\n\n"
    "2. loose item\n\n> q\n\n> r, a second quote\n\n| a |\n|---|\n| 1 |\n\n"
    "|not a table\n\n* star item\n\n*emphasis* paragraph\n\n- item\n\n  indented "
    "continuation\n\n```\ncode\n```\n\n[ref]: http://example.com\n\n![img](u) and "
    "[ref]\n\n# heading\n\n#hashtag paragraph\n\npara\nlazy line\n\n+ plus\n\n"
    "```\nfence\n```\n- item right after a fence\n# heading\n- item after a heading\n\n"
    "| t |\n|---|\n| 1 |\n\n- item after a table\n\nparagraph\n\n- item after a paragraph\n\n"
    "    indented code\n\n    continued\n\n> quote\n\n- after a quote\n\n***\n- after a rule\n"
)

# Bullet lists settle item by item: nested lists, code and paragraphs inside items, loose
# items, a change of marker (a new list), lazy continuation and a list ending.
LISTS = (
    "- one\n- two\n  - nested a\n  - nested b\n- three\n\n  second paragraph of three\n"
    "- four with code:\n\n  ```python\n  x = 1\n  ```\n- five\nlazy continuation of five\n"
    "- six\n\n- seven, loose\n* star list\n* star two\n\n1. ordered\n2. two\n\n"
    "- last list\n- > quoted item\n- end\n\nAfter the lists.\n"
)


def full_render(console: Console, text: str, width: int) -> list[str]:
    options = console.options.update_width(width)
    lines = console.render_lines(full_markdown(text), options, pad=True, new_lines=False)
    rendered = [Strip(line, width) for line in lines]
    while rendered and not rendered[-1].text.strip() and all(
            seg.style is None or seg.style.bgcolor is None for seg in rendered[-1]):
        rendered.pop()
    return [repr(list(strip)) for strip in rendered]


@pytest.mark.parametrize(("text", "pieces"), [
    (EDGES, 150),
    (JOINS, len(JOINS)),
    (LISTS, len(LISTS)),
    (long_reply(3_000, seed=1), 250),
    (long_reply(3_000, seed=2), 120),
])
def test_every_intermediate_render_equals_a_full_render(text: str, pieces: int) -> None:
    console = Console(width=80, force_terminal=True, color_system="truecolor")
    renderer = BlockRenderer(console=console)
    so_far = ""
    for piece in chunked(text, pieces):
        renderer.append(piece)
        so_far += piece
        shown = [repr(list(strip)) for strip in renderer.lines(80)]
        assert shown == full_render(console, so_far, 80), f"differs after {so_far[-60:]!r}"
    assert renderer.text == text
    # A new width re-renders everything, still identical to a full render.
    assert [repr(list(s)) for s in renderer.lines(57)] == full_render(console, text, 57)


def test_settled_lines_are_stable_while_the_tail_grows() -> None:
    console = Console(width=60, force_terminal=True)
    lines = MarkdownLines(console=console)
    lines.append("First paragraph.\n\nSecond paragraph,\nstill")
    before = lines.lines(60)
    stable = lines.stable_lines
    assert stable >= 1
    lines.append(" growing with more words.\n\nThird.\n")
    after = lines.lines(60)
    assert after[:stable] == before[:stable]
    assert lines.stable_lines > stable


def test_code_blocks_are_found_in_order() -> None:
    text = "x\n\n```python\na = 1\n```\n\ntext\n\n    indented\n\n```\nb\n```\n"
    assert code_blocks(text) == ["a = 1\n", "indented\n", "b\n"]


# Markdown's building blocks and the characters that have broken renderers: carriage returns,
# lone surrogates, tabs, zero-width and bidi characters, NUL.
MARKDOWN_PIECES = st.sampled_from([
    "# ", "## ", "- ", "* ", "+ ", "1. ", "2) ", "> ", "```", "```python", "~~~", "    ", "  ",
    "| a | b |", "|---|---|", "---", "***", "**", "_", "`", "[x](u)", "![i](u)", "<b>", "\\",
    "\n", "\n\n", "\r", "\r\n", "\t", "\u200b", "\u202e", "\ud83c", "\udf89", "\x00",
    "word", "two words", "é", "中文", "🎉", "1", "9.", ":", "=", "==="])
MARKDOWN_TEXT = st.lists(st.one_of(MARKDOWN_PIECES, st.text(max_size=4)), max_size=40).map(
    "".join)


@given(MARKDOWN_TEXT, st.lists(st.integers(min_value=0, max_value=300), max_size=8),
       st.sampled_from([20, 57, 80]))
@example("a\rb\r", [2], 40)
@example("- x\r\n- y\r", [3, 4], 40)
def test_any_text_cut_anywhere_renders_as_a_full_render_and_never_raises(
        text: str, cuts: list[int], width: int) -> None:
    console = Console(width=width, force_terminal=True, color_system="truecolor")
    renderer = BlockRenderer(console=console)
    so_far, start = "", 0
    for bound in [*sorted({min(cut, len(text)) for cut in cuts}), len(text)]:
        renderer.append(text[start:bound])
        so_far += text[start:bound]
        start = bound
        shown = [repr(list(strip)) for strip in renderer.lines(width)]
        normalised = so_far.replace("\r\n", "\n").replace("\r", "\n")
        assert shown == full_render(console, normalised, width), f"after {so_far[-60:]!r}"


POEM = "Roses are red,\nviolets are blue;\n\n- a list item\n  with a second line\n"


def test_a_single_newline_is_a_line_break_as_the_model_wrote_it() -> None:
    console = Console(width=60, force_terminal=True)
    lines = MarkdownLines(console=console)
    for piece in chunked(POEM, 9):
        lines.append(piece)
    shown = [Strip(line).text.rstrip() for line in lines.lines(60)]
    assert shown[:2] == ["Roses are red,", "violets are blue;"]
    assert " • a list item" in shown and "   with a second line" in shown


@given(MARKDOWN_TEXT)
@example("a\r\rb\r\r\rc\n\nd")
@example("```python\nx = 1\n```\n\n| a |\n|---|\n| 1 |\n\n- item\n")
def test_block_starts_are_line_starts_and_any_text_from_one_renders(text: str) -> None:
    # What a long reply shows first when a conversation opens: its text from a block start.
    starts = block_starts(text)
    assert starts == sorted(set(starts))
    assert all(start == 0 or text[start - 1] in "\r\n" for start in starts)
    console = Console(width=40, force_terminal=True, color_system="truecolor")
    for start in starts[-2:]:
        MarkdownLines(text[start:], console, plain_code=True).lines(40)
    load_highlighters(fence_languages(text))  # whatever a fence's info string says


def test_plain_code_is_the_highlighted_code_line_for_line_in_one_colour() -> None:
    text = "Before.\n\n```python\ndef f(x):\n    return x  # a comment long enough to wrap\n```\n"
    console = Console(width=30, force_terminal=True, color_system="truecolor")
    coloured = MarkdownLines(text, console).lines(30)
    plain = MarkdownLines(text, console, plain_code=True).lines(30)
    assert ["".join(s.text for s in line) for line in plain] == \
        ["".join(s.text for s in line) for line in coloured]
    assert plain != coloured
