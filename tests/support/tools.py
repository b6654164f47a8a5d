"""Running the test MCP server (tests/support/mcp_server.py) and mcp-server-time for tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from termchat.tools.config import ServerConfig

SERVER_SCRIPT = Path(__file__).with_name("mcp_server.py")
_time = shutil.which("mcp-server-time", path=str(Path(sys.executable).parent))
assert _time, "mcp-server-time is not installed in this environment (pip install -e '.[test]')"
TIME_SERVER: str = _time
TOKEN = "s3cret-token"


def script_server(name: str, *args: str, events: Path | None = None,
                **settings: Any) -> ServerConfig:
    """The test server over stdio, as `[mcp.NAME]` would configure it."""
    env = {"MCP_TEST_EVENTS": str(events)} if events else {}
    env.update(settings.pop("env", {}))
    return ServerConfig(name, command=sys.executable, args=(str(SERVER_SCRIPT), *args), env=env,
                        **settings)


def time_server(name: str = "time") -> ServerConfig:
    # --local-timezone: the schemas' descriptions name the local zone; keep them fixed.
    return ServerConfig(name, command=TIME_SERVER, args=("--local-timezone", "UTC"))


@dataclass
class HttpServer:
    url: str
    process: subprocess.Popen[bytes]
    events: Path


@contextmanager
def http_server(events: Path, token: str | None = TOKEN) -> Iterator[HttpServer]:
    """The test server over streamable HTTP on 127.0.0.1, requiring `token` if given."""
    command = [sys.executable, str(SERVER_SCRIPT), "--http", "--port", "0"]
    if token:
        command += ["--token", token]
    env = {**os.environ, "MCP_TEST_EVENTS": str(events)}
    log = (events.parent / "http-server.log").open("w")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("PORT "), f"the HTTP test server did not start: {line!r}"
        yield HttpServer(f"http://127.0.0.1:{int(line.split()[1])}/mcp", process, events)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


class Events:
    """What the test server says it saw, read from its MCP_TEST_EVENTS file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0

    def lines(self) -> list[str]:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def mark(self) -> None:
        """Only events after now count for `wait`."""
        self.seen = len(self.lines())

    async def wait(self, prefix: str, timeout: float = 15.0) -> str:
        """The first event after the mark that starts with `prefix`."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines()[self.seen:]:
                    if line.startswith(prefix):
                        return line
                await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether `pid` is a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process is left in process group `pgid` (a server's, its pid)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(alive(int(entry.name)) and os.getpgid(int(entry.name)) == pgid
               for entry in Path("/proc").iterdir() if entry.name.isdigit()
               if _exists(int(entry.name)))


def _exists(pid: int) -> bool:
    try:
        os.getpgid(pid)
    except ProcessLookupError:
        return False
    return True
