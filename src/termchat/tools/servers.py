"""One MCP server: the task that starts it, owns its session and stops it, and calls to it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shlex
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from termchat.content import ToolOutcome, ToolResult
from termchat.tools.config import ServerConfig, Transport
from termchat.tools.results import capped, flatten

if TYPE_CHECKING:
    import anyio.abc
    import httpx2
    from mcp import ClientSession
    from mcp.client.session import IncomingMessage

logger = logging.getLogger("termchat.tools")

# What a stdio server inherits from termchat's environment, besides its own `env` and the
# variables its `pass_env` names: what programs need to run (the SDK's own six: HOME,
# LOGNAME, PATH, SHELL, TERM, USER), to speak the user's language and time zone, to find
# temporary and XDG directories, and to reach the network through the user's proxy and CA
# bundle. Nothing else: no API keys, tokens or other secrets unless the config passes them.
INHERITED_ENV = (
    "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER",
    "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR",
)
# A log file is set aside (to NAME.log.1) when it has grown past this, at a server's start.
LOG_ROTATE_BYTES = 1 << 20
# Once stop is asked for, an HTTP session gets this long to close politely.
STOP_GRACE = 2.0
# How long a call whose server went away waits for the reason (its exit status) to arrive.
GONE_WAIT = 2.0
TOKEN_CMD_TIMEOUT = 30.0
# A reply larger than this is dropped and its call fails. A str result is sent twice (text
# and structured content) and JSON escaping can grow it, hence the factor over the cap.
MIN_MESSAGE_BYTES = 4 << 20


def max_message_bytes(config: ServerConfig) -> int:
    return max(MIN_MESSAGE_BYTES, 8 * config.max_result_chars)


class ServerState(StrEnum):
    DISABLED = "disabled"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class RemoteTool:
    """A tool as its server lists it."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    title: str | None = None
    read_only: bool | None = None


class ServerError(Exception):
    """A server cannot be started or used: `reason` is the half-sentence saying why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def server_environment(config: ServerConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a stdio server runs with (see INHERITED_ENV)."""
    names = [*INHERITED_ENV, *(n for n in environ if n.startswith("LC_")), *config.pass_env]
    # Values starting "()" are exported shell functions, which the SDK also refuses to pass.
    env = {n: environ[n] for n in names if n in environ and not environ[n].startswith("()")}
    return {**env, **config.env}


class ServerConnection:
    """One configured server. `start()` runs `_own` as a task that connects, lists tools and
    then holds the session until `stop()`: anyio's cancel scopes must be entered and left in
    one task, so that task alone opens and closes the session; any task may `call`."""

    def __init__(self, config: ServerConfig, *, log_dir: Path, environ: Mapping[str, str],
                 on_change: Callable[[ServerConnection], None]) -> None:
        self.config = config
        self.log_path = log_dir / f"mcp-{config.name}.log"
        self._environ = environ
        self._on_change = on_change
        self.state = ServerState.STARTING if config.enabled else ServerState.DISABLED
        # A predicate for "MCP server 'NAME' ...", e.g. "failed to start: command not found".
        self.reason: str | None = None if config.enabled else "is disabled in the config"
        self.tools: tuple[RemoteTool, ...] = ()
        self.pid: int | None = None
        self._process: anyio.abc.Process | None = None
        self.startup_seconds: float | None = None
        self._session: ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._deadline: asyncio.Timeout | None = None
        self._settled = asyncio.Event()
        self._gone = asyncio.Event()  # the owner task has ended and said why
        self._wake = asyncio.Event()
        self._stopping = False
        self._lost = False
        self._relist = False
        self._http_status: int | None = None
        self._stderr_from = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def transport(self) -> Transport:
        return self.config.transport

    def start(self) -> None:
        if self._task is None and self.state is ServerState.STARTING:
            self._task = asyncio.get_running_loop().create_task(
                self._own(), name=f"mcp-server-{self.name}")

    async def wait_settled(self) -> None:
        """Until the server is ready or has failed (each start is bounded by its timeout)."""
        if self.state is ServerState.STARTING and self._task is not None:
            await self._settled.wait()

    async def stop(self) -> None:
        """Close the session and stop the server; returns once it is gone."""
        self._stopping = True
        if self.state is ServerState.STARTING and self._deadline is not None:
            # Give up on a start in progress now rather than at its timeout.
            self._deadline.reschedule(asyncio.get_running_loop().time())
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    # The owner task.

    async def _own(self) -> None:
        began = time.perf_counter()
        errlog: IO[str] | None = None
        try:
            errlog = self._open_log()
            await _load_sdk()
            if self._stopping:
                raise asyncio.CancelledError
            async with asyncio.timeout(self.config.startup_timeout) as deadline:
                self._deadline = deadline
                async with self._session_scope(errlog) as session:
                    self._session = session
                    self.tools = await self._list_tools(session)
                    deadline.reschedule(None)
                    self.startup_seconds = time.perf_counter() - began
                    self._http_status = None
                    self._set(ServerState.READY, None)
                    await self._hold(session, deadline)
        except BaseException as exc:
            self._ended(exc)
            if not isinstance(exc, Exception) and not self._stopping:
                raise
        else:
            self._ended(None)
        finally:
            self._settled.set()
            if errlog is not None:
                errlog.close()

    def _ended(self, exc: BaseException | None) -> None:
        """The owner task is done: stopped on request, or failed (`exc` None: the server
        went away on its own)."""
        self._session = None
        self._gone.set()
        if self._stopping:
            self._set(ServerState.STOPPED, None)
        elif isinstance(exc, asyncio.CancelledError):
            self._set(ServerState.STOPPED, "was stopped (its task was cancelled)")
        elif exc is None:
            self._set(ServerState.FAILED, f"stopped working: {self._exit_reason()}")
        elif self.state is ServerState.STARTING:
            self._set(ServerState.FAILED, f"failed to start: {self._explain(exc)}")
        else:
            self._set(ServerState.FAILED, f"stopped working: {self._explain(exc)}")

    async def _hold(self, session: ClientSession, deadline: asyncio.Timeout) -> None:
        """Keep the session until asked to stop or the server goes away; re-list the tools
        when the server says they changed."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                if self.transport == "http":
                    # Bound the polite close (the DELETE that ends the HTTP session). A stdio
                    # server's shutdown bounds itself, and a cancellation in the middle of it
                    # would cut it short.
                    deadline.reschedule(asyncio.get_running_loop().time() + STOP_GRACE)
                return
            if self._lost:
                return
            if self._relist:
                self._relist = False
                try:
                    async with asyncio.timeout(self.config.startup_timeout):
                        self.tools = await self._list_tools(session)
                except Exception as exc:
                    logger.warning("%s: listing tools again failed: %r", self.name, exc)
                self._on_change(self)

    @contextlib.asynccontextmanager
    async def _session_scope(self, errlog: IO[str]) -> AsyncIterator[ClientSession]:
        from mcp import ClientSession
        from mcp_types import Implementation

        import termchat

        async with contextlib.AsyncExitStack() as stack:
            if self.transport == "stdio":
                read, write = await stack.enter_async_context(self._stdio(errlog))
            else:
                read, write = await stack.enter_async_context(self._http())
            session = await stack.enter_async_context(ClientSession(
                read, write, message_handler=self._on_message,
                client_info=Implementation(name="termchat", version=termchat.__version__)))
            # The legacy handshake, not `mcp.Client`'s discovery probe: a server that ignores
            # the unknown `server/discover` method cost 10 s before the fallback.
            await session.initialize()
            yield session

    @contextlib.asynccontextmanager
    async def _stdio(self, errlog: IO[str]) -> AsyncIterator[tuple[Any, Any]]:
        from termchat.tools.stdio import stdio_transport

        command = [os.path.expanduser(self.config.command or ""), *self.config.args]
        cwd = os.path.expanduser(self.config.cwd) if self.config.cwd else None
        transport = stdio_transport(
            command, env=server_environment(self.config, self._environ), cwd=cwd,
            errlog=errlog, max_message_bytes=max_message_bytes(self.config),
            on_eof=self._server_gone)
        async with transport as (read, write, process):
            self._process = process
            self.pid = process.pid
            yield read, write

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[tuple[Any, Any]]:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        headers = dict(self.config.headers)
        token = await self._token()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"

        async def seen(response: httpx2.Response) -> None:
            # Requests, not the optional GET stream, which a server may refuse with 405.
            if response.status_code >= 400 and response.request.method == "POST":
                self._http_status = response.status_code

        # The read timeout must outlast the longest call, which sends nothing until it ends.
        timeout = httpx2.Timeout(30.0, read=max(300.0, self.config.timeout + 30.0))
        client = httpx2.AsyncClient(headers=headers, timeout=timeout,
                                    event_hooks={"response": [seen]})
        async with client, streamable_http_client(
                self.config.url or "", http_client=client,
                max_sse_event_size=max_message_bytes(self.config)) as (read, write):
            yield read, write

    async def _token(self) -> str | None:
        if self.config.token_env:
            token = self._environ.get(self.config.token_env, "").strip()
            if not token:
                raise ServerError(f"token_env names {self.config.token_env}, which is not set")
            return token
        if not self.config.token_cmd:
            return None
        try:
            process = await asyncio.create_subprocess_exec(
                *shlex.split(self.config.token_cmd), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        except (OSError, ValueError) as exc:
            raise ServerError(f"token_cmd could not run ({exc})") from None
        try:
            async with asyncio.timeout(TOKEN_CMD_TIMEOUT):
                out, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise ServerError(f"token_cmd did not finish within {TOKEN_CMD_TIMEOUT:g} s") \
                from None
        token = out.decode(errors="replace").strip()
        if process.returncode:
            raise ServerError(f"token_cmd exited with {process.returncode}")
        if not token:
            raise ServerError("token_cmd printed nothing")
        return token

    async def _list_tools(self, session: ClientSession) -> tuple[RemoteTool, ...]:
        from mcp_types import PaginatedRequestParams

        tools: list[RemoteTool] = []
        cursor: str | None = None
        while True:
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            for tool in page.tools:
                hints = tool.annotations
                tools.append(RemoteTool(
                    name=tool.name, description=tool.description or "",
                    input_schema=tool.input_schema, title=tool.title,
                    read_only=hints.read_only_hint if hints else None))
            cursor = page.next_cursor
            if not cursor:
                return tuple(tools)

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            logger.warning("%s: %r", self.name, message)
        elif message.method == "notifications/tools/list_changed":
            self._relist = True
            self._wake.set()

    def _server_gone(self) -> None:
        self._lost = True
        self._wake.set()

    def _set(self, state: ServerState, reason: str | None) -> None:
        self.state, self.reason = state, reason
        if state is not ServerState.STARTING:
            self._settled.set()
        self._on_change(self)

    # Calls, from any task.

    async def call(self, call_id: str, tool: str, arguments: dict[str, Any]) -> ToolResult:
        """Run `tool`; every outcome is a result but cancellation, which propagates (the SDK
        has then told the server with `notifications/cancelled`)."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        from termchat.tools.stdio import MESSAGE_TOO_LARGE

        session = self._session
        if session is None or self.state is not ServerState.READY:
            return self.unavailable(call_id)
        limit = self.config.timeout
        try:
            async with asyncio.timeout(limit):
                result = await session.call_tool(tool, arguments)
        except TimeoutError:
            return ToolResult(call_id, f"The tool '{tool}' did not finish within {limit:g} s "
                              "and was cancelled.", True, ToolOutcome.TIMEOUT)
        except MCPError as exc:
            # The SDK also gives one request's transport failure (an SSE event over the size
            # limit, say) this code, with its own message, and the session goes on.
            if exc.code == CONNECTION_CLOSED and exc.message == "Connection closed":
                # Its owner task sees the server exit a moment later and says why (the
                # one line naming it): wait for that, so the why is never lost to a run that
                # ends first.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(GONE_WAIT):
                        await self._gone.wait()
                return ToolResult(call_id, f"The MCP server '{self.name}' stopped during the "
                                  "call; its tools are unavailable.", True,
                                  ToolOutcome.UNAVAILABLE)
            if exc.code == MESSAGE_TOO_LARGE:
                return ToolResult(call_id, f"The result of '{tool}' was over "
                                  f"{max_message_bytes(self.config):,} bytes, more than termchat "
                                  "accepts, and was dropped; ask for less.", True,
                                  ToolOutcome.ERROR)
            return ToolResult(call_id, f"The MCP server '{self.name}' answered with an error: "
                              f"{_one_line(exc.message)}", True, ToolOutcome.ERROR)
        except Exception as exc:
            logger.warning("%s: calling %s failed: %r", self.name, tool, exc)
            return ToolResult(call_id, f"Calling '{tool}' failed: {_describe(exc)}", True,
                              ToolOutcome.ERROR)
        text = capped(flatten(result.content, result.structured_content),
                      self.config.max_result_chars)
        if result.is_error:
            return ToolResult(call_id, text or "The tool reported an error.", True,
                              ToolOutcome.ERROR)
        return ToolResult(call_id, text, False, ToolOutcome.OK)

    def unavailable(self, call_id: str) -> ToolResult:
        why = {ServerState.STARTING: "is still starting",
               ServerState.DISABLED: "is disabled in the config",
               ServerState.STOPPED: "has been stopped"}.get(self.state)
        if why is None:
            why = self.reason or "is not available"
        return ToolResult(call_id, f"The MCP server '{self.name}' {why}; its tools cannot be "
                          "used now.", True, ToolOutcome.UNAVAILABLE)

    # Explaining failures in one clause.

    def _explain(self, exc: BaseException) -> str:
        leaf = _leaf(exc)
        if isinstance(leaf, ServerError):
            return leaf.reason
        if isinstance(leaf, TimeoutError):
            return f"no answer within {self.config.startup_timeout:g} s (startup_timeout)"
        if isinstance(leaf, FileNotFoundError):
            if self.config.cwd and leaf.filename == os.path.expanduser(self.config.cwd):
                return f"no such directory: {self.config.cwd} (cwd)"
            return f"command not found: {self.config.command}"
        if isinstance(leaf, OSError) and self.transport == "stdio":
            return f"cannot run {self.config.command} ({leaf.strerror or leaf})"
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        if isinstance(leaf, MCPError) and leaf.code == CONNECTION_CLOSED:
            return self._exit_reason()
        if self._http_status in (401, 403):
            return (f"the server refused the credentials (HTTP {self._http_status}); "
                    "check token_env / token_cmd or headers")
        if self._http_status is not None:
            return f"HTTP {self._http_status} from {self.config.url}"
        if isinstance(leaf, MCPError):
            return f"error from the server: {_one_line(leaf.message)}"
        import httpx2

        if isinstance(leaf, httpx2.ConnectError):
            return f"cannot connect to {self.config.url}"
        return _describe(leaf)

    def _exit_reason(self) -> str:
        if self.transport == "http":
            return "the connection closed"
        code = self._process.returncode if self._process is not None else None
        status = "exited" if code is None else \
            f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        last = self._last_stderr_line()
        return f"{status} ({last})" if last else status

    def _open_log(self) -> IO[str]:
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                if self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                    self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
            log = self.log_path.open("a", encoding="utf-8", errors="replace")
        except OSError as exc:
            # Without a log the server still runs; its stderr must not reach the terminal.
            logger.warning("%s: cannot write %s (%s)", self.name, self.log_path, exc)
            self._stderr_from = -1
            return open(os.devnull, "w")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"--- {stamp} termchat starts MCP server '{self.name}': "
                  f"{self.config.target}\n")
        log.flush()
        self._stderr_from = log.tell()
        return log

    def _last_stderr_line(self) -> str:
        """The last line the server wrote on stderr since it started, which for a server that
        exits at once is usually why."""
        if self._stderr_from < 0:
            return ""
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self._stderr_from, size - 4096))
                tail = log.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        return _one_line(lines[-1], 160) if lines else ""


_sdk_loaded = False


async def _load_sdk() -> None:
    """Import the SDK in a thread. On the event loop the import stalled it for 530-650 ms
    (the TUI frozen as long); from a thread the longest stall while a server started was
    about 30 ms (bench/bench_tools.py)."""
    global _sdk_loaded
    if not _sdk_loaded:
        await asyncio.to_thread(_import_sdk)
        _sdk_loaded = True


def _import_sdk() -> None:
    for module in ("mcp", "mcp.client.streamable_http", "httpx2", "termchat.tools.stdio"):
        importlib.import_module(module)


def _leaf(exc: BaseException) -> BaseException:
    """The first exception inside the exception groups anyio's task groups wrap errors in,
    preferring a real error to a cancellation."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    return exc


def _describe(exc: BaseException) -> str:
    text = _one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"

