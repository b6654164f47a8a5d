"""The conversation store: every prompt and reply in one SQLite file, searchable, never fatal."""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from termchat.config import data_dir
from termchat.errors import ConfigError, ProviderError, TermchatError
from termchat.events import Finish, FinishKind, Usage
from termchat.untrusted import repair, safe_line

# `termchat.turn` (and so asyncio) is imported only when a conversation is loaded: listing,
# searching and exporting stay quick to start.
if TYPE_CHECKING:
    from termchat.config import Config, ModelConfig
    from termchat.turn import Conversation, Exchange, Recorder, Reply

DEFAULT_TIMEOUT = 3.0
TITLE_LENGTH = 60
PREVIEW_LENGTH = 100
SEARCH_WINDOW = 10_000
# A live writer touches its row at least once per provider timeout (connect + idle, retried):
# a `streaming` row left alone longer than this has lost its writer, whoever it was.
ABANDONED_SECONDS = 600.0

Warn = Callable[[str], None]
T = TypeVar("T")


class HistoryError(TermchatError):
    """A problem with the history store, told in one line."""


class HistoryUnavailable(HistoryError):
    """The store cannot be used for this run; chatting goes on without it. `reason` is the
    problem alone (`PATH is ...`), for commands that cannot go on without the store."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"history is off for this run: {reason}; chatting continues "
                         "without it")
        self.reason = reason


class ConversationNotFound(HistoryError):
    """No conversation has the id the user gave (a usage error: the id came from them)."""

    exit_code = 2


# Each version is a list of statements (not a script: executescript would commit the
# transaction the migration runs in). Never edit a released version; append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
SCHEMA_VERSION = len(MIGRATIONS)

_MESSAGE_COLUMNS = (
    "seq, role, text, reasoning, model, provider, status, finish_reason, finish_kind, "
    "input_tokens, output_tokens, cached_tokens, reasoning_tokens, ttft, duration, error, "
    "error_kind, created, updated, writer_host, writer_pid"
)


@dataclass(frozen=True)
class ConversationSummary:
    """One line of `--list`: what a conversation is and how recent."""

    id: int
    title: str
    model: str
    created: float
    updated: float
    message_count: int
    preview: str


@dataclass(frozen=True)
class StoredMessage:
    """A message as stored; timestamps are Unix seconds, durations seconds."""

    seq: int
    role: str
    text: str
    reasoning: str
    model: str
    provider: str
    status: str
    finish: Finish | None
    usage: Usage
    ttft: float | None
    duration: float | None
    error: str | None
    error_kind: str | None
    created: float
    updated: float

    def to_reply(self) -> Reply:
        """The reply as `turn` knows it, with its timings rebuilt on a clock starting at 0."""
        from termchat.turn import Reply, Status

        return Reply(
            model=self.model, provider=self.provider, initial_text=self.text,
            reasoning=self.reasoning, usage=self.usage, finish=self.finish,
            status=Status(self.status),
            error=None if self.error is None else _provider_error(self.error_kind, self.error),
            started_at=0.0, first_token_at=self.ttft,
            ended_at=self.duration if self.duration is not None else 0.0,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "role": self.role, "text": self.text, "reasoning": self.reasoning,
            "model": self.model, "provider": self.provider, "status": self.status,
            "finish_reason": None if self.finish is None else self.finish.reason,
            "finish_kind": None if self.finish is None else self.finish.kind.value,
            "usage": {"input_tokens": self.usage.input_tokens,
                      "output_tokens": self.usage.output_tokens,
                      "cached_tokens": self.usage.cached_tokens,
                      "reasoning_tokens": self.usage.reasoning_tokens},
            "ttft": self.ttft, "duration": self.duration,
            "error": self.error, "error_kind": self.error_kind,
            "created": _iso(self.created), "updated": _iso(self.updated),
        }


@dataclass(frozen=True)
class StoredConversation:
    """A conversation and all its messages, in order."""

    id: int
    title: str
    model: str
    created: float
    updated: float
    messages: list[StoredMessage]


@dataclass(frozen=True)
class SearchHit:
    """One matching message, best matches first; `snippet` marks the matched words."""

    conversation_id: int
    title: str
    seq: int
    role: str
    snippet: str
    created: float


@dataclass
class LoadedConversation:
    """What continuing a conversation needs: its model and its earlier exchanges.

    `model` is the model name the user chose (an alias or `provider:model`); `label` is the
    `provider:model` of the last reply, to fall back on when that alias no longer exists.
    """

    id: int
    title: str
    model: str
    label: str
    exchanges: list[Exchange]


class HistoryStore:
    """One open history database. Safe to share between threads."""

    def __init__(self, db: sqlite3.Connection, path: Path, timeout: float,
                 warn: Warn | None) -> None:
        self.path = path
        self._db = db
        self._timeout = timeout
        self.warn: Warn = warn or _warn_stderr
        self._warned = False
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path | str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
             warn: Warn | None = None, reading: bool = False) -> HistoryStore:
        """Open (creating and migrating as needed) the database, `history.db` in the data dir.

        Raises `HistoryUnavailable` with one line when it cannot be read and written; with
        `reading`, a file this user may not write is opened to be read only (it must exist).
        `warn` receives the one line said when a later write fails (default: stderr).
        """
        path = Path(path) if path is not None else default_path()
        if reading and path.exists() and not os.access(path, os.W_OK):
            return cls._open_read_only(path, timeout, warn)
        try:
            _create_private(path)
            db = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                                 check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryUnavailable(_problem(path, exc, timeout)) from None
        db.text_factory = _lenient_text
        # SQLite quietly opens a file it may not write read-only, and an empty transaction
        # succeeds on it: only the first prompt would fail.
        if not os.access(path, os.W_OK):
            db.close()
            raise HistoryUnavailable(f"{path} is read-only (check its permissions)")
        try:
            db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL loses nothing when the process dies, only on power loss.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            _migrate_and_sweep(db, path)
        except (sqlite3.Error, HistoryError) as exc:
            db.close()
            reason = exc.message if isinstance(exc, HistoryError) else \
                _problem(path, exc, timeout)
            raise HistoryUnavailable(reason) from None
        return cls(db, path, timeout, warn)

    @classmethod
    def _open_read_only(cls, path: Path, timeout: float, warn: Warn | None) -> HistoryStore:
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                 timeout=timeout, isolation_level=None,
                                 check_same_thread=False)
            db.text_factory = _lenient_text
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise HistoryUnavailable(_problem(path, exc, timeout)) from None
        if version != SCHEMA_VERSION:
            db.close()
            older = "an older" if version < SCHEMA_VERSION else "a newer"
            raise HistoryUnavailable(f"{path} was written by {older} termchat and is "
                                     "read-only, so it cannot be brought up to date (make it "
                                     "writable once)")
        return cls(db, path, timeout, warn)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- recording ------------------------------------------------------------------------

    def new_conversation(self) -> ConversationRecord:
        """A conversation that gets its row (and id) with its first prompt."""
        return ConversationRecord(self, None)

    def resume(self, cid: int | str) -> ConversationRecord:
        """Record further turns into an existing conversation."""
        return ConversationRecord(self, self._existing(cid))

    def _write(self, action: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run a write and return its result, or warn once and return None on failure: a chat
        never dies of history."""
        try:
            with self._lock:
                return action(self._db)
        except (sqlite3.Error, HistoryError) as exc:
            if not self._warned:
                self._warned = True
                reason = exc.message if isinstance(exc, HistoryError) else \
                    _problem(self.path, exc, self._timeout)
                self.warn(f"history: saving failed: {reason}; chatting continues "
                           "(further save errors are not shown)")
            return None

    # -- reading --------------------------------------------------------------------------

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._lock:
                yield self._db
        except sqlite3.Error as exc:
            raise HistoryError(f"history: {_problem(self.path, exc, self._timeout)}") from None

    def _existing(self, cid: int | str) -> int:
        number = _parse_cid(cid)
        with self._using() as db:
            row = db.execute("SELECT 1 FROM conversations WHERE id = ?", (number,)).fetchone()
        if row is None:
            raise _not_found(cid)
        return number

    def last_conversation_id(self) -> int | None:
        """The most recently updated conversation, which `-c` continues."""
        with self._using() as db:
            row = db.execute("SELECT id FROM conversations ORDER BY updated DESC, id DESC "
                             "LIMIT 1").fetchone()
        return None if row is None else row[0]

    def list_conversations(self, limit: int = 50, offset: int = 0,
                           query: str | None = None) -> list[ConversationSummary]:
        """Most recently updated first; `query` keeps titles containing it (any case)."""
        where, params = "", []
        if query:
            escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where, params = "WHERE c.title LIKE ? ESCAPE '\\'", [f"%{escaped}%"]
        with self._using() as db:
            rows = db.execute(
                f"""SELECT c.id, c.title, c.model, c.created, c.updated,
                    (SELECT count(*) FROM messages WHERE conversation_id = c.id),
                    (SELECT substr(text, 1, {PREVIEW_LENGTH * 4}) FROM messages
                     WHERE conversation_id = c.id AND text != '' ORDER BY seq DESC LIMIT 1)
                FROM conversations c {where}
                ORDER BY c.updated DESC, c.id DESC LIMIT ? OFFSET ?""",
                [*params, limit, offset],
            ).fetchall()
        return [ConversationSummary(*row[:6], preview=_one_line(row[6] or "", PREVIEW_LENGTH))
                for row in rows]

    def search(self, text: str, limit: int = 50, *,
               highlight: tuple[str, str] = ("[", "]")) -> list[SearchHit]:
        """Messages (prompts and replies) matching every word of `text`, best first.

        Words are matched literally (quotes and operators in `text` are not FTS syntax); a
        word ending in `*` matches as a prefix. Only the `SEARCH_WINDOW` most recent matching
        messages are ranked, which keeps a search for a very common word quick.
        """
        match = _fts_query(text)
        if match is None:
            return []
        with self._using() as db:
            # Walking the matches newest first is cheap; scoring every one of them is not.
            oldest = db.execute(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? "
                "ORDER BY rowid DESC LIMIT 1 OFFSET ?", (match, SEARCH_WINDOW - 1)).fetchone()
            rows = db.execute(
                """SELECT m.conversation_id, c.title, m.seq, m.role,
                    snippet(messages_fts, 0, ?, ?, '…', 16), m.created
                FROM messages_fts
                JOIN messages m ON m.id = messages_fts.rowid
                JOIN conversations c ON c.id = m.conversation_id
                WHERE messages_fts MATCH ? AND messages_fts.rowid >= ?
                ORDER BY messages_fts.rank LIMIT ?""",
                (*highlight, match, oldest[0] if oldest else 0, limit),
            ).fetchall()
        return [SearchHit(cid, title, seq, role, _one_line(snippet), created)
                for cid, title, seq, role, snippet, created in rows]

    def get(self, cid: int | str) -> StoredConversation:
        """A conversation with all its messages in order."""
        number = _parse_cid(cid)
        with self._using() as db:
            head = db.execute("SELECT id, title, model, created, updated FROM conversations "
                              "WHERE id = ?", (number,)).fetchone()
            rows = db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages "
                              "WHERE conversation_id = ? ORDER BY seq", (number,)).fetchall()
        if head is None:
            raise _not_found(cid)
        now = time.time()
        return StoredConversation(*head, messages=[_message(row, now) for row in rows])

    def load(self, cid: int | str) -> LoadedConversation:
        """The conversation as exchanges, to continue it with `turn.Conversation`."""
        from termchat.turn import Exchange

        stored = self.get(cid)
        # A prompt and its reply row are written in one transaction, so they always pair up.
        prompts = (m.text for m in stored.messages if m.role == "user")
        exchanges = [Exchange(next(prompts, ""), m.to_reply())
                     for m in stored.messages if m.role == "assistant"]
        replies = [m for m in stored.messages if m.role == "assistant"]
        label = f"{replies[-1].provider}:{replies[-1].model}" if replies else ""
        return LoadedConversation(stored.id, stored.title, stored.model, label, exchanges)

    # -- managing -------------------------------------------------------------------------

    def rename(self, cid: int | str, title: str) -> None:
        title = _one_line(title, 10 * TITLE_LENGTH)
        if not title:
            raise HistoryError("A title cannot be empty.")
        with self._using() as db:
            done = db.execute("UPDATE conversations SET title = ? WHERE id = ?",
                              (title, _parse_cid(cid))).rowcount
        if not done:
            raise _not_found(cid)

    def delete(self, cid: int | str) -> None:
        """Delete a conversation, its messages and their search entries."""
        number = _parse_cid(cid)
        with self._using() as db, _transaction(db):
            db.execute("DELETE FROM messages WHERE conversation_id = ?", (number,))
            done = db.execute("DELETE FROM conversations WHERE id = ?", (number,)).rowcount
        if not done:
            raise _not_found(cid)

    def export_json(self, cid: int | str) -> dict[str, Any]:
        """Everything stored about a conversation, as JSON-ready data (ISO 8601 UTC times)."""
        stored = self.get(cid)
        return {
            "format": "termchat-conversation", "version": 1,
            "id": stored.id, "title": stored.title, "model": stored.model,
            "created": _iso(stored.created), "updated": _iso(stored.updated),
            "messages": [message.to_json() for message in stored.messages],
        }

    def export_markdown(self, cid: int | str) -> str:
        stored = self.get(cid)
        lines = [f"# {stored.title}", "",
                 f"Conversation {stored.id} · {stored.model} · started "
                 f"{_local(stored.created)} · updated {_local(stored.updated)}", ""]
        for message in stored.messages:
            if message.role == "user":
                lines += ["## User", "", message.text, ""]
                continue
            lines += [f"## Assistant ({message.provider}:{message.model})", ""]
            if message.reasoning:
                lines += ["<details><summary>Reasoning</summary>", "", message.reasoning, "",
                          "</details>", ""]
            lines += [message.text or "*(no text)*", "", f"*{_footer(message)}*", ""]
        return "\n".join(lines)


class ConversationRecord:
    """The `History` of one conversation: stores each prompt before it is sent."""

    def __init__(self, store: HistoryStore, cid: int | None) -> None:
        self.store = store
        self.id = cid

    def user_prompt(self, prompt: str, model: ModelConfig) -> Recorder:
        """Commit the prompt and an empty `streaming` reply, and return that reply's recorder.

        The conversation row is created with the first prompt; its title is that prompt's
        first line. On a write failure this warns once and returns a recorder that saves
        nothing.
        """
        message_id = self.store._write(lambda db: self._insert(db, prompt, model))
        if message_id is None:
            return _Unsaved()
        return MessageRecorder(self.store, message_id)

    def _insert(self, db: sqlite3.Connection, prompt: str, model: ModelConfig) -> int:
        now = time.time()
        with _transaction(db):
            if self.id is None:
                cid = db.execute(
                    "INSERT INTO conversations (title, model, created, updated) "
                    "VALUES (?, ?, ?, ?)", (_title(repair(prompt)), model.name, now, now)).lastrowid
            else:
                cid = self.id
                if not db.execute("UPDATE conversations SET model = ?, updated = ? WHERE id = ?",
                                  (model.name, now, cid)).rowcount:
                    raise HistoryError(f"conversation {cid} was deleted")
            seq = db.execute("SELECT coalesce(max(seq), -1) + 1 FROM messages "
                             "WHERE conversation_id = ?", (cid,)).fetchone()[0]
            insert = ("INSERT INTO messages (conversation_id, seq, role, text, model, provider, "
                      "status, writer_host, writer_pid, created, updated) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            db.execute(insert, (cid, seq, "user", repair(prompt), model.model, model.provider,
                                "complete", None, None, now, now))
            reply_id = db.execute(insert, (cid, seq + 1, "assistant", "", model.model,
                                           model.provider, "streaming", _host(), os.getpid(),
                                           now, now)).lastrowid
        self.id = cid
        assert reply_id is not None
        return reply_id


class MessageRecorder:
    """Saves one reply as it streams (`checkpoint`) and when it ends (`finish`).

    Each call is its own committed transaction, so a killed process loses at most the text
    since the last checkpoint.
    """

    def __init__(self, store: HistoryStore, message_id: int) -> None:
        self.store = store
        self.message_id = message_id
        self._checkpoints = True

    def checkpoint(self, reply: Reply) -> None:
        # After one failure, stop: each retry could block the chat for the lock timeout.
        if not self._checkpoints:
            return
        values = (repair(reply.text), repair(reply.reasoning), *_usage(reply.usage), reply.ttft,
                  reply.elapsed, time.time(), self.message_id)
        if self.store._write(lambda db: db.execute(
                "UPDATE messages SET text = ?, reasoning = ?, status = 'streaming', "
                "input_tokens = ?, output_tokens = ?, cached_tokens = ?, reasoning_tokens = ?, "
                "ttft = ?, duration = ?, updated = ? WHERE id = ?", values)) is None:
            self._checkpoints = False

    def finish(self, reply: Reply) -> None:
        # A reply that ended without reaching a final state stopped for a reason nobody saw.
        status = reply.status.value if reply.status.final else "interrupted"
        error, finish = reply.error, reply.finish
        now = time.time()
        values = (repair(reply.text), repair(reply.reasoning), reply.model, reply.provider, status,
                  None if finish is None else finish.reason,
                  None if finish is None else finish.kind.value, *_usage(reply.usage),
                  reply.ttft, reply.elapsed, None if error is None else repair(error.message),
                  None if error is None else error.kind, now, self.message_id)

        def write(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(
                    "UPDATE messages SET text = ?, reasoning = ?, "
                    "model = coalesce(nullif(?, ''), model), "
                    "provider = coalesce(nullif(?, ''), provider), status = ?, "
                    "finish_reason = ?, finish_kind = ?, input_tokens = ?, output_tokens = ?, "
                    "cached_tokens = ?, reasoning_tokens = ?, ttft = ?, duration = ?, "
                    "error = ?, error_kind = ?, updated = ?, writer_host = NULL, "
                    "writer_pid = NULL WHERE id = ?", values)
                db.execute("UPDATE conversations SET updated = ? WHERE id = "
                           "(SELECT conversation_id FROM messages WHERE id = ?)",
                           (now, self.message_id))

        self.store._write(write)


class _Unsaved:
    """The recorder for a reply whose prompt could not be saved."""

    def checkpoint(self, reply: Reply) -> None:
        pass

    def finish(self, reply: Reply) -> None:
        pass


def open_or_warn(enabled: bool, warn: Warn) -> HistoryStore | None:
    """The store, or None when history is off or unavailable (said once through `warn`)."""
    if not enabled:
        return None
    try:
        return HistoryStore.open(warn=warn)
    except HistoryUnavailable as exc:
        warn(exc.message)
        return None


def continue_conversation(config: Config, store: HistoryStore, cid: int | str) -> Conversation:
    """Stored conversation `cid`, ready to continue: new turns are recorded into it.

    Its model is the alias it was last used with, or, when that alias is gone from the
    config, the `provider:model` of its last reply. Raises `HistoryError` or `ConfigError`.
    """
    from termchat.turn import Conversation

    loaded = store.load(cid)
    try:
        model = config.resolve_model(loaded.model or loaded.label)
    except ConfigError:
        if not loaded.label or loaded.label == loaded.model:
            raise
        model = config.resolve_model(loaded.label)
    return Conversation(model, exchanges=loaded.exchanges, history=store.resume(loaded.id))


# -- opening ------------------------------------------------------------------------------

def default_path() -> Path:
    """`history.db` in the data directory: $XDG_DATA_HOME/termchat, or the platform's."""
    return data_dir() / "history.db"


def _create_private(path: Path) -> None:
    """Create the directory and file readable by the user alone (SQLite's -wal and -shm
    files copy the database file's mode)."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _migrate_and_sweep(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema up to date and mark replies whose writer died as interrupted.

    One write transaction, taken even when there is nothing to do: it proves the database
    is writable now, instead of failing on the first prompt.
    """
    with _transaction(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HistoryError(f"{path} was written by a newer termchat (schema {version}, "
                               f"this one knows {SCHEMA_VERSION}); upgrade termchat")
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                db.execute(statement)
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        now = time.time()
        stale = [(row[0], row[3]) for row in db.execute(
            "SELECT id, writer_host, writer_pid, updated FROM messages "
            "WHERE status = 'streaming'") if not _writer_alive(*row[1:], now)]
        db.executemany("UPDATE messages SET status = 'interrupted', writer_host = NULL, "
                       "writer_pid = NULL WHERE id = ? AND status = 'streaming' "
                       "AND updated = ?", stale)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so the busy timeout applies; a deferred read
    # that later upgrades to a write fails at once when another process wrote meanwhile.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (disk full) leaves the transaction open; later writes need it gone.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


# -- liveness of a `streaming` row's writer -----------------------------------------------

def _host() -> str:
    return os.uname().nodename if hasattr(os, "uname") else ""


def _writer_alive(host: str | None, pid: int | None, updated: float, now: float) -> bool:
    if now - updated > ABANDONED_SECONDS:
        return False
    if os.name == "posix" and pid is not None and host == _host():
        return _pid_alive(pid)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed child its parent has not reaped yet still answers signal 0.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


# -- rows to values -----------------------------------------------------------------------

def _message(row: tuple[Any, ...], now: float) -> StoredMessage:
    (seq, role, text, reasoning, model, provider, status, finish_reason, finish_kind,
     input_tokens, output_tokens, cached_tokens, reasoning_tokens, ttft, duration, error,
     error_kind, created, updated, writer_host, writer_pid) = row
    if status == "streaming" and not _writer_alive(writer_host, writer_pid, updated, now):
        status = "interrupted"
    return StoredMessage(
        seq, role, text, reasoning, model, provider, status,
        _finish(finish_reason, finish_kind),
        Usage(input_tokens, output_tokens, cached_tokens, reasoning_tokens),
        ttft, duration, error, error_kind, created, updated,
    )


def _finish(reason: str | None, kind: str | None) -> Finish | None:
    """The stored finish; the kind is kept because it is not always the raw reason's (an
    OpenAI refusal ends with a plain `stop`)."""
    if reason is None:
        return None
    kinds = {member.value: member for member in FinishKind}
    return Finish(reason, kinds.get(kind or "", Finish.from_raw(reason).kind))


def _usage(usage: Usage) -> tuple[int | None, ...]:
    return (usage.input_tokens, usage.output_tokens, usage.cached_tokens,
            usage.reasoning_tokens)


def _provider_error(kind: str | None, message: str) -> ProviderError:
    classes: list[type[ProviderError]] = [ProviderError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    return next((cls for cls in classes if cls.kind == kind), ProviderError)(message)


def _parse_cid(cid: int | str) -> int:
    if isinstance(cid, int):
        return cid
    if cid.strip().isdigit():
        return int(cid)
    raise _not_found(cid)


def _not_found(cid: int | str) -> ConversationNotFound:
    return ConversationNotFound(f"No conversation {cid} in the history; "
                                "`termchat --list` shows the ids.")


def _title(prompt: str) -> str:
    first = next((line for line in prompt.splitlines() if line.strip()), "")
    return _one_line(first, TITLE_LENGTH) or "(empty prompt)"


def _one_line(text: str, limit: int | None = None) -> str:
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        return text[:limit - 1].rstrip() + "…"
    return text


def _fts_query(text: str) -> str | None:
    """Each word as a quoted FTS5 string, so no user input is read as query syntax."""
    terms = []
    for word in text.split():
        stem = word.rstrip("*")
        if stem:
            quoted = '"' + stem.replace('"', '""') + '"'
            terms.append(quoted + "*" if stem != word else quoted)
    return " ".join(terms) or None


def _footer(message: StoredMessage) -> str:
    """The footer of a reply in Markdown: how it ended, tokens and timings."""
    parts = [message.status]
    finish = message.finish
    if finish and (finish.kind is not FinishKind.COMPLETE or finish.meaning):
        parts.append(finish.describe())
    if message.error:
        parts.append(message.error)
    if message.usage.known:
        parts.append(f"{_count(message.usage.input_tokens)} in / "
                     f"{_count(message.usage.output_tokens)} out tokens")
    if message.ttft is not None:
        parts.append(f"first token {message.ttft:.2f} s")
    if message.duration is not None:
        parts.append(f"{message.duration:.1f} s")
    return " · ".join(parts)


def _count(tokens: int | None) -> str:
    return "?" if tokens is None else f"{tokens:,}"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _local(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


# -- one-line explanations ----------------------------------------------------------------

def _problem(path: Path, exc: BaseException, timeout: float) -> str:
    """What is wrong with the database, as `PATH is ...`, for one warning line."""
    directory = path.parent
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return f"{path} cannot be created: the disk is full"
        not_dir = _not_a_directory(path)
        if not_dir:
            return f"{path} cannot be created: {not_dir}"
        failed = Path(exc.filename).parent if exc.filename else directory
        return f"{path} cannot be created ({exc.strerror}; check permissions of {failed})"
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return f"{path} is locked by another process (waited {timeout:g} s)"
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return f"{path} is corrupt or not a database (move it aside to start a new history)"
    if code == sqlite3.SQLITE_FULL:
        return f"{path} cannot grow: the disk is full"
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        not_dir = _not_a_directory(path)
        if not_dir:
            return f"{path} cannot be opened: {not_dir}"
        if path.is_dir():
            return f"{path} cannot be opened: it is a directory"
        if path.exists() and not os.access(path, os.W_OK):
            return f"{path} is read-only (check its permissions)"
        return f"{path} is read-only (check permissions of {directory})"
    return f"{path}: {exc}"


def _not_a_directory(path: Path) -> str | None:
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return f"{parent} is not a directory"
    return None


def _lenient_text(data: bytes) -> str:
    """A damaged row (not UTF-8) is read with replacement characters instead of failing, and
    its bytes never reach an error message."""
    return data.decode("utf-8", "replace")


def _warn_stderr(message: str) -> None:
    print(safe_line(message), file=sys.stderr)
