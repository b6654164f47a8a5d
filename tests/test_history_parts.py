"""History schema v3, parts: a reply's reasoning, text, tool calls and results and a prompt's
attachments are stored as they stream, found by search, and loaded back exactly, so a
reopened conversation sends what the live one would have."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from termchat.config import ModelConfig
from termchat.content import (
    Attachment,
    AttachmentKind,
    Part,
    Reasoning,
    Text,
    ToolCall,
    ToolOutcome,
    ToolResult,
)
from termchat.devserver import ProviderServer, Script
from termchat.events import Finish, Usage
from termchat.history import HistoryStore
from termchat.history.encoding import columns, repaired_part, stored_parts
from termchat.turn import Conversation, Exchange, Reply, Status
from tests.support.cli import environment, termchat
from tests.support.models import model_for

MODEL = ModelConfig(name="gpt", provider="openai", model="gpt-4.1-mini")
CALL = ToolCall("call_1", "time__get_current_time", '{"timezone":  "Europe/Paris" }')


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "history.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore.open(db_path) as opened:
        yield opened


def rows(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        found = db.execute(sql, params).fetchall()
    db.close()
    return found


def attachment(data: bytes, name: str = "notes.md", media_type: str = "text/plain",
               kind: AttachmentKind = AttachmentKind.TEXT) -> Attachment:
    return Attachment(name, media_type, kind, hashlib.sha256(data).hexdigest(), len(data), data)


PNG = attachment(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "shot.png", "image/png",
                 AttachmentKind.IMAGE)


def tool_reply(model: ModelConfig, *, done: bool = True) -> Reply:
    """A reply over two rounds, as `run_turn` builds it: signed thinking, text, a call and
    its result, a call that failed, then the answer."""
    reply = Reply(model=model.model, provider=model.provider, status=Status.STREAMING)
    reply.started_at, reply.first_token_at = 0.0, 0.5
    reply.add_reasoning("The user wants ")
    reply.add_reasoning("the time.")
    reply.sign_reasoning("EqQBCkYIBxgCKkD-signature", None)
    reply.sign_reasoning(None, "opaque-redacted-data")
    reply.add_text("Let me check. ")
    reply.add(CALL)
    reply.add(ToolCall("call_2", "files__read", "{not json"))
    reply.add(ToolResult("call_1", "2024-05-01T11:00:00+02:00"))
    reply.add(ToolResult("call_2", "Invalid arguments: not JSON.", True, ToolOutcome.INVALID))
    if done:
        reply.add_text("It is 11:00 in Paris.")
        reply.status = Status.COMPLETE
        reply.finish = Finish.from_raw("stop")
        reply.usage = Usage(120, 30)
        reply.ended_at = 3.0
    return reply


def record_tool_exchange(store: HistoryStore, model: ModelConfig = MODEL) -> tuple[int, Exchange]:
    """The exchange in memory, and the conversation it was recorded into (checkpointed once
    mid-reply, as a chat would)."""
    reply = tool_reply(model)
    exchange = Exchange("What time is it in Paris? See the notes.", reply,
                        attachments=(attachment(b"# Notes\nParis is UTC+2 in May.\n"), PNG))
    record = store.new_conversation()
    recorder = record.user_prompt(exchange.prompt, model, exchange.attachments)
    recorder.checkpoint(tool_reply(model, done=False))
    recorder.finish(reply)
    assert record.id is not None
    return record.id, exchange


# -- stored and loaded exactly ------------------------------------------------------------

def test_a_tool_reply_is_stored_part_by_part_and_loaded_back_the_same(
        store: HistoryStore, db_path: Path) -> None:
    cid, original = record_tool_exchange(store)

    [loaded] = store.load(cid).exchanges
    assert loaded.reply.parts == original.reply.parts
    assert loaded.reply.parts[4] == ToolCall("call_2", "files__read", "{not json")
    assert loaded.reply.parts[0] == Reasoning("The user wants the time.",
                                              "EqQBCkYIBxgCKkD-signature", None, "openai")
    assert loaded.reply.text == "Let me check. It is 11:00 in Paris."
    assert loaded.reply.reasoning == "The user wants the time."
    assert (loaded.reply.status, loaded.reply.usage) == (Status.COMPLETE, Usage(120, 30))
    assert (loaded.prompt, loaded.attachments) == (original.prompt, original.attachments)
    assert loaded.attachments[1].data == PNG.data
    assert loaded.message_ids is not None
    # The row keeps the joined text for lists and previews, and each text once.
    [(text, reasoning, parts, tools)] = rows(
        db_path, "SELECT text, reasoning, parts, tools FROM messages WHERE role = 'assistant'")
    assert (text, reasoning) == ("Let me check. It is 11:00 in Paris.",
                                 "The user wants the time.")
    assert isinstance(parts, str) and "Paris." not in parts
    assert tools == ('time__get_current_time {"timezone":  "Europe/Paris" }\n'
                     "files__read {not json\n2024-05-01T11:00:00+02:00\n"
                     "Invalid arguments: not JSON.")


def test_a_plain_message_stores_no_parts_as_v2_rows_did(store: HistoryStore,
                                                        db_path: Path) -> None:
    record = store.new_conversation()
    record.user_prompt("hi", MODEL).finish(Reply(initial_text="hello", status=Status.COMPLETE))
    assert rows(db_path, "SELECT role, text, parts FROM messages ORDER BY seq") == [
        ("user", "hi", None), ("assistant", "hello", None)]


def test_checkpoints_store_the_parts_streamed_so_far(store: HistoryStore,
                                                     db_path: Path) -> None:
    recorder = store.new_conversation().user_prompt("time?", MODEL)
    reply = Reply(model=MODEL.model, provider=MODEL.provider, status=Status.STREAMING)
    reply.add_text("Checking. ")
    reply.add(CALL)
    recorder.checkpoint(reply)
    # Another process reading now (a reopened TUI, `--show`) sees the call already.
    with HistoryStore.open(db_path) as other:
        stored = other.get(other.last_conversation_id() or 0).messages[1]
    assert stored.status == "streaming"
    assert stored.parts == (Text("Checking. "), CALL)
    reply.add(ToolResult("call_1", "11:00"))
    reply.add_text("It is 11")
    recorder.checkpoint(reply)
    assert store.get(1).messages[1].parts == (Text("Checking. "), CALL,
                                              ToolResult("call_1", "11:00"), Text("It is 11"))


def test_lone_surrogates_in_any_part_never_reach_sqlite(store: HistoryStore) -> None:
    said: list[str] = []
    store.warn = said.append
    reply = Reply(model="m", provider="anthropic", status=Status.STREAMING)
    reply.add_reasoning("think \ud83c")
    reply.sign_reasoning("sig\udf89", None)
    reply.add(ToolCall("c\ud800", "tool", '{"q": "\ud83c"}'))
    reply.add(ToolResult("c\ud800", "half \udf89 emoji", True, ToolOutcome.ERROR))
    reply.add_text("end \ud83c\udf89")
    reply.status = Status.COMPLETE
    record = store.new_conversation()
    record.user_prompt("q \udc00", MODEL, (attachment(b"x", "n\ud800.txt"),)).finish(reply)

    assert said == []
    [exchange] = store.load(record.id or 0).exchanges
    assert exchange.reply.parts == [repaired_part(part) for part in reply.parts]
    assert exchange.reply.parts[1] == ToolCall("c\ufffd", "tool", '{"q": "\ufffd"}')
    assert exchange.reply.text == "end 🎉"
    assert (exchange.prompt, exchange.attachments[0].name) == ("q \ufffd", "n\ufffd.txt")


# -- found ---------------------------------------------------------------------------------

def test_search_finds_tool_names_arguments_and_results(store: HistoryStore) -> None:
    cid, _ = record_tool_exchange(store)
    store.new_conversation().user_prompt("Europe trip", MODEL).finish(
        Reply(initial_text="Go to Rome.", status=Status.COMPLETE))

    assert [(h.conversation_id, h.role) for h in store.search("get_current_time")] == [
        (cid, "assistant")]
    assert [h.conversation_id for h in store.search("2024-05-01T11")] == [cid]
    [hit] = store.search("invalid arguments")
    assert "[Invalid] [arguments]: not JSON." in hit.snippet
    assert {h.conversation_id for h in store.search("europe")} == {cid, cid + 1}
    assert hit.message_id == store.get(cid).messages[1].id


# -- attachments ----------------------------------------------------------------------------

def test_a_file_attached_twice_is_stored_once(store: HistoryStore, db_path: Path) -> None:
    notes = attachment(b"the same bytes\n" * 1000)
    record = store.new_conversation()
    for name in ("notes.md", "copy-of-notes.md"):
        renamed = Attachment(name, notes.media_type, notes.kind, notes.digest, notes.size,
                             notes.data)
        record.user_prompt(f"read {name}", MODEL, (renamed, PNG)).finish(
            Reply(initial_text="ok", status=Status.COMPLETE))
    other = store.new_conversation()
    other.user_prompt("again", MODEL, (notes,)).finish(
        Reply(initial_text="ok", status=Status.COMPLETE))

    assert rows(db_path, "SELECT digest, size, media_type FROM blobs ORDER BY size") == [
        (PNG.digest, PNG.size, "image/png"), (notes.digest, notes.size, "text/plain")]
    assert rows(db_path, "SELECT sum(length(data)) FROM blobs") == [(notes.size + PNG.size,)]
    first, second = store.load(record.id or 0).exchanges
    assert [a.name for a in second.attachments] == ["copy-of-notes.md", "shot.png"]
    assert second.attachments[0].data == notes.data and first.attachments[1] == PNG
    # Without the bytes asked for, a listing or a preview reads only names and sizes.
    assert store.get(record.id or 0).messages[0].attachments[0].data == b""


def test_a_files_bytes_go_with_the_last_conversation_that_had_it(
        store: HistoryStore, db_path: Path) -> None:
    shared, own = attachment(b"shared"), attachment(b"only here")
    keep, drop = store.new_conversation(), store.new_conversation()
    keep.user_prompt("a", MODEL, (shared,)).finish(Reply(status=Status.COMPLETE))
    drop.user_prompt("b", MODEL, (shared, own)).finish(Reply(status=Status.COMPLETE))

    store.delete(drop.id or 0)
    assert rows(db_path, "SELECT digest FROM blobs") == [(shared.digest,)]
    store.delete(keep.id or 0)
    assert rows(db_path, "SELECT count(*) FROM blobs") == [(0,)]
    assert rows(db_path, "SELECT count(*) FROM message_blobs") == [(0,)]


def test_the_files_live_in_the_private_database(store: HistoryStore, db_path: Path) -> None:
    store.new_conversation().user_prompt("x", MODEL, (PNG,))
    files = list(db_path.parent.iterdir())
    assert {p.name for p in files} <= {"history.db", "history.db-wal", "history.db-shm"}
    assert all(p.stat().st_mode & 0o077 == 0 for p in files)
    assert rows(db_path, "SELECT data FROM blobs") == [(PNG.data,)]


# -- replayed exactly ----------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_reopened_tool_exchange_is_sent_exactly_as_the_live_one(
        provider: str, provider_server: ProviderServer, store: HistoryStore) -> None:
    model = model_for(provider_server, provider)
    cid, original = record_tool_exchange(store, model)
    provider_server.queue(Script(text="Later."), Script(text="Later."))

    live = Conversation(model, exchanges=[original])
    await live.send("And in Tokyo?")
    reopened = Conversation(model, exchanges=store.load(cid).exchanges)
    await reopened.send("And in Tokyo?")
    await live.aclose()
    await reopened.aclose()

    sent, resent = provider_server.requests
    assert resent.body == sent.body
    wire = json.dumps(resent.body)
    for expected in ("call_1", "2024-05-01T11:00:00+02:00", "Invalid arguments: not JSON.",
                     "Paris is UTC+2 in May.", base64.b64encode(PNG.data).decode()[:64]):
        assert expected in wire
    if provider == "anthropic":
        assert "EqQBCkYIBxgCKkD-signature" in wire and "opaque-redacted-data" in wire


def test_continue_after_a_tool_turn_resends_it_exactly(provider_server: ProviderServer,
                                                       tmp_path: Path) -> None:
    # How a run with only OPENAI_BASE_URL set names its model, and so resolves it again.
    model = ModelConfig(name="openai:gpt-4.1-mini", provider="openai", model="gpt-4.1-mini",
                        base_url=provider_server.openai_base_url, api_key="test-key",
                        max_retries=0)
    env = environment(tmp_path, provider_server)
    with HistoryStore.open(tmp_path / "data" / "termchat" / "history.db") as store:
        _, original = record_tool_exchange(store, model)
    provider_server.queue(Script(text="Later."), Script(text="Later."))

    async def send_live() -> None:
        live = Conversation(model, exchanges=[original])
        await live.send("And in Tokyo?")
        await live.aclose()

    asyncio.run(send_live())
    run = termchat(["-c", "And in Tokyo?"], env)
    assert (run.returncode, run.stderr) == (0, b"")
    sent, resent = provider_server.requests
    assert resent.body["messages"] == sent.body["messages"]
    assert [m["role"] for m in resent.body["messages"]] == [
        "user", "assistant", "tool", "tool", "assistant", "user"]


# -- the encoding, for any parts -----------------------------------------------------------

texts = st.text(max_size=30)
parts = st.lists(st.one_of(
    st.builds(Text, texts),
    st.builds(Reasoning, texts, st.none() | texts, st.none() | texts, texts),
    st.builds(ToolCall, texts, texts, texts),
    st.builds(ToolResult, texts, texts, st.booleans(), st.sampled_from(ToolOutcome)),
    st.builds(attachment, st.binary(max_size=20), texts),
), max_size=8)


@pytest.mark.fuzz
@given(parts)
def test_any_parts_come_back_from_their_row_exactly(given_parts: list[Part]) -> None:
    stored = columns(given_parts)
    blobs = {a.digest: a.data for a in stored.attachments}
    expected = [repaired_part(part) for part in given_parts]
    if len(expected) <= 1 and all(isinstance(part, Text) for part in expected):
        expected = [part for part in expected if isinstance(part, Text) and part.text]
    assert list(stored_parts(stored.text, stored.reasoning, stored.parts, blobs)) == expected


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 50) | texts,
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(texts, inner, max_size=3), max_leaves=6)
KEYS = ("chars", "text", "id", "name", "arguments", "call_id", "content", "is_error",
        "outcome", "digest", "size", "kind", "media_type", "provider", "signature", "redacted")
garbage_parts = st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "reasoning", "tool_call", "tool_result", "attachment",
                              "other"])},
    optional={key: json_values for key in KEYS}), max_size=4)


@pytest.mark.fuzz
@given(st.text(max_size=40), st.text(max_size=10),
       st.one_of(st.text(max_size=40), garbage_parts.map(json.dumps), json_values.map(json.dumps)))
def test_a_damaged_parts_value_is_read_without_failing(text: str, reasoning: str,
                                                       encoded: str) -> None:
    """A row edited by hand or cut short: its parts, or its text as its only part."""
    loaded = stored_parts(text, reasoning, encoded)
    assert all(isinstance(p, Text | Reasoning | ToolCall | ToolResult | Attachment)
               for p in loaded)
    try:
        valid = isinstance(json.loads(encoded), list)
    except ValueError:
        valid = False
    if not valid:
        assert loaded == ((Text(text),) if text else ())
