"""A reply's rounds (one request each, the first and one per tool round): the finish of each
for the status bar, and each round's figures for the tooltip and the rounds view."""

from __future__ import annotations

from itertools import groupby

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from termchat.content import ToolCall, ToolResult
from termchat.present import finish_field, usage_fields
from termchat.turn import Reply
from termchat.untrusted import safe_line


def finishes(reply: Reply) -> str:
    """`finish stop`, or every round's raw finish in order: `finish tool_calls › stop`
    (a run of the same one counted: `tool_use ×3 › end_turn`)."""
    if len(reply.round_finishes) < 2:
        return finish_field(reply)
    reasons = [finish.reason if finish is not None else "none"
               for finish in reply.round_finishes]
    shown = [f"{reason} ×{count}" if (count := len(list(run))) > 1 else reason
             for reason, run in groupby(reasons)]
    last = reply.round_finishes[-1]
    if last is not None and last.meaning:
        shown[-1] += f" — {last.meaning}"
    return "finish " + " › ".join(shown)


def round_lines(reply: Reply) -> list[str]:
    """One line per round: its finish, its tokens and the tools it asked for; then the sum."""
    calls: list[list[str]] = [[]]
    after_results = False
    for part in reply.parts:
        if isinstance(part, ToolResult):
            after_results = True
        elif after_results:
            calls.append([])
            after_results = False
        if isinstance(part, ToolCall):
            calls[-1].append(part.name)
    lines: list[str] = []
    for index, finish in enumerate(reply.round_finishes):
        usage = reply.round_usages[index] if index < len(reply.round_usages) else None
        fields = [f"round {index + 1}", f"finish {finish.reason if finish else 'none'}"]
        if usage is not None and usage.known:
            fields += usage_fields(usage)
        asked = calls[index] if index < len(calls) else []
        if asked:
            fields.append("tools " + ", ".join(asked))
        lines.append(" · ".join(fields))
    if reply.usage.known:
        lines.append(" · ".join(["all rounds", *usage_fields(reply.usage)]))
    return [safe_line(line) for line in lines]


class RoundsScreen(ModalScreen[None]):
    """The last reply's rounds, one line each; any of Escape, Enter or q closes it."""

    DEFAULT_CSS = """
    RoundsScreen { align: center middle; }
    RoundsScreen > Vertical {
        width: auto; max-width: 90%; height: auto; max-height: 90%;
        border: round $primary; background: $panel; padding: 0 1;
    }
    RoundsScreen #rounds-title { text-style: bold; }
    """

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self._lines = lines

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("The last reply, round by round"), id="rounds-title")
            yield Static(Text("\n".join(self._lines) or "No reply yet."), id="rounds")
