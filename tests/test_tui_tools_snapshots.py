"""How tool calls look: a block while its arguments stream, done (collapsed and expanded), the
approval dialog, a hostile result drawn inert, and the tools screen. Cursor blink off, no
wall-clock figures; real MCP servers over stdio.

Update after an intended change with
`pytest tests/test_tui_tools_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import html
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from termchat.config import Config
from termchat.devserver import ProviderServer, Script, ToolCall
from termchat.tools.config import ServerConfig, ToolsConfig
from termchat.tui.app import TermchatApp
from termchat.tui.approval import ApprovalScreen
from termchat.tui.tool_block import ToolBlock
from termchat.tui.tools_screen import ToolsScreen
from tests.support.hostile import FORBIDDEN
from tests.support.tools import script_server
from tests.support.tui import finish, make_app, send, wait_until

SIZE = (100, 36)
SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_tui_tools_snapshots"
SnapCompare = Callable[..., bool]
RESULT = "\n".join(["Monday: 12 °C, rain", "Tuesday: 14 °C, cloud", "Wednesday: 17 °C, sun",
                    "Thursday: 16 °C, sun", "Friday: 11 °C, storms", "Saturday: 9 °C, rain"])
ARGUMENTS = json.dumps({"text": RESULT})


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def tools_app(srv: ProviderServer, server: ServerConfig) -> TermchatApp:
    config = Config(path=Path("/nonexistent/config.toml"),
                    tools=ToolsConfig(servers={server.name: server}))
    return make_app(srv, config=config)


def answered(srv: ProviderServer) -> None:
    srv.queue(Script(text="Let me look at the week.", tool_calls=[
                  ToolCall("t__echo", ARGUMENTS, id="call_week")],
                     input_tokens=120, output_tokens=40),
              Script(text="Rain early in the week, **sun** from Wednesday.",
                     input_tokens=260, output_tokens=18))


def test_a_tool_call_while_its_arguments_stream(snap_compare: SnapCompare,
                                                provider_server: ProviderServer) -> None:
    # Two text deltas, then six fragments of the arguments; then the server holds on.
    provider_server.queue(Script(text="Let me look at the week.", tool_calls=[
        ToolCall("t__echo", ARGUMENTS, chunk_size=5)], stall_after=8, input_tokens=120))

    async def run_before(pilot: Pilot) -> None:
        app = pilot.app
        await send(pilot, "What is the weather this week?")
        await wait_until(pilot, lambda: bool(app.screen.query(ToolBlock)) and len(
            "".join(app.screen.query_one(ToolBlock).call.pieces)) == 30, timeout=20)
        await pilot.pause(0.2)

    assert snap_compare(tools_app(provider_server, script_server("t")), terminal_size=SIZE,
                        run_before=run_before)


def test_the_approval_dialog(snap_compare: SnapCompare,
                             provider_server: ProviderServer) -> None:
    answered(provider_server)

    async def run_before(pilot: Pilot) -> None:
        await send(pilot, "What is the weather this week?")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ApprovalScreen),
                         timeout=20)
        await pilot.pause(0.2)

    assert snap_compare(tools_app(provider_server, script_server("t")), terminal_size=SIZE,
                        run_before=run_before)


def test_a_finished_tool_call_collapsed(snap_compare: SnapCompare,
                                        provider_server: ProviderServer) -> None:
    answered(provider_server)

    async def run_before(pilot: Pilot) -> None:
        await send(pilot, "What is the weather this week?")
        await finish(pilot)

    assert snap_compare(tools_app(provider_server, script_server("t", trust=True)),
                        terminal_size=SIZE, run_before=run_before)


def test_a_finished_tool_call_expanded(snap_compare: SnapCompare,
                                       provider_server: ProviderServer) -> None:
    answered(provider_server)

    async def run_before(pilot: Pilot) -> None:
        await send(pilot, "What is the weather this week?")
        await finish(pilot)
        await pilot.press("ctrl+b")
        await pilot.pause(0.1)

    assert snap_compare(tools_app(provider_server, script_server("t", trust=True)),
                        terminal_size=SIZE, run_before=run_before)


def test_a_hostile_tool_result_is_drawn_inert(snap_compare: SnapCompare,
                                              provider_server: ProviderServer) -> None:
    # The tool echoes back what the model sent: a clipboard write (OSC 52 ended by BEL), a
    # title, a screen clear and a right-to-left override, in its name's place too.
    hostile = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b]0;pwned\x07\x1b[2J\u202eevil"
    provider_server.queue(
        Script(text="Echoing.", tool_calls=[
            ToolCall("t__echo", json.dumps({"text": f"clip{hostile}board\nsecond line"}),
                     id="call_hostile")]),
        Script(text="Done."))

    async def run_before(pilot: Pilot) -> None:
        await send(pilot, "Echo this back.")
        await finish(pilot)
        await pilot.press("ctrl+b")
        await pilot.pause(0.1)

    assert snap_compare(tools_app(provider_server, script_server("t", trust=True)),
                        terminal_size=SIZE, run_before=run_before)
    drawn = html.unescape((SNAPSHOTS / "test_a_hostile_tool_result_is_drawn_inert.svg")
                          .read_text(encoding="utf-8"))
    drawn = drawn.replace("\xa0", " ")
    # Nothing a terminal would obey is drawn: the result loses the sequences, the arguments
    # show them as JSON escapes (what the model sent, legibly).
    assert not set(drawn) & (FORBIDDEN - {"\n"})
    assert "→ clipevilboard" in drawn
    assert '"clip\\u001b]52;c;cm0gLXJmIH4=\\u0007' in drawn and "\\u202eevil" in drawn


def test_the_tools_screen(snap_compare: SnapCompare, provider_server: ProviderServer,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Commands by name, found on PATH, so that no path of this machine is drawn.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    config = Config(path=Path("/nonexistent/config.toml"), tools=ToolsConfig(servers={
        "time": ServerConfig("time", command="mcp-server-time", args=("--local-timezone", "UTC")),
        "notes": ServerConfig("notes", command="termchat-test-no-such-server")}))

    async def run_before(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, TermchatApp)
        await wait_until(pilot, lambda: app.tools is not None and not app.tools.starting,
                         timeout=20)
        app.clear_notifications()
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: isinstance(app.screen, ToolsScreen))
        await pilot.pause(0.1)

    assert snap_compare(make_app(provider_server, config=config), terminal_size=SIZE,
                        run_before=run_before)
