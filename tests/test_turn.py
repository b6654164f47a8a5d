"""One exchange: accumulating a reply, timing it, its final status, recording it, and which
exchanges later requests carry. Replies stream from the local provider server."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import pytest

from termchat import turn as turn_module
from termchat.config import ModelConfig
from termchat.devserver import ProviderServer, Script
from termchat.errors import MissingKeyError, ServerError, StreamError, StreamInterruptedError
from termchat.events import Event, Finish, FinishKind, TextDelta, Usage
from termchat.providers import ChatRequest, Message
from termchat.turn import Conversation, Exchange, Reply, Status, run_turn
from tests.support.models import KEY, model_for, opened

both = pytest.mark.parametrize("provider", ["openai", "anthropic"])


REQUEST = ChatRequest(messages=(Message.of("user", "hi"),))


@dataclass
class Snapshot:
    at: float
    status: Status
    text: str


@dataclass
class FakeRecorder:
    """Our own Recorder protocol, keeping what it was shown at each call."""

    checkpoints: list[Snapshot] = field(default_factory=list)
    finished: list[Snapshot] = field(default_factory=list)
    message_ids: tuple[int, int] | None = None

    def checkpoint(self, reply: Reply) -> None:
        self.checkpoints.append(Snapshot(time.monotonic(), reply.status, reply.text))

    def finish(self, reply: Reply) -> None:
        self.finished.append(Snapshot(time.monotonic(), reply.status, reply.text))


# --- Timings -----------------------------------------------------------------------------


def test_ttft_is_from_sending_to_the_first_token() -> None:
    reply = Reply(started_at=100.0)
    assert reply.ttft is None and reply.tokens_per_second is None
    reply.first_token_at = 100.25
    assert reply.ttft == 0.25


def test_tokens_per_second_uses_reported_output_tokens() -> None:
    reply = Reply(initial_text="x" * 400, started_at=100.0, usage=Usage(output_tokens=30))
    reply.first_token_at, reply.ended_at = 101.0, 103.0
    assert reply.tokens_per_second == 15.0
    assert reply.elapsed == 3.0


def test_tokens_per_second_is_estimated_from_text_without_usage() -> None:
    # About four characters a token when the server reports no usage.
    reply = Reply(initial_text="x" * 80, started_at=100.0)
    reply.first_token_at, reply.ended_at = 101.0, 103.0
    assert reply.usage == Usage() and reply.tokens_per_second == 10.0


def test_tokens_per_second_is_unknown_for_an_instant_reply() -> None:
    reply = Reply(initial_text="abcd", started_at=100.0)
    reply.first_token_at = reply.ended_at = 101.0
    assert reply.tokens_per_second is None


async def test_a_streamed_reply_is_timed(provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="abcdefgh", chunk_size=2, first_delay=0.2, delay=0.05,
                                 output_tokens=40))
    async with opened(model_for(provider_server)) as provider:
        reply = Reply()
        await run_turn(provider, REQUEST, reply)
    assert reply.ttft is not None and 0.2 <= reply.ttft < 1.5
    assert reply.ended_at is not None and reply.first_token_at is not None
    generating = reply.ended_at - reply.first_token_at
    assert generating >= 0.1  # three 0.05 s gaps between the four pieces
    assert reply.tokens_per_second == pytest.approx(40 / generating)


# --- run_turn: statuses, events, recording ---------------------------------------------------


@both
async def test_a_complete_reply(provider_server: ProviderServer, provider: str) -> None:
    provider_server.queue(Script(text="Hello there", chunk_size=5, input_tokens=3,
                                 output_tokens=2))
    reply, seen, statuses = Reply(), [], []
    recorder = FakeRecorder()

    async def on_event(event: Event) -> None:
        seen.append(event)
        statuses.append(reply.status)

    async with opened(model_for(provider_server, provider)) as p:
        result = await run_turn(p, REQUEST, reply, on_event, recorder)
    assert result is reply and reply.status is Status.COMPLETE and reply.error is None
    assert reply.text == "Hello there"
    assert [e.text for e in seen if isinstance(e, TextDelta)] == ["Hello", " ther", "e"]
    assert seen[-1] == reply.finish == Finish.from_raw("stop" if provider == "openai"
                                                       else "end_turn")
    assert reply.usage.input_tokens == 3 and reply.usage.output_tokens == 2
    # Waiting until the first token, streaming after it.
    first_text = next(i for i, e in enumerate(seen) if isinstance(e, TextDelta))
    assert set(statuses[:first_text]) <= {Status.WAITING}
    assert statuses[first_text] is Status.STREAMING
    assert [(s.status, s.text) for s in recorder.finished] == [(Status.COMPLETE, "Hello there")]


async def test_a_plain_function_can_take_the_events(provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="abc", chunk_size=1))
    seen: list[Event] = []
    async with opened(model_for(provider_server)) as p:
        await run_turn(p, REQUEST, Reply(), seen.append)
    assert [e for e in seen if isinstance(e, TextDelta)] == [TextDelta(c) for c in "abc"]


async def test_a_cancelled_reply_keeps_its_partial_text(provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="abcdef", chunk_size=2, stall_after=2))
    reply, recorder = Reply(), FakeRecorder()
    got_two = asyncio.Event()

    def on_event(event: Event) -> None:
        if reply.text == "abcd":
            got_two.set()

    async with opened(model_for(provider_server)) as p:
        task = asyncio.create_task(run_turn(p, REQUEST, reply, on_event, recorder))
        await asyncio.wait_for(got_two.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert reply.status is Status.CANCELLED and reply.text == "abcd" and reply.error is None
    assert reply.ended_at is not None
    assert [(s.status, s.text) for s in recorder.finished] == [(Status.CANCELLED, "abcd")]


@pytest.mark.parametrize(
    ("script", "status", "error", "text"),
    [
        (Script(status=500), Status.ERROR, ServerError, ""),
        (Script(text="abcdef", chunk_size=2, error_after=1), Status.ERROR, StreamError, "ab"),
        (Script(text="abcdef", chunk_size=2, disconnect_after=2), Status.INTERRUPTED,
         StreamInterruptedError, "abcd"),
        (Script(text="abcdef", chunk_size=2, end_without_finish_after=1), Status.INTERRUPTED,
         StreamInterruptedError, "ab"),
    ],
    ids=["server-error", "error-event", "disconnect", "no-finish"],
)
async def test_a_failed_reply_records_and_re_raises_its_error(
    provider_server: ProviderServer, script: Script, status: Status,
    error: type[Exception], text: str,
) -> None:
    provider_server.queue(script)
    reply, recorder = Reply(), FakeRecorder()
    async with opened(model_for(provider_server)) as p:
        with pytest.raises(error) as caught:
            await run_turn(p, REQUEST, reply, None, recorder)
    assert reply.status is status and reply.error is caught.value and reply.text == text
    assert reply.finish is None and reply.ended_at is not None
    assert [(s.status, s.text) for s in recorder.finished] == [(status, text)]


async def test_checkpoints_come_while_streaming_at_most_once_per_interval(
    provider_server: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(turn_module, "CHECKPOINT_SECONDS", 0.1)
    provider_server.queue(Script(text="x" * 20, chunk_size=1, delay=0.03))
    recorder = FakeRecorder()
    async with opened(model_for(provider_server)) as p:
        await run_turn(p, REQUEST, Reply(), None, recorder)
    # ~0.6 s of streaming: several checkpoints, never two within the interval.
    assert len(recorder.checkpoints) >= 3
    times = [s.at for s in recorder.checkpoints]
    assert all(later - earlier >= 0.09 for earlier, later in itertools.pairwise(times))
    texts = [s.text for s in recorder.checkpoints]
    assert texts == sorted(texts, key=len) and 0 < len(texts[0]) < len(texts[-2]) < 20
    assert all(s.status is Status.STREAMING for s in recorder.checkpoints)
    (final,) = recorder.finished
    assert final.status is Status.COMPLETE and final.text == "x" * 20
    assert final.at >= times[-1]


async def test_no_checkpoint_for_a_quick_reply(provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="quick"))
    recorder = FakeRecorder()
    async with opened(model_for(provider_server)) as p:
        await run_turn(p, REQUEST, Reply(), None, recorder)
    assert recorder.checkpoints == [] and len(recorder.finished) == 1


# --- Which exchanges are context -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "text", "in_context"),
    [
        (Status.COMPLETE, "an answer", True),
        (Status.COMPLETE, "", True),
        (Status.CANCELLED, "half an ans", True),
        (Status.CANCELLED, "", False),
        (Status.INTERRUPTED, "half an ans", True),
        (Status.INTERRUPTED, "", False),
        (Status.ERROR, "half an ans", False),
        (Status.ERROR, "", False),
    ],
)
def test_which_exchanges_later_requests_carry(status: Status, text: str,
                                              in_context: bool) -> None:
    exchange = Exchange("question", Reply(initial_text=text, status=status))
    assert exchange.in_context is in_context


def test_requests_carry_context_exchanges_then_the_prompt() -> None:
    model = ModelConfig(name="t", provider="openai", model="m", api_key=KEY, temperature=0.2,
                        max_tokens=99)
    exchanges = [
        Exchange("q1", Reply(initial_text="a1", status=Status.COMPLETE)),
        Exchange("q2", Reply(initial_text="partial", status=Status.ERROR)),
        Exchange("q3", Reply(initial_text="a3", status=Status.CANCELLED)),
    ]
    conversation = Conversation(model, system="sys", exchanges=exchanges)
    request = conversation.request("q4")
    assert request.messages == (Message.of("user", "q1"), Message.of("assistant", "a1"),
                                Message.of("user", "q3"), Message.of("assistant", "a3"),
                                Message.of("user", "q4"))
    assert (request.system, request.temperature, request.max_tokens) == ("sys", 0.2, 99)
    assert conversation.request("q3", upto=2).messages[-1] == Message.of("user", "q3")
    assert len(conversation.request("q3", upto=2).messages) == 3


# --- Conversation and history ----------------------------------------------------------------


@dataclass
class FakeHistory:
    prompts: list[str] = field(default_factory=list)
    recorders: list[FakeRecorder] = field(default_factory=list)

    def user_prompt(self, prompt: str, model: ModelConfig,
                    attachments: tuple[object, ...] = ()) -> FakeRecorder:
        self.prompts.append(prompt)
        self.recorders.append(FakeRecorder())
        return self.recorders[-1]


async def test_the_prompt_is_stored_before_the_request_and_the_reply_after(
    provider_server: ProviderServer,
) -> None:
    provider_server.queue(Script(text="stored", header_delay=0.2))
    history = FakeHistory()
    conversation = Conversation(model_for(provider_server), history=history)
    try:
        task = asyncio.create_task(conversation.send("remember me"))
        await asyncio.to_thread(provider_server.wait_for_requests, 1)
        assert history.prompts == ["remember me"] and history.recorders[0].finished == []
        exchange = await task
    finally:
        await conversation.aclose()
    assert exchange.reply.text == "stored"
    assert [(s.status, s.text) for s in history.recorders[0].finished] == [
        (Status.COMPLETE, "stored")]


def test_a_missing_key_stores_nothing(provider_server: ProviderServer) -> None:
    history = FakeHistory()
    conversation = Conversation(model_for(provider_server, api_key=None), history=history,
                                key_env={})
    with pytest.raises(MissingKeyError):
        conversation.start("lost?")
    assert history.prompts == [] and conversation.exchanges == []


async def test_finish_is_in_the_reply_with_its_kind(provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="cut sho", finish="length"))
    conversation = Conversation(model_for(provider_server))
    try:
        exchange = await conversation.send("write a lot")
    finally:
        await conversation.aclose()
    assert exchange.reply.finish == Finish("length", FinishKind.LENGTH)
    assert exchange.reply.finish.truncated and exchange.reply.status is Status.COMPLETE
