"""The terminal driver over a real pseudo-terminal: Enters typed before termchat took the
terminal over (in line mode, where ICRNL makes them line feeds) are Enter, later Ctrl+J is
not."""

from __future__ import annotations

import os
import pty
import time
from collections.abc import Iterator

import pytest
from textual import events

from termchat.tui.driver import LineModeKeys, typed_in_line_mode


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal in line mode: (the terminal's side, the program's side)."""
    outer, inner = pty.openpty()
    yield outer, inner
    os.close(outer)
    os.close(inner)


def wait_readable(inner: int, count: int) -> None:
    """Until `count` bytes reached the line discipline (the pty hands them over async)."""
    deadline = time.monotonic() + 5
    while typed_in_line_mode(inner) < count:
        assert time.monotonic() < deadline, "the typed bytes never reached the terminal"
        time.sleep(0.01)


def test_whole_lines_typed_in_line_mode_are_counted(terminal: tuple[int, int]) -> None:
    outer, inner = terminal
    assert typed_in_line_mode(inner) == 0
    os.write(outer, "héllo\rsecond\rpartial".encode())
    wait_readable(inner, 14)
    # Two lines of 6 + 1 and 6 + 1 bytes ("é" is two); the partial line has no Enter.
    assert typed_in_line_mode(inner) == 14
    # Read a line at a time (line mode), each Enter now a line feed.
    assert [os.read(inner, 100), os.read(inner, 100)] == ["héllo\n".encode(), b"second\n"]


def test_a_descriptor_that_is_not_a_terminal_has_nothing_typed() -> None:
    read, write = os.pipe()
    os.close(write)
    try:
        assert typed_in_line_mode(read) == 0
        assert typed_in_line_mode(12345) == 0  # not open at all
    finally:
        os.close(read)


def keys(text: str) -> list[events.Key]:
    return [events.Key("ctrl+j" if char == "\n" else char, char) for char in text]


def test_line_feeds_typed_in_line_mode_are_enter_and_later_ones_a_new_line() -> None:
    line_mode = LineModeKeys(len(b"hi\nthere\n"))
    seen = [line_mode.key(key).key for key in keys("hi\nthere\nmore\n")]
    assert seen == ["h", "i", "enter", "t", "h", "e", "r", "e", "enter",
                    "m", "o", "r", "e", "ctrl+j"]


def test_with_nothing_typed_in_line_mode_ctrl_j_stays_a_new_line() -> None:
    line_mode = LineModeKeys(0)
    assert [line_mode.key(key).key for key in keys("a\n")] == ["a", "ctrl+j"]


def test_multibyte_keys_count_their_bytes() -> None:
    text = "日本\n"
    line_mode = LineModeKeys(len(text.encode()))
    assert [line_mode.key(key).key for key in keys(text + "\n")] == [
        "日", "本", "enter", "ctrl+j"]
