"""Whether the writer of a `streaming` reply is still alive: a reply whose writer died is
interrupted, whoever it was."""

from __future__ import annotations

import os
from pathlib import Path

# A live writer touches its row at least once per provider timeout (connect + idle, retried):
# a `streaming` row left alone longer than this has lost its writer, whoever it was.
ABANDONED_SECONDS = 600.0


def host_name() -> str:
    return os.uname().nodename if hasattr(os, "uname") else ""


def writer_alive(host: str | None, pid: int | None, updated: float, now: float) -> bool:
    if now - updated > ABANDONED_SECONDS:
        return False
    if os.name == "posix" and pid is not None and host == host_name():
        return _pid_alive(pid)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed child its parent has not reaped yet still answers signal 0.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


