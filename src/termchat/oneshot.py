"""One-shot mode: one prompt from the arguments and stdin (and files attached with `-a`), one
reply on stdout, then exit.

A sink for `Conversation.send`, in one of three shapes: piped stdout gets the model's text
byte for byte as it arrives; a terminal gets live Markdown; `--json` gets one object at the
end. Reasoning (thinking) text is never printed: it is not part of the reply, and a pipe must
carry only the reply. On a terminal a transient "thinking…" line shows while it streams.
Tool calls (termchat.oneshot_tools) are one line each on stderr, never on stdout.

Attachments and a request that clearly cannot fit the context window are refused before
anything is sent. What the reply cost and how full the window is are looked up only once the
reply has finished (genai-prices is never imported on the way to the first token).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import re
import signal
import sys
import time
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol, TextIO

from termchat.config import ModelConfig
from termchat.content import (
    Attachment,
    AttachmentKind,
    Message,
    Part,
    Text,
    ToolCall,
    ToolResult,
)
from termchat.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    BadRequestError,
    ContextLengthError,
    TermchatError,
    UsageError,
    silence,
)
from termchat.events import (
    Event,
    FinishKind,
    ReasoningDelta,
    Retrying,
    TextDelta,
    ToolCallStarted,
    Usage,
)
from termchat.present import usage_line
from termchat.turn import Conversation, Reply, Status
from termchat.untrusted import SafeStream, json_text, repair, safe_line

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.segment import Segment

    from termchat.oneshot_tools import ToolSession
    from termchat.pricing import Cost
    from termchat.tools.config import ToolsConfig

# What to do about a reply that stopped early; truncation is still a success (exit 0).
_CUT_ADVICE = {
    FinishKind.LENGTH: "; raise --max-tokens for more",
    FinishKind.CONTEXT: "; shorten the input for more",
    FinishKind.FILTERED: "",
}
# A length finish with no cap sent: the server's own limit or its context window ended it.
_UNCAPPED_ADVICE = ("; no --max-tokens was set, so the server's own limit or its context "
                    "window ended it: ask for a shorter answer, or start a new conversation")


def run_oneshot(args: argparse.Namespace, conversation: Conversation,
                tools: ToolsConfig | None = None) -> int:
    """Send one prompt in `conversation` (new, or continued with its earlier turns), print the
    reply, and return the exit code.

    Attachments are loaded and checked, and the request's size estimated, before anything is
    sent or stored: a refusal is a usage error. `tools` (the config's) names the MCP servers
    to start for the model unless `--no-tools`; they are stopped before this returns.

    When the conversation has a history, the prompt is stored before the request is sent and
    the reply in its final state (complete, cancelled, error) before this returns, whatever
    happened: the caller may end the process at once.
    """
    prompt, attachments = read_input(args.prompt, args.attach or [], sys.stdin)
    check_attachments(conversation, attachments)
    warning = check_fit(conversation, prompt, attachments)
    if warning is not None:
        print(safe_line(f"termchat: {warning}"), file=sys.stderr)
    run = _Run(conversation.model, _tool_session(args, conversation.model, tools), attachments)
    sink = _make_sink(args, run)
    if run.tools is not None:
        run.tools.before_output = sink.settle
    earlier = len(conversation.exchanges)
    signals = _Signals()
    error: TermchatError | None = None
    code = 0
    try:
        asyncio.run(_exchange(conversation, prompt, attachments, sink, signals, run))
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
    if error is not None and reply is not None:
        error = about_attachments(error, attachments, conversation.model, reply)
    if run.tools is not None:
        try:
            run.tools.finish(reply)
        except BrokenPipeError:
            silence(sys.stderr)
    try:
        sink.close(reply, error, interrupted=code in (EXIT_INTERRUPTED, EXIT_TERMINATED))
    except BrokenPipeError:
        silence(sys.stdout)
        return EXIT_BROKEN_PIPE
    try:
        _report(reply, error, run, usage=args.usage, out=sys.stderr)
    except BrokenPipeError:
        silence(sys.stderr)
    return code


def _tool_session(args: argparse.Namespace, model: ModelConfig,
                  tools: ToolsConfig | None) -> ToolSession | None:
    """The run's tools, or None when it has none: `--no-tools`, no server configured, or none
    that the model may use (then the MCP SDK is never imported)."""
    if tools is None or args.no_tools or not tools.servers:
        return None
    from termchat.oneshot_tools import ToolSession

    session = ToolSession(tools, model, yes=args.yes, allow_tools=args.allow_tool or [],
                          err=sys.stderr)
    return session if session.wanted else None


def read_input(words: list[str], paths: list[str],
               stdin: TextIO | None) -> tuple[str, tuple[Attachment, ...]]:
    """The prompt (see `read_prompt`) and the files `-a` attaches, each loaded and checked
    (a refusal is one sentence). `-` attaches stdin as a file, which is then not read as
    text; with attachments the prompt may be empty."""
    attachments: list[Attachment] = []
    if paths:
        from termchat.attachments import load, load_stdin

        if paths.count("-") > 1:
            raise UsageError("-a - (stdin as a file) can be given only once")
        for path in paths:
            if path != "-":
                attachments.append(load(path))
            elif stdin is None or stdin.isatty():
                raise UsageError('-a - attaches stdin as a file, but stdin is a terminal: '
                                 'pipe the file in (cat photo.png | termchat -a - "...").')
            else:
                attachments.append(load_stdin(stdin.buffer, name="stdin"))
    prompt = read_prompt(words, None if "-" in paths else stdin,
                         attachments=bool(attachments))
    return prompt, tuple(attachments)


def read_prompt(words: list[str], stdin: TextIO | None, *, attachments: bool = False) -> str:
    """The arguments joined by spaces, then a blank line and stdin when stdin is not a terminal.

    stdin is read as bytes and decoded leniently: a binary file must not crash the run. With
    `attachments` there may be no prompt at all (the files are the message).
    """
    argument = " ".join(words)
    piped = ""
    if stdin is not None and not stdin.isatty():
        piped = stdin.buffer.read().decode("utf-8", errors="replace")
    elif not words and not attachments:
        raise UsageError('no prompt: pass one as an argument (termchat "...") or pipe it in '
                         "(echo ... | termchat).")
    if argument.strip() and piped.strip():
        return f"{argument}\n\n{piped}"
    prompt = argument if argument.strip() else piped
    if not prompt.strip():
        if attachments:
            return ""
        raise UsageError("the prompt is empty: pass it as an argument or on stdin.")
    return prompt


def _request_attachments(conversation: Conversation,
                         attachments: tuple[Attachment, ...]) -> list[Attachment]:
    """Every file the next request carries: the earlier turns' still in context, then these."""
    earlier = [a for exchange in conversation.exchanges if exchange.in_context
               for a in exchange.attachments]
    return [*earlier, *attachments]


def check_attachments(conversation: Conversation, attachments: tuple[Attachment, ...]) -> None:
    """Refuse, before anything is sent, what the model's provider does not take (sizes,
    sides, pages, counts: `attachments.check_request`)."""
    carried = _request_attachments(conversation, attachments)
    if carried:
        from termchat.attachments import check_request

        check_request(carried, conversation.model.provider)


# No chat model in genai-prices' data has a context window under 4,000 tokens (only
# embedding and guard models do); OpenAI's and Anthropic's smallest is 8,192. A request
# estimated under 80% of that cannot be near any window, so nothing is looked up for it:
# the data (20-50 ms to load) stays out of a short run, before and after the reply.
SMALLEST_WINDOW = 4_000
# The low estimate never counts more tokens than a request has characters, so a request of
# fewer characters than 80% (pricing.NEAR_FULL) of SMALLEST_WINDOW, without images or PDFs,
# is not estimated at all: the estimate imports the attachment and pricing modules, 10-20 ms
# on the way to the first token.
QUICK_FIT_CHARS = 3_200


def _request_parts(conversation: Conversation, prompt: str,
                   attachments: tuple[Attachment, ...]) -> list[Part]:
    message = Message("user", ((Text(prompt),) if prompt else ()) + attachments)
    return [part for m in conversation.messages(message) for part in m.parts]


def _most_chars(conversation: Conversation, parts: list[Part]) -> int | None:
    """More characters than the request's text has, without a module imported; None when it
    carries an image or a PDF."""
    chars = len(conversation.system or "")
    for part in parts:
        if isinstance(part, Text):
            chars += len(part.text)
        elif isinstance(part, ToolCall):
            chars += len(part.name) + len(part.arguments)
        elif isinstance(part, ToolResult):
            chars += len(part.content)
        elif isinstance(part, Attachment):
            if part.kind is not AttachmentKind.TEXT:
                return None
            # Its name, the fences (longer than any run of backticks inside) and the text.
            chars += 2 * part.size + len(part.name) + 32
    return chars


def estimate_request(conversation: Conversation, prompt: str,
                     attachments: tuple[Attachment, ...]) -> int:
    """A deliberately low count of the tokens the next request takes: the system prompt and
    every message's text, tool calls and results at five characters a token
    (`pricing.estimate_tokens`), and images and PDFs at their provider's documented cost
    (`attachments.estimate_tokens`)."""
    from termchat.attachments import estimate_tokens as file_tokens
    from termchat.attachments import text_block
    from termchat.pricing import estimate_tokens

    provider = conversation.model.provider
    chars = len(conversation.system or "")
    tokens = 0
    for part in _request_parts(conversation, prompt, attachments):
        if isinstance(part, Text):
            chars += len(part.text)
        elif isinstance(part, ToolCall):
            chars += len(part.name) + len(part.arguments)
        elif isinstance(part, ToolResult):
            chars += len(part.content)
        elif isinstance(part, Attachment):
            if part.kind is AttachmentKind.TEXT:
                chars += len(text_block(part))
            else:
                tokens += file_tokens(part, provider) or 0
    return tokens + estimate_tokens(chars, provider=provider)


def check_fit(conversation: Conversation, prompt: str,
              attachments: tuple[Attachment, ...]) -> str | None:
    """Before sending: refuse (a usage error) a request that clearly cannot fit the model's
    context window (a low estimate at 110% of it or more), and return a warning for one
    whose low estimate is 80% of it or more; None when it fits or the window is unknown.

    Refused rather than sent: the estimate errs low, so the provider would refuse it too,
    after the wait. A window wrongly small in genai-prices' data (a beta that widens it) is
    overridden with `context_window` in the config.
    """
    model = conversation.model
    if model.context_window is None:
        most = _most_chars(conversation, _request_parts(conversation, prompt, attachments))
        if most is not None and most < QUICK_FIT_CHARS:
            return None
    from termchat.pricing import CLEARLY_TOO_BIG, NEAR_FULL, context_window

    estimate = estimate_request(conversation, prompt, attachments)
    if model.context_window is None and estimate < NEAR_FULL * SMALLEST_WINDOW:
        return None
    window = context_window(model)
    if window is None or estimate < NEAR_FULL * window:
        return None
    size = (f"this request is at least {estimate:,} tokens by a low estimate, "
            f"{math.floor(100 * estimate / window)}% of the {window:,}-token context window "
            f"of {model.label}")
    if estimate >= CLEARLY_TOO_BIG * window:
        fixes = "shorten the prompt or attach less"
        if any(exchange.in_context for exchange in conversation.exchanges):
            fixes += ", or start a new conversation (leave out -c / --cid)"
        raise UsageError(f"not sent: {size}, so it cannot fit; {fixes}. If the window is "
                         "larger, set context_window for this model in the config.")
    return f"warning: {size}; it may not fit."


_REJECTED = re.compile(r"(?P<host>\S+) (?:rejected|refused) the request "
                       r"\((?P<status>\d+): (?P<message>.*)\); check ")
_IMAGE_WORDS = ("image", "vision", "picture", "multimodal", "multi-modal")
_DOCUMENT_WORDS = ("pdf", "document", "file")


def about_attachments(error: TermchatError, attachments: tuple[Attachment, ...],
                      model: ModelConfig, reply: Reply) -> TermchatError:
    """A provider's refusal of a request with images or PDFs, said in one sentence that
    names them (the provider's own error cannot know which file the user meant); a request
    too long for the window, with what could be left out."""
    if not attachments or reply.text:
        return error
    if isinstance(error, ContextLengthError):
        names = ", ".join(safe_line(a.name) for a in attachments)
        return ContextLengthError(f"{error.message.rstrip('.')}, or attach less ({names}).")
    media = [a for a in attachments if a.kind is not AttachmentKind.TEXT]
    match = _REJECTED.match(error.message) if isinstance(error, BadRequestError) else None
    if match is None or not media:
        return error
    words = match["message"].lower()
    images = [a for a in media if a.kind is AttachmentKind.IMAGE]
    documents = [a for a in media if a.kind is AttachmentKind.DOCUMENT]
    named = (images if any(w in words for w in _IMAGE_WORDS) else []) + \
        (documents if any(w in words for w in _DOCUMENT_WORDS) else [])
    named = named or media
    kinds = " or ".join(dict.fromkeys(
        "images" if a.kind is AttachmentKind.IMAGE else "PDFs" for a in named))
    names = ", ".join(safe_line(a.name) for a in named)
    options = " ".join(f"-a {safe_line(a.name)}" for a in named)
    return BadRequestError(
        f"{match['host']} rejected the request with {names} attached ({match['status']}: "
        f"{match['message']}); {model.label} there may not take {kinds}: send it without "
        f"{options}, or use a model that takes {kinds}.")


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


class _Run:
    """What a run knows besides the reply: its model, its tools, and each round's usage (a
    tool turn is one request per round, and each is priced as the request it was)."""

    def __init__(self, model: ModelConfig, tools: ToolSession | None,
                 attachments: tuple[Attachment, ...] = ()) -> None:
        self.model = model
        self.tools = tools
        self.attachments = attachments

    def on_event(self, event: Event, reply: Reply) -> None:
        if self.tools is not None:
            self.tools.on_event(event)

    @staticmethod
    def rounds(reply: Reply) -> list[Usage]:
        """Each request's usage, in order (unknown for one that reported none)."""
        return reply.round_usages

    def cost(self, reply: Reply) -> Cost:
        """The reply's cost: every round's, added up."""
        from termchat.pricing import price, total

        return total(price(self.model, usage) for usage in self.rounds(reply))

    def context(self, reply: Reply, *, lookup: bool = True) -> tuple[int | None, float | None]:
        """The context window and the share of it the last request used (None when unknown).
        Without `lookup`, a request too small to be near any window looks nothing up."""
        from termchat.pricing import NEAR_FULL, context_window

        tokens = reply.last_usage.input_tokens
        if not lookup and self.model.context_window is None and (
                tokens is None or tokens < NEAR_FULL * SMALLEST_WINDOW):
            return None, None
        window = context_window(self.model)
        share = None if window is None or tokens is None else tokens / window
        return window, share


async def _exchange(conversation: Conversation, prompt: str,
                    attachments: tuple[Attachment, ...], sink: _Sink, signals: _Signals,
                    run: _Run) -> None:
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
        run.on_event(event, conversation.exchanges[-1].reply)

    tools = run.tools
    try:
        if tools is not None:
            # The servers start while the provider's SDK is imported (in a thread): the
            # request must offer their tools, so it waits for both.
            tools.start()
            conversation.tools, _ = await asyncio.gather(tools.runner(), conversation.prepare())
        await conversation.send(prompt, on_event, attachments=attachments)
    finally:
        gc.enable()
        try:
            await conversation.aclose()
        finally:
            if tools is not None:
                await tools.aclose()


def _report(reply: Reply | None, error: TermchatError | None, run: _Run, *,
            usage: bool, out: IO[str]) -> None:
    """The stderr lines: a cut-off warning, the error, a context window near full, then the
    -u usage line.

    Finish reasons and error messages are the server's words: they pass the sanitiser like
    the reply itself.
    """
    model = run.model
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
    if reply is not None:
        from termchat.pricing import near_full

        window, share = run.context(reply, lookup=usage)
        if window is not None and share is not None and near_full(share):
            lines.append(f"termchat: warning: the last request used {math.floor(share * 100)}% "
                         f"of the {window:,}-token context window of {model.label} "
                         f"({reply.last_usage.input_tokens:,} tokens); the next may not "
                         "fit: start a new conversation (leave out -c), or send less.")
        if usage:
            lines.append(usage_report(reply, run))
    for line in lines:
        print(safe_line(line), file=out)


def usage_report(reply: Reply, run: _Run) -> str:
    """The -u line: `usage_line`'s fields, then the context window's share the last request
    used, the reply's cost over all its rounds, and the rounds when there were several:
    `… · 6.6s · context 1% · $0.0011 · 2 rounds`."""
    from termchat.pricing import format_cost, format_share

    fields = [usage_line(reply)]
    _, share = run.context(reply)
    fields.append("context unknown" if share is None else f"context {format_share(share)}")
    shown = format_cost(run.cost(reply))
    if shown:
        fields.append(shown)
    if reply.rounds > 1:
        fields.append(f"{reply.rounds} rounds")
    return " · ".join(fields)


def retry_line(event: Retrying) -> str:
    """`Rate limited by … (429); retry after 30 s. Retrying in 30 s (2 of 3).`"""
    return f"{event.reason} Retrying in {event.delay:.0f} s ({event.attempt} of " \
           f"{event.attempts})."


def _usage_json(usage: Usage | None) -> dict[str, int | None]:
    return {
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "cached_tokens": usage.cached_tokens if usage else None,
        "reasoning_tokens": usage.reasoning_tokens if usage else None,
    }


def json_result(reply: Reply | None, model: ModelConfig, error: TermchatError | None,
                run: _Run | None = None) -> dict[str, Any]:
    """The `--json` object; usage counts the server did not report are null, and so is a
    cost or context share that is unknown (`cost.unknown` says why)."""
    usage = reply.usage if reply is not None else None
    finish = reply.finish if reply is not None else None
    result: dict[str, Any] = {
        "text": repair(reply.text) if reply is not None else "",
        "model": reply.model if reply is not None else model.model,
        "provider": reply.provider if reply is not None else model.provider,
        "finish_reason": finish.reason if finish else None,
        "finish_kind": str(finish.kind) if finish else None,
        "status": str(reply.status) if reply is not None else str(Status.ERROR),
        "usage": _usage_json(usage),
        "timings": {
            "ttft_s": _round(reply.ttft) if reply is not None else None,
            "elapsed_s": _round(reply.elapsed) if reply is not None else None,
            "tokens_per_second": _round(reply.tokens_per_second) if reply is not None else None,
        },
        "attachments": [{"name": a.name, "media_type": a.media_type, "kind": str(a.kind),
                         "size": a.size} for a in (run.attachments if run else ())],
        "rounds": reply.rounds if reply is not None else 0,
        "round_usage": [],
        "round_limit": reply.round_limit if reply is not None else False,
        "tool_calls": [],
        "cost": None,
        "context": None,
    }
    if reply is not None and run is not None:
        from termchat.oneshot_tools import calls_json
        from termchat.pricing import format_cost

        cost = run.cost(reply)
        window, share = run.context(reply)
        result["round_usage"] = [_usage_json(u) for u in run.rounds(reply)]
        result["tool_calls"] = calls_json(reply, run.tools.specs if run.tools else {})
        result["cost"] = {**cost.as_dict(), "shown": format_cost(cost) or None}
        result["context"] = {"window": window, "input_tokens": reply.last_usage.input_tokens,
                             "share": None if share is None else round(share, 4)}
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

    def settle(self) -> None:
        """Something else is about to write to the terminal (a tool call's line, an approval
        prompt): leave what is shown as it stands, below nothing still being redrawn."""

    def close(self, reply: Reply | None, error: TermchatError | None, *,
              interrupted: bool) -> None:
        """Called once at the end, whatever happened; `reply` is None if none was started."""


def _make_sink(args: argparse.Namespace, run: _Run) -> _Sink:
    if args.json:
        return JsonSink(sys.stdout.buffer, run.model, run)
    if sys.stdout.isatty():
        return TerminalSink(run.model.label, live=not args.no_stream)
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

    def settle(self) -> None:
        pass

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

    def __init__(self, out: BinaryIO, model: ModelConfig, run: _Run | None = None) -> None:
        self._out = out
        self._model = model
        self._run = run

    def start(self) -> None:
        pass

    def on_event(self, event: Event) -> None:
        pass

    def settle(self) -> None:
        pass

    def close(self, reply: Reply | None, error: TermchatError | None, *,
              interrupted: bool) -> None:
        if reply is None and error is not None and error.exit_code != 1:
            # A usage or configuration error: there was no exchange to describe.
            return
        result = json_result(reply, self._model, error, self._run)
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
        # The text so far was left on screen for good (a tool call came): the next text is
        # drawn below it, as a section of its own.
        self._settled = False

    def start(self) -> None:
        if self._live is not None:
            self._live.start(refresh=True)

    def on_event(self, event: Event) -> None:
        if isinstance(event, ToolCallStarted):
            self.settle()
            return
        if isinstance(event, TextDelta | ReasoningDelta | Retrying):
            self._resume()
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

    def settle(self) -> None:
        """Draw the text so far in full and stop redrawing it; with `--no-stream` nothing is
        shown before the end anyway."""
        if self._live is None or not self._live.is_started:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._markdown.append(self._safe.flush())
        self._frame(last=True)
        self._live.stop()
        self._settled = True

    def _resume(self) -> None:
        """After `settle`: a fresh section and live region for what arrives next."""
        if not self._settled:
            return
        from rich.live import Live
        from rich.text import Text

        from termchat.markdown_lines import MarkdownLines

        self._settled = False
        self._markdown = MarkdownLines(console=self._console)
        self._text_seen = False
        self._committed = 0
        self._live = Live(Text(""), console=self._console, auto_refresh=False,
                          redirect_stdout=False, redirect_stderr=False,
                          vertical_overflow="visible")
        self._live.start(refresh=False)

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
