"""Anthropic Messages streaming through `AsyncAnthropic`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2

from termchat.config import ModelConfig
from termchat.events import Event, Finish, ReasoningDelta, TextDelta, Usage
from termchat.providers import ChatRequest
from termchat.providers._errors import ended_early, map_error

# The Messages API requires max_tokens; this is what a model gets when none is configured.
DEFAULT_MAX_TOKENS = 8192


class AnthropicMessages:
    """Streams raw Messages events: text and thinking deltas, usage and stop_reason."""

    def __init__(self, model: ModelConfig, api_key: str) -> None:
        self.model = model
        self._secrets = [api_key]
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=model.base_url or None,
            max_retries=model.max_retries,
            timeout=httpx2.Timeout(model.idle_timeout, connect=model.connect_timeout),
        )

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model.model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            # The API rejects empty turns; a cancelled reply that never got text has none.
            "messages": [{"role": m.role, "content": m.content} for m in request.messages
                         if m.content],
            "stream": True,
        }
        if request.system:
            params["system"] = request.system
        # No temperature: the SDK (2.x) removed the parameter, and the API version it sends
        # (2026-10-21) answers 400 to temperature/top_p/top_k even at their defaults.
        params.update(request.extra)
        return params

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        started = False
        stop_reason: str | None = None
        try:
            stream = await self._client.messages.create(**self._params(request))
            started = True
            async with stream:
                async for event in stream:
                    kind = event.type
                    if kind == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta":
                            yield TextDelta(delta.text)
                        elif delta.type == "thinking_delta":
                            yield ReasoningDelta(delta.thinking)
                    elif kind == "message_start":
                        yield _start_usage(event.message.usage)
                    elif kind == "message_delta":
                        stop_reason = event.delta.stop_reason or stop_reason
                        yield _delta_usage(event.usage)
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            raise map_error(exc, anthropic, self.model, started=started,
                            secrets=self._secrets) from None
        if stop_reason is None:
            raise ended_early(self.model)
        yield Finish.from_raw(stop_reason)

    async def aclose(self) -> None:
        await self._client.close()


def _start_usage(usage: Any) -> Usage:
    return Usage(
        input_tokens=_input_tokens(usage),
        cached_tokens=getattr(usage, "cache_read_input_tokens", None),
    )


def _delta_usage(usage: Any) -> Usage:
    # output_tokens is cumulative; newer servers repeat the input counts here too.
    details = getattr(usage, "output_tokens_details", None)
    return Usage(
        input_tokens=_input_tokens(usage),
        output_tokens=getattr(usage, "output_tokens", None),
        cached_tokens=getattr(usage, "cache_read_input_tokens", None),
        reasoning_tokens=getattr(details, "thinking_tokens", None),
    )


def _input_tokens(usage: Any) -> int | None:
    """Anthropic counts cache reads and writes apart from input_tokens; the total is the input."""
    parts = [getattr(usage, name, None) for name in
             ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")]
    known = [p for p in parts if p is not None]
    return sum(known) if known else None


def create(model: ModelConfig, api_key: str) -> AnthropicMessages:
    return AnthropicMessages(model, api_key)
