"""Content parts as Anthropic Messages wants them: content blocks, tool_use and tool_result,
thinking blocks returned with their signatures."""

from __future__ import annotations

import base64
from typing import Any

from termchat.content import (
    Attachment,
    AttachmentKind,
    Message,
    Reasoning,
    Text,
    ToolCall,
    ToolDefinition,
    ToolResult,
)
from termchat.providers._base import CONTINUE_INSTRUCTION


def messages(conversation: tuple[Message, ...], continuation: bool = False,
             prefill: bool = True) -> list[dict[str, Any]]:
    """The request's `messages`, alternating as the API wants: tool results are a user turn,
    and messages of one role in a row are one message. Empty turns are left out (the API
    rejects them; a cancelled reply that never got text has none).

    A continuation ends with the reply so far as the assistant's turn, which the model goes
    on from (a prefill): its thinking left out, and without trailing white space, which the
    API refuses there. Models that take no prefill (Claude 4.6 on) get the reply so far and
    then an instruction to go on, as a user turn."""
    wire: list[dict[str, Any]] = []
    for message in conversation:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = [block for part in message.parts if (block := _block(part)) is not None]
        if not blocks:
            continue
        if wire and wire[-1]["role"] == role:
            wire[-1]["content"].extend(blocks)
        else:
            wire.append({"role": role, "content": blocks})
    if continuation and prefill and wire and wire[-1]["role"] == "assistant":
        _prefill(wire)
    elif continuation:
        instruction = {"type": "text", "text": CONTINUE_INSTRUCTION}
        if wire and wire[-1]["role"] == "user":
            wire[-1]["content"].append(instruction)
        else:
            wire.append({"role": "user", "content": [instruction]})
    for entry in wire:
        content = entry["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            entry["content"] = content[0]["text"]
    return wire


def _prefill(wire: list[dict[str, Any]]) -> None:
    content = [block for block in wire[-1]["content"]
               if block["type"] not in ("thinking", "redacted_thinking")]
    while content and content[-1]["type"] == "text":
        text = content[-1]["text"].rstrip()
        if text:
            content[-1] = {"type": "text", "text": text}
            break
        content.pop()
    if content:
        wire[-1]["content"] = content
    else:
        wire.pop()


def _block(part: Any) -> dict[str, Any] | None:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, Reasoning):
        # Only Anthropic's own thinking goes back, and only as it was signed.
        if part.provider != "anthropic":
            return None
        if part.redacted is not None:
            return {"type": "redacted_thinking", "data": part.redacted}
        if part.signature is None:
            return None
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    if isinstance(part, ToolCall):
        return {"type": "tool_use", "id": part.id, "name": part.name,
                "input": part.parsed_arguments() or {}}
    if isinstance(part, ToolResult):
        return {"type": "tool_result", "tool_use_id": part.call_id, "content": part.content,
                "is_error": part.is_error}
    if isinstance(part, Attachment):
        return _attachment(part)
    return None


def _attachment(attachment: Attachment) -> dict[str, Any]:
    if attachment.kind is AttachmentKind.TEXT:
        from termchat.attachments import text_block

        return {"type": "text", "text": text_block(attachment)}
    source = {"type": "base64", "media_type": attachment.media_type,
              "data": base64.b64encode(attachment.data).decode()}
    kind = "image" if attachment.kind is AttachmentKind.IMAGE else "document"
    return {"type": kind, "source": source}


def tools(definitions: tuple[ToolDefinition, ...]) -> list[dict[str, Any]]:
    return [{"name": tool.name, "description": tool.description,
             "input_schema": tool.parameters} for tool in definitions]
