"""The conversation's content, provider-neutral: a message is an ordered list of parts (text,
reasoning, tool calls and their results, attachments). Each provider translates parts to its
own wire shapes; nothing outside `termchat.providers` knows those shapes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """The model's thinking, with what its provider needs to accept it back: Anthropic wants a
    thinking block's `signature` (or a redacted block's opaque `redacted` data) returned
    unchanged before a tool call when extended thinking is on. `provider` made it; no other
    provider is ever sent it."""

    text: str
    signature: str | None = None
    redacted: str | None = None
    provider: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for: `arguments` is the JSON text exactly as the model wrote it
    (replayed as is), which may not be valid JSON at all."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> dict[str, Any] | None:
        """The arguments as a JSON object, or None when they are not one."""
        if not self.arguments.strip():
            return {}
        try:
            value = json.loads(self.arguments)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class ToolOutcome(StrEnum):
    """How a call ended, for the user; the model sees `content` and `is_error`."""

    OK = "ok"
    ERROR = "error"
    DENIED = "denied"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    INVALID = "invalid"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call gave back, as sent to the model (`content`, `is_error`)."""

    call_id: str
    content: str
    is_error: bool = False
    outcome: ToolOutcome = ToolOutcome.OK


class AttachmentKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    DOCUMENT = "document"


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file handed to the model: `name` as the user gave it (untrusted on screen), its
    content-detected `media_type` and `kind`, and its bytes, addressed by `digest` (sha256)."""

    name: str
    media_type: str
    kind: AttachmentKind
    digest: str
    size: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """A tool the model may call: its name, what it does, and its arguments' JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


Part = Text | Reasoning | ToolCall | ToolResult | Attachment
Role = Literal["user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    """One message: the user's (text, attachments), the assistant's (reasoning, text, tool
    calls), or the tool results that answer the assistant's calls."""

    role: Role
    parts: tuple[Part, ...]

    @classmethod
    def of(cls, role: Role, text: str) -> Message:
        return cls(role, (Text(text),) if text else ())

    @property
    def text(self) -> str:
        return text_of(self.parts)


def text_of(parts: Iterable[Part]) -> str:
    """The visible text of `parts`: their text parts, joined."""
    return "".join(part.text for part in parts if isinstance(part, Text))


def rounds(parts: Sequence[Part]) -> list[Message]:
    """An assistant reply's parts (which may span several tool rounds) as the messages a
    request carries: assistant content up to its tool results, those results, and so on."""
    messages: list[Message] = []
    current: list[Part] = []
    role: Role = "assistant"
    for part in parts:
        part_role: Role = "tool" if isinstance(part, ToolResult) else "assistant"
        if part_role != role and current:
            messages.append(Message(role, tuple(current)))
            current = []
        role = part_role
        current.append(part)
    if current:
        messages.append(Message(role, tuple(current)))
    return messages
