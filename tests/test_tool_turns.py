"""Turns with tools end to end: the real SDKs stream the model's calls from the local provider
server, a real MCP server over stdio runs them, and the follow-up request (as the server
recorded it) carries the results in each provider's own shape, round after round."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from termchat.content import ToolOutcome, ToolResult
from termchat.devserver import ProviderServer, Script, ToolCall
from termchat.events import (
    Event,
    TextDelta,
    ToolCallArguments,
    ToolCallReady,
    ToolCallStarted,
    ToolFinished,
    ToolRunning,
)
from termchat.tools.box import ResolvedCall, ToolBox
from termchat.tools.policy import DENIED_TEXT, ApprovalPolicy, Choice
from termchat.tools.runner import ToolRunner
from termchat.turn import Conversation, Status
from tests.support.models import PROVIDERS, model_for
from tests.support.tools import Events, script_server

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def box(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[ToolBox, Events]]:
    tmp = tmp_path_factory.mktemp("turns")
    tools = ToolBox([script_server("t", events=tmp / "events", timeout=20)], log_dir=tmp / "logs")
    await tools.wait_ready()
    yield tools, Events(tmp / "events")
    await tools.aclose()


class Asker:
    """The front end's question about a call: answers from a list, and remembers what it saw."""

    def __init__(self, *answers: Choice) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, str, str]] = []

    async def __call__(self, call: ResolvedCall) -> Choice:
        self.asked.append((call.spec.server, call.spec.tool, call.pretty_arguments()))
        return self.answers.pop(0)


def conversation(server: ProviderServer, provider: str, box: ToolBox, asker: Asker | None = None,
                 *, max_rounds: int = 10, yes: bool = True) -> Conversation:
    chat = Conversation(model_for(server, provider))
    chat.tools = ToolRunner(box, ApprovalPolicy({}, yes=yes), asker or Asker(),
                            max_rounds=max_rounds)
    return chat


def wire_results(provider: str, body: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(call id, content, is_error) of the tool results in a request body, in order."""
    if provider == "openai":
        return [(m["tool_call_id"], m["content"], m["content"].startswith("Error"))
                for m in body["messages"] if m["role"] == "tool"]
    return [(b["tool_use_id"], _text(b["content"]), bool(b.get("is_error")))
            for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"] if b["type"] == "tool_result"]


def _text(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(b["text"] for b in content)


def wire_calls(provider: str, body: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(id, name, arguments as JSON) of the assistant's tool calls in a request body."""
    if provider == "openai":
        return [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
                for m in body["messages"] if m["role"] == "assistant"
                for c in m.get("tool_calls") or []]
    return [(b["id"], b["name"], b["input"])
            for m in body["messages"] if m["role"] == "assistant" and isinstance(m["content"], list)
            for b in m["content"] if b["type"] == "tool_use"]


def roles(provider: str, body: dict[str, Any]) -> list[str]:
    return [m["role"] for m in body["messages"]]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_call_runs_and_the_follow_up_carries_its_result(
        srv: ProviderServer, box: tuple[ToolBox, Events], provider: str) -> None:
    srv.queue(Script(text="Let me echo.", tool_calls=[
                  ToolCall("t__echo", '{"text": "hello tools"}', id="call_1", chunk_size=3)],
                  input_tokens=10, output_tokens=5),
              Script(text="It said hello tools.", input_tokens=30, output_tokens=7))
    seen: list[Event] = []
    exchange = await conversation(srv, provider, box[0]).send("echo it", seen.append)

    assert len(srv.requests) == 2
    first, follow_up = (r.body for r in srv.requests)
    assert [t["name"] if provider == "anthropic" else t["function"]["name"]
            for t in first["tools"]] == [spec.name for spec in box[0].tools()]
    assert wire_calls(provider, follow_up) == [("call_1", "t__echo", {"text": "hello tools"})]
    assert wire_results(provider, follow_up) == [("call_1", "hello tools", False)]
    # The assistant's round went back with its text as it was streamed.
    assistant = next(m for m in follow_up["messages"] if m["role"] == "assistant")
    text = assistant["content"] if provider == "openai" else assistant["content"][0]["text"]
    assert text == "Let me echo."

    reply = exchange.reply
    assert reply.status is Status.COMPLETE and reply.rounds == 2
    assert reply.text.endswith("It said hello tools.")
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (40, 12)
    assert [(u.input_tokens, u.output_tokens) for u in reply.round_usages] == [(10, 5), (30, 7)]
    assert [f.reason if f else None for f in reply.round_finishes] == [
        "tool_calls" if provider == "openai" else "tool_use",
        "stop" if provider == "openai" else "end_turn"]
    kinds = [type(e) for e in seen if not isinstance(e, TextDelta)]
    started = kinds.index(ToolCallStarted)
    assert kinds.index(ToolCallArguments) > started
    assert kinds.index(ToolCallReady) > kinds.index(ToolCallArguments)
    assert kinds.index(ToolRunning) > kinds.index(ToolCallReady)
    assert kinds.index(ToolFinished) > kinds.index(ToolRunning)
    fragments = [e.fragment for e in seen if isinstance(e, ToolCallArguments)]
    assert len(fragments) > 1 and "".join(fragments) == '{"text": "hello tools"}'


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_parallel_calls_go_back_in_order_and_rounds_do_not_repeat(
        srv: ProviderServer, box: tuple[ToolBox, Events], provider: str) -> None:
    srv.queue(Script(tool_calls=[ToolCall("t__add", '{"a": 2, "b": 3}', id="c1"),
                                 ToolCall("t__echo", '{"text": "two"}', id="c2")],
                     interleave=True),
              Script(text="Now one more.", tool_calls=[ToolCall("t__add", '{"a": 5, "b": 1}',
                                                                id="c3")]),
              Script(text="Five, two, six."))
    exchange = await conversation(srv, provider, box[0]).send("add things")

    assert len(srv.requests) == 3
    second, third = srv.requests[1].body, srv.requests[2].body
    assert wire_results(provider, second) == [("c1", "5", False), ("c2", "two", False)]
    assert wire_results(provider, third) == [("c1", "5", False), ("c2", "two", False),
                                             ("c3", "6", False)]
    assert [c[0] for c in wire_calls(provider, third)] == ["c1", "c2", "c3"]
    expected = (["user", "assistant", "tool", "tool", "assistant", "tool"] if provider == "openai"
                else ["user", "assistant", "user", "assistant", "user"])
    assert roles(provider, third) == expected
    assert exchange.reply.rounds == 3 and exchange.reply.text.endswith("Five, two, six.")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_denied_call_tells_the_model_and_the_turn_goes_on(
        srv: ProviderServer, box: tuple[ToolBox, Events], provider: str) -> None:
    srv.queue(Script(tool_calls=[ToolCall("t__echo", '{"text": "secret"}', id="d1")]),
              Script(text="Understood, I will not."))
    asker = Asker(Choice.DENY)
    exchange = await conversation(srv, provider, box[0], asker, yes=False).send("try")

    assert asker.asked == [("t", "echo", json.dumps({"text": "secret"}, indent=2))]
    assert wire_results(provider, srv.requests[1].body) == [
        ("d1", DENIED_TEXT, provider == "anthropic" or DENIED_TEXT.startswith("Error"))]
    [result] = [p for p in exchange.reply.parts if isinstance(p, ToolResult)]
    assert result.outcome is ToolOutcome.DENIED
    assert exchange.reply.status is Status.COMPLETE


async def test_always_allowing_a_tool_asks_only_once(
        srv: ProviderServer, box: tuple[ToolBox, Events]) -> None:
    srv.queue(Script(tool_calls=[ToolCall("t__echo", '{"text": "a"}')]),
              Script(tool_calls=[ToolCall("t__echo", '{"text": "b"}'),
                                 ToolCall("t__add", '{"a": 1, "b": 1}')]),
              Script(text="done"))
    asker = Asker(Choice.ALWAYS_TOOL, Choice.ONCE)
    exchange = await conversation(srv, "openai", box[0], asker, yes=False).send("go")
    assert [tool for _, tool, _ in asker.asked] == ["echo", "add"]
    assert [r[1] for r in wire_results("openai", srv.requests[2].body)] == ["a", "b", "2"]
    assert exchange.reply.status is Status.COMPLETE


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_invalid_arguments_and_a_failing_tool_are_error_results_for_the_model(
        srv: ProviderServer, box: tuple[ToolBox, Events], provider: str) -> None:
    srv.queue(Script(tool_calls=[ToolCall("t__echo", '{"text": "unterminated', id="bad"),
                                 ToolCall("t__fail", '{"message": "disk on fire"}', id="f"),
                                 ToolCall("nosuch__tool", "{}", id="u")]),
              Script(text="Sorry."))
    exchange = await conversation(srv, provider, box[0]).send("break things")
    results = {p.call_id: p for p in exchange.reply.parts if isinstance(p, ToolResult)}
    assert results["bad"].outcome is ToolOutcome.INVALID and results["bad"].is_error
    assert "JSON" in results["bad"].content
    assert results["f"].is_error and "disk on fire" in results["f"].content
    assert results["u"].is_error and "t__echo" in results["u"].content
    sent = {call_id: (content, error) for call_id, content, error
            in wire_results(provider, srv.requests[1].body)}
    assert set(sent) == {"bad", "f", "u"}
    if provider == "anthropic":
        assert all(error for _, error in sent.values())
    # Invalid arguments are sent back as the text they were, not as an object we made up.
    if provider == "openai":
        [call] = [c for m in srv.requests[1].body["messages"] if m["role"] == "assistant"
                  for c in m["tool_calls"] if c["id"] == "bad"]
        assert call["function"]["arguments"] == '{"text": "unterminated'
    assert exchange.reply.status is Status.COMPLETE


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_round_limit_ends_the_turn_without_another_request(
        srv: ProviderServer, box: tuple[ToolBox, Events], provider: str) -> None:
    srv.queue(*[Script(tool_calls=[ToolCall("t__echo", f'{{"text": "{n}"}}')])
                for n in range(3)])
    exchange = await conversation(srv, provider, box[0], max_rounds=2).send("loop")
    assert len(srv.requests) == 2
    reply = exchange.reply
    assert reply.round_limit and reply.rounds == 2
    assert reply.status is Status.COMPLETE
    assert reply.pending_calls(), "the last round's call was not run"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_cancelling_during_a_running_tool_cancels_it_on_the_server_and_keeps_the_rest(
        srv: ProviderServer, box: tuple[ToolBox, Events], provider: str) -> None:
    tools, events = box
    srv.queue(Script(text="Sleeping now.", tool_calls=[
        ToolCall("t__echo", '{"text": "first"}', id="e"),
        ToolCall("t__sleep", '{"seconds": 30}', id="s"),
        ToolCall("t__echo", '{"text": "never"}', id="n")]))
    chat = conversation(srv, provider, tools)
    events.mark()
    task = asyncio.create_task(chat.send("nap"))
    started = await events.wait("sleep-start")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await events.wait(started.replace("start", "cancelled"))

    reply = chat.exchanges[-1].reply
    assert reply.status is Status.CANCELLED
    assert reply.text == "Sleeping now."
    outcomes = [(p.call_id, p.outcome) for p in reply.parts if isinstance(p, ToolResult)]
    assert outcomes == [("e", ToolOutcome.OK), ("s", ToolOutcome.CANCELLED),
                        ("n", ToolOutcome.CANCELLED)]
    assert len(srv.requests) == 1

    # The next turn sends the cancelled round as it ended: every call has its result.
    srv.queue(Script(text="ok"))
    await chat.send("and now?")
    results = wire_results(provider, srv.requests[-1].body)
    assert [r[0] for r in results] == ["e", "s", "n"]
    assert results[0][1] == "first"


async def test_anthropic_thinking_goes_back_signed_before_its_tool_use(
        srv: ProviderServer, box: tuple[ToolBox, Events]) -> None:
    srv.queue(Script(thinking="I should echo.", text="Echoing.",
                     tool_calls=[ToolCall("t__echo", '{"text": "x"}', id="toolu_x")]),
              Script(text="Done."))
    await conversation(srv, "anthropic", box[0]).send("think and echo")
    [assistant] = [m for m in srv.requests[1].body["messages"] if m["role"] == "assistant"]
    blocks = assistant["content"]
    assert [b["type"] for b in blocks] == ["thinking", "text", "tool_use"]
    assert blocks[0]["thinking"] == "I should echo." and blocks[0]["signature"]


async def test_a_hostile_tool_result_goes_to_the_model_verbatim_but_is_never_shown_raw(
        srv: ProviderServer, box: tuple[ToolBox, Events], tmp_path: Path) -> None:
    hostile = "ok\x1b]52;c;aGVsbG8=\x07\x1b[2J done"
    srv.queue(Script(tool_calls=[ToolCall("t__echo", json.dumps({"text": hostile}), id="h")]),
              Script(text="fine"))
    finished: list[ToolFinished] = []
    await conversation(srv, "openai", box[0]).send(
        "x", lambda e: finished.append(e) if isinstance(e, ToolFinished) else None)
    # The model gets what the tool said; showing it is the front ends' job (sanitised there).
    assert wire_results("openai", srv.requests[1].body)[0][1] == hostile
    assert finished[0].result.content == hostile
