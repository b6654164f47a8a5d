"""The chat's key bindings by id, with their default keys: what `[keys]` in the config may
remap (through Textual's keymap) and what the TUI binds. No Textual import: the config
checks names against this table without loading the TUI."""

from __future__ import annotations

# id -> (default keys, comma-separated as Textual writes them; what the binding does).
BINDINGS: dict[str, tuple[str, str]] = {
    "submit": ("enter", "send the prompt (queued while a reply streams)"),
    "newline": ("shift+enter,ctrl+j,alt+enter,ctrl+enter", "a new line in the prompt"),
    "cancel_reply": ("escape", "cancel the reply in flight"),
    "regenerate": ("f5", "a new reply to the last prompt, the old one kept"),
    "continue_reply": ("ctrl+f", "continue a cut-off or cancelled reply"),
    "edit_last": ("f2", "edit the last prompt and resend it as a new branch"),
    "edit_partial": ("f3", "edit a cut-off or cancelled reply, then continue it from there"),
    "undo": ("f8", "take the last exchange back (kept as an abandoned branch)"),
    "previous_alternative": ("alt+left", "show the previous alternative of the last reply"),
    "next_alternative": ("alt+right", "show the next alternative of the last reply"),
    "unqueue": ("alt+up", "take the prompts queued while a reply streams back into the input"),
    "new_conversation": ("ctrl+n", "start a new chat"),
    "copy_reply": ("ctrl+o", "copy the last reply"),
    "copy_code": ("ctrl+g", "copy the last reply's last code block"),
    "history": ("ctrl+r", "browse the history"),
    "attach": ("ctrl+l", "attach a file to the next prompt"),
    "tools": ("ctrl+t", "the MCP servers and their tools"),
    "toggle_tool_block": ("ctrl+b", "expand or collapse the last tool call"),
}


def keys(binding_id: str) -> str:
    """The default keys of binding `binding_id`."""
    return BINDINGS[binding_id][0]
