"""The installed `termchat` TUI in a real terminal (tmux): a reply streams in as Markdown,
Escape cancels the next one mid-stream (the server sees the connection close), Ctrl+Q quits."""

from __future__ import annotations

import shutil
import time

import pytest

from termchat.devserver import ProviderServer, Script
from tests.support.cli import TERMCHAT
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
