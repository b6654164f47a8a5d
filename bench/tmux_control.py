"""A private tmux server driven through one control-mode client, for the real-terminal benchmark.

Control mode (`tmux -C`) keeps one client attached and answers each command in a
`%begin … %end` block, so polling a pane costs a line on a pipe instead of a new tmux process
(a few ms of CPU each, which would compete with the app being measured).
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

_SAFE = re.compile(r"[\w@%+=:,./-]+")


def quote(arg: str) -> str:
    """One argument in tmux's command syntax."""
    if _SAFE.fullmatch(arg):
        return arg
    if "'" in arg:
        raise ValueError(f"cannot quote {arg!r} for tmux")
    return f"'{arg}'"


class TmuxError(RuntimeError):
    pass


class Timeout(TmuxError):
    def __init__(self, what: str, screen: list[str]) -> None:
        super().__init__(f"{what}; the screen was:\n" + "\n".join(screen))
        self.what = what
        self.screen = screen


class Died(TmuxError):
    """The pane's process ended (with `remain-on-exit`, tmux's last line says how)."""

    def __init__(self, screen: list[str]) -> None:
        last = next((line for line in reversed(screen) if line.strip()), "")
        super().__init__(last.strip() if last.startswith("Pane is dead") else "it exited")
        self.screen = screen


class Tmux:
    """Its own socket (`tmux -L`), no config file, escape-time 0, no status line: each
    session is one pane of exactly `width` x `height`, kept after its process ends so that
    the last screen can be read."""

    def __init__(self, env: Mapping[str, str], width: int, height: int) -> None:
        self.socket = f"termchat-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.env = dict(env)
        self.width, self.height = width, height
        self._base = ["tmux", "-u", "-L", self.socket, "-f", "/dev/null"]
        subprocess.run([*self._base, "new-session", "-d", "-s", "control", "-x", str(width),
                        "-y", str(height), "sleep 86400"], env=self.env, check=True,
                       timeout=10)
        self._client = subprocess.Popen(
            [*self._base, "-C", "attach-session", "-t", "control", "-f",
             "no-output,ignore-size"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env, bufsize=0)
        self._replies: queue.Queue[tuple[bool, list[str]]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        for line in ("set -s escape-time 0", "set -g status off",
                     "set -g default-terminal tmux-256color", "set -g remain-on-exit on"):
            self.command(line)

    def _read(self) -> None:
        assert self._client.stdout is not None
        block: list[str] | None = None
        for raw in self._client.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if block is None:
                parts = line.split()
                # Flags 1: the reply to a command this client sent.
                if parts[:1] == ["%begin"] and parts[-1] == "1":
                    block = []
            elif line.startswith(("%end ", "%error ")):
                self._replies.put((line.startswith("%end"), block))
                block = None
            else:
                block.append(line)

    def command(self, line: str, timeout: float = 10.0) -> list[str]:
        """Run one tmux command line; its output lines."""
        assert self._client.stdin is not None
        self._client.stdin.write(line.encode() + b"\n")
        try:
            ok, output = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise TmuxError(f"tmux did not answer {line!r}") from None
        if not ok:
            raise TmuxError(f"{line!r}: {' '.join(output)}")
        return output

    def run(self, *args: str) -> list[str]:
        return self.command(" ".join(quote(arg) for arg in args))

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> int:
        """Session `name` running `argv` directly (no shell): the pane's pid is `argv`'s."""
        extra = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
        out = self.run("new-session", "-d", "-s", name, "-x", str(self.width), "-y",
                       str(self.height), *extra, "-P", "-F", "#{pane_pid}", *argv)
        return int(out[0])

    def screen(self, name: str) -> list[str]:
        lines = self.run("capture-pane", "-p", "-t", name)
        return lines + [""] * (self.height - len(lines))

    def type(self, name: str, text: str) -> None:
        self.run("send-keys", "-t", name, "-l", text)

    def key(self, name: str, key: str) -> None:
        self.run("send-keys", "-t", name, key)

    def wait(self, name: str, seen: Callable[[list[str]], bool], what: str, timeout: float,
             interval: float, alive: Callable[[], bool]) -> tuple[float, list[str]]:
        """Poll the pane every `interval` s until `seen(screen)`; the `time.monotonic()` at
        which the screen that satisfied it came back, and that screen. Raises `Died` as soon
        as `alive()` is false."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen(name)
            now = time.monotonic()
            if seen(lines):
                return now, lines
            if not alive():
                time.sleep(0.1)  # for tmux to notice, and say how it ended
                raise Died(self.screen(name))
            if now > deadline:
                raise Timeout(f"{what} not seen within {timeout:g} s", lines)
            time.sleep(interval)

    def kill(self, name: str, pid: int) -> None:
        """End the session and wait for its process to be gone."""
        self.run("kill-session", "-t", name)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, 9)

    def close(self) -> None:
        subprocess.run([*self._base, "kill-server"], env=self.env, capture_output=True,
                       check=False, timeout=10)
        if self._client.stdin is not None:
            self._client.stdin.close()
        try:
            self._client.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._client.kill()
        sock = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / self.socket
        sock.unlink(missing_ok=True)
