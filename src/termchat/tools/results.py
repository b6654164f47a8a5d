"""A tool's result as the text the model is sent: content flattened, size capped and said so."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mcp_types


def flatten(content: Sequence[mcp_types.ContentBlock], structured: Any = None) -> str:
    """Text parts as they are, one per line; anything else described in a short line, since
    the providers' tool results carry text only. `structured` stands in when there is no
    content at all."""
    lines: list[str] = []
    for block in content:
        if block.type == "text":
            lines.append(block.text)
        elif block.type == "resource_link":
            kind = f", {block.mime_type}" if block.mime_type else ""
            lines.append(f"[resource link: {block.name} <{block.uri}>{kind}]")
        elif block.type == "resource":
            resource = block.resource
            kind = f", {resource.mime_type}" if resource.mime_type else ""
            if hasattr(resource, "text"):
                lines.append(f"[resource <{resource.uri}>{kind}]\n{resource.text}")
            else:
                size = _decoded_size(resource.blob)
                lines.append(f"[resource <{resource.uri}>{kind}, {size:,} bytes]")
        else:
            lines.append(f"[{block.mime_type}, {_decoded_size(block.data):,} bytes]")
    if not lines and structured is not None:
        return json.dumps(structured, ensure_ascii=False)
    return "\n".join(lines)


def capped(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and a line saying how much was cut."""
    if len(text) <= limit:
        return text
    return (f"{text[:limit]}\n[termchat: the result was {len(text):,} characters; "
            f"only the first {limit:,} are shown]")


def _decoded_size(data: str) -> int:
    """The byte size of base64 `data`, without decoding it."""
    return len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))
