"""The status bar: model, state, finish reason, token usage, cost, context and timings."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Static

from termchat.present import UNKNOWN, continued, state, timing_fields, usage_fields
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
class Gauge:
    """What the status bar shows of money and room, worked out when a reply finishes (see
    `termchat.tui.meter`); termchat's own words and numbers, nothing from outside."""

    reply: str | None = None
    """The last finished reply's cost (`$0.0012`, `cost unknown`); None while the next one
    streams, or for a model with `price = false`."""
    chat: str | None = None
    """The conversation's cost so far, when it has more than one reply (else None)."""
    context: str | None = None
    """`ctx 62%`, or `ctx ?` when the window or the count is unknown; None before a reply."""
    near_full: bool = False
    """The last request used 80% of the window or more."""


@dataclass(frozen=True)
class Field:
    """One field of the status line: lower `rank`s give way first when the line is too long."""

    text: str
    style: str = ""
    rank: int = 9


_SEPARATOR = "  │  "
# The model's name gives up its start first (a path's tail is the file's name), down to this.
_MODEL_MIN = 12
# What gives way first on a narrow line (the model is elided, never dropped, and the state
# always stays): a field that only says it knows nothing (before the model is elided), then
# timings, a retry's reason, the context share, the token counts, the cost, the finish
# reason; a context window about to overflow and a retry's countdown stay longest.
RANK_NOTHING_KNOWN = 0
RANK_TIMINGS = 1
RANK_RETRY_REASON = 2
RANK_CONTEXT = 3
RANK_USAGE = 5
RANK_COST = 6
RANK_FINISH = 7
RANK_URGENT = 8
_NEAR_FULL_STYLE = "bold #e0a030"


def describe(model: str, reply: Reply | None, *, timings: bool = True,
             connecting: bool = False, gauge: Gauge | None = None) -> list[Field]:
    """The status line's fields for `reply` (None before the first message); `connecting`
    while the provider's SDK is still loading for a prompt that waits for it; `gauge`, the
    cost and context once known. The first field is the model and the second the state;
    `fit` makes them one line."""
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
                            "cancels", "bold #d0b040", rank=RANK_URGENT))
        return [*fields, Field(safe_line(retry.reason), rank=RANK_RETRY_REASON)]
    if reply.finish is not None:
        fields.append(Field(safe_line(finishes(reply)), rank=RANK_FINISH))
    if reply.continued:
        fields.append(Field(continued(reply), rank=RANK_FINISH))
    if reply.usage.known or reply.status.final:
        fields.append(Field(" · ".join(usage_fields(reply.usage)) if reply.usage.known
                            else f"tokens {UNKNOWN}", rank=RANK_USAGE))
    if gauge is not None:
        fields += _gauge_fields(gauge)
    if timings and (timing := timing_fields(reply)):
        fields.append(Field(" · ".join(timing), rank=RANK_TIMINGS))
    return fields


def _gauge_fields(gauge: Gauge) -> list[Field]:
    fields: list[Field] = []
    costs = [cost for cost in (gauge.reply, f"chat {gauge.chat}" if gauge.chat else None)
             if cost]
    if costs:
        known = any(cost != "cost unknown" and not cost.endswith(" cost unknown")
                    for cost in costs)
        fields.append(Field(" · ".join(costs), rank=RANK_COST if known else RANK_NOTHING_KNOWN))
    if gauge.context is not None:
        rank = RANK_URGENT if gauge.near_full else RANK_CONTEXT if gauge.context != "ctx ?" \
            else RANK_NOTHING_KNOWN
        fields.append(Field(gauge.context, _NEAR_FULL_STYLE if gauge.near_full else "dim",
                            rank=rank))
    return fields


def fit(fields: list[Field], width: int) -> Text:
    """The fields on one line of `width` cells: fields that say nothing is known (rank 0)
    left out, then the model's name elided from its start to make room, then the least
    important fields left out, never the state."""
    model, rest = fields[0], list(fields[1:])

    def room_left() -> int:
        return width - sum(cell_len(f.text) for f in rest) - cell_len(_SEPARATOR) * (
            len(rest) - 1) - 2

    while room_left() < cell_len(model.text) and (
            idle := [f for f in rest[1:] if not f.rank]):
        rest.remove(idle[-1])
    while room_left() < min(_MODEL_MIN, cell_len(model.text)) and len(rest) > 1:
        rest.remove(min(rest[1:], key=lambda f: f.rank))
    room = room_left()
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
             connecting: bool = False, gauge: Gauge | None = None) -> None:
        fields = describe(model, reply, timings=timings, connecting=connecting, gauge=gauge)
        if fields != self._fields:
            self._fields = fields
            self.refresh()

    def render(self) -> Text:
        return self.line
