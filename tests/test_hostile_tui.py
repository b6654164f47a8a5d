"""Hostile input in the TUI (Pilot, the real SDKs, the local server over a real socket).

Whatever carries it (a streamed reply, a reopened or stored conversation, an error, the
command palette, a paste), nothing a terminal would obey reaches the screen. A failure at the
wire's edge is one line and a finished reply, never silence; a retry is shown and Escape
stops it; keys typed while the TUI starts are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual import events
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import Input

from termchat.config import Config, ModelConfig
from termchat.devserver import ProviderServer, Script
from termchat.history import HistoryStore, continue_conversation
from termchat.tui.app import TermchatApp
from termchat.tui.history_screen import HistoryScreen
from termchat.tui.keybar import KeyBar
from termchat.tui.messages import ErrorLine, UserMessage
from termchat.tui.prompt import PromptInput
from termchat.turn import Conversation, Exchange, Reply, Status
from termchat.untrusted import safe
from tests.support.models import PROVIDERS, model_for
from tests.support.screen import lines_of, shown, unsafe_lines
from tests.support.sse import anthropic_delta, body, head, text_body, text_event
from tests.support.tui import finish, make_app, replies, screen_lines, send, status_text, wait_until

CONFIG = Config(path=Path("/nonexistent/config.toml"))
# The sequences of the issue, cut across deltas: OSC 52 (clipboard), OSC 0 (title), CSI 2J
# (clear), 8-bit CSI, a bidi override, and an OSC 52 whose ESC ends one delta.
STREAMED = ["Clip\x1b]52;c;aGVs", "bG8=\x07board, ", "title\x1b]0;pw", "ned\x07, clear\x1b[",
            "2J, eight\x9b", "2J bit, bidi \u202e", "evil\x1b", "]52;c;eA==\x07 end."]
HOSTILE_REPLY = ("# Head\x1b]0;pwned\x07ing\n\nSome \x1b[31;1mred\x1b[0m text\x1b]52;c;aGVsbG8=\x07"
                 " and \u202eevil\u202c.\n\n```python\nx = 1\x1b[2J\n```\n")
HOSTILE_PROMPT = "what is \x1b]52;c;aGk=\x07this\x1b[2J\u202e?"
REMNANTS = ("52;", "pwned", "[2J", "[31")
FINAL_WORDS = ("done", "cancelled", "error", "interrupted")


def assert_clean(app: TermchatApp) -> None:
    assert unsafe_lines(app) == []


def error_lines(app: TermchatApp) -> list[str]:
    return [str(line.render()) for line in app.chat.query(ErrorLine)]


def footer_text(app: TermchatApp) -> str:
    return "\n".join(lines_of(app.chat.query_one(KeyBar)))


def reopened(model: ModelConfig, *exchanges: tuple[str, str]) -> TermchatApp:
    """The TUI started on a conversation of complete exchanges, as `termchat -c` starts it."""
    conversation = Conversation(model, exchanges=[
        Exchange(prompt, Reply(initial_text=text, status=Status.COMPLETE))
        for prompt, text in exchanges])
    return TermchatApp(CONFIG, model, conversation=conversation, cursor_blink=False,
                       show_timings=False)


# -- escape sequences never reach the screen -------------------------------------------------

@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_streamed_reply_cannot_write_the_clipboard_title_or_screen(
        srv: ProviderServer, provider: str) -> None:
    srv.queue(Script(chunks=STREAMED, delay=0.06))
    app = make_app(srv, provider)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "go")
        mid_stream = 0
        while app.chat.streaming:
            assert_clean(app)
            mid_stream += bool(replies(app)) and bool(replies(app)[0].text)
            await pilot.pause(0.02)
        assert mid_stream >= 3, "never looked at the screen while the reply streamed"
        await finish(pilot)
        assert_clean(app)
        text = replies(app)[0].text
        assert text == safe("".join(STREAMED))
        assert text.startswith("Clipboard, title, clear, eight")
        assert not any(remnant in text for remnant in REMNANTS)
        assert "Clipboard, title, clear, eight" in shown(app)
        assert app.clipboard == ""


async def test_a_reopened_conversation_shows_its_prompt_and_reply_clean(
        srv: ProviderServer) -> None:
    app = reopened(model_for(srv), (HOSTILE_PROMPT, HOSTILE_REPLY))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.1)
        assert_clean(app)
        assert replies(app)[0].text == safe(HOSTILE_REPLY)
        assert "what is this?" in "".join(lines_of(app.chat.query_one(UserMessage)))
        screen = shown(app)
        assert "Heading" in screen and "Some red text and evil." in screen
        assert not any(remnant in screen for remnant in REMNANTS)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore.open(tmp_path / "history.db") as opened:
        yield opened


async def _settle(pilot: Pilot) -> None:
    """Let the history screen's list, search and preview workers finish."""
    for _ in range(2):
        workers = [w for w in pilot.app.workers if w.node is pilot.app.screen]
        if workers:
            await pilot.app.workers.wait_for_complete(workers)
        await pilot.pause(0.05)


async def test_the_history_browser_lists_previews_and_finds_a_hostile_chat_clean(
        store: HistoryStore) -> None:
    model = ModelConfig(name="gpt\x1b]0;pwned\x07", provider="openai",
                        model="gpt-4\x1b]52;c;aGk=\x07")
    record = store.new_conversation()
    record.user_prompt(HOSTILE_PROMPT, model).finish(Reply(
        model=model.model, provider=model.provider, status=Status.COMPLETE,
        initial_text="the needle\x1b]52;c;aGVsbG8=\x07 in \x1b[2Jthe hay\u202estack"))
    assert record.id is not None
    store.rename(record.id, "Trip\x1b]0;pwned\x07 plan\u202e\x9b2J")
    app = TermchatApp(CONFIG, model, history=store, cursor_blink=False, show_timings=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await _settle(pilot)
        assert_clean(app)
        screen = shown(app)
        assert "Trip plan" in screen and "the needle in the hay" in screen
        assert not any(remnant in screen for remnant in REMNANTS)

        app.screen.query_one("#history-search", Input).value = "needle"
        await pilot.pause()
        await _settle(pilot)
        assert_clean(app)
        assert "1 match · reply: the needle" in shown(app)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_server_error_message_is_one_clean_line(
        srv: ProviderServer, provider: str) -> None:
    srv.queue(Script(status=400, error_message="bad \x1b]52;c;eA==\x07 request\x1b[2J\u202e"))
    app = make_app(srv, provider)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        assert_clean(app)
        [line] = error_lines(app)
        assert "bad request" in line and "\n" not in line


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_mid_stream_error_is_one_clean_line_that_agrees_with_the_reply_mark(
        srv: ProviderServer, provider: str) -> None:
    srv.queue(Script(text="Some words then trouble.", chunk_size=5, error_after=2,
                     error_message="upstream \x1b]52;c;eA==\x07broke\x1b[2J"))
    app = make_app(srv, provider)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        assert_clean(app)
        [line] = error_lines(app)
        assert "upstream broke" in line
        reply = replies(app)[0]
        assert reply.text == "Some words"
        assert any("not kept as context" in row for row in screen_lines(reply))
        # The mark says the partial reply is not kept: nothing on screen may say it is.
        assert "partial reply is kept" not in shown(app)


async def test_the_palette_shows_a_code_block_line_literally_and_clean(
        srv: ProviderServer) -> None:
    srv.queue(Script(text="Two blocks:\n\n```\n[bold]x[/bold] \x1b]52;c;aGk=\x07go\n```\n\n"
                          "```\n[link=https://e.x]y[/link]\x1b[2J\u202e\n```\n"))
    app = make_app(srv)
    async with app.run_test(size=(110, 30)) as pilot:
        await send(pilot, "code")
        await finish(pilot)
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        # Every command at first; then the search's hits, without "New conversation".
        for query, listed in (("", True), ("code block", False)):
            await pilot.press(*query)
            await wait_until(pilot, lambda listed=listed: "Copy code block 2" in shown(app)
                             and ("New conversation" in shown(app)) is listed)
            assert_clean(app)
            screen = shown(app)
            assert "Copy code block 1: [bold]x[/bold] go" in screen
            assert "Copy code block 2: [link=https://e.x]y[/link]" in screen
        await pilot.press("escape")


async def test_a_pasted_prompt_is_shown_and_sent_clean(srv: ProviderServer) -> None:
    srv.queue(Script(text="ok"))
    app = make_app(srv)
    async with app.run_test(size=(100, 30)) as pilot:
        prompt = app.chat.query_one(PromptInput)
        # As the terminal delivers a bracketed paste: to the app, which hands it to the focus.
        app.post_message(events.Paste("look \x1b]52;c;aGk=\x07here\x1b[2J\u202e\r\nnow"))
        await pilot.pause()
        assert prompt.text == "look here\nnow"
        assert_clean(app)
        await pilot.press("enter")
        await finish(pilot)
        assert srv.requests[-1].body["messages"][-1]["content"] == "look here\nnow"


# -- the wire's edge: a finished reply and one line, never silence ---------------------------

BAD_JSON = {
    "openai": b"data: {\"choices\": [{\"delta\": {\"content\": \"x\"\n\n",
    "anthropic": b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \n\n",
}
PAGE = b"<!doctype html><title>Captive portal</title><p>Log in first.</p>"


def _invalid_utf8(provider: str) -> list[bytes]:
    event = text_event(provider, "caf\u2603MARK\u2603 ok")
    return body(provider, event.replace(b"\\u2603MARK\\u2603", b"\xff"))


def _gzip_lie(provider: str) -> Script:
    return Script(raw=text_body(provider, "hi"), raw_headers=[
        ("content-type", "text/event-stream"), ("content-encoding", "gzip")])


COMPLETING = {
    "invalid-utf8": (lambda p: Script(raw=_invalid_utf8(p)), "caf\ufffd ok"),
    "null-and-number-text": (lambda p: Script(raw=text_body(p, "Before ", None, 42, "after.")),
                             "Before after."),
}
# case -> (the reply, what its error line must say)
FAILING = {
    "invalid-json": (lambda p: Script(raw=body(p, text_event(p, "Partial words"), BAD_JSON[p],
                                               text_event(p, " never shown"))),
                     ["not valid JSON"]),
    "invalid-json-first": (lambda p: Script(raw=body(p, BAD_JSON[p], text_event(p, "never"))),
                           ["not valid JSON"]),
    "gzip-lie": (_gzip_lie, ["does not decode"]),
    "empty-body": (lambda p: Script(raw=[]), ["without sending any of it"]),
    "no-content": (lambda p: Script(raw=head(p), raw_framing="close"),
                   ["without sending any of it"]),
    "html-page": (lambda p: Script(raw=[PAGE], raw_framing="length", raw_headers=[
        ("content-type", "text/html; charset=utf-8")]), ["no reply arrived", "base_url"]),
}
# The bugs these cases found (reported; src is fixed separately).
_NO_PARTIAL_BUG = ("the error line says 'mid-reply; the partial reply is kept' when nothing "
                   "arrived: _errors._classify words it by `started` (headers), not by text")


async def _assert_over(pilot: Pilot, app: TermchatApp) -> str:
    """The reply ended: one error line (returned), a final state, nothing left to cancel."""
    [line] = error_lines(app)
    assert "This is a bug" not in line
    status = status_text(app)
    assert any(word in status for word in FINAL_WORDS), status
    assert "streaming" not in status and "waiting" not in status
    assert not app.chat.streaming
    assert not any(binding.binding.action == "cancel_reply" and binding.enabled
                   for binding in app.chat.active_bindings.values())
    await wait_until(pilot, lambda: "Cancel reply" not in footer_text(app), timeout=2)
    return line


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", COMPLETING)
async def test_a_damaged_delta_is_repaired_or_skipped_and_the_reply_completes(
        srv: ProviderServer, provider: str, case: str) -> None:
    script, expected = COMPLETING[case]
    srv.queue(script(provider))
    app = make_app(srv, provider)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        assert error_lines(app) == []
        assert replies(app)[0].text == expected
        assert replies(app)[0].status is Status.COMPLETE
        assert "done" in status_text(app)
        assert expected in shown(app)


async def test_an_anthropic_delta_without_its_delta_is_skipped(srv: ProviderServer) -> None:
    srv.queue(Script(raw=body("anthropic", text_event("anthropic", "Before "),
                              anthropic_delta(None, with_delta=False),
                              text_event("anthropic", "after."))))
    app = make_app(srv, "anthropic")
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        assert error_lines(app) == []
        assert replies(app)[0].text == "Before after."
        assert "done" in status_text(app)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", FAILING)
async def test_a_broken_stream_ends_the_reply_with_one_line(
        srv: ProviderServer, provider: str, case: str) -> None:
    script, wording = FAILING[case]
    srv.queue(script(provider))
    app = make_app(srv, provider)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        line = await _assert_over(pilot, app)
        assert_clean(app)
        assert all(words in line for words in wording), line
        if case == "invalid-json":
            assert [reply.text for reply in replies(app)] == ["Partial words"]
            assert "Partial words" in shown(app)
            return
        assert replies(app) == [] or replies(app)[0].text == ""
        assert "partial reply is kept" not in line
        # Nothing arrived, so nothing is context: the prompt is back to send again.
        assert app.chat.query_one(PromptInput).text == "q"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_emoji_split_into_surrogates_shows_and_the_chat_goes_on(
        srv: ProviderServer, provider: str) -> None:
    srv.queue(Script(raw=text_body(provider, "party \ud83c", "\udf89 time")),
              Script(text="second answer"))
    app = make_app(srv, provider)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        assert replies(app)[0].text == "party 🎉 time"
        assert "party 🎉 time" in shown(app)
        await send(pilot, "again")
        await finish(pilot)
        assert error_lines(app) == []
        assert len(srv.requests) == 2
        assert srv.requests[-1].body["messages"] == [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "party 🎉 time"},
            {"role": "user", "content": "again"}]
        assert replies(app)[1].text == "second answer"


def _assert_three_lines(app: TermchatApp) -> None:
    """The reply's carriage returns are line breaks, shown as lines of their own."""
    reply = replies(app)[0]
    assert reply.text == "one\ntwo\nthree"
    assert [row.strip() for row in screen_lines(reply) if row.strip()] == ["one", "two", "three"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_lone_carriage_return_in_a_reply_is_a_line_break(
        srv: ProviderServer, provider: str) -> None:
    srv.queue(Script(text="one\rtwo\r\nthree", chunk_size=4))
    app = make_app(srv, provider)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        assert replies(app)[0].status is Status.COMPLETE
        _assert_three_lines(app)
        assert_clean(app)


async def test_a_stored_reply_with_a_lone_carriage_return_reopens(
        srv: ProviderServer, store: HistoryStore) -> None:
    model = model_for(srv)
    record = store.new_conversation()
    record.user_prompt("q\rmore", model).finish(
        Reply(model=model.model, provider=model.provider, initial_text="one\rtwo\r\nthree",
              status=Status.COMPLETE))
    assert record.id is not None
    config = Config(path=Path("/nonexistent/config.toml"), models={"test": model})
    conversation = continue_conversation(config, store, record.id)
    app = TermchatApp(config, model, conversation=conversation, history=store,
                      cursor_blink=False, show_timings=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.1)
        _assert_three_lines(app)
        assert_clean(app)


# -- retries are shown and can be cancelled ---------------------------------------------------

def _rate_limited_then_fine(srv: ProviderServer) -> TermchatApp:
    srv.queue(Script(status=429, retry_after="2", should_retry=True), Script(text="good reply"))
    return make_app(srv, max_retries=1)


async def test_the_status_bar_says_it_will_retry_and_escape_stops_the_retry(
        srv: ProviderServer) -> None:
    app = _rate_limited_then_fine(srv)
    async with app.run_test(size=(140, 30)) as pilot:
        await send(pilot, "q")
        await wait_until(pilot, lambda: "retry" in status_text(app))
        status = status_text(app)
        assert "retry 2 of 2" in status and "429" in status
        await wait_until(pilot, lambda: "Cancel reply" in footer_text(app))
        await pilot.press("escape")
        await finish(pilot)
        await pilot.pause(2.5)  # past the wait the server asked for
        assert len(srv.requests) == 1
        assert app.chat.last_reply is not None
        assert app.chat.last_reply.status is Status.CANCELLED
        assert "cancelled" in status_text(app) and "retry" not in status_text(app)
        # Nothing had arrived: no empty reply, a line saying so, and the prompt back.
        assert replies(app) == []
        assert "cancelled before any reply arrived" in shown(app)
        assert app.chat.query_one(PromptInput).text == "q"


async def test_a_rate_limited_request_is_sent_again_after_the_wait_and_answered(
        srv: ProviderServer) -> None:
    app = _rate_limited_then_fine(srv)
    async with app.run_test(size=(140, 30)) as pilot:
        await send(pilot, "q")
        await wait_until(pilot, lambda: "retry 2 of 2" in status_text(app))
        await finish(pilot)
        assert len(srv.requests) == 2
        assert error_lines(app) == []
        assert replies(app)[0].text == "good reply"
        assert "done" in status_text(app) and "retry" not in status_text(app)


# -- keys typed during start-up -----------------------------------------------------------

async def _typed_during_start_up(app: TermchatApp, *keys: str) -> list[str]:
    """Run `app`, pressing `keys` before its chat screen is mounted, until the prompt's
    reply (if any) is over; the prompt's text at the end."""
    left: list[str] = []

    async def auto_pilot(pilot: Pilot) -> None:
        # All at once, as a terminal hands over what was typed while the program started.
        for key in keys:
            app.post_message(events.Key(key, "\r" if key == "enter" else key))
        assert not app.chat.is_mounted, "the chat screen was up before the keys were typed"
        await wait_until(pilot, lambda: app.chat.is_mounted)
        await pilot.pause(0.1)
        await finish(pilot)
        left.append(app.chat.query_one(PromptInput).text)
        app.exit()

    await app.run_async(headless=True, size=(100, 30), auto_pilot=auto_pilot)
    return left


async def test_keys_typed_while_the_tui_starts_land_in_the_prompt(srv: ProviderServer) -> None:
    app = make_app(srv)
    assert await _typed_during_start_up(app, "h", "e", "y") == ["hey"]
    assert srv.requests == []


async def test_a_prompt_typed_and_entered_while_the_tui_starts_is_sent_and_saved(
        srv: ProviderServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    srv.queue(Script(text="typed ahead, answered"))
    # As `termchat` starts: the history store opens after the first frame.
    app = TermchatApp(CONFIG, model_for(srv), open_history=True, cursor_blink=False,
                      show_timings=False)
    # (An Enter typed before the terminal left line mode is Enter too: test_driver.py.)
    assert await _typed_during_start_up(app, "h", "i", "enter") == [""]
    assert srv.requests[-1].body["messages"] == [{"role": "user", "content": "hi"}]
    with HistoryStore.open(tmp_path / "data" / "termchat" / "history.db") as saved:
        cid = saved.last_conversation_id()
        assert cid is not None
        assert [(m.role, m.text) for m in saved.get(cid).messages] == [
            ("user", "hi"), ("assistant", "typed ahead, answered")]


async def test_reasoning_and_a_finish_reason_cannot_drive_the_terminal(
        srv: ProviderServer) -> None:
    srv.queue(Script(thinking="weigh\x1b]52;c;aGk=\x07ing it\x1b[2J up", text="The answer.",
                     finish="end_turn\x1b]0;pwned\x07\u202e"))
    app = make_app(srv, "anthropic")
    async with app.run_test(size=(120, 30)) as pilot:
        await send(pilot, "q")
        await finish(pilot)
        assert_clean(app)
        screen = shown(app)
        assert "weighing it up" in screen and "The answer." in screen
        assert "finish end_turn" in status_text(app)
        assert not any(remnant in screen for remnant in REMNANTS)
