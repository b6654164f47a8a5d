"""One-shot mode, end to end: the installed `termchat` run as a subprocess against the local
provider server, with an isolated environment.

Most runs are scripted up front in `CASES` and run concurrently, each against its own server
(nearly all of a run is the provider SDK's import, so one by one they would take minutes);
the tests then read the results. Runs that a test must interact with (signals, pipes, timing)
run in the test itself.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from termchat.devserver import ProviderServer, Request, Script
from tests.support.cli import (
    BASE_CONFIG,
    TERMCHAT,
    Run,
    environment,
    lines_of,
    run_concurrently,
    spawn,
    termchat,
)
from tests.support.models import closed_port

UNCAPPED = ("no --max-tokens was set, so the server's own limit or its context window ended it: "
            "go on with termchat -c --continue-reply, ask for a shorter answer, or start a new "
            "conversation")

# --- the scripted runs --------------------------------------------------------------------


@dataclass
class Case:
    """One run: what its server answers (None: nothing listens), and how termchat is run."""

    reply: Script | None = field(default_factory=lambda: Script(text="default reply"))
    args: list[str] = field(default_factory=lambda: ["hi"])
    provider: str = "openai"
    stdin: bytes = b""
    key: bool = True
    config: str = BASE_CONFIG
    python_flags: tuple[str, ...] = ()


@dataclass
class Result:
    run: Run
    requests: list[Request]

    @property
    def stderr(self) -> list[str]:
        return lines_of(self.run.stderr)

    @property
    def body(self) -> dict[str, object]:
        (request,) = self.requests
        return request.body


# Multi-byte UTF-8 cut across chunks: an accent, an emoji, a combining accent after its base
# letter, a ZWJ family emoji cut inside its sequence, CJK.
UNICODE_CHUNKS = ["caf", "é 🎉", " e", "\u0301 ", "👩\u200d", "👩\u200d👧", " 日本", "語\n\nend"]
PARTIAL = ["one ", "two ", "three"]
BIG_STDIN = ("0123456789abcdef" * 64 + "\n") * 5 * 1024  # about 5 MB

CASES: dict[str, Case] = {
    # Output.
    "unicode-openai": Case(Script(chunks=UNICODE_CHUNKS)),
    "unicode-anthropic": Case(Script(chunks=UNICODE_CHUNKS, thinking="secret musing"),
                              provider="anthropic"),
    "refusal": Case(Script(refusal="I can't help with that.")),
    # The prompt and the request.
    "argument-and-stdin": Case(args=["explain", "this"], stdin=b"def f():\n    return 1\n"),
    "stdin-only": Case(args=[], stdin=b"2+2?\n"),
    "big-stdin": Case(args=["summarise"], stdin=BIG_STDIN.encode()),
    "binary-stdin": Case(args=["what is this"], stdin=bytes(range(256))),
    "empty-prompt": Case(args=[], stdin=b" \n"),
    # These two also record their imports, for test_only_the_sdk_in_use_is_imported.
    "flags-openai": Case(args=["-s", "be terse", "--max-tokens", "50", "--temperature", "0.2",
                               "hi"], python_flags=("-X", "importtime")),
    "flags-anthropic": Case(args=["-m", "anthropic:claude-test", "--system", "be terse",
                                  "--max-tokens", "50", "hi"], provider="anthropic",
                            python_flags=("-X", "importtime")),
    "temperature-anthropic": Case(args=["-m", "anthropic:claude-test", "--temperature", "0.5",
                                        "hi"], provider="anthropic"),
    # -u, truncation, --json.
    "usage": Case(Script(text="hello", input_tokens=12, output_tokens=345, cached_tokens=3),
                  args=["-u", "hi"]),
    "usage-unknown": Case(Script(text="hello", usage="never"), args=["--usage", "hi"]),
    "cut-openai": Case(Script(text="cut sh", finish="length")),
    "cut-openai-capped": Case(Script(text="cut sh", finish="length"),
                              args=["--max-tokens", "5", "hi"]),
    "cut-openai-u": Case(Script(text="cut sh", finish="length"), args=["-u", "hi"]),
    "cut-anthropic-u": Case(Script(text="cut sh", finish="max_tokens"), args=["-u", "hi"],
                            provider="anthropic"),
    "json-openai": Case(Script(chunks=["caf", "é"], input_tokens=7, output_tokens=2,
                              cached_tokens=1), args=["--json", "-m", "openai:test-model", "hi"]),
    "json-anthropic": Case(Script(chunks=["caf", "é"], input_tokens=7, output_tokens=2,
                                 cached_tokens=1),
                           args=["--json", "-m", "anthropic:test-model", "hi"],
                           provider="anthropic"),
    "json-no-usage": Case(Script(text="hi there", usage="never", finish="length"),
                          args=["--json", "hi"]),
    # Errors.
    "auth": Case(Script(status=401)),
    "model": Case(Script(status=404)),
    "rate-limit": Case(Script(status=429, retry_after="7")),
    "server": Case(Script(status=500, error_message="it broke\x1b]0;pwned\x07\x1b[2J badly")),
    "overloaded": Case(Script(status=529), provider="anthropic"),
    "refused": Case(None),
    "stall": Case(Script(chunks=PARTIAL, stall_after=1),
                  config=BASE_CONFIG + "idle_timeout = 1.0\n"),
    "mid-stream": Case(Script(chunks=PARTIAL, error_after=2)),
    "mid-stream-anthropic": Case(Script(chunks=PARTIAL, error_after=2), provider="anthropic"),
    "dropped": Case(Script(chunks=PARTIAL, disconnect_after=2)),
    "context": Case(Script(status=400, error_code="context_length_exceeded",
                          error_message="This model's maximum context length is 128000 tokens")),
    "context-anthropic": Case(Script(status=400, error_message="prompt is too long: 210000 "
                                    "tokens > 200000 maximum"), provider="anthropic"),
    "json-error": Case(Script(chunks=PARTIAL, error_after=2), args=["--json", "hi"]),
    "missing-key": Case(key=False),
    "bad-config": Case(config="[defaults\n"),
    "unknown-config-key": Case(config="[defaults]\nmax_retrys = 0\n"),
    "bad-flag": Case(args=["--bogus", "hi"]),
    "bad-max-tokens": Case(args=["--max-tokens", "0", "hi"]),
    "bad-temperature": Case(args=["--temperature", "5", "hi"]),
    "unknown-model": Case(args=["-m", "nope", "hi"]),
    "first-run": Case(config=""),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    """Every case in `CASES`, each against its own server, run concurrently."""
    servers: list[ProviderServer] = []
    # Made here, not in the threads: pytest's temporary directories are not thread-safe.
    tmps = {name: tmp_path_factory.mktemp(name) for name in CASES}

    def run(name: str) -> Result:
        case = CASES[name]
        tmp = tmps[name]
        srv: ProviderServer | None = None
        if name == "first-run":
            env = environment(tmp, config="")
        elif case.reply is None:
            env = environment(tmp, provider=case.provider, config=case.config,
                              base_url=f"http://127.0.0.1:{closed_port()}/v1")
        else:
            servers.append(srv := ProviderServer(default=case.reply).start())
            env = environment(tmp, srv, case.provider, key=case.key, config=case.config)
        done = termchat(case.args, env, case.stdin, case.python_flags)
        return Result(done, srv.requests if srv is not None else [])

    with run_concurrently(CASES, run, servers) as results:
        yield results


# --- piped output -------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["unicode-openai", "unicode-anthropic"])
def test_piped_stdout_is_the_exact_text_then_one_newline(results: dict[str, Result],
                                                         case: str) -> None:
    run = results[case].run
    assert run.returncode == 0, run.stderr
    assert run.stdout == "".join(UNICODE_CHUNKS).encode() + b"\n"
    assert run.stderr == b""


def test_reasoning_is_not_printed_when_piped(results: dict[str, Result]) -> None:
    assert b"secret" not in results["unicode-anthropic"].run.stdout


def test_a_refusal_is_printed(results: dict[str, Result]) -> None:
    assert results["refusal"].run.stdout == b"I can't help with that.\n"


@pytest.mark.parametrize(("provider", "other"), [("openai", "anthropic"),
                                                 ("anthropic", "openai")])
def test_only_the_sdk_in_use_is_imported(results: dict[str, Result], provider: str,
                                         other: str) -> None:
    run = results[f"flags-{provider}"].run
    assert run.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in lines_of(run.stderr) if line.startswith("import time:")}
    assert provider in imported
    # Neither the other SDK, nor the TUI, nor the Markdown renderer when piped.
    assert not imported & {other, "textual", "rich", "markdown_it"}


def test_piped_output_streams_as_it_arrives(provider_server: ProviderServer,
                                            tmp_path: Path) -> None:
    provider_server.queue(Script(chunks=["first ", "second ", "third"], delay=1.0))
    proc = spawn(["hi"], environment(tmp_path, provider_server))
    assert proc.stdout is not None
    first = os.read(proc.stdout.fileno(), 100)
    (request,) = provider_server.requests
    assert first == b"first "
    assert not request.completed, "the first chunk should be readable before the last is sent"
    rest, err = proc.communicate(timeout=10)
    assert first + rest == b"first second third\n"
    assert proc.returncode == 0, err


def test_no_stream_prints_only_when_the_reply_is_complete(provider_server: ProviderServer,
                                                          tmp_path: Path) -> None:
    provider_server.queue(Script(chunks=PARTIAL, delay=0.3))
    proc = spawn(["--no-stream", "hi"], environment(tmp_path, provider_server))
    assert proc.stdout is not None
    first = os.read(proc.stdout.fileno(), 100)
    (request,) = provider_server.requests
    assert request.completed, "--no-stream printed before the reply was complete"
    rest, _ = proc.communicate(timeout=10)
    assert first + rest == b"one two three\n"


# --- the prompt and the request -----------------------------------------------------------


def test_argument_then_a_blank_line_then_stdin(results: dict[str, Result]) -> None:
    assert results["argument-and-stdin"].body["messages"] == [
        {"role": "user", "content": "explain this\n\ndef f():\n    return 1\n"}]


def test_stdin_alone_is_the_prompt(results: dict[str, Result]) -> None:
    assert results["stdin-only"].body["messages"] == [{"role": "user", "content": "2+2?\n"}]


def test_several_megabytes_of_stdin_are_sent_whole(results: dict[str, Result]) -> None:
    result = results["big-stdin"]
    assert result.run.returncode == 0, result.run.stderr
    (message,) = result.body["messages"]  # type: ignore[misc]
    assert message["content"] == f"summarise\n\n{BIG_STDIN}"


def test_binary_stdin_is_decoded_leniently(results: dict[str, Result]) -> None:
    result = results["binary-stdin"]
    assert result.run.returncode == 0, result.run.stderr
    (message,) = result.body["messages"]  # type: ignore[misc]
    assert message["content"].startswith("what is this\n\n\x00\x01")
    assert "\ufffd" in message["content"]


def test_empty_prompt_is_a_usage_error(results: dict[str, Result]) -> None:
    result = results["empty-prompt"]
    assert result.run.returncode == 2
    assert result.stderr == ["termchat: the prompt is empty: pass it as an argument or on "
                             "stdin."]
    assert result.requests == []


def test_no_prompt_with_a_terminal_stdin_and_stdout_redirected(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        run = subprocess.run([TERMCHAT], stdin=terminal, capture_output=True, timeout=30,
                             env=environment(tmp_path, base_url="http://127.0.0.1:9/v1"),
                             check=False)
    finally:
        os.close(terminal)
        os.close(controller)
    assert run.returncode == 2
    (line,) = lines_of(run.stderr)
    assert line.startswith("termchat: no prompt: pass one as an argument")
    assert run.stdout == b""


def test_system_max_tokens_and_temperature_reach_openai(results: dict[str, Result]) -> None:
    body = results["flags-openai"].body
    assert body["messages"] == [{"role": "system", "content": "be terse"},
                                {"role": "user", "content": "hi"}]
    assert (body["max_tokens"], body["temperature"], body["stream"]) == (50, 0.2, True)


def test_system_max_tokens_and_model_reach_anthropic(results: dict[str, Result]) -> None:
    body = results["flags-anthropic"].body
    assert (body["model"], body["system"], body["max_tokens"], body["stream"]) == \
        ("claude-test", "be terse", 50, True)
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_temperature_for_anthropic_is_left_out_with_a_warning(
        results: dict[str, Result]) -> None:
    result = results["temperature-anthropic"]
    assert result.run.returncode == 0
    assert "temperature" not in result.body
    assert result.stderr == [
        "termchat: warning: --temperature is ignored for Anthropic models (their API no "
        "longer takes it)"]


def test_help_shows_examples(tmp_path: Path) -> None:
    run = termchat(["--help"], environment(tmp_path))
    assert run.returncode == 0
    assert b'cat app.py | termchat "explain this"' in run.stdout
    assert b"--max-tokens" in run.stdout and b"--json" in run.stdout


# --- -u, truncation, --json ---------------------------------------------------------------

USAGE_LINE = re.compile(r"finish (\S+) · in (\w+) · out (\w+) · cached (\w+) · "
                        r"ttft \d+\.\d\ds · ~?\d+\.\d tok/s · \d+\.\ds · "
                        r"context (unknown|<?\d+%) · (cost unknown|\$\S+)")


def test_usage_line_on_stderr(results: dict[str, Result]) -> None:
    result = results["usage"]
    assert result.run.returncode == 0
    assert result.run.stdout == b"hello\n"
    (line,) = result.stderr
    match = USAGE_LINE.fullmatch(line)
    assert match, line
    assert match.groups() == ("stop", "12", "345", "3", "unknown", "cost unknown")
    assert "~" not in line


def test_unknown_usage_is_printed_as_unknown(results: dict[str, Result]) -> None:
    (line,) = results["usage-unknown"].stderr
    match = USAGE_LINE.fullmatch(line)
    assert match, line
    assert match.groups() == ("stop", "unknown", "unknown", "unknown", "unknown",
                              "cost unknown")
    assert "~" in line, "a rate estimated from characters is marked as an estimate"


@pytest.mark.parametrize(("case", "reason", "advice"), [
    ("cut-openai", "length — hit the length limit", UNCAPPED),
    ("cut-openai-capped", "length — hit the length limit",
     "raise --max-tokens for more, or go on with termchat -c --continue-reply"),
    ("cut-openai-u", "length — hit the length limit", UNCAPPED),
    ("cut-anthropic-u", "max_tokens — hit max_tokens",
     "raise --max-tokens for more, or go on with termchat -c --continue-reply")])
def test_truncated_reply_warns_and_succeeds(results: dict[str, Result], case: str,
                                            reason: str, advice: str) -> None:
    result = results[case]
    assert result.run.returncode == 0
    assert result.run.stdout == b"cut sh\n"
    warning = f"termchat: warning: the reply was cut off ({reason}); {advice}."
    if "-u" in CASES[case].args:
        assert result.stderr[0] == warning
        assert result.stderr[1].startswith(f"finish {reason.split()[0]} · ")
        assert len(result.stderr) == 2
    else:
        assert result.stderr == [warning]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_json_is_one_object_with_text_finish_usage_and_timings(results: dict[str, Result],
                                                               provider: str) -> None:
    run = results[f"json-{provider}"].run
    assert run.returncode == 0, run.stderr
    assert run.stdout.endswith(b"}\n") and run.stdout.count(b"\n") == 1
    result = json.loads(run.stdout)
    assert {k: result[k] for k in ("text", "model", "provider", "finish_kind", "status")} == {
        "text": "café", "model": "test-model", "provider": provider,
        "finish_kind": "complete", "status": "complete"}
    assert result["finish_reason"] == ("stop" if provider == "openai" else "end_turn")
    # Anthropic counts cache reads apart from input_tokens; termchat's input is the total.
    assert result["usage"] == {"input_tokens": 7 if provider == "openai" else 8,
                               "output_tokens": 2, "cached_tokens": 1,
                               "reasoning_tokens": 0 if provider == "openai" else None}
    timings = result["timings"]
    assert 0 <= timings["ttft_s"] <= timings["elapsed_s"]
    assert timings["tokens_per_second"] > 0
    assert "error" not in result


def test_json_usage_the_server_never_sent_is_null(results: dict[str, Result]) -> None:
    result = results["json-no-usage"]
    assert result.run.returncode == 0
    output = json.loads(result.run.stdout)
    assert output["usage"] == dict.fromkeys(
        ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"))
    assert (output["finish_reason"], output["finish_kind"]) == ("length", "length")
    assert result.stderr[0].startswith("termchat: warning: the reply was cut off")


# --- errors and exit codes ----------------------------------------------------------------


@pytest.mark.parametrize(("case", "code", "message"), [
    ("auth", 1, "rejected the API key for openai:gpt-4.1-mini (401); check OPENAI_API_KEY"),
    ("model", 1, "does not know model 'gpt-4.1-mini' (404)"),
    ("rate-limit", 1, "Rate limited by 127.0.0.1:{port} (429); retry after 7 s."),
    ("server", 1, "had a server error (500: "),
    ("overloaded", 1, "is overloaded (529); try again in a minute."),
    ("refused", 1, "Cannot reach 127.0.0.1:{port} (connection refused)"),
    ("stall", 1, "sent nothing for 1 s, so the reply was stopped"),
    ("mid-stream", 1, "reported an error mid-reply"),
    ("mid-stream-anthropic", 1, "is overloaded mid-reply"),
    ("dropped", 1, "dropped mid-reply; the partial reply is kept"),
    ("context", 1, "The input is too long for openai:gpt-4.1-mini's context window"),
    ("context-anthropic", 1, "The input is too long for anthropic:claude-sonnet-5-5's"),
    ("json-error", 1, "reported an error mid-reply"),
    ("missing-key", 2, "No API key for openai:gpt-4.1-mini: set OPENAI_API_KEY"),
    ("bad-config", 2, "TOML syntax error at line 1"),
    ("unknown-config-key", 2, "unknown key 'defaults.max_retrys' (line 2); did you mean"),
    ("bad-flag", 2, "unrecognized arguments: --bogus"),
    ("bad-max-tokens", 2, "--max-tokens must be above 0"),
    ("bad-temperature", 2, "--temperature must be from 0 to 2"),
    ("unknown-model", 2, "Unknown model 'nope'"),
])
def test_errors_are_one_line_with_their_exit_code(results: dict[str, Result], case: str,
                                                  code: int, message: str) -> None:
    result = results[case]
    lines = result.stderr
    assert result.run.returncode == code, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("termchat: ")
    pattern = re.escape(message).replace(re.escape("{port}"), r"\d+")
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("case", ["stall", "mid-stream", "mid-stream-anthropic", "dropped"])
def test_partial_output_is_kept_and_ended_with_a_newline_on_error(results: dict[str, Result],
                                                                  case: str) -> None:
    reply = CASES[case].reply
    assert reply is not None and reply.chunks is not None
    sent = next(n for n in (reply.stall_after, reply.error_after, reply.disconnect_after) if n)
    assert results[case].run.stdout == "".join(reply.chunks[:sent]).encode() + b"\n"


def test_json_error_still_prints_the_object(results: dict[str, Result]) -> None:
    output = json.loads(results["json-error"].run.stdout)
    assert (output["text"], output["status"], output["finish_reason"]) == \
        ("one two ", "error", None)
    assert "reported an error mid-reply" in output["error"]


def test_an_error_message_from_the_server_cannot_drive_the_terminal(
        results: dict[str, Result]) -> None:
    (line,) = results["server"].stderr
    assert line.endswith("had a server error (500: it broke badly); try again shortly.")


def test_usage_and_config_errors_print_nothing_on_stdout(results: dict[str, Result]) -> None:
    for case in ("missing-key", "bad-config", "bad-flag", "refused", "auth"):
        assert results[case].run.stdout == b"", case


def test_first_run_says_what_to_set(results: dict[str, Result],
                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    run = results["first-run"].run
    assert run.returncode == 2
    text = run.stderr.decode()
    assert text.startswith("termchat: no model is configured yet")
    assert "export OPENAI_API_KEY=" in text and "export ANTHROPIC_API_KEY=" in text
    assert re.search(r"first-run\d*/config/termchat/config\.toml", text)
    assert run.stdout == b""


# --- signals and pipes --------------------------------------------------------------------

SLOW = [f"chunk{i} " for i in range(100)]


@pytest.mark.parametrize(("provider", "signum", "code"), [
    ("openai", signal.SIGINT, 130),
    ("anthropic", signal.SIGINT, 130),
    ("openai", signal.SIGTERM, 143),
])
def test_interrupt_mid_stream_keeps_the_output_and_closes_the_connection(
        provider_server: ProviderServer, tmp_path: Path, provider: str, signum: int,
        code: int) -> None:
    provider_server.queue(Script(chunks=SLOW, delay=0.2))
    proc = spawn(["hi"], environment(tmp_path, provider_server, provider))
    assert proc.stdout is not None
    first = os.read(proc.stdout.fileno(), 100)
    sent_at = time.monotonic()
    proc.send_signal(signum)
    rest, err = proc.communicate(timeout=10)
    out = first + rest
    assert proc.returncode == code, err
    assert err == b"", err.decode()
    assert out.startswith(b"chunk0 ") and out.endswith(b" \n")
    assert "".join(SLOW).encode().startswith(out[:-1])
    assert b"chunk99" not in out
    request = provider_server.wait_for_disconnect(timeout=2)
    assert request.disconnected_at is not None
    assert request.disconnected_at - sent_at < 0.5, "the connection stayed open"


def test_broken_pipe_exits_quietly_and_hangs_up(provider_server: ProviderServer,
                                               tmp_path: Path) -> None:
    provider_server.queue(Script(chunks=["hello", *SLOW], delay=0.01))
    run = subprocess.run(["bash", "-c", '"$0" hi | head -c 5; echo " ${PIPESTATUS[0]}"',
                          TERMCHAT], capture_output=True, timeout=30, check=False,
                         env=environment(tmp_path, provider_server))
    assert run.stdout == b"hello 141\n"
    assert run.stderr == b""
    provider_server.wait_for_disconnect(timeout=2)

