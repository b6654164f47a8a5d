"""The database's schema and its migrations, and opening a file only its user can read."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from termchat.history.liveness import writer_alive
from termchat.history.problems import HistoryError

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
    (
        # Search covers tool names, arguments and results too: the index gets a column.
        "DROP TRIGGER messages_fts_insert",
        "DROP TRIGGER messages_fts_delete",
        "DROP TRIGGER messages_fts_update",
        "DROP TABLE messages_fts",
        # The message it follows (a prompt the reply before it, a reply its prompt; NULL for
        # a first prompt), and whether it is the one shown and sent of its parent's children.
        "ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages (id)",
        "ALTER TABLE messages ADD COLUMN active INTEGER NOT NULL DEFAULT 1 "
        "CHECK (active IN (0, 1))",
        # NULL: `text` is the only part (every v2 row). Else a JSON list, see `encoding`.
        "ALTER TABLE messages ADD COLUMN parts TEXT",
        "ALTER TABLE messages ADD COLUMN tools TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE messages ADD COLUMN continuations INTEGER NOT NULL DEFAULT 0",
        # Every stored conversation becomes one branch: each message follows the one before.
        """UPDATE messages SET parent_id = (
            SELECT prior.id FROM messages prior
            WHERE prior.conversation_id = messages.conversation_id
                AND prior.seq < messages.seq
            ORDER BY prior.seq DESC LIMIT 1)""",
        # Covers reading a conversation's shape (its path, each message's alternatives)
        # without touching the rows and their long texts.
        "CREATE INDEX messages_tree ON messages (conversation_id, parent_id, active, seq)",
        # Finding a message's children: the foreign key's own checks need it too.
        "CREATE INDEX messages_by_parent ON messages (parent_id)",
        "CREATE UNIQUE INDEX messages_one_active_child ON messages (parent_id) "
        "WHERE active = 1",
        "CREATE UNIQUE INDEX messages_one_active_root ON messages (conversation_id) "
        "WHERE active = 1 AND parent_id IS NULL",
        # Attachments, stored once however often they are sent, in this same private file.
        """CREATE TABLE blobs (
            digest TEXT PRIMARY KEY,
            media_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            data BLOB NOT NULL
        )""",
        # Which messages carry which blob: a blob no message carries is deleted with the last
        # conversation that had it.
        """CREATE TABLE message_blobs (
            message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            digest TEXT NOT NULL REFERENCES blobs (digest),
            PRIMARY KEY (message_id, digest)
        ) WITHOUT ROWID""",
        "CREATE INDEX message_blobs_by_digest ON message_blobs (digest)",
        """CREATE VIRTUAL TABLE messages_fts USING fts5(
            text, tools, content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2'
        )""",
        """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, text, tools) VALUES (new.id, new.text, new.tools);
        END""",
        """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, text, tools)
                VALUES ('delete', old.id, old.text, old.tools);
        END""",
        """CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, tools ON messages
        WHEN old.text IS NOT new.text OR old.tools IS NOT new.tools BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, text, tools)
                VALUES ('delete', old.id, old.text, old.tools);
            INSERT INTO messages_fts (rowid, text, tools) VALUES (new.id, new.text, new.tools);
        END""",
        "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def create_private(path: Path) -> None:
    """Create the directory and file readable by the user alone (SQLite's -wal and -shm
    files copy the database file's mode)."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def migrate_and_sweep(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema up to date and mark replies whose writer died as interrupted.

    One write transaction, taken even when there is nothing to do: it proves the database
    is writable now, instead of failing on the first prompt.
    """
    with transaction(db):
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
        stale = [(row["id"], row["updated"]) for row in db.execute(
            "SELECT id, writer_host, writer_pid, updated FROM messages "
            "WHERE status = 'streaming'")
            if not writer_alive(row["writer_host"], row["writer_pid"], row["updated"], now)]
        db.executemany("UPDATE messages SET status = 'interrupted', writer_host = NULL, "
                       "writer_pid = NULL WHERE id = ? AND status = 'streaming' "
                       "AND updated = ?", stale)


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
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


@contextmanager
def snapshot(db: sqlite3.Connection) -> Iterator[None]:
    """Reads that see one state of the database, whatever other processes write meanwhile
    (a conversation's shape and then its rows, say)."""
    db.execute("BEGIN")
    try:
        yield
    finally:
        if db.in_transaction:
            db.execute("COMMIT")


def lenient_text(data: bytes) -> str:
    """A damaged row (not UTF-8) is read with replacement characters instead of failing, and
    its bytes never reach an error message."""
    return data.decode("utf-8", "replace")
