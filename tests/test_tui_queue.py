"""Enter while a reply streams queues the prompt (shown above the input, taken back with a
key to edit or remove); it is sent when the reply ends, also when Escape cancelled it, and
comes back to the input when the reply failed. Pilot, the real SDK, the local server."""

from __future__ import annotations

from typing import Any

from textual.widgets import Static

from termchat.devserver import ProviderServer, Script
from termchat.tui.prompt import PromptInput
from tests.support.tui import finish, make_app, replies, reply_started, send, wait_until

SLOW = Script(text="word " * 100, chunk_size=5, delay=0.05)


def queue_bar(app: Any) -> Static:
    return app.chat.query_one("#queue", Static)


async def enqueue(pilot: Any, prompt: str) -> None:
    """Enter `prompt` while a reply streams (the input has the focus), and wait until it is
    queued."""
    pilot.app.chat.query_one(PromptInput).load_text(prompt)
    await pilot.press("enter")
    await wait_until(pilot, lambda: prompt in pilot.app.chat._queue)


def prompts_sent(server: ProviderServer) -> list[Any]:
    return [[m["content"] for m in r.body["messages"] if m["role"] == "user"]
            for r in server.requests]


async def test_a_prompt_entered_while_a_reply_streams_is_sent_when_it_ends(
        provider_server: ProviderServer) -> None:
    provider_server.queue(SLOW, Script(text="Second answer."), Script(text="Third."))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "first")
        await wait_until(pilot, lambda: reply_started(app))
        await enqueue(pilot, "second")
        await enqueue(pilot, "third")
        assert app.chat.query_one(PromptInput).text == ""
        assert queue_bar(app).display and "queued: second (+1 more)" in str(
            queue_bar(app).render())
        assert len(provider_server.requests) == 1
        await wait_until(pilot, lambda: len(provider_server.requests) == 3, timeout=20)
        await finish(pilot)
        assert prompts_sent(provider_server)[1:] == [["first", "second"],
                                                     ["first", "second", "third"]]
        assert [r.text for r in replies(app)][1:] == ["Second answer.", "Third."]
        assert not queue_bar(app).display


async def test_escape_cancels_the_reply_not_the_queue(provider_server: ProviderServer) -> None:
    provider_server.queue(SLOW, Script(text="After."))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "first")
        await wait_until(pilot, lambda: reply_started(app))
        await enqueue(pilot, "next")
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(provider_server.requests) == 2, timeout=10)
        await finish(pilot)
        assert app.chat.conversation.exchanges[0].reply.status.value == "cancelled"
        assert replies(app)[-1].text == "After."


async def test_a_queued_prompt_can_be_taken_back_to_edit_or_remove(
        provider_server: ProviderServer) -> None:
    provider_server.queue(SLOW)
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "first")
        await wait_until(pilot, lambda: reply_started(app))
        await enqueue(pilot, "oops")
        await pilot.press("alt+up")
        assert app.chat.query_one(PromptInput).text == "oops"
        assert not queue_bar(app).display
        await finish(pilot)
        assert len(provider_server.requests) == 1


async def test_when_the_reply_fails_the_queued_prompt_comes_back_to_the_input(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="x " * 100, chunk_size=2, delay=0.05, error_after=30))
    app = make_app(provider_server, max_retries=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "first")
        await wait_until(pilot, lambda: reply_started(app))
        await enqueue(pilot, "queued one")
        await finish(pilot)
        await pilot.pause(0.1)
        assert len(provider_server.requests) == 1
        assert "queued one" in app.chat.query_one(PromptInput).text
