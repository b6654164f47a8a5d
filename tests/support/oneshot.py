"""Running the installed `termchat` one-shot with tools, attachments and prices: with no
controlling terminal (so no call is ever asked about on the terminal of whoever runs the
tests), or with a pseudo-terminal as its controlling terminal to answer the approval prompt."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.cli import BASE_CONFIG, TERMCHAT, Run
from tests.support.tools import SERVER_SCRIPT, TIME_SERVER


def toml_string(value: str) -> str:
    """`value` as a TOML basic string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def script_server_toml(name: str, events: Path | None = None, *args: str,
                       **settings: object) -> str:
    """`[mcp.NAME]` for the test MCP server (tests/support/mcp_server.py) over stdio."""
    lines = [f"[mcp.{name}]", f"command = {toml_string(sys.executable)}",
             "args = [" + ", ".join(toml_string(a) for a in (str(SERVER_SCRIPT), *args)) + "]"]
    if events is not None:
        lines.append(f"env = {{ MCP_TEST_EVENTS = {toml_string(str(events))} }}")
    for key, value in settings.items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def time_server_toml(name: str = "time") -> str:
    return (f"[mcp.{name}]\ncommand = {toml_string(TIME_SERVER)}\n"
            'args = ["--local-timezone", "UTC"]\n')


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, Iterable):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def config(*tables: str, tools: str = "") -> str:
    """The base test config (no SDK retries), a `[tools]` body if given, then `tables`."""
    text = BASE_CONFIG
    if tools:
        text += f"[tools]\n{tools}\n"
    return text + "".join(tables)


def detached(args: list[str], env: dict[str, str], stdin: bytes = b"",
             python_flags: tuple[str, ...] = (), timeout: float = 90,
             cwd: Path | None = None) -> Run:
    """termchat to the end in a session of its own: no controlling terminal, so /dev/tty
    cannot be opened, as under cron or in CI."""
    command = [sys.executable, *python_flags, TERMCHAT] if python_flags else [TERMCHAT]
    return subprocess.run([*command, *args], input=stdin, capture_output=True, env=env,
                          timeout=timeout, check=False, start_new_session=True, cwd=cwd)


def spawn_detached(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`detached`, running: to signal it midway."""
    def child() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen([TERMCHAT, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True, preexec_fn=child)


@dataclass
class Terminal:
    """termchat running with a pseudo-terminal as its controlling terminal (stdin, stdout and
    stderr are pipes, as in `cat f | termchat ... > out`): what it wrote there, and typing."""

    proc: subprocess.Popen[bytes]
    controller: int
    screen: bytearray = field(default_factory=bytearray)

    def wait_for(self, text: bytes, timeout: float = 60) -> bytes:
        """Read the terminal until `text` has appeared (after what was read before)."""
        start = len(self.screen)
        deadline = time.monotonic() + timeout
        while text not in self.screen[start:]:
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not self._ready(0)):
                raise AssertionError(f"{text!r} never appeared; the terminal showed "
                                     f"{bytes(self.screen)!r}")
            if self._ready(min(left, 0.2)):
                self._read()
        return bytes(self.screen[start:])

    def type(self, keys: bytes) -> None:
        os.write(self.controller, keys)

    def finish(self, timeout: float = 60) -> tuple[int, bytes, bytes]:
        """The exit code, stdout and stderr once it ends; the terminal is read to the end."""
        stdout, stderr = self.proc.communicate(timeout=timeout)
        while self._ready(0.05) and self._read():
            pass
        os.close(self.controller)
        return self.proc.returncode, stdout, stderr

    def _ready(self, timeout: float) -> bool:
        return bool(select.select([self.controller], [], [], timeout)[0])

    def _read(self) -> bool:
        try:
            chunk = os.read(self.controller, 65536)
        except OSError:  # EIO: every copy of the terminal's other end is closed
            return False
        self.screen += chunk
        return bool(chunk)


def on_controlling_terminal(args: list[str], env: dict[str, str],
                            stdin: bytes = b"") -> Terminal:
    """Start termchat in a new session whose controlling terminal is a fresh pty."""
    controller, terminal = pty.openpty()
    path = os.ttyname(terminal)

    def child() -> None:
        os.setsid()
        # Opened without O_NOCTTY by a session leader that has none: its controlling terminal,
        # with this process group in the foreground (Ctrl+C typed there reaches it).
        os.close(os.open(path, os.O_RDWR))
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([TERMCHAT, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**env, "TERM": "xterm-256color"},
                            preexec_fn=child)
    os.close(terminal)
    assert proc.stdin is not None
    if stdin:
        proc.stdin.write(stdin)
    proc.stdin.close()
    proc.stdin = None  # so that communicate() does not flush it
    return Terminal(proc, controller)
