"""History schema v3 from a database the current release (schema v2) wrote: every stored
conversation is readable, searchable and continuable after the migration, each one branch;
and a v3 database that may only be read still lists and shows."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from termchat import turn
from termchat.config import Config, ModelConfig
from termchat.events import Event, Finish, TextDelta, Usage
from termchat.history import (
    MIGRATIONS,
    SCHEMA_VERSION,
    HistoryStore,
    as_json,
    as_markdown,
    continue_conversation,
)
from termchat.history.liveness import host_name
from termchat.providers import ChatRequest
from termchat.turn import Exchange, Status

NOBODY = 65534
T0 = 1714554000.0  # 2024-05-01 09:00 UTC

# The statements of schema versions 1 and 2 exactly as termchat 0.1 (schema 2) runs them.
V2_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            title TEXT NOT NULL,
            model TEXT NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL
        )""",
        "CREATE INDEX conversations_by_updated ON conversations (updated, id)",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL
                REFERENCES conversations (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            text TEXT NOT NULL DEFAULT '',
            reasoning TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '',
            provider TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL CHECK (status IN
                ('complete', 'cancelled', 'error', 'interrupted', 'streaming')),
            finish_reason TEXT,
            finish_kind TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cached_tokens INTEGER,
            reasoning_tokens INTEGER,
            ttft REAL,
            duration REAL,
            error TEXT,
            error_kind TEXT,
            writer_host TEXT,
            writer_pid INTEGER,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            UNIQUE (conversation_id, seq)
        )""",
        # Partial: the startup sweep reads only the (almost always zero) rows still streaming.
        "CREATE INDEX messages_streaming ON messages (id) WHERE status = 'streaming'",
    ),
    (
        """CREATE VIRTUAL TABLE messages_fts USING fts5(
            text, content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        )""",
        """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
        END""",
        """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, text)
                VALUES ('delete', old.id, old.text);
        END""",
        """CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages
        WHEN old.text IS NOT new.text BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, text)
                VALUES ('delete', old.id, old.text);
            INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
        END""",
        "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
    ),
)


class V2Writer:
    """What the v2 recorder did, statement for statement: a prompt and an empty `streaming`
    reply in one transaction, checkpoints, and the final update."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def prompt(self, cid: int | None, title: str, model: str, text: str, provider: str,
               model_id: str, at: float, pid: int) -> tuple[int, int]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        if cid is None:
            cid = db.execute("INSERT INTO conversations (title, model, created, updated) "
                             "VALUES (?, ?, ?, ?)", (title, model, at, at)).lastrowid
        else:
            db.execute("UPDATE conversations SET model = ?, updated = ? WHERE id = ?",
                       (model, at, cid))
        seq = db.execute("SELECT coalesce(max(seq), -1) + 1 FROM messages "
                         "WHERE conversation_id = ?", (cid,)).fetchone()[0]
        insert = ("INSERT INTO messages (conversation_id, seq, role, text, model, provider, "
                  "status, writer_host, writer_pid, created, updated) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        db.execute(insert, (cid, seq, "user", text, model_id, provider, "complete", None,
                            None, at, at))
        reply = db.execute(insert, (cid, seq + 1, "assistant", "", model_id, provider,
                                    "streaming", host_name(), pid, at, at)).lastrowid
        db.execute("COMMIT")
        assert cid is not None and reply is not None
        return cid, reply

    def checkpoint(self, reply: int, text: str, at: float) -> None:
        self.db.execute(
            "UPDATE messages SET text = ?, reasoning = ?, status = 'streaming', "
            "input_tokens = ?, output_tokens = ?, cached_tokens = ?, reasoning_tokens = ?, "
            "ttft = ?, duration = ?, updated = ? WHERE id = ?",
            (text, "", None, None, None, None, 0.4, 1.0, at, reply))

    def finish(self, reply: int, text: str, status: str, at: float, *, reasoning: str = "",
               finish: tuple[str, str] | None = None, usage: Usage | None = None,
               error: tuple[str, str] | None = None) -> None:
        db, usage = self.db, usage or Usage()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "UPDATE messages SET text = ?, reasoning = ?, "
            "model = coalesce(nullif(?, ''), model), "
            "provider = coalesce(nullif(?, ''), provider), status = ?, "
            "finish_reason = ?, finish_kind = ?, input_tokens = ?, output_tokens = ?, "
            "cached_tokens = ?, reasoning_tokens = ?, ttft = ?, duration = ?, "
            "error = ?, error_kind = ?, updated = ?, writer_host = NULL, "
            "writer_pid = NULL WHERE id = ?",
            (text, reasoning, "", "", status, *(finish or (None, None)), usage.input_tokens,
             usage.output_tokens, usage.cached_tokens, usage.reasoning_tokens, 0.4, 2.0,
             *(error or (None, None)), at, reply))
        db.execute("UPDATE conversations SET updated = ? WHERE id = "
                   "(SELECT conversation_id FROM messages WHERE id = ?)", (at, reply))
        db.execute("COMMIT")


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped: a writer that died."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


GPT = ("openai:gpt-4.1-mini", "openai", "gpt-4.1-mini")
CLAUDE = ("anthropic:claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5")


def write_v2(path: Path) -> None:
    """A history as termchat 0.1 left it: a finished conversation with reasoning, a failed
    and a cancelled turn; one whose reply was still streaming when its writer died; one row
    damaged on disk (not UTF-8); and the words of each in the search index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    for statements in V2_MIGRATIONS:
        db.execute("BEGIN")
        for statement in statements:
            db.execute(statement)
        db.execute("COMMIT")
    db.execute(f"PRAGMA user_version = {len(V2_MIGRATIONS)}")
    db.execute("PRAGMA journal_mode = WAL")
    v2, pid = V2Writer(db), dead_pid()

    france, reply = v2.prompt(None, "Capital of France?", *GPT[:1], "Capital of France?",
                              GPT[1], GPT[2], T0, pid)
    v2.checkpoint(reply, "Par", T0 + 1)
    v2.finish(reply, "Paris, on the Seine.", "complete", T0 + 2, reasoning="Geography.",
              finish=("stop", "complete"), usage=Usage(12, 6, 0))
    _, reply = v2.prompt(france, "", *GPT[:1], "And its population?", GPT[1], GPT[2], T0 + 10,
                         pid)
    v2.finish(reply, "About 2", "error", T0 + 11,
              error=("Rate limited by openai; wait and retry.", "rate-limit"))
    _, reply = v2.prompt(france, "", *GPT[:1], "Its famous tower?", GPT[1], GPT[2], T0 + 20,
                         pid)
    v2.finish(reply, "The Eiffel", "cancelled", T0 + 21, usage=Usage(30, None))

    story, reply = v2.prompt(None, "Tell me a story", *CLAUDE[:1], "Tell me a story",
                             CLAUDE[1], CLAUDE[2], T0 + 100, pid)
    v2.finish(reply, "A marmot went out.", "complete", T0 + 101,
              finish=("max_tokens", "length"), usage=Usage(5, 50))
    _, reply = v2.prompt(story, "", *CLAUDE[:1], "Go on", CLAUDE[1], CLAUDE[2], T0 + 110, pid)
    v2.checkpoint(reply, "Once upon a hill", T0 + 111)

    _, reply = v2.prompt(None, "Odd bytes", *GPT[:1], "Odd bytes", GPT[1], GPT[2],
                         T0 + 200, pid)
    v2.finish(reply, "placeholder", "complete", T0 + 201, finish=("stop", "complete"))
    db.execute("UPDATE messages SET text = CAST(x'6f6b20ff20656e64' AS TEXT) WHERE id = ?",
               (reply,))
    db.close()


def v2_exchanges(path: Path, cid: int) -> list[tuple[Any, ...]]:
    """What v2's `load` gave: the n-th prompt paired with the n-th reply, in seq order."""
    db = sqlite3.connect(path)
    db.text_factory = lambda data: data.decode("utf-8", "replace")
    rows = db.execute("SELECT role, text, reasoning, status, finish_reason, input_tokens, "
                      "output_tokens, cached_tokens, error FROM messages "
                      "WHERE conversation_id = ? ORDER BY seq", (cid,)).fetchall()
    db.close()
    prompts = iter([row[1] for row in rows if row[0] == "user"])
    return [(next(prompts), *row[1:]) for row in rows if row[0] == "assistant"]


def v3_exchanges(exchanges: list[Exchange]) -> list[tuple[Any, ...]]:
    return [(e.prompt, e.reply.text, e.reply.reasoning, e.reply.status.value,
             None if e.reply.finish is None else e.reply.finish.reason,
             e.reply.usage.input_tokens, e.reply.usage.output_tokens,
             e.reply.usage.cached_tokens,
             None if e.reply.error is None else e.reply.error.message) for e in exchanges]


@pytest.fixture
def v2_path(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "termchat" / "history.db"
    write_v2(path)
    return path


def test_released_schema_versions_are_never_edited() -> None:
    assert MIGRATIONS[:2] == V2_MIGRATIONS
    assert SCHEMA_VERSION == 3


def test_every_v2_conversation_reads_the_same_after_the_migration(v2_path: Path) -> None:
    before = {cid: v2_exchanges(v2_path, cid) for cid in (1, 2, 3)}
    with HistoryStore.open(v2_path) as store:
        assert [(c.id, c.title, c.message_count) for c in store.list_conversations()] == [
            (3, "Odd bytes", 2), (2, "Tell me a story", 4), (1, "Capital of France?", 6)]
        for cid, expected in before.items():
            loaded = v3_exchanges(store.load(cid).exchanges)
            if cid == 2:
                # The reply whose writer died is interrupted, as v2 showed it too.
                assert expected[1][3] == "streaming"
                expected[1] = (*expected[1][:3], "interrupted", *expected[1][4:])
            assert loaded == expected
        france = store.get(1).messages
        assert [(m.role, m.text, m.status) for m in france] == [
            ("user", "Capital of France?", "complete"),
            ("assistant", "Paris, on the Seine.", "complete"),
            ("user", "And its population?", "complete"), ("assistant", "About 2", "error"),
            ("user", "Its famous tower?", "complete"),
            ("assistant", "The Eiffel", "cancelled")]
        assert france[1].reasoning == "Geography."
        assert france[1].finish == Finish.from_raw("stop")
        assert france[3].error_kind == "rate-limit"
        assert store.get(3).messages[1].text == "ok \ufffd end"
        assert "Paris, on the Seine." in as_markdown(store.get(1))
    with sqlite3.connect(v2_path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("SELECT status FROM messages WHERE text = 'Once upon a hill'"
                          ).fetchone() == ("interrupted",)
    db.close()


def test_every_v2_conversation_is_one_branch(v2_path: Path) -> None:
    with HistoryStore.open(v2_path) as store:
        for cid in (1, 2, 3):
            path, tree = store.get(cid).messages, store.tree(cid).messages
            assert path == tree
            assert [m.parent_id for m in path] == [None, *(m.id for m in path[:-1])]
            assert all(m.active and m.siblings.count == 1 for m in path)
            assert [m.seq for m in path] == list(range(len(path)))
        exported = as_json(store.tree(1, blobs=True))
        assert [m["parent"] for m in exported["messages"]][:2] == [None, 1]


def test_every_v2_word_is_still_found(v2_path: Path) -> None:
    with HistoryStore.open(v2_path) as store:
        assert [(h.conversation_id, h.role) for h in store.search("seine")] == [
            (1, "assistant")]
        assert [h.conversation_id for h in store.search("population")] == [1]
        assert [h.conversation_id for h in store.search("hill")] == [2]
        assert [h.conversation_id for h in store.search("marmot")] == [2]
        [hit] = store.search("eiffel")
        assert hit.message_id == store.get(1).messages[5].id and hit.seq == 5
        assert store.search("placeholder") == []
    with sqlite3.connect(v2_path) as db:
        db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    db.close()


async def test_a_v2_conversation_continues_with_its_v2_turns_as_context(
        v2_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = FakeProvider("The Louvre.")
    monkeypatch.setattr(turn, "open_provider", provider.open)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    with HistoryStore.open(v2_path) as store:
        conversation = continue_conversation(Config(path=tmp_path / "none.toml"), store, 1)
        assert conversation.model.name == "openai:gpt-4.1-mini"
        await conversation.send("A museum?")
        # The failed turn stays out of the context, as it did in v2.
        assert [m.text for m in provider.requests[0].messages] == [
            "Capital of France?", "Paris, on the Seine.", "Its famous tower?", "The Eiffel",
            "A museum?"]
        path = store.get(1).messages
        assert [(m.seq, m.text) for m in path[-2:]] == [(6, "A museum?"), (7, "The Louvre.")]
        assert path[6].parent_id == path[5].id
        # And it branches like any v3 conversation.
        record = store.resume(1)
        record.regenerate(path[4].id, conversation.model).finish(
            turn.Reply(initial_text="Tour Eiffel.", status=Status.COMPLETE))
        assert [m.text for m in store.get(1).messages][4:] == ["Its famous tower?",
                                                               "Tour Eiffel."]
        assert store.get(1).messages[5].siblings.count == 2


class FakeProvider:
    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.requests: list[ChatRequest] = []

    def open(self, model: ModelConfig, key: str) -> FakeProvider:
        self.model = model
        return self

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        self.requests.append(request)
        yield TextDelta(self.answer)
        yield Finish.from_raw("stop")

    async def aclose(self) -> None:
        pass


# -- a v3 database that may only be read --------------------------------------------------

def in_child(action: Callable[[], str]) -> str:
    """`action`'s result, run in a forked process as `nobody` (root ignores permissions)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            if os.geteuid() == 0:
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


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp())
    path.chmod(0o777)
    yield path
    for inner in (path, *path.rglob("*")):
        inner.chmod(0o755 if inner.is_dir() else 0o644)
    shutil.rmtree(path)


def test_a_v3_database_that_may_only_be_read_still_lists_and_shows(
        reachable_dir: Path, v2_path: Path) -> None:
    path = reachable_dir / "history.db"
    shutil.copy(v2_path, path)
    with HistoryStore.open(path) as store:
        record = store.resume(2)
        record.regenerate(store.get(2).messages[0].id, ModelConfig(
            name=CLAUDE[0], provider=CLAUDE[1], model=CLAUDE[2])).finish(
            turn.Reply(initial_text="A hill, a marmot.", status=Status.COMPLETE))
        writable = {"list": [c.id for c in store.list_conversations()],
                    "show": [m.text for m in store.get(2).messages],
                    "markdown": as_markdown(store.get(2))}
    path.chmod(0o444)

    def read_only() -> str:
        with HistoryStore.open(path, reading=True) as store:
            found = {"list": [c.id for c in store.list_conversations()],
                     "show": [m.text for m in store.get(2).messages],
                     "markdown": as_markdown(store.get(2)),
                     "search": [h.conversation_id for h in store.search("marmot")],
                     "tree": len(store.tree(2).messages)}
            try:
                store.activate(store.tree(2).messages[1].id)
            except Exception as exc:
                found["write"] = type(exc).__name__
        return json.dumps(found)

    found = json.loads(in_child(read_only))
    assert {key: found[key] for key in writable} == writable
    assert found["show"] == ["Tell me a story", "A hill, a marmot."]
    assert (found["search"], found["tree"], found["write"]) == ([2, 2], 5, "HistoryError")
