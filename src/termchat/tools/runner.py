"""The tools as a turn uses them: the definitions offered to the model, and each call run
through the approval policy (asking the front end when it must) and the tool box."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from termchat.content import ToolCall, ToolDefinition, ToolResult
from termchat.events import ToolRunning
from termchat.tools.config import ALL_TOOLS, ToolSelection
from termchat.tools.policy import ApprovalPolicy, Choice

if TYPE_CHECKING:
    from termchat.tools.box import ResolvedCall, ToolBox
    from termchat.turn import EventSink

Ask = Callable[["ResolvedCall"], Awaitable[Choice]]
"""How a front end asks the user about a call (the server, the tool, the arguments)."""


class ToolRunner:
    """`turn.ToolRunner` over a `ToolBox`: every call goes through the approval policy,
    which asks the user (`ask`) unless the config, the command line or an earlier "always"
    allowed it."""

    def __init__(self, box: ToolBox, policy: ApprovalPolicy, ask: Ask, *, max_rounds: int,
                 selection: ToolSelection = ALL_TOOLS) -> None:
        self.box = box
        self.policy = policy
        self.ask = ask
        self.max_rounds = max_rounds
        self.selection = selection

    @property
    def definitions(self) -> tuple[ToolDefinition, ...]:
        """The tools of the servers that are up now, as the model is offered them."""
        return tuple(ToolDefinition(spec.name, spec.description, dict(spec.input_schema))
                     for spec in self.box.tools(self.selection))

    async def run(self, call: ToolCall, on_event: EventSink | None) -> ToolResult:
        from termchat.turn import deliver

        resolved = await self.box.resolve(call)
        if isinstance(resolved, ToolResult):
            return resolved  # not valid JSON, or no such tool: the model is told
        server, tool = resolved.spec.server, resolved.spec.tool
        if not self.policy.decide(server, tool).allowed and not self.policy.choose(
                server, tool, await self.ask(resolved)):
            return self.policy.denied(call.id)
        await deliver(on_event, ToolRunning(call.id, call.name))
        return await self.box.call(resolved)
