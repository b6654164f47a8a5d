"""The `[mcp.NAME]` servers, the `[tools]` defaults and each model's `tools` choice, validated."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from termchat.config import _Checker

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RESULT_CHARS = 20_000
DEFAULT_STARTUP_TIMEOUT = 10.0
DEFAULT_MAX_ROUNDS = 10

# Server names become the prefix of every tool name sent to a provider, which allows only
# [a-zA-Z0-9_-]{1,64}; 32 leaves room for the tool's own name. No '.', so that
# "server.tool" in a model's `tools` list splits one way only.
SERVER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")

Transport = Literal["stdio", "http"]

# A key's expected kind: how the check reads it, and how an error names it.
_Kind = Literal["str", "bool", "number", "int", "strings", "table"]
_KIND_NAMES: dict[_Kind, str] = {
    "str": "a string", "bool": "true or false", "number": "a number", "int": "an integer",
    "strings": "a list of strings", "table": "a table of strings",
}
_STDIO_KEYS: dict[str, _Kind] = {"command": "str", "args": "strings", "env": "table",
                                 "pass_env": "strings", "cwd": "str"}
_HTTP_KEYS: dict[str, _Kind] = {"url": "str", "headers": "table", "token_env": "str",
                                "token_cmd": "str"}
_LIMIT_KEYS: dict[str, _Kind] = {"timeout": "number", "max_result_chars": "int",
                                 "startup_timeout": "number"}
_SERVER_KEYS: dict[str, _Kind] = {**_STDIO_KEYS, **_HTTP_KEYS, "enabled": "bool",
                                  "allow": "strings", "trust": "bool", **_LIMIT_KEYS}
_TOOLS_KEYS: dict[str, _Kind] = {"max_rounds": "int", **_LIMIT_KEYS}


@dataclass(frozen=True)
class ServerConfig:
    """One `[mcp.NAME]` table: how to reach the server, what is pre-approved, and its bounds."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    pass_env: tuple[str, ...] = ()
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    token_env: str | None = None
    token_cmd: str | None = None
    enabled: bool = True
    allow: frozenset[str] = frozenset()
    trust: bool = False
    timeout: float = DEFAULT_TIMEOUT
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT

    @property
    def transport(self) -> Transport:
        return "stdio" if self.command is not None else "http"

    @property
    def target(self) -> str:
        """The command line or the URL, as a listing shows it."""
        if self.command is None:
            return self.url or ""
        import shlex

        return shlex.join([self.command, *self.args])


@dataclass(frozen=True)
class ToolSelection:
    """Which tools a model may see: every server's (`servers` None), or the named servers'
    and individually named `(server, tool)` pairs."""

    servers: frozenset[str] | None = None
    tools: frozenset[tuple[str, str]] = frozenset()

    def allows(self, server: str, tool: str) -> bool:
        return self.servers is None or server in self.servers or (server, tool) in self.tools

    @property
    def none(self) -> bool:
        return self.servers is not None and not self.servers and not self.tools


ALL_TOOLS = ToolSelection()
NO_TOOLS = ToolSelection(servers=frozenset())


@dataclass(frozen=True)
class ToolsConfig:
    """The tools part of the configuration: servers by name, the round limit, and the
    `tools` choice of each model alias that made one."""

    servers: Mapping[str, ServerConfig] = field(default_factory=dict)
    max_rounds: int = DEFAULT_MAX_ROUNDS
    models: Mapping[str, ToolSelection] = field(default_factory=dict)

    def selection_for(self, model: str) -> ToolSelection:
        """The tools model alias `model` may use: its `tools` list, else every server's."""
        return self.models.get(model, ALL_TOOLS)


def parse_tools(checker: _Checker, data: Mapping[str, Any]) -> ToolsConfig:
    """Validate `[tools]`, every `[mcp.NAME]` and every `models.NAME.tools` in a parsed file."""
    tools = data.get("tools", {})
    _check(checker, tools, _TOOLS_KEYS, "tools.")
    _check_limits(checker, tools, "tools.")
    max_rounds = tools.get("max_rounds", DEFAULT_MAX_ROUNDS)
    if max_rounds < 1:
        raise checker.fail("tools.max_rounds", "non-positive value for", "use 1 or more")
    limits = {key: tools[key] for key in _LIMIT_KEYS if key in tools}

    servers: dict[str, ServerConfig] = {}
    for name, table in data.get("mcp", {}).items():
        servers[name] = _server(checker, name, table, limits)

    models: dict[str, ToolSelection] = {}
    for alias, table in data.get("models", {}).items():
        if isinstance(table, dict) and "tools" in table:
            models[alias] = _selection(checker, f"models.{alias}.tools", table["tools"], servers)
    return ToolsConfig(servers=servers, max_rounds=max_rounds, models=models)


def _server(checker: _Checker, name: str, table: Any, limits: Mapping[str, Any]) -> ServerConfig:
    key = f"mcp.{name}"
    if not isinstance(table, dict):
        raise checker.fail(key, "wrong type for", "each server must be a [mcp.NAME] table")
    if not SERVER_NAME.fullmatch(name):
        raise checker.fail(key, "bad server name", "use at most 32 letters, digits, '-' or '_'")
    prefix = key + "."
    _check(checker, table, _SERVER_KEYS, prefix)
    _check_limits(checker, table, prefix)
    if "command" in table and "url" in table:
        raise checker.fail(key, "both command and url in",
                           "a server is either a command (stdio) or a url (streamable HTTP)")
    if "command" not in table and "url" not in table:
        raise checker.fail(key, "no command or url in",
                           "set command = \"...\" for a stdio server or url = \"https://...\"")
    wrong = _HTTP_KEYS if "command" in table else _STDIO_KEYS
    for other in wrong:
        if other in table:
            kind = "an HTTP server (url)" if "command" in table else "a stdio server (command)"
            raise checker.fail(prefix + other, "misplaced key", f"it applies only to {kind}")
    if "command" in table and not table["command"].strip():
        raise checker.fail(prefix + "command", "empty", "name the program to run")
    url = table.get("url")
    if url is not None and not re.match(r"https?://[^/\s]", url):
        raise checker.fail(prefix + "url", "not an http:// or https:// URL in",
                           "give the server's full URL, e.g. http://127.0.0.1:8000/mcp")
    if "token_env" in table and "token_cmd" in table:
        raise checker.fail(prefix + "token_cmd", "both token_env and", "keep one of them")
    headers = table.get("headers", {})
    if ("token_env" in table or "token_cmd" in table) and \
            any(h.lower() == "authorization" for h in headers):
        raise checker.fail(prefix + "headers", "an Authorization header and a token in",
                           "keep token_env / token_cmd or the header, not both")
    settings = {**limits, **{k: v for k, v in table.items() if k in _LIMIT_KEYS}}
    return ServerConfig(
        name=name, command=table.get("command"), args=tuple(table.get("args", ())),
        env=dict(table.get("env", {})), pass_env=tuple(table.get("pass_env", ())),
        cwd=table.get("cwd"), url=url, headers=dict(headers),
        token_env=table.get("token_env"), token_cmd=table.get("token_cmd"),
        enabled=table.get("enabled", True), allow=frozenset(table.get("allow", ())),
        trust=table.get("trust", False), **settings)


def _selection(checker: _Checker, key: str, value: Any,
               servers: Mapping[str, ServerConfig]) -> ToolSelection:
    if value is True:
        return ALL_TOOLS
    if value is False:
        return NO_TOOLS
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise checker.fail(key, "wrong type for",
                           "it must be a list of \"server\" or \"server.tool\", or false")
    chosen: set[str] = set()
    tools: set[tuple[str, str]] = set()
    for entry in value:
        server, dot, tool = entry.partition(".")
        if server not in servers:
            import difflib

            close = difflib.get_close_matches(server, list(servers), n=1)
            fix = f"did you mean '{close[0]}'" if close else \
                f"configured servers: {', '.join(servers) or 'none'}"
            raise checker.fail(key, f"unknown server '{server}' in", fix)
        if dot and not tool:
            raise checker.fail(key, f"no tool after '{server}.' in",
                               f"write \"{server}\" for all its tools or \"{server}.TOOL\"")
        if dot:
            tools.add((server, tool))
        else:
            chosen.add(server)
    return ToolSelection(servers=frozenset(chosen), tools=frozenset(tools))


def _check(checker: _Checker, table: Any, allowed: Mapping[str, _Kind], prefix: str) -> None:
    if not isinstance(table, dict):
        raise checker.fail(prefix.rstrip("."), "wrong type for", "it must be a table")
    for key, value in table.items():
        dotted = prefix + key
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(key, list(allowed), n=1)
            fix = f"did you mean '{close[0]}'" if close else \
                f"allowed keys here: {', '.join(allowed)}"
            raise checker.fail(dotted, "unknown key", fix)
        kind = allowed[key]
        if not _is(kind, value):
            raise checker.fail(dotted, "wrong type for", f"it must be {_KIND_NAMES[kind]}")


def _is(kind: _Kind, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "str":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, int | float)
    if kind == "int":
        return isinstance(value, int)
    if kind == "strings":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _check_limits(checker: _Checker, table: Mapping[str, Any], prefix: str) -> None:
    for key in _LIMIT_KEYS:
        value = table.get(key)
        if value is not None and value <= 0:
            raise checker.fail(prefix + key, "non-positive value for", "use a number above 0")
