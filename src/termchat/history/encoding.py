"""A message's parts as a row stores them and as an export writes them, losslessly.

A row keeps its visible text joined in `text` and its reasoning joined in `reasoning` (for
lists, previews and search); `parts` is NULL when `text` is the only part (every v2 row),
else a JSON list with one object per part, in order. In the row, a text or reasoning part
holds only its length (`chars`, in code points) and its text is that slice of `text` or
`reasoning`, so a reply is never stored twice; in an export it holds its `text`. Tool calls
keep their arguments as the model wrote them; an attachment is a reference to its blob (by
sha256 digest) with its name, media type, kind and size. `tools` holds the tool names,
arguments and results as text, for search.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from termchat.content import (
    Attachment,
    AttachmentKind,
    Part,
    Reasoning,
    Text,
    ToolCall,
    ToolOutcome,
    ToolResult,
)
from termchat.untrusted import repair


@dataclass(frozen=True)
class Columns:
    """A message's parts as the columns of its row (all text repaired: lone surrogates never
    reach SQLite), and the attachments whose bytes go in `blobs`."""

    text: str
    reasoning: str
    parts: str | None
    tools: str
    attachments: tuple[Attachment, ...]


def columns(parts: Sequence[Part], reasoning: str = "") -> Columns:
    """The columns of a message with these parts. `reasoning` is kept when no part is
    reasoning (a reply loaded from a v2 row has its reasoning beside its parts)."""
    repaired = [repaired_part(part) for part in parts]
    text = "".join(part.text for part in repaired if isinstance(part, Text))
    if any(isinstance(part, Reasoning) for part in repaired):
        reasoning = "".join(part.text for part in repaired if isinstance(part, Reasoning))
    else:
        reasoning = repair(reasoning)
    plain = len(repaired) <= 1 and all(isinstance(part, Text) for part in repaired)
    encoded = None if plain else json.dumps(
        [part_json(part, inline=False) for part in repaired], ensure_ascii=False,
        separators=(",", ":"))
    return Columns(text, reasoning, encoded, "\n".join(_searchable(repaired)),
                   tuple(part for part in repaired if isinstance(part, Attachment)))


def _searchable(parts: Sequence[Part]) -> Iterator[str]:
    for part in parts:
        if isinstance(part, ToolCall):
            yield f"{part.name} {part.arguments}"
        elif isinstance(part, ToolResult):
            yield part.content


def repaired_part(part: Part) -> Part:
    """`part` with every string in it valid Unicode."""
    match part:
        case Text(text):
            return Text(repair(text))
        case Reasoning(text, signature, redacted, provider):
            return Reasoning(repair(text), _maybe(signature), _maybe(redacted), repair(provider))
        case ToolCall(call_id, name, arguments):
            return ToolCall(repair(call_id), repair(name), repair(arguments))
        case ToolResult(call_id, content, is_error, outcome):
            return ToolResult(repair(call_id), repair(content), is_error, outcome)
        case Attachment():
            return Attachment(repair(part.name), repair(part.media_type), part.kind,
                              repair(part.digest), part.size, part.data)
    raise TypeError(f"not a part: {part!r}")


def _maybe(text: str | None) -> str | None:
    return None if text is None else repair(text)


def part_json(part: Part, *, inline: bool) -> dict[str, Any]:
    """One part as JSON: with its text (`inline`, exports) or its text's length (rows)."""
    match part:
        case Text(text):
            return {"type": "text", **_text_field(text, inline)}
        case Reasoning(text, signature, redacted, provider):
            data: dict[str, Any] = {"type": "reasoning", **_text_field(text, inline),
                                    "provider": provider}
            if signature is not None:
                data["signature"] = signature
            if redacted is not None:
                data["redacted"] = redacted
            return data
        case ToolCall(call_id, name, arguments):
            return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}
        case ToolResult(call_id, content, is_error, outcome):
            return {"type": "tool_result", "call_id": call_id, "content": content,
                    "is_error": is_error, "outcome": outcome.value}
        case Attachment():
            return {"type": "attachment", "name": part.name, "media_type": part.media_type,
                    "kind": part.kind.value, "digest": part.digest, "size": part.size}
    raise TypeError(f"not a part: {part!r}")


def _text_field(text: str, inline: bool) -> dict[str, Any]:
    return {"text": text} if inline else {"chars": len(text)}


def stored_parts(text: str, reasoning: str, encoded: str | None,
                 blobs: Mapping[str, bytes] | None = None) -> tuple[Part, ...]:
    """A row's parts. Attachments carry their bytes when `blobs` has them (else empty bytes).

    Never raises: a damaged `parts` value (edited by hand, cut short) gives the row's text as
    its only part, and slices that do not add up to the text give the last one the rest.
    """
    if encoded is None:
        return (Text(text),) if text else ()
    try:
        items = json.loads(encoded)
        if not isinstance(items, list):
            raise ValueError("not a list")
        sources = {"text": _Slicer(text), "reasoning": _Slicer(reasoning)}
        parts = [part_from_json(item, lambda kind, item: sources[kind].take(item["chars"]),
                                blobs or {}) for item in items]
    except (ValueError, KeyError, TypeError):
        return (Text(text),) if text else ()
    rest = sources["text"].rest
    return tuple(_rest_to_last(parts, rest) if rest else parts)


class _Slicer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def take(self, chars: object) -> str:
        if not isinstance(chars, int) or isinstance(chars, bool) or chars < 0:
            raise ValueError("a length must be a whole number")
        piece = self.text[self.at:self.at + chars]
        self.at += len(piece)
        return piece

    @property
    def rest(self) -> str:
        return self.text[self.at:]


def _rest_to_last(parts: list[Part], rest: str) -> list[Part]:
    for index in range(len(parts) - 1, -1, -1):
        part = parts[index]
        if isinstance(part, Text):
            parts[index] = Text(part.text + rest)
            return parts
    return [*parts, Text(rest)]


TextOf = Callable[[str, Mapping[str, Any]], str]


def part_from_json(item: object, text_of: TextOf, blobs: Mapping[str, bytes]) -> Part:
    """One part from its JSON; `text_of(kind, item)` gives a text or reasoning part's text.
    Raises ValueError (or KeyError, TypeError) on anything that is not a part."""
    if not isinstance(item, dict):
        raise ValueError("a part must be an object")
    kind = item.get("type")
    if kind == "text":
        return Text(text_of("text", item))
    if kind == "reasoning":
        return Reasoning(text_of("reasoning", item), _optional(item, "signature"),
                         _optional(item, "redacted"), _string(item, "provider", ""))
    if kind == "tool_call":
        return ToolCall(_string(item, "id"), _string(item, "name"), _string(item, "arguments"))
    if kind == "tool_result":
        is_error = item.get("is_error", False)
        if not isinstance(is_error, bool):
            raise ValueError("is_error must be true or false")
        return ToolResult(_string(item, "call_id"), _string(item, "content"), is_error,
                          ToolOutcome(item.get("outcome", ToolOutcome.OK.value)))
    if kind == "attachment":
        digest, size = _string(item, "digest"), item.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("an attachment's size must be a whole number")
        return Attachment(_string(item, "name"), _string(item, "media_type"),
                          AttachmentKind(_string(item, "kind")), digest, size,
                          blobs.get(digest, b""))
    raise ValueError(f"unknown part type {kind!r}")


def _string(item: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = item.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _optional(item: Mapping[str, Any], key: str) -> str | None:
    return None if item.get(key) is None else _string(item, key)
