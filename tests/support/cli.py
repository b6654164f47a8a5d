"""Running the installed `termchat` as a subprocess, in an isolated environment."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from termchat.devserver import ProviderServer

_found = shutil.which("termchat", path=str(Path(sys.executable).parent))
assert _found, "termchat is not installed in this environment (pip install -e .)"
TERMCHAT: str = _found

# SDK retries would add a second per failed request; tests want the first answer.
BASE_CONFIG = "[defaults]\nmax_retries = 0\n"
Run = subprocess.CompletedProcess[bytes]


def environment(tmp: Path, server: ProviderServer | None = None, provider: str = "openai", *,
                key: bool = True, config: str = BASE_CONFIG,
                base_url: str | None = None) -> dict[str, str]:
    """The parent's environment without any provider or termchat settings, plus XDG dirs in
    `tmp`, a config file, and the base URL (and a dummy key) of `provider`."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("OPENAI_", "ANTHROPIC_", "TERMCHAT_", "XDG_"))}
    env["XDG_CONFIG_HOME"] = str(tmp / "config")
    env["XDG_DATA_HOME"] = str(tmp / "data")
    if config:
        (tmp / "config" / "termchat").mkdir(parents=True, exist_ok=True)
        (tmp / "config" / "termchat" / "config.toml").write_text(config)
    if server is not None or base_url is not None:
        prefix = provider.upper()
        env[f"{prefix}_BASE_URL"] = base_url or (
            server.openai_base_url if provider == "openai" else server.anthropic_base_url)
        if key:
            env[f"{prefix}_API_KEY"] = "test-key"
    return env


def termchat(args: list[str], env: dict[str, str], stdin: bytes = b"",
             python_flags: tuple[str, ...] = ()) -> Run:
    """Run termchat to the end with `stdin` (not a terminal; empty unless given)."""
    command = [sys.executable, *python_flags, TERMCHAT] if python_flags else [TERMCHAT]
    return subprocess.run([*command, *args], input=stdin, capture_output=True, env=env,
                          timeout=60, check=False)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # SIGINT back to its default: a test run started in the background would otherwise pass
    # on an ignored SIGINT, and Python would not turn it into KeyboardInterrupt.
    return subprocess.Popen([TERMCHAT, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def lines_of(data: bytes) -> list[str]:
    return data.decode().splitlines()



R = TypeVar("R")


@contextmanager
def run_concurrently(names: Iterable[str], run: Callable[[str], R],
                     servers: list[ProviderServer]) -> Iterator[dict[str, R]]:
    """`run` for every name at once, in threads (each runs termchat as a subprocess); the
    `servers` the runs started are stopped once the results are no longer needed."""
    try:
        with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 2) as pool:
            yield dict(zip(names, pool.map(run, names), strict=True))
    finally:
        for server in servers:
            server.stop()




def on_terminal(args: list[str], env: dict[str, str], *, stderr: bool = False,
                timeout: float = 60) -> tuple[int, bytes, bytes]:
    """Run termchat with stdout (and, with `stderr`, stderr too) on a pseudo-terminal of 80x24;
    its exit code, what the terminal received, and the piped stderr (empty with `stderr`)."""
    import pty

    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [TERMCHAT, *args], stdin=subprocess.DEVNULL, stdout=terminal,
            stderr=terminal if stderr else subprocess.PIPE,
            env={**env, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"})
        os.close(terminal)
        output = b""
        while chunk := _read(controller):
            output += chunk
        code = proc.wait(timeout=timeout)
        piped = proc.stderr.read() if proc.stderr is not None else b""
    finally:
        os.close(controller)
    return code, output, piped


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the other end closed
        return b""
