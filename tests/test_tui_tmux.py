"""The installed `termchat` TUI in a real terminal (tmux): a reply streams in as Markdown,
Escape cancels the next one mid-stream (the server sees the connection close), Ctrl+Q quits."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from termchat.devserver import ProviderServer, Script
from tests.support.cli import TERMCHAT, environment, termchat
from tests.support.tmux import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def test_tui_streams_markdown_and_escape_cancels_in_a_real_terminal(
        tmux: Tmux, provider_server: ProviderServer) -> None:
    provider_server.queue(
        Script(text="# Hello from tmux\n\n- first point\n- second point\n\nAll **done**.\n",
              chunk_size=4, delay=0.01, input_tokens=11, output_tokens=22),
        Script(text="A slow reply that will be cut short. " * 50, chunk_size=6, delay=0.05),
    )
    # A lone Escape reaches the app at once, as with `set -s escape-time 0` in a tmux.conf.
    tmux("start-server", ";", "set-option", "-s", "escape-time", "0")
    tmux.start(f"{TERMCHAT}; echo EXIT=$?; sleep 600")
    tmux.wait_for(r"New chat")

    tmux("send-keys", "-l", "say hello")
    tmux("send-keys", "Enter")
    tmux.wait_for(r"• second point")
    tmux.wait_for(r"done.*finish stop.*in 11 · out 22")
    screen = "\n".join(tmux.screen())
    assert "Hello from tmux" in screen and "# Hello" not in screen
    assert "All done." in screen and "**" not in screen

    tmux("send-keys", "-l", "now something long")
    tmux("send-keys", "Enter")
    tmux.wait_for(r"cut short\. A slow")
    began = time.monotonic()
    tmux("send-keys", "Escape")
    record = provider_server.wait_for_disconnect(timeout=3)
    assert record.disconnected_at is not None and record.disconnected_at - began < 2
    tmux.wait_for(r"cancelled — partial reply kept")
    tmux.wait_for(r"cancelled")

    tmux("send-keys", "C-q")
    tmux.wait_for(r"^EXIT=0$")


def test_with_no_key_the_demo_chat_opens_streams_a_reply_and_writes_no_config(
        tmp_path: Path) -> None:
    env = environment(tmp_path, config="")
    env.pop("TMUX", None)
    home = tmp_path / "home"
    home.mkdir()
    env["HOME"] = str(home)
    session = Tmux(env)
    try:
        session.start(f"{TERMCHAT}; echo EXIT=$?; sleep 600")
        session.wait_for(r"demo · built-in local server")
        session.wait_for(r"This is termchat's demo")
        session("send-keys", "-l", "hello demo")
        session("send-keys", "Enter")
        session.wait_for(r"Echo from the local provider")
        session.wait_for(r"done")
        assert any("hello demo" in line for line in session.screen())
        session("send-keys", "F1")
        session.wait_for(r"export OPENAI_API_KEY")
        session("send-keys", "Escape")
        session("send-keys", "C-q")
        session.wait_for(r"^EXIT=0$")
    finally:
        session.kill()
    # Nothing written where a real provider's configuration (or the history) would go.
    assert not (tmp_path / "config").exists() or not any((tmp_path / "config").rglob("*"))
    assert not (tmp_path / "data").exists()
    assert not any(home.iterdir())


def test_with_no_key_and_no_terminal_the_first_run_screen_is_printed(tmp_path: Path) -> None:
    run = termchat([], environment(tmp_path, config=""), stdin=b"")
    assert run.returncode == 2
    text = run.stderr.decode()
    assert "no model is configured yet" in text and "--demo" in text
