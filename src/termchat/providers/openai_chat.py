"""OpenAI Chat Completions (and every OpenAI-compatible server) through `AsyncOpenAI`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai

from termchat.config import ModelConfig
from termchat.events import Event, Finish, FinishKind, ReasoningDelta, TextDelta, Usage
from termchat.providers import ChatRequest
from termchat.providers._errors import ended_early, map_error


class OpenAIChat:
    """Streams Chat Completions with usage requested; works whether or not a server sends it."""

    def __init__(self, model: ModelConfig, api_key: str) -> None:
        self.model = model
        self._secrets = [api_key]
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=model.base_url or None,
            max_retries=model.max_retries,
            timeout=httpx2.Timeout(model.idle_timeout, connect=model.connect_timeout),
        )

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend({"role": m.role, "content": m.content} for m in request.messages)
        params: dict[str, Any] = {
            "model": self.model.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.max_tokens is not None:
            # api.openai.com's reasoning models reject `max_tokens`; compatible servers mostly
            # know only `max_tokens`.
            key = "max_tokens" if self.model.base_url else "max_completion_tokens"
            params[key] = request.max_tokens
        params.update(request.extra)
        return params

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        started = False
        finish: str | None = None
        refused = False
        try:
            stream = await self._client.chat.completions.create(**self._params(request))
            started = True
            # `async with` closes the response the moment this generator is closed or
            # cancelled, whatever the consumer was awaiting.
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        yield _usage(chunk.usage)
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    delta = choice.delta
                    if delta is not None:
                        reasoning = getattr(delta, "reasoning_content", None) or getattr(
                            delta, "reasoning", None)
                        if isinstance(reasoning, str) and reasoning:
                            yield ReasoningDelta(reasoning)
                        if delta.content:
                            yield TextDelta(delta.content)
                        if delta.refusal:
                            refused = True
                            yield TextDelta(delta.refusal)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            raise map_error(exc, openai, self.model, started=started,
                            secrets=self._secrets) from None
        if finish is None:
            raise ended_early(self.model)
        result = Finish.from_raw(finish)
        if refused and result.kind is FinishKind.COMPLETE:
            result = Finish(finish, FinishKind.REFUSAL)
        yield result

    async def aclose(self) -> None:
        await self._client.close()


def _usage(usage: Any) -> Usage:
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return Usage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        cached_tokens=getattr(prompt_details, "cached_tokens", None),
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", None),
    )


def create(model: ModelConfig, api_key: str) -> OpenAIChat:
    return OpenAIChat(model, api_key)
