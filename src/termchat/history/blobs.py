"""Attachments' bytes, stored once each (by sha256 digest) in the history's own file: written
with the message that carries them, read back to load or export it, deleted with the last
message that had them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from termchat.content import Attachment

# Ids go to SQLite as one JSON list: no limit on how many, one statement prepared.
IN_IDS = "IN (SELECT value FROM json_each(?))"


def link_blobs(db: sqlite3.Connection, message_id: int,
               attachments: Iterable[Attachment]) -> None:
    """Store each attachment's bytes unless they are stored already, and note that the
    message carries them."""
    for attachment in attachments:
        db.execute("INSERT INTO blobs (digest, media_type, size, data) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (digest) DO NOTHING",
                   (attachment.digest, attachment.media_type, attachment.size,
                    attachment.data))
        db.execute("INSERT OR IGNORE INTO message_blobs (message_id, digest) VALUES (?, ?)",
                   (message_id, attachment.digest))


def blob_data(db: sqlite3.Connection, message_ids: list[int]) -> dict[str, bytes]:
    """The bytes of the attachments these messages carry, by digest."""
    return dict(db.execute(
        "SELECT digest, data FROM blobs WHERE digest IN (SELECT digest FROM message_blobs "
        f"WHERE message_id {IN_IDS})", (json.dumps(message_ids),)).fetchall())


def carried_by(db: sqlite3.Connection, cid: int) -> list[str]:
    """The digests of the attachments conversation `cid` carries."""
    return [row[0] for row in db.execute(
        "SELECT DISTINCT digest FROM message_blobs WHERE message_id IN "
        "(SELECT id FROM messages WHERE conversation_id = ?)", (cid,))]


def drop_unused(db: sqlite3.Connection, digests: list[str]) -> None:
    """Delete those of these blobs that no message carries any more."""
    db.execute(f"DELETE FROM blobs WHERE digest {IN_IDS} AND NOT EXISTS "
               "(SELECT 1 FROM message_blobs WHERE digest = blobs.digest)",
               (json.dumps(digests),))
