"""How to set up a real model, shown over the demo chat."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static


class SetupScreen(ModalScreen[None]):
    """The first-run instructions (what to set, and where), over the chat."""

    DEFAULT_CSS = """
    SetupScreen {
        align: center middle;
    }
    #setup {
        width: 96;
        max-width: 100%;
        height: 90%;
        padding: 1 2;
        border: round $primary;
        background: $surface;
    }
    #setup Static {
        width: 100%;
        height: auto;
    }
    """

    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self._text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="setup"):
            # Content, not a string: the text is not markup.
            yield Static(Content(self._text + "\nEscape closes this."))

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
