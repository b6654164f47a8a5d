"""A stored conversation rendered for export: JSON with everything (the whole tree, the
attachments' bytes), or readable Markdown of the active path; and how a message's tool calls,
attachments and alternatives are told, for `--show` too."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from termchat.content import Attachment, Text, ToolCall, ToolResult
from termchat.history.records import Siblings, StoredConversation, StoredMessage
from termchat.present import iso_time, local_time, reply_footer

FORMAT = "termchat-conversation"
VERSION = 2
# A tool's result is shown this long at most (the export's JSON keeps all of it).
RESULT_LINES = 6
RESULT_CHARS = 600


def as_json(stored: StoredConversation) -> dict[str, Any]:
    """Everything stored about a conversation, as JSON-ready data (ISO 8601 UTC times):
    `stored` from `HistoryStore.tree(cid, blobs=True)` is its whole tree, every message with
    its `parent` and `active` flag and parts, and `attachments` maps each digest to the file's
    media type, size and bytes (base64). `HistoryStore.import_json` reads it back."""
    import base64

    attachments = {
        attachment.digest: {"media_type": attachment.media_type, "size": attachment.size,
                            "data": base64.b64encode(attachment.data).decode("ascii")}
        for message in stored.messages for attachment in message.attachments}
    return {
        "format": FORMAT, "version": VERSION,
        "id": stored.id, "title": stored.title, "model": stored.model,
        "created": iso_time(stored.created), "updated": iso_time(stored.updated),
        "messages": [message.to_json() for message in stored.messages],
        "attachments": attachments,
    }


def as_markdown(stored: StoredConversation) -> str:
    """The active path (`HistoryStore.get`) as Markdown: each message's text, attachments and
    tool calls in order, and where it has alternatives."""
    lines = [f"# {stored.title}", "",
             f"Conversation {stored.id} · {stored.model} · started "
             f"{local_time(stored.created)} · updated {local_time(stored.updated)}", ""]
    for message in stored.messages:
        other = alternative(message.siblings)
        if message.role == "user":
            lines += [f"## User{f' · {other}' if other else ''}", ""]
        else:
            lines += [f"## Assistant ({message.provider}:{message.model})"
                      f"{f' · {other}' if other else ''}", ""]
            if message.reasoning:
                lines += ["<details><summary>Reasoning</summary>", "", message.reasoning, "",
                          "</details>", ""]
        shown = shown_parts(message)
        for part in shown:
            lines += _markdown(part)
        if message.role == "assistant":
            if not any(isinstance(part, Text) for part in shown):
                lines += ["*(no text)*", ""]
            lines += [f"*{reply_footer(message.to_reply())}*", ""]
        elif not shown:
            lines += ["", ""]
    return "\n".join(lines)


def _markdown(part: Text | Attachment | ToolUse) -> list[str]:
    if isinstance(part, Text):
        return [part.text, ""]
    if isinstance(part, Attachment):
        return [f"Attached: {attachment_label(part)}", ""]
    lines = [f"**Tool** {_code(part.name)} → {part.outcome}", "",
             *_fenced(part.arguments or "{}", "json"), ""]
    if part.result:
        lines += ["Result:", "", *_fenced(part.result), ""]
    return lines


def _fenced(text: str, info: str = "") -> list[str]:
    """A code block that no run of backticks inside `text` can end."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, text, fence]


def _code(text: str) -> str:
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    ticks = "`" * (longest + 1)
    return f"{ticks} {text} {ticks}" if longest else f"`{text}`"


# -- how a message's content is shown (here and in `--show`) ------------------------------

@dataclass(frozen=True)
class ToolUse:
    """A tool call as a person reads it: the tool, its arguments, how it ended (`ok`,
    `denied`, ... or `no result`) and what it gave back, shortened."""

    name: str
    arguments: str
    outcome: str
    result: str


def shown_parts(message: StoredMessage) -> list[Text | Attachment | ToolUse]:
    """A message's text, attachments and tool calls in order, each call with its result
    (reasoning is shown on its own)."""
    results = {part.call_id: part for part in message.parts if isinstance(part, ToolResult)}
    calls = {part.id for part in message.parts if isinstance(part, ToolCall)}
    shown: list[Text | Attachment | ToolUse] = []
    for part in message.parts:
        if isinstance(part, Text | Attachment):
            if not isinstance(part, Text) or part.text:
                shown.append(part)
        elif isinstance(part, ToolCall):
            result = results.get(part.id)
            shown.append(ToolUse(part.name, part.arguments,
                                 "no result" if result is None else result.outcome.value,
                                 "" if result is None else shortened(result.content)))
        elif isinstance(part, ToolResult) and part.call_id not in calls:
            shown.append(ToolUse("(unknown tool)", "", part.outcome.value,
                                 shortened(part.content)))
    return shown


def shortened(text: str, lines: int = RESULT_LINES, chars: int = RESULT_CHARS) -> str:
    """`text` cut to its first `lines` lines and `chars` characters, saying what was left."""
    kept = text.splitlines()
    cut = "\n".join(kept[:lines])
    if len(cut) > chars:
        cut = cut[:chars].rstrip()
    left = len(text) - len(cut)
    if left <= 0 or text.rstrip() == cut:
        return text.rstrip()
    more = len(kept) - min(lines, len(kept))
    return f"{cut}…\n(" + (f"{more:,} more lines" if more else f"{left:,} more characters") + ")"


def alternative(siblings: Siblings) -> str | None:
    """`alternative 2 of 3`, or None for a message that has none."""
    if siblings.count < 2:
        return None
    return f"alternative {siblings.position} of {siblings.count}"


def attachment_label(attachment: Attachment) -> str:
    """`notes.md (2.1 KB, text/plain)`."""
    from termchat.attachments import human_size

    return f"{attachment.name} ({human_size(attachment.size)}, {attachment.media_type})"
