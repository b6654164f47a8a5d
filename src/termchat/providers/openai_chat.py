"""OpenAI Chat Completions (and every OpenAI-compatible server) through `AsyncOpenAI`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import openai

from termchat.config import ModelConfig
from termchat.content import ToolCall
from termchat.events import (
    Event,
    Finish,
    FinishKind,
    ReasoningDelta,
    TextDelta,
    ToolCallArguments,
    ToolCallReady,
    ToolCallStarted,
    Usage,
)
from termchat.providers import ChatRequest, openai_parts
from termchat.providers._base import SDKProvider, content_type, count_field, field, text_field
from termchat.providers._errors import ended_early
from termchat.untrusted import SurrogateJoiner, repair

# What `chat.completions.create` asks of the client for its request: the API key as a
# bearer token (and nothing else, such as an admin key from the environment).
_REQUEST_OPTIONS: openai.RequestOptions = {"security": {"bearer_auth": True}}


class OpenAIChat(SDKProvider):
    """Streams Chat Completions with usage requested; works whether or not a server sends it.

    The request goes through the SDK's client (its auth, errors and SSE stream) as
    `chat.completions.create` sends it, but its chunks stay the JSON objects they arrive as:
    building the SDK's models of them (`construct_type`) was 80% of the SDK's cost of a
    stream (1.17 s of 11,468 chunks against 0.24 s, bench_terminal's floor rows), and every
    field of every chunk is checked before use anyway: a compatible server may send anything.
    """

    sdk = openai
    sdk_error = openai.OpenAIError

    def __init__(self, model: ModelConfig, api_key: str) -> None:
        super().__init__(model, api_key, openai.AsyncOpenAI)

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model.model,
            "messages": openai_parts.messages(request.system, request.messages,
                                              request.continuation),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = openai_parts.tools(request.tools)
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.max_tokens is not None:
            # api.openai.com's reasoning models reject `max_tokens`; compatible servers mostly
            # know only `max_tokens`.
            key = "max_tokens" if self.model.base_url else "max_completion_tokens"
            params[key] = request.max_tokens
        params.update(request.extra)
        return params

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        finish: str | None = None
        refused = received = False
        # A server that cuts strings by UTF-16 index sends an emoji's halves in two chunks.
        text, reasoning = SurrogateJoiner(), SurrogateJoiner()
        calls = _Calls()
        stream = await self._open(self._client.post(
            "/chat/completions", body=self._params(request), cast_to=object, stream=True,
            stream_cls=openai.AsyncStream[object], options=_REQUEST_OPTIONS))
        async with aclosing(self._items(stream, lambda: received)) as chunks:
            async for chunk in chunks:
                usage = field(chunk, "usage")
                if usage is not None:
                    yield _usage(usage)
                choices = field(chunk, "choices")
                if not isinstance(choices, list) or not choices:
                    continue
                choice = choices[0]
                delta = field(choice, "delta")
                thought = text_field(delta, "reasoning_content") or text_field(delta, "reasoning")
                if thought and (piece := reasoning.feed(thought)):
                    received = True
                    yield ReasoningDelta(piece)
                for name in ("content", "refusal"):
                    value = text_field(delta, name)
                    if value and (piece := text.feed(value)):
                        received = True
                        refused = refused or name == "refusal"
                        yield TextDelta(piece)
                fragments = field(delta, "tool_calls")
                if isinstance(fragments, list):
                    for event in calls.feed(fragments):
                        received = True
                        yield event
                reason = text_field(choice, "finish_reason")
                if reason:
                    finish = reason
        if tail := reasoning.flush():
            yield ReasoningDelta(tail)
        if tail := text.flush():
            received = True
            yield TextDelta(tail)
        for event in calls.ready():
            yield event
        if finish is None:
            raise ended_early(self.model, received=received, content_type=content_type(stream))
        result = Finish.from_raw(repair(finish))
        if refused and result.kind is FinishKind.COMPLETE:
            result = Finish(finish, FinishKind.REFUSAL)
        yield result


class _Calls:
    """Tool calls as OpenAI streams them: fragments keyed by index, the id and name in the
    first, the arguments' JSON text in pieces after; complete only when the stream is."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str, str, list[str]]] = {}
        self._started: set[int] = set()

    def feed(self, fragments: list[Any]) -> list[Event]:
        events: list[Event] = []
        for fragment in fragments:
            index = field(fragment, "index")
            if not isinstance(index, int) or isinstance(index, bool):
                continue
            function = field(fragment, "function")
            call_id, name, pieces = self._calls.get(index, ("", "", []))
            call_id = call_id or repair(text_field(fragment, "id") or "")
            name = name or repair(text_field(function, "name") or "")
            self._calls[index] = (call_id, name, pieces)
            if index not in self._started and name:
                self._started.add(index)
                events.append(ToolCallStarted(index, call_id, name))
            if piece := text_field(function, "arguments"):
                pieces.append(repair(piece))
                events.append(ToolCallArguments(index, pieces[-1]))
        return events

    def ready(self) -> list[Event]:
        events: list[Event] = []
        for index in sorted(self._calls):
            call_id, name, pieces = self._calls[index]
            if index not in self._started:
                events.append(ToolCallStarted(index, call_id, name))
            events.append(ToolCallReady(index, ToolCall(call_id or f"call_{index}", name,
                                                         "".join(pieces))))
        return events


def _usage(usage: Any) -> Usage:
    return Usage(
        input_tokens=count_field(usage, "prompt_tokens"),
        output_tokens=count_field(usage, "completion_tokens"),
        cached_tokens=count_field(field(usage, "prompt_tokens_details"), "cached_tokens"),
        reasoning_tokens=count_field(field(usage, "completion_tokens_details"),
                                     "reasoning_tokens"),
    )


def create(model: ModelConfig, api_key: str) -> OpenAIChat:
    return OpenAIChat(model, api_key)
