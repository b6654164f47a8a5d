"""Providers: the only place an SDK is imported, each turning its SDK's stream into events.

Nothing here imports an SDK at import time; `open_provider` imports the one module needed, when
a request is about to be made.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol

from termchat.config import ModelConfig
from termchat.content import Message, ToolDefinition
from termchat.events import Event

__all__ = ["ChatRequest", "Message", "Provider", "open_provider"]

_MODULES = {"openai": "termchat.providers.openai_chat",
            "anthropic": "termchat.providers.anthropic_messages"}


@dataclass(frozen=True)
class ChatRequest:
    """One request: the conversation so far, the tools on offer, and the parameters for this
    reply."""

    messages: tuple[Message, ...]
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    tools: tuple[ToolDefinition, ...] = ()
    continuation: bool = False
    """The last message is the assistant's reply so far: the model is to go on from its
    end (Anthropic: as a prefill; OpenAI-compatible: with an instruction after it)."""
    extra: dict[str, object] = field(default_factory=dict)


class Provider(Protocol):
    """What every provider implements."""

    model: ModelConfig

    def stream(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        """Yield events for one reply; raise a `ProviderError` subclass on failure.

        The last event of a successful reply is always `Finish`. Closing the generator (or
        cancelling the task awaiting it) closes the HTTP response at once.
        """
        ...

    async def aclose(self) -> None:
        """Release the HTTP connection pool."""
        ...


def open_provider(model: ModelConfig, api_key: str) -> Provider:
    """Import the provider's module (and so its SDK) and build a client for `model`."""
    module = importlib.import_module(_MODULES[model.provider])
    provider: Provider = module.create(model, api_key)
    return provider
