"""Shared fixtures, and the property-based tests' example budgets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from termchat.devserver import ProviderServer
from tests.support.cli import environment
from tests.support.tmux import Tmux

# `ci` (the default) keeps `.ci/run` quick; `long` is the run by hand:
#   HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest -q -m fuzz
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def provider_server() -> Iterator[ProviderServer]:
    """A started local OpenAI + Anthropic server; script replies with ``.queue(Script(...))``."""
    with ProviderServer() as server:
        yield server


@pytest.fixture
def srv(provider_server: ProviderServer) -> ProviderServer:
    return provider_server


@pytest.fixture
def tmux(provider_server: ProviderServer, tmp_path: Path) -> Iterator[Tmux]:
    env = environment(tmp_path, provider_server)
    # The tmux server hands its own environment to the pane; keep the user's tmux out of it.
    env.pop("TMUX", None)
    session = Tmux(env)
    yield session
    session.kill()
