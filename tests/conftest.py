"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from termchat.devserver import ProviderServer


@pytest.fixture
def provider_server() -> Iterator[ProviderServer]:
    """A started local OpenAI + Anthropic server; script replies with ``.queue(Script(...))``."""
    with ProviderServer() as server:
        yield server
