"""A private tmux server for driving the installed `termchat` in a real terminal."""

from __future__ import annotations

import re
import subprocess
import time
import uuid

WIDTH, HEIGHT = 100, 30


class Tmux:
    """A private tmux server (its own socket) with one pane of WIDTH x HEIGHT."""

    def __init__(self, env: dict[str, str]) -> None:
        self.socket = f"termchat-test-{uuid.uuid4().hex[:12]}"
        self.env = env

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], env=self.env, text=True,
                              capture_output=True, check=True, timeout=10).stdout

    def start(self, command: str) -> None:
        self("new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT), command)

    def screen(self) -> list[str]:
        """The visible screen, line by line."""
        return self("capture-pane", "-p").splitlines()

    def everything(self) -> list[str]:
        """Scrollback and screen, line by line, without the screen's empty bottom lines."""
        lines = self("capture-pane", "-p", "-S", "-", "-E", "-").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        return lines

    def wait_for(self, pattern: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in self.everything()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never appeared:\n" + "\n".join(self.screen()))
            time.sleep(0.1)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], env=self.env,
                       capture_output=True, check=False, timeout=10)
