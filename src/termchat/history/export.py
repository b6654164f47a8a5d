"""A stored conversation rendered for export: JSON with everything, or readable Markdown."""

from __future__ import annotations

from typing import Any

from termchat.history.records import StoredConversation
from termchat.present import iso_time, local_time, reply_footer

FORMAT = "termchat-conversation"


def as_json(stored: StoredConversation) -> dict[str, Any]:
    """Everything stored about a conversation, as JSON-ready data (ISO 8601 UTC times)."""
    return {
        "format": FORMAT, "version": 1,
        "id": stored.id, "title": stored.title, "model": stored.model,
        "created": iso_time(stored.created), "updated": iso_time(stored.updated),
        "messages": [message.to_json() for message in stored.messages],
    }


def as_markdown(stored: StoredConversation) -> str:
    lines = [f"# {stored.title}", "",
             f"Conversation {stored.id} · {stored.model} · started "
             f"{local_time(stored.created)} · updated {local_time(stored.updated)}", ""]
    for message in stored.messages:
        if message.role == "user":
            lines += ["## User", "", message.text, ""]
            continue
        lines += [f"## Assistant ({message.provider}:{message.model})", ""]
        if message.reasoning:
            lines += ["<details><summary>Reasoning</summary>", "", message.reasoning, "",
                      "</details>", ""]
        lines += [message.text or "*(no text)*", "", f"*{reply_footer(message.to_reply())}*",
                  ""]
    return "\n".join(lines)
