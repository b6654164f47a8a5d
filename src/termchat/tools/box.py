"""The tool box: every MCP server started in the background, its tools named for the model."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from termchat.content import ToolCall, ToolOutcome, ToolResult
from termchat.tools.config import ALL_TOOLS, ServerConfig, ToolsConfig, ToolSelection, Transport
from termchat.tools.policy import ApprovalPolicy
from termchat.tools.servers import RemoteTool, ServerConnection, ServerState

logger = logging.getLogger("termchat.tools")

# What both providers accept as a function name.
VALID_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
SEPARATOR = "__"
# aclose() waits this long for every server to stop; a stdio server's own shutdown is
# bounded by about 6 s (stdin closed, 2 s, SIGTERM, 2 s, SIGKILL).
CLOSE_TIMEOUT = 10.0
# Loggers of the mcp SDK (its modules, and its session's "client") and of its HTTP client.
SDK_LOGGERS = ("mcp", "client", "httpx2", "termchat.tools")


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model sees it: `name` is unique across servers and valid for both
    providers; `server` and `tool` are where it really lives."""

    name: str
    server: str
    tool: str
    description: str
    input_schema: Mapping[str, Any]
    title: str | None = None
    read_only: bool | None = None

    @property
    def summary(self) -> str:
        """The description's first line, for listings."""
        first = next((line.strip() for line in self.description.splitlines() if line.strip()),
                     "")
        return first if len(first) <= 120 else first[:119] + "…"


@dataclass(frozen=True)
class ServerStatus:
    """A snapshot of one server, for `termchat --tools`, the TUI and the one-line notices."""

    name: str
    transport: Transport
    target: str
    state: ServerState
    reason: str | None
    tools: tuple[ToolSpec, ...]
    log_path: Path
    pid: int | None = None
    startup_seconds: float | None = None

    @property
    def line(self) -> str:
        """One sentence naming the server and saying how it is."""
        if self.state is ServerState.READY:
            count = len(self.tools)
            return f"MCP server '{self.name}' is ready ({count} tool{'s' * (count != 1)})."
        if self.reason:
            return f"MCP server '{self.name}' {self.reason}."
        return f"MCP server '{self.name}' is {self.state.value}."


@dataclass(frozen=True)
class ResolvedCall:
    """A call the box can run: its tool, and its arguments as a JSON object."""

    call: ToolCall
    spec: ToolSpec
    arguments: dict[str, Any]

    def pretty_arguments(self) -> str:
        return json.dumps(self.arguments, indent=2, ensure_ascii=False)


class ToolBox:
    """Every enabled server of `config`, started by `start()` (each in a task of its own, so
    the caller never waits) and stopped by `aclose()`; use it inside the running loop."""

    def __init__(self, config: ToolsConfig | Iterable[ServerConfig], *,
                 log_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
        servers = config.servers.values() if isinstance(config, ToolsConfig) else config
        if log_dir is None:
            from termchat.config import data_dir

            log_dir = data_dir() / "logs"
        if environ is None:
            import os

            environ = dict(os.environ)
        self.log_dir = log_dir
        self._servers = {s.name: ServerConnection(s, log_dir=log_dir, environ=environ,
                                                  on_change=self._changed) for s in servers}
        self._listeners: list[Callable[[ServerStatus], None]] = []
        self._specs: dict[str, ToolSpec] = {}
        self._started = False
        self._log_handler: logging.Handler | None = None

    # Lifecycle.

    def start(self) -> None:
        """Start every enabled server in the background; returns at once."""
        if self._started:
            return
        self._started = True
        if any(s.state is ServerState.STARTING for s in self._servers.values()):
            self._log_handler = _route_sdk_logs(self.log_dir / "mcp.log")
        for server in self._servers.values():
            server.start()

    async def wait_ready(self) -> None:
        """Until every server is ready or has failed (each bounded by its startup_timeout)."""
        self.start()
        await asyncio.gather(*(s.wait_settled() for s in self._servers.values()))

    async def aclose(self) -> None:
        """Stop every server and wait until each is gone (at most CLOSE_TIMEOUT)."""
        tasks = [asyncio.ensure_future(s.stop()) for s in self._servers.values()]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    logger.warning("stopping a server failed: %r", task.exception())
        if self._log_handler is not None:
            _unroute_sdk_logs(self._log_handler)
            self._log_handler = None

    async def __aenter__(self) -> ToolBox:
        self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    def subscribe(self, listener: Callable[[ServerStatus], None]) -> Callable[[], None]:
        """Call `listener` on the loop whenever a server's state or tools change; returns a
        function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # What there is.

    def statuses(self) -> list[ServerStatus]:
        """Every configured server, in config order."""
        return [self._status(s) for s in self._servers.values()]

    def status(self, name: str) -> ServerStatus:
        return self._status(self._servers[name])

    def tools(self, selection: ToolSelection = ALL_TOOLS) -> list[ToolSpec]:
        """The tools of the ready servers that `selection` allows, to offer the model."""
        ready = {n for n, s in self._servers.items() if s.state is ServerState.READY}
        return [spec for spec in self._specs.values()
                if spec.server in ready and selection.allows(spec.server, spec.tool)]

    # Calls.

    async def resolve(self, call: ToolCall) -> ResolvedCall | ToolResult:
        """The tool `call` names and its arguments, or the result that answers the model
        when there is no such tool, its server is not running, or the arguments are not a
        JSON object. Waits for a server still starting when the name is one of its."""
        spec = self._specs.get(call.name)
        if spec is None:
            server = self._servers.get(call.name.split(SEPARATOR, 1)[0])
            if server is not None and server.state is ServerState.STARTING:
                await server.wait_settled()
                spec = self._specs.get(call.name)
            if spec is None and server is not None and server.state is not ServerState.READY:
                return server.unavailable(call.id)
        if spec is None:
            return self._unknown(call)
        server = self._servers[spec.server]
        if server.state is not ServerState.READY:
            return server.unavailable(call.id)
        arguments = call.parsed_arguments()
        if arguments is None:
            return ToolResult(call.id, f"The arguments for '{call.name}' are not a JSON object "
                              f"({_json_problem(call.arguments)}); call the tool again with a "
                              "JSON object that matches its input schema.", True,
                              ToolOutcome.INVALID)
        return ResolvedCall(call, spec, arguments)

    async def call(self, call: ToolCall | ResolvedCall) -> ToolResult:
        """Run a call to the end. Every outcome is a `ToolResult` (see `ToolOutcome`) except
        cancellation: cancelling the task cancels the call on the server too, and
        CancelledError propagates."""
        resolved = call if isinstance(call, ResolvedCall) else await self.resolve(call)
        if isinstance(resolved, ToolResult):
            return resolved
        server = self._servers[resolved.spec.server]
        return await server.call(resolved.call.id, resolved.spec.tool, resolved.arguments)

    # Internals.

    def _unknown(self, call: ToolCall) -> ToolResult:
        names = [spec.name for spec in self.tools()]
        known = ", ".join(names[:30]) + (", …" if len(names) > 30 else "") or "none"
        return ToolResult(call.id, f"There is no tool named '{call.name}'. Available tools: "
                          f"{known}.", True, ToolOutcome.UNAVAILABLE)

    def _status(self, server: ServerConnection) -> ServerStatus:
        specs = tuple(spec for spec in self._specs.values() if spec.server == server.name)
        return ServerStatus(
            name=server.name, transport=server.transport, target=server.config.target,
            state=server.state, reason=server.reason, tools=specs, log_path=server.log_path,
            pid=server.pid, startup_seconds=server.startup_seconds)

    def _changed(self, server: ServerConnection) -> None:
        self._specs = exposed_names((s.name, s.tools) for s in self._servers.values())
        status = self._status(server)
        if server.state is ServerState.FAILED:
            logger.warning("%s", status.line)
        for listener in list(self._listeners):
            try:
                listener(status)
            except Exception:
                logger.exception("a tools listener failed")


def exposed_names(servers: Iterable[tuple[str, Iterable[RemoteTool]]]) -> dict[str, ToolSpec]:
    """Each server's tools under `SERVER__TOOL`, made valid and unique.

    Always prefixed, even when a tool's name is unique: a name then never changes when
    another server starts or fails, so a stored conversation's calls keep meaning the same
    tool, and the model sees which server a tool belongs to. Characters providers reject
    become '_'; a name too long, or clashing after that, ends in a short hash instead.
    """
    specs: dict[str, ToolSpec] = {}
    for server, tools in servers:
        for tool in tools:
            name = re.sub(r"[^a-zA-Z0-9_-]", "_", f"{server}{SEPARATOR}{tool.name}")
            if len(name) > 64 or name in specs:
                digest = hashlib.sha256(f"{server}/{tool.name}".encode()).hexdigest()[:8]
                name = f"{name[:55]}_{digest}"
            specs[name] = ToolSpec(name=name, server=server, tool=tool.name,
                                   description=tool.description,
                                   input_schema=tool.input_schema, title=tool.title,
                                   read_only=tool.read_only)
    return specs


def _json_problem(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"invalid JSON: {exc}"
    kinds = {list: "an array", str: "a string", bool: "true or false", int: "a number",
             float: "a number"}
    return f"got {kinds.get(type(value), 'null')}"


def _route_sdk_logs(path: Path) -> logging.Handler:
    """Send the SDK's log records to `path` and never to the terminal, where Python's
    last-resort handler would print them over the TUI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in SDK_LOGGERS:
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.propagate = False
    return handler


def _unroute_sdk_logs(handler: logging.Handler) -> None:
    for name in SDK_LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    handler.close()


def listing(statuses: Iterable[ServerStatus], policy: ApprovalPolicy | None = None) -> str:
    """What `termchat --tools` prints: each server with its transport, state and tools (with
    whether each runs unasked, given `policy`). Text from servers is not yet terminal-safe."""
    lines: list[str] = []
    for status in statuses:
        state = status.state.value
        if status.state is ServerState.READY and status.startup_seconds is not None:
            state += f" in {status.startup_seconds:.2f} s"
        elif status.state is ServerState.FAILED and status.reason:
            state = status.reason
        lines.append(f"{status.name} ({status.transport}: {status.target}): {state}")
        width = max((len(spec.name) for spec in status.tools), default=0)
        for spec in status.tools:
            mark = ""
            if policy is not None and policy.decide(spec.server, spec.tool).allowed:
                mark = " [runs unasked]"
            lines.append(f"  {spec.name:<{width}}  {spec.summary}{mark}".rstrip())
        if status.state is ServerState.FAILED:
            lines.append(f"  log: {status.log_path}")
    return "\n".join(lines) if lines else "No MCP servers are configured ([mcp.NAME] tables)."
