"""The provider layer against the real OpenAI and Anthropic SDKs, over real local sockets.

Every reply comes from the local provider server (`termchat.devserver`), or, where it cannot
script the case, from a few lines of raw socket server in this file. Nothing is mocked.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from termchat.config import ModelConfig
from termchat.content import Attachment, AttachmentKind, Text, ToolCall, ToolDefinition, ToolResult
from termchat.devserver import ProviderServer, Script
from termchat.errors import (
    AuthError,
    BadRequestError,
    ConnectionFailedError,
    ConnectTimeoutError,
    ContextLengthError,
    MissingKeyError,
    ModelNotFoundError,
    OverloadedError,
    ProviderError,
    RateLimitedError,
    ServerError,
    StalledError,
    StreamError,
    StreamInterruptedError,
)
from termchat.events import Event, Finish, FinishKind, ReasoningDelta, TextDelta, Usage
from termchat.providers import ChatRequest, Message, Provider
from termchat.providers._base import READ_PACE, SDKProvider
from termchat.turn import Conversation, Reply, Status, run_turn
from tests.support.models import KEY, PROVIDERS, closed_port, model_for, opened

both = pytest.mark.parametrize("provider", PROVIDERS)


def ask(prompt: str = "hi", **kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=(Message.of("user", prompt),), **kwargs)


async def collect(model: ModelConfig, request: ChatRequest | None = None,
                  ) -> tuple[list[Event], ProviderError | None]:
    """Every event of one reply, and the error it ended with (if any)."""
    events: list[Event] = []
    async with opened(model) as provider:
        try:
            async for event in provider.stream(request or ask()):
                events.append(event)
        except ProviderError as exc:
            return events, exc
    return events, None


async def turn(model: ModelConfig, request: ChatRequest | None = None,
               on_event: Callable[[Event], Awaitable[None] | None] | None = None,
               ) -> tuple[Reply, ProviderError | None]:
    """One reply through `run_turn`; its error is returned instead of raised."""
    reply = Reply()
    async with opened(model) as provider:
        try:
            await run_turn(provider, request or ask(), reply, on_event)
        except ProviderError as exc:
            return reply, exc
    return reply, None


def texts(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


# --- Streaming: text, usage, finish, reasoning ----------------------------------------------


# A user's text, an image, the assistant's call of a tool and its result, and every request
# parameter termchat sets.
RICH_REQUEST = ChatRequest(
    messages=(
        Message("user", (Text("what is in it?"), Attachment(
            "dot.png", "image/png", AttachmentKind.IMAGE, "0" * 64, 4, b"\x89PNG"))),
        Message("assistant", (Text("Let me look."), ToolCall("call_1", "lookup", '{"q": "x"}'))),
        Message("tool", (ToolResult("call_1", "a dot"),)),
        Message.of("user", "and now?"),
    ),
    system="Be brief.", temperature=0.5, max_tokens=99,
    tools=(ToolDefinition("lookup", "Looks a thing up",
                          {"type": "object", "properties": {"q": {"type": "string"}}}),))


@both
async def test_the_request_is_the_one_the_sdks_own_create_sends(
        srv: ProviderServer, provider: str) -> None:
    """termchat posts through the SDK's client and reads its stream as JSON objects: the
    request (path, body, headers) is byte for byte what `create` would send."""
    model = model_for(srv, provider)
    srv.queue(Script(text="ours"))
    srv.queue(Script(text="theirs"))
    async with opened(model) as opened_provider:
        events = [event async for event in opened_provider.stream(RICH_REQUEST)]
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "ours"
        assert isinstance(opened_provider, SDKProvider)
        sdk_provider: Any = opened_provider
        params, client = sdk_provider._params(RICH_REQUEST), sdk_provider._client
        create = (client.chat.completions.create if provider == "openai"
                  else client.messages.create)
        async with await create(**params) as stream:
            async for _ in stream:
                pass
    ours, theirs = srv.requests[-2:]
    assert (ours.path, ours.body) == (theirs.path, theirs.body)
    assert ours.headers == theirs.headers


@both
async def test_text_arrives_piece_by_piece_while_the_server_is_still_sending(
    srv: ProviderServer, provider: str
) -> None:
    srv.queue(Script(chunks=["one ", "two ", "three ", "four ", "five"], delay=0.1))
    arrivals: list[float] = []

    def on_event(event: Event) -> None:
        if isinstance(event, TextDelta):
            arrivals.append(time.monotonic())

    reply, error = await turn(model_for(srv, provider), on_event=on_event)
    assert error is None and reply.text == "one two three four five"
    assert len(arrivals) == 5
    (rec,) = srv.requests
    assert rec.last_chunk_at is not None
    # The first words were in hand while the server still had ~0.4 s of reply to send.
    assert arrivals[0] < rec.last_chunk_at - 0.3
    assert arrivals[3] < rec.last_chunk_at


@both
async def test_a_trickling_stream_is_read_a_frame_at_a_time(
        srv: ProviderServer, provider: str) -> None:
    """A chunk every 5 ms: the socket is read about 30 times a second, each read taking all
    that came since (a wake-up per chunk cost more CPU than the chunk's parse), so the text
    comes in bursts a frame apart. Twice over one kept-alive connection: the pacing of the
    first stream ends with it, and the second is paced once, as the first was."""
    model = model_for(srv, provider)
    words = [f"w{i} " for i in range(60)]
    async with opened(model) as opened_provider:
        for _ in range(2):
            srv.queue(Script(chunks=words, delay=0.005))
            arrivals: list[float] = []
            async for event in opened_provider.stream(ask()):
                if isinstance(event, TextDelta):
                    arrivals.append(time.monotonic())
            gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
            bursts = 1 + sum(gap > 0.003 for gap in gaps)
            # 0.3 s of chunks: ten reads, give or take; a read per chunk would be 60.
            assert len(arrivals) == 60 and bursts <= 0.3 / READ_PACE + 4
    assert len(srv.requests) == 2


async def test_openai_usage_and_finish_are_parsed(srv: ProviderServer) -> None:
    srv.queue(Script(text="Hello", input_tokens=11, output_tokens=7, cached_tokens=3,
                     reasoning_tokens=2))
    events, error = await collect(model_for(srv, "openai"))
    assert error is None
    assert events == [TextDelta("Hello"), Usage(11, 7, 3, 2), Finish("stop", FinishKind.COMPLETE)]
    assert srv.requests[0].body["stream_options"] == {"include_usage": True}


async def test_anthropic_usage_thinking_and_finish_are_parsed(srv: ProviderServer) -> None:
    srv.queue(Script(text="Hello", thinking="Let me think.", chunk_size=100, input_tokens=11,
                     output_tokens=9, cached_tokens=3, reasoning_tokens=4))
    reply, error = await turn(model_for(srv, "anthropic"))
    assert error is None
    assert (reply.reasoning, reply.text) == ("Let me think.", "Hello")
    # Anthropic counts cache reads apart from input_tokens; the input is both together.
    assert reply.usage == Usage(input_tokens=14, output_tokens=9, cached_tokens=3,
                                reasoning_tokens=4)
    assert reply.finish == Finish("end_turn", FinishKind.COMPLETE)
    assert reply.status is Status.COMPLETE


async def test_anthropic_output_tokens_stay_unknown_until_the_server_counts_them(
    srv: ProviderServer,
) -> None:
    srv.queue(Script(text="abcdef", chunk_size=2, input_tokens=5, end_without_finish_after=2))
    reply, error = await turn(model_for(srv, "anthropic"))
    assert isinstance(error, StreamInterruptedError)
    assert reply.usage.input_tokens == 5
    # message_start carries a placeholder output count; it is not reported as a real 0 or 1.
    assert reply.usage.output_tokens is None and reply.usage.reasoning_tokens is None


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("auto", Usage(2, 3, 0, 0)),  # honours stream_options.include_usage
        ("always", Usage(2, 3, 0, 0)),  # sends it whatever was asked
        ("never", None),  # llama-cpp-python style: no usage at all
    ],
)
async def test_openai_usage_whatever_the_server_does_with_stream_options(
    srv: ProviderServer, mode: str, expected: Usage | None
) -> None:
    srv.queue(Script(text="Hi there", usage=mode, input_tokens=2, output_tokens=3))  # type: ignore[arg-type]
    reply, error = await turn(model_for(srv, "openai"))
    assert error is None and reply.text == "Hi there"
    assert reply.finish == Finish("stop", FinishKind.COMPLETE)
    if expected is None:
        # Unknown is unknown: every count None, never a made-up 0.
        assert reply.usage == Usage(None, None, None, None) and not reply.usage.known
    else:
        assert reply.usage == expected


@pytest.mark.parametrize(
    ("provider", "script", "reason", "kind"),
    [
        ("openai", Script(text="cut", finish="length"), "length", FinishKind.LENGTH),
        ("openai", Script(text="bad", finish="content_filter"), "content_filter",
         FinishKind.FILTERED),
        ("anthropic", Script(text="cut", finish="max_tokens"), "max_tokens", FinishKind.LENGTH),
        ("anthropic", Script(text="no", finish="stop_sequence"), "stop_sequence",
         FinishKind.COMPLETE),
        ("anthropic", Script(refusal="I won't help with that."), "refusal", FinishKind.REFUSAL),
        ("openai", Script(text="x", finish="weird_new_reason"), "weird_new_reason",
         FinishKind.OTHER),
    ],
    ids=["openai-length", "openai-filter", "anthropic-max-tokens", "anthropic-stop-sequence",
         "anthropic-refusal", "openai-unknown"],
)
async def test_finish_reason_is_kept_verbatim_with_its_kind(
    srv: ProviderServer, provider: str, script: Script, reason: str, kind: FinishKind
) -> None:
    srv.queue(script)
    reply, error = await turn(model_for(srv, provider))
    assert error is None and reply.status is Status.COMPLETE
    assert reply.finish == Finish(reason, kind)
    assert reply.finish.truncated is (kind is FinishKind.LENGTH)
    assert reply.text == (script.text or script.refusal)


async def test_openai_refusal_is_shown_and_marks_the_finish(srv: ProviderServer) -> None:
    srv.queue(Script(refusal="I can't help with that.", chunk_size=8))
    events, error = await collect(model_for(srv, "openai"))
    assert error is None
    assert "".join(texts(events)) == "I can't help with that."
    finish = events[-1]
    assert finish == Finish("stop", FinishKind.REFUSAL)
    assert finish.describe() == "stop — the model refused"


@both
async def test_keepalive_comments_and_pings_are_ignored(
    srv: ProviderServer, provider: str
) -> None:
    srv.queue(Script(text="abcdef", chunk_size=2, keepalive=True))
    events, error = await collect(model_for(srv, provider))
    assert error is None
    assert texts(events) == ["ab", "cd", "ef"]
    assert all(isinstance(e, TextDelta | Usage | Finish) for e in events)
    assert isinstance(events[-1], Finish) and events[-1].kind is FinishKind.COMPLETE


@contextlib.asynccontextmanager
async def raw_http_server(body: bytes) -> AsyncIterator[str]:
    """Serves `body` as an SSE response to every request; yields the OpenAI base_url."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()
        await server.wait_closed()


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(data)}\n\n".encode()


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_openai_compatible_reasoning_deltas_are_reasoning_not_text(field: str) -> None:
    # vLLM / DeepSeek send `reasoning_content`, others `reasoning`; the devserver sends neither.
    body = b"".join([
        _chunk({"role": "assistant", "content": ""}),
        _chunk({field: "Think "}), _chunk({field: "hard."}),
        _chunk({"content": "42"}), _chunk({}, "stop"), b"data: [DONE]\n\n",
    ])
    async with raw_http_server(body) as url:
        events, error = await collect(model_for(None, "openai", base_url=url))
    assert error is None
    assert events == [ReasoningDelta("Think "), ReasoningDelta("hard."), TextDelta("42"),
                      Finish("stop", FinishKind.COMPLETE)]


async def test_openai_usage_without_details_leaves_cached_and_reasoning_unknown() -> None:
    # Many compatible servers report only the three totals.
    usage = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                                      "total_tokens": 7}}
    body = b"".join([_chunk({"content": "ok"}), _chunk({}, "stop"),
                     f"data: {json.dumps(usage)}\n\n".encode(), b"data: [DONE]\n\n"])
    async with raw_http_server(body) as url:
        events, error = await collect(model_for(None, "openai", base_url=url))
    assert error is None
    assert Usage(input_tokens=5, output_tokens=2, cached_tokens=None,
                 reasoning_tokens=None) in events


# --- Requests: what is sent --------------------------------------------------------------


async def test_openai_request_carries_system_temperature_and_max_tokens(
    srv: ProviderServer,
) -> None:
    request = ask("the question", system="be brief", temperature=0.3, max_tokens=42)
    _, error = await collect(model_for(srv, "openai"), request)
    assert error is None
    body = srv.requests[0].body
    assert body["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "the question"}]
    assert body["temperature"] == 0.3
    # A base_url means a compatible server, which mostly knows only `max_tokens`.
    assert body["max_tokens"] == 42 and "max_completion_tokens" not in body
    assert body["stream"] is True and body["model"].endswith("-test-model")
    assert srv.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_openai_without_base_url_caps_with_max_completion_tokens(
    srv: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No base_url means api.openai.com, whose reasoning models reject `max_tokens`. The SDK's
    # own OPENAI_BASE_URL lets the request land on the local server all the same.
    monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
    _, error = await collect(model_for(None, "openai"), ask(max_tokens=42))
    assert error is None
    body = srv.requests[0].body
    assert body["max_completion_tokens"] == 42 and "max_tokens" not in body
    assert body["stream_options"] == {"include_usage": True}


async def test_anthropic_request_carries_system_and_max_tokens_but_no_temperature(
    srv: ProviderServer,
) -> None:
    request = ask("the question", system="be brief", temperature=0.3, max_tokens=42)
    _, error = await collect(model_for(srv, "anthropic"), request)
    assert error is None
    body = srv.requests[0].body
    assert body["system"] == "be brief" and body["max_tokens"] == 42
    assert body["messages"] == [{"role": "user", "content": "the question"}]
    # anthropic 2.x has no temperature parameter and its API version rejects the field.
    assert "temperature" not in body
    assert body["stream"] is True and body["model"].endswith("-test-model")


async def test_anthropic_always_sends_a_max_tokens(srv: ProviderServer) -> None:
    from termchat.providers.anthropic_messages import DEFAULT_MAX_TOKENS

    _, error = await collect(model_for(srv, "anthropic"), ask())
    assert error is None
    assert srv.requests[0].body["max_tokens"] == DEFAULT_MAX_TOKENS


@both
async def test_conversation_sends_earlier_turns_as_context(
    srv: ProviderServer, provider: str
) -> None:
    srv.queue(Script(text="First answer."), Script(text="Second answer."))
    conversation = Conversation(model_for(srv, provider), system="sys")
    try:
        await conversation.send("First question?")
        await conversation.send("Second question?")
    finally:
        await conversation.aclose()
    second = srv.requests[1].body["messages"]
    turns = [{"role": "user", "content": "First question?"},
             {"role": "assistant", "content": "First answer."},
             {"role": "user", "content": "Second question?"}]
    assert second == ([{"role": "system", "content": "sys"}, *turns] if provider == "openai"
                      else turns)


@both
async def test_a_cancelled_partial_reply_is_context_but_a_failed_one_is_not(
    srv: ProviderServer, provider: str
) -> None:
    srv.queue(Script(chunks=["Partial ", "answer ", "never sent"], stall_after=2),
              Script(chunks=["Broken ", "answer"], error_after=1), Script(text="ok"))
    conversation = Conversation(model_for(srv, provider))
    got_two = asyncio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, TextDelta) and event.text == "answer ":
            got_two.set()

    try:
        task = asyncio.create_task(conversation.send("Cancelled question?", on_event))
        await asyncio.wait_for(got_two.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(StreamError):
            await conversation.send("Failed question?")
        await conversation.send("Third question?")
    finally:
        await conversation.aclose()
    cancelled, failed, _ = conversation.exchanges
    assert cancelled.reply.status is Status.CANCELLED
    # The failed reply had started too, but its prompt goes back to the user to send again.
    assert failed.reply.status is Status.ERROR and failed.reply.text == "Broken "
    assert srv.requests[2].body["messages"] == [
        {"role": "user", "content": "Cancelled question?"},
        {"role": "assistant", "content": "Partial answer "},
        {"role": "user", "content": "Third question?"},
    ]


# --- Cancelling closes the connection -------------------------------------------------------


@both
async def test_cancel_while_awaiting_the_network_closes_the_connection(
    srv: ProviderServer, provider: str
) -> None:
    # The server sends three pieces, then holds the connection open: the task is waiting on
    # the socket when it is cancelled.
    srv.queue(Script(text="abcdefghij", chunk_size=1, stall_after=3))
    reply = Reply()
    got_three = asyncio.Event()

    def on_event(event: Event) -> None:
        if reply.text == "abc":
            got_three.set()

    async with opened(model_for(srv, provider)) as p:
        task = asyncio.create_task(run_turn(p, ask(), reply, on_event))
        await asyncio.wait_for(got_three.wait(), 5)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rec = await asyncio.to_thread(srv.wait_for_disconnect, 1)
    assert rec.chunks_sent == 3 and not rec.completed
    assert reply.status is Status.CANCELLED and reply.text == "abc"


@both
async def test_cancel_while_the_consumer_awaits_something_else_closes_the_connection(
    srv: ProviderServer, provider: str
) -> None:
    # The server keeps streaming for 4 s; the consumer is busy in its own await (like a UI
    # update) when it is cancelled, so only closing the stream can hang up.
    srv.queue(Script(text="x" * 400, chunk_size=1, delay=0.01))
    reply = Reply()
    parked = asyncio.Event()

    async def on_event(event: Event) -> None:
        if reply.text == "xxx":
            parked.set()
            await asyncio.sleep(10)

    async with opened(model_for(srv, provider)) as p:
        task = asyncio.create_task(run_turn(p, ask(), reply, on_event))
        await asyncio.wait_for(parked.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rec = await asyncio.to_thread(srv.wait_for_disconnect, 1)
    assert not rec.completed and rec.chunks_sent < 400
    assert reply.status is Status.CANCELLED and reply.text == "xxx"


@both
async def test_cancel_in_an_async_for_over_the_stream_closes_the_connection(
    srv: ProviderServer, provider: str
) -> None:
    # The same, for a consumer that iterates provider.stream() itself (closing it on the way
    # out, as run_turn does) and is parked between pieces.
    srv.queue(Script(text="y" * 400, chunk_size=1, delay=0.01))
    got: list[str] = []
    parked = asyncio.Event()

    async def consume(p: Provider) -> None:
        async with contextlib.aclosing(p.stream(ask())) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    got.append(event.text)
                    if len(got) == 2:
                        parked.set()
                        await asyncio.sleep(10)

    async with opened(model_for(srv, provider)) as p:
        task = asyncio.create_task(consume(p))
        await asyncio.wait_for(parked.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rec = await asyncio.to_thread(srv.wait_for_disconnect, 1)
    assert not rec.completed and got == ["y", "y"]


@both
async def test_cancel_before_the_reply_starts_closes_the_connection(
    srv: ProviderServer, provider: str
) -> None:
    srv.queue(Script(text="late", header_delay=10))
    reply = Reply()
    async with opened(model_for(srv, provider)) as p:
        task = asyncio.create_task(run_turn(p, ask(), reply))
        await asyncio.to_thread(srv.wait_for_requests, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rec = await asyncio.to_thread(srv.wait_for_disconnect, 1)
    assert rec.chunks_sent == 0
    assert reply.status is Status.CANCELLED and reply.text == ""


# --- Errors: typed, one line, with what to do, never the key ---------------------------------


def assert_user_facing(error: BaseException) -> None:
    """One line, a full sentence, and the key nowhere a user or a log could see it."""
    text = str(error)
    assert "\n" not in text and text.endswith("."), text
    for shown in (text, repr(error), *map(str, error.args)):
        assert KEY not in shown and KEY[8:] not in shown


ERRORS = [
    # (id, provider, script, error class, words the message must contain)
    ("openai-401", "openai", Script(status=401), AuthError, ["401", "check OPENAI_API_KEY"]),
    ("anthropic-401", "anthropic", Script(status=401), AuthError,
     ["401", "check ANTHROPIC_API_KEY"]),
    ("openai-403", "openai", Script(status=403), AuthError, ["403", "use a key with access"]),
    ("anthropic-403", "anthropic", Script(status=403), AuthError, ["403", "use a key"]),
    ("openai-404", "openai", Script(status=404), ModelNotFoundError,
     ["model 'openai-test-model'", "check the model name"]),
    ("anthropic-404", "anthropic", Script(status=404), ModelNotFoundError,
     ["model 'anthropic-test-model'", "check the model name"]),
    ("openai-429", "openai", Script(status=429, retry_after="7"), RateLimitedError,
     ["429", "retry after 7 s"]),
    ("anthropic-429", "anthropic", Script(status=429), RateLimitedError,
     ["429", "wait a moment and try again"]),
    ("openai-500", "openai", Script(status=500), ServerError, ["500", "try again"]),
    ("anthropic-500", "anthropic", Script(status=500), ServerError, ["500", "try again"]),
    ("openai-503", "openai", Script(status=503), ServerError, ["503", "try again"]),
    ("anthropic-529", "anthropic", Script(status=529), OverloadedError,
     ["overloaded", "try again in a minute"]),
    ("openai-context", "openai",
     Script(status=400, error_code="context_length_exceeded",
            error_message="This model's maximum context length is 128000 tokens. However, "
                          "your messages resulted in 130000 tokens."),
     ContextLengthError, ["128000 tokens", "start a new conversation"]),
    ("anthropic-context", "anthropic",
     Script(status=400, error_message="prompt is too long: 210000 tokens > 200000 maximum"),
     ContextLengthError, ["210000 tokens", "start a new conversation"]),
    ("openai-400", "openai", Script(status=400, error_message="Unsupported value: 'x'"),
     BadRequestError, ["Unsupported value", "check this model's settings"]),
    ("openai-mid-stream-error", "openai", Script(text="abcdef", chunk_size=2, error_after=2),
     StreamError, ["mid-reply", "try again"]),
    ("anthropic-mid-stream-error", "anthropic",
     Script(text="abcdef", chunk_size=2, error_after=2), StreamError,
     ["overloaded mid-reply", "try again"]),
    ("openai-ends-without-finish", "openai",
     Script(text="abcdef", chunk_size=2, end_without_finish_after=2), StreamInterruptedError,
     ["before it finished", "try again"]),
    ("anthropic-ends-without-finish", "anthropic",
     Script(text="abcdef", chunk_size=2, end_without_finish_after=2), StreamInterruptedError,
     ["before it finished", "try again"]),
    ("openai-disconnect", "openai", Script(text="abcdef", chunk_size=2, disconnect_after=2),
     StreamInterruptedError, ["dropped mid-reply", "try again"]),
    ("anthropic-disconnect", "anthropic",
     Script(text="abcdef", chunk_size=2, disconnect_after=2), StreamInterruptedError,
     ["dropped mid-reply", "try again"]),
]


@pytest.mark.parametrize(("provider", "script", "kind", "words"),
                         [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
async def test_provider_failures_become_one_clear_typed_sentence(
    srv: ProviderServer, provider: str, script: Script, kind: type[ProviderError],
    words: list[str],
) -> None:
    srv.queue(script)
    reply, error = await turn(model_for(srv, provider))
    assert type(error) is kind, error
    for word in words:
        assert word in str(error)
    assert_user_facing(error)
    assert reply.error is error
    if kind is StreamInterruptedError:
        assert reply.status is Status.INTERRUPTED
    else:
        assert reply.status is Status.ERROR
    # A reply that had started keeps its partial text, whatever ended it.
    assert reply.text == ("abcd" if script.status == 200 else "")


@both
async def test_retry_after_is_passed_on(srv: ProviderServer, provider: str) -> None:
    srv.queue(Script(status=429, retry_after="12"), Script(status=429))
    _, error = await collect(model_for(srv, provider))
    assert isinstance(error, RateLimitedError) and error.retry_after == 12.0
    _, error = await collect(model_for(srv, provider))
    assert isinstance(error, RateLimitedError) and error.retry_after is None


@pytest.mark.parametrize(
    ("provider", "script"),
    [
        ("openai", Script(status=400, error_message=f"Invalid key {KEY} for model")),
        ("anthropic", Script(status=500, error_message=f"Backend refused {KEY}")),
        ("openai", Script(text="abcd", chunk_size=2, error_after=1,
                          error_message=f"Upstream said: bad key {KEY}")),
        ("anthropic", Script(text="abcd", chunk_size=2, error_after=1, error_type="api_error",
                             error_message=f"Upstream said: bad key {KEY}")),
    ],
    ids=["openai-400", "anthropic-500", "openai-mid-stream", "anthropic-mid-stream"],
)
async def test_a_key_echoed_by_the_server_is_redacted(
    srv: ProviderServer, provider: str, script: Script
) -> None:
    srv.queue(script)
    _, error = await collect(model_for(srv, provider))
    assert isinstance(error, ProviderError)
    # The server's words are shown, with the key cut out of them.
    assert "[redacted]" in str(error)
    assert_user_facing(error)


async def test_a_long_multi_line_server_message_is_one_short_line(srv: ProviderServer) -> None:
    page = "<html>\n<body>\n" + "Bad gateway. " * 100 + "\n</body>\n</html>"
    srv.queue(Script(status=502, error_message=page))
    _, error = await collect(model_for(srv, "openai"))
    assert isinstance(error, ServerError)
    assert_user_facing(error)
    assert len(str(error)) < 300 and "<html> <body> Bad gateway." in str(error)


@both
def test_a_missing_key_names_the_variable_before_anything_is_sent(
    srv: ProviderServer, provider: str
) -> None:
    variable = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    conversation = Conversation(model_for(srv, provider, api_key=None),
                                key_env={})
    with pytest.raises(MissingKeyError) as caught:
        conversation.start("hi")
    assert f"set {variable}" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert conversation.exchanges == [] and srv.requests == []

    conversation = Conversation(
        model_for(srv, provider, api_key=None, api_key_env="MY_TEAM_KEY"),
        key_env={variable: "not this one"})
    with pytest.raises(MissingKeyError, match="set MY_TEAM_KEY"):
        conversation.start("hi")


@both
async def test_connection_refused(provider: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}" + ("/v1" if provider == "openai" else "")
    _, error = await collect(model_for(None, provider, base_url=url))
    assert type(error) is ConnectionFailedError
    assert "connection refused" in str(error) and "check the network and base_url" in str(error)
    assert_user_facing(error)


@both
async def test_a_host_that_does_not_resolve_fails_fast(provider: str) -> None:
    started = time.monotonic()
    _, error = await collect(model_for(None, provider, base_url="http://termchat-test.invalid/v1",
                                    connect_timeout=3.0))
    assert type(error) is ConnectionFailedError
    assert "termchat-test.invalid (the host name does not resolve)" in str(error)
    assert_user_facing(error)
    # Not a connect timeout in disguise: resolution failed by itself, well inside 3 s.
    assert time.monotonic() - started < 2


@contextlib.asynccontextmanager
async def silent_tls_port() -> AsyncIterator[int]:
    """A port that accepts TCP connections and then says nothing, so a TLS handshake hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@both
async def test_connect_timeout(provider: str) -> None:
    # A TCP connect on loopback cannot time out without tricks, but the connect timeout also
    # bounds the TLS handshake: an https URL to a port that never answers it is a real one.
    async with silent_tls_port() as port:
        started = time.monotonic()
        _, error = await collect(model_for(None, provider, base_url=f"https://127.0.0.1:{port}/v1",
                                        connect_timeout=0.3))
    assert 0.3 <= time.monotonic() - started < 3
    assert type(error) is ConnectTimeoutError
    assert "within 0.3 s" in str(error) and "raise connect_timeout" in str(error)
    assert_user_facing(error)


@both
@pytest.mark.parametrize("where", ["mid-reply", "before-headers"])
async def test_a_stall_stops_after_the_idle_timeout_and_hangs_up(
    srv: ProviderServer, provider: str, where: str
) -> None:
    if where == "mid-reply":
        srv.queue(Script(text="abcdef", chunk_size=2, stall_after=1))
    else:
        srv.queue(Script(text="abcdef", header_delay=30))
    started = time.monotonic()
    reply, error = await turn(model_for(srv, provider, idle_timeout=0.3))
    assert 0.3 <= time.monotonic() - started < 3
    assert type(error) is StalledError
    assert "sent nothing for 0.3 s" in str(error) and "raise idle_timeout" in str(error)
    assert_user_facing(error)
    assert reply.status is Status.ERROR
    assert reply.text == ("ab" if where == "mid-reply" else "")
    await asyncio.to_thread(srv.wait_for_disconnect, 1)


# --- Retries: only before the reply starts ---------------------------------------------------


@both
async def test_a_server_error_before_the_reply_is_retried(
    srv: ProviderServer, provider: str
) -> None:
    srv.queue(Script(status=503, should_retry=True, retry_after="0.05"),
              Script(status=500, should_retry=True, retry_after="0.05"),
              Script(text="third time lucky"))
    reply, error = await turn(model_for(srv, provider, max_retries=2))
    assert error is None and reply.text == "third time lucky"
    assert len(srv.requests) == 3


@both
async def test_a_reply_cut_mid_stream_is_never_retried(
    srv: ProviderServer, provider: str
) -> None:
    srv.queue(Script(text="abcdef", chunk_size=2, disconnect_after=2),
              Script(text="a retried reply"))
    reply, error = await turn(model_for(srv, provider, max_retries=2))
    assert isinstance(error, StreamInterruptedError)
    assert reply.text == "abcd"
    await asyncio.sleep(0.2)
    assert len(srv.requests) == 1


@both
async def test_a_mid_stream_error_event_is_never_retried(
    srv: ProviderServer, provider: str
) -> None:
    srv.queue(Script(text="abcdef", chunk_size=2, error_after=1), Script(text="retried"))
    reply, error = await turn(model_for(srv, provider, max_retries=2))
    assert isinstance(error, StreamError) and reply.text == "ab"
    await asyncio.sleep(0.2)
    assert len(srv.requests) == 1


# --- SDKs are imported lazily, one at a time --------------------------------------------------


_IMPORT_CHECK = textwrap.dedent("""
    import asyncio, sys

    def sdks():
        return sorted({"openai", "anthropic"} & set(sys.modules))

    import termchat.cli, termchat.config, termchat.providers, termchat.turn
    from termchat.config import ModelConfig
    from termchat.devserver import ProviderServer, Script
    from termchat.turn import Conversation
    seen = {"imports": sdks()}

    async def main(server):
        url = server.openai_base_url if PROVIDER == "openai" else server.anthropic_base_url
        model = ModelConfig(name="t", provider=PROVIDER, model="m", base_url=url,
                            api_key="k", max_retries=0)
        conversation = Conversation(model)
        seen["conversation"] = sdks()
        exchange = await conversation.send("hi")
        await conversation.aclose()
        seen["turn"] = sdks()
        seen["text"] = exchange.reply.text

    with ProviderServer(default=Script(text="pong")) as server:
        asyncio.run(main(server))
    print(seen)
""")


@both
def test_only_the_sdk_in_use_is_imported_and_only_for_a_request(provider: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"PROVIDER = {provider!r}\n{_IMPORT_CHECK}"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = ast.literal_eval(done.stdout)
    assert seen == {"imports": [], "conversation": [], "turn": [provider], "text": "pong"}
