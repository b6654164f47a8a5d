"""Tools in one-shot mode: the MCP servers a run needs, started before its first request and
stopped before it exits; each call approved on the controlling terminal (denied, with how to
allow it, when there is none) and told in one line on stderr.

Everything a server or the model wrote (tool names, arguments, results, errors) passes the
sanitiser before it reaches a terminal.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

from termchat.content import ToolCall, ToolOutcome, ToolResult
from termchat.events import Event, ToolCallReady, ToolFinished, ToolRunning
from termchat.untrusted import json_text, safe, safe_line

if TYPE_CHECKING:
    from termchat.config import ModelConfig
    from termchat.tools.box import ResolvedCall, ServerStatus, ToolBox, ToolSpec
    from termchat.tools.config import ServerConfig, ToolsConfig, ToolSelection
    from termchat.tools.policy import ApprovalPolicy, Choice
    from termchat.tools.runner import ToolRunner
    from termchat.turn import Reply

# Arguments in a call's line are cut to this many characters; the approval prompt and
# `--json` have them whole.
ARGUMENTS_SHOWN = 80
# A result's or error's sentence in a call's line.
SENTENCE_SHOWN = 200

_OUTCOME_WORDS = {
    ToolOutcome.ERROR: "error",
    ToolOutcome.TIMEOUT: "timed out",
    ToolOutcome.INVALID: "invalid arguments",
    ToolOutcome.UNAVAILABLE: "unavailable",
}
# What each answer at the approval prompt may be typed as.
_ANSWERS = {"o": "once", "once": "once", "y": "once", "yes": "once",
            "t": "always_tool", "tool": "always_tool", "a": "always_tool",
            "always": "always_tool",
            "s": "always_server", "server": "always_server",
            "d": "deny", "deny": "deny", "n": "deny", "no": "deny"}


def servers_for(config: ToolsConfig, model: ModelConfig) -> list[ServerConfig]:
    """The enabled servers whose tools `model` may be offered (its `tools` choice)."""
    selection = config.selection_for(model.name)
    return [server for server in config.servers.values()
            if server.enabled and _may_use(selection, server.name)]


def _may_use(selection: ToolSelection, server: str) -> bool:
    return selection.servers is None or server in selection.servers or any(
        name == server for name, _ in selection.tools)


def short_arguments(call: ToolCall, limit: int = ARGUMENTS_SHOWN) -> str:
    """A call's arguments on one line, compact and cut to `limit` characters: `{"text": "hi"}`,
    `{}`, or the model's text as it is when it is not JSON."""
    parsed = call.parsed_arguments()
    text = call.arguments if parsed is None else \
        json.dumps(parsed, ensure_ascii=False, separators=(", ", ": "))
    line = safe_line(text)
    return line if len(line) <= limit else line[:limit - 1] + "…"


def calls_json(reply: Reply, specs: Mapping[str, ToolSpec]) -> list[dict[str, Any]]:
    """Every call of `reply` for `--json`, in order, with its result: `arguments` exactly as
    the model wrote them (JSON text), `status` an outcome (`ok`, `error`, `denied`,
    `cancelled`, `timeout`, `invalid`, `unavailable`) or `not_run` (the round limit)."""
    results = {p.call_id: p for p in reply.parts if isinstance(p, ToolResult)}
    calls: list[dict[str, Any]] = []
    for part in reply.parts:
        if not isinstance(part, ToolCall):
            continue
        spec = specs.get(part.name)
        result = results.get(part.id)
        calls.append({
            "id": part.id, "name": part.name,
            "server": spec.server if spec else None, "tool": spec.tool if spec else None,
            "arguments": part.arguments,
            "result": result.content if result else None,
            "is_error": result.is_error if result else None,
            "status": str(result.outcome) if result else "not_run",
        })
    return calls


def _sentence(text: str, limit: int = SENTENCE_SHOWN) -> str:
    line = safe_line(text)
    return line if len(line) <= limit else line[:limit - 1] + "…"


class ToolSession:
    """The tools of one run: the box of servers, the approval policy, the prompt on the
    terminal, and the lines on stderr. Made outside the loop; `start`, `runner` and `aclose`
    run in it."""

    def __init__(self, config: ToolsConfig, model: ModelConfig, *, yes: bool,
                 allow_tools: list[str], err: IO[str],
                 tty_path: str = "/dev/tty") -> None:
        from termchat.tools.policy import ApprovalPolicy

        self._config = config
        self._servers = servers_for(config, model)
        self._selection = config.selection_for(model.name)
        self._yes = yes
        self.policy: ApprovalPolicy = ApprovalPolicy(config, yes=yes, allow_tools=allow_tools)
        self._allow_tools = allow_tools
        self._err = err
        self._tty_path = tty_path
        self._tty: int | None = None
        self._tty_tried = False
        self.box: ToolBox | None = None
        self._specs: dict[str, ToolSpec] = {}
        self._calls: dict[str, ToolCall] = {}
        self._started: dict[str, float] = {}
        self._told: set[str] = set()
        # Calls denied because there was no terminal to ask on: their server and tool.
        self._unasked: dict[str, tuple[str, str]] = {}
        self._failed: set[str] = set()
        self.before_output: Callable[[], None] = lambda: None
        """Called before anything is written to the terminal (the sink settles its view)."""

    @property
    def wanted(self) -> bool:
        """Whether any server is to start at all (none configured, or none the model may use:
        nothing starts and `mcp` is never imported)."""
        return bool(self._servers) and not self._selection.none

    def start(self) -> None:
        """Start the servers in the background; returns at once."""
        from termchat.tools.box import ToolBox

        self.box = ToolBox(self._servers)
        self.box.subscribe(self._status_changed)
        self.box.start()

    async def runner(self) -> ToolRunner:
        """Once every server is up or has failed: the runner the conversation calls tools
        through."""
        from termchat.tools.policy import ApprovalPolicy
        from termchat.tools.runner import ToolRunner

        assert self.box is not None
        await self.box.wait_ready()
        self._specs = {spec.name: spec for spec in self.box.tools()}
        # `--allow-tool` may name a tool as the model sees it; the policy knows SERVER__TOOL
        # spelt from the server's own name, which differs when that name had to be changed
        # for the providers (`dotted.name` is offered as `t__dotted_name`).
        exposed = [f"{spec.server}.{spec.tool}" for name, spec in self._specs.items()
                   if name in self._allow_tools]
        if exposed:
            self.policy = ApprovalPolicy(self._config, yes=self._yes,
                                         allow_tools=[*self._allow_tools, *exposed])
        self._warn_unmatched()
        return ToolRunner(self.box, self.policy, self._ask, max_rounds=self._config.max_rounds,
                          selection=self._selection)

    async def aclose(self) -> None:
        """Stop every server and wait until each is gone; close the terminal."""
        try:
            if self.box is not None:
                await self.box.aclose()
        finally:
            if self._tty is not None:
                os.close(self._tty)
                self._tty = None

    # Lines on stderr.

    def _line(self, text: str) -> None:
        self.before_output()
        print(safe_line(f"termchat: {text}"), file=self._err, flush=True)

    def _status_changed(self, status: ServerStatus) -> None:
        from termchat.tools.servers import ServerState

        if status.state is not ServerState.FAILED or status.name in self._failed:
            return
        self._failed.add(status.name)
        self._line(f"warning: {status.line.rstrip('.')}; its tools are unavailable "
                   f"(log: {status.log_path}).")

    def _warn_unmatched(self) -> None:
        """An `--allow-tool` that names no tool of a running server is most likely a typo."""
        assert self.box is not None
        tools = [(spec.name, spec.server, spec.tool) for spec in self.box.tools()]
        running = {status.name for status in self.box.statuses() if status.tools}
        for name in self._allow_tools:
            server, dot, _ = name.partition(".")
            if dot and server not in running:
                continue  # its server failed, and said so
            if not any(name in (exposed, f"{s}.{t}", f"{s}.*", f"{s}__{t}", t)
                       for exposed, s, t in tools):
                self._line(f"warning: --allow-tool {name} matches no tool of the MCP servers "
                           "running; see termchat --tools.")

    def label(self, call: ToolCall) -> str:
        """`server.tool` when the call names a tool there is, else its name as the model
        wrote it."""
        spec = self._specs.get(call.name)
        return safe_line(f"{spec.server}.{spec.tool}" if spec else call.name)

    def on_event(self, event: Event) -> None:
        if isinstance(event, ToolCallReady):
            self._calls[event.call.id] = event.call
        elif isinstance(event, ToolRunning):
            self._started[event.call_id] = time.monotonic()
        elif isinstance(event, ToolFinished):
            self._tell(event.result)

    def _tell(self, result: ToolResult) -> None:
        if result.call_id in self._told:
            return
        self._told.add(result.call_id)
        call = self._calls.get(result.call_id, ToolCall(result.call_id, "?", ""))
        self._line(f"tool {self.label(call)} {short_arguments(call)}: {self._outcome(result)}")

    def _outcome(self, result: ToolResult) -> str:
        if result.outcome is ToolOutcome.OK:
            began = self._started.get(result.call_id)
            return "ok" if began is None else f"ok in {time.monotonic() - began:.2f} s"
        if result.outcome is ToolOutcome.CANCELLED:
            return "cancelled"
        if result.outcome is ToolOutcome.DENIED:
            if result.call_id in self._unasked:
                server, tool = self._unasked[result.call_id]
                return f"denied: no terminal to ask on; {self.policy.how_to_allow(server, tool)}"
            return "denied"
        word = _OUTCOME_WORDS.get(result.outcome, str(result.outcome))
        return f"{word}: {_sentence(result.content)}"

    def finish(self, reply: Reply | None) -> None:
        """The calls the turn ended without telling: cancelled with it, or never run because
        the round limit came first."""
        if reply is None:
            return
        for part in reply.parts:
            if isinstance(part, ToolResult):
                self._tell(part)
        if reply.round_limit:
            unrun = reply.pending_calls()
            self._line(f"warning: the model still asked for tools after {reply.rounds} rounds "
                       f"(max_rounds = {self._config.max_rounds} in [tools] of the config), so "
                       f"the turn ended there; {len(unrun)} call{'s' * (len(unrun) != 1)} "
                       "did not run.")

    @property
    def specs(self) -> Mapping[str, ToolSpec]:
        """The tools offered, by the name the model calls them."""
        return self._specs

    # Approval.

    async def _ask(self, resolved: ResolvedCall) -> Choice:
        from termchat.tools.policy import Choice

        self._specs.setdefault(resolved.spec.name, resolved.spec)
        tty = self._open_tty()
        if tty is None:
            self._unasked[resolved.call.id] = (resolved.spec.server, resolved.spec.tool)
            return Choice.DENY
        self.before_output()
        self._err.flush()
        _write(tty, approval_prompt(resolved))
        while True:
            line = await _read_line(tty)
            if not line:
                _write(tty, "\n")
                return Choice.DENY  # end of input (Ctrl+D): no answer is no
            answer = _ANSWERS.get(line.strip().lower())
            if answer is not None:
                return Choice(answer)
            _write(tty, "type o, t, s or d, then Enter: ")

    def _open_tty(self) -> int | None:
        if not self._tty_tried:
            self._tty_tried = True
            try:
                self._tty = os.open(self._tty_path, os.O_RDWR | os.O_NOCTTY)
            except OSError:
                self._tty = None
        return self._tty


def approval_prompt(resolved: ResolvedCall) -> str:
    """What the terminal shows before a call runs: the server, the tool, its whole arguments
    as pretty JSON, and the four answers."""
    spec = resolved.spec
    arguments = json_text(resolved.arguments, indent=2)
    body = "\n".join(f"    {line}" for line in safe(arguments).splitlines())
    title = f" ({safe_line(spec.summary)})" if spec.summary else ""
    return (f"termchat: the model asks to run tool '{safe_line(spec.tool)}' of MCP server "
            f"'{safe_line(spec.server)}'{title}\n"
            f"  arguments:\n{body}\n"
            "  [o] once  [t] always this tool  [s] always this server  [d] deny\n"
            "run it? [o/t/s/d]: ")


def _write(fd: int, text: str) -> None:
    data = text.encode()
    while data:
        data = data[os.write(fd, data):]


async def _read_line(fd: int) -> str:
    """One line typed on the terminal `fd` (in its own line editing), read without blocking
    the loop, so Ctrl+C still cancels the turn; "" at end of file (Ctrl+D)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    pieces: list[bytes] = []

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        pieces.append(chunk)
        if (not chunk or chunk.endswith(b"\n")) and not done.done():
            done.set_result(b"".join(pieces).decode(errors="replace"))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)
