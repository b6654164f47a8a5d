"""Notifications whose words may come from outside termchat: sanitised, and never markup."""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.notifications import SeverityLevel
from textual.widget import Widget

from termchat.untrusted import safe_line


def notify(node: App[Any] | Widget, message: str, *, title: str = "",
           severity: SeverityLevel = "information", timeout: float | None = None) -> None:
    """`node.notify` for a message that may hold a server's, a path's or a stored title's
    words: Textual would obey escape sequences in it and read `[...]` in it as markup."""
    node.notify(safe_line(message), title=safe_line(title), severity=severity,
                timeout=timeout, markup=False)
