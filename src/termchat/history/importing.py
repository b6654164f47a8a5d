"""Importing an exported conversation (`export.as_json`, version 1 or 2): outside input,
checked field by field, then stored as a new conversation with its whole tree and its
attachments.

Version 1 (a list of messages) becomes a single branch. A message that was still streaming
when it was exported is imported `interrupted`: nothing will write it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from termchat.content import Attachment, Part, Reasoning, Text, ToolCall, ToolResult
from termchat.events import FinishKind
from termchat.history.blobs import link_blobs
from termchat.history.encoding import Columns, columns, part_from_json
from termchat.history.export import FORMAT
from termchat.history.problems import HistoryError
from termchat.history.records import one_line, title_of

STATUSES = ("complete", "cancelled", "error", "interrupted")
USAGE = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
# What each role's message may hold.
ALLOWED: dict[str, tuple[type, ...]] = {
    "user": (Text, Attachment),
    "assistant": (Text, Reasoning, ToolCall, ToolResult),
}


class BadExport(ValueError):
    """What is wrong with the data, for the one line `parse_export` raises."""


@dataclass(frozen=True)
class ImportedMessage:
    key: object
    parent: object
    active: bool
    role: str
    stored: Columns
    values: tuple[Any, ...]
    """model, provider, status, finish_reason, finish_kind, the four usage counts, ttft,
    duration, error, error_kind, continuations, created, updated: as `VALUES` names them."""


VALUES = ("model, provider, status, finish_reason, finish_kind, input_tokens, output_tokens, "
          "cached_tokens, reasoning_tokens, ttft, duration, error, error_kind, continuations, "
          "created, updated")


@dataclass(frozen=True)
class Imported:
    title: str
    model: str
    created: float
    messages: list[ImportedMessage]
    """Parents before their children."""


def parse_export(data: object) -> Imported:
    """The conversation `data` holds, checked. Raises `HistoryError` with one line."""
    try:
        return _parse(data)
    except BadExport as exc:
        raise HistoryError(f"Not a conversation termchat can import: {exc}.") from None


def _parse(data: object) -> Imported:
    top = _object(data, "the export")
    if top.get("format") != FORMAT:
        raise BadExport(f"its format is not {FORMAT!r}")
    version = top.get("version")
    if version not in (1, 2) or isinstance(version, bool):
        raise BadExport(f"version {version!r} is not one this termchat knows (1 or 2)")
    blobs = _attachments(top.get("attachments", {}))
    items = top.get("messages")
    if not isinstance(items, list):
        raise BadExport("'messages' must be a list")
    messages: list[ImportedMessage] = []
    for index, item in enumerate(items):
        where = f"message {index + 1}"
        try:
            messages.append(_message(_object(item, where), version, index, blobs))
        except BadExport as exc:
            raise BadExport(f"{where}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise BadExport(f"{where}: {exc}") from None
    _check_tree(messages)
    title = _string(top, "title")
    return Imported(one_line(title, 600) or title_of(""), _string(top, "model"),
                    _time(top, "created"), messages)


def _message(item: Mapping[str, Any], version: int, index: int,
             blobs: Mapping[str, bytes]) -> ImportedMessage:
    role = item.get("role")
    if role not in ALLOWED:
        raise BadExport(f"role {role!r} is neither 'user' nor 'assistant'")
    text, reasoning = _string(item, "text"), _string(item, "reasoning", "")
    parts: list[Part]
    key: object
    parent: object
    if version == 1:
        key, parent, active = index, index - 1 if index else None, True
        parts = [Text(text)] if text else []
    else:
        key, parent, flag = item.get("id"), item.get("parent"), item.get("active")
        if not isinstance(flag, bool):
            raise BadExport("'active' must be true or false")
        active = flag
        raw = item.get("parts")
        if not isinstance(raw, list):
            raise BadExport("'parts' must be a list")
        parts = [part_from_json(part, lambda _kind, part: _string(part, "text"), blobs)
                 for part in raw]
    for part in parts:
        if not isinstance(part, ALLOWED[role]):
            raise BadExport(f"a {role} message cannot hold a {type(part).__name__} part")
        if isinstance(part, Attachment) and part.digest not in blobs:
            raise BadExport(f"attachment {part.name!r} is not among the attachments")
    stored = columns(parts, reasoning)
    status = _string(item, "status")
    if status == "streaming":
        status = "interrupted"
    if status not in STATUSES:
        raise BadExport(f"status {status!r} is not one termchat writes")
    finish_kind = _optional(item, "finish_kind")
    if finish_kind is not None:
        FinishKind(finish_kind)
    usage = _object(item.get("usage", {}), "'usage'")
    continuations = item.get("continuations", 0)
    if not _count(continuations):
        raise BadExport("'continuations' must be a whole number")
    values = (_string(item, "model", ""), _string(item, "provider", ""), status,
              _optional(item, "finish_reason"), finish_kind,
              *(_usage(usage, name) for name in USAGE),
              _seconds(item, "ttft"), _seconds(item, "duration"),
              _optional(item, "error"), _optional(item, "error_kind"), continuations,
              _time(item, "created"), _time(item, "updated"))
    return ImportedMessage(key, parent, active, role, stored, values)


def _check_tree(messages: list[ImportedMessage]) -> None:
    """Ids are unique, parents come first and have the other role; one active child each,
    one active first prompt."""
    roles: dict[object, str] = {}
    active_children: set[object] = set()
    for index, message in enumerate(messages):
        where = f"message {index + 1}"
        if not isinstance(message.key, int | str) or isinstance(message.key, bool):
            raise BadExport(f"{where}: its id must be a number or a string")
        if message.key in roles:
            raise BadExport(f"{where}: another message has the id {message.key!r}")
        if message.parent is None:
            if message.role != "user":
                raise BadExport(f"{where} is a reply to nothing")
        elif not isinstance(message.parent, int | str) or message.parent not in roles:
            raise BadExport(f"{where} comes before its parent")
        elif roles[message.parent] == message.role:
            raise BadExport(f"{where} has the same role as its parent")
        roles[message.key] = message.role
        if message.active:
            if message.parent in active_children:
                raise BadExport(f"{where}: its parent has two active children"
                                if message.parent is not None else
                                f"{where}: two first prompts are active")
            active_children.add(message.parent)


def _attachments(value: object) -> dict[str, bytes]:
    blobs: dict[str, bytes] = {}
    for digest, entry in _object(value, "'attachments'").items():
        entry = _object(entry, f"attachment {digest}")
        try:
            data = base64.b64decode(_string(entry, "data"), validate=True)
        except binascii.Error:
            raise BadExport(f"attachment {digest}'s data is not base64") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise BadExport(f"attachment {digest}'s data does not have that sha256 digest")
        if entry.get("size") != len(data):
            raise BadExport(f"attachment {digest}'s size is not its data's")
        _string(entry, "media_type")
        blobs[digest] = data
    return blobs


def write_import(db: sqlite3.Connection, imported: Imported, now: float) -> int:
    """Store `imported` as a new conversation (in the caller's transaction): its id."""
    cid = db.execute("INSERT INTO conversations (title, model, created, updated) "
                     "VALUES (?, ?, ?, ?)",
                     (imported.title, imported.model, imported.created, now)).lastrowid
    assert cid is not None
    ids: dict[object, int] = {}
    for seq, message in enumerate(imported.messages):
        stored = message.stored
        row = db.execute(
            "INSERT INTO messages (conversation_id, seq, parent_id, active, role, text, "
            f"reasoning, parts, tools, {VALUES}) VALUES "
            f"({', '.join('?' * (9 + len(message.values)))})",
            (cid, seq, None if message.parent is None else ids[message.parent],
             int(message.active), message.role, stored.text, stored.reasoning, stored.parts,
             stored.tools, *message.values)).lastrowid
        assert row is not None
        ids[message.key] = row
        link_blobs(db, row, stored.attachments)
    return cid


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadExport(f"{what} must be a JSON object")
    return value


def _string(item: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = item.get(key, default)
    if not isinstance(value, str):
        raise BadExport(f"{key!r} must be a string")
    return value


def _optional(item: Mapping[str, Any], key: str) -> str | None:
    return None if item.get(key) is None else _string(item, key)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _usage(usage: Mapping[str, Any], key: str) -> int | None:
    value = usage.get(key)
    if value is not None and not _count(value):
        raise BadExport(f"usage {key!r} must be a whole number or null")
    return value


def _seconds(item: Mapping[str, Any], key: str) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) \
            or not math.isfinite(value) or value < 0:
        raise BadExport(f"{key!r} must be a number of seconds or null")
    return float(value)


def _time(item: Mapping[str, Any], key: str) -> float:
    text = _string(item, key)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadExport(f"{key!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        raise BadExport(f"{key!r} is out of range") from None
