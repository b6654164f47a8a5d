"""History: nothing is lost, everything is findable, and a broken database never stops a chat."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from termchat import turn
from termchat.config import ModelConfig
from termchat.errors import RateLimitedError, StreamInterruptedError
from termchat.events import Event, Finish, FinishKind, TextDelta, Usage
from termchat.history import (
    SCHEMA_VERSION,
    ConversationNotFound,
    ConversationRecord,
    HistoryStore,
    HistoryUnavailable,
    as_json,
    as_markdown,
    open_or_warn,
)
from termchat.providers import ChatRequest
from termchat.turn import Conversation, Reply, Status

MODEL = ModelConfig(name="gpt", provider="openai", model="gpt-4.1-mini")
NOBODY = 65534


@pytest.fixture(autouse=True)
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "data" / "termchat" / "history.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore.open() as opened:
        yield opened


def other_connection(path: Path) -> sqlite3.Connection:
    """A second, independent reader, as another termchat process would be."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def rows(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with other_connection(path) as db:
        return db.execute(sql, params).fetchall()


def ended(text: str, status: Status, **fields: object) -> Reply:
    reply = Reply(model=MODEL.model, provider=MODEL.provider, initial_text=text, status=status,
                  **fields)
    reply.first_token_at = reply.started_at + 0.25
    reply.ended_at = reply.started_at + 2.0
    return reply


def chat(store: HistoryStore, prompt: str, answer: str,
         record: ConversationRecord | None = None) -> int:
    """One complete exchange in a conversation (a new one unless `record` is given)."""
    record = record or store.new_conversation()
    record.user_prompt(prompt, MODEL).finish(
        ended(answer, Status.COMPLETE, finish=Finish.from_raw("stop"), usage=Usage(12, 34)))
    assert record.id is not None
    return record.id


def in_child(action: Callable[[], str], *, unprivileged: bool = False) -> str:
    """Run `action` in a forked process (as `nobody` when asked and we are root); its result.

    Root ignores file permissions, so permission tests drop root instead of skipping.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            if unprivileged and os.geteuid() == 0:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            result = action()
        except BaseException as exc:
            result = f"raised {type(exc).__name__}: {exc}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        output = pipe.read().decode()
    os.waitpid(pid, 0)
    return output


def unavailable_line(**open_args: object) -> str:
    try:
        HistoryStore.open(**open_args).close()
    except HistoryUnavailable as exc:
        return exc.message
    return "opened"


def assert_one_warning_line(message: str) -> None:
    assert message.startswith("history is off for this run: ")
    assert message.endswith("; chatting continues without it")
    assert "\n" not in message and "Traceback" not in message


# -- nothing is lost ----------------------------------------------------------------------

def test_prompt_is_committed_before_the_request_is_sent(store: HistoryStore,
                                                        db_path: Path) -> None:
    record = store.new_conversation()
    record.user_prompt("  \nWhy is the sky blue? Explain it to a child, with an example "
                       "about sunsets.\nSecond line", MODEL)

    assert rows(db_path, "SELECT id, title, model FROM conversations") == [
        (record.id, "Why is the sky blue? Explain it to a child, with an example…", "gpt")]
    assert rows(db_path, "SELECT seq, role, substr(text, 1, 20), status, model, provider "
                         "FROM messages ORDER BY seq") == [
        (0, "user", "  \nWhy is the sky bl", "complete", "gpt-4.1-mini", "openai"),
        (1, "assistant", "", "streaming", "gpt-4.1-mini", "openai"),
    ]


def test_checkpoints_are_visible_to_another_process_while_the_reply_streams(
        store: HistoryStore, db_path: Path) -> None:
    recorder = store.new_conversation().user_prompt("count", MODEL)
    reply = Reply(model=MODEL.model, provider=MODEL.provider, status=Status.STREAMING)
    seen = []
    for word in ("one", " two", " three"):
        reply.add_text(word)
        recorder.checkpoint(reply)
        seen += rows(db_path, "SELECT text, status FROM messages WHERE role = 'assistant'")
    assert seen == [("one", "streaming"), ("one two", "streaming"),
                    ("one two three", "streaming")]


@pytest.mark.parametrize(("status", "error"), [
    (Status.CANCELLED, None),
    (Status.ERROR, RateLimitedError("Rate limited by openai; wait and retry.")),
    (Status.INTERRUPTED, StreamInterruptedError("The connection dropped mid-reply.")),
])
def test_a_reply_that_ends_early_keeps_its_partial_text_and_says_how_it_ended(
        store: HistoryStore, status: Status, error: Exception | None) -> None:
    record = store.new_conversation()
    recorder = record.user_prompt("write a poem", MODEL)
    recorder.checkpoint(ended("Roses are", Status.STREAMING))
    recorder.finish(ended("Roses are red,", status, error=error, usage=Usage(None, 5)))

    [exchange] = store.load(record.id).exchanges
    assert exchange.prompt == "write a poem"
    assert exchange.reply.text == "Roses are red,"
    assert exchange.reply.status is status
    assert exchange.reply.usage == Usage(None, 5)
    assert exchange.reply.ttft == pytest.approx(0.25)
    assert exchange.reply.elapsed == pytest.approx(2.0)
    if error is None:
        assert exchange.reply.error is None
    else:
        assert type(exchange.reply.error) is type(error)
        assert str(exchange.reply.error) == str(error)


def test_a_reply_stopped_by_an_unexpected_failure_is_recorded_as_interrupted(
        store: HistoryStore) -> None:
    record = store.new_conversation()
    record.user_prompt("hi", MODEL).finish(ended("Hel", Status.STREAMING))
    assert store.get(record.id).messages[1].status == "interrupted"


def test_a_refusal_that_ended_with_a_plain_stop_is_still_a_refusal_when_loaded(
        store: HistoryStore) -> None:
    record = store.new_conversation()
    record.user_prompt("something awful", MODEL).finish(
        ended("I can't help with that.", Status.COMPLETE,
              finish=Finish("stop", FinishKind.REFUSAL)))
    reply = store.load(record.id).exchanges[0].reply
    assert reply.finish == Finish("stop", FinishKind.REFUSAL)
    assert "the model refused" in as_markdown(store.get(record.id))


async def test_a_loaded_conversation_continues_with_its_earlier_turns(
        store: HistoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = FakeProvider(["Paris."])
    monkeypatch.setattr(turn, "open_provider", provider.open)
    keys = {"OPENAI_API_KEY": "k"}
    conversation = Conversation(MODEL, history=store.new_conversation(), key_env=keys)
    await conversation.send("Capital of France?")
    cid = store.last_conversation_id()
    assert cid is not None

    loaded = store.load(cid)
    assert (loaded.model, loaded.label) == ("gpt", "openai:gpt-4.1-mini")
    provider.answers = ["About 2.1 million."]
    again = Conversation(MODEL, exchanges=loaded.exchanges, history=store.resume(cid),
                         key_env=keys)
    await again.send("And its population?")

    assert [m.text for m in provider.requests[-1].messages] == [
        "Capital of France?", "Paris.", "And its population?"]
    assert [(m.seq, m.role, m.text) for m in store.get(cid).messages] == [
        (0, "user", "Capital of France?"), (1, "assistant", "Paris."),
        (2, "user", "And its population?"), (3, "assistant", "About 2.1 million.")]
    assert store.get(cid).messages[3].usage == Usage(7, 3)


def test_a_killed_writer_leaves_its_partial_reply_interrupted(db_path: Path) -> None:
    HistoryStore.open().close()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        store = HistoryStore.open()
        record = store.new_conversation()
        recorder = record.user_prompt("tell me a long story", MODEL)
        recorder.checkpoint(ended("Once upon a time", Status.STREAMING))
        os.write(write, str(record.id).encode())
        time.sleep(60)
        os._exit(1)
    os.close(write)
    cid = int(os.read(read, 100))
    os.close(read)
    assert rows(db_path, "SELECT status FROM messages WHERE seq = 1") == [("streaming",)]
    os.kill(pid, signal.SIGKILL)
    if not Path("/proc/self/stat").exists():
        os.waitpid(pid, 0)

    # Unreaped, the killed process is a zombie for a while: it must count as gone already.
    # The signal takes a moment to land: wait until an opening's sweep has seen it land.
    deadline = time.monotonic() + 5
    while True:
        with HistoryStore.open() as store:
            [exchange] = store.load(cid).exchanges
        swept = rows(db_path, "SELECT status FROM messages WHERE seq = 1") == [("interrupted",)]
        if swept or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    os.waitpid(pid, 0)
    assert exchange.prompt == "tell me a long story"
    assert (exchange.reply.status, exchange.reply.text) == (Status.INTERRUPTED,
                                                            "Once upon a time")
    assert exchange.in_context
    assert rows(db_path, "SELECT status, text FROM messages WHERE seq = 1") == [
        ("interrupted", "Once upon a time")]


def test_a_live_writers_reply_stays_streaming_but_an_abandoned_one_is_interrupted(
        store: HistoryStore, db_path: Path) -> None:
    live = store.new_conversation()
    live.user_prompt("still going", MODEL).checkpoint(ended("so far", Status.STREAMING))
    abandoned = store.new_conversation()
    abandoned.user_prompt("long ago", MODEL)
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE messages SET updated = updated - 3600 WHERE conversation_id = ?",
                   (abandoned.id,))
    db.close()

    with HistoryStore.open() as other:
        assert other.get(live.id).messages[1].status == "streaming"
        assert other.get(abandoned.id).messages[1].status == "interrupted"
    assert rows(db_path, "SELECT conversation_id, status FROM messages WHERE seq = 1 "
                         "ORDER BY conversation_id") == [
        (live.id, "streaming"), (abandoned.id, "interrupted")]


def test_two_processes_writing_at_once_both_succeed(db_path: Path) -> None:
    HistoryStore.open().close()
    with HistoryStore.open() as store:
        shared = chat(store, "shared start", "ok")

    def writer(name: str) -> Callable[[], str]:
        def run() -> str:
            warnings: list[str] = []
            with HistoryStore.open(warn=warnings.append) as store:
                own, common = store.new_conversation(), store.resume(shared)
                for i in range(25):
                    for record in (own, common):
                        recorder = record.user_prompt(f"{name} asks {i}", MODEL)
                        reply = Reply(status=Status.STREAMING)
                        for word in ("reply", " to", f" {name}", f" {i}"):
                            reply.add_text(word)
                            recorder.checkpoint(reply)
                        reply.status = Status.COMPLETE
                        recorder.finish(reply)
            return json.dumps(warnings)
        return run

    pids = []
    for name in ("alpha", "beta"):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            os.write(write, writer(name)().encode())
            os._exit(0)
        os.close(write)
        pids.append((pid, read))
    for pid, read in pids:
        with os.fdopen(read, "rb") as pipe:
            assert json.loads(pipe.read()) == []
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0

    with HistoryStore.open() as store:
        conversations = store.list_conversations()
        assert sorted(c.message_count for c in conversations) == [50, 50, 102]
        messages = store.get(shared).messages
    # Each prompt is followed by its own reply, however the two writers interleaved.
    for prompt, reply in zip(messages[2::2], messages[3::2], strict=True):
        name, _, i = prompt.text.split()
        assert reply.text == f"reply to {name} {i}" and reply.status == "complete"


# -- old, odd and broken databases --------------------------------------------------------

VERSION_1 = (
    """CREATE TABLE conversations (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL,
        model TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL)""",
    "CREATE INDEX conversations_by_updated ON conversations (updated, id)",
    """CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id INTEGER NOT NULL
        REFERENCES conversations (id) ON DELETE CASCADE, seq INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text TEXT NOT NULL DEFAULT '', reasoning TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '', provider TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL CHECK (status IN
            ('complete', 'cancelled', 'error', 'interrupted', 'streaming')),
        finish_reason TEXT, finish_kind TEXT, input_tokens INTEGER, output_tokens INTEGER,
        cached_tokens INTEGER,
        reasoning_tokens INTEGER, ttft REAL, duration REAL, error TEXT, error_kind TEXT,
        writer_host TEXT, writer_pid INTEGER, created REAL NOT NULL, updated REAL NOT NULL,
        UNIQUE (conversation_id, seq))""",
    "CREATE INDEX messages_streaming ON messages (id) WHERE status = 'streaming'",
)


def test_a_version_1_database_without_search_is_migrated_with_its_data_intact(
        db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:
        for statement in VERSION_1:
            db.execute(statement)
        db.execute("INSERT INTO conversations VALUES (7, 'Old chat', 'claude', 100.0, 200.0)")
        db.executemany(
            "INSERT INTO messages (conversation_id, seq, role, text, model, provider, status, "
            "finish_reason, output_tokens, created, updated) VALUES (7, ?, ?, ?, "
            "'claude-sonnet-4-5', 'anthropic', ?, ?, ?, ?, ?)",
            [(0, "user", "What is a marmot?", "complete", None, None, 100.0, 100.0),
             (1, "assistant", "A large ground squirrel.", "complete", "end_turn", 6, 101.0,
              102.0)])
        db.execute("PRAGMA user_version = 1")
    db.close()

    with HistoryStore.open() as store:
        [exchange] = store.load(7).exchanges
        assert (exchange.prompt, exchange.reply.text) == ("What is a marmot?",
                                                           "A large ground squirrel.")
        assert exchange.reply.finish == Finish.from_raw("end_turn")
        assert exchange.reply.usage.output_tokens == 6
        assert [(h.conversation_id, h.role) for h in store.search("marmot")] == [(7, "user")]
        assert [h.seq for h in store.search("squirrel")] == [1]
        chat(store, "Do they hibernate?", "Yes.", store.resume(7))
        assert [m.seq for m in store.get(7).messages] == [0, 1, 2, 3]
    assert rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(db_path, "PRAGMA journal_mode") == [("wal",)]


def test_a_database_from_a_newer_termchat_is_left_alone(db_path: Path) -> None:
    HistoryStore.open().close()
    with sqlite3.connect(db_path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    line = unavailable_line()
    assert_one_warning_line(line)
    assert "newer termchat" in line


def test_a_location_that_cannot_hold_files_turns_history_off_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A path below a regular file cannot be created, even by root.
    (tmp_path / "plain-file").write_text("")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "plain-file"))
    line = unavailable_line()
    assert_one_warning_line(line)
    assert f"{tmp_path / 'plain-file'} is not a directory" in line


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory under the system temp dir, which an unprivileged user can reach."""
    path = Path(tempfile.mkdtemp())
    path.chmod(0o755)
    yield path
    for inner in (path, *path.rglob("*")):
        inner.chmod(0o755 if inner.is_dir() else 0o644)
    shutil.rmtree(path)


def test_a_read_only_directory_turns_history_off_with_one_line(reachable_dir: Path) -> None:
    directory = reachable_dir / "termchat"
    directory.mkdir()
    directory.chmod(0o555)
    line = in_child(lambda: unavailable_line(path=directory / "history.db"), unprivileged=True)
    assert_one_warning_line(line)
    assert f"check permissions of {directory}" in line
    assert not (directory / "history.db").exists()


def test_a_read_only_database_file_turns_history_off_with_one_line(
        reachable_dir: Path) -> None:
    path = reachable_dir / "history.db"
    with HistoryStore.open(path) as store:
        chat(store, "hello", "hi")
    reachable_dir.chmod(0o777)
    path.chmod(0o444)
    line = in_child(lambda: unavailable_line(path=path), unprivileged=True)
    assert_one_warning_line(line)
    assert f"{path} is read-only" in line


def test_a_locked_database_turns_history_off_after_the_timeout(db_path: Path) -> None:
    HistoryStore.open().close()
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        start = time.monotonic()
        line = unavailable_line(timeout=0.2)
        waited = time.monotonic() - start
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_one_warning_line(line)
    assert "is locked by another process (waited 0.2 s)" in line
    assert 0.2 <= waited < 2
    HistoryStore.open().close()


@pytest.mark.parametrize("garbage", [b"\x00\xffnot sqlite" * 500, b"hello world\n" * 400])
def test_a_corrupt_file_turns_history_off_with_one_line(db_path: Path, garbage: bytes) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(garbage)
    line = unavailable_line()
    assert_one_warning_line(line)
    assert "is corrupt or not a database" in line
    assert db_path.read_bytes() == garbage


def test_a_disk_that_refuses_writes_turns_history_off_with_one_line(db_path: Path) -> None:
    def open_with_no_room() -> str:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        return unavailable_line()

    assert_one_warning_line(in_child(open_with_no_room))


def test_open_or_warn_says_why_once_and_returns_nothing(db_path: Path) -> None:
    said: list[str] = []
    assert open_or_warn(False, said.append) is None
    assert not db_path.exists() and said == []

    store = open_or_warn(True, said.append)
    assert store is not None and said == []
    store.close()

    db_path.write_bytes(b"garbage" * 1000)
    assert open_or_warn(True, said.append) is None
    assert len(said) == 1
    assert_one_warning_line(said[0])


def test_failed_writes_during_a_chat_warn_once_and_never_raise(db_path: Path) -> None:
    said: list[str] = []
    with HistoryStore.open(timeout=0.2, warn=said.append) as store:
        record = store.new_conversation()
        recorder = record.user_prompt("first", MODEL)
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        start = time.monotonic()
        for text in ("p", "pa", "par", "part"):
            recorder.checkpoint(ended(text, Status.STREAMING))
        # Only the first checkpoint waits for the lock: the chat stalls once, not every second.
        assert time.monotonic() - start < 0.5
        recorder.finish(ended("partial", Status.COMPLETE))
        record.user_prompt("second", MODEL).finish(ended("lost", Status.COMPLETE))
        holder.execute("ROLLBACK")
        holder.close()
        chat(store, "third", "saved", record)

        assert len(said) == 1
        assert said[0].startswith("history: saving failed: ")
        assert "locked by another process" in said[0] and "\n" not in said[0]
        assert [m.text for m in store.get(record.id).messages] == [
            "first", "", "third", "saved"]


# -- finding, managing, exporting ---------------------------------------------------------

def test_search_finds_words_from_prompts_and_replies_best_match_first(
        store: HistoryStore) -> None:
    eggs = chat(store, "Egg recipes?", "Egg: boil the egg.")
    rivers = chat(store, "Tell me about rivers",
                  "The Nile is the longest river in Africa; it floods every summer, and once "
                  "someone lost an egg in it while crossing by boat near Aswan.")
    chat(store, "Unrelated", "Nothing here.")

    hits = store.search("egg")
    assert [(h.conversation_id, h.seq) for h in hits] == [(eggs, 1), (eggs, 0), (rivers, 1)]
    assert hits[0].snippet == "[Egg]: boil the [egg]."
    assert hits[2].title == "Tell me about rivers" and hits[2].role == "assistant"
    assert [h.seq for h in store.search("NILE longest")] == [1]
    assert [h.conversation_id for h in store.search("riv*")] == [rivers, rivers]
    assert store.search("marmot") == []
    assert store.search("egg", limit=1) == hits[:1]


@pytest.mark.parametrize("query", ['foo"bar', "-x", '"', "*", "a OR b", "NOT", "(egg",
                                   "text:egg", "^egg", "egg AND", "NEAR(egg", "'", ""])
def test_search_treats_quotes_and_operators_as_plain_text(store: HistoryStore,
                                                          query: str) -> None:
    chat(store, 'Say foo"bar and -x and (egg)', "text: NOT a OR b")
    assert isinstance(store.search(query), list)


def test_search_with_operator_words_matches_them_literally(store: HistoryStore) -> None:
    chat(store, 'Say foo"bar please', "fine")
    chat(store, "Cats NOT dogs", "ok")
    assert [h.seq for h in store.search('foo"bar')] == [0]
    assert len(store.search("cats NOT")) == 1


def test_conversations_are_listed_most_recent_first_with_counts_and_previews(
        store: HistoryStore) -> None:
    first = chat(store, "Plan a trip to Rome", "Day one:\n  the Colosseum.")
    second = chat(store, "Fix my regex", "Use a raw string.")
    chat(store, "Thanks", "You're welcome.", store.resume(first))

    listed = store.list_conversations()
    assert [(c.id, c.title, c.message_count, c.preview) for c in listed] == [
        (first, "Plan a trip to Rome", 4, "You're welcome."),
        (second, "Fix my regex", 2, "Use a raw string."),
    ]
    assert listed[0].updated >= listed[1].updated
    assert store.last_conversation_id() == first
    assert [c.id for c in store.list_conversations(limit=1, offset=1)] == [second]
    assert [c.id for c in store.list_conversations(query="REGEX")] == [second]
    assert store.list_conversations(query="%") == []


def test_rename_and_delete(store: HistoryStore, db_path: Path) -> None:
    keep = chat(store, "Keep this about otters", "Otters hold hands.")
    gone = chat(store, "Delete this about badgers", "Badgers dig.")
    store.rename(keep, "  Otter facts  ")
    assert store.get(keep).title == "Otter facts"

    store.delete(str(gone))
    assert [c.id for c in store.list_conversations()] == [keep]
    assert store.search("badgers") == []
    assert rows(db_path, "SELECT count(*) FROM messages WHERE conversation_id = ?", gone) == [
        (0,)]
    assert rows(db_path, "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH "
                         "'badgers'") == [(0,)]
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    db.close()
    for action in (store.get, store.delete, store.resume, store.load,
                   lambda cid: store.rename(cid, "x")):
        with pytest.raises(ConversationNotFound, match=f"No conversation {gone} "):
            action(gone)
    with pytest.raises(ConversationNotFound, match="No conversation abc "):
        store.get("abc")
    assert chat(store, "A new one", "ok") != gone


def test_export_json_round_trips_what_was_stored(store: HistoryStore) -> None:
    record = store.new_conversation()
    record.user_prompt("Sum 2+2", MODEL).finish(ended(
        "4", Status.COMPLETE, finish=Finish.from_raw("stop"), usage=Usage(10, 1, 2, 0),
        reasoning="Adding."))
    record.user_prompt("Now a novel", MODEL).finish(ended(
        "Chapter 1", Status.ERROR, error=RateLimitedError("Slow down."), usage=Usage(20)))

    exported = json.loads(json.dumps(as_json(store.tree(record.id, blobs=True))))
    assert (exported["id"], exported["title"], exported["model"]) == (record.id, "Sum 2+2",
                                                                      "gpt")
    assert [(m["seq"], m["role"], m["text"], m["status"]) for m in exported["messages"]] == [
        (0, "user", "Sum 2+2", "complete"), (1, "assistant", "4", "complete"),
        (2, "user", "Now a novel", "complete"), (3, "assistant", "Chapter 1", "error")]
    first, second = exported["messages"][1], exported["messages"][3]
    assert first["reasoning"] == "Adding."
    assert (first["finish_reason"], first["finish_kind"]) == ("stop", "complete")
    assert first["usage"] == {"input_tokens": 10, "output_tokens": 1, "cached_tokens": 2,
                              "reasoning_tokens": 0}
    assert (first["model"], first["provider"]) == ("gpt-4.1-mini", "openai")
    assert first["ttft"] == pytest.approx(0.25) and first["duration"] == pytest.approx(2.0)
    assert (second["error"], second["error_kind"]) == ("Slow down.", "rate-limit")
    assert second["usage"]["output_tokens"] is None
    stored = store.get(record.id)
    for message, data in zip(stored.messages, exported["messages"], strict=True):
        assert message.to_json() == data
        assert time.time() - 60 < _parse_iso(data["created"]) <= _parse_iso(data["updated"])


def _parse_iso(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_export_markdown_contains_every_message(store: HistoryStore) -> None:
    record = store.new_conversation()
    chat(store, "Name a colour", "Teal.", record)
    record.user_prompt("And a shape?", MODEL).finish(ended("Hexa", Status.CANCELLED))
    markdown = as_markdown(store.get(record.id))
    assert markdown.startswith("# Name a colour\n")
    for text in ("## User\n\nName a colour", "Teal.", "## User\n\nAnd a shape?", "Hexa",
                 "## Assistant (openai:gpt-4.1-mini)", "*cancelled · "):
        assert text in markdown
    assert markdown.index("Teal.") < markdown.index("And a shape?") < markdown.index("Hexa")


async def test_api_keys_never_reach_the_database_files(
        store: HistoryStore, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-proj-SECRETSECRETSECRET-1234567890abcdef"
    provider = FakeProvider(["Hello!"])
    monkeypatch.setattr(turn, "open_provider", provider.open)
    model = ModelConfig(name="local", provider="openai", model="m", api_key=key,
                        base_url="http://127.0.0.1:9/v1")
    conversation = Conversation(model, history=store.new_conversation())
    await conversation.send("hi")
    assert provider.keys == [key]
    assert store.list_conversations()[0].model == "local"

    files = [p for p in db_path.parent.iterdir() if p.name.startswith("history.db")]
    assert {p.name for p in files} >= {"history.db", "history.db-wal"}
    for path in files:
        data = path.read_bytes()
        assert key.encode() not in data and key[:12].encode() not in data


def test_the_history_file_is_private(store: HistoryStore, db_path: Path) -> None:
    chat(store, "secret plans", "ok")
    assert db_path.stat().st_mode & 0o077 == 0
    assert db_path.parent.stat().st_mode & 0o077 == 0


class FakeProvider:
    """Streams canned answers and remembers what it was asked and with which key."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.requests: list[ChatRequest] = []
        self.keys: list[str] = []
        self.model: ModelConfig | None = None

    def open(self, model: ModelConfig, key: str) -> FakeProvider:
        self.model = model
        self.keys.append(key)
        return self

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        self.requests.append(request)
        answer = self.answers.pop(0)
        for start in range(0, len(answer), 4):
            yield TextDelta(answer[start:start + 4])
        yield Usage(input_tokens=7, output_tokens=3)
        yield Finish.from_raw("stop")

    async def aclose(self) -> None:
        pass
