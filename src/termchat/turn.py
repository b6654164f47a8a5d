"""One exchange and the conversation it belongs to: send, accumulate, time, cancel, record.

Both front ends drive replies through `Conversation.send`; neither talks to a provider.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import InitVar, dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from termchat.config import ModelConfig
from termchat.content import (
    Attachment,
    Message,
    Part,
    Reasoning,
    Text,
    ToolCall,
    ToolDefinition,
    ToolOutcome,
    ToolResult,
    rounds,
    text_of,
)
from termchat.errors import ProviderError, StreamInterruptedError, TermchatError, UsageError
from termchat.events import (
    Event,
    Finish,
    FinishKind,
    ReasoningDelta,
    ReasoningSigned,
    Retrying,
    TextDelta,
    ToolCallReady,
    ToolFinished,
    Usage,
)
from termchat.providers import ChatRequest, Provider, open_provider


class Status(StrEnum):
    WAITING = "waiting"
    STREAMING = "streaming"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    ERROR = "error"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        return self not in (Status.WAITING, Status.STREAMING)


@dataclass
class Reply:
    """An assistant reply as it accumulates: its parts (text, reasoning, tool calls and their
    results, over as many tool rounds as it takes), usage, finish, status and timings.

    `text` is all its text and `reasoning` all its reasoning, joined; `parts` has them in
    order with the calls between them, as the next request carries them.
    """

    model: str = ""
    provider: str = ""
    initial_text: InitVar[str] = ""
    reasoning: str = ""
    initial_parts: InitVar[list[Part] | None] = None
    usage: Usage = field(default_factory=Usage)
    finish: Finish | None = None
    status: Status = Status.WAITING
    error: ProviderError | None = None
    started_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    ended_at: float | None = None
    retry: Retrying | None = None
    """While waiting to send the request again: why, and `retry_at` says until when."""
    retry_at: float = 0.0
    rounds: int = 0
    """Requests this reply took (one, plus one per tool round)."""
    round_usages: list[Usage] = field(default_factory=list)
    """Each round's usage, in order (`usage` is their sum)."""
    round_finishes: list[Finish | None] = field(default_factory=list)
    """Each round's finish as the server gave it (`tool_calls`, `tool_use`, then `stop`...);
    None for a round that ended without one (cancelled, cut off)."""
    round_limit: bool = False
    """The model still asked for tools when the round limit ended the turn."""
    continued: int = 0
    """Times the reply was continued from where it stopped (each a round of its own)."""
    _text: list[str] = field(default_factory=list, repr=False)
    _done: list[Part] = field(default_factory=list, repr=False)
    # The text or reasoning part still streaming: its kind and pieces (joined when it ends).
    _open: tuple[type[Text] | type[Reasoning], list[str]] | None = field(default=None,
                                                                       repr=False)

    @property
    def last_usage(self) -> Usage:
        """The last request's usage: what the context held when the reply ended."""
        return self.round_usages[-1] if self.round_usages else Usage()

    def __post_init__(self, initial_text: str, initial_parts: list[Part] | None) -> None:
        if initial_parts:
            self._done = list(initial_parts)
            self._text = [text_of(initial_parts)]
        elif initial_text:
            self._done = [Text(initial_text)]
            self._text = [initial_text]

    @property
    def can_continue(self) -> bool:
        """Whether the model can be asked to go on from where this reply stopped: it ended
        (cut off by its length limit, paused by the server, cancelled, interrupted) with
        text last."""
        cut = self.status in (Status.CANCELLED, Status.INTERRUPTED) or (
            self.status is Status.COMPLETE and self.finish is not None
            and self.finish.kind in (FinishKind.LENGTH, FinishKind.PAUSED))
        parts = self.parts
        return (cut and bool(parts) and isinstance(parts[-1], Text) and bool(parts[-1].text)
                and not self.round_limit)

    def copy(self) -> Reply:
        """An independent copy (its parts and figures), e.g. for a forked conversation."""
        return copy.deepcopy(self)

    def resume(self) -> None:
        """Make a finished reply stream again, for its continuation: what it has stays."""
        self.continued += 1
        # The clock goes on from the time it took so far (not from when it first started).
        spent, now = self.elapsed, time.monotonic()
        if self.first_token_at is not None:
            self.first_token_at += now - spent - self.started_at
        self.started_at = now - spent
        self.status, self.error, self.finish, self.ended_at = Status.WAITING, None, None, None
        # The continuation's text runs on in the reply's last text part.
        last = self._done[-1] if self._done and self._open is None else None
        if isinstance(last, Text):
            self._done.pop()
            self._open = (Text, [last.text])

    def edit_text(self, text: str) -> None:
        """Replace the text of a reply that stopped (its last part, text): the user trimmed
        or fixed a partial reply before it goes on. Raises `UsageError` for a reply that is
        not just text at its end."""
        if self.status.final:
            self._close()  # a part a cancel left open is done now
        if self._open is not None or not self._done or not isinstance(self._done[-1], Text):
            raise UsageError("Only a reply that stopped in its text can be edited.")
        self._done[-1] = Text(text)
        self._text = [text_of(self._done)]

    def add_text(self, text: str) -> None:
        self._text.append(text)
        self._piece(Text, text)

    def add_reasoning(self, text: str) -> None:
        self.reasoning += text
        self._piece(Reasoning, text)

    def _piece(self, kind: type[Text] | type[Reasoning], text: str) -> None:
        if self._open is None or self._open[0] is not kind:
            self._close()
            self._open = (kind, [])
        self._open[1].append(text)

    def _close(self, signature: str | None = None, redacted: str | None = None) -> None:
        if self._open is not None:
            kind, pieces = self._open
            self._open = None
            joined = "".join(pieces)
            self._done.append(Text(joined) if kind is Text else
                              Reasoning(joined, signature, redacted, self.provider))
        elif redacted is not None:
            self._done.append(Reasoning("", None, redacted, self.provider))

    def sign_reasoning(self, signature: str | None, redacted: str | None) -> None:
        """The reasoning part streaming now ended, with what its provider needs back."""
        if (self._open is not None and self._open[0] is Reasoning) or redacted is not None:
            self._close(signature, redacted)

    def add(self, part: ToolCall | ToolResult) -> None:
        self._close()
        self._done.append(part)

    @property
    def parts(self) -> list[Part]:
        """Every part so far, in order (a part still streaming included, as it stands)."""
        if self._open is None:
            return list(self._done)
        kind, pieces = self._open
        joined = "".join(pieces)
        last = Text(joined) if kind is Text else Reasoning(joined, provider=self.provider)
        return [*self._done, last]

    def pending_calls(self) -> list[ToolCall]:
        """The tool calls of the last round that have no result yet, in order."""
        answered = {p.call_id for p in self._done if isinstance(p, ToolResult)}
        calls: list[ToolCall] = []
        for part in reversed(self._done):
            if isinstance(part, ToolResult):
                break
            if isinstance(part, ToolCall) and part.id not in answered:
                calls.insert(0, part)
        return calls

    @property
    def text(self) -> str:
        # Pieces are joined on read, so appending stays O(1) however long the reply grows.
        if len(self._text) > 1:
            self._text[:] = ["".join(self._text)]
        return self._text[0] if self._text else ""

    @property
    def ttft(self) -> float | None:
        """Seconds from sending to the first token."""
        return None if self.first_token_at is None else self.first_token_at - self.started_at

    @property
    def elapsed(self) -> float:
        return (self.ended_at or time.monotonic()) - self.started_at

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens over generation time; estimated from characters when not reported."""
        if self.first_token_at is None:
            return None
        seconds = (self.ended_at or time.monotonic()) - self.first_token_at
        # Mid-stream, a rate over the first few chunks is noise (and huge); wait for a sample.
        if seconds <= 0 or (self.ended_at is None and seconds < MIN_RATE_SECONDS):
            return None
        tokens = self.usage.output_tokens
        if tokens is None:
            tokens = round(len(self.text) / 4)
        return tokens / seconds


class Recorder(Protocol):
    """Where finished and in-flight replies go (the history store implements it)."""

    def checkpoint(self, reply: Reply) -> None:
        """Called with the reply so far, at most once per `CHECKPOINT_SECONDS`."""

    def finish(self, reply: Reply) -> None:
        """Called once with the reply in its final state (complete, cancelled, error...)."""

    @property
    def message_ids(self) -> tuple[int, int] | None:
        """Where the history keeps the exchange: its prompt's and reply's message ids (None
        when it could not be stored)."""


CHECKPOINT_SECONDS = 1.0
MIN_RATE_SECONDS = 0.5
EventSink = Callable[[Event], Awaitable[None] | None]


class ToolRunner(Protocol):
    """Runs the tool calls of a reply (asking the user where it must): the tools layer's
    face to the turn."""

    max_rounds: int

    @property
    def definitions(self) -> tuple[ToolDefinition, ...]:
        """The tools offered to the model (read when the turn's first request is built)."""
        ...

    async def run(self, call: ToolCall, on_event: EventSink | None) -> ToolResult:
        """Run `call` (approved, denied, failed: always a result); cancelling the task
        cancels the call."""
        ...


async def run_turn(provider: Provider, request: ChatRequest, reply: Reply,
                   on_event: EventSink | None = None, recorder: Recorder | None = None,
                   tools: ToolRunner | None = None) -> Reply:
    """Stream one reply into `reply`, calling `on_event` for every event.

    When the model asks for tools and `tools` is given, each call is run and the model is
    asked again with the results, round after round, until it answers without asking or the
    round limit ends the turn (`reply.round_limit`). A failure before a round's reply starts
    is retried up to the model's `max_retries` times when the error says it may pass
    (`Retrying` events say when and why). Cancelling the task running this closes the HTTP
    stream (or cancels the tool call) at once and leaves `reply` `cancelled` with what it
    had; provider errors leave it `error` / `interrupted` and are re-raised. The recorder
    sees checkpoints while it streams and the final state once.
    """
    # Each round sends the context and the reply's rounds so far; a reply that has parts
    # already is being continued, and its first round asks the model to go on from its end.
    context = request.messages
    if reply.parts:
        request = replace(request, messages=(*context, *rounds(_answered(reply.parts))),
                          continuation=True)
    try:
        while True:
            await _round(provider, request, reply, on_event, recorder)
            calls = reply.pending_calls()
            if not calls or tools is None:
                break
            if reply.rounds >= tools.max_rounds:
                reply.round_limit = True
                break
            for index, call in enumerate(calls):
                try:
                    result = await tools.run(call, on_event)
                except asyncio.CancelledError:
                    for unrun in calls[index:]:
                        reply.add(ToolResult(unrun.id, "The user cancelled this call.", True,
                                             ToolOutcome.CANCELLED))
                    raise
                reply.add(result)
                await deliver(on_event, ToolFinished(result))
                if recorder is not None:
                    recorder.checkpoint(reply)
            request = replace(request, messages=(*context, *rounds(reply.parts)),
                              continuation=False)
        reply.status = Status.COMPLETE
    except asyncio.CancelledError:
        reply.status = Status.CANCELLED
        raise
    except StreamInterruptedError as exc:
        reply.status, reply.error = Status.INTERRUPTED, exc
        raise
    except ProviderError as exc:
        reply.status, reply.error = Status.ERROR, exc
        raise
    except Exception:
        # A bug, not a provider failure: it still ends the reply (and its record) as failed.
        reply.status = Status.ERROR
        raise
    finally:
        reply.retry = None
        reply.ended_at = time.monotonic()
        if recorder is not None:
            recorder.finish(reply)
    return reply


async def _round(provider: Provider, request: ChatRequest, reply: Reply,
                 on_event: EventSink | None, recorder: Recorder | None) -> None:
    """One request and its streamed answer, retried while nothing of it has arrived."""
    reply.rounds += 1
    earlier = reply.usage
    reply.round_usages.append(Usage())
    reply.round_finishes.append(None)
    attempt = 1
    while True:
        heard = len(reply.parts), len(reply.text)
        try:
            await _stream(provider, request, reply, earlier, on_event, recorder)
            return
        except ProviderError as exc:
            fresh = (len(reply.parts), len(reply.text)) == heard
            delay = _retry_delay(exc, attempt, provider.model.max_retries) if fresh else None
            if delay is None:
                if attempt > 1:
                    exc.message = f"{exc.message.rstrip('.')} (tried {_times(attempt)} " \
                                  f"in {time.monotonic() - reply.started_at:.0f} s)."
                    exc.args = (exc.message,)
                raise
            attempt += 1
            event = Retrying(delay, attempt, provider.model.max_retries + 1, exc.message)
            reply.retry, reply.retry_at = event, time.monotonic() + delay
            await deliver(on_event, event)
            await asyncio.sleep(delay)
            reply.retry = None


async def _stream(provider: Provider, request: ChatRequest, reply: Reply, earlier: Usage,
                  on_event: EventSink | None, recorder: Recorder | None) -> None:
    next_checkpoint = time.monotonic() + CHECKPOINT_SECONDS
    async with aclosing(provider.stream(request)) as events:
        async for event in events:
            match event:
                case TextDelta(text):
                    if reply.first_token_at is None:
                        reply.first_token_at = time.monotonic()
                    reply.status = Status.STREAMING
                    reply.add_text(text)
                case ReasoningDelta(text):
                    if reply.first_token_at is None:
                        reply.first_token_at = time.monotonic()
                    reply.status = Status.STREAMING
                    reply.add_reasoning(text)
                case ReasoningSigned(signature, redacted):
                    reply.sign_reasoning(signature, redacted)
                case ToolCallReady(_, call):
                    reply.status = Status.STREAMING
                    reply.add(call)
                case Usage():
                    reply.round_usages[-1] = this_round = reply.round_usages[-1].merge(event)
                    reply.usage = earlier + this_round if reply.rounds > 1 or reply.continued \
                        else this_round
                case Finish():
                    reply.finish = reply.round_finishes[-1] = event
            await deliver(on_event, event)
            if recorder is not None and time.monotonic() >= next_checkpoint:
                next_checkpoint = time.monotonic() + CHECKPOINT_SECONDS
                recorder.checkpoint(reply)


async def deliver(on_event: EventSink | None, event: Event) -> None:
    if on_event is not None:
        result = on_event(event)
        if result is not None:
            await result


# The longest wait a server's Retry-After is honoured for; longer, the error is told at once.
MAX_RETRY_WAIT = 60.0


def _retry_delay(error: ProviderError, attempt: int, retries: int) -> float | None:
    """Seconds to wait before sending again, or None when the error is final."""
    if not error.retryable or attempt > retries:
        return None
    wait: float | None = error.retry_after
    if wait is not None:
        return wait if wait <= MAX_RETRY_WAIT else None
    # The SDKs' own backoff: 0.5 s doubling to 8 s, with up to a quarter of jitter.
    return min(0.5 * 2.0 ** (attempt - 1), 8.0) * (1 - 0.25 * random.random())


def _times(count: int) -> str:
    return "twice" if count == 2 else f"{count} times"


@dataclass(eq=False)
class Exchange:
    """A user prompt and the reply it got (possibly partial, possibly failed), at one place
    in the conversation's tree: after `parent` (None: at its start)."""

    prompt: str
    reply: Reply
    recorder: Recorder | None = None
    attachments: tuple[Attachment, ...] = ()
    """Files sent with the prompt, in order, after its text."""
    parent: Exchange | None = None
    """The exchange this one follows on its branch; None for a first exchange."""
    asked: int = 0
    """Which prompt this answers: a regenerated reply shares its prompt's number with the
    replies it is an alternative to; an edited prompt gets a number of its own."""
    message_ids: tuple[int, int] | None = None
    """Where the history keeps it, for an exchange loaded from there: its prompt's and its
    reply's message ids (to regenerate, edit, continue or flip alternatives)."""

    def prompt_message(self) -> Message:
        text: tuple[Part, ...] = (Text(self.prompt),) if self.prompt else ()
        return Message("user", (*text, *self.attachments))

    @property
    def in_context(self) -> bool:
        """Whether later requests carry this exchange.

        Complete replies do, and so do partial ones that were cancelled or interrupted (the
        user saw them and may refer to them), text or tool calls that ran: a call's result
        may have changed something, and the model must not be asked to do it again unaware.
        A provider error does not: its prompt goes back to the user to send again, and
        sending both would repeat the question.
        """
        if self.reply.status is Status.ERROR:
            return False
        return self.reply.status is Status.COMPLETE or bool(self.reply.text) or any(
            isinstance(part, ToolResult) for part in self.reply.parts)


def _answered(parts: list[Part]) -> list[Part]:
    """A stored reply's parts as a request can carry them: a tool call that never got its
    result (the turn was cancelled or cut first) goes without it, as the APIs want every
    call answered."""
    answered = {part.call_id for part in parts if isinstance(part, ToolResult)}
    return [part for part in parts if not isinstance(part, ToolCall) or part.id in answered]


@dataclass(frozen=True)
class Alternatives:
    """What else there is at an exchange's place: the replies to its prompt (regenerated),
    and the prompts there (edited), each by one of its exchanges; `exchange` is in both."""

    replies: list[Exchange]
    prompts: list[Exchange]
    exchange: Exchange

    @property
    def reply_position(self) -> tuple[int, int]:
        """(1-based position, count) of the exchange's reply among the replies."""
        return self.replies.index(self.exchange) + 1, len(self.replies)

    @property
    def prompt_position(self) -> tuple[int, int]:
        return self.prompts.index(self.exchange) + 1, len(self.prompts)

    def reply(self, step: int) -> Exchange:
        """The reply `step` places on (wrapping), e.g. +1 for the next."""
        return self.replies[(self.replies.index(self.exchange) + step) % len(self.replies)]

    def prompt(self, step: int) -> Exchange:
        return self.prompts[(self.prompts.index(self.exchange) + step) % len(self.prompts)]


class History(Protocol):
    """The conversation-level side of storage: each change to the tree is stored as made,
    by the message ids an exchange's recorder reports (`Exchange.message_ids`)."""

    def user_prompt(self, prompt: str, model: ModelConfig,
                    attachments: tuple[Attachment, ...] = ()) -> Recorder:
        """Store the prompt and its attachments (before the request is sent) after the end
        of the path, and return the reply's recorder."""
        ...

    def prompt_after(self, reply_id: int | None, prompt: str, model: ModelConfig,
                     attachments: tuple[Attachment, ...] = ()) -> Recorder:
        """As `user_prompt`, after stored reply `reply_id` (None: at the start): an edited
        prompt, the one there before kept as an alternative."""
        ...

    def regenerate(self, prompt_id: int, model: ModelConfig) -> Recorder:
        """A new reply to stored prompt `prompt_id`: its recorder."""
        ...

    def continue_reply(self, reply_id: int) -> Recorder:
        """The recorder of stored reply `reply_id` going on: it is handed the whole reply,
        what it had and what the continuation adds, and updates the same message."""
        ...

    def set_active(self, message_id: int) -> None:
        """The path through `message_id` is the one shown and sent."""
        ...

    def undo(self) -> int | None:
        """Take the last exchange off the path (kept, abandoned)."""
        ...


class Conversation:
    """The turns so far with one model; builds each request and drives each reply."""

    def __init__(self, model: ModelConfig, *, system: str | None = None,
                 exchanges: list[Exchange] | None = None, history: History | None = None,
                 key_env: Mapping[str, str] = os.environ, provider: Provider | None = None
                 ) -> None:
        """`key_env` is where keys named by environment variable are looked up."""
        self.model = model
        self._key_env = key_env
        self._system = system
        # The tree of exchanges: each point's (the start's, each exchange's) followers in the
        # order they were made, and the one chosen, which is on the path (`exchanges`).
        self._after: dict[Exchange | None, list[Exchange]] = {}
        self._chosen: dict[Exchange | None, Exchange] = {}
        self._asked = 0
        self.exchanges: list[Exchange] = []
        """The path: the exchanges shown and sent as context, first to last."""
        previous: Exchange | None = None
        for exchange in exchanges or ():  # a path: each chosen after the one before
            exchange.parent = previous
            self.graft(exchange)
            self._chosen[previous] = exchange
            previous = exchange
        self._walk()
        self.history = history
        # Normally created on first use; passing one in lets a benchmark replay a stream.
        self._provider = provider
        self._retired: list[Provider] = []
        self._preparing = asyncio.Lock()
        # The tools the model is offered (and how calls are run), when a front end has any.
        self.tools: ToolRunner | None = None
        self.older: Callable[[list[Exchange]], tuple[list[Exchange], list[Exchange]]] \
            | None = None
        """Set while only the end of a stored conversation is here: reads the whole tree
        (blocking), given the exchanges here, which it keeps; see `load_older`."""

    @property
    def system(self) -> str | None:
        """The system prompt given for this conversation, else the current model's."""
        return self._system if self._system is not None else self.model.system

    def messages(self, prompt: str | Message, upto: int | None = None) -> tuple[Message, ...]:
        """The earlier exchanges that are context (each reply's tool rounds as they went),
        then `prompt`."""
        messages: list[Message] = []
        for exchange in self.exchanges[:upto]:
            if exchange.in_context:
                messages.append(exchange.prompt_message())
                messages.extend(rounds(_answered(exchange.reply.parts)))
        messages.append(prompt if isinstance(prompt, Message) else Message.of("user", prompt))
        return tuple(messages)

    def request(self, prompt: str | Message, upto: int | None = None,
                tools: ToolRunner | None = None) -> ChatRequest:
        return ChatRequest(messages=self.messages(prompt, upto), system=self.system,
                           temperature=self.model.temperature, max_tokens=self.model.max_tokens,
                           tools=tools.definitions if tools is not None else ())

    def provider(self) -> Provider:
        """The provider for the current model, created (and its SDK imported) on first use."""
        if self._provider is None or self._provider.model != self.model:
            provider = open_provider(self.model, self.model.resolve_key(self._key_env))
            if self._provider is not None:
                self._retired.append(self._provider)
            self._provider = provider
        return self._provider

    @property
    def ready(self) -> bool:
        """Whether the current model's provider exists (its SDK imported, its client built)."""
        return self._provider is not None and self._provider.model == self.model

    async def prepare(self) -> None:
        """Make the provider ready without blocking the event loop: importing an SDK takes
        0.4-3 s, and resolving a key may run a command. The work runs in a thread, one at a
        time; a failure (a missing key) is left for `start` to raise."""
        async with self._preparing:
            if not self.ready:
                await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        # An import allocates hundreds of thousands of objects: collecting them over and over
        # costs more than the import, and once frozen they are never scanned again.
        gc.disable()
        try:
            self.provider()
        except TermchatError:
            pass
        finally:
            gc.freeze()
            gc.enable()

    def switch_model(self, model: ModelConfig) -> None:
        """Talk to `model` from the next reply on; the conversation so far goes with it."""
        self.model = model

    async def _close_retired(self) -> None:
        while self._retired:
            await self._retired.pop().aclose()

    def start(self, prompt: str, attachments: tuple[Attachment, ...] = ()) -> Exchange:
        """Begin an exchange: resolve the provider (a missing key raises here, before anything
        is stored), store the prompt, and add the exchange with a waiting reply."""
        self.provider()
        recorder = self.history.user_prompt(prompt, self.model, attachments) \
            if self.history else None
        parent = self.exchanges[-1] if self.exchanges else None
        return self._begin(Exchange(prompt, self._reply(), recorder, attachments,
                                    parent=parent))

    def _reply(self) -> Reply:
        return Reply(model=self.model.model, provider=self.model.provider)

    def _begin(self, exchange: Exchange) -> Exchange:
        if exchange.recorder is not None:
            exchange.message_ids = exchange.recorder.message_ids
        self.graft(exchange, chosen=True)
        return exchange

    # --- The tree ---------------------------------------------------------------------

    def graft(self, exchange: Exchange, *, chosen: bool = False) -> None:
        """Put `exchange` in the tree after its `parent` (which must be in it), as the latest
        alternative there; `chosen` makes it the one on the path. A new `asked` of 0 gets a
        number of its own."""
        if exchange.asked == 0:
            self._asked += 1
            exchange.asked = self._asked
        else:
            self._asked = max(self._asked, exchange.asked)
        self._after.setdefault(exchange.parent, []).append(exchange)
        if chosen:
            self._choose(exchange)

    def restore(self, tree: Iterable[Exchange], chosen: Iterable[Exchange]) -> None:
        """Put back a stored tree: every exchange (each after its parent, in the order they
        were made, alternatives sharing their `asked`), and the one chosen at each point."""
        for exchange in tree:
            self.graft(exchange)
        for exchange in chosen:
            self._chosen[exchange.parent] = exchange
        self._walk()

    async def load_older(self) -> None:
        """Read the rest of a conversation that came with its end alone (in a thread) and
        put it in: the exchanges here stay, with all that came before them. A failure to
        read it (a `HistoryError`) is raised, and the conversation goes on with its end."""
        if self.older is None:
            return
        known = [exchange for after in self._after.values() for exchange in after]
        try:
            tree, chosen = await asyncio.to_thread(self.older, known)
        except TermchatError:
            self.older = None
            raise
        self.older = None
        self._after.clear()
        self._chosen.clear()
        self.restore(tree, chosen)

    def _choose(self, exchange: Exchange) -> None:
        node: Exchange | None = exchange
        while node is not None:
            self._chosen[node.parent] = node
            node = node.parent
        self._walk()

    def _walk(self) -> None:
        path: list[Exchange] = []
        on_path: set[Exchange] = set()
        at: Exchange | None = None
        while (at := self._chosen.get(at)) is not None and at not in on_path:
            path.append(at)
            on_path.add(at)
        self.exchanges = path

    def alternatives(self, exchange: Exchange) -> Alternatives:
        """The other replies to `exchange`'s prompt, and the other prompts at its place."""
        here = self._after.get(exchange.parent, [exchange])
        replies = [other for other in here if other.asked == exchange.asked]
        prompts: dict[int, Exchange] = {}
        for other in here:
            # Each prompt by its reply shown last (or, never shown, its latest).
            if other.asked not in prompts or self._chosen.get(exchange.parent) is other:
                prompts[other.asked] = other
        if exchange.asked in prompts:
            prompts[exchange.asked] = exchange
        return Alternatives(replies, list(prompts.values()), exchange)

    def regenerate(self, exchange: Exchange | None = None) -> Exchange:
        """A new reply to `exchange`'s prompt (the last exchange's by default), in the same
        context: an alternative to the old one, which is kept. Stream it with `stream`."""
        old = self._on_path(exchange)
        self.provider()
        recorder = None
        if self.history is not None and old.message_ids is not None:
            recorder = self.history.regenerate(old.message_ids[0], self.model)
        return self._begin(Exchange(old.prompt, self._reply(), recorder, old.attachments,
                                    parent=old.parent, asked=old.asked))

    def edit(self, exchange: Exchange, prompt: str,
             attachments: tuple[Attachment, ...] | None = None) -> Exchange:
        """`exchange`'s prompt changed to `prompt`, at the same place: a new branch there (the
        old one is kept, and can be chosen again). Stream it with `stream`."""
        old = self._on_path(exchange)
        files = old.attachments if attachments is None else attachments
        self.provider()
        recorder = None
        if self.history is not None:
            if old.parent is None:
                recorder = self.history.prompt_after(None, prompt, self.model, files)
            elif old.parent.message_ids is not None:
                recorder = self.history.prompt_after(old.parent.message_ids[1], prompt,
                                                     self.model, files)
        return self._begin(Exchange(prompt, self._reply(), recorder, files, parent=old.parent))

    def undo(self) -> Exchange | None:
        """Take the last exchange off the path (kept in the tree, an abandoned branch: a new
        prompt there is an alternative to it). Returns it, or None when there is none."""
        if not self.exchanges:
            return None
        last = self.exchanges.pop()
        del self._chosen[last.parent]
        if self.history is not None:
            self.history.undo()
        return last

    def choose(self, exchange: Exchange) -> None:
        """Show `exchange` (an alternative in the tree): it and its ancestors become the
        chosen ones at their points, the path goes on below it as chosen before, and the
        history stores that."""
        self._choose(exchange)
        if self.history is not None and exchange.message_ids is not None:
            self.history.set_active(exchange.message_ids[1])

    def fork(self, upto: Exchange | None = None) -> Conversation:
        """A new conversation whose context is this path up to `upto` (included; all of it by
        default): copies of those exchanges, stored nowhere yet, with this model and system
        prompt."""
        end = len(self.exchanges) if upto is None else self.exchanges.index(upto) + 1
        copies = [Exchange(old.prompt, old.reply.copy(), attachments=old.attachments)
                  for old in self.exchanges[:end]]
        return Conversation(self.model, system=self._system, exchanges=copies,
                            key_env=self._key_env)

    def _on_path(self, exchange: Exchange | None) -> Exchange:
        if exchange is None:
            if not self.exchanges:
                raise UsageError("There is no reply yet.")
            return self.exchanges[-1]
        if exchange not in self.exchanges:
            raise ValueError("the exchange is not on the conversation's path")
        return exchange

    async def stream(self, exchange: Exchange, on_event: EventSink | None = None) -> Exchange:
        """Stream the reply to `exchange` (which must be the last on the path); a reply that
        has parts already is continued from its end."""
        await self._close_retired()
        request = self.request(exchange.prompt_message(), upto=len(self.exchanges) - 1,
                               tools=self.tools)
        await run_turn(self.provider(), request, exchange.reply, on_event, exchange.recorder,
                       tools=self.tools)
        return exchange

    def resume(self, exchange: Exchange | None = None) -> Exchange:
        """Ready the reply of `exchange` (the last by default) to go on from where it stopped;
        stream it with `stream`, which appends to the same reply. Raises `UsageError` when
        there is nothing to continue."""
        target = self.resumable(exchange)
        self.provider()
        if self.history is not None and target.message_ids is not None:
            target.recorder = self.history.continue_reply(target.message_ids[1])
        target.reply.resume()
        return target

    def resumable(self, exchange: Exchange | None = None) -> Exchange:
        """The exchange `resume` would continue, changing nothing; raises `UsageError` with
        why when there is nothing to continue."""
        target = self._on_path(exchange)
        if target is not self.exchanges[-1]:
            raise UsageError("Only the last reply can be continued.")
        if not target.reply.can_continue:
            raise UsageError("The last reply was not cut off, so there is nothing to "
                             "continue; regenerate it for a new one.")
        return target

    def edit_partial(self, text: str, exchange: Exchange | None = None) -> Exchange:
        """The last reply, cut off or cancelled, with its text replaced by `text` (trimmed of
        a wrong turn, say) and readied to go on from there: stream it with `stream`."""
        target = self.resumable(exchange)
        if not text:
            raise UsageError("There is no text left to continue from: regenerate instead.")
        target.reply.edit_text(text)
        return self.resume(target)

    async def continue_reply(self, on_event: EventSink | None = None) -> Exchange:
        """Continue the last reply from where it stopped, appending to it."""
        return await self.stream(self.resume(), on_event)

    async def send(self, prompt: str, on_event: EventSink | None = None,
                   attachments: tuple[Attachment, ...] = ()) -> Exchange:
        """Send `prompt` with the conversation so far; the exchange is kept whatever happens."""
        return await self.stream(self.start(prompt, attachments), on_event)

    async def aclose(self) -> None:
        await self._close_retired()
        if self._provider is not None:
            await self._provider.aclose()
            self._provider = None
