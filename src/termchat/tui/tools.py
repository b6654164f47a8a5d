"""The TUI's tools: the MCP servers (started after the first frame), the session's approval
rules, and which tools a conversation offers. Imported only once servers are configured and
the first frame is out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from termchat.tools.box import ServerStatus, ToolBox, ToolSpec
from termchat.tools.config import ALL_TOOLS, ToolsConfig, ToolSelection
from termchat.tools.policy import ApprovalPolicy, Choice
from termchat.tools.runner import Ask, ToolRunner
from termchat.tools.servers import ServerState

_CHOSEN = {
    Choice.ONCE: "allowed once by you",
    Choice.ALWAYS_TOOL: "allowed by you, always for this tool",
    Choice.ALWAYS_SERVER: "allowed by you, always for this server",
}


class ToolsSession:
    """The app's tool box and approval policy, shared by every conversation of the session;
    each conversation gets its own runner, with its own choice of tools."""

    def __init__(self, config: ToolsConfig, *, yes: bool = False,
                 allow_tools: Iterable[str] = (), log_dir: Path | None = None) -> None:
        self.config = config
        self.box = ToolBox(config, log_dir=log_dir)
        self.policy = ApprovalPolicy(config, yes=yes, allow_tools=allow_tools)

    def start(self, on_change: Callable[[ServerStatus], None]) -> None:
        """Start every server in the background; `on_change` hears of each change."""
        self.box.subscribe(on_change)
        self.box.start()

    async def aclose(self) -> None:
        await self.box.aclose()

    def runner(self, model: str, ask: Ask) -> ToolRunner:
        """A conversation's runner, offering what model alias `model` may use."""
        return ToolRunner(self.box, self.policy, ask, max_rounds=self.config.max_rounds,
                          selection=self.config.selection_for(model))

    def selection_for(self, model: str) -> ToolSelection:
        return self.config.selection_for(model)

    @property
    def starting(self) -> bool:
        return any(s.state is ServerState.STARTING for s in self.box.statuses())

    async def wait_started(self) -> None:
        """Until every server is ready or has failed."""
        await self.box.wait_ready()

    def spec(self, name: str) -> ToolSpec | None:
        """The tool the model calls `name`, if a ready server has it."""
        return next((spec for spec in self.box.tools() if spec.name == name), None)

    def allowed_because(self, name: str) -> str | None:
        """Why a call of `name` ran without asking, when it did."""
        spec = self.spec(name)
        if spec is None:
            return None
        verdict = self.policy.decide(spec.server, spec.tool)
        return f"allowed: {verdict.why}" if verdict.allowed else None

    @staticmethod
    def chosen(choice: Choice) -> str:
        return _CHOSEN.get(choice, "denied by you")

    def tools_by_server(self) -> dict[str, list[str]]:
        """Every configured server and the tools it has (none until it is ready)."""
        return {status.name: [spec.tool for spec in status.tools]
                for status in self.box.statuses()}


def server_on(selection: ToolSelection, server: str) -> bool:
    """Whether any of `server`'s tools is offered."""
    return selection.servers is None or server in selection.servers or any(
        s == server for s, _ in selection.tools)


def toggle_server(selection: ToolSelection, server: str,
                  tools: Mapping[str, Iterable[str]]) -> ToolSelection:
    """`selection` with `server` turned off when any of its tools is on, else on (all of its
    tools). `tools` is every configured server's tools."""
    servers = set(tools) if selection.servers is None else set(selection.servers)
    pairs = {pair for pair in selection.tools if pair[0] != server}
    if server_on(selection, server):
        servers.discard(server)
    else:
        servers.add(server)
    return _simplest(servers, pairs, tools)


def toggle_tool(selection: ToolSelection, server: str, tool: str,
                tools: Mapping[str, Iterable[str]]) -> ToolSelection:
    """`selection` with one tool turned off when it is on, else on."""
    servers = set(tools) if selection.servers is None else set(selection.servers)
    pairs = set(selection.tools)
    if selection.allows(server, tool):
        if server in servers:
            # The whole server was on: it becomes its tools but this one.
            servers.discard(server)
            pairs |= {(server, t) for t in tools.get(server, ()) if t != tool}
        pairs.discard((server, tool))
    else:
        pairs.add((server, tool))
        if all((server, t) in pairs for t in tools.get(server, ())):
            servers.add(server)
            pairs = {pair for pair in pairs if pair[0] != server}
    return _simplest(servers, pairs, tools)


def _simplest(servers: set[str], pairs: set[tuple[str, str]],
              tools: Mapping[str, Iterable[str]]) -> ToolSelection:
    if servers >= set(tools) and not pairs:
        return ALL_TOOLS
    return ToolSelection(servers=frozenset(servers), tools=frozenset(pairs))
