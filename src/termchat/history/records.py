"""What the store hands out: conversations, messages and search hits as values, built from
rows by column name."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from termchat.content import Attachment, Part
from termchat.errors import ProviderError
from termchat.events import Finish, FinishKind, Usage
from termchat.history.encoding import part_json, stored_parts
from termchat.history.liveness import writer_alive
from termchat.history.problems import not_found
from termchat.present import iso_time

if TYPE_CHECKING:
    from termchat.turn import Exchange, Reply

TITLE_LENGTH = 60

@dataclass(frozen=True)
class ConversationSummary:
    """One line of `--list`: what a conversation is and how recent."""

    id: int
    title: str
    model: str
    created: float
    updated: float
    message_count: int
    """Every message stored, on every branch."""
    preview: str
    """The last words on the active branch."""


@dataclass(frozen=True)
class Siblings:
    """A message among its alternatives (its parent's children, or the conversation's first
    prompts), oldest first: `‹ position/count ›`."""

    ids: tuple[int, ...]
    position: int
    """1 for the oldest."""

    @property
    def count(self) -> int:
        return len(self.ids)


ONLY = Siblings((), 1)


@dataclass(frozen=True)
class StoredMessage:
    """A message as stored; timestamps are Unix seconds, durations seconds.

    `parent_id` is the message it follows (None for a first prompt); `active` says it is
    the one of its siblings shown and sent as context. `parts` are its content in order;
    an attachment's `data` is empty unless the store was asked for the bytes.
    """

    id: int
    parent_id: int | None
    active: bool
    seq: int
    role: str
    text: str
    reasoning: str
    parts: tuple[Part, ...]
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
    continuations: int = 0
    """How many times the reply was continued after it stopped."""
    siblings: Siblings = ONLY

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        return tuple(part for part in self.parts if isinstance(part, Attachment))

    def to_reply(self) -> Reply:
        """The reply as `turn` knows it, with its timings rebuilt on a clock starting at 0."""
        from termchat.turn import Reply, Status

        return Reply(
            model=self.model, provider=self.provider, initial_parts=list(self.parts),
            reasoning=self.reasoning, usage=self.usage, finish=self.finish,
            status=Status(self.status),
            error=None if self.error is None else provider_error(self.error_kind, self.error),
            started_at=0.0, first_token_at=self.ttft,
            ended_at=self.duration if self.duration is not None else 0.0,
            continued=self.continuations,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "parent": self.parent_id, "active": self.active,
            "seq": self.seq, "role": self.role, "text": self.text, "reasoning": self.reasoning,
            "parts": [part_json(part, inline=True) for part in self.parts],
            "model": self.model, "provider": self.provider, "status": self.status,
            "finish_reason": None if self.finish is None else self.finish.reason,
            "finish_kind": None if self.finish is None else self.finish.kind.value,
            "usage": {"input_tokens": self.usage.input_tokens,
                      "output_tokens": self.usage.output_tokens,
                      "cached_tokens": self.usage.cached_tokens,
                      "reasoning_tokens": self.usage.reasoning_tokens},
            "ttft": self.ttft, "duration": self.duration,
            "error": self.error, "error_kind": self.error_kind,
            "continuations": self.continuations,
            "created": iso_time(self.created), "updated": iso_time(self.updated),
        }


@dataclass(frozen=True)
class StoredConversation:
    """A conversation and its messages: the active path in order (`HistoryStore.get`), or
    every message of every branch in the order they were written (`HistoryStore.tree`)."""

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
    message_id: int
    """The message itself: `HistoryStore.activate` makes the path through it the one shown."""


@dataclass
class LoadedConversation:
    """What continuing a conversation needs: its model and its exchanges, `exchanges` the
    active path, `tree` all of them, every branch, in the order they were made, and
    `chosen` the one active at each point of the tree.

    `model` is the model name the user chose (an alias or `provider:model`); `label` is the
    `provider:model` of the last reply, to fall back on when that alias no longer exists.
    """

    id: int
    title: str
    model: str
    label: str
    exchanges: list[Exchange]
    tree: list[Exchange]
    chosen: list[Exchange]
    whole: bool = True
    """False when only the end was read (`HistoryStore.load`'s `recent`)."""


def message_from_row(row: sqlite3.Row, now: float, siblings: Siblings = ONLY,
                     blobs: Mapping[str, bytes] | None = None) -> StoredMessage:
    status = row["status"]
    if status == "streaming" and not writer_alive(row["writer_host"], row["writer_pid"],
                                                  row["updated"], now):
        status = "interrupted"
    return StoredMessage(
        id=row["id"], parent_id=row["parent_id"], active=bool(row["active"]),
        seq=row["seq"], role=row["role"], text=row["text"], reasoning=row["reasoning"],
        parts=stored_parts(row["text"], row["reasoning"], row["parts"], blobs),
        model=row["model"], provider=row["provider"], status=status,
        finish=finish_of(row["finish_reason"], row["finish_kind"]),
        usage=Usage(row["input_tokens"], row["output_tokens"], row["cached_tokens"],
                    row["reasoning_tokens"]),
        ttft=row["ttft"], duration=row["duration"], error=row["error"],
        error_kind=row["error_kind"], created=row["created"], updated=row["updated"],
        continuations=row["continuations"], siblings=siblings)


def finish_of(reason: str | None, kind: str | None) -> Finish | None:
    """The stored finish; the kind is kept because it is not always the raw reason's (an
    OpenAI refusal ends with a plain `stop`)."""
    if reason is None:
        return None
    try:
        return Finish(reason, FinishKind(kind or ""))
    except ValueError:  # no kind stored, or one this version does not know
        return Finish.from_raw(reason)


def usage_values(usage: Usage) -> tuple[int | None, ...]:
    return (usage.input_tokens, usage.output_tokens, usage.cached_tokens,
            usage.reasoning_tokens)


def provider_error(kind: str | None, message: str) -> ProviderError:
    classes: list[type[ProviderError]] = [ProviderError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    return next((cls for cls in classes if cls.kind == kind), ProviderError)(message)


def parse_cid(cid: int | str) -> int:
    if isinstance(cid, int):
        return cid
    if cid.strip().isdigit():
        return int(cid)
    raise not_found(cid)


def title_of(prompt: str) -> str:
    first = next((line for line in prompt.splitlines() if line.strip()), "")
    return one_line(first, TITLE_LENGTH) or "(empty prompt)"


def one_line(text: str, limit: int | None = None) -> str:
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        return text[:limit - 1].rstrip() + "…"
    return text
