"""The trust boundary: whatever text comes from outside, what reaches the terminal is inert."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from termchat.untrusted import SafeStream, SurrogateJoiner, json_text, repair, safe, safe_line
from tests.support.hostile import FORBIDDEN, HOSTILE

# Text built mostly from the pieces attackers use, with ordinary characters between them.
pieces = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=8),
                   st.sampled_from(["a", "é", "🎉", "\ud83c", "\udf89", "\t", "\n", "[", "]",
                                    ";", "\\", "\x07", "52", "m"]))
texts = st.lists(pieces, max_size=30).map("".join)


def test_an_osc_52_clipboard_write_is_removed_whole() -> None:
    assert safe("before\x1b]52;c;aGVsbG8=\x07after") == "beforeafter"


def test_csi_title_and_screen_sequences_are_removed() -> None:
    assert safe("a\x1b[2Jb\x1b]0;title\x07c\x1b[31mred\x1b[0m") == "abcred"


def test_an_unterminated_string_sequence_ends_at_the_line() -> None:
    assert safe("x\x1b]0;title\nnext line") == "x\nnext line"


def test_bidi_overrides_are_removed_and_other_unicode_kept() -> None:
    assert safe("abc\u202edcba\u2066x\u2069 é 🎉 \u200d 中文") == "abcdcbax é 🎉 \u200d 中文"


def test_carriage_returns_become_newlines() -> None:
    assert safe("a\r\nb\rc\u2028d") == "a\nb\nc\nd"


def test_lone_surrogates_are_replaced_and_pairs_joined() -> None:
    assert safe("\ud83c\udf89 \ud83c x \udf89") == "🎉 \ufffd x \ufffd"
    assert repair("\ud83c\udf89") == "🎉"


def test_sequences_split_across_chunks_are_removed_whole() -> None:
    stream = SafeStream()
    chunks = ["Hi\x1b[2J\x1b[H there\x1b]0;pwn", "ed\x07 and\x1b", "[5A up\r", "\n",
              "tab\there \x9b2J bell\x07 \x1bP dcs \x1b\\ ok\x1b"]
    out = "".join(stream.feed(chunk) for chunk in chunks) + stream.flush()
    assert out == "Hi there and up\ntab\there  bell  ok"


def test_surrogate_halves_split_across_chunks_are_joined() -> None:
    joiner = SurrogateJoiner()
    out = joiner.feed("a\ud83c") + joiner.feed("\udf89b") + joiner.feed("\ud83c")
    assert out + joiner.flush() == "a🎉b\ufffd"


def test_safe_line_is_one_line() -> None:
    assert safe_line("server  said:\n\x1b[2J  no\r\nway") == "server said: no way"


def test_json_text_escapes_what_a_terminal_could_obey_and_keeps_the_data() -> None:
    value = {"text": "a\x9b2J\u202eb\x1b[0m\n"}
    out = json_text(value)
    assert not set(out) & FORBIDDEN
    assert json.loads(out) == value


@given(texts)
@example("\x1b]52;c;" + "A" * 10_000 + "\x07")
def test_nothing_safe_lets_through_is_a_control_character(text: str) -> None:
    out = safe(text)
    assert not set(out) & FORBIDDEN
    assert "\x1b" not in out
    out.encode("utf-8")


@given(texts, st.lists(st.integers(min_value=0, max_value=400), max_size=12))
@example("a\r", [2])
@example("\x1b]0;ti", [3, 5])
@example("\ud83c\udf89", [1])
def test_streamed_pieces_add_up_to_the_whole(text: str, cuts: list[int]) -> None:
    stream = SafeStream()
    bounds = sorted({min(cut, len(text)) for cut in cuts})
    out = []
    start = 0
    for bound in [*bounds, len(text)]:
        piece = stream.feed(text[start:bound])
        assert not set(piece) & FORBIDDEN
        out.append(piece)
        start = bound
    out.append(stream.flush())
    assert "".join(out) == safe(text)


@given(texts, st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_streamed_surrogate_halves_join_as_if_whole(text: str, cuts: list[int]) -> None:
    joiner = SurrogateJoiner()
    bounds = sorted({min(cut, len(text)) for cut in cuts})
    out, start = [], 0
    for bound in [*bounds, len(text)]:
        out.append(joiner.feed(text[start:bound]))
        start = bound
    out.append(joiner.flush())
    assert "".join(out) == repair(text)
