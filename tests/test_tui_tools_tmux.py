"""The installed `termchat` in a real terminal (tmux) calling a tool of a real MCP server from
its config: the call streams in as a block, the dialog asks, y allows it, the result shows,
the model answers, and Ctrl+Q leaves no server behind."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from termchat.devserver import ProviderServer, Script, ToolCall
from tests.support.cli import BASE_CONFIG, TERMCHAT, environment
from tests.support.tmux import Tmux
from tests.support.tools import SERVER_SCRIPT, Events, alive, group_alive

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def test_a_tool_call_is_shown_asked_about_run_and_answered_in_a_real_terminal(
        provider_server: ProviderServer, tmp_path: Path) -> None:
    events = Events(tmp_path / "events")
    config = BASE_CONFIG + (
        "\n[mcp.notes]\n"
        f"command = {json.dumps(sys.executable)}\n"
        f"args = [{json.dumps(str(SERVER_SCRIPT))}]\n"
        f"env = {{ MCP_TEST_EVENTS = {json.dumps(str(events.path))} }}\n")
    env = environment(tmp_path, provider_server, config=config)
    env.pop("TMUX", None)
    provider_server.queue(
        Script(text="Let me ask the notes server.", tool_calls=[
            ToolCall("notes__echo", json.dumps({"text": "the note says: buy milk"}),
                     chunk_size=3)], delay=0.02, input_tokens=50, output_tokens=20),
        Script(text="Your note says to **buy milk**.", input_tokens=90, output_tokens=9))
    tmux = Tmux(env)
    try:
        tmux("start-server", ";", "set-option", "-s", "escape-time", "0")
        tmux.start(f"{TERMCHAT}; echo EXIT=$?; sleep 600")
        tmux.wait_for(r"\^t Tools")
        # The server started after the first frame; its pid is in its events file.
        deadline = time.monotonic() + 30
        while not any(line.startswith("start ") for line in events.lines()):
            assert time.monotonic() < deadline, "the MCP server never started"
            time.sleep(0.1)
        pid = int(next(line for line in events.lines() if line.startswith("start ")).split()[1])

        tmux("send-keys", "-l", "what does my note say?")
        tmux("send-keys", "Enter")
        tmux.wait_for(r"Allow this tool call\?")
        screen = "\n".join(tmux.screen())
        assert "MCP server  notes" in screen and "tool        echo" in screen
        assert '"text": "the note says: buy milk"' in screen
        tmux("send-keys", "y")
        tmux.wait_for(r"✔ done .*allowed once by you")
        tmux.wait_for(r"→ the note says: buy milk")
        tmux.wait_for(r"Your note says to buy milk\.")
        tmux.wait_for(r"done .*finish tool_calls › stop.*in 140 · out 29")
        assert [m["role"] for m in provider_server.requests[1].body["messages"]] == [
            "user", "assistant", "tool"]

        tmux("send-keys", "C-q")
        tmux.wait_for(r"^EXIT=0$")
        assert not alive(pid) and not group_alive(pid)
    finally:
        tmux.kill()


def test_yes_runs_calls_unasked_and_continuing_with_no_tools_shows_the_stored_calls(
        provider_server: ProviderServer, tmp_path: Path) -> None:
    events = Events(tmp_path / "events")
    config = BASE_CONFIG + (
        "\n[mcp.notes]\n"
        f"command = {json.dumps(sys.executable)}\n"
        f"args = [{json.dumps(str(SERVER_SCRIPT))}]\n"
        f"env = {{ MCP_TEST_EVENTS = {json.dumps(str(events.path))} }}\n")
    env = environment(tmp_path, provider_server, config=config)
    env.pop("TMUX", None)
    provider_server.queue(
        Script(text="Looking.", tool_calls=[
            ToolCall("notes__echo", json.dumps({"text": "water the plants"}), id="c1")]),
        Script(text="It says to water the plants."),
        Script(text="You are welcome."))
    tmux = Tmux(env)
    try:
        tmux("start-server", ";", "set-option", "-s", "escape-time", "0")
        tmux.start(f"{TERMCHAT} --yes; {TERMCHAT} -c --no-tools; echo EXIT=$?; sleep 600")
        tmux.wait_for(r"\^t Tools")
        tmux("send-keys", "-l", "what does my note say?")
        tmux("send-keys", "Enter")
        # No dialog: --yes let it run, and the block says so.
        tmux.wait_for(r"✔ done .*allowed: --yes")
        tmux.wait_for(r"It says to water the plants\.")
        assert not any("Allow this tool call?" in line for line in tmux.everything())
        tmux("send-keys", "C-q")

        # `termchat -c --no-tools`: the stored call is shown as it ended, and no tool is
        # offered (nor any server started) for the next reply.
        # Its footer has no Tools key: no server is configured for it.
        tmux.wait_for(r"\^r History  \^l Attach file  \^b Expand tool")
        tmux.wait_for(r"→ water the plants")
        starts = sum(line.startswith("start ") for line in events.lines())
        tmux("send-keys", "-l", "thanks")
        tmux("send-keys", "Enter")
        tmux.wait_for(r"You are welcome\.")
        continued = provider_server.requests[-1].body
        assert "tools" not in continued
        assert [m["role"] for m in continued["messages"]] == [
            "user", "assistant", "tool", "assistant", "user"]
        tmux("send-keys", "C-q")
        tmux.wait_for(r"^EXIT=0$")
        assert sum(line.startswith("start ") for line in events.lines()) == starts == 1
    finally:
        tmux.kill()
