"""The prompt input: Enter sends, Shift+Enter / Ctrl+J / Alt+Enter insert a newline (both
bindings the config's `[keys]` can remap: `submit`, `newline`), and Tab completes an `@path`
being typed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

from termchat.attachments import complete, mention_at
from termchat.keys import keys
from termchat.tui.attach import Chips, Completer, CompletionLine, candidates_line, mention_text
from termchat.untrusted import safe


class PromptInput(TextArea):
    """A multi-line input that stays editable while a reply streams."""

    # Priority: ahead of the TextArea's own handling of the same keys.
    BINDINGS = [
        Binding(keys("submit"), "submit", "Send", id="submit", priority=True, show=False),
        Binding(keys("newline"), "newline", "New line", id="newline", priority=True,
                show=False),
    ]

    @dataclass
    class Submitted(Message):
        text: str

    def __init__(self, **kwargs: object) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
                         compact=True, **kwargs)  # type: ignore[arg-type]
        self._completer = Completer()
        # The `@path` the cursor is in: (row, start, end, the path typed up to the cursor).
        self._mention: tuple[int, int, int, str] | None = None
        self._shown: str | None = None

    @property
    def cwd(self) -> Path:
        """Where `@path`s are found (termchat's working directory)."""
        return Path.cwd()

    def on_text_area_changed(self) -> None:
        self._track_mention()

    def on_text_area_selection_changed(self) -> None:
        self._track_mention()

    def _track_mention(self) -> None:
        """Show what the `@path` at the cursor can complete to (only its line is read: a
        mention is one line)."""
        start, end = self.selection
        found = None
        if start == end:
            row, column = end
            found = mention_at(self.document.get_line(row), column)
        if found is None:
            self._mention = None
            self._show(None)
            return
        self._mention = (end[0], *found)
        typed = found[2]
        if typed != self._shown:
            self._show(typed)

    def _show(self, typed: str | None) -> None:
        if typed == self._shown:
            return
        self._shown = typed
        hint = None if typed is None else candidates_line(typed, complete(typed, self.cwd))
        for line in self.screen.query(CompletionLine):
            line.show(hint)

    def _complete_mention(self) -> None:
        assert self._mention is not None
        row, start, end, typed = self._mention
        completion = self._completer.next(typed, self.cwd)
        if completion is None:
            self.app.bell()
            return
        text = mention_text(completion)
        line = self.document.get_line(row)
        if completion.final and not completion.cycling and (end == len(line)
                                                            or not line[end].isspace()):
            text += " "  # done: what is typed next is the prompt again
        result = self.replace(text, (row, start), (row, end))
        self.move_cursor(result.end_location)

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

    # A binding runs as the app sees the key, but the keys typed before it are still in this
    # widget's queue: both actions wait for them, so nothing typed ahead is cut off.
    def action_submit(self) -> None:
        self.call_later(self._submit)

    def _submit(self) -> None:
        text = self.text
        # Files alone are a prompt too.
        if text.strip() or any(chips.attachments for chips in self.screen.query(Chips)):
            self.post_message(self.Submitted(text))

    def action_newline(self) -> None:
        self.call_later(self.insert, "\n")

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "tab" and self._mention is not None:
            event.stop()
            event.prevent_default()
            self._complete_mention()
            return
        await super()._on_key(event)
