"""One-shot mode in a real terminal (tmux): the reply rendered as Markdown, escape sequences
in it neutralised, and scrollback intact for a reply taller than the screen."""

from __future__ import annotations

import shutil

import pytest

from termchat.devserver import ProviderServer, Script
from tests.support.cli import TERMCHAT
from tests.support.tmux import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

def run_in_pane(tmux: Tmux, *args: str) -> None:
    """`echo BEFORE; termchat ARGS; echo EXIT=$?` in the pane, waiting for it to finish."""
    quoted = " ".join(f"'{arg}'" for arg in args)
    tmux.start(f"echo MARKER-BEFORE; {TERMCHAT} {quoted}; echo EXIT=$?; sleep 600")
    tmux.wait_for(r"^EXIT=\d+$")


HOSTILE = (
    "# Title Here\n\n"
    "Some **bold** text.\x1b[2J\x1b[H\x1b]0;pwned-title\x07\x1b[5;5H and more.\n\n"
    "- first item\n"
    "- second item\n\n"
    "```python\n"
    'print("hi")\n'
    "```\n\n"
    "Done.\n"
)


def test_reply_renders_as_markdown_and_cannot_clear_the_screen(
        tmux: Tmux, provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text=HOSTILE, chunk_size=5, delay=0.005))
    run_in_pane(tmux, "show me")
    screen = tmux.screen()
    text = "\n".join(screen)

    assert "EXIT=0" in screen
    # Nothing cleared the screen or moved the cursor: the line before termchat is still there.
    assert screen[0] == "MARKER-BEFORE"
    assert "Title Here" in text and "# Title" not in text
    assert any(line.strip() == "Some bold text. and more." for line in screen)
    assert "• first item" in text and "• second item" in text
    assert 'print("hi")' in text and "```" not in text
    assert "Done." in text
    # The escape sequences neither acted nor showed up as text.
    assert "pwned" not in text and "[2J" not in text and "[5;5H" not in text
    assert tmux("display-message", "-p", "#{pane_title}").strip() != "pwned-title"
    order = [next(i for i, line in enumerate(screen) if needle in line)
             for needle in ("MARKER-BEFORE", "Title Here", "first item", "print", "Done.",
                            "EXIT=0")]
    assert order == sorted(order)


def tall_reply() -> str:
    paragraphs = "".join(f"Paragraph {n} of the tall reply.\n\n" for n in range(40))
    code = "".join(f"line_{n} = {n}\n" for n in range(60))
    items = "".join(f"- item {n}\n" for n in range(35))
    return f"{paragraphs}```python\n{code}```\n\n{items}\nThe end.\n"


def test_a_reply_taller_than_the_screen_leaves_clean_scrollback(
        tmux: Tmux, provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text=tall_reply(), chunk_size=7, delay=0.002))
    run_in_pane(tmux, "tall one")
    lines = [line.strip() for line in tmux.everything()]

    expected = ([f"Paragraph {n} of the tall reply." for n in range(40)]
                + [f"line_{n} = {n}" for n in range(60)]
                + [f"• item {n}" for n in range(35)] + ["The end."])
    # Every line exactly once (a live region redrawn into scrollback duplicates or loses
    # lines), and in order.
    for line in expected:
        assert lines.count(line) == 1, (line, lines.count(line))
    assert [line for line in lines if line in expected] == expected
    assert lines[0] == "MARKER-BEFORE"
    assert lines[-1] == "EXIT=0"
