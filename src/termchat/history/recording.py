"""Recording a chat as it happens: each prompt before it is sent, each reply as it streams
and when it ends, each step its own committed transaction."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING

from termchat.errors import ConfigError
from termchat.history.liveness import host_name
from termchat.history.problems import HistoryError
from termchat.history.records import title_of, usage_values
from termchat.history.schema import transaction
from termchat.untrusted import repair

if TYPE_CHECKING:
    from termchat.config import Config, ModelConfig
    from termchat.content import Attachment
    from termchat.history.store import HistoryStore
    from termchat.turn import Conversation, Recorder, Reply


class ConversationRecord:
    """The `History` of one conversation: stores each prompt before it is sent."""

    def __init__(self, store: HistoryStore, cid: int | None) -> None:
        self.store = store
        self.id = cid

    def user_prompt(self, prompt: str, model: ModelConfig,
                    attachments: tuple[Attachment, ...] = ()) -> Recorder:
        """Commit the prompt and an empty `streaming` reply, and return that reply's recorder.

        The conversation row is created with the first prompt; its title is that prompt's
        first line. On a write failure this warns once and returns a recorder that saves
        nothing.
        """
        message_id = self.store.write(lambda db: self._insert(db, prompt, model))
        if message_id is None:
            return _Unsaved()
        return MessageRecorder(self.store, message_id)

    def _insert(self, db: sqlite3.Connection, prompt: str, model: ModelConfig) -> int:
        now = time.time()
        with transaction(db):
            if self.id is None:
                cid = db.execute(
                    "INSERT INTO conversations (title, model, created, updated) "
                    "VALUES (?, ?, ?, ?)",
                    (title_of(repair(prompt)), model.name, now, now)).lastrowid
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
                                           model.provider, "streaming", host_name(), os.getpid(),
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
        values = (repair(reply.text), repair(reply.reasoning), *usage_values(reply.usage),
                  reply.ttft, reply.elapsed, time.time(), self.message_id)
        if self.store.write(lambda db: db.execute(
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
                  None if finish is None else finish.kind.value, *usage_values(reply.usage),
                  reply.ttft, reply.elapsed, None if error is None else repair(error.message),
                  None if error is None else error.kind, now, self.message_id)

        def write(db: sqlite3.Connection) -> None:
            with transaction(db):
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

        self.store.write(write)


class _Unsaved:
    """The recorder for a reply whose prompt could not be saved."""

    def checkpoint(self, reply: Reply) -> None:
        pass

    def finish(self, reply: Reply) -> None:
        pass


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
