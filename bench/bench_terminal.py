"""What a person sees in a real terminal: the installed `termchat` in tmux against stock Textual.

Drives the installed `termchat` of this venv (and, alternating with it, `stock_app.py`, a plain
Textual chat app streaming through `MarkdownStream`) in a private tmux server, 110x32, with
escape-time 0 and a throw-away HOME and XDG dirs. It types a prompt, presses Enter and polls
the pane, against `provider_double.py`, an OpenAI stand-in independent of termchat. The rows
are issue 14's:

1. first Enter -> the user's own prompt on screen, above the input box (first send of the
   process, typed as soon as the first frame is up, so the SDK import is included);
2. a 46 KB reply in 11,468 chunks at full speed, Enter -> `done` on screen, first and second
   send of one process; the floor is the `openai` SDK alone iterating the same stream in a
   fresh process as `chat.completions.create` gives it (and, for reference, the same request
   with the chunks kept as JSON objects, as termchat reads them, and raw httpx2 +
   `json.loads`);
3. the same reply at 190 chunks/s: CPU seconds of the app's process (utime + stime from
   /proc, children excluded) from Enter to `done`, as a share of a core from Enter and over
   the stream alone (from its first mark on screen, 100 chunks in, to `done`: without the
   request and the first send's SDK import), and chunk-to-screen p95 and median (the double
   logs when it sent each ` mkNNN` mark in the text; the pane is polled every 10 ms, so that
   is the resolution); the floor is the SDK's own CPU on that paced stream
   (after a warm-up request), both ways, measured in parallel with the first stock run (the
   first termchat run with `--skip stock`);
4. `termchat -c` on a conversation of 5, 60, 100 and 1,000 exchanges with 8 KB replies:
   process start -> last reply and status on screen;
5. Ctrl+R on 10,000 conversations -> the list on screen (the database of bench_history.py,
   cached in bench/results/); then a search typed a key every 100 ms: each key -> the search
   box shows it, and the last key -> the conversations holding the word listed.

The reply carries about a hundred marks (46.8 KB in all), and the last stored reply of each
`-c` conversation ends with a marker word. Medians with min-max over alternating runs (`--runs`
for the quick rows, `--slow-runs` for the paced ones and stock at full speed); the load
average is printed, since the machine is shared. A run whose app ends mid-run (other work on
the machine has sent SIGTERM to processes named termchat) is run again, and said so.

    .venv/bin/python bench/bench_terminal.py            # the full table (~8 minutes)
    .venv/bin/python bench/bench_terminal.py --quick    # one small run of each, a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import termchat
from tmux_control import Died, Timeout, Tmux

BENCH = Path(__file__).resolve().parent
TERMCHAT = Path(sys.executable).with_name("termchat")
STOCK = [sys.executable, str(BENCH / "stock_app.py")]
WIDTH, HEIGHT = 110, 32
# The input box and everything under it. termchat: box (3) after a margin (1), status,
# footer; stock: input (3), status. A prompt above these rows has left the input box.
BOTTOM = 6
MODEL_LABEL = "openai:gpt-4.1-mini"
RATE = 190.0
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
MARK = re.compile(r"\bmk\d{3}\b")
uids = itertools.count(10_001)


@dataclass
class Sizes:
    reply: tuple[int, int]  # characters, chunks
    exchanges: tuple[int, ...]
    conversations: int
    runs: int
    slow_runs: int  # for the runs that take most of a minute each


FULL = Sizes(reply=(46_000, 11_468), exchanges=(5, 60, 100, 1000), conversations=10_000, runs=3,
             slow_runs=2)
QUICK = Sizes(reply=(4_600, 1_147), exchanges=(5, 20), conversations=500, runs=1, slow_runs=1)


@dataclass
class Results:
    """Every measurement by row key, what could not be measured, and the runs repeated
    because their app ended mid-run."""

    rows: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    repeated: list[str] = field(default_factory=list)

    def add(self, key: str, value: float) -> None:
        self.rows.setdefault(key, []).append(value)

    def fail(self, key: str, why: str) -> None:
        self.failures.setdefault(key, []).append(why)
        print(f"  !! {key}: {why}", file=sys.stderr)

    def run(self, label: str, measure: Callable[..., None], *args: object,
            **kwargs: object) -> None:
        """`measure(scratch, *args, **kwargs)`, kept only if its app did not end mid-run; else
        run again (the machine is shared, and other work on it has sent SIGTERM to processes
        named termchat)."""
        attempts = 3
        for _ in range(attempts):
            scratch = Results()
            try:
                measure(scratch, *args, **kwargs)
            except Died as exc:
                self.repeated.append(f"{label}: {exc}")
                print(f"  !! {label}: the app ended mid-run ({exc}); running it again",
                      file=sys.stderr)
                continue
            except Timeout as exc:
                scratch.fail(label, exc.what)
            for key, values in scratch.rows.items():
                self.rows.setdefault(key, []).extend(values)
            for key, whys in scratch.failures.items():
                self.failures.setdefault(key, []).extend(whys)
            return
        self.fail(label, f"its app ended mid-run {attempts} times")


# -- the processes ------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextlib.contextmanager
def provider_double(reply: tuple[int, int]) -> Iterator[str]:
    """The double in its own process (its work stays off this one's GIL); its base URL."""
    spec = f"big={reply[0]}:{reply[1]}"
    process = subprocess.Popen([sys.executable, str(BENCH / "provider_double.py"), "--reply",
                                spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().split()[1])
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


def sent_log(base_url: str, uid: int) -> dict[str, object]:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/log", timeout=10) as answer:
        return next(entry for entry in json.load(answer) if entry["uid"] == uid)


def environment(home: Path, base_url: str) -> dict[str, str]:
    """This process's environment minus every provider, termchat, XDG and tmux setting, with
    a fresh HOME and XDG dirs under `home` and the double as the OpenAI endpoint."""
    # Bytecode caching on, as in a user's install: with PYTHONDONTWRITEBYTECODE set, every
    # termchat module changed since its cache was written would be compiled on every start.
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("OPENAI_", "ANTHROPIC_", "TERMCHAT_", "XDG_", "TMUX"))
           and name != "PYTHONDONTWRITEBYTECODE"}
    for name in ("config", "data", "cache", "state"):
        (home / name).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"),
               XDG_STATE_HOME=str(home / "state"), OPENAI_BASE_URL=base_url,
               OPENAI_API_KEY="bench", LANG="C.UTF-8", COLORTERM="truecolor")
    env.pop("LC_ALL", None)
    return env


# -- what the screen shows ----------------------------------------------------------------

def status_ready(lines: list[str]) -> bool:
    return any("ready" in line for line in lines[-3:])


def status_done(uid: int) -> Callable[[list[str]], bool]:
    """`done` for the reply whose usage said `out uid` (not an earlier reply's `done`)."""
    pattern = re.compile(rf"\bdone\b.*\bout {uid}\b")
    return lambda lines: any(pattern.search(line) for line in lines[-3:])


def in_input(token: str) -> Callable[[list[str]], bool]:
    return lambda lines: any(token in line for line in lines[-BOTTOM:])


def in_conversation(token: str) -> Callable[[list[str]], bool]:
    return lambda lines: any(token in line for line in lines[:-BOTTOM])


class App:
    """One app process in its own tmux session."""

    names = itertools.count(1)

    def __init__(self, tmux: Tmux, kind: str, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.tmux = tmux
        self.kind = kind
        self.name = f"run{next(self.names)}"
        self.started = time.monotonic()
        argv = [str(TERMCHAT)] if kind == "termchat" else STOCK
        self.pid = tmux.start(self.name, [*argv, *args], env)

    def wait(self, seen: Callable[[list[str]], bool], what: str, timeout: float = 30,
             interval: float = 0.02) -> float:
        return self.tmux.wait(self.name, seen, what, timeout, interval,
                              lambda: alive(self.pid))[0]

    def cpu(self) -> float:
        try:
            return cpu_seconds(self.pid)
        except FileNotFoundError:
            raise self.died() from None

    def died(self) -> Died:
        time.sleep(0.1)  # for tmux to notice, and say how it ended
        return Died(self.tmux.screen(self.name))

    def type_prompt(self, uid: int, rate: float = 0) -> str:
        """Type `zqUID big RATE` and wait until the input box shows it; the token."""
        token = f"zq{uid}"
        self.tmux.type(self.name, f"{token} big {rate:g}")
        self.wait(in_input(token), "the typed prompt", 10, 0.005)
        return token

    def enter(self) -> tuple[float, float]:
        """Press Enter; (when, the process's CPU seconds then)."""
        cpu = self.cpu()
        began = time.monotonic()
        self.tmux.key(self.name, "Enter")
        return began, cpu

    def close(self) -> None:
        self.tmux.kill(self.name, self.pid)

    def __enter__(self) -> App:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def first_frame(self) -> None:
        self.wait(status_ready, f"{self.kind}'s first frame")
        # By now the pane's process has exec'd: the pid measured is the app's.
        cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        assert (b"termchat" if self.kind == "termchat" else b"stock_app") in cmdline, cmdline


# -- rows 1 and 2: first Enter, and a long reply at full speed -----------------------------

def full_speed(results: Results, tmux: Tmux, kind: str, base_url: str, limit: float) -> None:
    """One process: the first send (prompt on screen, then `done`), then a second send."""
    with App(tmux, kind) as app:
        app.first_frame()
        for send in ("first", "second"):
            uid = next(uids)
            token = app.type_prompt(uid)
            began, cpu = app.enter()
            if send == "first":
                try:
                    shown = app.wait(in_conversation(token), "the prompt", limit, 0.005)
                    results.add(f"prompt {kind}", shown - began)
                except Timeout as exc:
                    results.fail(f"prompt {kind}", exc.what)
            try:
                done = app.wait(status_done(uid), "`done`", limit)
            except Timeout as exc:
                results.fail(f"{send} {kind}", exc.what)
                return
            results.add(f"{send} {kind}", done - began)
            results.add(f"{send} cpu {kind}", app.cpu() - cpu)
            server = sent_log(base_url, uid)
            results.add("server done", server["finished"] - server["started"])


def floor(env: dict[str, str], results: Results) -> None:
    """The SDK alone (and raw httpx2) on the same stream, in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--floor", str(next(uids)),
                          str(next(uids)), str(next(uids))],
                         env=env, capture_output=True, text=True, check=True).stdout
    for key, value in json.loads(out).items():
        results.add(key, value)


def floor_process(env: dict[str, str], rate: float, dicts: bool) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--floor-paced", str(next(uids)),
                             f"{rate:g}", "dicts" if dicts else "models"], env=env,
                            stdout=subprocess.PIPE, text=True)


async def _sdk_stream(client: Any, uid: int, rate: float = 0, reply: str = "big",
                      dicts: bool = False) -> tuple[float, float, int]:
    """(seconds, CPU seconds, characters) for the SDK to iterate one stream: as
    `chat.completions.create` gives it (the SDK's models of the chunks), or with `dicts` as
    termchat reads it (the same request through the SDK's client, the chunks kept as the JSON
    objects they arrive as)."""
    import openai

    began, cpu = time.perf_counter(), time.process_time()
    body = {"model": "gpt-4.1-mini", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"zq{uid} {reply} {rate:g}"}]}
    if dicts:
        stream = await client.post("/chat/completions", body=body, cast_to=object, stream=True,
                                   stream_cls=openai.AsyncStream[object],
                                   options={"security": {"bearer_auth": True}})
    else:
        stream = await client.chat.completions.create(**body)
    chars = 0
    async with stream:
        async for chunk in stream:
            if dicts:
                choices = chunk.get("choices")
                text = choices[0]["delta"].get("content") if choices else None
            else:
                text = chunk.choices[0].delta.content if chunk.choices else None
            chars += len(text or "")
    return time.perf_counter() - began, time.process_time() - cpu, chars


async def _raw_stream(uid: int) -> float:
    import httpx2

    async with httpx2.AsyncClient(base_url=os.environ["OPENAI_BASE_URL"]) as client:
        began = time.perf_counter()
        body = {"model": "gpt-4.1-mini", "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": f"zq{uid} big 0"}]}
        async with client.stream("POST", "/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    json.loads(line[6:])
        return time.perf_counter() - began


def measure_floor(cold: int, warm: int, raw: int) -> dict[str, float]:
    began = time.perf_counter()
    import openai

    imported = time.perf_counter() - began

    async def streams() -> dict[str, float]:
        client = openai.AsyncOpenAI(max_retries=0)
        first = await _sdk_stream(client, cold)
        second = await _sdk_stream(client, warm)
        dicts = await _sdk_stream(client, raw, dicts=True)
        await client.close()
        return {"floor import": imported, "floor cold": first[0], "floor warm": second[0],
                "floor warm cpu": second[1], "floor dicts": dicts[0],
                "floor raw": await _raw_stream(raw)}

    return asyncio.run(streams())


def measure_floor_paced(uid: int, rate: float, dicts: bool) -> dict[str, float]:
    import openai

    async def stream() -> tuple[float, float, int]:
        client = openai.AsyncOpenAI(max_retries=0)
        try:
            # The SDK's first request imports and builds what it needs: not the parse.
            await _sdk_stream(client, uid, reply="tiny", dicts=dicts)
            return await _sdk_stream(client, uid, rate, dicts=dicts)
        finally:
            await client.close()

    seconds, cpu, _ = asyncio.run(stream())
    key = "paced floor dicts" if dicts else "paced floor"
    return {f"{key} cpu": cpu, f"{key} share": cpu / seconds}


# -- row 3: a paced reply, CPU and chunk-to-screen -----------------------------------------

def paced(results: Results, tmux: Tmux, kind: str, base_url: str, limit: float,
          floor_env: dict[str, str] | None = None) -> None:
    """One process, one paced send: CPU from Enter to `done`, and when each mark showed."""
    with App(tmux, kind) as app:
        app.first_frame()
        uid = next(uids)
        app.type_prompt(uid, RATE)
        floors = [floor_process(floor_env, RATE, dicts) for dicts in (False, True)
                  if floor_env is not None]
        try:
            watch_paced(app, uid, base_url, results, limit)
        finally:
            for sdk in floors:
                out, _ = sdk.communicate(timeout=limit)
                for key, value in json.loads(out).items():
                    results.add(key, value)


def watch_paced(app: App, uid: int, base_url: str, results: Results, limit: float) -> None:
    kind = app.kind
    began, cpu = app.enter()
    seen: dict[str, float] = {}
    done = status_done(uid)
    first: tuple[float, float] | None = None  # (when, CPU) the first mark showed
    while True:
        lines = app.tmux.screen(app.name)
        now = time.monotonic()
        for line in lines[:-BOTTOM]:
            for mark in MARK.findall(line):
                seen.setdefault(mark, now)
        if first is None and seen:
            first = now, app.cpu()
        if done(lines):
            break
        if not alive(app.pid):
            raise app.died()
        if now > began + limit:
            results.fail(f"paced {kind}", f"no `done` within {limit:g} s")
            return
        time.sleep(0.01)
    ended = app.cpu()
    results.add(f"paced cpu {kind}", ended - cpu)
    results.add(f"paced share {kind}", (ended - cpu) / (now - began))
    if first is not None:
        # The stream alone: from its first mark on screen (100 chunks in) to its end, without
        # the request and the first send's SDK import before it.
        results.add(f"paced stream share {kind}", (ended - first[1]) / (now - first[0]))
    sent = sent_log(base_url, uid)["marks"]
    assert isinstance(sent, dict)
    latencies = sorted(seen[mark] - at for mark, at in sent.items() if mark in seen)
    if len(latencies) < len(sent) * 0.9:
        results.fail(f"paced p95 {kind}", f"only {len(latencies)} of {len(sent)} marks were "
                     "seen on screen")
    elif latencies:
        results.add(f"paced p95 {kind}", latencies[int(0.95 * (len(latencies) - 1))])
        results.add(f"paced p50 {kind}", latencies[len(latencies) // 2])


# -- rows 4 and 5: long conversations and the history browser -------------------------------

def conversation_db(data_dir: Path, exchanges: int, reply_chars: int = 8_000) -> tuple[str, int]:
    """A history of one conversation of `exchanges` 8 KB replies, through termchat's own store
    API; the word that ends the last reply, and the output tokens it reports."""
    from termchat.config import ModelConfig
    from termchat.events import Finish, Usage
    from termchat.history import HistoryStore
    from termchat.sample import long_reply
    from termchat.turn import Reply, Status

    end, out = f"zqend{exchanges}", 900_000 + exchanges
    model = ModelConfig(name=MODEL_LABEL, provider="openai", model="gpt-4.1-mini")
    with HistoryStore.open(data_dir / "termchat" / "history.db") as store:
        record = store.new_conversation()
        for index in range(exchanges):
            last = index == exchanges - 1
            text = long_reply(reply_chars, seed=index) + (f"\nThat is all. {end}\n" if last
                                                          else "")
            reply = Reply(model="gpt-4.1-mini", provider="openai", initial_text=text,
                          status=Status.COMPLETE, finish=Finish.from_raw("stop"),
                          usage=Usage(input_tokens=10 + index,
                                      output_tokens=out if last else 2_000 + index))
            record.user_prompt(f"Question {index}: tell me more about streaming", model) \
                .finish(reply)
    return end, out


def continued(results: Results, tmux: Tmux, data_dir: Path, end: str, out: int,
              key: str) -> None:
    with App(tmux, "termchat", ("-c",), {"XDG_DATA_HOME": str(data_dir)}) as app:
        try:
            shown = app.wait(lambda lines: in_conversation(end)(lines) and
                             status_done(out)(lines), "the last reply and its status", 30,
                             0.005)
            results.add(key, shown - app.started)
        except Timeout as exc:
            results.fail(key, exc.what)


def history_db(conversations: int) -> Path:
    """bench_history.py's database, built by its own code and sharing its cache."""
    from bench_history import RESULTS, build, schema_fingerprint

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"history-{conversations}.db"
    meta_path = path.with_suffix(".json")
    cached = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if cached.get("schema") != schema_fingerprint() or not path.exists():
        for stale in (path, meta_path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
        began = time.perf_counter()
        meta_path.write_text(json.dumps(build(path, conversations)))
        print(f"built {path} in {time.perf_counter() - began:.1f} s")
    return path


def newest_title(data_dir: Path) -> str:
    from termchat.history import HistoryStore

    with HistoryStore.open(data_dir / "termchat" / "history.db") as store:
        return store.list_conversations(limit=1)[0].title


def history_browser(results: Results, tmux: Tmux, data_dir: Path, title: str) -> None:
    with App(tmux, "termchat", env={"XDG_DATA_HOME": str(data_dir)}) as app:
        app.first_frame()
        # The store opens after the first frame; a person takes longer than this to reach
        # for Ctrl+R.
        time.sleep(1.0)
        began = time.monotonic()
        tmux.key(app.name, "C-r")
        try:
            shown = app.wait(in_conversation(title[:24]), "the newest conversation", 20, 0.005)
            results.add("history", shown - began)
        except Timeout as exc:
            results.fail("history", exc.what)
            return
        search_keys(results, tmux, app)


# A word bench_history's database has in 10 messages, typed at a brisk ten keys a second.
SEARCHED = "zyxtrellium"
KEY_GAP = 0.1
SEARCH_BOX = 3  # the rows of the search box at the top of the history screen


def search_keys(results: Results, tmux: Tmux, app: App) -> None:
    """Type a search a key at a time: each key → the box shows it; the last key → the
    conversations that hold the word listed below the box (after the search's debounce)."""
    for typed in range(1, len(SEARCHED) + 1):
        began = time.monotonic()
        tmux.type(app.name, SEARCHED[typed - 1])
        text = SEARCHED[:typed]
        try:
            shown = app.wait(lambda lines, text=text: any(text in line for line in
                                                          lines[:SEARCH_BOX]),
                             f"'{text}' in the search box", 10, 0.005)
        except Timeout as exc:
            results.fail("history key", exc.what)
            return
        results.add("history key", shown - began)
        time.sleep(max(KEY_GAP - (time.monotonic() - began), 0))
    try:
        found = app.wait(lambda lines: any(SEARCHED in line for line in lines[SEARCH_BOX:]),
                         "the conversations found", 10, 0.005)
        results.add("history found", found - began)
    except Timeout as exc:
        results.fail("history found", exc.what)


# -- the table ------------------------------------------------------------------------------

def cell(values: list[float] | None, unit: str = "s", scale: float = 1.0,
         digits: int = 2) -> str:
    if not values:
        return "–"
    middle = statistics.median(values) * scale
    text = f"{middle:.{digits}f} {unit}".strip()
    if len(values) > 1:
        low, high = min(values) * scale, max(values) * scale
        text += f" ({low:.{digits}f}–{high:.{digits}f}, {len(values)} runs)"
    else:
        text += " (1 run)"
    return text


def median(results: Results, key: str) -> float | None:
    values = results.rows.get(key)
    return statistics.median(values) if values else None


def met(value: float | None, target: float | None) -> str:
    if value is None or target is None:
        return "–"
    return "yes" if value <= target else "no"


def table(results: Results, sizes: Sizes) -> list[str]:
    r = results.rows
    size_kb = sizes.reply[0] / 1000

    def both(key: str, **fmt: object) -> tuple[str, str]:
        return (cell(r.get(f"{key} termchat"), **fmt),  # type: ignore[arg-type]
                cell(r.get(f"{key} stock"), **fmt))  # type: ignore[arg-type]

    def failed(key: str, text: str) -> str:
        why = results.failures.get(key)
        return f"{text}; failed: {why[0]}" if why else text

    warm, imported = median(results, "floor warm"), median(results, "floor import")
    first_target = 1.2 * warm + imported if warm is not None and imported is not None else None
    second_target = 1.2 * warm if warm is not None else None
    rows = [("step", "termchat", "stock Textual", "floor", "target", "met")]
    tc, st = both("prompt", unit="ms", scale=1e3, digits=0)
    rows.append(("first Enter → the user's own prompt on screen", failed("prompt termchat", tc),
                 failed("prompt stock", st), "", "≤ 50 ms, first send included",
                 met(median(results, "prompt termchat"), 0.05)))
    tc, st = both("first")
    rows.append((f"{size_kb:.0f} KB reply in {sizes.reply[1]:,} chunks at full speed "
                 f"(server done in {cell(r.get('server done'), 'ms', 1e3, 0)}), Enter → `done`, "
                 "first send",
                 failed("first termchat", tc), failed("first stock", st),
                 f"SDK {cell(r.get('floor warm'))} + import {cell(r.get('floor import'))}",
                 f"≤ 1.2× floor + import = {first_target:.2f} s" if first_target else "",
                 met(median(results, "first termchat"), first_target)))
    tc, st = both("second")
    rows.append(("same, second send (SDK already loaded)", failed("second termchat", tc),
                 failed("second stock", st), f"SDK {cell(r.get('floor warm'))}",
                 f"≤ 1.2× floor = {second_target:.2f} s" if second_target else "",
                 met(median(results, "second termchat"), second_target)))
    rows.append(("the floor: the `openai` SDK alone iterating that stream (no UI), fresh "
                 "process", "", "",
                 f"{cell(r.get('floor warm'))}, using {cell(r.get('floor warm cpu'), 'CPU-s')}; "
                 f"first stream of the process {cell(r.get('floor cold'))}; the same "
                 f"through the SDK's client with the chunks as JSON objects, as termchat reads "
                 f"them: {cell(r.get('floor dicts'))}; raw httpx2 + `json.loads` "
                 f"{cell(r.get('floor raw'))}; `import openai` {cell(r.get('floor import'))}",
                 "", ""))
    tc, st = both("paced cpu", unit="CPU-s", digits=1)
    tcs, sts = both("paced share", unit="of a core", digits=3)
    tss, sss = both("paced stream share", unit="of a core", digits=3)
    tcp, stp = both("paced p95", unit="ms", scale=1e3, digits=0)
    tcm, stm = both("paced p50", unit="ms", scale=1e3, digits=0)
    share = median(results, "paced stream share termchat")
    p95 = median(results, "paced p95 termchat")
    rows.append((f"same reply at ~{RATE:g} chunks/s: CPU from Enter to `done`; share of a core "
                 "from Enter, and over the stream alone (its first mark on screen to `done`); "
                 "p95 chunk-to-screen (10 ms polls)",
                 failed("paced termchat", f"{tc}; {tcs}; stream {tss}; p95 {tcp} "
                        f"(median {tcm})"),
                 failed("paced stock", f"{st}; {sts}; stream {sss}; p95 {stp} (median {stm})"),
                 f"the SDK alone: {cell(r.get('paced floor cpu'), 'CPU-s', digits=1)}, "
                 f"{cell(r.get('paced floor share'), 'of a core', digits=3)}; as termchat "
                 f"reads it: {cell(r.get('paced floor dicts cpu'), 'CPU-s', digits=1)}, "
                 f"{cell(r.get('paced floor dicts share'), 'of a core', digits=3)}",
                 "≤ 0.15 of a core over the stream, p95 ≤ 50 ms",
                 "yes" if share is not None and p95 is not None and share <= 0.15
                 and p95 <= 0.05 else "no" if share is not None else "–"))
    for exchanges in sizes.exchanges:
        key = f"continue {exchanges}"
        rows.append((f"`termchat -c` on {exchanges} exchanges of 8 KB replies → last reply and "
                     "status on screen (from process start)", failed(key, cell(r.get(key))),
                     "–", "", "≤ 0.5 s, flat in conversation length",
                     met(median(results, key), 0.5)))
    rows.append((f"opening the history browser (Ctrl+R) on {sizes.conversations:,} "
                 "conversations → list on screen",
                 failed("history", cell(r.get("history"), "ms", 1e3, 0)), "–", "", "≤ 150 ms",
                 met(median(results, "history"), 0.15)))
    keys = results.rows.get("history key")
    p95_key = sorted(keys)[int(0.95 * (len(keys) - 1))] if keys else None
    rows.append((f"searching it, typed a key every {KEY_GAP * 1e3:.0f} ms: each key → shown in "
                 "the search box (p95 of every key); the last key → the conversations found, "
                 "listed (its debounce included)",
                 failed("history key", (f"p95 {p95_key * 1e3:.0f} ms" if p95_key else "–")
                        + f" (median {cell(keys, 'ms', 1e3, 0)}); found "
                        f"{cell(r.get('history found'), 'ms', 1e3, 0)}"), "–", "",
                 "≤ 50 ms per keystroke", met(p95_key, 0.05)))
    lines = []
    for index, row in enumerate(rows):
        lines.append("| " + " | ".join(row) + " |")
        if index == 0:
            lines.append("|" + "---|" * len(row))
    return lines


# -- the run --------------------------------------------------------------------------------

def versions() -> str:
    from importlib.metadata import version

    tmux = subprocess.run(["tmux", "-V"], capture_output=True, text=True).stdout.strip()
    return (f"Python {platform.python_version()}, textual {version('textual')}, openai "
            f"{version('openai')}, {tmux}, {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small run of each")
    parser.add_argument("--runs", type=int, help="runs of each quick row")
    parser.add_argument("--slow-runs", type=int,
                        help="runs of each paced row and of stock at full speed")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement")
    parser.add_argument("--skip", action="append", default=[],
                        choices=("stock", "full", "paced", "continued"),
                        help="leave out stock Textual, or a group of rows (repeatable), for "
                        "a quicker look at one row")
    parser.add_argument("--floor", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor-paced", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        print(json.dumps(measure_floor(*args.floor)))
        return
    if args.floor_paced:
        print(json.dumps(measure_floor_paced(int(args.floor_paced[0]),
                                             float(args.floor_paced[1]),
                                             args.floor_paced[2] == "dicts")))
        return
    if shutil.which("tmux") is None:
        sys.exit("bench_terminal: tmux is not installed")
    if not TERMCHAT.exists():
        sys.exit(f"bench_terminal: no installed termchat at {TERMCHAT} (pip install -e .)")

    # termchat's bytecode written first, as an installed package has it (not a compile on the
    # first timed start).
    compileall.compile_dir(Path(termchat.__file__).parent, quiet=1)
    sizes = QUICK if args.quick else FULL
    sizes.runs = args.runs or sizes.runs
    sizes.slow_runs = args.slow_runs or sizes.slow_runs
    began = time.monotonic()
    load_before = loadavg()
    print(f"{versions()}; load average {load_before}")
    results = Results()
    reply_seconds = sizes.reply[1] / RATE
    with tempfile.TemporaryDirectory(prefix="bench-terminal-") as scratch, \
            provider_double(sizes.reply) as base_url:
        home = Path(scratch)
        env = environment(home / "home", base_url)
        conversations = {}
        for exchanges in sizes.exchanges:
            data_dir = home / f"continue-{exchanges}"
            conversations[exchanges] = (data_dir, *conversation_db(data_dir, exchanges))
        browse_dir = home / "browse"
        (browse_dir / "termchat").mkdir(parents=True)
        shutil.copy(history_db(sizes.conversations), browse_dir / "termchat" / "history.db")
        title = newest_title(browse_dir)
        tmux = Tmux(env, WIDTH, HEIGHT)
        try:
            stock = "stock" not in args.skip
            for run in range(max(sizes.runs, sizes.slow_runs) * ("full" not in args.skip)):
                print(f"full speed, run {run + 1} (load {loadavg()})", flush=True)
                if run < sizes.runs:
                    results.run("termchat at full speed", full_speed, tmux, "termchat",
                                base_url, limit=120)
                    floor(env, results)
                if run < sizes.slow_runs and stock:
                    results.run("stock at full speed", full_speed, tmux, "stock", base_url,
                                limit=180)
            for run in range(sizes.slow_runs * ("paced" not in args.skip)):
                print(f"paced, run {run + 1} (load {loadavg()})", flush=True)
                # The SDK's own CPU on the same pace, alongside the first paced run (stock's,
                # or termchat's without it): two processes on their own, children not counted.
                results.run("termchat paced", paced, tmux, "termchat", base_url,
                            limit=reply_seconds + 120,
                            floor_env=env if run == 0 and not stock else None)
                if stock:
                    results.run("stock paced", paced, tmux, "stock", base_url,
                                limit=reply_seconds + 180,
                                floor_env=env if run == 0 else None)
            print(f"-c and history browser (load {loadavg()})", flush=True)
            for _ in range(sizes.runs * ("continued" not in args.skip)):
                for exchanges, (data_dir, end, out) in conversations.items():
                    key = f"continue {exchanges}"
                    results.run(key, continued, tmux, data_dir, end, out, key)
                results.run("history", history_browser, tmux, browse_dir, title)
        finally:
            tmux.close()
    print()
    print(f"tmux {WIDTH}x{HEIGHT}, {versions()}; load average before {load_before}, after "
          f"{loadavg()}; {time.monotonic() - began:.0f} s in all")
    print("\n".join(table(results, sizes)))
    cpu_first = cell(results.rows.get("first cpu termchat"), "CPU-s")
    cpu_stock = cell(results.rows.get("first cpu stock"), "CPU-s")
    print(f"\nCPU of the first full-speed send: termchat {cpu_first}, stock {cpu_stock}")
    for line in results.repeated:
        print(f"run again, its app having ended mid-run: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": results.rows,
                                               "failures": results.failures}, indent=1))


if __name__ == "__main__":
    main()
