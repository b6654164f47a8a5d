"""Streaming speed of the TUI, side by side with stock Textual `MarkdownStream`, in one run.

Drives the real termchat app headless (Conversation -> run_turn -> screen -> widgets), fed by a
provider that replays a ~40 KB Markdown reply as ~10,000 chunks, paced at 200 chunks/s and
as fast as possible, after 0 and after 20 earlier long replies. The baseline is a plain
Textual app with one Markdown widget per reply, streamed through `Markdown.get_stream()`.

Measured per run:
- chunk-to-screen latency: from a chunk's arrival at the front end to the first frame whose
  content includes it (p50 / p95; first 10% of the reply vs last 10%);
- frame time: the screen's update callback (layout, compositor, and turning the update into
  terminal output, which headless mode would otherwise skip);
- time from the last chunk to the final frame, and chunks/s taken in;
- CPU per KB streamed: the process's CPU from the first chunk to the frame showing the last,
  over the reply's size (the replay's own share is negligible; at 200 chunks/s it is mostly
  the cost of frames, flat out mostly that of taking the text in).
Plus the time from starting the installed `termchat` on a terminal to its first frame, and
whether a provider SDK was imported by then.

    .venv/bin/python bench/bench_tui.py            # the full table (~5 minutes)
    .venv/bin/python bench/bench_tui.py --quick    # a smoke run
    .venv/bin/python bench/bench_tui.py --first-frame-only --baseline ../before/src
        # the first frame only, alternating with another checkout (e.g. a git worktree)
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import gc
import json
import os
import pty
import select
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Markdown

import termchat
from termchat.config import DEFAULT_MODELS, Config, ModelConfig
from termchat.events import Event, Finish, TextDelta, Usage
from termchat.providers import ChatRequest
from termchat.sample import chunked, long_reply
from termchat.tui import messages as tui_messages
from termchat.tui.app import TermchatApp
from termchat.turn import Conversation, Exchange, Reply, Status

SIZE = (120, 40)
MODEL = ModelConfig(name="bench", provider="openai", model="replay", api_key="unused")


@dataclass
class Trace:
    """What one run observed: chunk arrivals, and frames with how much text they showed."""

    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, chars so far)
    frames: list[tuple[float, int]] = field(default_factory=list)  # (time painted, chars shown)
    frame_costs: list[tuple[float, float]] = field(default_factory=list)  # (time, seconds)
    shown: int = 0
    cpu: list[float] = field(default_factory=list)  # process CPU at the first chunk, at the end

    def arrived(self, chars: int) -> None:
        if not self.arrivals:
            self.cpu.append(time.process_time())
        self.arrivals.append((time.perf_counter(), chars))


class ReplayProvider:
    """A Provider that replays chunks in-process, paced at `rate` chunks/s (0: flat out)."""

    def __init__(self, chunks: list[str], rate: float) -> None:
        self.model = MODEL
        self.chunks = chunks
        self.rate = rate

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        start = time.perf_counter()
        for index, chunk in enumerate(self.chunks):
            if self.rate:
                delay = start + index / self.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                # A socket read yields to the loop; so does this.
                await asyncio.sleep(0)
            yield TextDelta(chunk)
        yield Usage(input_tokens=10, output_tokens=len(self.chunks))
        yield Finish.from_raw("stop")

    async def aclose(self) -> None:
        return None


def instrument(app: App, trace: Trace, shown: Callable[[], int]) -> None:
    """Record every frame the app paints."""
    original_display = app._display

    def display(screen: Screen, renderable: object) -> None:
        original_display(screen, renderable)
        if renderable is not None and hasattr(renderable, "render_segments"):
            # What a real terminal session pays to turn the update into escape codes.
            renderable.render_segments(app.console)
            trace.frames.append((time.perf_counter(), shown()))

    app._display = display  # type: ignore[method-assign]


@contextmanager
def frame_costs(trace: Trace) -> Iterator[None]:
    """Time every screen update (layout, compositor, paint), for screens created inside."""
    original = Screen._on_timer_update

    def on_timer_update(screen: Screen) -> None:
        began = time.perf_counter()
        original(screen)
        trace.frame_costs.append((began, time.perf_counter() - began))

    Screen._on_timer_update = on_timer_update  # type: ignore[method-assign]
    try:
        yield
    finally:
        Screen._on_timer_update = original  # type: ignore[method-assign]


async def run_termchat(chunks: list[str], rate: float, earlier: list[str]) -> Trace:
    trace = Trace()
    provider = ReplayProvider(chunks, rate)
    exchanges = [Exchange(f"question {i}", Reply(initial_text=text, status=Status.COMPLETE))
                 for i, text in enumerate(earlier)]
    conversation = Conversation(MODEL, exchanges=exchanges, provider=provider)
    app = TermchatApp(Config(path=Path("/dev/null")), MODEL, conversation=conversation,
                      cursor_blink=False, show_timings=True)
    original_rebuild = tui_messages.AssistantMessage._rebuild

    def rebuild(widget: tui_messages.AssistantMessage, width: int) -> None:
        original_rebuild(widget, width)
        if widget.streaming or widget.status is Status.COMPLETE:
            trace.shown = len(widget.text)

    tui_messages.AssistantMessage._rebuild = rebuild  # type: ignore[method-assign]
    total = 0

    def on_event(event: Event) -> None:
        nonlocal total
        if isinstance(event, TextDelta):
            total += len(event.text)
            trace.arrived(total)

    try:
        with frame_costs(trace):
            async with app.run_test(size=SIZE) as pilot:
                await pilot.pause()
                instrument(app, trace, lambda: trace.shown)
                app.chat.event_hook = on_event
                await pilot.press("x", "enter")
                await app.workers.wait_for_complete()
                await _settle(pilot, trace, total)
    finally:
        tui_messages.AssistantMessage._rebuild = original_rebuild  # type: ignore[method-assign]
    return trace


class StockApp(App):
    """The baseline: Textual's own streaming Markdown, one Markdown widget per reply."""

    def __init__(self, earlier: list[str]) -> None:
        super().__init__()
        self.earlier = earlier

    def compose(self) -> ComposeResult:
        yield VerticalScroll(*(Markdown(text) for text in self.earlier), id="view")


async def run_stock(chunks: list[str], rate: float, earlier: list[str]) -> Trace:
    trace = Trace()
    app = StockApp(earlier)
    with frame_costs(trace):
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            view = app.query_one(VerticalScroll)
            markdown = Markdown()
            await view.mount(markdown)
            view.anchor()
            original_append = markdown.append

            async def append(fragment: str) -> None:
                await original_append(fragment)
                trace.shown = len(markdown.source)

            markdown.append = append  # type: ignore[method-assign]
            instrument(app, trace, lambda: trace.shown)
            stream = Markdown.get_stream(markdown)
            provider = ReplayProvider(chunks, rate)
            total = 0
            async for event in provider.stream(ChatRequest(messages=())):
                if isinstance(event, TextDelta):
                    total += len(event.text)
                    trace.arrived(total)
                    await stream.write(event.text)
            await stream.stop()
            await _settle(pilot, trace, total)
    return trace


async def _settle(pilot: object, trace: Trace, total: int, limit: float = 10.0) -> None:
    """Wait until a frame shows the whole reply (the process's CPU taken then); say so if
    none does."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        if trace.frames and trace.frames[-1][1] >= total:
            trace.cpu.append(time.process_time())
            return
        await asyncio.sleep(0.01)
    shown = trace.frames[-1][1] if trace.frames else 0
    print(f"!! no frame showed the whole reply within {limit:g} s: the last one showed "
          f"{shown} of {total} characters", file=sys.stderr)


def latencies(trace: Trace) -> list[float]:
    """For each chunk, seconds from its arrival to the first frame that showed it."""
    result: list[float] = []
    frame = 0
    frames = trace.frames
    for arrived, chars in trace.arrivals:
        while frame < len(frames) and (frames[frame][0] < arrived or frames[frame][1] < chars):
            frame += 1
        if frame == len(frames):
            result.append(float("nan"))
        else:
            result.append(frames[frame][0] - arrived)
    return result


def pct(values: list[float], q: float) -> float:
    clean = sorted(v for v in values if v == v)
    if not clean:
        return float("nan")
    return clean[min(len(clean) - 1, int(q * len(clean)))]


def summarise(name: str, trace: Trace) -> dict[str, float | str]:
    lat = latencies(trace)
    tenth = max(1, len(lat) // 10)
    first, last = lat[:tenth], lat[-tenth:]
    costs = [c for t, c in trace.frame_costs if t >= trace.arrivals[0][0]]
    tenth_costs = max(1, len(costs) // 10)
    start, end = trace.arrivals[0][0], trace.arrivals[-1][0]
    final = next((t for t, chars in trace.frames if chars >= trace.arrivals[-1][1]), float("nan"))
    return {
        "run": name,
        "chunks/s": len(trace.arrivals) / (end - start) if end > start else float("inf"),
        "p50 ms": pct(lat, 0.5) * 1e3,
        "p95 ms": pct(lat, 0.95) * 1e3,
        "first10% p95": pct(first, 0.95) * 1e3,
        "last10% p95": pct(last, 0.95) * 1e3,
        "last/first": pct(last, 0.95) / pct(first, 0.95) if pct(first, 0.95) else float("nan"),
        "frame p50 ms": pct(costs, 0.5) * 1e3,
        "frame p95 ms": pct(costs, 0.95) * 1e3,
        "frame last/first": statistics.mean(costs[-tenth_costs:]) / statistics.mean(
            costs[:tenth_costs]) if costs else float("nan"),
        "final frame ms": (final - end) * 1e3,
        "frames": len(trace.frames),
        # The whole process (app, replay, turning frames into escape codes) per KB streamed.
        "CPU ms/KB": (trace.cpu[1] - trace.cpu[0]) * 1e3 / (trace.arrivals[-1][1] / 1e3)
        if len(trace.cpu) == 2 else float("nan"),
    }


TERMCHAT = Path(sys.executable).with_name("termchat")
SDKS = ("openai", "anthropic")


EMPTY_APP = (
    "from textual.app import App\n"
    "from textual.widgets import Static\n"
    "class Empty(App):\n"
    "    def compose(self):\n"
    "        yield Static('an empty Textual app')\n"
    "Empty().run()\n"
)


def _run_in_pty(env: dict[str, str], marker: bytes, argv: list[str] | None = None,
                limit: float = 10.0) -> tuple[float, bytes]:
    """Start `argv` (the installed `termchat`) on a pseudo-terminal; seconds until `marker` (a
    text of the first frame) was written, and what was written until then."""
    argv = argv or [str(TERMCHAT)]
    began = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its terminal
        os.execve(argv[0], argv, env)
    output = b""
    try:
        while time.perf_counter() - began < limit:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    output += os.read(fd, 1 << 16)
                except OSError:
                    break
                if marker in output:
                    return time.perf_counter() - began, output
        raise RuntimeError(f"no first frame within {limit} s: {output[-300:]!r}")
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(fd)


def first_paint(runs: int, baselines: Sequence[str] = ()
                ) -> tuple[list[float], list[float], set[str], dict[str, list[float]]]:
    """The installed `termchat`, started on a terminal (a pty, 100x30) with an empty config
    and data dir: seconds from process start to its first frame, alternating with an empty
    Textual app (the floor: Python and Textual alone) and with each of `baselines` (another
    checkout's `src`, run as the same command with it first on PYTHONPATH). Then one more
    run with -X importtime to list the provider SDKs imported before termchat's first frame."""
    times: list[float] = []
    floor: list[float] = []
    others: dict[str, list[float]] = {source: [] for source in baselines}
    # Bytecode cached and written first, as in a user's install (with PYTHONDONTWRITEBYTECODE
    # every termchat module changed since its cache was written is compiled at every start).
    for source in [str(Path(termchat.__file__).parent), *baselines]:
        compileall.compile_dir(source, quiet=1)
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "XDG_CONFIG_HOME": f"{home}/config", "XDG_DATA_HOME":
               f"{home}/data", "OPENAI_API_KEY": "unused", "TERM": "xterm-256color",
               "COLUMNS": "100", "LINES": "30"}
        env.pop("ANTHROPIC_API_KEY", None)
        env.pop("TERMCHAT_CONFIG", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        marker = DEFAULT_MODELS["openai"].encode()  # in the status bar
        for _ in range(runs):
            times.append(_run_in_pty(env, marker)[0])
            for source, seconds in others.items():
                seconds.append(_run_in_pty({**env, "PYTHONPATH": source}, marker)[0])
            floor.append(_run_in_pty(env, b"empty Textual app",
                                     [sys.executable, "-c", EMPTY_APP])[0])
        _, output = _run_in_pty({**env, "PYTHONPROFILEIMPORTTIME": "1"}, marker)
    imported = {line.rsplit(b"|", 1)[-1].strip().decode() for line in output.splitlines()
                if line.startswith(b"import time:")}
    return times, floor, {sdk for sdk in SDKS if sdk in imported}, others


COLUMNS = ["run", "chunks/s", "p50 ms", "p95 ms", "first10% p95", "last10% p95", "last/first",
           "frame p50 ms", "frame p95 ms", "frame last/first", "final frame ms", "frames",
           "CPU ms/KB"]


def print_table(rows: list[dict[str, float | str]]) -> None:
    widths = [max(len(c), 12) for c in COLUMNS]
    widths[0] = max(len(str(r["run"])) for r in rows) + 1
    print("  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for row in rows:
        cells = []
        for column, width in zip(COLUMNS, widths, strict=True):
            value = row[column]
            cells.append(value.ljust(width) if isinstance(value, str) else
                         f"{value:{width}.{2 if 'first' in column else 1}f}"
                         if isinstance(value, float) else str(value).rjust(width))
        print("  ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--size", type=int, default=40_000, help="reply size in characters")
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="paced chunks/s")
    parser.add_argument("--earlier", type=int, default=20, help="earlier replies")
    parser.add_argument("--only", choices=["termchat", "stock"], help="run one side only")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--first-frame-only", action="store_true",
                        help="only the first frame on a pty (no streaming rows)")
    parser.add_argument("--baseline", action="append", default=[], metavar="SRC",
                        help="another checkout's src, whose first frame alternates with this "
                        "one's (repeatable)")
    args = parser.parse_args()
    if args.quick:
        args.size, args.chunks, args.earlier = 4_000, 1_000, 3
    text = long_reply(args.size)
    chunks = chunked(text, args.chunks)
    earlier = [long_reply(max(args.size // 5, 2_000), seed=100 + i) for i in range(args.earlier)]
    print(f"reply: {len(text)} chars in {len(chunks)} chunks; {args.earlier} earlier replies "
          f"of {len(earlier[0]) if earlier else 0} chars; terminal {SIZE[0]}x{SIZE[1]}")

    rows = []
    sides = [("termchat", run_termchat), ("stock", run_stock)]
    for rate in (args.rate, 0.0) if not args.first_frame_only else ():
        for history in ([], earlier):
            for side, run in sides:
                if args.only and side != args.only:
                    continue
                gc.collect()
                trace = asyncio.run(run(chunks, rate, history))
                pace = f"{rate:g}/s" if rate else "max"
                rows.append(summarise(f"{side} {pace} +{len(history)}", trace))
                print_table(rows[-1:]) if len(rows) > 1 else print_table(rows)
    if rows:
        print()
        print_table(rows)

    runs = 3 if args.quick else 10
    times, floor, sdks, others = first_paint(runs, args.baseline)
    print(f"\nfirst frame of the installed termchat on a pty: median "
          f"{statistics.median(times) * 1e3:.0f} ms, max {max(times) * 1e3:.0f} ms over {runs} "
          f"runs (target <= 500 ms); an empty Textual app, alternating with it: median "
          f"{statistics.median(floor) * 1e3:.0f} ms, max {max(floor) * 1e3:.0f} ms; "
          f"SDKs imported by then: {', '.join(sorted(sdks)) or 'none'}")
    for source, seconds in others.items():
        print(f"  {source}, alternating with it: median {statistics.median(seconds) * 1e3:.0f} "
              f"ms, max {max(seconds) * 1e3:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"rows": rows, "first_paint_s": times, "empty_app_first_paint_s": floor}, indent=1))


if __name__ == "__main__":
    main()
