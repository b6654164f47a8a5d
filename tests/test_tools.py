"""The tools runtime against real MCP servers over real stdio and streamable HTTP: start-up in
the background, calls and every way they end, failing and dying servers, clean shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from termchat.content import ToolCall, ToolOutcome
from termchat.tools import stdio as stdio_module
from termchat.tools.box import ResolvedCall, ServerStatus, ToolBox
from termchat.tools.config import ServerConfig, ToolSelection
from termchat.tools.servers import ServerState
from tests.support.mcp_server import PNG
from tests.support.tools import (
    TOKEN,
    Events,
    HttpServer,
    alive,
    group_alive,
    http_server,
    script_server,
    time_server,
)

# The servers of `shared` take about a second to start; the tests that only call tools share
# them (and this module's event loop).
pytestmark = pytest.mark.asyncio(loop_scope="module")

TEST_TOOLS = {"echo", "add", "sleep", "fail", "flood", "picture", "getenv", "crash", "grow",
              "dotted.name"}


def call(name: str, arguments: object = None, raw: str | None = None) -> ToolCall:
    text = raw if raw is not None else json.dumps(arguments if arguments is not None else {})
    return ToolCall(id=f"call_{name}", name=name, arguments=text)


def box_of(tmp: Path, *servers: ServerConfig, **environ: str) -> ToolBox:
    return ToolBox(servers, log_dir=tmp / "logs", environ={**os.environ, **environ})


@dataclass
class Shared:
    box: ToolBox
    events: Events
    http: HttpServer
    logs: Path


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    with http_server(tmp_path_factory.mktemp("http") / "events") as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(web: HttpServer, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[Shared]:
    tmp = tmp_path_factory.mktemp("shared")
    events = tmp / "events"
    box = box_of(tmp, script_server("t", events=events, timeout=20),
                 ServerConfig("web", url=web.url, token_env="TEST_TOKEN"), time_server(),
                 TEST_TOKEN=TOKEN)
    await box.wait_ready()
    yield Shared(box, Events(events), web, tmp / "logs")
    await box.aclose()


# --- Start-up and listing ----------------------------------------------------------------


async def test_servers_start_in_the_background_and_list_their_tools(tmp_path: Path,
                                                                  web: HttpServer) -> None:
    box = box_of(tmp_path, script_server("t"), ServerConfig("web", url=web.url,
                 headers={"Authorization": f"Bearer {TOKEN}"}), time_server())
    seen: list[ServerStatus] = []
    box.subscribe(seen.append)
    box.start()
    # start() only created the tasks: nothing has run yet, so the caller was not delayed.
    assert [s.state for s in box.statuses()] == [ServerState.STARTING] * 3
    assert box.tools() == []
    await box.wait_ready()
    try:
        assert [s.state for s in box.statuses()] == [ServerState.READY] * 3
        assert {s.name for s in seen} == {"t", "web", "time"}
        by_server = {s.name: {spec.tool for spec in s.tools} for s in box.statuses()}
        assert by_server == {"t": TEST_TOOLS, "web": TEST_TOOLS,
                             "time": {"get_current_time", "convert_time"}}
        echo = next(spec for spec in box.tools() if spec.name == "t__echo")
        assert (echo.server, echo.tool, echo.summary) == ("t", "echo", "Return the text unchanged.")
        assert echo.input_schema["properties"]["text"]["type"] == "string"
        assert "t__dotted_name" in {spec.name for spec in box.tools()}
        statuses = {s.name: s for s in box.statuses()}
        assert statuses["t"].transport == "stdio" and statuses["web"].transport == "http"
        assert statuses["t"].line == "MCP server 't' is ready (10 tools)."
    finally:
        await box.aclose()
    assert [s.state for s in box.statuses()] == [ServerState.STOPPED] * 3


async def test_a_model_sees_only_the_tools_its_selection_allows(shared: Shared) -> None:
    only = ToolSelection(servers=frozenset({"time"}), tools=frozenset({("t", "echo")}))
    assert {spec.name for spec in shared.box.tools(only)} == \
        {"time__get_current_time", "time__convert_time", "t__echo"}
    assert shared.box.tools(ToolSelection(servers=frozenset())) == []


async def test_a_call_waits_for_its_server_to_finish_starting(tmp_path: Path) -> None:
    box = box_of(tmp_path, script_server("t"))
    box.start()
    try:
        result = await box.call(call("t__echo", {"text": "early"}))
        assert (result.outcome, result.content) == (ToolOutcome.OK, "early")
    finally:
        await box.aclose()


async def test_a_disabled_server_is_listed_but_never_started(tmp_path: Path) -> None:
    box = box_of(tmp_path, script_server("off", enabled=False))
    await box.wait_ready()
    status = box.status("off")
    assert (status.state, status.pid, status.line) == \
        (ServerState.DISABLED, None, "MCP server 'off' is disabled in the config.")
    result = await box.call(call("off__echo", {"text": "x"}))
    assert (result.outcome, result.content) == (ToolOutcome.UNAVAILABLE, (
        "The MCP server 'off' is disabled in the config; its tools cannot be used now."))
    await box.aclose()
    assert not (tmp_path / "logs").exists()
    empty = box_of(tmp_path)
    await empty.wait_ready()
    assert (empty.statuses(), empty.tools()) == ([], [])
    await empty.aclose()


# --- Calls -------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["t", "web"])
async def test_echo_and_add(shared: Shared, server: str) -> None:
    echo = await shared.box.call(call(f"{server}__echo", {"text": "héllo\nworld"}))
    assert (echo.outcome, echo.is_error, echo.content) == (ToolOutcome.OK, False, "héllo\nworld")
    assert echo.call_id == f"call_{server}__echo"
    added = await shared.box.call(call(f"{server}__add", {"a": 2, "b": 40}))
    assert (added.outcome, added.content) == (ToolOutcome.OK, "42")


async def test_mcp_server_time_tells_the_time(shared: Shared) -> None:
    result = await shared.box.call(call("time__get_current_time", {"timezone": "Asia/Tokyo"}))
    assert result.outcome is ToolOutcome.OK
    answer = json.loads(result.content)
    assert answer["timezone"] == "Asia/Tokyo" and answer["datetime"].endswith("+09:00")
    bad = await shared.box.call(call("time__get_current_time", {"timezone": "Mars/Olympus"}))
    assert (bad.outcome, bad.is_error) == (ToolOutcome.ERROR, True)
    assert "Mars/Olympus" in bad.content


async def test_parallel_calls_to_one_server_do_not_wait_for_each_other(shared: Shared) -> None:
    slow = asyncio.create_task(shared.box.call(call("t__sleep", {"seconds": 1.5})))
    fast = await shared.box.call(call("t__echo", {"text": "first"}))
    assert fast.content == "first" and not slow.done()
    assert (await slow).content == "slept 1.5"


async def test_invalid_json_arguments_are_an_invalid_result_for_the_model(shared: Shared) -> None:
    for raw, why in [('{"text": "unfinished', "invalid JSON"), ('["a list"]', "got an array"),
                     ('"text"', "got a string")]:
        result = await shared.box.call(call("t__echo", raw=raw))
        assert (result.outcome, result.is_error) == (ToolOutcome.INVALID, True)
        assert f"The arguments for 't__echo' are not a JSON object ({why}" in result.content
        assert "JSON object that matches its input schema" in result.content
    # No arguments at all is an empty object, which a tool without parameters accepts.
    assert (await shared.box.call(call("t__picture", raw=""))).outcome is ToolOutcome.OK


async def test_arguments_the_server_rejects_are_an_error_result(shared: Shared) -> None:
    result = await shared.box.call(call("t__add", {"a": "two", "b": 2}))
    assert (result.outcome, result.is_error) == (ToolOutcome.ERROR, True)
    assert "a" in result.content


async def test_unknown_tool_is_unavailable_and_names_the_tools_there_are(shared: Shared) -> None:
    result = await shared.box.call(call("t__nope"))
    assert (result.outcome, result.is_error) == (ToolOutcome.UNAVAILABLE, True)
    assert result.content.startswith("There is no tool named 't__nope'. Available tools: ")
    assert "t__echo" in result.content and "time__convert_time" in result.content


async def test_resolve_gives_the_tool_and_pretty_arguments_for_approval(shared: Shared) -> None:
    resolved = await shared.box.resolve(call("web__add", {"a": 1, "b": 2}))
    assert isinstance(resolved, ResolvedCall)
    assert (resolved.spec.server, resolved.spec.tool) == ("web", "add")
    assert resolved.pretty_arguments() == '{\n  "a": 1,\n  "b": 2\n}'
    assert (await shared.box.call(resolved)).content == "3"


async def test_a_failing_tool_is_an_error_result_with_its_message(shared: Shared) -> None:
    result = await shared.box.call(call("t__fail", {"message": "disk on fire"}))
    assert (result.outcome, result.is_error) == (ToolOutcome.ERROR, True)
    assert "disk on fire" in result.content


async def test_images_are_described_in_a_line(shared: Shared) -> None:
    result = await shared.box.call(call("t__picture"))
    assert result.content == f"a tiny picture\n[image/png, {len(PNG):,} bytes]"


@pytest.mark.parametrize("server", ["t", "web"])
async def test_a_large_result_is_capped_and_the_cut_is_stated(shared: Shared, server: str) -> None:
    result = await shared.box.call(call(f"{server}__flood", {"n": 50_000}))
    assert result.outcome is ToolOutcome.OK
    kept, note = result.content.rsplit("\n", 1)
    assert kept == "x" * 20_000
    assert note == "[termchat: the result was 50,000 characters; only the first 20,000 are shown]"


@pytest.mark.parametrize("server", ["t", "web"])
async def test_a_flood_over_the_message_limit_is_dropped_and_the_server_goes_on(
        shared: Shared, server: str) -> None:
    # 5 M characters arrive twice (text and structured content): 10 MB, over the 4 MiB limit.
    result = await shared.box.call(call(f"{server}__flood", {"n": 5_000_000}))
    assert (result.outcome, result.is_error) == (ToolOutcome.ERROR, True)
    assert len(result.content) < 500
    assert "4,194,304" in result.content or "4194304" in result.content
    assert (await shared.box.call(call(f"{server}__echo", {"text": "still here"}))).content == \
        "still here"


async def test_tools_are_listed_again_when_the_server_says_they_changed(tmp_path: Path) -> None:
    box = box_of(tmp_path, script_server("t"))
    changes: list[ServerStatus] = []
    box.subscribe(changes.append)
    await box.wait_ready()
    try:
        assert "t__grown" not in {spec.name for spec in box.tools()}
        assert (await box.call(call("t__grow"))).content == "grown"
        async with asyncio.timeout(10):
            while "t__grown" not in {spec.name for spec in box.tools()}:
                await asyncio.sleep(0.02)
        assert (await box.call(call("t__grown"))).content == "hello from grown"
        assert any("grown" in {spec.tool for spec in status.tools} for status in changes)
    finally:
        await box.aclose()


# --- Timeouts and cancellation -------------------------------------------------------------


async def test_a_call_that_runs_too_long_times_out_and_is_cancelled_on_the_server(
        tmp_path: Path) -> None:
    events = Events(tmp_path / "events")
    box = box_of(tmp_path, script_server("t", events=events.path, timeout=0.5))
    await box.wait_ready()
    try:
        events.mark()
        result = await box.call(call("t__sleep", {"seconds": 30}))
        assert (result.outcome, result.is_error) == (ToolOutcome.TIMEOUT, True)
        assert result.content == "The tool 'sleep' did not finish within 0.5 s and was cancelled."
        started = await events.wait("sleep-start")
        await events.wait(started.replace("start", "cancelled"))
    finally:
        await box.aclose()


@pytest.mark.parametrize("server", ["t", "web"])
async def test_cancelling_the_caller_cancels_the_call_on_the_server(shared: Shared,
                                                                    server: str) -> None:
    events = shared.events if server == "t" else Events(shared.http.events)
    events.mark()
    running = asyncio.create_task(shared.box.call(call(f"{server}__sleep", {"seconds": 30})))
    started = await events.wait("sleep-start")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    # The server saw notifications/cancelled and interrupted the tool.
    await events.wait(started.replace("start", "cancelled"))
    assert not any(line.startswith("sleep-done") for line in events.lines()[events.seen:])
    assert (await shared.box.call(call(f"{server}__echo", {"text": "ok"}))).content == "ok"


# --- Servers that fail -------------------------------------------------------------------


async def test_servers_that_fail_to_start_give_one_sentence_each_and_the_rest_go_on(
        tmp_path: Path) -> None:
    box = box_of(
        tmp_path,
        ServerConfig("typo", command="mcp-server-tiem"),
        script_server("quits", "--fail-start", "no such database: notes.db"),
        script_server("hangs", "--hang-start", startup_timeout=1),
        script_server("nowhere", cwd=str(tmp_path / "missing")),
        ServerConfig("noport", url="http://127.0.0.1:9/mcp"),
        script_server("good"))
    seen: list[str] = []
    box.subscribe(lambda status: seen.append(status.line))
    await box.wait_ready()
    try:
        lines = {s.name: s.line for s in box.statuses()}
        assert lines == {
            "typo": "MCP server 'typo' failed to start: command not found: mcp-server-tiem.",
            "quits": "MCP server 'quits' failed to start: exited with status 3 "
                     "(no such database: notes.db).",
            "hangs": "MCP server 'hangs' failed to start: no answer within 1 s "
                     "(startup_timeout).",
            "nowhere": f"MCP server 'nowhere' failed to start: no such directory: "
                       f"{tmp_path / 'missing'} (cwd).",
            "noport": "MCP server 'noport' failed to start: cannot connect to "
                      "http://127.0.0.1:9/mcp.",
            "good": "MCP server 'good' is ready (10 tools).",
        }
        assert set(seen) == set(lines.values())
        assert (await box.call(call("good__echo", {"text": "fine"}))).content == "fine"
        result = await box.call(call("quits__echo", {"text": "x"}))
        assert result.outcome is ToolOutcome.UNAVAILABLE
        assert result.content == ("The MCP server 'quits' failed to start: exited with status 3 "
                                  "(no such database: notes.db); its tools cannot be used now.")
    finally:
        await box.aclose()
    pids = [s.pid for s in box.statuses() if s.pid is not None]
    assert len(pids) == 3 and not any(alive(pid) or group_alive(pid) for pid in pids)


async def test_a_server_that_crashes_mid_call_fails_alone(tmp_path: Path) -> None:
    box = box_of(tmp_path, script_server("fragile"), script_server("sturdy"))
    await box.wait_ready()
    try:
        pid = box.status("fragile").pid
        assert pid is not None
        result = await box.call(call("fragile__crash"))
        assert (result.outcome, result.is_error) == (ToolOutcome.UNAVAILABLE, True)
        assert result.content == ("The MCP server 'fragile' stopped during the call; its tools "
                                  "are unavailable.")
        async with asyncio.timeout(10):
            while box.status("fragile").state is not ServerState.FAILED:
                await asyncio.sleep(0.02)
        assert box.status("fragile").line == ("MCP server 'fragile' stopped working: exited "
                                              "with status 3 (crashing on purpose).")
        assert not alive(pid)
        later = await box.call(call("fragile__echo", {"text": "x"}))
        assert later.outcome is ToolOutcome.UNAVAILABLE and "exited with status 3" in later.content
        assert {spec.server for spec in box.tools()} == {"sturdy"}
        assert (await box.call(call("sturdy__echo", {"text": "on"}))).content == "on"
    finally:
        await box.aclose()


async def test_an_http_server_that_goes_away_fails_with_a_sentence(tmp_path: Path) -> None:
    with http_server(tmp_path / "events", token=None) as server:
        box = box_of(tmp_path, ServerConfig("web", url=server.url), script_server("local"))
        await box.wait_ready()
        server.process.kill()
        server.process.wait()
    try:
        result = await box.call(call("web__echo", {"text": "anyone?"}))
        assert (result.outcome, result.is_error) == (ToolOutcome.UNAVAILABLE, True)
        async with asyncio.timeout(10):
            while box.status("web").state is not ServerState.FAILED:
                await asyncio.sleep(0.02)
        assert box.status("web").line == (f"MCP server 'web' stopped working: cannot connect "
                                          f"to {server.url}.")
        assert (await box.call(call("local__echo", {"text": "here"}))).content == "here"
    finally:
        await box.aclose()


# --- HTTP credentials --------------------------------------------------------------------


async def test_the_token_from_env_or_command_reaches_the_http_server(
        tmp_path: Path, web: HttpServer) -> None:
    (tmp_path / "token").write_text(f"{TOKEN}\n")
    box = box_of(
        tmp_path,
        ServerConfig("from_env", url=web.url, token_env="MY_TOKEN"),
        ServerConfig("from_cmd", url=web.url, token_cmd=f"cat {tmp_path / 'token'}"),
        ServerConfig("none", url=web.url),
        ServerConfig("wrong", url=web.url, token_cmd="echo not-the-token"),
        ServerConfig("unset", url=web.url, token_env="NOT_SET_ANYWHERE"),
        ServerConfig("cmd_fails", url=web.url, token_cmd="false"),
        MY_TOKEN=TOKEN)
    await box.wait_ready()
    try:
        lines = {s.name: s.line for s in box.statuses()}
        refused = ("failed to start: the server refused the credentials (HTTP 401); check "
                   "token_env / token_cmd or headers.")
        assert lines == {
            "from_env": "MCP server 'from_env' is ready (10 tools).",
            "from_cmd": "MCP server 'from_cmd' is ready (10 tools).",
            "none": f"MCP server 'none' {refused}",
            "wrong": f"MCP server 'wrong' {refused}",
            "unset": "MCP server 'unset' failed to start: token_env names NOT_SET_ANYWHERE, "
                     "which is not set.",
            "cmd_fails": "MCP server 'cmd_fails' failed to start: token_cmd exited with 1.",
        }
        assert (await box.call(call("from_cmd__echo", {"text": "authorised"}))).content == \
            "authorised"
    finally:
        await box.aclose()


# --- The environment, logs and the terminal ------------------------------------------------


async def test_a_stdio_server_gets_a_safe_environment_and_what_the_config_adds(
        tmp_path: Path) -> None:
    box = box_of(tmp_path, script_server("t", env={"SETTING": "from-config"},
                                         pass_env=("PASSED_KEY",)),
                 OPENAI_API_KEY="sk-secret", ANTHROPIC_API_KEY="sk-ant", GITHUB_TOKEN="ghp",
                 PASSED_KEY="passed", LANG="pl_PL.UTF-8", LC_TIME="C", TZ="Europe/Warsaw")

    async def getenv(name: str) -> str:
        return (await box.call(call("t__getenv", {"name": name}))).content

    await box.wait_ready()
    try:
        for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GITHUB_TOKEN"):
            assert await getenv(secret) == "(unset)"
        assert await getenv("PASSED_KEY") == "passed"
        assert await getenv("SETTING") == "from-config"
        assert (await getenv("LANG"), await getenv("LC_TIME"), await getenv("TZ")) == \
            ("pl_PL.UTF-8", "C", "Europe/Warsaw")
        assert await getenv("PATH") == os.environ["PATH"]
    finally:
        await box.aclose()


async def test_server_stderr_and_sdk_logs_go_to_log_files_not_the_terminal(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    box = box_of(tmp_path, script_server("t"), script_server("quits", "--fail-start", "bye"))
    await box.wait_ready()
    try:
        await box.call(call("t__fail", {"message": "logged elsewhere"}))
    finally:
        await box.aclose()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    log = (tmp_path / "logs" / "mcp-t.log").read_text()
    assert "termchat starts MCP server 't'" in log and "logged elsewhere" in log
    assert "bye" in (tmp_path / "logs" / "mcp-quits.log").read_text()
    assert "MCP server 'quits' failed to start" in (tmp_path / "logs" / "mcp.log").read_text()


async def test_a_log_grown_past_its_limit_is_set_aside_at_start(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "mcp-t.log").write_text("old\n" * 300_000)
    box = box_of(tmp_path, script_server("t"))
    await box.wait_ready()
    await box.aclose()
    assert (logs / "mcp-t.log.1").stat().st_size == 1_200_000
    assert (logs / "mcp-t.log").stat().st_size < 100_000


# --- Inside a Textual app ----------------------------------------------------------------


async def test_the_box_runs_in_textuals_loop_and_workers_call_its_tools(tmp_path: Path) -> None:
    from textual.app import App
    from textual.worker import WorkerCancelled

    events = Events(tmp_path / "events")

    class Host(App[None]):
        def on_mount(self) -> None:
            self.box = box_of(tmp_path, script_server("t", events=events.path))
            self.box.start()

    app = Host()
    async with app.run_test():
        await app.box.wait_ready()
        worker = app.run_worker(app.box.call(call("t__add", {"a": 1, "b": 1})))
        await worker.wait()
        assert worker.result is not None and worker.result.content == "2"
        sleeper = app.run_worker(app.box.call(call("t__sleep", {"seconds": 30})))
        started = await events.wait("sleep-start")
        sleeper.cancel()
        with pytest.raises(WorkerCancelled):
            await sleeper.wait()
        await events.wait(started.replace("start", "cancelled"))
        assert (await app.box.call(call("t__echo", {"text": "then"}))).content == "then"
        await app.box.aclose()


APP_THAT_EXITS = """
import json, sys
from pathlib import Path
from textual.app import App
from termchat.tools.box import ToolBox
from tests.support.tools import script_server, time_server

class Host(App[None]):
    def on_mount(self) -> None:
        self.box = ToolBox([script_server("t"), time_server()], log_dir=Path(sys.argv[1]))
        self.box.start()
        self.run_worker(self.ready())

    async def ready(self) -> None:
        await self.box.wait_ready()
        print(json.dumps([s.pid for s in self.box.statuses()]), flush=True)
        self.exit()  # without aclose()

Host().run(headless=True)
"""


async def test_an_app_that_exits_without_aclose_leaves_no_server_behind(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP_THAT_EXITS)
    root = Path(__file__).resolve().parent.parent
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(tmp_path / "logs"), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    pids = json.loads(out.decode().splitlines()[0])
    assert len(pids) == 2 and all(isinstance(pid, int) for pid in pids)
    assert not any(alive(pid) or group_alive(pid) for pid in pids)


# --- Shutdown ----------------------------------------------------------------------------


async def test_aclose_leaves_no_server_process_behind(tmp_path: Path, web: HttpServer) -> None:
    box = box_of(tmp_path, script_server("a"), script_server("b"), time_server(),
                 ServerConfig("web", url=web.url, token_env="T"), T=TOKEN)
    await box.wait_ready()
    pids = [s.pid for s in box.statuses() if s.transport == "stdio"]
    assert len(pids) == 3 and all(pid is not None and alive(pid) for pid in pids)
    busy = asyncio.create_task(box.call(call("a__sleep", {"seconds": 30})))
    await asyncio.sleep(0.2)
    await box.aclose()
    assert not any(alive(pid) or group_alive(pid) for pid in pids if pid is not None)
    result = await busy
    assert result.outcome is ToolOutcome.UNAVAILABLE


async def test_a_server_that_ignores_eof_and_sigterm_is_killed_in_bounded_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real graces are 2 s each; shorter ones keep the test quick and prove the escalation.
    monkeypatch.setattr(stdio_module, "EXIT_GRACE", 0.3)
    monkeypatch.setattr(stdio_module, "TERM_GRACE", 0.3)
    events = Events(tmp_path / "events")
    box = box_of(tmp_path, script_server("stubborn", "--stubborn", events=events.path))
    await box.wait_ready()
    pid = box.status("stubborn").pid
    assert pid is not None
    loop = asyncio.get_running_loop()
    began = loop.time()
    await box.aclose()
    assert loop.time() - began < 3
    assert not alive(pid)
    assert "stdin closed, staying up" in events.lines()


async def test_stopping_a_server_still_starting_ends_its_start_at_once(tmp_path: Path) -> None:
    box = box_of(tmp_path, script_server("hangs", "--hang-start", startup_timeout=30))
    box.start()
    async with asyncio.timeout(15):
        while box.status("hangs").pid is None:
            await asyncio.sleep(0.02)
    pid = box.status("hangs").pid
    assert pid is not None
    loop = asyncio.get_running_loop()
    began = loop.time()
    await box.aclose()
    assert loop.time() - began < 10
    assert box.status("hangs").state is ServerState.STOPPED
    assert not alive(pid)

