"""Tool calls in the TUI: each call a block inside the reply while it streams, approved in a
dialog, run with a running indicator, its result collapsed; cancel, limits, hostile output;
against the real SDKs over real sockets and real MCP servers over stdio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import OptionList

from termchat.config import Config, ModelConfig
from termchat.content import ToolCall as Call
from termchat.content import ToolOutcome, ToolResult
from termchat.devserver import ProviderServer, Script, ToolCall
from termchat.history import HistoryStore, continue_conversation
from termchat.tools.config import ServerConfig, ToolsConfig
from termchat.tools.policy import DENIED_TEXT, SessionRule
from termchat.tui.app import TermchatApp
from termchat.tui.approval import ApprovalScreen
from termchat.tui.history_screen import HistoryScreen
from termchat.tui.messages import AssistantMessage, NoteLine
from termchat.tui.tool_block import Phase, ToolBlock
from termchat.tui.tools_screen import ToolsScreen
from termchat.turn import Conversation, Exchange, Reply, Status
from tests.support.hostile import FORBIDDEN
from tests.support.models import PROVIDERS, model_for
from tests.support.screen import lines_of, shown, unsafe_lines
from tests.support.tools import Events, alive, group_alive, script_server, time_server
from tests.support.tui import finish, make_app, send, status_text, wait_until

ECHO = '{"text": "hello from the tool"}'


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The servers' logs go under the test's own data directory."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "data"


def tools_app(srv: ProviderServer, *servers: ServerConfig, provider: str = "openai",
              max_rounds: int = 10, **options: Any) -> TermchatApp:
    config = Config(path=Path("/nonexistent/config.toml"),
                    tools=ToolsConfig(servers={s.name: s for s in servers},
                                      max_rounds=max_rounds))
    app = make_app(srv, provider, config=config)
    app._tool_approvals = (options.get("yes", False), tuple(options.get("allow_tools", ())))
    return app


def blocks(app: TermchatApp) -> list[ToolBlock]:
    return list(app.chat.query(ToolBlock))


def asking(app: TermchatApp) -> ApprovalScreen | None:
    return app.screen if isinstance(app.screen, ApprovalScreen) else None


async def answer(pilot: Pilot, key: str, timeout: float = 20.0) -> ApprovalScreen:
    """Wait for the approval dialog and press `key` in it; the dialog it was."""
    app = pilot.app
    await wait_until(pilot, lambda: asking(app) is not None, timeout=timeout)  # type: ignore[arg-type]
    dialog = asking(app)  # type: ignore[arg-type]
    assert dialog is not None
    await pilot.press(key)
    await wait_until(pilot, lambda: app.screen is not dialog, timeout=5)
    return dialog


def wire_results(provider: str, body: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(call id, content, is_error) of the tool results in a request body, in order."""
    if provider == "openai":
        return [(m["tool_call_id"], m["content"], False)
                for m in body["messages"] if m["role"] == "tool"]
    return [(b["tool_use_id"], _text(b["content"]), bool(b.get("is_error")))
            for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"] if b["type"] == "tool_result"]


def _text(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(b["text"] for b in content)


def offered(provider: str, body: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] if provider == "openai" else t["name"]
            for t in body.get("tools", [])}


def block_text(block: ToolBlock) -> str:
    return "\n".join(lines_of(block)).replace("\xa0", " ")


# --- The core of it: streamed, asked, run, answered ------------------------------------------


def test_a_cancelled_reply_whose_calls_ran_stays_context_without_any_text() -> None:
    reply = Reply(status=Status.CANCELLED)
    reply.add(Call("c1", "t__echo", '{"text": "x"}'))
    reply.add(ToolResult("c1", "x"))
    reply.add(Call("c2", "t__sleep", '{"seconds": 30}'))
    reply.add(ToolResult("c2", "The user cancelled this call.", True, ToolOutcome.CANCELLED))
    assert Exchange("do it", reply).in_context
    assert not Exchange("do it", Reply(status=Status.CANCELLED)).in_context
    streamed_only = Reply(status=Status.CANCELLED)
    streamed_only.add(Call("c1", "t__echo", "{"))
    assert not Exchange("do it", streamed_only).in_context


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_call_shows_its_name_while_its_arguments_stream_then_asks_and_runs(
        srv: ProviderServer, provider: str) -> None:
    arguments = json.dumps({"text": "a fairly long piece of text for the echo tool " * 3})
    srv.queue(Script(text="Let me echo that.", tool_calls=[
                  ToolCall("t__echo", arguments, id="call_1", chunk_size=2)],
                     delay=0.03, input_tokens=10, output_tokens=5),
              Script(text="It said it back.", input_tokens=30, output_tokens=7))
    app = tools_app(srv, script_server("t"), provider=provider)
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "echo something")
        await wait_until(pilot, lambda: bool(blocks(app)) and bool(blocks(app)[0].call.pieces),
                         timeout=20)
        block = blocks(app)[0]
        # The tool's name is on screen while the model is still writing its arguments.
        assert block.call.phase is Phase.STREAMING
        assert (block.call.tool, block.call.server) == ("echo", "t")
        streamed = "".join(block.call.pieces)
        assert 0 < len(streamed) < len(arguments) and arguments.startswith(streamed)
        text = block_text(block)
        assert "echo" in text and "writing the call" in text
        dialog = await answer(pilot, "y")
        assert (dialog.question.server, dialog.question.tool) == ("t", "echo")
        assert dialog.question.arguments == json.dumps(json.loads(arguments), indent=2)
        await finish(pilot)

        assert block.call.phase is Phase.DONE and block.outcome is ToolOutcome.OK
        assert "allowed once by you" in block_text(block)
        assert [(r[0], r[1]) for r in wire_results(provider, srv.requests[1].body)] == [
            ("call_1", json.loads(arguments)["text"])]
        segments = list(app.chat.query(AssistantMessage))
        assert [s.text for s in segments] == ["Let me echo that.", "It said it back."]
        # Each round's raw finish, and the usage of both rounds together.
        first, last = ("tool_calls", "stop") if provider == "openai" else ("tool_use", "end_turn")
        status = status_text(app)
        assert f"finish {first} › {last}" in status and "in 40 · out 12" in status
        assert app.chat.query_one("#status").tooltip == (
            f"round 1 · finish {first} · in 10 · out 5 · tools t__echo\n"
            f"round 2 · finish {last} · in 30 · out 7\nall rounds · in 40 · out 12")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_deny_tells_the_model_and_the_reply_goes_on(srv: ProviderServer,
                                                          provider: str) -> None:
    srv.queue(Script(tool_calls=[ToolCall("t__echo", ECHO, id="d1")]),
              Script(text="Understood, I will not."))
    app = tools_app(srv, script_server("t"), provider=provider)
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "try")
        await answer(pilot, "n")
        await finish(pilot)
        [block] = blocks(app)
        assert block.outcome is ToolOutcome.DENIED and "⊘ denied" in block_text(block)
        [(call_id, content, error)] = wire_results(provider, srv.requests[1].body)
        assert (call_id, content) == ("d1", DENIED_TEXT)
        assert error or provider == "openai"
        assert app.chat.last_reply is not None
        assert app.chat.last_reply.status is Status.COMPLETE
        assert app.chat.last_reply.text == "Understood, I will not."


async def test_allow_once_asks_every_time_and_always_asks_no_more(srv: ProviderServer) -> None:
    echo = ToolCall("t__echo", ECHO)
    add = ToolCall("t__add", '{"a": 1, "b": 2}')
    srv.queue(Script(tool_calls=[echo]), Script(text="one"),
              Script(tool_calls=[echo]), Script(text="two"),
              Script(tool_calls=[echo, add]), Script(text="three"),
              Script(tool_calls=[add, echo]), Script(text="four"))
    app = tools_app(srv, script_server("t"))
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "first")
        await answer(pilot, "y")          # once
        await finish(pilot)
        await send(pilot, "second")
        await answer(pilot, "t")          # always this tool
        await finish(pilot)
        policy = app.tools.policy if app.tools else None
        assert policy is not None and policy.rules() == [SessionRule("t", "echo")]
        await send(pilot, "third")
        # echo runs unasked; add asks, and "always this server" covers every tool of t.
        dialog = await answer(pilot, "s")
        assert dialog.question.tool == "add"
        await finish(pilot)
        assert policy.rules() == [SessionRule("t", "echo"), SessionRule("t")]
        await send(pilot, "fourth")
        await finish(pilot)
        assert asking(app) is None
        last = blocks(app)[-2:]
        assert all(b.outcome is ToolOutcome.OK for b in last)
        assert all("allowed: always allowed this session" in block_text(b) for b in last)
        assert len(srv.requests) == 8


async def test_parallel_calls_are_blocks_of_their_own_asked_one_at_a_time_in_order(
        srv: ProviderServer) -> None:
    srv.queue(Script(tool_calls=[ToolCall("t__add", '{"a": 2, "b": 3}', id="c1"),
                                 ToolCall("t__echo", '{"text": "two"}', id="c2"),
                                 ToolCall("t__add", '{"a": 4, "b": 4}', id="c3")],
                     interleave=True),
              Script(text="Five, two and eight."))
    app = tools_app(srv, script_server("t"))
    async with app.run_test(size=(100, 50)) as pilot:
        await send(pilot, "add things")
        first = await answer(pilot, "y")
        assert first.question.position == (1, 3) and first.question.tool == "add"
        # One dialog at a time: the third call waits while the second is asked about.
        await wait_until(pilot, lambda: asking(app) is not None)
        assert [b.call.phase for b in blocks(app)][1:] == [Phase.ASKING, Phase.QUEUED]
        second = await answer(pilot, "n")
        assert second.question.position == (2, 3) and second.question.tool == "echo"
        third = await answer(pilot, "y")
        assert third.question.position == (3, 3)
        await finish(pilot)
        assert [b.outcome for b in blocks(app)] == [ToolOutcome.OK, ToolOutcome.DENIED,
                                                    ToolOutcome.OK]
        assert [(r[0], r[1]) for r in wire_results("openai", srv.requests[1].body)] == [
            ("c1", "5"), ("c2", DENIED_TEXT), ("c3", "8")]


async def test_a_pre_approved_call_runs_unasked_and_says_why(srv: ProviderServer) -> None:
    srv.queue(Script(tool_calls=[ToolCall("t__add", '{"a": 20, "b": 22}')]),
              Script(text="42."))
    app = tools_app(srv, script_server("t", allow=frozenset({"add"})))
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "add")
        await finish(pilot)
        [block] = blocks(app)
        assert block.outcome is ToolOutcome.OK
        assert "allowed: allowed in [mcp.t] of the config" in block_text(block)
        assert "→ 42" in block_text(block)


# --- Failures: a tool, a server, the round limit -------------------------------------------


def notifications(app: TermchatApp, word: str) -> list[str]:
    return [str(n.message) for n in app._notifications if word in str(n.message)]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_failing_tool_is_marked_and_its_error_goes_to_the_model(
        srv: ProviderServer, provider: str) -> None:
    srv.queue(Script(tool_calls=[ToolCall("t__fail", '{"message": "disk on fire"}', id="f")]),
              Script(text="The disk is on fire."))
    app = tools_app(srv, script_server("t", allow=frozenset({"fail"})), provider=provider)
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "break it")
        await finish(pilot)
        [block] = blocks(app)
        assert block.outcome is ToolOutcome.ERROR and block.has_class("-error")
        assert "✖ error" in block_text(block) and "disk on fire" in block_text(block)
        [(call_id, content, error)] = wire_results(provider, srv.requests[1].body)
        assert call_id == "f" and "disk on fire" in content
        assert error or provider == "openai"
        assert app.chat.last_reply is not None
        assert app.chat.last_reply.text == "The disk is on fire."


async def test_a_server_that_fails_to_start_is_one_line_and_the_chat_goes_on(
        srv: ProviderServer) -> None:
    srv.queue(Script(text="Fine without it."))
    app = tools_app(srv, script_server("broken", "--fail-start", "no such database: notes.db"),
                    script_server("t"))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: bool(notifications(app, "broken")), timeout=20)
        [line] = notifications(app, "broken")
        assert line.startswith("MCP server 'broken' failed to start: exited with status 3 "
                               "(no such database: notes.db).")
        assert "The chat goes on without its tools" in line and "mcp-broken.log" in line
        await send(pilot, "hello")
        await finish(pilot)
        assert app.chat.last_reply is not None
        assert app.chat.last_reply.text == "Fine without it."
        names = offered("openai", srv.requests[0].body)
        assert "t__echo" in names and not any(n.startswith("broken__") for n in names)
        assert len(notifications(app, "broken")) == 1


async def test_a_server_that_dies_mid_call_is_one_line_and_the_chat_goes_on(
        srv: ProviderServer) -> None:
    srv.queue(Script(tool_calls=[ToolCall("t__crash", "{}")]),
              Script(text="The tool's server went away."),
              Script(text="Still here."))
    app = tools_app(srv, script_server("t", allow=frozenset({"crash"})), script_server("u"))
    async with app.run_test(size=(120, 40)) as pilot:
        await send(pilot, "crash it")
        await finish(pilot)
        await wait_until(pilot, lambda: bool(notifications(app, "'t'")), timeout=10)
        [block] = blocks(app)
        assert block.outcome is ToolOutcome.UNAVAILABLE
        assert "stopped during the call" in block_text(block)
        assert notifications(app, "'t'") == [
            "MCP server 't' stopped working: exited with status 3 (crashing on purpose). The "
            "chat goes on without its tools; its log: "
            f"{app.tools.box.status('t').log_path if app.tools else ''}"]
        await send(pilot, "and now?")
        await finish(pilot)
        assert app.chat.last_reply is not None and app.chat.last_reply.text == "Still here."
        names = offered("openai", srv.requests[-1].body)
        assert "u__echo" in names and not any(n.startswith("t__") for n in names)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_round_limit_ends_the_turn_with_a_line(srv: ProviderServer,
                                                          provider: str) -> None:
    srv.queue(*[Script(text=f"Round {n}.", tool_calls=[ToolCall("t__echo", f'{{"text": "{n}"}}')])
                for n in range(3)])
    app = tools_app(srv, script_server("t", allow=frozenset({"echo"})), provider=provider,
                    max_rounds=2)
    async with app.run_test(size=(100, 50)) as pilot:
        await send(pilot, "loop")
        await finish(pilot)
        assert len(srv.requests) == 2
        first, second = blocks(app)
        assert first.outcome is ToolOutcome.OK
        assert second.call.phase is Phase.NOT_RUN
        assert "not run: the round limit ended the turn" in block_text(second)
        [note] = [str(n.render()) for n in app.chat.query(NoteLine)]
        assert note.startswith("■ stopped at the round limit: the model still asked for tools "
                               "after 2 requests ([tools] max_rounds = 2 in the config)")
        assert app.chat.last_reply is not None and app.chat.last_reply.round_limit


# --- Escape ------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_escape_during_a_running_tool_cancels_it_on_the_server(
        srv: ProviderServer, tmp_path: Path, provider: str) -> None:
    events = Events(tmp_path / "events")
    srv.queue(Script(tool_calls=[ToolCall("t__echo", '{"text": "first"}', id="e"),
                                 ToolCall("t__sleep", '{"seconds": 30}', id="s"),
                                 ToolCall("t__echo", '{"text": "never"}', id="n")]))
    app = tools_app(srv, script_server("t", events=events.path, trust=True), provider=provider)
    async with app.run_test(size=(100, 50)) as pilot:
        await send(pilot, "nap")
        started = await events.wait("sleep-start", timeout=20)
        sleeping = blocks(app)[1]
        assert sleeping.call.phase is Phase.RUNNING
        # Drawn in the next frame (a loaded machine may take a moment).
        await wait_until(pilot, lambda: "⟳ running" in block_text(sleeping))
        await pilot.press("escape")
        await finish(pilot)
        await events.wait(started.replace("start", "cancelled"))
        assert [b.outcome for b in blocks(app)] == [
            ToolOutcome.OK, ToolOutcome.CANCELLED, ToolOutcome.CANCELLED]
        assert "■ cancelled" in block_text(sleeping)
        # The finished call stays, on screen and as context: no prompt put back.
        assert blocks(app)[0].call.content == "first"
        assert "cancelled — partial reply kept" in shown(app)
        assert app.chat.query_one("#prompt").text == ""  # type: ignore[attr-defined]
        assert len(srv.requests) == 1
        srv.queue(Script(text="ok"))
        await send(pilot, "and now?")
        await finish(pilot)
        assert [r[0] for r in wire_results(provider, srv.requests[-1].body)] == ["e", "s", "n"]


async def test_escape_in_the_approval_dialog_stops_the_reply(srv: ProviderServer) -> None:
    srv.queue(Script(text="Checking.", tool_calls=[ToolCall("t__echo", ECHO, id="a"),
                                                    ToolCall("t__add", '{"a": 1, "b": 1}',
                                                             id="b")]))
    app = tools_app(srv, script_server("t"))
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "go")
        await answer(pilot, "escape")
        await finish(pilot)
        assert asking(app) is None and len(srv.requests) == 1
        assert [b.outcome for b in blocks(app)] == [ToolOutcome.CANCELLED, ToolOutcome.CANCELLED]
        assert app.chat.last_reply is not None
        assert app.chat.last_reply.status is Status.CANCELLED
        assert "cancelled" in status_text(app)


# --- Showing it --------------------------------------------------------------------------


async def test_a_long_result_is_collapsed_and_a_key_or_a_click_expands_it(
        srv: ProviderServer) -> None:
    lines = "\n".join(f"line {n}" for n in range(1, 21))
    srv.queue(Script(tool_calls=[ToolCall("t__echo", json.dumps({"text": lines}))]),
              Script(text="Twenty lines."))
    app = tools_app(srv, script_server("t", trust=True))
    async with app.run_test(size=(100, 50)) as pilot:
        await send(pilot, "lines")
        await finish(pilot)
        [block] = blocks(app)
        assert "\n    line 3" in block_text(block) and "\n    line 4" not in block_text(block)
        assert "17 more lines · Enter or click expands" in block_text(block)
        collapsed = block.size.height
        await pilot.press("ctrl+b")
        await pilot.pause(0.1)
        assert "\n    line 20" in block_text(block) and block.size.height > collapsed + 15
        await pilot.click(block)
        await pilot.pause(0.1)
        assert "\n    line 4" not in block_text(block) and block.size.height == collapsed
        block.focus()
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert "\n    line 20" in block_text(block)


async def test_hostile_tool_output_arguments_and_names_are_inert(srv: ProviderServer) -> None:
    hostile = "\x1b]52;c;aGk=\x07\x1b]0;pwned\x07\x1b[2J\u202eevil\x9b31m"
    srv.queue(Script(tool_calls=[
                  ToolCall("t__echo", json.dumps({"text": f"out{hostile}put"}), id="h",
                           chunk_size=3),
                  # Raw control characters in the arguments' text: not JSON at all.
                  ToolCall("t__echo", f'{{"text": "{hostile}"}}', id="raw", chunk_size=3),
                  ToolCall(f"t__ec\x1b[2Jho{hostile}", "{}", id="name")]),
              Script(text="Done."))
    app = tools_app(srv, script_server("t"))
    async with app.run_test(size=(100, 50)) as pilot:
        await send(pilot, "be evil")
        dialog = await answer(pilot, "y")
        assert not set(dialog.question.arguments) & FORBIDDEN
        await finish(pilot)
        assert unsafe_lines(app) == []
        echo, raw, name = blocks(app)
        assert echo.outcome is ToolOutcome.OK and echo.call.content == "outevilput"
        assert raw.outcome is ToolOutcome.INVALID and "not valid JSON" in block_text(raw)
        assert name.outcome is ToolOutcome.UNAVAILABLE
        for block in blocks(app):
            block.call.expanded = True
            block.refresh(layout=True)
        await pilot.pause(0.1)
        assert unsafe_lines(app) == []


async def test_a_stored_reply_with_tool_calls_opens_as_its_blocks(srv: ProviderServer) -> None:
    reply = Reply(status=Status.COMPLETE)
    reply.add_text("Let me look.")
    reply.add(Call("c1", "t__echo", '{"text": "hi"}'))
    reply.add(ToolResult("c1", "hi"))
    reply.add_text("It said hi.")
    conversation = Conversation(model_for(srv), exchanges=[Exchange("echo hi", reply)])
    app = TermchatApp(Config(path=Path("/nonexistent/config.toml")), conversation.model,
                      conversation=conversation, cursor_blink=False, show_timings=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause(0.1)
        [block] = blocks(app)
        assert block.outcome is ToolOutcome.OK and "→ hi" in block_text(block)
        assert [m.text for m in app.chat.query(AssistantMessage)] == ["Let me look.",
                                                                     "It said hi."]


async def test_a_stored_hostile_tool_exchange_reopens_inert(srv: ProviderServer,
                                                             tmp_path: Path) -> None:
    # The history keeps what the model and the tool sent, raw; the screen never shows it so.
    hostile = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b]0;pwned\x07\x1b[2J\u202eevil\x9b31m"
    model = model_for(srv)
    with HistoryStore.open(tmp_path / "history.db") as store:
        record = store.new_conversation()
        reply = Reply(model=model.model, provider=model.provider, status=Status.COMPLETE)
        reply.add_text(f"Calling{hostile}.")
        reply.add(Call("c1", f"t__echo{hostile}", json.dumps({"text": hostile})))
        reply.add(ToolResult("c1", f"out{hostile}put\nmore{hostile}", True, ToolOutcome.ERROR))
        reply.add_text(f"Done{hostile}.")
        record.user_prompt("be evil", model).finish(reply)
        assert record.id is not None
        config = Config(path=Path("/nonexistent/config.toml"), models={"test": model})
        conversation = continue_conversation(config, store, record.id)
    app = stored_app(config, HistoryStore.open(tmp_path / "history.db"), conversation)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: bool(blocks(app)))
        [block] = blocks(app)
        assert block.outcome is ToolOutcome.ERROR and "→ outevilput" in block_text(block)
        assert unsafe_lines(app) == []
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert block.call.expanded and "moreevil" in block_text(block)
        assert unsafe_lines(app) == []


def stored_app(config: Config, store: HistoryStore, conversation: Conversation | None = None,
               model: ModelConfig | None = None) -> TermchatApp:
    model = conversation.model if conversation is not None else model
    assert model is not None
    return TermchatApp(config, model, conversation=conversation, history=store,
                       cursor_blink=False, show_timings=False)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_continuing_a_tool_turn_shows_its_calls_and_replays_them_exactly(
        srv: ProviderServer, tmp_path: Path, provider: str) -> None:
    srv.queue(Script(text="Let me look.", tool_calls=[ToolCall("t__echo", ECHO, id="c1")]),
              Script(text="It said hello."), Script(text="Again."))
    model = model_for(srv, provider)
    config = Config(path=Path("/nonexistent/config.toml"), models={"test": model},
                    tools=ToolsConfig(servers={"t": script_server("t", trust=True)}))
    # The app closes its store when it ends, as termchat does.
    async with stored_app(config, HistoryStore.open(tmp_path / "history.db"),
                          model=model).run_test(size=(100, 40)) as pilot:
        await send(pilot, "echo hello")
        await finish(pilot)
    with HistoryStore.open(tmp_path / "history.db") as store:
        # What `termchat -c` does: the TUI starts on the last conversation.
        cid = store.last_conversation_id()
        assert cid is not None
        app = stored_app(config, store, continue_conversation(config, store, cid))
        async with app.run_test(size=(100, 40)) as pilot:
            await wait_until(pilot, lambda: bool(blocks(app)))
            [block] = blocks(app)
            assert (block.call.phase, block.outcome) == (Phase.DONE, ToolOutcome.OK)
            assert "→ hello from the tool" in block_text(block)
            assert [m.text for m in app.chat.query(AssistantMessage)] == [
                "Let me look.", "It said hello."]
            await send(pilot, "and again?")
            await finish(pilot)
    _, follow_up, continued = srv.requests
    sent = follow_up.body["messages"]
    assert continued.body["messages"][:len(sent)] == sent
    assert wire_results(provider, continued.body) == [("c1", "hello from the tool", False)]


async def test_a_cancelled_tool_turn_reopens_from_the_history_screen_as_it_ended(
        srv: ProviderServer, tmp_path: Path) -> None:
    events = Events(tmp_path / "events")
    srv.queue(Script(text="Two things.", tool_calls=[
        ToolCall("t__echo", '{"text": "first"}', id="e"),
        ToolCall("t__sleep", '{"seconds": 30}', id="s")]))
    model = model_for(srv)
    config = Config(path=Path("/nonexistent/config.toml"), models={"test": model},
                    tools=ToolsConfig(servers={"t": script_server("t", events=events.path,
                                                                  trust=True)}))
    with HistoryStore.open(tmp_path / "history.db") as store:
        app = stored_app(config, store, model=model)
        async with app.run_test(size=(100, 40)) as pilot:
            await send(pilot, "nap")
            await events.wait("sleep-start", timeout=20)
            await pilot.press("escape")
            await finish(pilot)
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: not blocks(app))
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
            await wait_until(pilot, lambda: app.screen.query_one(
                "#history-list", OptionList).option_count > 0)
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.screen is app.chat and len(blocks(app)) == 2)
            first, sleeping = blocks(app)
            assert first.outcome is ToolOutcome.OK and "→ first" in block_text(first)
            assert sleeping.outcome is ToolOutcome.CANCELLED
            assert "■ cancelled" in block_text(sleeping)
            assert [m.text for m in app.chat.query(AssistantMessage)] == ["Two things."]
            assert "cancelled" in shown(app)


# --- The tools screen and the palette ------------------------------------------------------


async def test_the_tools_screen_turns_servers_and_tools_off_and_revokes_rules(
        srv: ProviderServer) -> None:
    srv.queue(Script(tool_calls=[ToolCall("t__echo", ECHO)]), Script(text="one"),
              Script(text="two"), Script(text="three"),
              Script(tool_calls=[ToolCall("t__echo", ECHO)]), Script(text="four"))
    app = tools_app(srv, script_server("t"), time_server())
    async with app.run_test(size=(120, 50)) as pilot:
        await send(pilot, "first")
        await answer(pilot, "t")
        await finish(pilot)
        assert offered("openai", srv.requests[0].body) >= {"t__echo", "time__get_current_time"}

        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: isinstance(app.screen, ToolsScreen))
        screen = app.screen
        assert isinstance(screen, ToolsScreen)
        text = shown(app)
        assert "[x] t  ready · 10 tools" in text and "[x] time  ready · 2 tools" in text
        assert "runs unasked: always allowed this session" in text
        # The time server off, then echo off: the rest of t stays.
        rows = screen._rows
        listing = screen.query_one("#tools-list")
        listing.highlighted = rows.index(next(r for r in rows if r and r.server == "time"
                                              and r.tool is None))  # type: ignore[attr-defined]
        await pilot.press("space")
        listing.highlighted = rows.index(next(r for r in rows if r and r.tool == "echo"))  # type: ignore[attr-defined]
        await pilot.press("space")
        assert "[ ] time" in shown(app) and "    [ ] echo" in shown(app)
        await pilot.press("escape")
        await send(pilot, "second")
        await finish(pilot)
        names = offered("openai", srv.requests[-1].body)
        assert "t__add" in names and "t__echo" not in names
        assert not any(n.startswith("time__") for n in names)

        # Everything back on, and the rule revoked: echo asks again.
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: isinstance(app.screen, ToolsScreen))
        screen = app.screen
        assert isinstance(screen, ToolsScreen)
        rows = screen._rows
        listing = screen.query_one("#tools-list")
        for row in [r for r in rows if r and (r.tool == "echo" or (r.server == "time"
                                                                    and r.tool is None))]:
            listing.highlighted = screen._rows.index(row)  # type: ignore[attr-defined]
            await pilot.press("space")
        rule = next(r for r in screen._rows if r and r.rule is not None)
        listing.highlighted = screen._rows.index(rule)  # type: ignore[attr-defined]
        await pilot.press("space")
        assert app.tools is not None and app.tools.policy.rules() == []
        await pilot.press("escape")
        await send(pilot, "third")
        await finish(pilot)
        assert offered("openai", srv.requests[-1].body) >= {"t__echo", "time__convert_time"}
        await send(pilot, "fourth")
        await answer(pilot, "y")
        await finish(pilot)


# --- Start-up and exit ---------------------------------------------------------------------


FIRST_FRAME = """
import sys, json
from pathlib import Path
from termchat.config import Config, ModelConfig
from termchat.tools.config import ToolsConfig
from termchat.tui.app import TermchatApp
from tests.support.models import model_for
from tests.support.tools import script_server

seen = {}
config = Config(path=Path("/nonexistent"), tools=ToolsConfig(servers={"t": script_server("t")}))
app = TermchatApp(config, model_for(None, base_url="http://127.0.0.1:9/v1"), cursor_blink=False)

async def auto_pilot(pilot):
    # The first frame is painted before anything of the MCP SDK is imported.
    seen["mcp at first frame"] = any(m == "mcp" or m.startswith("mcp.") for m in sys.modules)
    while app.tools is None or app.tools.starting:
        await pilot.pause(0.05)
    seen["state"] = app.tools.box.status("t").state.value
    seen["pid"] = app.tools.box.status("t").pid
    app.exit()

app.run(headless=True, size=(100, 30), auto_pilot=auto_pilot)
print(json.dumps(seen))
"""


def test_servers_start_after_the_first_frame_and_are_gone_when_the_app_is(
        tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(FIRST_FRAME)],
                          capture_output=True, text=True, timeout=90, check=False, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root),
                               "XDG_DATA_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["mcp at first frame"] is False
    assert seen["state"] == "ready"
    assert not alive(seen["pid"]) and not group_alive(seen["pid"])


async def test_quitting_stops_every_server(srv: ProviderServer) -> None:
    app = tools_app(srv, script_server("a"), script_server("b"), time_server())
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.tools is not None and not app.tools.starting,
                         timeout=20)
        assert app.tools is not None
        pids = [s.pid for s in app.tools.box.statuses()]
        assert len(pids) == 3 and all(pid is not None and alive(pid) for pid in pids)
        await pilot.press("ctrl+q")
    assert not any(alive(pid) or group_alive(pid) for pid in pids if pid is not None)


async def test_no_servers_configured_means_no_tools_and_no_tools_binding(
        srv: ProviderServer) -> None:
    srv.queue(Script(text="plain"))
    app = make_app(srv)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "hi")
        await finish(pilot)
        assert app.tools is None and "tools" not in srv.requests[0].body
        assert "Tools" not in shown(app)
