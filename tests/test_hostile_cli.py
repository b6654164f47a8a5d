"""Hostile input meeting the installed `termchat` from the outside: each case a server, a stored
history or a config could put in front of it, and the one sentence, the exit code and the
stored record it must end in. (tests/README.md has the table.)

The runs are scripted up front and run concurrently, each against its own server; the tests
read the results.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from termchat.devserver import ProviderServer, Request, Script
from termchat.history import HistoryStore
from tests.support.cli import (
    BASE_CONFIG,
    TERMCHAT,
    environment,
    lines_of,
    on_terminal,
    run_concurrently,
    termchat,
)
from tests.support.hostile import FORBIDDEN, BadJson, BadUtf8, Noise, Text, stream_body

EVENT_STREAM = [("content-type", "text/event-stream")]
GZIP_LIE = [*EVENT_STREAM, ("content-encoding", "gzip")]
# What termchat's own terminal output holds besides text: styles, hyperlinks and the live
# region's cursor control.
OWN_SEQUENCES = re.compile(r"\x1b\[[0-9;?]*[mlhAGK]|\x1b\]8;[^\x1b\x07]*(?:\x1b\\|\x07)|\r")


def raw(provider: str, *items: Text | BadUtf8 | Noise | BadJson, ending: str = "finish",
        headers: list[tuple[str, str]] | None = None) -> Script:
    return Script(raw=stream_body(provider, list(items), ending, "stop" if provider == "openai"
                                  else "end_turn"),
                  raw_headers=headers, raw_framing="chunked" if ending == "finish" else "close")


@dataclass
class Case:
    """One run of `termchat ARGS`: what its server answers and where its output goes."""

    script: Script | None
    args: list[str] = field(default_factory=lambda: ["hi"])
    provider: str = "openai"
    config: str = BASE_CONFIG
    terminal: bool = False
    stderr_terminal: bool = False


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: bytes
    requests: list[Request]
    stored: list[tuple[str, str, str]]
    """(role, status, text) of every stored message."""

    @property
    def lines(self) -> list[str]:
        return lines_of(self.stderr)


SURROGATE_HALVES = [Text("\ud83c"), Text("\udf89 party")]
CASES: dict[str, Case] = {
    **{f"invalid-json-{p}": Case(raw(p, Text("Hel"), BadJson(), Text("lo")), provider=p)
       for p in ("openai", "anthropic")},
    **{f"invalid-json-terminal-{p}": Case(raw(p, Text("Hel"), BadJson()), provider=p,
                                          terminal=True) for p in ("openai", "anthropic")},
    **{f"bad-utf8-{p}": Case(raw(p, Text("a"), BadUtf8("b", b"\xff", "c"), Text("d")),
                             provider=p) for p in ("openai", "anthropic")},
    **{f"wrong-types-{p}": Case(raw(p, Text("one "), Noise("null-text"), Noise("number-text"),
                                    Noise("no-delta"), Noise("list-text"), Text("two")),
                                provider=p) for p in ("openai", "anthropic")},
    **{f"gzip-lie-{p}": Case(raw(p, Text("hi"), headers=GZIP_LIE), provider=p)
       for p in ("openai", "anthropic")},
    **{f"surrogates-{p}": Case(raw(p, *SURROGATE_HALVES), provider=p)
       for p in ("openai", "anthropic")},
    "lone-cr-terminal": Case(Script(text="one\rtwo\r\nthree"), terminal=True),
    "html-200": Case(Script(raw=[b"<html><body>Welcome</body></html>"], raw_framing="length",
                            raw_headers=[("content-type", "text/html; charset=utf-8")])),
    "empty-stream": Case(raw("openai", ending="early")),
    "nothing-but-role": Case(Script(raw=stream_body("openai", [], "early", "stop"),
                                    raw_framing="close")),
    "408": Case(Script(status=408)),
    "temperature-true": Case(None, config="[defaults]\ntemperature = true\n"),
    "escapes-on-a-terminal": Case(Script(text="a \x1b]52;c;aGk=\x07b\x1b[2J c \u202edcba\x9b2J",
                                         chunk_size=3), terminal=True),
    "error-with-escapes": Case(Script(status=400, error_message="bad \x1b]0;pwned\x07 \u202e "
                                      "request")),
    "json-c1": Case(Script(text="x\x9b2Jy\u202ez"), args=["--json", "hi"], terminal=True),
    "retry-after-on-a-terminal": Case(
        Script(status=429, retry_after="1", should_retry=True), stderr_terminal=True,
        config="[defaults]\nmax_retries = 1\n"),
    "stall-retried": Case(Script(header_delay=5), stderr_terminal=True,
                          config="[defaults]\nmax_retries = 1\nidle_timeout = 0.5\n"),
}
# The runs whose server answers once more after the first script (a retry succeeding).
FOLLOW_UP = {"retry-after-on-a-terminal": Script(text="after the wait"),
             "stall-retried": Script(header_delay=5)}


def _stored(data: Path) -> list[tuple[str, str, str]]:
    path = data / "termchat" / "history.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return db.execute("SELECT role, status, text FROM messages ORDER BY id").fetchall()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    servers: list[ProviderServer] = []
    tmps = {name: tmp_path_factory.mktemp(name) for name in CASES}

    def run(name: str) -> Result:
        case = CASES[name]
        server = ProviderServer().start()
        servers.append(server)
        if case.script is not None:
            server.queue(case.script)
        if name in FOLLOW_UP:
            server.queue(FOLLOW_UP[name])
        env = environment(tmps[name], server, case.provider, config=case.config)
        if case.terminal or case.stderr_terminal:
            code, out, err = on_terminal(case.args, env, stderr=case.stderr_terminal)
        else:
            done = termchat(case.args, env)
            code, out, err = done.returncode, done.stdout, done.stderr
        return Result(code, out, err, server.requests, _stored(tmps[name] / "data"))

    with run_concurrently(CASES, run, servers) as done:
        yield done


def assert_one_clean_line(result: Result, *words: str) -> str:
    (line,) = result.lines
    assert line.startswith("termchat: ") and "Traceback" not in line
    assert not set(line) & FORBIDDEN
    for word in words:
        assert word in line, (word, line)
    return line


def shown(output: bytes) -> str:
    """What a terminal shows of `output`, termchat's own sequences taken out."""
    return OWN_SEQUENCES.sub("", output.decode())


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_invalid_json_mid_reply_is_one_line_and_the_partial_is_kept(
        results: dict[str, Result], provider: str) -> None:
    result = results[f"invalid-json-{provider}"]
    assert result.code == 1
    assert result.stdout == b"Hel\n"
    assert_one_clean_line(result, "not valid JSON", "partial reply is kept")
    assert result.stored[-1] == ("assistant", "interrupted", "Hel")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_invalid_json_on_a_terminal_gives_the_cursor_back(results: dict[str, Result],
                                                          provider: str) -> None:
    result = results[f"invalid-json-terminal-{provider}"]
    assert result.code == 1
    # The live region hides the cursor while it draws; the last word is showing it again.
    assert result.stdout.rfind(b"\x1b[?25h") > result.stdout.rfind(b"\x1b[?25l")
    assert "Hel" in shown(result.stdout)
    assert_one_clean_line(result, "not valid JSON")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_invalid_utf8_in_a_delta_costs_one_character(results: dict[str, Result],
                                                     provider: str) -> None:
    result = results[f"bad-utf8-{provider}"]
    assert (result.code, result.stderr) == (0, b"")
    assert result.stdout == "ab\ufffdcd\n".encode()
    assert result.stored[-1] == ("assistant", "complete", "ab\ufffdcd")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_deltas_of_the_wrong_shape_are_skipped(results: dict[str, Result],
                                               provider: str) -> None:
    result = results[f"wrong-types-{provider}"]
    assert (result.code, result.stderr, result.stdout) == (0, b"", b"one two\n")
    assert result.stored[-1] == ("assistant", "complete", "one two")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_body_that_lies_about_gzip_is_one_line(results: dict[str, Result],
                                                  provider: str) -> None:
    result = results[f"gzip-lie-{provider}"]
    assert result.code == 1
    assert_one_clean_line(result, "does not decode")
    assert result.stored[0][:2] == ("user", "complete")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_surrogate_halves_in_two_events_are_one_emoji_on_stdout_and_in_history(
        results: dict[str, Result], provider: str) -> None:
    result = results[f"surrogates-{provider}"]
    assert (result.code, result.stderr) == (0, b"")
    assert result.stdout == "🎉 party\n".encode()
    assert result.stored[-1] == ("assistant", "complete", "🎉 party")


def test_a_lone_carriage_return_is_a_line_break_on_a_terminal(results: dict[str, Result]) -> None:
    result = results["lone-cr-terminal"]
    assert (result.code, result.stderr) == (0, b"")
    text = shown(result.stdout)
    assert "one" in text and "two" in text and "three" in text
    assert result.stored[-1] == ("assistant", "complete", "one\rtwo\r\nthree")


def test_an_html_page_instead_of_a_stream_names_base_url(results: dict[str, Result]) -> None:
    result = results["html-200"]
    assert result.code == 1 and result.stdout == b""
    line = assert_one_clean_line(result, "text/html", "check base_url")
    assert "partial reply" not in line and "try again" not in line


@pytest.mark.parametrize("case", ["empty-stream", "nothing-but-role"])
def test_a_stream_that_sends_nothing_says_so_and_why(results: dict[str, Result],
                                                     case: str) -> None:
    result = results[case]
    assert result.code == 1 and result.stdout == b""
    line = assert_one_clean_line(result, "without sending any of it", "context window",
                                 "new conversation")
    assert "partial reply is kept" not in line
    assert result.stored[-1][:2] == ("assistant", "interrupted")


def test_408_is_a_timeout_not_a_settings_problem(results: dict[str, Result]) -> None:
    line = assert_one_clean_line(results["408"], "(408)", "try again")
    assert "settings" not in line


def test_a_boolean_temperature_is_said_to_need_a_number(results: dict[str, Result]) -> None:
    result = results["temperature-true"]
    assert result.code == 2
    assert_one_clean_line(result, "'defaults.temperature'", "it must be a number")


def test_escape_sequences_and_bidi_in_a_reply_never_reach_the_terminal(
        results: dict[str, Result]) -> None:
    result = results["escapes-on-a-terminal"]
    assert result.code == 0
    text = shown(result.stdout)
    assert not set(text) & FORBIDDEN
    assert "a b c dcba" in text
    # Stored as it came: the history is the record, the terminal gets the safe text.
    assert "\x1b]52" in result.stored[-1][2]


def test_a_server_error_with_escape_sequences_is_one_clean_line(
        results: dict[str, Result]) -> None:
    line = assert_one_clean_line(results["error-with-escapes"], "(400: bad")
    assert "pwned" not in line


def test_json_on_a_terminal_escapes_c1_and_bidi_but_keeps_the_data(
        results: dict[str, Result]) -> None:
    result = results["json-c1"]
    assert result.code == 0
    out = result.stdout.decode().replace("\r\n", "\n")
    assert "\x9b" not in out and "\u202e" not in out and "\\u009b" in out
    assert json.loads(out)["text"] == "x\x9b2Jy\u202ez"


def test_a_429_wait_is_said_on_a_terminal_then_the_retry_answers(
        results: dict[str, Result]) -> None:
    result = results["retry-after-on-a-terminal"]
    assert result.code == 0
    text = " ".join(shown(result.stdout).split())
    assert "Rate limited by" in text and "Retrying in 1 s (2 of 2)" in text
    assert "after the wait" in text
    assert len(result.requests) == 2


def test_a_stall_before_the_headers_is_retried_and_then_told_with_its_attempts(
        results: dict[str, Result]) -> None:
    result = results["stall-retried"]
    assert result.code == 1
    text = " ".join(shown(result.stdout).split())
    assert "sent nothing for 0.5 s" in text and "Retrying in" in text
    assert "(tried twice in" in text
    assert len(result.requests) == 2


# --- history that is damaged, hostile or read-only ----------------------------------------


@pytest.fixture
def stored_env(tmp_path: Path) -> dict[str, str]:
    """A history with one conversation whose rows hold escape sequences, bidi overrides and a
    reply that is not valid UTF-8 (as a damaged file would)."""
    env = environment(tmp_path, base_url="http://127.0.0.1:9/v1")
    path = tmp_path / "data" / "termchat" / "history.db"
    from termchat.config import ModelConfig
    from termchat.turn import Reply, Status

    model = ModelConfig(name="gpt", provider="openai", model="gpt-4.1-mini")
    with HistoryStore.open(path) as store:
        record = store.new_conversation()
        record.user_prompt("title \x1b]0;pwned\x07 \u202eevil", model).finish(
            Reply(model=model.model, provider=model.provider, status=Status.COMPLETE,
                  initial_text="fine"))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE messages SET text = CAST(x'6f6b20ff1b5d35323b633b61476b3d0720656e64'"
                   " AS TEXT) WHERE role = 'assistant'")
    return env


@pytest.mark.parametrize("args", [["--show", "1"], ["--export", "1"], ["--list"],
                                  ["--search", "title"]], ids=lambda a: a[0])
def test_a_damaged_or_hostile_history_is_shown_clean_on_a_terminal(
        stored_env: dict[str, str], args: list[str]) -> None:
    code, out, err = on_terminal(args, stored_env)
    assert (code, err) == (0, b"")
    text = shown(out)
    assert not set(text) & FORBIDDEN
    assert "pwned" not in text
    if args[0] in ("--show", "--export"):
        assert "ok \ufffd end" in text


def test_a_damaged_row_is_read_with_replacement_characters_when_piped(
        stored_env: dict[str, str]) -> None:
    run = termchat(["--show", "1"], stored_env)
    assert (run.returncode, run.stderr) == (0, b"")
    assert "ok \ufffd\x1b]52;c;aGk=\x07 end" in run.stdout.decode()


def test_continuing_a_damaged_conversation_sends_it_repaired(stored_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    with ProviderServer(default=Script(text="continued")) as server:
        env = {**stored_env, "OPENAI_BASE_URL": server.openai_base_url}
        run = termchat(["-c", "go on"], env)
        assert (run.returncode, run.stderr) == (0, b""), run.stderr
        messages = server.requests[0].body["messages"]
    assert messages[1] == {"role": "assistant", "content": "ok \ufffd\x1b]52;c;aGk=\x07 end"}


def test_a_read_only_history_can_still_be_listed_and_shown(stored_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    path = tmp_path / "data" / "termchat" / "history.db"
    path.chmod(0o400)
    try:
        for args in (["--list"], ["--show", "1"], ["--search", "title"]):
            run = termchat(args, stored_env)
            assert (run.returncode, run.stderr) == (0, b""), (args, run.stderr)
            assert run.stdout
    finally:
        path.chmod(0o600)


def test_the_exit_codes_in_the_help_include_a_closed_pipe(tmp_path: Path) -> None:
    run = termchat(["--help"], environment(tmp_path))
    assert "141" in run.stdout.decode() and "closed" in run.stdout.decode()


def test_a_closed_pipe_keeps_the_partial_reply_as_cancelled(tmp_path: Path) -> None:
    import subprocess

    with ProviderServer(default=Script(text="x" * 50_000, chunk_size=10, delay=0.001)) as server:
        env = environment(tmp_path, server)
        done = subprocess.run(["bash", "-c", '"$0" hi | head -c 10 > /dev/null; '
                               'echo "${PIPESTATUS[0]}"', TERMCHAT], capture_output=True,
                              env=env, timeout=60, check=False)
    assert done.stdout.strip() == b"141"
    assert done.stderr == b""
    (prompt, reply) = _stored(tmp_path / "data")
    assert prompt[:2] == ("user", "complete")
    assert reply[1] == "cancelled" and reply[2].startswith("x" * 10)
