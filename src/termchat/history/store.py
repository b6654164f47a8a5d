"""The store: one SQLite file of every conversation, searchable, never fatal to a chat."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from termchat.config import data_dir
from termchat.history.blobs import IN_IDS, blob_data, carried_by, drop_unused
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
    Siblings,
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
    snapshot,
    transaction,
)
from termchat.history.tree import Shape

# `termchat.turn` (and so asyncio) is imported only when a conversation is loaded: listing,
# searching and exporting stay quick to start.
if TYPE_CHECKING:
    from termchat.history.recording import ConversationRecord
    from termchat.turn import Exchange

DEFAULT_TIMEOUT = 3.0
PREVIEW_LENGTH = 100
SEARCH_WINDOW = 10_000
MESSAGE_COLUMNS = (
    "id, parent_id, active, seq, role, text, reasoning, parts, model, provider, status, "
    "finish_reason, finish_kind, input_tokens, output_tokens, cached_tokens, reasoning_tokens, "
    "ttft, duration, error, error_kind, continuations, created, updated, writer_host, "
    "writer_pid"
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
        """Record further turns into an existing conversation, after its active path."""
        from termchat.history.recording import ConversationRecord

        number = self._existing(cid)
        return ConversationRecord(self, number, self.path_end(number))

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
        with self._using() as db, snapshot(db):
            rows = db.execute(
                f"""SELECT c.id, c.title, c.model, c.created, c.updated,
                    (SELECT count(*) FROM messages WHERE conversation_id = c.id) AS messages
                FROM conversations c {where}
                ORDER BY c.updated DESC, c.id DESC LIMIT ? OFFSET ?""",
                [*params, limit, offset],
            ).fetchall()
            previews = _previews(db, [row["id"] for row in rows])
        return [ConversationSummary(row["id"], row["title"], row["model"], row["created"],
                                    row["updated"], row["messages"],
                                    preview=one_line(previews[row["id"]], PREVIEW_LENGTH))
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
                """SELECT m.conversation_id, c.title, m.seq, m.role, m.id,
                    snippet(messages_fts, -1, ?, ?, '…', 16) AS snippet, m.created
                FROM messages_fts
                JOIN messages m ON m.id = messages_fts.rowid
                JOIN conversations c ON c.id = m.conversation_id
                WHERE messages_fts MATCH ? AND messages_fts.rowid >= ?
                ORDER BY messages_fts.rank LIMIT ?""",
                (*highlight, match, oldest[0] if oldest else 0, limit),
            ).fetchall()
        return [SearchHit(row["conversation_id"], row["title"], row["seq"], row["role"],
                          one_line(row["snippet"]), row["created"], row["id"]) for row in rows]

    def get(self, cid: int | str, *, blobs: bool = False) -> StoredConversation:
        """A conversation's active path: the messages shown and sent as context, in order,
        each with its alternatives (`siblings`). With `blobs`, attachments carry their
        bytes."""
        return self._read(cid, blobs, lambda shape, _: shape.path())[0]

    def tree(self, cid: int | str, *, blobs: bool = False) -> StoredConversation:
        """Every message of a conversation, every branch, in the order they were written."""
        return self._read(cid, blobs, lambda shape, _: list(shape.nodes))[0]

    def _read(self, cid: int | str, blobs: bool,
              chosen: Callable[[Shape, sqlite3.Connection], list[int] | None]
              ) -> tuple[StoredConversation, bool]:
        """The messages `chosen` picks from the conversation's shape (None: all of them),
        and whether they are all of them."""
        number = parse_cid(cid)
        with self._using() as db, snapshot(db):
            head = db.execute("SELECT id, title, model, created, updated FROM conversations "
                              "WHERE id = ?", (number,)).fetchone()
            if head is None:
                raise not_found(cid)
            shape = Shape.read(db, number)
            picked = chosen(shape, db)
            ids = list(shape.nodes) if picked is None else picked
            rows = {row["id"]: row for row in db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id {IN_IDS}", (json.dumps(ids),))}
            data = blob_data(db, ids) if blobs else None
        now = time.time()
        return StoredConversation(
            head["id"], head["title"], head["model"], head["created"], head["updated"],
            messages=[message_from_row(rows[i], now, shape.siblings(i), data) for i in ids],
        ), picked is None

    def load(self, cid: int | str, *, recent: int | None = None,
             known: Iterable[Exchange] = ()) -> LoadedConversation:
        """The conversation as exchanges to continue with `turn.Conversation`: every branch
        (each exchange with its parent, attachments with their bytes, message ids set), and
        the active path through them.

        With `recent`, a long conversation is read from its end: the last `recent`
        exchanges of the path and the alternatives at their places (the first of them
        starting the tree), `whole` False. Reading the whole later with those exchanges as
        `known` keeps them as they are (each given its parent), so what shows them stays
        right."""
        from termchat.turn import Exchange

        stored, whole = self._read(cid, True, (lambda shape, _: None) if recent is None
                            else (lambda shape, db: shape.end(db, recent)))
        kept = {(exchange.asked, exchange.message_ids): exchange for exchange in known}
        prompts = {m.id: m for m in stored.messages if m.role == "user"}
        by_reply: dict[int, Exchange] = {}
        tree: list[Exchange] = []
        chosen: dict[Exchange | None, Exchange] = {}
        for message in stored.messages:
            if message.role != "assistant":
                continue
            # A prompt and its reply row are written in one transaction: they pair up.
            prompt = prompts.get(message.parent_id) if message.parent_id is not None else None
            after = prompt.parent_id if prompt is not None else message.parent_id
            parent = by_reply.get(after) if after is not None else None
            asked = prompt.id if prompt else message.id
            ids = (prompt.id, message.id) if prompt else None
            exchange = kept.get((asked, ids))
            if exchange is None:
                exchange = Exchange(
                    prompt.text if prompt else "", message.to_reply(),
                    attachments=prompt.attachments if prompt else (), parent=parent,
                    asked=asked, message_ids=ids)
            else:
                exchange.parent = parent
            by_reply[message.id] = exchange
            tree.append(exchange)
            if message.active and (prompt is None or prompt.active):
                chosen[parent] = exchange
        path: list[Exchange] = []
        at: Exchange | None = None
        while (at := chosen.get(at)) is not None:
            path.append(at)
        replies = [exchange.reply for exchange in path]
        label = f"{replies[-1].provider}:{replies[-1].model}" if replies else ""
        return LoadedConversation(stored.id, stored.title, stored.model, label, path, tree,
                                  list(chosen.values()), whole)

    def siblings(self, message_id: int) -> Siblings:
        """A message's alternatives (its parent's children), oldest first, and its place."""
        with self._using() as db, snapshot(db):
            shape = Shape.read(db, self._conversation_of(db, message_id))
        return shape.siblings(message_id)

    def path_end(self, cid: int | str) -> int | None:
        """The last message of the active path (the reply the next prompt follows), or None
        when the path is empty (the first exchange was undone)."""
        with self._using() as db:
            path = Shape.read(db, parse_cid(cid)).path()
        return path[-1] if path else None

    def _conversation_of(self, db: sqlite3.Connection, message_id: int) -> int:
        row = db.execute("SELECT conversation_id FROM messages WHERE id = ?",
                         (message_id,)).fetchone()
        if row is None:
            raise HistoryError(f"No message {message_id} in the history.")
        return int(row[0])

    # -- branches -------------------------------------------------------------------------

    def activate(self, message_id: int, cid: int | None = None) -> int:
        """Make the path through `message_id` the one shown and sent: the message and its
        ancestors each become the active one of their siblings, and the path goes on
        through its active descendants. Returns its conversation's id (which must be `cid`
        when given)."""
        with self._using() as db, transaction(db):
            found = self._conversation_of(db, message_id)
            if cid is not None and found != cid:
                raise HistoryError(f"Conversation {cid} has no message {message_id}.")
            Shape.read(db, found).activate(db, message_id)
        return found

    def undo(self, cid: int | str) -> int | None:
        """Take the last exchange off the active path; it is kept, as an abandoned branch
        (its prompt inactive, so the reply before it has no active child) that `activate`
        brings back. Returns the undone prompt's id, or None when the path is empty."""
        number = self._existing(cid)
        with self._using() as db, transaction(db):
            shape = Shape.read(db, number)
            path = shape.path()
            if not path:
                return None
            end = shape.nodes[path[-1]]
            role = db.execute("SELECT role FROM messages WHERE id = ?", (end.id,)).fetchone()[0]
            prompt = end.id if role == "user" or end.parent_id is None else end.parent_id
            db.execute("UPDATE messages SET active = 0 WHERE id = ?", (prompt,))
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), number))
        return prompt

    def fork(self, cid: int | str, message_id: int | None = None) -> int:
        """A new conversation that is a copy of conversation `cid`'s path up to and including
        `message_id` (a prompt comes with its active reply: an exchange is the unit of
        context), or of its whole active path. Returns the new conversation's id."""
        number = self._existing(cid)
        with self._using() as db, transaction(db):
            shape = Shape.read(db, number)
            if message_id is None:
                ids = shape.path()
            elif message_id not in shape.nodes:
                raise HistoryError(f"Conversation {number} has no message {message_id}.")
            else:
                ids = shape.ancestry(message_id)
                role = db.execute("SELECT role FROM messages WHERE id = ?",
                                  (message_id,)).fetchone()[0]
                reply = shape.active_child(message_id) if role == "user" else None
                ids += [reply.id] if reply is not None else []
            if not ids:
                raise HistoryError(f"Conversation {number} has no messages to fork.")
            now = time.time()
            forked = db.execute(
                "INSERT INTO conversations (title, model, created, updated) "
                "SELECT title, model, ?, ? FROM conversations WHERE id = ?",
                (now, now, number)).lastrowid
            parent = None
            for seq, original in enumerate(ids):
                parent = db.execute(
                    f"INSERT INTO messages (conversation_id, seq, parent_id, active, {COPY_INTO}) "
                    f"SELECT ?, ?, ?, 1, {COPY_FROM} FROM messages WHERE id = ?",
                    (forked, seq, parent, original)).lastrowid
                db.execute("INSERT INTO message_blobs (message_id, digest) "
                           "SELECT ?, digest FROM message_blobs WHERE message_id = ?",
                           (parent, original))
        assert forked is not None
        return forked

    def import_json(self, data: object) -> int:
        """Store a conversation exported with `as_json` (any version) as a new conversation,
        its whole tree and attachments; returns its id. Raises `HistoryError` with one line
        when `data` is not such an export."""
        from termchat.history.importing import parse_export, write_import

        imported = parse_export(data)
        with self._using() as db, transaction(db):
            return write_import(db, imported, time.time())

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
        """Delete a conversation, its messages and their search entries, and the attachments
        no other conversation holds."""
        number = parse_cid(cid)
        with self._using() as db, transaction(db):
            digests = carried_by(db, number)
            db.execute("DELETE FROM messages WHERE conversation_id = ?", (number,))
            done = db.execute("DELETE FROM conversations WHERE id = ?", (number,)).rowcount
            drop_unused(db, digests)
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


# A fork copies every column but its conversation, place, parent and flag; nothing will
# write a copied reply that was still streaming.
_COPIED = ("role", "text", "reasoning", "parts", "tools", "model", "provider", "status",
           "finish_reason", "finish_kind", "input_tokens", "output_tokens", "cached_tokens",
           "reasoning_tokens", "ttft", "duration", "error", "error_kind", "continuations",
           "created", "updated")
COPY_INTO = ", ".join(_COPIED)
COPY_FROM = ", ".join("CASE status WHEN 'streaming' THEN 'interrupted' ELSE status END"
                      if column == "status" else column for column in _COPIED)


def _previews(db: sqlite3.Connection, cids: list[int]) -> dict[int, str]:
    """Each conversation's last words: the last message with text on its active path."""
    pending = {cid: Shape.read(db, cid).path() for cid in cids}
    found: dict[int, str] = {}
    while pending:
        # The path's last message nearly always has text, else the prompt before it.
        batch = {cid: path[-2:] for cid, path in pending.items()}
        texts = dict(db.execute(
            f"SELECT id, substr(text, 1, {PREVIEW_LENGTH * 4}) FROM messages "
            f"WHERE id {IN_IDS} AND text != ''",
            (json.dumps([i for ids in batch.values() for i in ids]),)).fetchall())
        for cid, ids in batch.items():
            text = next((texts[i] for i in reversed(ids) if i in texts), None)
            if text is not None or len(pending[cid]) <= len(ids):
                found[cid] = text or ""
                del pending[cid]
            else:
                del pending[cid][-len(ids):]
    return found


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


