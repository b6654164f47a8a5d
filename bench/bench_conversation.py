"""A long conversation in the TUI: how soon it is on screen, and how smooth it is to scroll up.

Drives the real app headless at 110x32 (the chat screen opening a stored conversation, as
`termchat -c` does: read from the history file from its end, the rest after the first frame)
with 5, 100 and 1,000 exchanges of 8 KB replies:

- time to interactive: from reading the conversation to the app's first frame with the last
  reply on screen and the prompt focused (the same run with an empty conversation is the
  floor); and until the rest of it is read and in place (`all in`), in the background;
- scrolling: the view scrolled up three rows at a time (a mouse wheel's step) through the last
  600 rows; each step's frame cost is the event loop's CPU time from the scroll to the frame
  that shows it (the frame itself waits for Textual's 60 Hz tick, which is not work; replies
  rendered ahead in a thread are not the frame's either), p50, p95 and max; and `seen`, the
  wall-clock time from the scroll to that frame (the tick included), p95 and max;
- streaming: a new reply at the end of that conversation, appended 4 characters at a time,
  190 times a second: the event loop's CPU as a share of a core (`stream`).

    .venv/bin/python bench/bench_conversation.py            # the table (~3 minutes)
    .venv/bin/python bench/bench_conversation.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from textual.pilot import Pilot

from termchat.config import Config, ModelConfig
from termchat.history import HistoryStore, continue_conversation
from termchat.sample import long_reply
from termchat.tui import OPENED_EXCHANGES
from termchat.tui.app import TermchatApp
from termchat.tui.conversation import ConversationView
from termchat.tui.messages import AssistantMessage
from termchat.turn import Conversation, Reply, Status
from termchat.untrusted import Safe

SIZE = (110, 32)
MODEL = ModelConfig(name="bench", provider="openai", model="bench", api_key="unused")
REPLIES = [long_reply(8_000, seed=seed) for seed in range(20)]
STREAM_RATE, STREAM_SECONDS = 190, 6


CONFIG = Config(path=Path("/nonexistent/config.toml"), models={MODEL.name: MODEL})


def stored(directory: Path, exchanges: int) -> Path:
    """A history file of one conversation of `exchanges`, written through termchat's store."""
    path = directory / f"history-{exchanges}.db"
    with HistoryStore.open(path) as store:
        record = store.new_conversation()
        for i in range(exchanges):
            record.user_prompt(f"Question {i}: tell me more about streaming", MODEL).finish(
                Reply(model=MODEL.model, provider=MODEL.provider,
                      initial_text=REPLIES[i % len(REPLIES)], status=Status.COMPLETE))
    return path


async def painted(app: TermchatApp) -> None:
    drawn = asyncio.get_running_loop().create_future()
    app.screen.call_after_refresh(drawn.set_result, None)
    await drawn


async def stream_at_the_end(pilot: Pilot[None], view: ConversationView) -> float:
    """A new reply at the end of the view, its text appended in 4-character pieces at
    STREAM_RATE a second for STREAM_SECONDS (the widget's own path: no provider, no event
    loop work but the UI's); the event loop's CPU over that time, as a share of a core."""
    view.scroll_end(animate=False, immediate=True)
    reply = AssistantMessage(streaming=True)
    await view.mount(reply)
    view.following = True
    await pilot.pause(0.2)
    text = "".join(REPLIES)
    cpu, start = time.thread_time(), time.perf_counter()
    for n in range(int(STREAM_RATE * STREAM_SECONDS)):
        reply.append(Safe(text[4 * n:4 * n + 4]))
        await asyncio.sleep(max(0.0, start + (n + 1) / STREAM_RATE - time.perf_counter()))
    return (time.thread_time() - cpu) / (time.perf_counter() - start)


async def measure(path: Path, exchanges: int, steps: int) -> dict[str, float]:
    began = time.perf_counter()
    store = HistoryStore.open(path)
    cid = store.last_conversation_id()
    conversation = continue_conversation(CONFIG, store, cid, recent=OPENED_EXCHANGES) \
        if cid is not None else Conversation(MODEL)
    app = TermchatApp(CONFIG, MODEL, conversation=conversation, history=store,
                      cursor_blink=False, show_timings=False)
    async with app.run_test(size=SIZE) as pilot:
        view = app.chat.query_one(ConversationView)
        while not (exchanges == 0 or app.chat.query(AssistantMessage)) or app.focused is None:
            await asyncio.sleep(0.001)
        await painted(app)
        opened = time.perf_counter() - began
        while conversation.older is not None or app.chat._waiting is not None:
            await asyncio.sleep(0.001)
        whole = time.perf_counter() - began
        await pilot.pause(0.3)
        frames: list[float] = []
        waits: list[float] = []
        for _ in range(steps if exchanges else 0):
            if view.scroll_y <= 0:
                break
            start, wall = time.thread_time(), time.perf_counter()
            view.scroll_relative(y=-3, animate=False)
            await painted(app)
            frames.append(time.thread_time() - start)
            waits.append(time.perf_counter() - wall)
        mounted = len(app.chat.query(AssistantMessage))
        streaming = await stream_at_the_end(pilot, view)
    result = {"open": opened, "whole": whole, "mounted": float(mounted), "stream": streaming}
    if frames:
        frames.sort()
        waits.sort()
        result |= {"p50": statistics.median(frames), "p95": frames[int(0.95 * len(frames))],
                   "max": frames[-1], "steps": float(len(frames)),
                   "wait p95": waits[int(0.95 * len(waits))], "wait max": waits[-1]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = (0, 5, 100) if args.quick else (0, 5, 100, 1000)
    runs = 1 if args.quick else 3
    steps = 20 if args.quick else 200
    print(f"{'exchanges':>10} {'open ms':>9} {'(min-max)':>13} {'all in ms':>10} "
          f"{'mounted':>8} {'scroll p50':>11} {'p95':>7} {'max':>7} {'seen p95':>9} "
          f"{'max':>7} {'stream':>7}  target: open flat, scroll p95 <= 16 ms, stream flat")
    with tempfile.TemporaryDirectory() as directory:
        for exchanges in sizes:
            path = stored(Path(directory), exchanges)
            results = [asyncio.run(measure(path, exchanges, steps)) for _ in range(runs)]
            opens = [r["open"] * 1000 for r in results]
            row = (f"{exchanges:>10} {statistics.median(opens):>9.0f} "
                   f"{f'({min(opens):.0f}-{max(opens):.0f})':>13} "
                   f"{statistics.median(r['whole'] for r in results) * 1000:>10.0f} "
                   f"{statistics.median(r['mounted'] for r in results):>8.0f}")
            if "p95" in results[0]:
                row += "".join(f" {statistics.median(r[key] for r in results) * 1000:>{w}.1f}"
                               for key, w in (("p50", 11), ("p95", 7), ("max", 7),
                                              ("wait p95", 9), ("wait max", 7)))
            else:
                row += " " * 46
            row += f" {statistics.median(r['stream'] for r in results):>7.3f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
