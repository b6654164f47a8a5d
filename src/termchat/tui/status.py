"""The status bar: model, state, finish reason, token usage and timings."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Static

from termchat.present import UNKNOWN, state, timing_fields, usage_fields
from termchat.tui.rounds import finishes
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


@dataclass(frozen=True)
class Field:
    """One field of the status line: lower `rank`s give way first when the line is too long."""

    text: str
    style: str = ""
    rank: int = 9


_SEPARATOR = "  │  "
# The model's name gives up its start first (a path's tail is the file's name), down to this.
_MODEL_MIN = 12


def describe(model: str, reply: Reply | None, *, timings: bool = True,
             connecting: bool = False) -> list[Field]:
    """The status line's fields for `reply` (None before the first message); `connecting`
    while the provider's SDK is still loading for a prompt that waits for it. The first
    field is the model and the second the state; `fit` makes them one line."""
    fields = [Field(safe_line(model), "bold", rank=5)]
    if connecting:
        return [*fields, Field("connecting…", _STATE_STYLES[Status.WAITING])]
    if reply is None:
        return [*fields, Field("ready", "dim")]
    fields.append(Field(state(reply), _STATE_STYLES[reply.status]))
    if reply.retry is not None:
        retry = reply.retry
        wait = max(0.0, reply.retry_at - time.monotonic())
        fields.append(Field(f"retry {retry.attempt} of {retry.attempts} in {wait:.0f}s · Esc "
                            "cancels", "bold #d0b040", rank=8))
        return [*fields, Field(safe_line(retry.reason), rank=2)]
    if reply.finish is not None:
        fields.append(Field(safe_line(finishes(reply)), rank=7))
    if reply.usage.known or reply.status.final:
        fields.append(Field(" · ".join(usage_fields(reply.usage)) if reply.usage.known
                            else f"tokens {UNKNOWN}", rank=6))
    if timings and (timing := timing_fields(reply)):
        fields.append(Field(" · ".join(timing), rank=1))
    return fields


def fit(fields: list[Field], width: int) -> Text:
    """The fields on one line of `width` cells: the model's name elided from its start to
    make room, then the least important fields left out, never the state."""
    model, rest = fields[0], list(fields[1:])
    while True:
        room = width - sum(cell_len(f.text) for f in rest) - cell_len(_SEPARATOR) * (
            len(rest) - 1) - 2
        if room >= min(_MODEL_MIN, cell_len(model.text)) or len(rest) <= 1:
            break
        rest.remove(min(rest[1:], key=lambda f: f.rank))
    if cell_len(model.text) > room:
        model = Field("…" + model.text[-max(room - 1, _MODEL_MIN - 1):], model.style, model.rank)
    fields = [model, *rest]
    text = Text(no_wrap=True, overflow="ellipsis")
    for index, field in enumerate(fields):
        if index:
            text.append(_SEPARATOR if index > 1 else "  ", style="dim")
        text.append(field.text, style=field.style)
    return text


class StatusBar(Static):
    """Always visible at the bottom; shows the reply in flight or the last one, fitted to the
    width it has."""

    _fields: list[Field] = []

    @property
    def line(self) -> Text:
        return fit(self._fields, self.size.width or 10_000)

    def show(self, model: str, reply: Reply | None, *, timings: bool = True,
             connecting: bool = False) -> None:
        fields = describe(model, reply, timings=timings, connecting=connecting)
        if fields != self._fields:
            self._fields = fields
            self.refresh()

    def render(self) -> Text:
        return self.line
