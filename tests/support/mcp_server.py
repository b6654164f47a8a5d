"""A real MCP server for the tools tests, over stdio (the default) or streamable HTTP.

    python tests/support/mcp_server.py                       # stdio
    python tests/support/mcp_server.py --http [--port 0] [--token SECRET]

Over HTTP it prints `PORT n` on stdout once listening (so `--port 0` works) and, with
`--token`, answers 401 to any request without `Authorization: Bearer SECRET`. The server
appends what it sees (`start PID`, `sleep-start ID`, `sleep-cancelled ID`, ...) to the file
named by MCP_TEST_EVENTS, so a test can check the server's side of a call.
`--fail-start MESSAGE` prints MESSAGE on stderr and exits 3 before the handshake;
`--hang-start` never answers it; `--stubborn` ignores SIGTERM and outlives its stdin.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

# A 1x1 transparent PNG, for the tests of non-text content.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")

server = MCPServer("termchat-test", version="1.0.0")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def record(event: str) -> None:
    path = os.environ.get("MCP_TEST_EVENTS")
    if path:
        with open(path, "a") as file:
            file.write(event + "\n")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged.

    A second paragraph, which a one-line listing leaves out."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def sleep(seconds: float, ctx: Context) -> str:
    """Sleep for a number of seconds (cancellable)."""
    # Async, so a cancellation from the client interrupts the await.
    record(f"sleep-start {ctx.request_id}")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        record(f"sleep-cancelled {ctx.request_id}")
        raise
    record(f"sleep-done {ctx.request_id}")
    return f"slept {seconds}"


@server.tool()
def fail(message: str = "it went wrong") -> str:
    """Always fail with the message."""
    raise ToolError(message)


@server.tool()
def flood(n: int) -> str:
    """Return n characters."""
    return "x" * n


@server.tool(structured_output=False)
def picture() -> list[Any]:
    """Return a caption and a PNG image."""
    return ["a tiny picture", Image(data=PNG, format="png")]


@server.tool()
def getenv(name: str) -> str:
    """Return an environment variable of the server process, or '(unset)'."""
    return os.environ.get(name, "(unset)")


@server.tool()
def crash() -> str:
    """Kill the server process in the middle of the call."""
    print("crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool()
async def grow(ctx: Context) -> str:
    """Add the tool `grown` and tell the client that the tool list changed."""
    server.add_tool(grown)
    await ctx.session.send_tool_list_changed()
    return "grown"


def grown() -> str:
    """A tool that exists once `grow` has run."""
    return "hello from grown"


@server.tool(name="dotted.name")
def dotted() -> str:
    """A tool whose name no provider accepts as is."""
    return "dotted"


def require_bearer(app: App, token: str) -> App:
    """`app` behind a bearer-token check (the lifespan scope passes through)."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    return guarded


async def serve_http(port: int, token: str | None) -> None:
    import uvicorn

    app: App = server.streamable_http_app()
    if token:
        app = require_bearer(app, token)
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))

    async def announce() -> None:
        while not web.started:
            await anyio.sleep(0.01)
        print(f"PORT {web.servers[0].sockets[0].getsockname()[1]}", flush=True)

    async with anyio.create_task_group() as group:
        group.start_soon(announce)
        await web.serve()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token")
    parser.add_argument("--fail-start", metavar="MESSAGE")
    parser.add_argument("--hang-start", action="store_true")
    parser.add_argument("--stubborn", action="store_true",
                        help="ignore SIGTERM and keep running once stdin closes")
    options = parser.parse_args()
    record(f"start {os.getpid()}")
    if options.fail_start:
        print(options.fail_start, file=sys.stderr, flush=True)
        sys.exit(3)
    if options.hang_start:
        time.sleep(3600)
    if options.stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if options.http:
        anyio.run(serve_http, options.port, options.token)
    else:
        server.run()
    if options.stubborn:
        record("stdin closed, staying up")
        time.sleep(3600)


if __name__ == "__main__":
    main()
