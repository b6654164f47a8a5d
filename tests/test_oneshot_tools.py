"""Tools in one-shot mode, end to end: the installed `termchat` against the local provider
server (both wire formats) and real MCP servers over stdio; approval on a real controlling
terminal, or denied with how to allow it when there is none.

Most runs are scripted in `CASES` and run concurrently, each against its own provider server
and with its own MCP server processes; runs a test must interact with run in the test.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from termchat.devserver import ProviderServer, Request, Script, ToolCall
from termchat.history import HistoryStore
from termchat.tools.policy import DENIED_TEXT
from tests.support.cli import Run, environment, lines_of, run_concurrently
from tests.support.oneshot import (
    config,
    detached,
    on_controlling_terminal,
    script_server_toml,
    spawn_detached,
    time_server_toml,
)
from tests.support.tools import alive, group_alive

PROVIDERS = ("openai", "anthropic")
ECHO = ToolCall("t__echo", '{"text": "ping"}')
FINAL = "The tool said ping."
# What a terminal would obey; none of it may reach stderr.
TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def tool_line(tool: str, arguments: str, outcome: str) -> str:
    return f"termchat: tool {tool} {arguments}: {outcome}"


def how_to_allow(server: str, tool: str) -> str:
    return (f"to allow it, run with --allow-tool {server}.{tool} (or --yes), or add "
            f"\"{tool}\" to allow in [mcp.{server}] of the config")


def t_server(events: Path, **settings: Any) -> str:
    return script_server_toml("t", events, **settings)


@dataclass
class Case:
    replies: list[Script]
    args: list[str] = field(default_factory=lambda: ["hi"])
    provider: str = "openai"
    tables: Callable[[Path], str] = t_server
    tools: str = ""
    extra: str = ""
    python_flags: tuple[str, ...] = ()


@dataclass
class Result:
    run: Run
    requests: list[Request]
    events: list[str]
    env: dict[str, str]

    @property
    def stderr(self) -> list[str]:
        return lines_of(self.run.stderr)

    @property
    def tool_lines(self) -> list[str]:
        return [line for line in self.stderr if line.startswith("termchat: tool ")]

    @property
    def server_pids(self) -> list[int]:
        return [int(line.split()[1]) for line in self.events if line.startswith("start ")]


def both(name: str, **case: Any) -> dict[str, Case]:
    return {f"{name}-{provider}": Case(provider=provider, **case) for provider in PROVIDERS}


def hostile_fail() -> ToolCall:
    # Valid JSON whose string holds OSC 52, a screen clear and a bidi override once decoded:
    # the server's error message carries them raw.
    return ToolCall("t__fail", json.dumps({"message": "boom \x1b]52;c;aGk=\x07\x1b[2J\u202e"}))


CASES: dict[str, Case] = {
    **both("approved", replies=[Script(tool_calls=[ECHO]), Script(text=FINAL)],
           args=["--allow-tool", "t.echo", "hi"]),
    **both("denied", replies=[Script(tool_calls=[ECHO]), Script(text="Understood.")]),
    **both("parallel", replies=[
        Script(text="Two at once. ", tool_calls=[ToolCall("t__echo", '{"text": "first"}'),
                                                 ToolCall("t__add", '{"a": 2, "b": 3}')],
               interleave=True),
        Script(text="first and 5")],
        tables=lambda events: t_server(events, allow=["echo", "add"])),
    **both("json", replies=[
        Script(tool_calls=[ECHO], input_tokens=10, output_tokens=4),
        Script(text=FINAL, input_tokens=30, output_tokens=6)],
        args=["--json", "--yes", "hi"]),
    "yes": Case([Script(tool_calls=[ECHO, ToolCall("t__add", '{"a": 1, "b": 2}')]),
                 Script(text="done")], args=["--yes", "hi"]),
    "allow-server-star": Case([Script(tool_calls=[ECHO]), Script(text="done")],
                              args=["--allow-tool", "t.*", "hi"]),
    "allow-exposed-name": Case([Script(tool_calls=[ToolCall("t__dotted_name", "{}")]),
                                Script(text="done")],
                               args=["--allow-tool", "t__dotted_name", "hi"]),
    "allow-unmatched": Case([Script(text="done")], args=["--allow-tool", "t.nosuch", "hi"]),
    "failing": Case([Script(tool_calls=[ToolCall("t__fail", '{"message": "disk on fire"}')]),
                     Script(text="It failed; going on.")], args=["--yes", "hi"]),
    "dead": Case([Script(tool_calls=[ToolCall("t__crash", "{}")]),
                  Script(text="The server died; going on.")], args=["--yes", "hi"]),
    "timeout": Case([Script(tool_calls=[ToolCall("t__sleep", '{"seconds": 30}')]),
                     Script(text="Too slow.")], args=["--yes", "hi"],
                    tables=lambda events: t_server(events, timeout=0.5)),
    "round-limit": Case([Script(text=f"round {n} ", tool_calls=[ECHO]) for n in (1, 2, 3)],
                        args=["--yes", "-u", "hi"], tools="max_rounds = 2"),
    **both("hostile", replies=[
        Script(tool_calls=[hostile_fail(),
                           # Not JSON: a raw ESC inside a string is not allowed there.
                           ToolCall("t__echo", '{"text": "\x1b]0;title\x07\x1b[31mred\u2066"}'),
                           ToolCall("t__\x1b[2Jevil\u202e", "{}")]),
        Script(text="ok")], args=["--yes", "hi"]),
    "startup-failure": Case([Script(text="no tools today")],
                            tables=lambda events: script_server_toml(
                                "broken", events, "--fail-start", "cannot open the database")),
    "no-tools": Case([Script(text="plain")], args=["--no-tools", "hi"],
                     python_flags=("-X", "importtime")),
    "no-servers": Case([Script(text="plain")], tables=lambda events: "",
                       python_flags=("-X", "importtime")),
    "model-without-tools": Case([Script(text="plain")], args=["-m", "plain", "hi"],
                                extra='[models.plain]\nprovider = "openai"\nmodel = "m"\n'
                                      "tools = false\n"),
    "model-with-one-server": Case(
        [Script(text="plain")], args=["-m", "timely", "hi"],
        tables=lambda events: t_server(events) + time_server_toml(),
        extra='[models.timely]\nprovider = "openai"\nmodel = "m"\ntools = ["time"]\n'),
    "allow-tool-typo": Case([Script(text="never")], args=["--allow-tool", "tt.echo", "hi"]),
    "list": Case([], args=["--tools"],
                 tables=lambda events: t_server(events, allow=["echo"]) + time_server_toml()),
    "list-failure": Case([], args=["--tools"], tables=lambda events: script_server_toml(
        "broken", events, "--fail-start", "no such thing")),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    servers: list[ProviderServer] = []
    tmps = {name: tmp_path_factory.mktemp(name) for name in CASES}

    def run(name: str) -> Result:
        case = CASES[name]
        tmp = tmps[name]
        events = tmp / "events"
        servers.append(srv := ProviderServer().start())
        srv.queue(*case.replies)
        env = environment(tmp, srv, case.provider,
                          config=config(case.tables(events), tools=case.tools) + case.extra)
        done = detached(case.args, env, python_flags=case.python_flags)
        lines = events.read_text().splitlines() if events.exists() else []
        return Result(done, srv.requests, lines, env)

    with run_concurrently(CASES, run, servers) as results:
        yield results


def tool_results(request: Request, provider: str) -> list[tuple[str, bool | None]]:
    """The tool results a follow-up request carries, in order: (content, is_error); OpenAI's
    tool messages have no error flag."""
    messages = request.body["messages"]
    if provider == "openai":
        return [(m["content"], None) for m in messages if m["role"] == "tool"]
    return [(block["content"], block["is_error"]) for m in messages
            if isinstance(m["content"], list)
            for block in m["content"] if block["type"] == "tool_result"]


def offered(request: Request) -> set[str]:
    tools = request.body.get("tools", [])
    return {t["function"]["name"] if "function" in t else t["name"] for t in tools}


# --- a pre-approved call, piped -------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_piped_run_with_a_pre_approved_tool_prints_exactly_the_final_text(
        results: dict[str, Result], provider: str) -> None:
    result = results[f"approved-{provider}"]
    assert result.run.returncode == 0, result.run.stderr
    assert result.run.stdout == f"{FINAL}\n".encode()
    (line,) = result.stderr
    assert re.fullmatch(re.escape(tool_line("t.echo", '{"text": "ping"}', "ok in ")) +
                        r"\d+\.\d\d s", line), line
    first, follow_up = result.requests
    assert {"t__echo", "t__add", "t__sleep"} <= offered(first)
    assert tool_results(follow_up, provider) == [("ping", None if provider == "openai"
                                                  else False)]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_follow_up_carries_the_call_in_the_providers_shape(results: dict[str, Result],
                                                               provider: str) -> None:
    _, follow_up = results[f"approved-{provider}"].requests
    messages = follow_up.body["messages"]
    if provider == "openai":
        (call,) = messages[1]["tool_calls"]
        assert messages[1]["role"] == "assistant"
        assert call["function"] == {"name": "t__echo", "arguments": '{"text": "ping"}'}
        assert messages[2] == {"role": "tool", "tool_call_id": call["id"], "content": "ping"}
    else:
        (block,) = messages[1]["content"]
        assert (block["type"], block["name"], block["input"]) == \
            ("tool_use", "t__echo", {"text": "ping"})
        assert messages[2] == {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": block["id"], "content": "ping",
             "is_error": False}]}


def test_servers_are_gone_when_termchat_exits(results: dict[str, Result]) -> None:
    pids = [pid for name in ("approved-openai", "approved-anthropic", "dead", "timeout",
                             "list") for pid in results[name].server_pids]
    assert len(pids) >= 5
    assert not [pid for pid in pids if alive(pid) or group_alive(pid)]


# --- approval without a terminal ----------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_with_no_terminal_an_unapproved_call_is_denied_and_stderr_says_how_to_allow_it(
        results: dict[str, Result], provider: str) -> None:
    result = results[f"denied-{provider}"]
    assert result.run.returncode == 0, result.run.stderr
    assert result.run.stdout == b"Understood.\n"
    assert result.stderr == [tool_line("t.echo", '{"text": "ping"}',
                                       "denied: no terminal to ask on; " +
                                       how_to_allow("t", "echo"))]
    _, follow_up = result.requests
    assert tool_results(follow_up, provider) == [
        (DENIED_TEXT, None if provider == "openai" else True)]
    assert "declined" in DENIED_TEXT


def test_yes_runs_every_call(results: dict[str, Result]) -> None:
    result = results["yes"]
    assert result.run.returncode == 0
    assert [line.rsplit(" in ", 1)[0] for line in result.stderr] == [
        tool_line("t.echo", '{"text": "ping"}', "ok"),
        tool_line("t.add", '{"a": 1, "b": 2}', "ok")]
    assert tool_results(result.requests[1], "openai") == [("ping", None), ("3", None)]


def test_allow_tool_takes_a_whole_server(results: dict[str, Result]) -> None:
    assert results["allow-server-star"].tool_lines[0].startswith(
        tool_line("t.echo", '{"text": "ping"}', "ok"))


def test_allow_tool_takes_a_name_as_the_model_sees_it(results: dict[str, Result]) -> None:
    # The server calls it `dotted.name`, which no provider takes; the model sees another.
    result = results["allow-exposed-name"]
    assert result.tool_lines[0].startswith(tool_line("t.dotted.name", "{}", "ok in "))
    assert tool_results(result.requests[1], "openai") == [("dotted", None)]


def test_an_allow_tool_naming_no_tool_is_warned_about(results: dict[str, Result]) -> None:
    result = results["allow-unmatched"]
    assert result.run.returncode == 0
    assert result.stderr == ["termchat: warning: --allow-tool t.nosuch matches no tool of the "
                             "MCP servers running; see termchat --tools."]


def test_an_allow_tool_naming_no_server_is_a_usage_error(results: dict[str, Result]) -> None:
    result = results["allow-tool-typo"]
    assert result.run.returncode == 2
    assert result.stderr == [
        f"termchat: --allow-tool tt.echo: there is no MCP server 'tt' in "
        f"{result.env['XDG_CONFIG_HOME']}/termchat/config.toml; did you mean t.echo?"]
    assert result.requests == [] and result.server_pids == []


# --- several calls, failures, limits ------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_parallel_calls_each_get_a_line_and_their_results_go_back_in_order(
        results: dict[str, Result], provider: str) -> None:
    result = results[f"parallel-{provider}"]
    assert result.run.returncode == 0, result.run.stderr
    assert result.run.stdout == b"Two at once. first and 5\n"
    assert [line.rsplit(" in ", 1)[0] for line in result.stderr] == [
        tool_line("t.echo", '{"text": "first"}', "ok"),
        tool_line("t.add", '{"a": 2, "b": 3}', "ok")]
    _, follow_up = result.requests
    assert [content for content, _ in tool_results(follow_up, provider)] == ["first", "5"]
    if provider == "openai":
        assert [c["function"]["name"] for c in follow_up.body["messages"][1]["tool_calls"]] \
            == ["t__echo", "t__add"]


def test_a_failing_tool_is_one_line_and_the_run_goes_on(results: dict[str, Result]) -> None:
    result = results["failing"]
    assert result.run.returncode == 0
    assert result.run.stdout == b"It failed; going on.\n"
    (line,) = result.stderr
    assert line.startswith(tool_line("t.fail", '{"message": "disk on fire"}', "error: "))
    assert "disk on fire" in line.split(": error: ", 1)[1]
    ((content, _),) = tool_results(result.requests[1], "openai")
    assert "disk on fire" in content


def test_a_server_that_dies_mid_call_is_one_line_and_the_run_goes_on(
        results: dict[str, Result]) -> None:
    result = results["dead"]
    assert result.run.returncode == 0, result.run.stderr
    assert result.run.stdout == b"The server died; going on.\n"
    died = ("termchat: warning: MCP server 't' stopped working: exited with status 3 "
            "(crashing on purpose); its tools are unavailable (log: ")
    assert [line for line in result.stderr if line.startswith(died)], result.stderr
    assert result.tool_lines == [tool_line(
        "t.crash", "{}", "unavailable: The MCP server 't' stopped during the call; its tools "
        "are unavailable.")]
    assert len(result.stderr) == 2
    assert len(result.requests) == 2


def test_a_call_that_runs_too_long_times_out_in_one_line(results: dict[str, Result]) -> None:
    result = results["timeout"]
    assert result.run.returncode == 0
    assert result.tool_lines == [tool_line(
        "t.sleep", '{"seconds": 30}',
        "timed out: The tool 'sleep' did not finish within 0.5 s and was cancelled.")]
    assert result.run.stdout == b"Too slow.\n"


def test_the_round_limit_ends_the_turn_with_a_clear_line(results: dict[str, Result]) -> None:
    result = results["round-limit"]
    assert result.run.returncode == 0, result.run.stderr
    assert len(result.requests) == 2
    assert result.run.stdout == b"round 1 round 2 \n"
    assert len(result.tool_lines) == 1
    assert result.stderr[1] == (
        "termchat: warning: the model still asked for tools after 2 rounds (max_rounds = 2 "
        "in [tools] of the config), so the turn ended there; 1 call did not run.")
    assert result.stderr[2].startswith("finish tool_calls · ")
    assert result.stderr[2].endswith(" · 2 rounds")


def test_a_server_that_fails_to_start_is_one_line_and_the_reply_comes(
        results: dict[str, Result]) -> None:
    result = results["startup-failure"]
    assert result.run.returncode == 0
    assert result.run.stdout == b"no tools today\n"
    (line,) = result.stderr
    assert line.startswith("termchat: warning: MCP server 'broken' failed to start: exited "
                           "with status 3 (cannot open the database); its tools are "
                           "unavailable (log: ")
    assert "tools" not in result.requests[0].body


# --- --json -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_json_has_the_calls_and_each_rounds_usage(results: dict[str, Result],
                                                  provider: str) -> None:
    result = results[f"json-{provider}"]
    assert result.run.returncode == 0, result.run.stderr
    output = json.loads(result.run.stdout)
    assert output["text"] == FINAL
    (call,) = output["tool_calls"]
    assert call["id"].startswith("call_" if provider == "openai" else "toolu_")
    assert {k: v for k, v in call.items() if k != "id"} == {
        "name": "t__echo", "server": "t", "tool": "echo", "arguments": '{"text": "ping"}',
        "result": "ping", "is_error": False, "status": "ok"}
    assert (output["rounds"], output["round_limit"]) == (2, False)
    inputs = [r["input_tokens"] for r in output["round_usage"]]
    outputs = [r["output_tokens"] for r in output["round_usage"]]
    assert (inputs, outputs) == ([10, 30], [4, 6])
    assert (output["usage"]["input_tokens"], output["usage"]["output_tokens"]) == (40, 10)
    # The call's line still goes to stderr; stdout is the one object.
    assert len(result.tool_lines) == 1


# --- what never reaches the terminal ------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_hostile_tool_names_arguments_and_results_reach_stderr_clean(
        results: dict[str, Result], provider: str) -> None:
    result = results[f"hostile-{provider}"]
    assert result.run.returncode == 0, result.run.stderr
    text = result.run.stderr.decode()
    assert not TERMINAL_CONTROLS.findall(text.replace("\n", "")), text
    fail, echo, evil = result.tool_lines
    assert fail.startswith("termchat: tool t.fail ") and ": error: " in fail
    assert "boom" in fail.split(": error: ")[1]
    assert echo.startswith('termchat: tool t.echo {"text": "red"}: invalid arguments: ')
    assert evil.startswith("termchat: tool t__evil {}: unavailable: There is no tool named ")


# --- no tools, no MCP ---------------------------------------------------------------------


def imported(run: Run) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in lines_of(run.stderr) if line.startswith("import time:")}


@pytest.mark.parametrize("case", ["no-tools", "no-servers"])
def test_without_tools_no_server_starts_and_mcp_is_not_imported(results: dict[str, Result],
                                                                case: str) -> None:
    result = results[case]
    assert result.run.returncode == 0
    assert result.run.stdout == b"plain\n"
    assert result.server_pids == []
    assert "tools" not in result.requests[0].body
    modules = imported(result.run)
    assert "openai" in modules
    assert not modules & {"mcp", "mcp_types"}


def test_a_model_with_tools_false_starts_no_server(results: dict[str, Result]) -> None:
    result = results["model-without-tools"]
    assert result.run.returncode == 0
    assert (result.server_pids, "tools" in result.requests[0].body) == ([], False)


def test_a_model_offered_one_server_starts_only_that_one(results: dict[str, Result]) -> None:
    result = results["model-with-one-server"]
    assert result.run.returncode == 0, result.run.stderr
    assert offered(result.requests[0]) == {"time__get_current_time", "time__convert_time"}
    assert result.server_pids == []


# --- termchat --tools ---------------------------------------------------------------------


def test_tools_lists_servers_their_state_and_tools(results: dict[str, Result]) -> None:
    result = results["list"]
    assert result.run.returncode == 0, result.run.stderr
    lines = lines_of(result.run.stdout)
    assert re.fullmatch(r"t \(stdio: .*mcp_server\.py\): ready in \d+\.\d\d s", lines[0])
    assert re.fullmatch(r"  t__echo +Return the text unchanged\. \[runs unasked\]", lines[1])
    assert any(re.fullmatch(r"  t__add +Add two integers\.", line) for line in lines)
    assert any(re.fullmatch(r"time \(stdio: .*mcp-server-time --local-timezone UTC\): "
                            r"ready in \d+\.\d\d s", line) for line in lines)
    assert any(line.startswith("  time__get_current_time ") for line in lines)
    assert result.requests == []


def test_tools_exits_1_naming_a_server_that_failed(results: dict[str, Result]) -> None:
    result = results["list-failure"]
    assert result.run.returncode == 1
    lines = lines_of(result.run.stdout)
    assert re.fullmatch(r"broken \(stdio: .*\): failed to start: exited with status 3 "
                        r"\(no such thing\)", lines[0])
    assert lines[1].startswith("  log: ") and lines[1].endswith("mcp-broken.log")


def test_tools_with_nothing_configured_says_how_to_add_a_server(tmp_path: Path) -> None:
    run = detached(["--tools"], environment(tmp_path))
    assert run.returncode == 0
    assert lines_of(run.stdout) == [
        f"No MCP servers are configured: add [mcp.NAME] tables to {tmp_path}/config/termchat/"
        "config.toml (see config.example.toml)."]


def test_tools_takes_no_prompt_or_reply_options(tmp_path: Path) -> None:
    run = detached(["--tools", "--json"], environment(tmp_path))
    assert (run.returncode, lines_of(run.stderr)) == (
        2, ["termchat: --tools cannot be combined with --json"])


# --- interrupting and continuing ----------------------------------------------------------


def stored(env: dict[str, str]) -> list[tuple[str, str, str]]:
    with HistoryStore.open(Path(env["XDG_DATA_HOME"]) / "termchat" / "history.db") as store:
        cid = store.last_conversation_id()
        assert cid is not None
        return [(m.role, m.status, m.text) for m in store.get(cid).messages]


def wait_for_event(events: Path, prefix: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exists() and any(line.startswith(prefix)
                                   for line in events.read_text().splitlines()):
            return
        time.sleep(0.05)
    raise AssertionError(f"the MCP server never logged {prefix!r}")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_ctrl_c_during_a_tool_call_cancels_it_and_keeps_the_partial_reply(
        provider_server: ProviderServer, tmp_path: Path, provider: str) -> None:
    events = tmp_path / "events"
    provider_server.queue(Script(text="Sleeping now. ",
                                 tool_calls=[ToolCall("t__sleep", '{"seconds": 30}')]))
    env = environment(tmp_path, provider_server, provider,
                      config=config(t_server(events, allow=["sleep"])))
    proc = spawn_detached(["hi"], env)
    wait_for_event(events, "sleep-start")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert out == b"Sleeping now. \n"
    assert lines_of(err) == [tool_line("t.sleep", '{"seconds": 30}', "cancelled")]
    wait_for_event(events, "sleep-cancelled", timeout=5)
    assert stored(env) == [("user", "complete", "hi"),
                           ("assistant", "cancelled", "Sleeping now. ")]
    assert len(provider_server.requests) == 1
    (pid,) = [int(line.split()[1]) for line in events.read_text().splitlines()
              if line.startswith("start ")]
    assert not group_alive(pid)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_continuing_after_a_tool_turn_replays_it_exactly(provider_server: ProviderServer,
                                                         tmp_path: Path, provider: str) -> None:
    provider_server.queue(Script(tool_calls=[ECHO]), Script(text=FINAL),
                          Script(text="again"))
    env = environment(tmp_path, provider_server, provider,
                      config=config(t_server(tmp_path / "events", allow=["echo"])))
    assert detached(["hi"], env).returncode == 0
    assert detached(["-c", "and now?"], env).returncode == 0
    _, follow_up, continued = provider_server.requests
    sent = follow_up.body["messages"]
    assert continued.body["messages"][:len(sent)] == sent
    assert continued.body["messages"][len(sent):len(sent) + 1] == [
        {"role": "assistant", "content": FINAL}]


# --- approval on a real terminal ----------------------------------------------------------

PROMPT_END = b"run it? [o/t/s/d]: "


def approval_env(tmp_path: Path, server: ProviderServer, provider: str = "openai") -> dict[str,
                                                                                        str]:
    return environment(tmp_path, server, provider,
                       config=config(t_server(tmp_path / "events")))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_call_is_asked_about_on_the_controlling_terminal_and_runs_once(
        provider_server: ProviderServer, tmp_path: Path, provider: str) -> None:
    provider_server.queue(Script(tool_calls=[ToolCall("t__add", '{"a": 2, "b": 40}')]),
                          Script(text="42"))
    # stdin and stdout are pipes: the question goes to the terminal all the same.
    terminal = on_controlling_terminal(["what is 2+40?"],
                                       approval_env(tmp_path, provider_server, provider),
                                       stdin=b"some piped context\n")
    shown = terminal.wait_for(PROMPT_END)
    assert shown.replace(b"\r\n", b"\n").decode() == (
        "termchat: the model asks to run tool 'add' of MCP server 't' (Add two integers.)\n"
        "  arguments:\n"
        "    {\n"
        '      "a": 2,\n'
        '      "b": 40\n'
        "    }\n"
        "  [o] once  [t] always this tool  [s] always this server  [d] deny\n"
        "run it? [o/t/s/d]: ")
    terminal.type(b"o\n")
    code, out, err = terminal.finish()
    assert code == 0, err
    assert out == b"42\n"
    assert lines_of(err)[0].startswith(tool_line("t.add", '{"a": 2, "b": 40}', "ok in "))
    assert [c for c, _ in tool_results(provider_server.requests[1], provider)] == ["42"]
    assert provider_server.requests[0].body["messages"][0]["content"] == \
        "what is 2+40?\n\nsome piped context\n"


def test_deny_at_the_prompt_sends_the_declined_result(provider_server: ProviderServer,
                                                      tmp_path: Path) -> None:
    provider_server.queue(Script(tool_calls=[ECHO]), Script(text="fine"))
    terminal = on_controlling_terminal(["hi"], approval_env(tmp_path, provider_server))
    terminal.wait_for(PROMPT_END)
    terminal.type(b"what?\n")
    assert b"type o, t, s or d, then Enter: " in terminal.wait_for(b"then Enter: ")
    terminal.type(b"d\n")
    code, out, err = terminal.finish()
    assert (code, out) == (0, b"fine\n")
    assert lines_of(err) == [tool_line("t.echo", '{"text": "ping"}', "denied")]
    assert tool_results(provider_server.requests[1], "openai") == [(DENIED_TEXT, None)]


@pytest.mark.parametrize(("answer", "calls", "asked"), [
    (b"t", [ECHO, ToolCall("t__echo", '{"text": "pong"}'), ToolCall("t__add",
                                                                    '{"a": 1, "b": 1}')], 2),
    (b"s", [ECHO, ToolCall("t__echo", '{"text": "pong"}'), ToolCall("t__add",
                                                                    '{"a": 1, "b": 1}')], 1),
])
def test_always_answers_last_for_the_rest_of_the_run(provider_server: ProviderServer,
                                                     tmp_path: Path, answer: bytes,
                                                     calls: list[ToolCall], asked: int) -> None:
    provider_server.queue(Script(tool_calls=calls), Script(text="done"))
    terminal = on_controlling_terminal(["hi"], approval_env(tmp_path, provider_server))
    terminal.wait_for(PROMPT_END)
    terminal.type(answer + b"\n")
    if asked == 2:
        # "Always this tool" covered the second echo; the add is asked about.
        assert b"tool 'add'" in terminal.wait_for(PROMPT_END)
        terminal.type(b"o\n")
    code, _, err = terminal.finish()
    assert code == 0, err
    assert terminal.screen.count(PROMPT_END) == asked
    assert [line.rsplit(" in ", 1)[0].split(": ")[-1] for line in lines_of(err)] == ["ok"] * 3


def test_hostile_arguments_are_shown_escaped_at_the_prompt(provider_server: ProviderServer,
                                                           tmp_path: Path) -> None:
    hostile = json.dumps({"text": "\x1b]52;c;aGk=\x07\x1b[2J\u202eevil\x9b31m"})
    provider_server.queue(Script(tool_calls=[ToolCall("t__echo", hostile)]), Script(text="x"))
    terminal = on_controlling_terminal(["hi"], approval_env(tmp_path, provider_server))
    shown = terminal.wait_for(PROMPT_END)
    terminal.type(b"d\n")
    code, _, err = terminal.finish()
    assert code == 0
    assert not TERMINAL_CONTROLS.findall(shown.decode().replace("\r\n", "")), shown
    assert '"text": "\\u001b]52;c;aGk=\\u0007\\u001b[2J\\u202eevil\\u009b31m"' in shown.decode()
    assert not TERMINAL_CONTROLS.findall(err.decode().replace("\n", ""))


def test_ctrl_c_at_the_prompt_cancels_the_call_and_exits_130(provider_server: ProviderServer,
                                                             tmp_path: Path) -> None:
    provider_server.queue(Script(text="Asking. ", tool_calls=[ECHO]))
    env = approval_env(tmp_path, provider_server)
    terminal = on_controlling_terminal(["hi"], env)
    terminal.wait_for(PROMPT_END)
    terminal.type(b"\x03")  # the terminal's interrupt character: SIGINT to termchat
    code, out, err = terminal.finish()
    assert code == 130, err
    assert out == b"Asking. \n"
    assert lines_of(err) == [tool_line("t.echo", '{"text": "ping"}', "cancelled")]
    assert stored(env)[-1] == ("assistant", "cancelled", "Asking. ")
    assert len(provider_server.requests) == 1
