"""The interactive TUI, driven with Pilot against the local provider server."""

from __future__ import annotations

import gc
import re
import threading
from pathlib import Path

import pytest
from rich.console import Console
from textual import events

from termchat.config import Config, load_config
from termchat.devserver import ProviderServer, Script
from termchat.markdown_lines import full_markdown
from termchat.sample import long_reply
from termchat.tui import messages
from termchat.tui.app import TermchatApp
from termchat.tui.conversation import ConversationView
from termchat.tui.keybar import KeyBar
from termchat.tui.messages import CURSOR, AssistantMessage, ErrorLine, UserMessage
from termchat.tui.prompt import PromptInput
from termchat.turn import Conversation, Exchange, Status
from termchat.turn import Reply as Reply_
from tests.support.models import KEY, model_for
from tests.support.screen import lines_of
from tests.support.tui import (
    MARKDOWN_REPLY,
    THUMB,
    disconnect_seen,
    finish,
    make_app,
    replies,
    reply_started,
    rows_on_screen,
    screen_lines,
    send,
    status_text,
    view_rows,
    wait_until,
)


async def test_reply_streams_live_with_a_cursor_that_goes_when_it_ends(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text=MARKDOWN_REPLY, chunk_size=5, delay=0.03))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "show me markdown")
        await wait_until(pilot, lambda: bool(replies(app)) and "Results" in replies(app)[0].text)
        reply = replies(app)[0]
        assert reply.streaming
        assert len(reply.text) < len(MARKDOWN_REPLY), "the reply was not still streaming"
        lines = screen_lines(reply)
        # After the last character shown: below it, only the room kept for the next lines.
        assert CURSOR in [line for line in lines if line.strip()][-1]
        assert "streaming" in status_text(app)
        await finish(pilot)
        assert reply.text == MARKDOWN_REPLY
        lines = screen_lines(reply)
        assert not any(CURSOR in line for line in lines)
        assert any("def answer() -> int:" in line for line in lines), "code fence body lost"
        assert any("return 42" in line for line in lines)
        assert any("• first item" in line for line in lines)
        assert "done" in status_text(app)


async def test_finished_reply_looks_exactly_like_a_full_render(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text=MARKDOWN_REPLY, chunk_size=3))
    app = make_app(provider_server)
    async with app.run_test(size=(90, 40)) as pilot:
        await send(pilot, "hi")
        await finish(pilot)
        reply = replies(app)[0]
        width = reply.size.width
        console = Console(width=width, force_terminal=True, color_system="truecolor")
        full = console.render_lines(full_markdown(MARKDOWN_REPLY), console.options, pad=True)
        expected = ["".join(seg.text for seg in line) for line in full]
        while expected and not expected[-1].strip():
            expected.pop()
        assert [line.rstrip() for line in screen_lines(reply)] == \
            [line.rstrip() for line in expected]


async def _painted_matches_a_full_repaint(pilot) -> None:  # type: ignore[no-untyped-def]
    """What is on screen equals what a repaint of every widget from scratch shows: no row
    kept from Textual's line cache is stale."""
    await pilot.pause(0.1)
    painted = pilot.app.export_screenshot()
    for widget in pilot.app.screen.query("*"):
        widget.refresh()
    await pilot.pause(0.1)
    assert pilot.app.export_screenshot() == painted


@pytest.mark.parametrize("stall_after", [40, 333])
async def test_screen_is_exact_while_a_long_reply_streams_scrolls_and_is_cancelled(
        provider_server: ProviderServer, stall_after: int) -> None:
    text = long_reply(4_000, seed=3)
    provider_server.queue(Script(text=text, chunk_size=3, delay=0.002, stall_after=stall_after))
    app = make_app(provider_server)
    async with app.run_test(size=(90, 30)) as pilot:
        await send(pilot, "long")
        expected = text[:3 * stall_after]
        await wait_until(pilot, lambda: bool(replies(app)) and replies(app)[0].text == expected)
        await _painted_matches_a_full_repaint(pilot)
        await pilot.press("escape")
        await finish(pilot)
        assert replies(app)[0].status is Status.CANCELLED
        await _painted_matches_a_full_repaint(pilot)


async def test_screen_is_exact_after_a_long_reply_finishes(
        provider_server: ProviderServer) -> None:
    text = long_reply(4_000, seed=5)
    provider_server.queue(Script(text=text, chunk_size=2, delay=0.001))
    app = make_app(provider_server)
    async with app.run_test(size=(70, 24)) as pilot:
        await send(pilot, "long")
        await finish(pilot)
        assert replies(app)[0].text == text
        await _painted_matches_a_full_repaint(pilot)


@pytest.mark.parametrize(
    ("provider", "finish_reason", "expected"),
    [
        ("openai", "stop", "finish stop"),
        ("openai", "length", "finish length — hit the length limit"),
        ("openai", "content_filter", "finish content_filter — cut by the content filter"),
        ("anthropic", "end_turn", "finish end_turn"),
        ("anthropic", "max_tokens", "finish max_tokens — hit max_tokens"),
        ("anthropic", "refusal", "finish refusal — the model refused"),
    ],
)
async def test_status_bar_shows_finish_reason_and_token_usage(
        provider_server: ProviderServer, provider: str, finish_reason: str,
        expected: str) -> None:
    provider_server.queue(Script(text="Short answer.", finish=finish_reason, input_tokens=17,
                                output_tokens=4, cached_tokens=3))
    app = make_app(provider_server, provider)
    async with app.run_test(size=(120, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        status = status_text(app)
        assert f"{provider}:{provider}-test-model" in status
        assert "done" in status
        assert expected in status
        assert "in 20 · out 4 · cached 3" in status if provider == "anthropic" else \
            "in 17 · out 4 · cached 3" in status


async def test_status_bar_says_unknown_when_the_server_sends_no_usage(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="No usage here.", usage="never"))
    app = make_app(provider_server)
    async with app.run_test(size=(120, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        status = status_text(app)
        assert "tokens unknown" in status
        assert "out 0" not in status


async def test_escape_cancels_closes_the_connection_and_keeps_the_partial_reply(
        provider_server: ProviderServer) -> None:
    text = "Partial words arrive slowly. " * 40
    provider_server.queue(Script(text=text, chunk_size=10, delay=0.05),
                          Script(text="Second answer."))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "first question")
        await wait_until(pilot, lambda: bool(replies(app)) and len(replies(app)[0].text) > 40)
        await pilot.press("escape")
        await finish(pilot)
        await disconnect_seen(provider_server)
        reply = replies(app)[0]
        partial = reply.text
        assert 40 <= len(partial) < len(text)
        assert reply.status is Status.CANCELLED
        assert any("cancelled" in line for line in screen_lines(reply))
        assert not any(CURSOR in line for line in screen_lines(reply))
        assert "cancelled" in status_text(app)

        await send(pilot, "second question")
        await finish(pilot)
        body = provider_server.requests[-1].body
        assert body["messages"] == [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": partial},
            {"role": "user", "content": "second question"},
        ]


async def test_escape_in_the_command_palette_closes_it_and_leaves_the_reply_streaming(
        provider_server: ProviderServer) -> None:
    # The server stalls after a few chunks, so the reply is in flight for as long as it takes.
    provider_server.queue(Script(text="slow " * 100, chunk_size=5, stall_after=5))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "go")
        await wait_until(pilot, lambda: reply_started(app))
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: app.screen is not app.chat)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.chat)
        assert app.chat.streaming, "Escape in the palette cancelled the reply"
        await pilot.press("escape")
        await finish(pilot)
        assert replies(app)[0].status is Status.CANCELLED


async def test_multi_turn_requests_carry_the_conversation(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="Paris."), Script(text="About 2 million."))
    app = make_app(provider_server, "anthropic", system="Be brief.")
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "Capital of France?")
        await finish(pilot)
        await send(pilot, "Population?")
        await finish(pilot)
        body = provider_server.requests[-1].body
        assert body["system"] == "Be brief."
        assert body["messages"] == [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "Population?"},
        ]
        assert [m.text for m in replies(app)] == ["Paris.", "About 2 million."]
        assert len(app.chat.query(UserMessage)) == 2


async def test_provider_error_is_one_line_and_the_prompt_comes_back(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(status=429, retry_after="7"))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "a prompt worth keeping")
        await finish(pilot)
        errors = list(app.chat.query(ErrorLine))
        assert len(errors) == 1
        message = str(errors[0].render())
        assert "Rate limited" in message and "retry after 7 s" in message
        assert "\n" not in message and KEY not in message
        assert app.chat.query_one(PromptInput).text == "a prompt worth keeping"
        assert "error" in status_text(app)
        # The failed exchange is not context for the next request.
        provider_server.queue(Script(text="ok"))
        await send(pilot, "again")
        await finish(pilot)
        assert provider_server.requests[-1].body["messages"] == [
            {"role": "user", "content": "again"}]


async def test_mid_stream_error_keeps_partial_text_on_screen(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="Some words then trouble.", chunk_size=5, error_after=2))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        reply = replies(app)[0]
        assert reply.text == "Some words"
        assert reply.status is Status.ERROR
        assert "mid-reply" in str(app.chat.query_one(ErrorLine).render())
        assert app.chat.query_one(PromptInput).text == "q"


async def test_missing_key_is_an_error_line_not_a_crash(provider_server: ProviderServer) -> None:
    app = make_app(provider_server, api_key=None, api_key_env="TERMCHAT_TEST_NO_SUCH_KEY")
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "hello")
        await finish(pilot)
        message = str(app.chat.query_one(ErrorLine).render())
        assert "set TERMCHAT_TEST_NO_SUCH_KEY" in message
        assert app.chat.query_one(PromptInput).text == "hello"
        assert provider_server.requests == []


async def test_enter_sends_while_ctrl_j_and_paste_insert_newlines(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="ok"))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        prompt = app.chat.query_one(PromptInput)
        await pilot.press("a", "ctrl+j", "b", "shift+enter", "c")
        assert prompt.text == "a\nb\nc"
        # As the terminal delivers a bracketed paste: to the app, which hands it to the focus.
        app.post_message(events.Paste("line one\nline two\nline three"))
        await pilot.pause()
        assert prompt.text == "a\nb\ncline one\nline two\nline three"
        await pilot.press("enter")
        await finish(pilot)
        sent = provider_server.requests[-1].body["messages"][-1]["content"]
        assert sent == "a\nb\ncline one\nline two\nline three"
        assert prompt.text == ""


async def test_input_stays_editable_while_a_reply_streams(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="word " * 60, chunk_size=5, stall_after=5))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "go")
        await wait_until(pilot, lambda: reply_started(app))
        await pilot.press("n", "e", "x", "t")
        assert app.chat.streaming
        assert app.chat.query_one(PromptInput).text == "next"
        await pilot.press("enter")  # queued while streaming (tests/test_tui_queue.py)
        await wait_until(pilot, lambda: app.chat._queue == ["next"])
        assert app.chat.query_one(PromptInput).text == ""
        assert len(provider_server.requests) == 1
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(provider_server.requests) == 2)
        await finish(pilot)


async def test_view_follows_the_stream_until_the_user_scrolls_up_and_resumes_at_bottom(
        provider_server: ProviderServer) -> None:
    text = "\n\n".join(f"Paragraph {i} of a long reply." for i in range(1000))
    provider_server.queue(Script(text=text, chunk_size=40, delay=0.02))
    app = make_app(provider_server)
    async with app.run_test(size=(80, 20)) as pilot:
        view = app.chat.query_one(ConversationView)
        await send(pilot, "long please")
        await wait_until(pilot, lambda: view.max_scroll_y > 20)
        assert view.following
        # The view trails the newest line by at most a frame.
        await wait_until(pilot, lambda: view.scroll_y >= view.max_scroll_y - 3, timeout=1)

        view.scroll_to(y=3, animate=False)
        await pilot.pause(0.2)
        assert not view.following
        held = view.scroll_y
        grown = view.max_scroll_y
        await wait_until(pilot, lambda: view.max_scroll_y > grown + 5)
        assert view.scroll_y == held, "the view jumped while the user was reading"

        view.scroll_end(animate=False)
        await pilot.pause(0.1)
        assert view.following
        grown = view.max_scroll_y
        await wait_until(pilot, lambda: view.max_scroll_y > grown + 5)
        await wait_until(pilot, lambda: view.scroll_y >= view.max_scroll_y - 3, timeout=1)
        assert app.chat.streaming
        await pilot.press("escape")
        await finish(pilot)
        assert view.scroll_y == view.max_scroll_y, "following did not resume"


def _long_conversation(server: ProviderServer, exchanges: int) -> TermchatApp:
    earlier = [Exchange(f"question {i}", Reply_(initial_text=long_reply(600, seed=i),
                                                status=Status.COMPLETE))
               for i in range(exchanges)]
    conversation = Conversation(model_for(server), exchanges=earlier)
    return TermchatApp(Config(path=Path("/nonexistent/config.toml")), conversation.model,
                       conversation=conversation, cursor_blink=False, show_timings=False)


async def test_a_long_conversation_opens_with_only_its_end_mounted(
        provider_server: ProviderServer) -> None:
    app = _long_conversation(provider_server, 200)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        view = app.chat.query_one(ConversationView)
        assert len(replies(app)) <= 6
        assert view.collapsed >= 194
        assert view.scroll_y == view.max_scroll_y
        prompts = [str(message.render()) for message in app.chat.query(UserMessage)]
        assert prompts[-1] == "question 199" and len(prompts) <= 6


def _short_then_long(server: ProviderServer, text: str) -> TermchatApp:
    """The app on a conversation of a short exchange, then one whose reply is `text`."""
    conversation = Conversation(model_for(server), exchanges=[
        Exchange("short one", Reply_(initial_text="an answer", status=Status.COMPLETE)),
        Exchange("long one", Reply_(initial_text=text, status=Status.COMPLETE))])
    return TermchatApp(Config(path=Path("/nonexistent/config.toml")), conversation.model,
                       conversation=conversation, cursor_blink=False, show_timings=False)


async def test_scrolling_up_a_long_reply_shown_end_first_never_shows_its_head_blank(
        provider_server: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine too busy to render the rest in idle moments, the rows standing for a
    long reply's head are rendered before the view comes to them, and nothing jumps."""
    from termchat import markdown_lines

    busy = threading.Event()
    monkeypatch.setattr(markdown_lines, "load_highlighters", lambda languages: busy.wait(30))
    text = long_reply(8_000, seed=7)
    app = _short_then_long(provider_server, text)
    try:
        async with app.run_test(size=(90, 30)) as pilot:
            view = app.chat.query_one(ConversationView)
            reply = replies(app)[-1]
            await pilot.pause(0.1)
            assert reply.estimated_rows > 0, "the whole reply was rendered at once"
            rows = view.size.height
            while view.scroll_y > 0:
                before = view_rows(app, rows)
                step = min(3, round(view.scroll_y))
                view.scroll_relative(y=-3, animate=False)
                await pilot.pause(0.02)
                # No row standing for the head is on screen...
                top, head = reply.virtual_region.y, reply.estimated_rows
                assert not (head and top < view.scroll_y + rows and view.scroll_y < top + head), \
                    "the rows standing for the head are on screen"
                # ...and what was on screen moved down by the step, whatever was rendered.
                after = view_rows(app, rows)
                assert after[step:] == before[:rows - step]
            assert reply.estimated_rows == 0
            assert "short one" in "\n".join(rows_on_screen(app))
    finally:
        busy.set()


async def test_a_long_last_reply_shows_its_end_first_and_the_rest_without_a_visible_change(
        provider_server: ProviderServer) -> None:
    text = long_reply(8_000, seed=7)
    app = _short_then_long(provider_server, text)
    async with app.run_test(size=(90, 30)) as pilot:
        view = app.chat.query_one(ConversationView)
        reply = replies(app)[-1]
        frames = []
        while reply._tail_first:  # its end alone, the rest rendering in idle moments
            frames.append(rows_on_screen(app)[:view.size.height])
            await pilot.pause(0)
        assert frames, "the whole reply was rendered before the first frame"
        await pilot.pause(0.1)
        rows = view.size.height
        # What the view showed at once is what it shows now the whole reply is rendered.
        assert [THUMB.sub("", row) for row in frames[0]] == \
            view_rows(app, rows)
        assert view.scroll_y == view.max_scroll_y
        await _painted_matches_a_full_repaint(pilot)
        width = reply.size.width
        console = Console(width=width, force_terminal=True, color_system="truecolor")
        full = console.render_lines(full_markdown(text), console.options, pad=True)
        expected = ["".join(segment.text for segment in line).rstrip() for line in full]
        while expected and not expected[-1]:
            expected.pop()
        assert [line.rstrip() for line in screen_lines(reply)] == expected
        view.scroll_home(animate=False)  # and its start is there when scrolled to
        await pilot.pause(0.2)
        assert "short one" in "\n".join(rows_on_screen(app))


async def test_scrolling_up_a_long_conversation_never_jumps(
        provider_server: ProviderServer) -> None:
    app = _long_conversation(provider_server, 40)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.chat.query_one(ConversationView)
        await pilot.pause(0.2)
        seen = []
        rows = view.size.height
        while view.scroll_y > 0:
            before = view_rows(app, rows)
            step = min(3, round(view.scroll_y))  # the last step stops at the top
            view.scroll_relative(y=-3, animate=False)
            await pilot.pause(0.05)
            after = view_rows(app, rows)
            # What the view showed moved down by exactly that many rows, whatever was
            # mounted above it meanwhile (estimated heights become real ones out of sight).
            assert after[step:] == before[:rows - step]
            seen += [row for row in after if "question" in row][:1]
        assert view.collapsed == 0
        # The topmost prompt on screen only ever goes back in the conversation, to its start.
        numbers = [int(re.search(r"question (\d+)", row)[1]) for row in seen]  # type: ignore[index]
        assert numbers == sorted(numbers, reverse=True) and numbers[-1] == 0


async def test_a_long_conversation_hides_far_messages_without_a_visible_change(
        provider_server: ProviderServer) -> None:
    app = _long_conversation(provider_server, 30)
    provider_server.queue(Script(text=long_reply(1_500, seed=99), chunk_size=20, delay=0.002),
                          Script(text="short"))
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.chat.query_one(ConversationView)
        await pilot.pause(0.1)
        view.scroll_home(animate=False)  # a jump to the start: it is mounted, and shown
        await pilot.pause(0.3)
        assert "question 0" in "\n".join(rows_on_screen(app))
        await _painted_matches_a_full_repaint(pilot)
        view.scroll_end(animate=False)
        await pilot.pause(0.3)
        mounted = len(replies(app))
        end = view.max_scroll_y
        await send(pilot, "one more")
        await finish(pilot)
        # The replies that scrolled far above are off the screen, measured.
        assert len(replies(app)) < mounted
        assert view.max_scroll_y > end
        await _painted_matches_a_full_repaint(pilot)
        shown = rows_on_screen(app), view.max_scroll_y, view.scroll_y
        await pilot.pause(0.3)
        assert (rows_on_screen(app), view.max_scroll_y, view.scroll_y) == shown

        await pilot.press("ctrl+n")  # the stand-ins go with the conversation
        await pilot.pause(0.1)
        assert view.collapsed == 0
        await send(pilot, "a new chat")
        await finish(pilot)
        assert len(replies(app)) == 1
        await _painted_matches_a_full_repaint(pilot)


async def test_text_due_within_a_nanosecond_is_still_rendered(
        provider_server: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush due in a nanosecond must not go to a Textual timer, which drops a
    one-shot timer whose moment has passed when it starts: the reply froze on screen."""
    app = make_app(provider_server)
    async with app.run_test(size=(80, 20)) as pilot:
        widget = AssistantMessage(streaming=True, cursor_blink=False)
        await app.chat.query_one(ConversationView).mount(widget)
        await pilot.pause(0.05)
        now = 1000.0
        monkeypatch.setattr(messages.time, "perf_counter", lambda: now)
        widget._last_flush = now - messages.FRAME_SECONDS + 1e-9
        widget._flush_cost = messages.FRAME_SECONDS * messages.RENDER_SHARE
        widget.append("due in a nanosecond")
        await wait_until(pilot, lambda: not widget._flush_pending, timeout=1)
        await pilot.pause(0.05)
        assert "due in a nanosecond" in app.export_screenshot().replace("&#160;", " ")


async def test_switch_model_from_the_command_palette(
        provider_server: ProviderServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[models.claude]
provider = "anthropic"
model = "claude-x"
base_url = "{provider_server.anthropic_base_url}"
api_key_env = "TERMCHAT_TEST_CLAUDE_KEY"
max_retries = 0
""")
    monkeypatch.setenv("TERMCHAT_TEST_CLAUDE_KEY", "claude-key")
    provider_server.queue(Script(text="from claude"))
    app = make_app(provider_server, config=load_config(str(path), env={}))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: app.screen is not app.chat)
        await pilot.press(*"switch model claude")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.chat.conversation.model.name == "claude")
        assert "anthropic:claude-x" in status_text(app)
        await send(pilot, "hi")
        await finish(pilot)
        assert provider_server.requests[-1].path == "/v1/messages"
        assert provider_server.requests[-1].body["model"] == "claude-x"


async def test_new_conversation_clears_the_screen_and_the_context(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="one"), Script(text="two"))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "first")
        await finish(pilot)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert not replies(app)
        await send(pilot, "fresh")
        await finish(pilot)
        assert provider_server.requests[-1].body["messages"] == [
            {"role": "user", "content": "fresh"}]


async def test_copy_last_reply_and_code_block_use_the_clipboard(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text=MARKDOWN_REPLY))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        await pilot.press("ctrl+o")
        assert app.clipboard == MARKDOWN_REPLY
        await pilot.press("ctrl+g")
        assert app.clipboard == "def answer() -> int:\n    return 42\n"


async def test_the_key_bar_shows_the_keys_that_work_now_and_a_click_presses_one(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text=long_reply(2_000, seed=4), chunk_size=5, delay=0.002,
                                 stall_after=20))
    app = make_app(provider_server)
    async with app.run_test(size=(110, 30)) as pilot:
        bar = app.chat.query_one(KeyBar)
        line = lines_of(bar)[0]
        assert line.startswith(" ^n New chat  ^o Copy reply") and line.rstrip().endswith(
            "▏^p palette") and "Cancel reply" not in line
        await send(pilot, "long one")
        await wait_until(pilot, lambda: "esc Cancel reply" in lines_of(bar)[0]
                         and bool(replies(app)) and bool(replies(app)[0].text))
        start = lines_of(bar)[0].index("esc")
        await pilot.click(KeyBar, offset=(start + 1, 0))  # Escape, pressed with the mouse
        await finish(pilot)
        assert replies(app)[0].status is Status.CANCELLED
        await wait_until(pilot, lambda: "Cancel reply" not in lines_of(bar)[0])
        start = lines_of(bar)[0].index("New chat")
        await pilot.click(KeyBar, offset=(start, 0))
        await wait_until(pilot, lambda: not replies(app))


async def test_the_collector_turned_off_for_start_up_is_on_again_after_the_first_frame(
        provider_server: ProviderServer) -> None:
    gc.disable()  # as `termchat` starts (cli.main)
    try:
        app = make_app(provider_server)
        async with app.run_test() as pilot:
            await wait_until(pilot, gc.isenabled)
    finally:
        gc.unfreeze()
        gc.enable()
