"""The history screen: browse, search, open and continue, rename and delete saved chats."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, OptionList

from termchat.config import Config, ModelConfig
from termchat.devserver import ProviderServer, Script
from termchat.history import HistoryError, HistoryStore, continue_conversation
from termchat.keys import keys
from termchat.sample import long_reply
from termchat.tui import OPENED_EXCHANGES
from termchat.tui.app import TermchatApp
from termchat.tui.chat_screen import ChatScreen
from termchat.tui.conversation import ConversationView
from termchat.tui.history_screen import HistoryScreen
from termchat.tui.messages import UserMessage
from termchat.tui.prompt import PromptInput
from termchat.turn import Exchange, Reply, Status
from tests.support.models import model_for
from tests.support.tui import finish, replies, reply_started, send, view_rows, wait_until

GPT = ModelConfig(name="gpt", provider="openai", model="gpt-4.1-mini")
# 2024-05-01 09:00 UTC, and a day in seconds: fixed dates for lists and snapshots.
MAY_1 = 1714554000.0
DAY = 86400.0

SnapCompare = Callable[..., bool]


@pytest.fixture(autouse=True)
def utc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dates render in UTC, and nothing touches the user's real data directory."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore.open(tmp_path / "history.db") as opened:
        yield opened


def saved(store: HistoryStore, *turns: tuple[str, str], model: ModelConfig = GPT,
          at: float | None = None) -> int:
    """A conversation of complete exchanges, stored as a chat would store it."""
    record = store.new_conversation()
    for prompt, answer in turns:
        record.user_prompt(prompt, model).finish(
            Reply(model=model.model, provider=model.provider, initial_text=answer,
                  status=Status.COMPLETE))
    assert record.id is not None
    if at is not None:
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE conversations SET created = ?, updated = ? WHERE id = ?",
                       (at, at, record.id))
            db.execute("UPDATE messages SET created = ?, updated = ? WHERE conversation_id = ?",
                       (at, at, record.id))
    return record.id


def make_app(store: HistoryStore | None, model: ModelConfig, *,
             config: Config | None = None) -> TermchatApp:
    config = config or Config(path=Path("/nonexistent/config.toml"), models={model.name: model})
    return TermchatApp(config, model, history=store, cursor_blink=False, show_timings=False)


def history_screen(pilot: Pilot) -> HistoryScreen:
    screen = pilot.app.screen
    assert isinstance(screen, HistoryScreen)
    return screen


def listed(pilot: Pilot) -> list[str]:
    """Each conversation in the list as its title and the line under it."""
    option_list = history_screen(pilot).query_one("#history-list", OptionList)
    return [str(option.prompt) for option in option_list.options]


def note(pilot: Pilot) -> str:
    return history_screen(pilot).query_one("#history-list", OptionList).border_subtitle


async def open_history(pilot: Pilot) -> HistoryScreen:
    await pilot.press("ctrl+r")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, HistoryScreen))
    await settle(pilot)
    return history_screen(pilot)


async def settle(pilot: Pilot) -> None:
    """Let searches, pages and previews finish loading (not a reply streaming underneath)."""
    for _ in range(2):
        # Not `wait_for_complete()`: it would wait for the reply too. It waits for every
        # worker when given none, hence the check.
        screens = [w for w in pilot.app.workers if w.node is pilot.app.screen]
        if screens:
            await pilot.app.workers.wait_for_complete(screens)
        await pilot.pause(0.05)


async def search(pilot: Pilot, text: str) -> None:
    history_screen(pilot).query_one("#history-search", Input).value = text
    await pilot.pause()  # the change starts the (debounced) search worker, which settle awaits
    await settle(pilot)


async def open_found(pilot: Pilot, text: str) -> None:
    """Ctrl+R, search for `text`, Enter on the first found: the chat screen shows it."""
    await open_history(pilot)
    await search(pilot, text)
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen))


def test_snapshot_of_the_history_view(store: HistoryStore, snap_compare: SnapCompare) -> None:
    saved(store, ("Capital of France?", "Paris."), ("And its population?", "About 2.1 million."),
          at=MAY_1)
    saved(store, ("Write a haiku about SQLite", "Rows in quiet pages\nindexes hum"),
          model=ModelConfig(name="claude", provider="anthropic", model="claude-sonnet-4-5"),
          at=MAY_1 + DAY)
    saved(store, ("Explain Python's GIL in one sentence",
                  "It lets one thread run Python bytecode at a time."), at=MAY_1 + 2 * DAY)

    async def run_before(pilot: Pilot) -> None:
        await open_history(pilot)

    assert snap_compare(make_app(store, GPT), terminal_size=(100, 30),
                        run_before=run_before)


def test_snapshot_of_search_results(store: HistoryStore, snap_compare: SnapCompare) -> None:
    saved(store, ("Capital of France?", "Paris is the capital and largest city of France."),
          at=MAY_1)
    saved(store, ("Best pizza in Italy?", "Naples, where pizza was born; Paris has good ones."),
          at=MAY_1 + DAY)
    saved(store, ("Explain Python's GIL", "It lets one thread run bytecode at a time."),
          at=MAY_1 + 2 * DAY)

    async def run_before(pilot: Pilot) -> None:
        await open_history(pilot)
        await search(pilot, "paris")
        await pilot.press("down")

    assert snap_compare(make_app(store, GPT), terminal_size=(100, 30),
                        run_before=run_before)


def notifications(app: TermchatApp) -> list[str]:
    """Every notification the app shows from now on, recorded as it is sent."""
    shown: list[str] = []
    notify = app.notify

    def record(message: str, **kwargs: object) -> None:
        shown.append(message)
        notify(message, **kwargs)  # type: ignore[arg-type]

    app.notify = record  # type: ignore[method-assign]
    return shown


async def test_ctrl_r_lists_chats_newest_first_with_a_preview(
        provider_server: ProviderServer, store: HistoryStore) -> None:
    provider_server.queue(Script(text="Paris."), Script(text="Napoli."))
    model = model_for(provider_server)
    app = make_app(store, model)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "Capital of France?")
        await finish(pilot)
        await pilot.press("ctrl+n")
        await send(pilot, "Best pizza?")
        await finish(pilot)
        screen = await open_history(pilot)
        assert listed(pilot) == ["Best pizza?\n2 messages · " + _today(store, 2) + " · test",
                                 "Capital of France?\n2 messages · " + _today(store, 1)
                                 + " · test"]
        assert note(pilot) == "2 conversations"
        preview = str(screen.query_one("#history-preview-text").render())
        assert "Best pizza?" in preview and "Napoli." in preview
        await pilot.press("down", "down")
        await settle(pilot)
        preview = str(screen.query_one("#history-preview-text").render())
        assert "Capital of France?" in preview and "Paris." in preview

        # The chat already open is not reloaded: Enter just goes back to it.
        conversation = app.chat.conversation
        await pilot.press("up", "enter")
        await wait_until(pilot, lambda: app.screen is app.chat)
        assert app.chat.conversation is conversation
        assert [m.text for m in replies(app)] == ["Napoli."]


def _today(store: HistoryStore, cid: int) -> str:
    updated = store.get(cid).updated
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(updated))


async def test_the_command_palette_opens_history(store: HistoryStore) -> None:
    saved(store, ("hello", "hi"))
    app = make_app(store, GPT)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: app.screen is not app.chat)
        await pilot.press(*"history")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await settle(pilot)
        assert [line.split("\n")[0] for line in listed(pilot)] == ["hello"]


async def test_typing_a_word_from_a_reply_narrows_the_list_to_its_conversation(
        store: HistoryStore) -> None:
    saved(store, ("Capital of France?", "Paris."), at=MAY_1)
    saved(store, ("Capital of Portugal?", "Lisbon, on the Tagus."), at=MAY_1 + DAY)
    saved(store, ("Capital of Spain?", "Madrid."), at=MAY_1 + 2 * DAY)
    app = make_app(store, GPT)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_history(pilot)
        assert len(listed(pilot)) == 3
        await pilot.press(*"tagus")
        await settle(pilot)
        assert listed(pilot) == ["Capital of Portugal?\n1 match · reply: Lisbon, on the Tagus."]
        assert note(pilot) == "1 conversation match “tagus”"
        await search(pilot, "nowhere")
        assert listed(pilot) == []
        assert note(pilot) == "No conversation matches “nowhere”"
        await search(pilot, "")
        assert [line.split("\n")[0] for line in listed(pilot)] == [
            "Capital of Spain?", "Capital of Portugal?", "Capital of France?"]
        # From the list, / goes back to the search box.
        await pilot.press("down", "slash")
        assert isinstance(app.focused, Input)


async def test_a_renamed_conversation_is_found_by_its_new_title(store: HistoryStore) -> None:
    cid = saved(store, ("q", "a"))
    store.rename(cid, "Trip planning")
    saved(store, ("other", "thing"))
    app = make_app(store, GPT)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_history(pilot)
        await search(pilot, "trip")
        assert [line.split("\n")[0] for line in listed(pilot)] == ["Trip planning"]


async def test_enter_opens_a_conversation_and_the_next_prompt_continues_it(
        provider_server: ProviderServer, store: HistoryStore) -> None:
    model = model_for(provider_server)
    france = saved(store, ("Capital of France?", "Paris."), model=model, at=MAY_1)
    saved(store, ("Best pizza?", "Napoli."), model=model, at=MAY_1 + DAY)
    provider_server.queue(Script(text="About 2.1 million."))
    app = make_app(store, model)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_found(pilot, "paris")
        assert [str(m.render()) for m in app.chat.query(UserMessage)] == ["Capital of France?"]
        assert [m.text for m in replies(app)] == ["Paris."]

        await send(pilot, "And its population?")
        await finish(pilot)
        assert provider_server.requests[-1].body["messages"] == [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And its population?"},
        ]
        assert [(m.role, m.text) for m in store.get(france).messages] == [
            ("user", "Capital of France?"), ("assistant", "Paris."),
            ("user", "And its population?"), ("assistant", "About 2.1 million.")]
        assert len(store.list_conversations()) == 2
        # Continuing made it the most recent: first in the list.
        await open_history(pilot)
        assert listed(pilot)[0].startswith("Capital of France?\n4 messages")


async def test_a_long_conversation_opened_from_the_history_goes_on_with_all_of_it(
        provider_server: ProviderServer, store: HistoryStore) -> None:
    model = model_for(provider_server)
    exchanges = OPENED_EXCHANGES * 2
    saved(store, *[(f"Question {n}?", f"Answer {n}.") for n in range(exchanges)], model=model,
          at=MAY_1)
    saved(store, ("Best pizza?", "Napoli."), model=model, at=MAY_1 + DAY)
    provider_server.queue(Script(text="All of them."))
    app = make_app(store, model)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_found(pilot, "Question 0")
        await wait_until(pilot, lambda: bool(replies(app))
                         and replies(app)[-1].text == f"Answer {exchanges - 1}.")
        await send(pilot, "How many?")
        await finish(pilot)
        sent = [m["content"] for m in provider_server.requests[-1].body["messages"]]
        assert len(sent) == 2 * exchanges + 1
        assert sent[:2] == ["Question 0?", "Answer 0."] and sent[-1] == "How many?"


async def test_a_conversation_whose_alias_is_gone_continues_with_its_last_model(
        provider_server: ProviderServer, store: HistoryStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", provider_server.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "local")
    old = ModelConfig(name="retired-alias", provider="openai", model="old-model")
    saved(store, ("Hello?", "Hi."), model=old)
    provider_server.queue(Script(text="Still here."))
    app = make_app(store, model_for(provider_server))
    async with app.run_test(size=(100, 30)) as pilot:
        await open_history(pilot)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is app.chat)
        assert app.chat.conversation.model.label == "openai:old-model"
        await send(pilot, "Still there?")
        await finish(pilot)
        assert provider_server.requests[-1].body["model"] == "old-model"
        assert len(provider_server.requests[-1].body["messages"]) == 3


async def test_rename_changes_the_title_in_the_store_and_the_list(store: HistoryStore) -> None:
    cid = saved(store, ("Capital of France?", "Paris."))
    app = make_app(store, GPT)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_history(pilot)
        await pilot.press("down", "r")
        await wait_until(pilot, lambda: not isinstance(app.screen, HistoryScreen))
        assert app.screen.query_one("#rename-input", Input).value == "Capital of France?"
        # The old title is selected: typing replaces it.
        await pilot.press(*"Quiz", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        assert store.get(cid).title == "Quiz"
        assert listed(pilot)[0].startswith("Quiz\n")

        # Escape in the dialog changes nothing and leaves the history screen open.
        await pilot.press("f2")
        await wait_until(pilot, lambda: not isinstance(app.screen, HistoryScreen))
        await pilot.press("x", "escape")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        assert store.get(cid).title == "Quiz"


async def test_an_empty_title_is_refused_with_a_notification(store: HistoryStore) -> None:
    cid = saved(store, ("Capital of France?", "Paris."))
    app = make_app(store, GPT)
    shown = notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_history(pilot)
        await pilot.press("down", "r")
        await wait_until(pilot, lambda: not isinstance(app.screen, HistoryScreen))
        app.screen.query_one("#rename-input", Input).value = "   "
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        assert shown == ["A title cannot be empty."]
        assert store.get(cid).title == "Capital of France?"
        assert listed(pilot)[0].startswith("Capital of France?\n")


async def test_delete_asks_first_and_removes_from_store_and_list(store: HistoryStore) -> None:
    keep = saved(store, ("Keep me", "ok"), at=MAY_1)
    doomed = saved(store, ("Delete me", "ok"), at=MAY_1 + DAY)
    app = make_app(store, GPT)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_history(pilot)
        await pilot.press("down", "d")
        await wait_until(pilot, lambda: not isinstance(app.screen, HistoryScreen))
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        assert [s.id for s in store.list_conversations()] == [doomed, keep]
        assert len(listed(pilot)) == 2

        await pilot.press("delete")
        await wait_until(pilot, lambda: not isinstance(app.screen, HistoryScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await settle(pilot)
        assert [s.id for s in store.list_conversations()] == [keep]
        assert [line.split("\n")[0] for line in listed(pilot)] == ["Keep me"]
        assert note(pilot) == "1 conversation"
        preview = str(history_screen(pilot).query_one("#history-preview-text").render())
        assert "Keep me" in preview


async def test_deleting_the_open_chat_saves_its_next_turn_as_a_new_conversation(
        provider_server: ProviderServer, store: HistoryStore) -> None:
    provider_server.queue(Script(text="one"), Script(text="two"))
    model = model_for(provider_server)
    app = make_app(store, model)
    shown = notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "first")
        await finish(pilot)
        await open_history(pilot)
        await pilot.press("down", "d")
        await wait_until(pilot, lambda: not isinstance(app.screen, HistoryScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await pilot.press("escape")
        await send(pilot, "second")
        await finish(pilot)
        assert [s.title for s in store.list_conversations()] == ["second"]
        assert shown == ["Deleted “first”. The chat on screen goes on as a new conversation."]


async def test_escape_closes_history_and_leaves_the_reply_streaming(
        provider_server: ProviderServer, store: HistoryStore) -> None:
    provider_server.queue(Script(text="slow " * 100, chunk_size=5, stall_after=5))
    app = make_app(store, model_for(provider_server))
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "go")
        await wait_until(pilot, lambda: reply_started(app))
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await pilot.pause(0.2)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.chat)
        assert app.chat.streaming, "Escape in the history screen cancelled the reply"
        await pilot.press("escape")
        await finish(pilot)
        assert replies(app)[0].status is Status.CANCELLED


async def test_opening_another_chat_while_a_reply_streams_is_refused(
        provider_server: ProviderServer, store: HistoryStore) -> None:
    saved(store, ("Older chat", "ok"), at=MAY_1)
    provider_server.queue(Script(text="slow " * 100, chunk_size=5, stall_after=5))
    app = make_app(store, model_for(provider_server))
    shown = notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "go")
        await wait_until(pilot, lambda: reply_started(app))
        await open_history(pilot)
        await pilot.press("down", "down", "enter")
        await wait_until(pilot, lambda: bool(shown))
        # The chat screen decides: the reply goes on, and the chat it shows stays.
        assert "still streaming" in shown[0]
        assert app.screen is app.chat and app.chat.streaming
        assert [str(m.render()) for m in app.chat.query(UserMessage)] == ["go"]
        await pilot.press("escape")
        await finish(pilot)


async def test_history_off_says_so_instead_of_opening_an_empty_screen(
        tmp_path: Path) -> None:
    config = Config(path=tmp_path / "config.toml", history=False, models={"gpt": GPT})
    app = make_app(None, GPT, config=config)
    shown = notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.screen is app.chat
        assert shown == [f"History is off: {tmp_path / 'config.toml'} sets history = false, "
                         "so nothing is saved."]


async def test_a_long_history_loads_a_page_at_a_time(store: HistoryStore) -> None:
    with sqlite3.connect(store.path) as db:
        db.executemany("INSERT INTO conversations (title, model, created, updated) "
                       "VALUES (?, 'gpt', ?, ?)",
                       [(f"chat {i}", MAY_1 + i, MAY_1 + i) for i in range(450)])
    app = make_app(store, GPT)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_history(pilot)
        assert len(listed(pilot)) == 200
        assert note(pilot) == "200 conversations, more as you scroll"
        await pilot.press("down", "end")
        await settle(pilot)
        assert len(listed(pilot)) == 400
        await pilot.press("end")
        await settle(pilot)
        titles = [line.split("\n")[0] for line in listed(pilot)]
        assert titles == [f"chat {i}" for i in reversed(range(450))]
        assert note(pilot) == "450 conversations"


async def test_starting_on_the_last_conversation_shows_it_and_continues_it(
        provider_server: ProviderServer, store: HistoryStore) -> None:
    model = model_for(provider_server)
    saved(store, ("Older", "old"), model=model, at=MAY_1)
    last = saved(store, ("Capital of France?", "Paris."), model=model, at=MAY_1 + DAY)
    cid = store.last_conversation_id()
    assert cid == last
    # What `termchat -c` does: the TUI starts on the conversation, continuing it.
    config = Config(path=Path("/nonexistent/config.toml"), models={"test": model})
    conversation = continue_conversation(config, store, cid)
    provider_server.queue(Script(text="About 2.1 million."))
    app = TermchatApp(config, conversation.model, conversation=conversation, history=store,
                      cursor_blink=False)
    async with app.run_test(size=(100, 30)) as pilot:
        assert [m.text for m in replies(app)] == ["Paris."]
        await send(pilot, "And its population?")
        await finish(pilot)
        assert len(provider_server.requests[-1].body["messages"]) == 3
        assert [m.text for m in store.get(last).messages][2:] == [
            "And its population?", "About 2.1 million."]


async def test_forking_a_stored_chat_stores_the_copy_and_leaves_the_original(
        provider_server: ProviderServer, store: HistoryStore) -> None:
    provider_server.queue(Script(text="Paris."), Script(text="Lyon."))
    app = make_app(store, model_for(provider_server))
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "Capital of France?")
        await finish(pilot)
        original = app.chat.conversation.history
        app.chat.action_fork()
        await wait_until(pilot, lambda: app.chat.conversation.history is not original)
        await finish(pilot)
        await send(pilot, "Second city?")
        await finish(pilot)
    with HistoryStore.open(store.path) as again:
        [newer, older] = again.list_conversations()
        assert [m.text for m in again.get(older.id).messages] == ["Capital of France?",
                                                                  "Paris."]
        assert [m.text for m in again.get(newer.id).messages] == [
            "Capital of France?", "Paris.", "Second city?", "Lyon."]


# -- a long conversation opens at its end, the rest read after the first frame ---------------

def _opened_at_its_end(server: ProviderServer, store: HistoryStore, exchanges: int,
                       recent: int, fails: bool = False) -> tuple[TermchatApp, threading.Event]:
    """`termchat -c` on a stored conversation of `exchanges`, the TUI given its last `recent`;
    reading the rest waits for the event (and then, with `fails`, fails)."""
    model = model_for(server)
    saved(store, *[(f"question {n}", long_reply(600, seed=n)) for n in range(exchanges)],
          model=model)
    cid = store.last_conversation_id()
    assert cid is not None
    config = Config(path=Path("/nonexistent/config.toml"), models={"test": model})
    conversation = continue_conversation(config, store, cid, recent=recent)
    read = conversation.older
    assert read is not None
    go_on = threading.Event()

    def slowly(known: list[Exchange]) -> tuple[list[Exchange], list[Exchange]]:
        assert go_on.wait(10)
        if fails:
            raise HistoryError("history: database is locked (another termchat is writing)")
        return read(known)

    conversation.older = slowly
    return TermchatApp(config, conversation.model, conversation=conversation, history=store,
                       cursor_blink=False, show_timings=False), go_on


async def test_a_long_conversation_opens_at_its_end_and_the_rest_comes_in_unseen(
        provider_server: ProviderServer, store: HistoryStore) -> None:
    app, go_on = _opened_at_its_end(provider_server, store, 60, 10)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        view = app.chat.query_one(ConversationView)
        assert app.chat.conversation.exchanges[0].prompt == "question 50"
        prompts = [str(message.render()) for message in app.chat.query(UserMessage)]
        assert prompts[-1] == "question 59"
        before = view_rows(app, view.size.height)
        go_on.set()
        await wait_until(pilot, lambda: view.collapsed >= 50)
        await pilot.pause(0.1)
        assert len(app.chat.conversation.exchanges) == 60
        assert view_rows(app, view.size.height) == before
        view.scroll_home(animate=False)
        await wait_until(pilot, lambda: "question 0" in [
            str(message.render()) for message in app.chat.query(UserMessage)])


@pytest.mark.parametrize("key", ["regenerate", "new_conversation"])
async def test_a_prompt_and_a_key_before_the_rest_is_in_show_wait_then_go_with_all(
        provider_server: ProviderServer, store: HistoryStore, key: str) -> None:
    app, go_on = _opened_at_its_end(provider_server, store, 30, 5)
    provider_server.queue(Script(text="A new answer.", chunk_size=4, delay=0.02))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        chat = app.chat.conversation
        await send(pilot, "And then?")
        await pilot.press(keys(key).split(",")[0])
        await pilot.pause(0.2)
        # The prompt is on screen at once; only its request waits.
        assert provider_server.requests == []
        assert str(app.chat.query(UserMessage).last().render()) == "And then?"
        go_on.set()
        await wait_until(pilot, lambda: bool(provider_server.requests))
        await finish(pilot)
        # All thirty exchanges went as context, then the new prompt.
        assert len(provider_server.requests[0].body["messages"]) == 61
        assert app.chat.conversation is chat and len(chat.exchanges) == 31
        assert app.chat.query_one(PromptInput).text == ""
    with HistoryStore.open(store.path) as again:
        cid = again.last_conversation_id()
        assert cid is not None
        assert [m.text for m in again.get(cid).messages][-2:] == ["And then?",
                                                                  "A new answer."]
        # The key came after Enter: it met the reply streaming, and was refused as it would
        # be (no new reply, no new chat).
        assert len(again.tree(cid).messages) == 62




async def test_a_regenerate_before_the_rest_is_in_waits_for_it_then_goes_with_all(
        provider_server: ProviderServer, store: HistoryStore) -> None:
    app, go_on = _opened_at_its_end(provider_server, store, 30, 5)
    provider_server.queue(Script(text="Another answer."))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        await pilot.press(keys("regenerate").split(",")[0])
        await pilot.pause(0.2)
        assert provider_server.requests == []
        go_on.set()
        await wait_until(pilot, lambda: bool(provider_server.requests))
        await finish(pilot)
        # The 29 exchanges before the last as context, then its prompt again.
        assert len(provider_server.requests[0].body["messages"]) == 59
        assert replies(app)[-1].text == "Another answer."


async def test_when_the_rest_cannot_be_read_it_says_so_and_the_chat_goes_on_with_its_end(
        provider_server: ProviderServer, store: HistoryStore) -> None:
    app, go_on = _opened_at_its_end(provider_server, store, 30, 5, fails=True)
    provider_server.queue(Script(text="Still here."))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        await send(pilot, "And then?")
        go_on.set()
        await wait_until(pilot, lambda: bool(provider_server.requests))
        await finish(pilot)
        [said] = [n.message for n in app._notifications if "could not be read" in n.message]
        assert said.startswith("history: database is locked") and "\n" not in said
        assert len(provider_server.requests[0].body["messages"]) == 11
        assert replies(app)[-1].text == "Still here."
