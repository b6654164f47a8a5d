"""What can go wrong with the history database, each told in one line."""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
from pathlib import Path

from termchat.errors import EXIT_USAGE, TermchatError
from termchat.untrusted import safe_line


class HistoryError(TermchatError):
    """A problem with the history store, told in one line."""


class HistoryUnavailable(HistoryError):
    """The store cannot be used for this run; chatting goes on without it. `reason` is the
    problem alone (`PATH is ...`), for commands that cannot go on without the store."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"history is off for this run: {reason}; chatting continues "
                         "without it")
        self.reason = reason


class ConversationNotFound(HistoryError):
    """No conversation has the id the user gave (a usage error: the id came from them)."""

    exit_code = EXIT_USAGE


def not_found(cid: int | str) -> ConversationNotFound:
    return ConversationNotFound(f"No conversation {cid} in the history; "
                                "`termchat --list` shows the ids.")


def problem(path: Path, exc: BaseException, timeout: float) -> str:
    """What is wrong with the database, as `PATH is ...`, for one warning line."""
    directory = path.parent
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return f"{path} cannot be created: the disk is full"
        not_dir = _not_a_directory(path)
        if not_dir:
            return f"{path} cannot be created: {not_dir}"
        failed = Path(exc.filename).parent if exc.filename else directory
        return f"{path} cannot be created ({exc.strerror}; check permissions of {failed})"
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return f"{path} is locked by another process (waited {timeout:g} s)"
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return f"{path} is corrupt or not a database (move it aside to start a new history)"
    if code == sqlite3.SQLITE_FULL:
        return f"{path} cannot grow: the disk is full"
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        not_dir = _not_a_directory(path)
        if not_dir:
            return f"{path} cannot be opened: {not_dir}"
        if path.is_dir():
            return f"{path} cannot be opened: it is a directory"
        if path.exists() and not os.access(path, os.W_OK):
            return f"{path} is read-only (check its permissions)"
        return f"{path} is read-only (check permissions of {directory})"
    return f"{path}: {exc}"


def _not_a_directory(path: Path) -> str | None:
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return f"{parent} is not a directory"
    return None


def warn_stderr(message: str) -> None:
    print(safe_line(message), file=sys.stderr)
