"""The store: one SQLite file of every conversation, searchable, never fatal to a chat."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from termchat.config import data_dir
from termchat.history.problems import (
    HistoryError,
    HistoryUnavailable,
    not_found,
    problem,
    warn_stderr,
)
from termchat.history.records import (
    TITLE_LENGTH,
    ConversationSummary,
    LoadedConversation,
    SearchHit,
    StoredConversation,
    message_from_row,
    one_line,
    parse_cid,
)
from termchat.history.schema import (
    SCHEMA_VERSION,
    create_private,
    lenient_text,
    migrate_and_sweep,
    transaction,
)

# `termchat.turn` (and so asyncio) is imported only when a conversation is loaded: listing,
# searching and exporting stay quick to start.
if TYPE_CHECKING:
    from termchat.history.recording import ConversationRecord

DEFAULT_TIMEOUT = 3.0
PREVIEW_LENGTH = 100
SEARCH_WINDOW = 10_000
MESSAGE_COLUMNS = (
    "seq, role, text, reasoning, model, provider, status, finish_reason, finish_kind, "
    "input_tokens, output_tokens, cached_tokens, reasoning_tokens, ttft, duration, error, "
    "error_kind, created, updated, writer_host, writer_pid"
)

Warn = Callable[[str], None]
T = TypeVar("T")


class HistoryStore:
    """One open history database. Safe to share between threads."""

    def __init__(self, db: sqlite3.Connection, path: Path, timeout: float,
                 warn: Warn | None) -> None:
        self.path = path
        self._db = db
        self._timeout = timeout
        self.warn: Warn = warn or warn_stderr
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
            create_private(path)
            db = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                                 check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryUnavailable(problem(path, exc, timeout)) from None
        db.text_factory = lenient_text
        db.row_factory = sqlite3.Row
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
            migrate_and_sweep(db, path)
        except (sqlite3.Error, HistoryError) as exc:
            db.close()
            reason = exc.message if isinstance(exc, HistoryError) else \
                problem(path, exc, timeout)
            raise HistoryUnavailable(reason) from None
        return cls(db, path, timeout, warn)

    @classmethod
    def _open_read_only(cls, path: Path, timeout: float, warn: Warn | None) -> HistoryStore:
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                 timeout=timeout, isolation_level=None,
                                 check_same_thread=False)
            db.text_factory = lenient_text
            db.row_factory = sqlite3.Row
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise HistoryUnavailable(problem(path, exc, timeout)) from None
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
        from termchat.history.recording import ConversationRecord

        return ConversationRecord(self, None)

    def resume(self, cid: int | str) -> ConversationRecord:
        """Record further turns into an existing conversation."""
        from termchat.history.recording import ConversationRecord

        return ConversationRecord(self, self._existing(cid))

    def write(self, action: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run a write and return its result, or warn once and return None on failure: a chat
        never dies of history."""
        try:
            with self._lock:
                return action(self._db)
        except (sqlite3.Error, HistoryError) as exc:
            if not self._warned:
                self._warned = True
                reason = exc.message if isinstance(exc, HistoryError) else \
                    problem(self.path, exc, self._timeout)
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
            raise HistoryError(f"history: {problem(self.path, exc, self._timeout)}") from None

    def _existing(self, cid: int | str) -> int:
        number = parse_cid(cid)
        with self._using() as db:
            row = db.execute("SELECT 1 FROM conversations WHERE id = ?", (number,)).fetchone()
        if row is None:
            raise not_found(cid)
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
                    (SELECT count(*) FROM messages WHERE conversation_id = c.id) AS messages,
                    (SELECT substr(text, 1, {PREVIEW_LENGTH * 4}) FROM messages
                     WHERE conversation_id = c.id AND text != '' ORDER BY seq DESC LIMIT 1)
                     AS preview
                FROM conversations c {where}
                ORDER BY c.updated DESC, c.id DESC LIMIT ? OFFSET ?""",
                [*params, limit, offset],
            ).fetchall()
        return [ConversationSummary(row["id"], row["title"], row["model"], row["created"],
                                    row["updated"], row["messages"],
                                    preview=one_line(row["preview"] or "", PREVIEW_LENGTH))
                for row in rows]

    def search(self, text: str, limit: int = 50, *,
               highlight: tuple[str, str] = ("[", "]")) -> list[SearchHit]:
        """Messages (prompts and replies) matching every word of `text`, best first.

        Words are matched literally (quotes and operators in `text` are not FTS syntax); a
        word ending in `*` matches as a prefix. Only the `SEARCH_WINDOW` most recent matching
        messages are ranked, which keeps a search for a very common word quick.
        """
        match = fts_query(text)
        if match is None:
            return []
        with self._using() as db:
            # Walking the matches newest first is cheap; scoring every one of them is not.
            oldest = db.execute(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? "
                "ORDER BY rowid DESC LIMIT 1 OFFSET ?", (match, SEARCH_WINDOW - 1)).fetchone()
            rows = db.execute(
                """SELECT m.conversation_id, c.title, m.seq, m.role,
                    snippet(messages_fts, 0, ?, ?, '…', 16) AS snippet, m.created
                FROM messages_fts
                JOIN messages m ON m.id = messages_fts.rowid
                JOIN conversations c ON c.id = m.conversation_id
                WHERE messages_fts MATCH ? AND messages_fts.rowid >= ?
                ORDER BY messages_fts.rank LIMIT ?""",
                (*highlight, match, oldest[0] if oldest else 0, limit),
            ).fetchall()
        return [SearchHit(row["conversation_id"], row["title"], row["seq"], row["role"],
                          one_line(row["snippet"]), row["created"]) for row in rows]

    def get(self, cid: int | str) -> StoredConversation:
        """A conversation with all its messages in order."""
        number = parse_cid(cid)
        with self._using() as db:
            head = db.execute("SELECT id, title, model, created, updated FROM conversations "
                              "WHERE id = ?", (number,)).fetchone()
            rows = db.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages "
                              "WHERE conversation_id = ? ORDER BY seq", (number,)).fetchall()
        if head is None:
            raise not_found(cid)
        now = time.time()
        return StoredConversation(head["id"], head["title"], head["model"], head["created"],
                                  head["updated"],
                                  messages=[message_from_row(row, now) for row in rows])

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
        title = one_line(title, 10 * TITLE_LENGTH)
        if not title:
            raise HistoryError("A title cannot be empty.")
        with self._using() as db:
            done = db.execute("UPDATE conversations SET title = ? WHERE id = ?",
                              (title, parse_cid(cid))).rowcount
        if not done:
            raise not_found(cid)

    def delete(self, cid: int | str) -> None:
        """Delete a conversation, its messages and their search entries."""
        number = parse_cid(cid)
        with self._using() as db, transaction(db):
            db.execute("DELETE FROM messages WHERE conversation_id = ?", (number,))
            done = db.execute("DELETE FROM conversations WHERE id = ?", (number,)).rowcount
        if not done:
            raise not_found(cid)


def open_or_warn(enabled: bool, warn: Warn) -> HistoryStore | None:
    """The store, or None when history is off or unavailable (said once through `warn`)."""
    if not enabled:
        return None
    try:
        return HistoryStore.open(warn=warn)
    except HistoryUnavailable as exc:
        warn(exc.message)
        return None


def default_path() -> Path:
    """`history.db` in the data directory: $XDG_DATA_HOME/termchat, or the platform's."""
    return data_dir() / "history.db"


def fts_query(text: str) -> str | None:
    """Each word as a quoted FTS5 string, so no user input is read as query syntax."""
    terms = []
    for word in text.split():
        stem = word.rstrip("*")
        if stem:
            quoted = '"' + stem.replace('"', '""') + '"'
            terms.append(quoted + "*" if stem != word else quoted)
    return " ".join(terms) or None


