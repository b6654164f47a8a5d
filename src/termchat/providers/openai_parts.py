"""Content parts as OpenAI Chat Completions wants them: messages, content arrays and tools."""

from __future__ import annotations

import base64
from typing import Any

from termchat.content import (
    Attachment,
    AttachmentKind,
    Message,
    Text,
    ToolCall,
    ToolDefinition,
    ToolResult,
    text_of,
)
from termchat.providers._base import CONTINUE_INSTRUCTION


def messages(system: str | None, conversation: tuple[Message, ...],
             continuation: bool = False) -> list[dict[str, Any]]:
    """The request's `messages`: the system prompt, then each message; an assistant's tool
    calls ride on it, and each result is a `tool` message of its own. A continuation ends
    with the instruction to go on."""
    wire: list[dict[str, Any]] = []
    if system:
        wire.append({"role": "system", "content": system})
    for message in conversation:
        if message.role == "user":
            wire.append({"role": "user", "content": user_content(message)})
        elif message.role == "assistant":
            text = text_of(message.parts)
            calls = [part for part in message.parts if isinstance(part, ToolCall)]
            entry: dict[str, Any] = {"role": "assistant",
                                     "content": text if text or not calls else None}
            if calls:
                entry["tool_calls"] = [
                    {"id": call.id, "type": "function",
                     "function": {"name": call.name, "arguments": call.arguments or "{}"}}
                    for call in calls]
            wire.append(entry)
        else:
            wire.extend({"role": "tool", "tool_call_id": part.call_id, "content": part.content}
                        for part in message.parts if isinstance(part, ToolResult))
    if continuation:
        wire.append({"role": "user", "content": CONTINUE_INSTRUCTION})
    return wire


def user_content(message: Message) -> str | list[dict[str, Any]]:
    """A user message's content: a plain string when it is only text (every compatible
    server takes that), else the typed parts."""
    if all(isinstance(part, Text) for part in message.parts):
        return message.text
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, Text):
            if part.text:
                content.append({"type": "text", "text": part.text})
        elif isinstance(part, Attachment):
            content.append(_attachment(part))
    return content


def _attachment(attachment: Attachment) -> dict[str, Any]:
    if attachment.kind is AttachmentKind.TEXT:
        from termchat.attachments import text_block

        return {"type": "text", "text": text_block(attachment)}
    data = base64.b64encode(attachment.data).decode()
    url = f"data:{attachment.media_type};base64,{data}"
    if attachment.kind is AttachmentKind.IMAGE:
        return {"type": "image_url", "image_url": {"url": url}}
    return {"type": "file", "file": {"filename": attachment.name, "file_data": url}}


def tools(definitions: tuple[ToolDefinition, ...]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": tool.name,
                                              "description": tool.description,
                                              "parameters": tool.parameters}}
            for tool in definitions]
