"""The tools screen: every MCP server with its state and tools, each turned on or off for this
conversation, and the session's "always allow" rules, each revocable. Dismissed with the
conversation's choice of tools."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from termchat.tools.box import ServerStatus
from termchat.tools.config import ToolSelection
from termchat.tools.policy import SessionRule
from termchat.tools.servers import ServerState
from termchat.tui.tools import ToolsSession, server_on, toggle_server, toggle_tool
from termchat.untrusted import safe_line

_STATE_STYLES = {
    ServerState.READY: "bold #50c050",
    ServerState.STARTING: "bold #d0b040",
    ServerState.FAILED: "bold #e05050",
    ServerState.DISABLED: "#8a8a8a",
    ServerState.STOPPED: "#8a8a8a",
}


@dataclass(frozen=True)
class Row:
    """What a line of the list stands for: a server, one of its tools, or a rule."""

    server: str | None = None
    tool: str | None = None
    rule: SessionRule | None = None


class ToolsScreen(ModalScreen[ToolSelection]):
    """Space or Enter (or a click) turns the highlighted server or tool on or off for this
    conversation, or revokes the highlighted rule; Escape closes."""

    DEFAULT_CSS = """
    ToolsScreen { align: center middle; }
    ToolsScreen > Vertical {
        width: 95%; max-width: 130; height: 90%;
        border: round $primary; background: $panel; padding: 0 1;
    }
    ToolsScreen #tools-title { text-style: bold; }
    ToolsScreen #tools-list { height: 1fr; border: none; }
    ToolsScreen #tools-help { color: $text-muted; }
    """

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("space", "activate", "On/off · revoke", show=True),
        Binding("delete", "activate", "Revoke", show=False),
    ]

    def __init__(self, tools: ToolsSession, selection: ToolSelection) -> None:
        super().__init__()
        self.tools = tools
        self.selection = selection
        self._rows: list[Row | None] = []
        self._unsubscribe: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("Tools: MCP servers, their tools, and what runs without asking"),
                         id="tools-title")
            yield OptionList(id="tools-list")
            yield Static(Text("Space or Enter: turn a server or tool on or off for this "
                              "conversation (from its next reply), or revoke an always-allow "
                              "rule · Esc: close"), id="tools-help")

    def on_mount(self) -> None:
        # A server that starts, fails or lists new tools while the screen is open shows so.
        self._unsubscribe = self.tools.box.subscribe(lambda status: self._refill())
        self._refill()
        self.query_one(OptionList).focus()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _refill(self) -> None:
        listing = self.query_one(OptionList)
        highlighted = listing.highlighted
        rows: list[Row | None] = []
        options: list[Option] = []
        for status in self.tools.box.statuses():
            rows.append(Row(server=status.name))
            options.append(Option(self._server_line(status)))
            for spec in status.tools:
                rows.append(Row(server=spec.server, tool=spec.tool))
                options.append(Option(self._tool_line(spec.server, spec.tool, spec.summary)))
        rows.append(None)
        options.append(Option(Text("Always allowed this session", style="bold"),
                              disabled=True))
        rules = self.tools.policy.rules()
        for rule in rules:
            rows.append(Row(rule=rule))
            options.append(Option(Text(f"  {safe_line(rule.label)}  (revoke)")))
        if not rules:
            rows.append(None)
            options.append(Option(Text("  none: choosing \"always\" when a call asks adds one",
                                       style="dim"), disabled=True))
        self._rows = rows
        listing.clear_options()
        listing.add_options(options)
        if highlighted is not None and options:
            listing.highlighted = min(highlighted, len(options) - 1)
        elif options:
            listing.highlighted = 0

    def _server_line(self, status: ServerStatus) -> Text:
        on_ = server_on(self.selection, status.name)
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append("[x] " if on_ else "[ ] ", style="bold")
        line.append(safe_line(status.name), style="bold")
        line.append("  ")
        if status.state is ServerState.READY:
            count = len(status.tools)
            state = f"ready · {count} tool{'s' * (count != 1)}"
        elif status.reason:
            state = status.reason
        else:
            state = status.state.value
        line.append(safe_line(state), style=_STATE_STYLES.get(status.state, ""))
        line.append(f"  {status.transport}: {safe_line(status.target)}", style="dim")
        return line

    def _tool_line(self, server: str, tool: str, summary: str) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append("    [x] " if self.selection.allows(server, tool) else "    [ ] ")
        line.append(safe_line(tool))
        if summary:
            line.append(f"  {safe_line(summary)}", style="dim")
        verdict = self.tools.policy.decide(server, tool)
        if verdict.allowed:
            line.append(f"  · runs unasked: {safe_line(verdict.why)}", style="#d0b040")
        return line

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._activate(event.option_index)

    def action_activate(self) -> None:
        highlighted = self.query_one(OptionList).highlighted
        if highlighted is not None:
            self._activate(highlighted)

    def _activate(self, index: int) -> None:
        row = self._rows[index] if 0 <= index < len(self._rows) else None
        if row is None:
            return
        if row.rule is not None:
            self.tools.policy.revoke(row.rule)
        elif row.server is not None and row.tool is not None:
            self.selection = toggle_tool(self.selection, row.server, row.tool,
                                         self.tools.tools_by_server())
        elif row.server is not None:
            self.selection = toggle_server(self.selection, row.server,
                                           self.tools.tools_by_server())
        self._refill()

    def action_close(self) -> None:
        self.dismiss(self.selection)
