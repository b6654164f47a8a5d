"""The prompt input: Enter sends, Shift+Enter / Ctrl+J / Alt+Enter insert a newline."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

from termchat.untrusted import safe

NEWLINE_KEYS = frozenset({"shift+enter", "ctrl+j", "alt+enter", "ctrl+enter"})


class PromptInput(TextArea):
    """A multi-line input that stays editable while a reply streams."""

    @dataclass
    class Submitted(Message):
        text: str

    def __init__(self, **kwargs: object) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
                         compact=True, **kwargs)  # type: ignore[arg-type]

    async def _on_paste(self, event: events.Paste) -> None:
        # A paste is text from anywhere (a web page, a log): the TextArea would send its
        # escape sequences to the terminal as it draws them. Instead of its own handler.
        event.prevent_default()
        if self.read_only:
            return
        result = self.replace(safe(event.text), *self.selection)
        self.move_cursor(result.end_location)

    def load_text(self, text: str) -> None:
        super().load_text(safe(text))

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            text = self.text
            if text.strip():
                self.post_message(self.Submitted(text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)
