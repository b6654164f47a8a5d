"""A tool call as its own block inside a reply: the tool's name as soon as the model names it,
its arguments as they stream, whether it was allowed, a running indicator, then its result
collapsed to a few lines (Enter, Space or a click expands and collapses it)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum

from rich.console import Group, RenderableType
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.timer import Timer
from textual.widget import Widget

from termchat.content import ToolCall, ToolOutcome, ToolResult
from termchat.tui.conversation import ConversationView
from termchat.tui.messages import FRAME_SECONDS, FRAME_SLACK, NO_TEXT
from termchat.untrusted import Safe, SafeStream, json_text, safe, safe_line

# A collapsed block shows this many lines of the arguments and of the result.
ARGUMENT_LINES = 6
RESULT_LINES = 3


class Phase(StrEnum):
    """Where a call is, from the model naming it to its result."""

    STREAMING = "streaming"
    """The model is still writing the call."""
    QUEUED = "queued"
    """Complete; it runs once the model's answer has ended and the calls before it have run."""
    ASKING = "asking"
    RUNNING = "running"
    DONE = "done"
    """It has its result (`ToolResult.outcome` says how it went)."""
    NOT_RUN = "not run"
    """The turn ended before it ran (`why` says how)."""


# How each ending looks: glyph, words, style (and the CSS class the block takes).
_OUTCOMES: dict[ToolOutcome, tuple[str, str, str]] = {
    ToolOutcome.OK: ("✔", "done", "bold #50c050"),
    ToolOutcome.ERROR: ("✖", "error", "bold #e05050"),
    ToolOutcome.DENIED: ("⊘", "denied", "bold #e0a030"),
    ToolOutcome.CANCELLED: ("■", "cancelled", "bold #e0a030"),
    ToolOutcome.TIMEOUT: ("⏱", "timed out", "bold #e05050"),
    ToolOutcome.INVALID: ("✖", "invalid arguments", "bold #e05050"),
    ToolOutcome.UNAVAILABLE: ("✖", "unavailable", "bold #e05050"),
}
_PHASES: dict[Phase, tuple[str, str, str]] = {
    Phase.STREAMING: ("⋯", "the model is writing the call", "bold #40c0e0"),
    Phase.QUEUED: ("·", "queued", "#8a8a8a"),
    Phase.ASKING: ("?", "waiting for your approval", "bold #d0b040"),
    Phase.RUNNING: ("⟳", "running", "bold #40c0e0"),
    Phase.NOT_RUN: ("·", "not run", "bold #8a8a8a"),
}
_ERROR_OUTCOMES = frozenset({ToolOutcome.ERROR, ToolOutcome.TIMEOUT, ToolOutcome.INVALID,
                             ToolOutcome.UNAVAILABLE})
_DIM = "#8a8a8a"


@dataclass
class CallView:
    """What a block shows; every string is terminal-safe."""

    name: Safe
    """The name the model used (`server__tool`)."""
    server: Safe | None = None
    tool: Safe | None = None
    phase: Phase = Phase.STREAMING
    arguments: Safe = NO_TEXT
    """The arguments' JSON text as it streamed, and once complete, pretty-printed."""
    problem: Safe | None = None
    """Why the complete arguments are not a JSON object, when they are not."""
    approval: Safe | None = None
    """Who allowed it to run: `allowed once`, `always allowed: …`."""
    started: float | None = None
    ended: float | None = None
    result: ToolResult | None = None
    content: Safe = NO_TEXT
    why: Safe = NO_TEXT
    """For a call that did not run: why not."""
    expanded: bool = False
    pieces: list[str] = field(default_factory=list)


class ToolBlock(Widget, can_focus=True):
    """One tool call of a reply. The chat screen feeds it the call's events; argument
    fragments are drawn at most once a frame (FRAME_SECONDS), however fast they come."""

    DEFAULT_CSS = """
    ToolBlock { height: auto; }
    """

    BINDINGS = [
        Binding("enter,space", "expand_collapse", "Expand/collapse", show=False),
    ]

    def __init__(self, view: CallView, *, timings: bool = True) -> None:
        super().__init__(classes="tool")
        self.call = view
        self.call_id: str | None = None
        self._timings = timings
        self._stream = SafeStream()
        self._flush_pending = False
        self._last_flush = 0.0
        self._ticker: Timer | None = None
        self._restyle()

    @classmethod
    def started(cls, name: str, server: str | None, tool: str | None, *,
                timings: bool = True) -> ToolBlock:
        """The block for a call the model has just named."""
        return cls(CallView(safe_line(name), _maybe(server), _maybe(tool)), timings=timings)

    def clone(self) -> ToolBlock:
        """The same call, as it stands (a block taken off screen is finished)."""
        again = ToolBlock(replace(self.call, pieces=list(self.call.pieces)),
                          timings=self._timings)
        again.call_id = self.call_id
        return again

    # What the chat screen tells it.

    def add_arguments(self, fragment: str) -> None:
        if piece := self._stream.feed(fragment):
            self.call.pieces.append(piece)
            self._changed()

    def ready(self, call: ToolCall) -> None:
        """The model finished writing the call."""
        self.call_id = call.id
        self.call.pieces = []
        self._stream = SafeStream()
        self.call.arguments, self.call.problem = _pretty(call)
        if self.call.phase is Phase.STREAMING:
            self.call.phase = Phase.QUEUED
        self._update()

    def asking(self) -> None:
        self.call.phase = Phase.ASKING
        self._update()

    def approved(self, how: str) -> None:
        """Allowed to run (by the user or a rule), or denied: `how` says which."""
        self.call.approval = safe_line(how)
        self._update()

    def running(self) -> None:
        self.call.phase = Phase.RUNNING
        self.call.started = time.monotonic()
        if self._timings and self.is_mounted:
            self._ticker = self.set_interval(1.0, self.refresh)
        self._update()

    def finished(self, result: ToolResult) -> None:
        self.call.phase = Phase.DONE
        self.call.result = result
        self.call.content = safe(result.content)
        self.call.ended = time.monotonic()
        self._stop_ticker()
        self._update()

    def not_run(self, why: str) -> None:
        """The turn ended before this call ran (cancelled, cut off, the round limit)."""
        if self.call.pieces or self._stream_tail():
            self.call.arguments = Safe("".join(self.call.pieces))
            self.call.pieces = []
        self.call.phase = Phase.NOT_RUN
        self.call.why = safe_line(why)
        self._stop_ticker()
        self._update()

    @property
    def outcome(self) -> ToolOutcome | None:
        return self.call.result.outcome if self.call.result is not None else None

    @property
    def final(self) -> bool:
        return self.call.phase in (Phase.DONE, Phase.NOT_RUN)

    @property
    def expandable(self) -> bool:
        """Whether expanding would show more than the collapsed block does."""
        return self.call.expanded or self._hidden_lines() > 0

    def action_expand_collapse(self) -> None:
        self.call.expanded = not self.call.expanded
        self._update()

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.action_expand_collapse()

    # Drawing.

    def _stream_tail(self) -> str:
        tail = self._stream.flush()
        if tail:
            self.call.pieces.append(tail)
        return tail

    def _stop_ticker(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.stop()

    def _changed(self) -> None:
        if self._flush_pending:
            return
        self._flush_pending = True
        delay = self._last_flush + FRAME_SECONDS - time.perf_counter()
        if delay > FRAME_SLACK:
            self.set_timer(delay, self._flush)
        else:
            self.call_later(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        self._last_flush = time.perf_counter()
        self._update()

    def _update(self) -> None:
        self._restyle()
        self.refresh(layout=True)
        if isinstance(self.parent, ConversationView):
            self.parent.content_grew()

    def _restyle(self) -> None:
        outcome = self.outcome
        self.set_class(outcome in _ERROR_OUTCOMES, "-error")
        self.set_class(outcome in (ToolOutcome.DENIED, ToolOutcome.CANCELLED)
                       or self.call.phase is Phase.NOT_RUN, "-stopped")
        self.set_class(outcome is ToolOutcome.OK, "-ok")
        self.set_class(self.call.phase in (Phase.ASKING, Phase.RUNNING, Phase.STREAMING),
                       "-active")

    def header(self) -> Text:
        """`⚙ echo · t   ✔ done in 0.4 s · allowed once`"""
        call = self.call
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append("⚙ ", style="bold")
        line.append(call.tool or call.name, style="bold")
        if call.server is not None:
            line.append(f" · MCP server {call.server}", style=_DIM)
        line.append("   ")
        if call.phase is Phase.DONE and call.result is not None:
            glyph, words, style = _OUTCOMES[call.result.outcome]
        else:
            glyph, words, style = _PHASES[call.phase]
        line.append(f"{glyph} {words}", style=style)
        seconds = self._seconds()
        if seconds is not None and call.phase is Phase.RUNNING:
            line.append(f" {seconds:.0f} s", style=style)
        elif seconds is not None and call.phase is Phase.DONE:
            line.append(f" in {seconds:.1f} s" if seconds < 10 else f" in {seconds:.0f} s",
                        style=style)
        if call.phase is Phase.NOT_RUN and call.why:
            line.append(f": {call.why}", style=style)
        if call.approval:
            line.append(f" · {call.approval}", style=_DIM)
        return line

    def _seconds(self) -> float | None:
        call = self.call
        if not self._timings or call.started is None:
            return None
        return (call.ended or time.monotonic()) - call.started

    def _argument_text(self) -> str:
        call = self.call
        if call.pieces:
            return "".join(call.pieces)
        return call.arguments

    def _result_lines(self) -> list[str]:
        if self.call.phase is not Phase.DONE:
            return []
        return self.call.content.splitlines() or ["(empty)"]

    def _hidden_lines(self) -> int:
        arguments = self._argument_text().splitlines()
        width = max(self.size.width - 4, 10)
        hidden = max(len(arguments) - ARGUMENT_LINES, 0) + max(
            len(self._result_lines()) - RESULT_LINES, 0)
        if hidden:
            return hidden
        # A long line is cut at the width when collapsed: expanding shows the rest of it.
        shown = arguments[:ARGUMENT_LINES] + self._result_lines()[:RESULT_LINES]
        return sum(1 for line in shown if len(line) > width)

    def render(self) -> RenderableType:
        call = self.call
        parts: list[RenderableType] = [self.header()]
        arguments = self._argument_text()
        expanded = call.expanded
        if call.phase is Phase.STREAMING:
            # Growing: its last lines (a long single line, its end) as the model writes it.
            width = max(self.size.width - 2, 20)
            tail = arguments[-width * ARGUMENT_LINES:]
            if len(tail) < len(arguments):
                tail = "…" + tail[1:]
            parts.append(_indented(tail or " ", _DIM, wrap=True))
        elif arguments.strip() and arguments.strip() != "{}":
            parts.extend(_lines(arguments.splitlines(), ARGUMENT_LINES, expanded, ""))
        elif call.phase is not Phase.NOT_RUN:
            parts.append(_indented("no arguments", _DIM))
        if call.problem is not None:
            parts.append(_indented(f"⚠ {call.problem}", "#e0a030"))
        result = self._result_lines()
        if result:
            style = "#e05050" if self.outcome in _ERROR_OUTCOMES else ""
            parts.extend(_lines(result, RESULT_LINES, expanded, style, first="→ "))
        if call.phase is not Phase.STREAMING:
            hidden = self._hidden_lines()
            if expanded:
                parts.append(_indented("Enter or click collapses", _DIM))
            elif hidden:
                parts.append(_indented(f"… {hidden} more line{'s' * (hidden != 1)} · Enter or "
                                       "click expands", _DIM))
        return Group(*parts)


def _maybe(text: str | None) -> Safe | None:
    return None if text is None else safe_line(text)


def _pretty(call: ToolCall) -> tuple[Safe, Safe | None]:
    """The arguments pretty-printed when they are a JSON object, else as the model wrote
    them with what is wrong with them."""
    parsed = call.parsed_arguments()
    if parsed is not None:
        return Safe(json_text(parsed, indent=2) if parsed else ""), None
    try:
        json.loads(call.arguments)
    except ValueError:
        problem = "not valid JSON: the model is told and may try again"
    else:
        problem = "not a JSON object: the model is told and may try again"
    return safe(call.arguments), Safe(problem)


def _indented(text: str, style: str = "", *, wrap: bool = False, first: str = "") -> Text:
    return Text(f"  {first}{text}", style=style, no_wrap=not wrap,
                overflow="fold" if wrap else "ellipsis")


def _lines(lines: list[str], keep: int, expanded: bool, style: str,
           first: str = "") -> list[Text]:
    """`lines` indented (the first after `first`, the rest aligned with it): all of them,
    wrapped, when expanded; else the first `keep`, each cut at the width."""
    if not expanded:
        lines = lines[:keep]
    pad = " " * len(first)
    return [_indented(line, style, wrap=expanded, first=first if index == 0 else pad)
            for index, line in enumerate(lines)]
