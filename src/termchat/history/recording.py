"""Recording a chat as it happens: each prompt before it is sent, each reply as it streams
and when it ends, each step its own committed transaction; and the branches a chat grows
(regenerate, edit and resend, continue, flip, undo)."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING

from termchat.content import Attachment, Text
from termchat.errors import ConfigError
from termchat.events import Usage
from termchat.history.blobs import link_blobs
from termchat.history.encoding import Columns, columns
from termchat.history.liveness import host_name
from termchat.history.problems import HistoryError
from termchat.history.records import title_of, usage_values
from termchat.history.schema import transaction
from termchat.history.tree import Node, Shape
from termchat.untrusted import repair

if TYPE_CHECKING:
    from termchat.config import Config, ModelConfig
    from termchat.history.store import HistoryStore
    from termchat.turn import Conversation, Exchange, Recorder, Reply


class ConversationRecord:
    """The `History` of one conversation: stores each prompt before it is sent, and the
    branches the conversation grows (a regenerated reply, an edited prompt, a continued
    reply), each made the active path.

    `follows` is the reply the next `user_prompt` follows: the last one recorded here, or
    the end of the active path when the conversation was resumed.
    """

    def __init__(self, store: HistoryStore, cid: int | None, follows: int | None = None
                 ) -> None:
        self.store = store
        self.id = cid
        self.follows = follows

    def user_prompt(self, prompt: str, model: ModelConfig,
                    attachments: tuple[Attachment, ...] = ()) -> Recorder:
        """Commit the prompt (and its attachments) and an empty `streaming` reply, and return
        that reply's recorder.

        The conversation row is created with the first prompt; its title is that prompt's
        first line. On a write failure this warns once and returns a recorder that saves
        nothing.
        """
        return self.prompt_after(self.follows, prompt, model, attachments)

    def prompt_after(self, reply_id: int | None, prompt: str, model: ModelConfig,
                     attachments: tuple[Attachment, ...] = ()) -> Recorder:
        """Edit and resend: as `user_prompt`, but the prompt follows stored reply `reply_id`
        (None: a new first prompt). It becomes the active one of that reply's children (a
        prompt that followed it before is kept as an alternative), with its path."""
        ids = self.store.write(
            lambda db: self._insert(db, reply_id, prompt, model, attachments))
        if ids is None:
            return _Unsaved()
        self.follows = ids[1]
        return MessageRecorder(self.store, ids[1], ids[0])

    def _insert(self, db: sqlite3.Connection, parent: int | None, prompt: str,
                model: ModelConfig, attachments: tuple[Attachment, ...]) -> tuple[int, int]:
        now = time.time()
        stored = columns([*([Text(prompt)] if prompt else []), *attachments])
        with transaction(db):
            if self.id is None:
                if parent is not None:
                    raise HistoryError(f"message {parent} is not in this conversation")
                cid = db.execute(
                    "INSERT INTO conversations (title, model, created, updated) "
                    "VALUES (?, ?, ?, ?)",
                    (title_of(stored.text), model.name, now, now)).lastrowid
                assert cid is not None
            else:
                cid = self._touch(db, model, now)
            shape = self._shape_with(db, cid, parent, "assistant")
            _deactivate(db, shape.active_child(parent))
            seq = _next_seq(shape)
            prompt_id = db.execute(
                f"INSERT INTO messages ({INSERTED}) VALUES ({_marks(INSERTED)})",
                (cid, seq, parent, "user", stored.text, stored.reasoning, stored.parts,
                 stored.tools, model.model, model.provider, "complete", None, None, now,
                 now)).lastrowid
            assert prompt_id is not None
            link_blobs(db, prompt_id, stored.attachments)
            reply_id = _insert_reply(db, cid, prompt_id, seq + 1, model, now)
        self.id = cid
        return prompt_id, reply_id

    def regenerate(self, prompt_id: int, model: ModelConfig) -> Recorder:
        """A new reply to stored prompt `prompt_id`, made active (with the prompt's path);
        the earlier replies stay as its alternatives. Returns the new reply's recorder."""
        def insert(db: sqlite3.Connection) -> int:
            now = time.time()
            with transaction(db):
                cid = self._touch(db, model, now)
                shape = self._shape_with(db, cid, prompt_id, "user")
                _deactivate(db, shape.active_child(prompt_id))
                return _insert_reply(db, cid, prompt_id, _next_seq(shape), model, now)

        reply_id = self.store.write(insert)
        if reply_id is None:
            return _Unsaved()
        self.follows = reply_id
        return MessageRecorder(self.store, reply_id, prompt_id)

    def continue_reply(self, reply_id: int) -> Recorder:
        """Continue stored reply `reply_id` in place: the recorder is handed the whole reply
        (what it had, then what the continuation adds: its parts, summed usage, time) and
        updates the same message. The row is `streaming` from now until `finish`, counts one
        more continuation, and the path through it becomes the active one."""
        def begin(db: sqlite3.Connection) -> tuple[int | None, int]:
            with transaction(db):
                cid = self._touch(db, None, time.time())
                shape = self._shape_with(db, cid, reply_id, "assistant")
                db.execute("UPDATE messages SET status = 'streaming', writer_host = ?, "
                           "writer_pid = ?, continuations = continuations + 1, updated = ? "
                           "WHERE id = ?", (host_name(), os.getpid(), time.time(), reply_id))
                return shape.nodes[reply_id].parent_id, shape.through(reply_id)[-1]

        found = self.store.write(begin)
        if found is None:
            return _Unsaved()
        prompt_id, self.follows = found
        return MessageRecorder(self.store, reply_id, prompt_id)

    def set_active(self, message_id: int) -> None:
        """Flip to an alternative: the path through `message_id` becomes the active one (see
        `HistoryStore.activate`), and the next prompt follows its end. Raises
        `HistoryError`."""
        self.store.activate(message_id, self._id())
        self.follows = self.store.path_end(self._id())

    def undo(self) -> int | None:
        """Take the last exchange off the active path, kept as an abandoned branch (see
        `HistoryStore.undo`); the next prompt follows the reply before it. Raises
        `HistoryError`."""
        undone = self.store.undo(self._id())
        self.follows = self.store.path_end(self._id())
        return undone

    def _id(self) -> int:
        if self.id is None:
            raise HistoryError("nothing is stored in this conversation yet")
        return self.id

    def _touch(self, db: sqlite3.Connection, model: ModelConfig | None, now: float) -> int:
        cid = self._id()
        done = db.execute("UPDATE conversations SET model = coalesce(?, model), updated = ? "
                          "WHERE id = ?", (None if model is None else model.name, now, cid)
                          ).rowcount
        if not done:
            raise HistoryError(f"conversation {cid} was deleted")
        return cid

    @staticmethod
    def _shape_with(db: sqlite3.Connection, cid: int, message_id: int | None,
                    role: str) -> Shape:
        """The conversation's shape, with `message_id` (a `role` message of it) and its
        ancestors made the active path."""
        shape = Shape.read(db, cid)
        if message_id is None:
            return shape
        row = db.execute("SELECT role FROM messages WHERE id = ? AND conversation_id = ?",
                         (message_id, cid)).fetchone()
        if row is None or row[0] != role:
            what = "reply" if role == "assistant" else "prompt"
            raise HistoryError(f"message {message_id} is not a {what} of conversation {cid}")
        shape.activate(db, message_id)
        return shape


# The columns a new message is written with (the rest keep their defaults).
INSERTED = ("conversation_id, seq, parent_id, role, text, reasoning, parts, tools, model, "
            "provider, status, writer_host, writer_pid, created, updated")


def _marks(names: str) -> str:
    return ", ".join("?" for _ in names.split(","))


def _insert_reply(db: sqlite3.Connection, cid: int, prompt_id: int, seq: int,
                  model: ModelConfig, now: float) -> int:
    reply_id = db.execute(
        f"INSERT INTO messages ({INSERTED}) VALUES ({_marks(INSERTED)})",
        (cid, seq, prompt_id, "assistant", "", "", None, "", model.model, model.provider,
         "streaming", host_name(), os.getpid(), now, now)).lastrowid
    assert reply_id is not None
    return reply_id


def _deactivate(db: sqlite3.Connection, node: Node | None) -> None:
    if node is not None:
        db.execute("UPDATE messages SET active = 0 WHERE id = ?", (node.id,))


def _next_seq(shape: Shape) -> int:
    return max((node.seq for node in shape.nodes.values()), default=-1) + 1


class MessageRecorder:
    """Saves one reply as it streams (`checkpoint`) and when it ends (`finish`): its parts,
    text, usage, status and timings.

    Each call is its own committed transaction, so a killed process loses at most the text
    since the last checkpoint.
    """

    def __init__(self, store: HistoryStore, message_id: int, prompt_id: int | None = None
                 ) -> None:
        self.store = store
        self.message_id = message_id
        self.prompt_id = prompt_id
        self._checkpoints = True

    @property
    def message_ids(self) -> tuple[int, int] | None:
        """The prompt's and the reply's message ids, as `Exchange.message_ids`."""
        return None if self.prompt_id is None else (self.prompt_id, self.message_id)

    @staticmethod
    def _values(reply: Reply) -> tuple[Columns, Usage, float | None, float]:
        return columns(reply.parts, reply.reasoning), reply.usage, reply.ttft, reply.elapsed

    def checkpoint(self, reply: Reply) -> None:
        # After one failure, stop: each retry could block the chat for the lock timeout.
        if not self._checkpoints:
            return
        stored, usage, ttft, duration = self._values(reply)

        def write(db: sqlite3.Connection) -> bool:
            with transaction(db):
                db.execute(
                    "UPDATE messages SET text = ?, reasoning = ?, parts = ?, tools = ?, "
                    "status = 'streaming', input_tokens = ?, output_tokens = ?, "
                    "cached_tokens = ?, reasoning_tokens = ?, ttft = ?, duration = ?, "
                    "updated = ? WHERE id = ?",
                    (stored.text, stored.reasoning, stored.parts, stored.tools,
                     *usage_values(usage), ttft, duration, time.time(), self.message_id))
                link_blobs(db, self.message_id, stored.attachments)
            return True

        if self.store.write(write) is None:
            self._checkpoints = False

    def finish(self, reply: Reply) -> None:
        # A reply that ended without reaching a final state stopped for a reason nobody saw.
        status = reply.status.value if reply.status.final else "interrupted"
        error, finish = reply.error, reply.finish
        stored, usage, ttft, duration = self._values(reply)
        now = time.time()
        values = (stored.text, stored.reasoning, stored.parts, stored.tools, reply.model,
                  reply.provider, status, None if finish is None else finish.reason,
                  None if finish is None else finish.kind.value, *usage_values(usage),
                  ttft, duration, None if error is None else repair(error.message),
                  None if error is None else error.kind, now, self.message_id)

        def write(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute(
                    "UPDATE messages SET text = ?, reasoning = ?, parts = ?, tools = ?, "
                    "model = coalesce(nullif(?, ''), model), "
                    "provider = coalesce(nullif(?, ''), provider), status = ?, "
                    "finish_reason = ?, finish_kind = ?, input_tokens = ?, output_tokens = ?, "
                    "cached_tokens = ?, reasoning_tokens = ?, ttft = ?, duration = ?, "
                    "error = ?, error_kind = ?, updated = ?, writer_host = NULL, "
                    "writer_pid = NULL WHERE id = ?", values)
                link_blobs(db, self.message_id, stored.attachments)
                db.execute("UPDATE conversations SET updated = ? WHERE id = "
                           "(SELECT conversation_id FROM messages WHERE id = ?)",
                           (now, self.message_id))

        self.store.write(write)


class _Unsaved:
    """The recorder for a reply whose prompt could not be saved."""

    message_ids = None

    def checkpoint(self, reply: Reply) -> None:
        pass

    def finish(self, reply: Reply) -> None:
        pass


def continue_conversation(config: Config, store: HistoryStore, cid: int | str, *,
                          recent: int | None = None) -> Conversation:
    """Stored conversation `cid`, ready to continue: new turns are recorded into it.

    Its model is the alias it was last used with, or, when that alias is gone from the
    config, the `provider:model` of its last reply. Raises `HistoryError` or `ConfigError`.

    With `recent`, a long conversation comes with its last `recent` exchanges alone (what
    opening it shows first) and `Conversation.older` reads the rest: a front end calls
    `Conversation.load_older` once its first frame is out, and before anything uses the
    conversation beyond showing it.
    """
    from termchat.turn import Conversation

    loaded = store.load(cid, recent=recent)
    try:
        model = config.resolve_model(loaded.model or loaded.label)
    except ConfigError:
        if not loaded.label or loaded.label == loaded.model:
            raise
        model = config.resolve_model(loaded.label)
    conversation = Conversation(model, history=store.resume(loaded.id))
    conversation.restore(loaded.tree, loaded.chosen)
    if not loaded.whole:
        def older(known: list[Exchange]) -> tuple[list[Exchange], list[Exchange]]:
            whole = store.load(loaded.id, known=known)
            return whole.tree, whole.chosen

        conversation.older = older
    return conversation
