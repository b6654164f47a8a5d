"""Models that talk to the local provider server, and opening their providers."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from termchat.config import ModelConfig
from termchat.devserver import ProviderServer
from termchat.providers import Provider, open_provider

KEY = "sk-test-SECRET-1234567890abcdef"
PROVIDERS = ("openai", "anthropic")


def base_url(server: ProviderServer, provider: str) -> str:
    return server.openai_base_url if provider == "openai" else server.anthropic_base_url


def model_for(server: ProviderServer | None, provider: str = "openai",
              **overrides: Any) -> ModelConfig:
    """`provider`'s model `PROVIDER-test-model` at `server` (None: `base_url` is given, or
    left out), with the key `KEY`, no retries and short timeouts."""
    settings: dict[str, Any] = {
        "name": "test", "provider": provider, "model": f"{provider}-test-model",
        "base_url": base_url(server, provider) if server is not None else None,
        "api_key": KEY, "max_retries": 0, "idle_timeout": 10.0, "connect_timeout": 5.0,
    }
    settings.update(overrides)
    return ModelConfig(**settings)


@contextlib.asynccontextmanager
async def opened(model: ModelConfig) -> AsyncIterator[Provider]:
    provider = open_provider(model, KEY)
    try:
        yield provider
    finally:
        await provider.aclose()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
