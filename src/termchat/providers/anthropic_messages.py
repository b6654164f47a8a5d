"""Anthropic Messages streaming through `AsyncAnthropic`."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import anthropic

from termchat.config import ModelConfig
from termchat.content import ToolCall
from termchat.errors import BadRequestError
from termchat.events import (
    Event,
    Finish,
    ReasoningDelta,
    ReasoningSigned,
    TextDelta,
    ToolCallArguments,
    ToolCallReady,
    ToolCallStarted,
    Usage,
)
from termchat.providers import ChatRequest, anthropic_parts
from termchat.providers._base import SDKProvider, content_type, count_field, field, text_field
from termchat.providers._errors import ended_early
from termchat.untrusted import SurrogateJoiner, repair

# The Messages API requires max_tokens; this is what a model gets when none is configured.
DEFAULT_MAX_TOKENS = 8192
# The 400 of a model that takes no prefill: "This model does not support assistant message
# prefill. The conversation must end with a user message."
_NO_PREFILL = re.compile(r"prefill|must end with a user message", re.IGNORECASE)


class AnthropicMessages(SDKProvider):
    """Streams raw Messages events: text and thinking deltas, usage and stop_reason.

    The request goes through the SDK's client (its headers, errors and SSE stream) as
    `messages.create` sends it, but the events stay the JSON objects they arrive as (building
    the SDK's models of them is most of its cost of a stream, as for OpenAI), and every
    field of every event is checked before use: a server may send anything.
    """

    sdk = anthropic
    sdk_error = anthropic.AnthropicError

    def __init__(self, model: ModelConfig, api_key: str) -> None:
        super().__init__(model, api_key, anthropic.AsyncAnthropic)
        # Whether a continuation may end with the reply so far (a prefill); a model that
        # refuses one turns this off for the session.
        self._prefill = True

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": anthropic_parts.messages(request.messages, request.continuation,
                                                 self._prefill),
            "stream": True,
        }
        if request.system:
            params["system"] = request.system
        if request.tools:
            params["tools"] = anthropic_parts.tools(request.tools)
        # No temperature: the SDK (2.x) removed the parameter, and the API version it sends
        # (2026-10-21) answers 400 to temperature/top_p/top_k even at their defaults.
        params.update(request.extra)
        if request.continuation and self._prefill:
            # The API takes no prefill with extended thinking on; the reply goes on without.
            params.pop("thinking", None)
        return params

    def _create(self, request: ChatRequest) -> Awaitable[anthropic.AsyncStream[object]]:
        opened: Awaitable[anthropic.AsyncStream[object]] = self._client.post(
            "/v1/messages", body=self._params(request), cast_to=object, stream=True,
            stream_cls=anthropic.AsyncStream[object])
        return opened

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        stop_reason: str | None = None
        received = False
        text, thinking = SurrogateJoiner(), SurrogateJoiner()
        # Content blocks by index: a tool_use's id, name and argument pieces, or a thinking
        # block's signature.
        blocks: dict[int, _Block] = {}
        try:
            stream = await self._open(self._create(request))
        except BadRequestError as exc:
            if not (request.continuation and self._prefill and _NO_PREFILL.search(str(exc))):
                raise
            # This model takes no prefill (Claude 4.6 on): continue with an instruction, now
            # and for the rest of the session.
            self._prefill = False
            stream = await self._open(self._create(request))
        async with aclosing(self._items(stream, lambda: received)) as events:
            async for event in events:
                kind = field(event, "type")
                index = field(event, "index")
                if not isinstance(index, int) or isinstance(index, bool):
                    index = -1
                if kind == "content_block_start":
                    block = field(event, "content_block")
                    block_type = field(block, "type")
                    if block_type == "tool_use":
                        call = _Block(repair(text_field(block, "id") or f"toolu_{index}"),
                                      repair(text_field(block, "name") or ""))
                        blocks[index] = call
                        received = True
                        yield ToolCallStarted(index, call.id, call.name)
                    elif block_type == "thinking":
                        blocks[index] = _Block("", "", thinking=True)
                    elif block_type == "redacted_thinking" and (
                            data := text_field(block, "data")):
                        yield ReasoningSigned(redacted=data)
                elif kind == "content_block_stop":
                    done = blocks.pop(index, None)
                    if done is not None and done.thinking:
                        if tail := thinking.flush():
                            yield ReasoningDelta(tail)
                        yield ReasoningSigned(signature=done.signature)
                    elif done is not None:
                        yield ToolCallReady(index, ToolCall(done.id, done.name,
                                                            "".join(done.pieces) or "{}"))
                elif kind == "content_block_delta":
                    delta = field(event, "delta")
                    delta_type = field(delta, "type")
                    if delta_type == "input_json_delta" and index in blocks:
                        if piece := text_field(delta, "partial_json"):
                            blocks[index].pieces.append(repair(piece))
                            yield ToolCallArguments(index, blocks[index].pieces[-1])
                    elif delta_type == "signature_delta" and index in blocks:
                        blocks[index].signature = text_field(delta, "signature")
                    elif delta_type == "text_delta":
                        value = text_field(delta, "text")
                        if value and (piece := text.feed(value)):
                            received = True
                            yield TextDelta(piece)
                    elif delta_type == "thinking_delta":
                        value = text_field(delta, "thinking")
                        if value and (piece := thinking.feed(value)):
                            received = True
                            yield ReasoningDelta(piece)
                elif kind == "message_start":
                    yield _start_usage(field(field(event, "message"), "usage"))
                elif kind == "message_delta":
                    stop_reason = text_field(field(event, "delta"), "stop_reason") or stop_reason
                    yield _delta_usage(field(event, "usage"))
        if tail := thinking.flush():
            yield ReasoningDelta(tail)
        if tail := text.flush():
            received = True
            yield TextDelta(tail)
        if stop_reason is None:
            raise ended_early(self.model, received=received, content_type=content_type(stream))
        yield Finish.from_raw(repair(stop_reason))


@dataclass
class _Block:
    """A content block still streaming: a tool_use's call, or a thinking block."""

    id: str
    name: str
    thinking: bool = False
    signature: str | None = None
    pieces: list[str] = dc_field(default_factory=list)


def _start_usage(usage: Any) -> Usage:
    return Usage(
        input_tokens=_input_tokens(usage),
        cached_tokens=count_field(usage, "cache_read_input_tokens"),
    )


def _delta_usage(usage: Any) -> Usage:
    # output_tokens is cumulative; newer servers repeat the input counts here too.
    return Usage(
        input_tokens=_input_tokens(usage),
        output_tokens=count_field(usage, "output_tokens"),
        cached_tokens=count_field(usage, "cache_read_input_tokens"),
        reasoning_tokens=count_field(field(usage, "output_tokens_details"), "thinking_tokens"),
    )


def _input_tokens(usage: Any) -> int | None:
    """Anthropic counts cache reads and writes apart from input_tokens; the total is the input."""
    parts = [count_field(usage, name) for name in
             ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")]
    known = [p for p in parts if p is not None]
    return sum(known) if known else None


def create(model: ModelConfig, api_key: str) -> AnthropicMessages:
    return AnthropicMessages(model, api_key)
