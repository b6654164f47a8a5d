"""The approval dialog: one tool call, its server, tool and full arguments, and the user's
answer (allow once, always this tool, always this server, deny; Escape stops the reply)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from termchat.tools.policy import Choice
from termchat.untrusted import Safe

NO_TEXT = Safe("")


@dataclass(frozen=True)
class Question:
    """What the dialog asks about, every string terminal-safe."""

    server: Safe
    tool: Safe
    name: Safe
    """The name the model used (`server__tool`)."""
    arguments: Safe
    """Pretty JSON."""
    summary: Safe = NO_TEXT
    read_only: bool | None = None
    position: tuple[int, int] | None = None
    """(this call, of so many) when a round has several calls to ask about."""


class ApprovalScreen(ModalScreen[Choice | None]):
    """Asks whether a tool call may run; dismissed with the choice, or None for Escape
    (which stops the reply: nothing more runs, and nothing is sent to the model)."""

    DEFAULT_CSS = """
    ApprovalScreen {
        align: center middle;
    }
    ApprovalScreen > #dialog {
        width: 90%;
        max-width: 110;
        height: auto;
        max-height: 90%;
        border: thick $warning;
        background: $panel;
        padding: 0 1;
    }
    ApprovalScreen #title { text-style: bold; color: $text-warning; margin-bottom: 1; }
    ApprovalScreen #arguments {
        height: auto;
        max-height: 20;
        background: $boost;
        padding: 0 1;
        margin: 1 0;
    }
    ApprovalScreen #buttons { height: auto; }
    ApprovalScreen Button { margin-right: 1; min-width: 10; }
    ApprovalScreen #hint { color: $text-muted; }
    """

    BINDINGS = [
        Binding("y,enter", "choose('once')", "Allow once"),
        Binding("t", "choose('always_tool')", "Always this tool"),
        Binding("s", "choose('always_server')", "Always this server"),
        Binding("n", "choose('deny')", "Deny"),
        Binding("escape", "stop", "Stop the reply"),
    ]

    def __init__(self, question: Question) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        question = self.question
        with Vertical(id="dialog"):
            title = "Allow this tool call?"
            if question.position is not None and question.position[1] > 1:
                title += f" ({question.position[0]} of {question.position[1]})"
            yield Static(Text(title), id="title")
            yield Static(self._details(), id="details")
            with VerticalScroll(id="arguments"):
                yield Static(Text(question.arguments or "(no arguments)"), id="json")
            with Horizontal(id="buttons"):
                yield Button("y  Allow once", id="once", variant="success", compact=True)
                yield Button("t  Always this tool", id="always_tool", compact=True)
                # Content, not a string: a string would be read as markup.
                yield Button(Content(f"s  Always server {question.server}"),
                             id="always_server", compact=True)
                yield Button("n  Deny", id="deny", variant="error", compact=True)
            yield Static(Text("Deny tells the model you declined, and the reply goes on. "
                              "Esc stops the reply instead: this call and the rest are not "
                              "run."), id="hint")

    def _details(self) -> Text:
        question = self.question
        text = Text()
        text.append("MCP server  ", style="dim")
        text.append(question.server, style="bold")
        text.append("\ntool        ", style="dim")
        text.append(question.tool, style="bold")
        if question.name != question.tool:
            text.append(f"  (the model calls it {question.name})", style="dim")
        if question.read_only is not None:
            hint = "read-only" if question.read_only else "may change things"
            text.append(f"\n            {hint}, says the server", style="dim")
        if question.summary:
            text.append(f"\n            {question.summary}", style="italic")
        return text

    def on_mount(self) -> None:
        self.query_one("#once", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id is not None:
            self.action_choose(event.button.id)

    def action_choose(self, choice: str) -> None:
        self.dismiss(Choice(choice))

    def action_stop(self) -> None:
        self.dismiss(None)
