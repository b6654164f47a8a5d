"""The status bar: model, state, finish reason, token usage and timings."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import Static

from termchat.present import UNKNOWN, finish_field, state, timing_fields, usage_fields
from termchat.turn import Reply, Status
from termchat.untrusted import safe_line

_STATE_STYLES = {
    Status.WAITING: "bold #d0b040",
    Status.STREAMING: "bold #40c0e0",
    Status.COMPLETE: "bold #50c050",
    Status.CANCELLED: "bold #e0a030",
    Status.ERROR: "bold #e05050",
    Status.INTERRUPTED: "bold #e0a030",
}


def describe(model: str, reply: Reply | None, *, timings: bool = True,
             connecting: bool = False) -> Text:
    """The status line for `reply` (None before the first message); `connecting` while the
    provider's SDK is still loading for a prompt that waits for it."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(safe_line(model), style="bold")
    if connecting:
        text.append("  connecting…", style=_STATE_STYLES[Status.WAITING])
        return text
    if reply is None:
        text.append("  ready", style="dim")
        return text
    text.append("  ")
    text.append(state(reply), style=_STATE_STYLES[reply.status])
    if reply.retry is not None:
        retry = reply.retry
        wait = max(0.0, reply.retry_at - time.monotonic())
        text.append(f"  │  retry {retry.attempt} of {retry.attempts} in {wait:.0f}s · Esc "
                    "cancels  │  ", style="bold #d0b040")
        text.append(safe_line(retry.reason))
        return text
    if reply.finish is not None:
        text.append("  │  ", style="dim")
        text.append(safe_line(finish_field(reply)))
    if reply.usage.known or reply.status.final:
        text.append("  │  ", style="dim")
        text.append(" · ".join(usage_fields(reply.usage)) if reply.usage.known
                    else f"tokens {UNKNOWN}")
    if timings and (fields := timing_fields(reply)):
        text.append("  │  ", style="dim")
        text.append(" · ".join(fields))
    return text


class StatusBar(Static):
    """Always visible at the bottom; shows the reply in flight or the last one."""

    line = Text()

    def show(self, model: str, reply: Reply | None, *, timings: bool = True,
             connecting: bool = False) -> None:
        line = describe(model, reply, timings=timings, connecting=connecting)
        if line != self.line:
            self.line = line
            self.update(line)
