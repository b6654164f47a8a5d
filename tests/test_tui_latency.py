"""The TUI answers a key at once: the prompt is on screen in the frame after Enter, however
long the provider's SDK takes to load, and the load happens in the background."""

from __future__ import annotations

import sys
import time

import pytest

from termchat import providers
from termchat.devserver import ProviderServer, Script
from termchat.tui.messages import UserMessage
from tests.support.tui import finish, make_app, replies, status_text, wait_until

SLOW = "tests.support.slow_provider"


@pytest.fixture
def slow_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(providers._MODULES, "openai", SLOW)
    monkeypatch.delitem(sys.modules, SLOW, raising=False)


async def test_the_prompt_is_painted_before_the_provider_module_is_imported(
        provider_server: ProviderServer, slow_import: None) -> None:
    provider_server.queue(Script(text="the answer"))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        prompt = app.chat.query_one("#prompt")
        prompt.load_text("hello there")  # type: ignore[attr-defined]
        began = time.monotonic()
        await pilot.press("enter")
        await wait_until(pilot, lambda: bool(app.chat.query(UserMessage)) and
                         app.chat.query(UserMessage).first().region.height > 0, timeout=0.5)
        shown_after = time.monotonic() - began
        # On screen while the (one second) import is still going on, in a thread.
        assert SLOW not in sys.modules or not hasattr(sys.modules[SLOW], "create")
        assert shown_after < 0.5
        assert "connecting" in status_text(app)
        await finish(pilot)
        assert replies(app)[0].text == "the answer"
        assert "done" in status_text(app)


async def test_the_sdk_loads_in_the_background_after_the_first_frame(
        provider_server: ProviderServer, slow_import: None) -> None:
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        assert "ready" in status_text(app)
        await wait_until(pilot, lambda: app.chat.conversation.ready, timeout=5)
        assert hasattr(sys.modules[SLOW], "create")


async def test_a_growing_reply_lays_the_screen_out_once_per_step(
        provider_server: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A streaming reply takes its rows GROWTH_STEP at a time, each step one layout of the
    screen (Textual's own `virtual_size` asked for a second one, and a second full repaint,
    every time)."""
    from textual.screen import Screen

    from termchat.tui.messages import GROWTH_STEP

    layouts: list[int] = []
    original = Screen._refresh_layout

    def counted(screen: Screen, *args: object, **kwargs: object) -> None:
        layouts.append(1)
        original(screen, *args, **kwargs)  # type: ignore[arg-type]

    paragraphs = [f"Paragraph {n} of the reply.\n\n" for n in range(100)]
    provider_server.queue(Script(chunks=paragraphs, delay=0.02))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.chat.conversation.ready, timeout=10)
        prompt = app.chat.query_one("#prompt")
        prompt.load_text("go")  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_until(pilot, lambda: bool(replies(app)) and "Paragraph 3" in
                         replies(app)[0].text)
        monkeypatch.setattr(Screen, "_refresh_layout", counted)
        start = replies(app)[0].size.height
        await wait_until(pilot, lambda: replies(app)[0].size.height >= start + 15 * GROWTH_STEP)
        steps = (replies(app)[0].size.height - start) // GROWTH_STEP
        monkeypatch.setattr(Screen, "_refresh_layout", original)
        await finish(pilot)
    assert len(layouts) <= steps + 3


async def test_the_last_words_are_on_screen_when_the_status_bar_says_done(
        provider_server: ProviderServer) -> None:
    """The last chunk and the finish come in one read of the socket: the reply's last words
    are rendered when the finish is shown, not a frame after the status bar says done."""
    from termchat.events import Event, Finish
    from tests.support.tui import screen_lines

    words = [f"w{n} " for n in range(30)]
    provider_server.queue(Script(chunks=[*words, "last-word."], delay=0.01))
    app = make_app(provider_server)
    shown_at_finish: list[str] = []

    def hook(event: Event) -> None:
        if isinstance(event, Finish):
            shown_at_finish.extend(screen_lines(replies(app)[0]))

    async with app.run_test(size=(100, 30)) as pilot:
        app.chat.event_hook = hook
        prompt = app.chat.query_one("#prompt")
        prompt.load_text("go")  # type: ignore[attr-defined]
        await pilot.press("enter")
        await finish(pilot)
        assert "done" in status_text(app)
    assert any("w29 last-word." in line for line in shown_at_finish), shown_at_finish
