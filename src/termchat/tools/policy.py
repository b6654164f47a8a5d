"""Approval: whether a tool call may run without asking, and the user's session-wide choices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from termchat.content import ToolOutcome, ToolResult
from termchat.tools.config import ServerConfig, ToolsConfig

DENIED_TEXT = ("The user declined to run this tool call. Do not call it again unless the user "
               "asks you to.")


class Choice(StrEnum):
    """What the user answered when asked about a call."""

    ONCE = "once"
    ALWAYS_TOOL = "always_tool"
    ALWAYS_SERVER = "always_server"
    DENY = "deny"


@dataclass(frozen=True)
class Verdict:
    """Whether a call may run without asking, and why (for the line a front end shows)."""

    allowed: bool
    why: str


ASK = Verdict(False, "needs approval")


@dataclass(frozen=True)
class SessionRule:
    """An "always allow" choice made in this session: one tool, or (`tool` None) a server."""

    server: str
    tool: str | None = None

    @property
    def label(self) -> str:
        if self.tool is None:
            return f"every tool of MCP server '{self.server}'"
        return f"tool '{self.tool}' of MCP server '{self.server}'"


class ApprovalPolicy:
    """Decides whether a call runs unasked: pre-approved in the config (`allow`, `trust`),
    by the command line (`--yes`, `--allow-tool NAME`), or by an "always" choice this
    session; anything else asks. `--allow-tool` takes `SERVER.TOOL`, `SERVER.*`,
    `SERVER__TOOL` (a name as the model sees it) or a bare `TOOL` (on any server)."""

    def __init__(self, config: ToolsConfig | Mapping[str, ServerConfig], *, yes: bool = False,
                 allow_tools: Iterable[str] = ()) -> None:
        self._servers = config.servers if isinstance(config, ToolsConfig) else config
        self._yes = yes
        self._allow_tools = frozenset(allow_tools)
        self._rules: list[SessionRule] = []

    def decide(self, server: str, tool: str) -> Verdict:
        """Whether a call of `tool` on `server` may run without asking the user.

        Arguments play no part: a rule covers a tool whatever it is asked to do, so that
        "always allow" means what it says. (Arguments that are not a JSON object never get
        this far: the box answers them itself.)"""
        config = self._servers.get(server)
        if config is not None and config.trust:
            return Verdict(True, f"server '{server}' is trusted in the config")
        if config is not None and tool in config.allow:
            return Verdict(True, f"allowed in [mcp.{server}] of the config")
        if self._yes:
            return Verdict(True, "--yes")
        if self._allow_tools & {f"{server}.{tool}", f"{server}.*", f"{server}__{tool}", tool}:
            return Verdict(True, "--allow-tool")
        for rule in self._rules:
            if rule.server == server and rule.tool in (None, tool):
                return Verdict(True, f"always allowed this session ({rule.label})")
        return ASK

    def choose(self, server: str, tool: str, choice: Choice) -> bool:
        """Record the user's answer about a call; True when the call is to run."""
        rule = {Choice.ALWAYS_TOOL: SessionRule(server, tool),
                Choice.ALWAYS_SERVER: SessionRule(server)}.get(choice)
        if rule is not None and rule not in self._rules:
            self._rules.append(rule)
        return choice is not Choice.DENY

    def rules(self) -> list[SessionRule]:
        """The session's "always" choices, oldest first."""
        return list(self._rules)

    def revoke(self, rule: SessionRule) -> bool:
        """Forget an "always" choice; False when there was no such choice."""
        if rule in self._rules:
            self._rules.remove(rule)
            return True
        return False

    @staticmethod
    def denied(call_id: str) -> ToolResult:
        """The result the model is sent for a call the user declined; the turn goes on."""
        return ToolResult(call_id, DENIED_TEXT, True, ToolOutcome.DENIED)

    def how_to_allow(self, server: str, tool: str) -> str:
        """How to let this call run unasked, for a run that cannot ask (no terminal)."""
        return (f"to allow it, run with --allow-tool {server}.{tool} (or --yes), or add "
                f"\"{tool}\" to allow in [mcp.{server}] of the config")
