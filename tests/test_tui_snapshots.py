"""How the chat screen looks: snapshots with the cursor blink off and no wall-clock figures.

Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from termchat.devserver import ProviderServer, Script
from tests.support.tui import MARKDOWN_REPLY, finish, make_app, replies, send, wait_until

SIZE = (100, 36)
SnapCompare = Callable[..., bool]


def usage(**extra: Any) -> dict[str, Any]:
    return {"input_tokens": 42, "output_tokens": 77, **extra}


def test_finished_reply_with_code_and_table(snap_compare: SnapCompare,
                                                  provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text=MARKDOWN_REPLY, chunk_size=7, **usage(cached_tokens=8)))

    async def run_before(pilot: Pilot) -> None:
        await send(pilot, "Show me some Markdown, please.")
        await finish(pilot)

    assert snap_compare(make_app(provider_server), terminal_size=SIZE, run_before=run_before)


def test_reply_mid_stream_with_its_cursor(snap_compare: SnapCompare,
                                                provider_server: ProviderServer) -> None:
    # The server stops sending after a few chunks and holds the connection: mid-stream.
    provider_server.queue(Script(text=MARKDOWN_REPLY, chunk_size=10, stall_after=9, **usage()))

    async def run_before(pilot: Pilot) -> None:
        app = pilot.app
        await send(pilot, "Stream something.")
        await wait_until(pilot, lambda: bool(replies(app)) and len(replies(app)[0].text) == 90)
        await pilot.pause(0.1)

    assert snap_compare(make_app(provider_server), terminal_size=SIZE, run_before=run_before)


def test_cancelled_reply_is_kept_and_marked(snap_compare: SnapCompare,
                                                  provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text=MARKDOWN_REPLY, chunk_size=10, stall_after=9, **usage()))

    async def run_before(pilot: Pilot) -> None:
        app = pilot.app
        await send(pilot, "Stream something, then I cancel.")
        await wait_until(pilot, lambda: bool(replies(app)) and len(replies(app)[0].text) == 90)
        await pilot.press("escape")
        await finish(pilot)

    assert snap_compare(make_app(provider_server), terminal_size=SIZE, run_before=run_before)


def test_error_is_one_line_and_the_prompt_is_back(snap_compare: SnapCompare,
                                                        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(status=400, error_code="context_length_exceeded",
                                error_message="This model's maximum context length is 128000 "
                                              "tokens"))

    async def run_before(pilot: Pilot) -> None:
        await send(pilot, "A prompt that is far too long.")
        await finish(pilot)

    assert snap_compare(make_app(provider_server), terminal_size=SIZE, run_before=run_before)
