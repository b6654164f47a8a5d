"""Time the MCP tools runtime: server start-up, the event loop's longest stall meanwhile,
termchat's own overhead per tool call, and per tool round.

Each start-up is a fresh ToolBox in a fresh process (so the first one pays for importing the
SDK, in a thread); the call overhead is `ToolBox.call` against the SDK's bare
`ClientSession.call_tool` on the same echo tool, median of 50 each.

The round overhead is a whole turn through the real SDKs against the local provider server:
from the model's finish asking for a tool (the finish event reaching the turn) to the
follow-up request arriving at the server, less the tool's own run (ToolRunning to
ToolFinished). Beside it, the floor: the bare SDK sending a request to the same server.

    .venv/bin/python bench/bench_tools.py            # 5 start-ups per server
    .venv/bin/python bench/bench_tools.py --quick    # 2, for a CI smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.tools import http_server, script_server, time_server  # noqa: E402

from termchat.content import ToolCall  # noqa: E402
from termchat.tools.box import ToolBox  # noqa: E402

CALLS = 50


async def start_once(which: str, log_dir: Path) -> dict[str, float]:
    """Start one server in a fresh box; how long until ready, and the loop's longest stall."""
    server = script_server("t") if which == "test" else time_server()
    stall = 0.0
    done = False

    async def watch() -> None:
        nonlocal stall
        while not done:
            began = time.perf_counter()
            await asyncio.sleep(0.005)
            stall = max(stall, time.perf_counter() - began - 0.005)

    watcher = asyncio.create_task(watch())
    began = time.perf_counter()
    box = ToolBox([server], log_dir=log_dir)
    box.start()
    returned = time.perf_counter() - began
    await box.wait_ready()
    ready = time.perf_counter() - began
    done = True
    await watcher
    status = box.statuses()[0]
    closing = time.perf_counter()
    await box.aclose()
    closed = time.perf_counter() - closing
    assert status.state.value == "ready", status.line
    # Again in the same process: the server's own start-up, the SDK being imported already.
    began = time.perf_counter()
    async with ToolBox([server], log_dir=log_dir) as again:
        await again.wait_ready()
        warm = time.perf_counter() - began
    return {"start_returns_ms": returned * 1000, "ready_ms": ready * 1000,
            "warm_ms": warm * 1000, "stall_ms": stall * 1000, "close_ms": closed * 1000}


async def call_overhead(log_dir: Path) -> dict[str, float]:
    """Median ToolBox.call and bare ClientSession.call_tool for echo, stdio and HTTP."""
    with http_server(log_dir / "events", token=None) as web:
        from termchat.tools.config import ServerConfig

        box = ToolBox([script_server("t"), ServerConfig("web", url=web.url)], log_dir=log_dir)
        await box.wait_ready()
        figures: dict[str, float] = {}
        try:
            for server in ("t", "web"):
                call = ToolCall("c", f"{server}__echo", json.dumps({"text": "hello"}))
                connection = box._servers[server]
                session = connection._session
                assert session is not None
                box_times, sdk_times = [], []
                for _ in range(CALLS + 5):
                    began = time.perf_counter()
                    await box.call(call)
                    box_times.append(time.perf_counter() - began)
                    began = time.perf_counter()
                    await session.call_tool("echo", {"text": "hello"})
                    sdk_times.append(time.perf_counter() - began)
                # The first few calls warm up caches on both sides.
                figures[f"{server}_box_ms"] = statistics.median(box_times[5:]) * 1000
                figures[f"{server}_sdk_ms"] = statistics.median(sdk_times[5:]) * 1000
        finally:
            await box.aclose()
        return figures


ROUNDS = 40


async def round_overhead(log_dir: Path) -> dict[str, float]:
    """Median per-round overhead of a tool turn, and the bare SDK's request floor, per provider."""
    from tests.support.models import model_for

    from termchat.devserver import ProviderServer, Script
    from termchat.devserver import ToolCall as ScriptedCall
    from termchat.events import Event, Finish, ToolFinished, ToolRunning
    from termchat.tools.policy import ApprovalPolicy, Choice
    from termchat.tools.runner import ToolRunner
    from termchat.turn import Conversation

    async def never_asked(call: object) -> Choice:
        raise AssertionError("--yes: nothing is asked")

    figures: dict[str, float] = {}
    box = ToolBox([script_server("t")], log_dir=log_dir)
    await box.wait_ready()
    try:
        with ProviderServer() as server:
            for provider in ("openai", "anthropic"):
                chat = Conversation(model_for(server, provider))
                chat.tools = ToolRunner(box, ApprovalPolicy({}, yes=True), never_asked,
                                        max_rounds=4)
                overheads, tool_runs = [], []
                for _ in range(ROUNDS + 5):
                    server.queue(Script(text="Checking.", tool_calls=[
                        ScriptedCall("t__echo", '{"text": "hello"}')]), Script(text="Done."))
                    marks: dict[str, float] = {}

                    def mark(event: Event, marks: dict[str, float] = marks) -> None:
                        name = {Finish: "finish", ToolRunning: "running",
                                ToolFinished: "finished"}.get(type(event))
                        if name is not None:
                            marks.setdefault(name, time.monotonic())

                    chat.exchanges.clear()
                    await chat.send("echo hello", mark)
                    arrived = server.requests[-1].received_at
                    tool = marks["finished"] - marks["running"]
                    overheads.append(arrived - marks["finish"] - tool)
                    tool_runs.append(tool)
                floor = await _sdk_floor(server, provider)
                await chat.aclose()
                figures[f"{provider}_round_ms"] = statistics.median(overheads[5:]) * 1000
                figures[f"{provider}_round_p90_ms"] = sorted(overheads[5:])[
                    int(ROUNDS * 0.9)] * 1000
                figures[f"{provider}_tool_ms"] = statistics.median(tool_runs[5:]) * 1000
                figures[f"{provider}_floor_ms"] = floor * 1000
    finally:
        await box.aclose()
    return figures


async def _sdk_floor(server: object, provider: str) -> float:
    """Median time for the bare SDK to get a streaming request to the server."""
    from termchat.devserver import ProviderServer, Script

    assert isinstance(server, ProviderServer)
    times = []
    if provider == "openai":
        import openai

        oa = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="sk-bench",
                                max_retries=0)
        for _ in range(ROUNDS + 5):
            server.queue(Script(text="x"))
            began = time.monotonic()
            stream = await oa.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
            times.append(server.requests[-1].received_at - began)
            async for _chunk in stream:
                pass
        await oa.close()
    else:
        import anthropic

        an = anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="sk-bench",
                                      max_retries=0)
        for _ in range(ROUNDS + 5):
            server.queue(Script(text="x"))
            began = time.monotonic()
            async with an.messages.stream(model="m", max_tokens=64, messages=[
                    {"role": "user", "content": "hi"}]) as stream:
                times.append(server.requests[-1].received_at - began)
                async for _event in stream:
                    pass
        await an.close()
    return statistics.median(times[5:])


async def tui_round_overhead(log_dir: Path) -> dict[str, float]:
    """The round overhead as above, in the TUI (headless Textual, a trusted server, nothing
    asked): the blocks, the next segment and the status bar drawn on the way. And how long
    an approval takes to be on screen: the finish asking for a tool to the dialog painted."""
    import os

    os.environ["XDG_DATA_HOME"] = str(log_dir)
    from tests.support.models import model_for

    from termchat.config import Config
    from termchat.devserver import ProviderServer, Script
    from termchat.devserver import ToolCall as ScriptedCall
    from termchat.events import Event, Finish, ToolFinished, ToolRunning
    from termchat.tools.config import ToolsConfig
    from termchat.tui.app import TermchatApp

    figures: dict[str, float] = {}
    with ProviderServer() as server:
        for provider in ("openai", "anthropic"):
            for trusted in (True, False):
                config = Config(path=Path("/nonexistent"), tools=ToolsConfig(
                    servers={"t": script_server("t", trust=trusted)}))
                app = TermchatApp(config, model_for(server, provider), cursor_blink=False,
                                  show_timings=False)
                marks: dict[str, float] = {}

                def mark(event: Event, marks: dict[str, float] = marks) -> None:
                    name = {Finish: "finish", ToolRunning: "running",
                            ToolFinished: "finished"}.get(type(event))
                    if name is not None:
                        marks.setdefault(name, time.monotonic())

                times: list[float] = []
                async with app.run_test(size=(100, 40)) as pilot:
                    app.chat.event_hook = mark
                    for _ in range(ROUNDS + 5):
                        server.queue(Script(text="Checking.", tool_calls=[
                            ScriptedCall("t__echo", '{"text": "hello"}')]), Script(text="Done."))
                        marks.clear()
                        app.chat.conversation.exchanges.clear()
                        prompt = app.chat.query_one("#prompt")
                        prompt.load_text("echo hello")  # type: ignore[attr-defined]
                        asked = asyncio.create_task(_painted_dialog(app))
                        await pilot.press("enter")
                        if trusted:
                            asked.cancel()
                            await app.workers.wait_for_complete()
                            arrived = server.requests[-1].received_at
                            tool = marks["finished"] - marks["running"]
                            times.append(arrived - marks["finish"] - tool)
                            continue
                        times.append(await asked - marks["finish"])
                        await pilot.press("y")
                        await app.workers.wait_for_complete()
                key = f"{provider}_{'tui_round' if trusted else 'ask'}"
                figures[f"{key}_ms"] = statistics.median(times[5:]) * 1000
                figures[f"{key}_p90_ms"] = sorted(times[5:])[int(ROUNDS * 0.9)] * 1000
    return figures


async def _painted_dialog(app: object) -> float:
    """When the approval dialog has been painted (polled apart from Pilot, whose key presses
    wait for the app to be idle)."""
    from textual.app import App

    from termchat.tui.approval import ApprovalScreen

    assert isinstance(app, App)
    while not isinstance(app.screen, ApprovalScreen):
        await asyncio.sleep(0.001)
    painted = asyncio.get_running_loop().create_future()
    app.screen.call_after_refresh(painted.set_result, None)
    await painted
    return time.monotonic()


def in_fresh_process(what: str, *args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", what, *args],
                          capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs="+")
    options = parser.parse_args()
    if options.child:
        with tempfile.TemporaryDirectory() as tmp:
            if options.child[0] == "start":
                result = asyncio.run(start_once(options.child[1], Path(tmp)))
            elif options.child[0] == "rounds":
                result = asyncio.run(round_overhead(Path(tmp)))
            elif options.child[0] == "tui":
                result = asyncio.run(tui_round_overhead(Path(tmp)))
            else:
                result = asyncio.run(call_overhead(Path(tmp)))
        print(json.dumps(result))
        return
    runs = 2 if options.quick else 5
    print(f"{'server start-up':34} {'start() ms':>10} {'ready ms':>9} {'again ms':>9} "
          f"{'max stall ms':>13} {'aclose ms':>10}")
    for which, label in (("test", "test server (stdio, MCPServer)"),
                         ("time", "mcp-server-time (stdio)")):
        rows = [in_fresh_process("start", which) for _ in range(runs)]
        median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(f"{label:34} {median['start_returns_ms']:10.2f} {median['ready_ms']:9.0f} "
              f"{median['warm_ms']:9.0f} {median['stall_ms']:13.0f} {median['close_ms']:10.0f}")
    print("(ready: first start in a fresh process, importing the SDK in a thread; again: a "
          "second start; max stall: the event loop's longest pause while the first started)")
    figures = in_fresh_process("calls")
    print(f"\n{'echo, median of ' + str(CALLS):34} {'ToolBox ms':>10} {'bare SDK ms':>12} "
          f"{'overhead ms':>12}")
    for server, label in (("t", "stdio"), ("web", "streamable HTTP")):
        box, sdk = figures[f"{server}_box_ms"], figures[f"{server}_sdk_ms"]
        print(f"{label:34} {box:10.2f} {sdk:12.2f} {box - sdk:12.2f}")
    rounds = in_fresh_process("rounds")
    print(f"\n{'tool round, median of ' + str(ROUNDS):34} {'round ms':>10} {'p90 ms':>8} "
          f"{'SDK floor ms':>13} {'termchat ms':>12} {'(tool ran ms)':>14}")
    for provider in ("openai", "anthropic"):
        total, floor = rounds[f"{provider}_round_ms"], rounds[f"{provider}_floor_ms"]
        print(f"{provider:34} {total:10.2f} {rounds[provider + '_round_p90_ms']:8.2f} "
              f"{floor:13.2f} {total - floor:12.2f} {rounds[provider + '_tool_ms']:14.2f}")
    print("(round: the model's finish asking for a tool to the follow-up request arriving, "
          "less the tool's run; target <= 20 ms median. SDK floor: a bare SDK request "
          "arriving; termchat: round less floor)")
    tui = in_fresh_process("tui")
    print(f"\n{'in the TUI, median of ' + str(ROUNDS):34} {'round ms':>10} {'p90 ms':>8} "
          f"{'asked ms':>13} {'p90 ms':>8}")
    for provider in ("openai", "anthropic"):
        print(f"{provider:34} {tui[provider + '_tui_round_ms']:10.2f} "
              f"{tui[provider + '_tui_round_p90_ms']:8.2f} {tui[provider + '_ask_ms']:13.2f} "
              f"{tui[provider + '_ask_p90_ms']:8.2f}")
    print("(round: as above, in the headless TUI with a trusted server; asked: the finish "
          "asking for a tool to the approval dialog painted)")


if __name__ == "__main__":
    main()
