"""Shared fixtures, and the property-based tests' example budgets."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from termchat.devserver import ProviderServer

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
