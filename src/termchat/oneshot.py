"""One-shot mode: one prompt from the arguments and stdin, one reply on stdout, then exit.

A sink for `Conversation.send`, in one of three shapes: piped stdout gets the model's text
byte for byte as it arrives; a terminal gets live Markdown; `--json` gets one object at the
end. Reasoning (thinking) text is never printed: it is not part of the reply, and a pipe must
carry only the reply. On a terminal a transient "thinking…" line shows while it streams.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
import time
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol, TextIO

from termchat.config import ModelConfig
from termchat.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    TermchatError,
    UsageError,
    silence,
)
from termchat.events import Event, FinishKind, ReasoningDelta, Retrying, TextDelta
from termchat.present import usage_line
from termchat.turn import Conversation, Reply, Status
from termchat.untrusted import SafeStream, json_text, repair, safe_line

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.segment import Segment

# What to do about a reply that stopped early; truncation is still a success (exit 0).
_CUT_ADVICE = {
    FinishKind.LENGTH: "; raise --max-tokens for more",
    FinishKind.CONTEXT: "; shorten the input for more",
    FinishKind.FILTERED: "",
}
# A length finish with no cap sent: the server's own limit or its context window ended it.
_UNCAPPED_ADVICE = ("; no --max-tokens was set, so the server's own limit or its context "
                    "window ended it: ask for a shorter answer, or start a new conversation")


def run_oneshot(args: argparse.Namespace, conversation: Conversation) -> int:
    """Send one prompt in `conversation` (new, or continued with its earlier turns), print the
    reply, and return the exit code.

    When the conversation has a history, the prompt is stored before the request is sent and
    the reply in its final state (complete, cancelled, error) before this returns, whatever
    happened: the caller may end the process at once.
    """
    prompt = read_prompt(args.prompt, sys.stdin)
    sink = _make_sink(args, conversation.model)
    earlier = len(conversation.exchanges)
    signals = _Signals()
    error: TermchatError | None = None
    code = 0
    try:
        asyncio.run(_exchange(conversation, prompt, sink, signals))
    except (KeyboardInterrupt, asyncio.CancelledError):
        code = EXIT_TERMINATED if signals.terminated else EXIT_INTERRUPTED
    except TermchatError as exc:
        error, code = exc, exc.exit_code
    except Exception:
        # A bug: the traceback is for it, but the terminal gets its cursor back first.
        sink.close(None, None, interrupted=True)
        raise
    if signals.pipe_closed:
        # The reader went away (`| head`): the reply was cancelled and stored as it stood;
        # nothing more to say, and nowhere to say it.
        silence(sys.stdout)
        return EXIT_BROKEN_PIPE
    # None when this run's exchange never started (a missing key): not an earlier reply.
    reply = conversation.exchanges[-1].reply if len(conversation.exchanges) > earlier else None
    try:
        sink.close(reply, error, interrupted=code in (EXIT_INTERRUPTED, EXIT_TERMINATED))
    except BrokenPipeError:
        silence(sys.stdout)
        return EXIT_BROKEN_PIPE
    try:
        _report(reply, error, conversation.model, usage=args.usage, out=sys.stderr)
    except BrokenPipeError:
        silence(sys.stderr)
    return code


def read_prompt(words: list[str], stdin: TextIO | None) -> str:
    """The arguments joined by spaces, then a blank line and stdin when stdin is not a terminal.

    stdin is read as bytes and decoded leniently: a binary file must not crash the run.
    """
    argument = " ".join(words)
    piped = ""
    if stdin is not None and not stdin.isatty():
        piped = stdin.buffer.read().decode("utf-8", errors="replace")
    elif not words:
        raise UsageError('no prompt: pass one as an argument (termchat "...") or pipe it in '
                         "(echo ... | termchat).")
    if argument.strip() and piped.strip():
        return f"{argument}\n\n{piped}"
    prompt = argument if argument.strip() else piped
    if not prompt.strip():
        raise UsageError("the prompt is empty: pass it as an argument or on stdin.")
    return prompt


class _Signals:
    """SIGTERM and a closed stdout take the same path as Ctrl+C (cancel the turn, keep what
    arrived), and are remembered so the exit code can say which it was."""

    def __init__(self) -> None:
        self.terminated = False
        self.pipe_closed = False

    def terminate(self, task: asyncio.Task[Any]) -> None:
        self.terminated = True
        _cancel(task)

    def close_pipe(self, task: asyncio.Task[Any]) -> None:
        self.pipe_closed = True
        _cancel(task)


def _cancel(task: asyncio.Task[Any]) -> None:
    # Cancel once: a second cancel can leak a pooled connection in httpx.
    if not task.cancelling():
        task.cancel()


async def _exchange(conversation: Conversation, prompt: str, sink: _Sink,
                    signals: _Signals) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, signals.terminate, task)
    sink.start()
    # No garbage collection until the reply starts: importing the SDK allocates hundreds of
    # thousands of objects, and collecting them again and again adds about 15% to the time
    # before the request goes out. Frozen afterwards, they are never scanned again.
    gc.disable()

    def on_event(event: Event) -> None:
        if not gc.isenabled():
            gc.freeze()
            gc.enable()
        if isinstance(event, Retrying) and not sink.shows_retries and sys.stderr.isatty():
            print(safe_line(f"termchat: {retry_line(event)}"), file=sys.stderr, flush=True)
        try:
            sink.on_event(event)
        except BrokenPipeError:
            signals.close_pipe(task)

    try:
        await conversation.send(prompt, on_event)
    finally:
        gc.enable()
        await conversation.aclose()


def _report(reply: Reply | None, error: TermchatError | None, model: ModelConfig, *,
            usage: bool, out: IO[str]) -> None:
    """The stderr lines: a cut-off warning, the error, then the -u usage line.

    Finish reasons and error messages are the server's words: they pass the sanitiser like
    the reply itself.
    """
    lines: list[str] = []
    finish = reply.finish if reply is not None else None
    if finish is not None and finish.kind in _CUT_ADVICE:
        advice = _CUT_ADVICE[finish.kind]
        if finish.kind is FinishKind.LENGTH and model.max_tokens is None \
                and model.provider == "openai":
            advice = _UNCAPPED_ADVICE
        lines.append(f"termchat: warning: the reply was cut off ({finish.describe()})"
                     f"{advice}.")
    if error is not None:
        lines.append(f"termchat: {error}")
    if usage and reply is not None:
        lines.append(usage_line(reply))
    for line in lines:
        print(safe_line(line), file=out)


def retry_line(event: Retrying) -> str:
    """`Rate limited by … (429); retry after 30 s. Retrying in 30 s (2 of 3).`"""
    return f"{event.reason} Retrying in {event.delay:.0f} s ({event.attempt} of " \
           f"{event.attempts})."


def json_result(reply: Reply | None, model: ModelConfig,
                error: TermchatError | None) -> dict[str, Any]:
    """The `--json` object; usage counts the server did not report are null."""
    usage = reply.usage if reply is not None else None
    finish = reply.finish if reply is not None else None
    result: dict[str, Any] = {
        "text": repair(reply.text) if reply is not None else "",
        "model": reply.model if reply is not None else model.model,
        "provider": reply.provider if reply is not None else model.provider,
        "finish_reason": finish.reason if finish else None,
        "finish_kind": str(finish.kind) if finish else None,
        "status": str(reply.status) if reply is not None else str(Status.ERROR),
        "usage": {
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "cached_tokens": usage.cached_tokens if usage else None,
            "reasoning_tokens": usage.reasoning_tokens if usage else None,
        },
        "timings": {
            "ttft_s": _round(reply.ttft) if reply is not None else None,
            "elapsed_s": _round(reply.elapsed) if reply is not None else None,
            "tokens_per_second": _round(reply.tokens_per_second) if reply is not None else None,
        },
    }
    if error is not None:
        result["error"] = str(error)
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- sinks --------------------------------------------------------------------------------


class _Sink(Protocol):
    shows_retries: bool
    """Whether the sink shows `Retrying` events itself (otherwise a terminal's stderr does)."""

    def start(self) -> None:
        """Called once, just before the request is sent."""

    def on_event(self, event: Event) -> None:
        """Called for every stream event."""

    def close(self, reply: Reply | None, error: TermchatError | None, *,
              interrupted: bool) -> None:
        """Called once at the end, whatever happened; `reply` is None if none was started."""


def _make_sink(args: argparse.Namespace, model: ModelConfig) -> _Sink:
    if args.json:
        return JsonSink(sys.stdout.buffer, model)
    if sys.stdout.isatty():
        return TerminalSink(model.label, live=not args.no_stream)
    return PipeSink(sys.stdout.buffer, stream=not args.no_stream)


class PipeSink:
    """stdout is not a terminal: the model's text exactly, flushed chunk by chunk as it arrives
    (so `| tee` shows it live), then one newline. No escape codes, no status."""

    shows_retries = False

    def __init__(self, out: BinaryIO, *, stream: bool) -> None:
        self._out = out
        self._stream = stream
        self._wrote = False

    def start(self) -> None:
        pass

    def on_event(self, event: Event) -> None:
        if self._stream and isinstance(event, TextDelta):
            self._write(event.text)

    def close(self, reply: Reply | None, error: TermchatError | None, *,
              interrupted: bool) -> None:
        # A partial reply is printed too (with --no-stream as well): it is never lost.
        if not self._stream:
            self._write(repair(reply.text if reply else ""))
        if self._wrote or (reply is not None and reply.status is Status.COMPLETE):
            self._out.write(b"\n")
            self._out.flush()

    def _write(self, text: str) -> None:
        if text:
            self._out.write(text.encode())
            self._out.flush()
            self._wrote = True


class JsonSink:
    """`--json`: one object on stdout at the end, also when the reply failed or was cut."""

    shows_retries = False

    def __init__(self, out: BinaryIO, model: ModelConfig) -> None:
        self._out = out
        self._model = model

    def start(self) -> None:
        pass

    def on_event(self, event: Event) -> None:
        pass

    def close(self, reply: Reply | None, error: TermchatError | None, *,
              interrupted: bool) -> None:
        if reply is None and error is not None and error.exit_code != 1:
            # A usage or configuration error: there was no exchange to describe.
            return
        result = json_result(reply, self._model, error)
        self._out.write(json_text(result).encode() + b"\n")
        self._out.flush()


# Seconds between frames at least; a frame that took long to render pushes the next one out
# further, so a huge last block cannot starve the network reads.
_FRAME_INTERVAL = 1 / 20


class _Lines:
    """Pre-rendered lines as a Rich renderable; `end` adds a newline after the last one."""

    def __init__(self, lines: list[list[Segment]], *, end: bool) -> None:
        self.lines = lines
        self.end = end

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment

        for index, line in enumerate(self.lines):
            if index:
                yield Segment.line()
            yield from _rstrip(line)
        if self.end and self.lines:
            yield Segment.line()


def _rstrip(line: list[Segment]) -> list[Segment]:
    """Without the padding Rich adds to the width: a narrower terminal would wrap it. A code
    block's padding has a background and stays."""
    from rich.segment import Segment

    line = list(line)
    while line and not (line[-1].style and line[-1].style.bgcolor):
        text = line[-1].text.rstrip(" ")
        if text:
            line[-1] = Segment(text, line[-1].style, line[-1].control)
            break
        line.pop()
    return line


class TerminalSink:
    """stdout is a terminal: the reply as Markdown, rendered as it arrives.

    Settled blocks (see termchat.markdown_lines) are printed for good; only the growing last
    block is drawn in a Rich `Live` region, which is kept shorter than the screen (the
    overflowing top of a tall block is printed for good) so redrawing it never reaches into
    scrollback. Model text is sanitized first: escape sequences in it never reach the
    terminal.
    """

    shows_retries = True

    def __init__(self, label: str, *, live: bool, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        from termchat.markdown_lines import MarkdownLines

        self._console = console or Console(highlight=False)
        # The reply keeps the width it started with: lines printed for good cannot be redrawn.
        self._width = self._console.size.width
        self._live = Live(Text(f"waiting for {label}…", style="dim"), console=self._console,
                          auto_refresh=False, redirect_stdout=False, redirect_stderr=False,
                          vertical_overflow="visible") if live else None
        self._safe = SafeStream()
        self._markdown = MarkdownLines(console=self._console)
        self._text_seen = False
        # How many of the reply's lines are printed for good.
        self._committed = 0
        self._timer: asyncio.TimerHandle | None = None
        self._next_frame = 0.0

    def start(self) -> None:
        if self._live is not None:
            self._live.start(refresh=True)

    def on_event(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self._text_seen = True
            self._markdown.append(self._safe.feed(event.text))
        elif isinstance(event, ReasoningDelta) and not self._text_seen and self._live:
            from rich.text import Text

            self._live.update(Text("thinking…", style="dim"))
        elif isinstance(event, Retrying) and self._live:
            from rich.text import Text

            self._live.update(Text(safe_line(retry_line(event)), style="dim"))
            self._live.refresh()
            return
        else:
            return
        if self._live is not None and self._timer is None:
            delay = max(0.0, self._next_frame - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._frame)

    def close(self, reply: Reply | None, error: TermchatError | None, *,
              interrupted: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._markdown.append(self._safe.flush())
        if self._live is None:
            if self._markdown.text.strip():
                self._console.print(_Lines(self._markdown.lines(self._width), end=True))
            elif interrupted:
                self._console.line()
            return
        if self._live.is_started:
            self._frame(last=True)
            # Stopping leaves the last frame on screen and the cursor on the line below it.
            self._live.stop()

    def _frame(self, *, last: bool = False) -> None:
        """Print newly settled lines for good and redraw the rest, in one write; the `last`
        frame also replaces a waiting or thinking line that no text followed."""
        assert self._live is not None
        self._timer = None
        started = time.monotonic()
        lines = self._markdown.lines(self._width) if self._markdown.text.strip() else []
        # Keep the live region below the screen's height; its overflowing top is printed.
        room = max(1, self._console.size.height - 2)
        final = max(self._markdown.stable_lines, len(lines) - room)
        printed = lines[self._committed:final]
        self._committed = max(self._committed, final)
        with self._console:
            if printed:
                self._console.print(_Lines(printed, end=True))
            if self._text_seen or last:
                self._live.update(_Lines(lines[self._committed:], end=False))
            self._live.refresh()
        cost = time.monotonic() - started
        self._next_frame = started + max(_FRAME_INTERVAL, 2 * cost)
