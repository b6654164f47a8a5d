"""History from the command line, end to end: the installed `termchat` run as a subprocess
against the local provider server stores every exchange (before the request, as it streams,
however it ends), continues conversations with -c / --cid, survives an unusable database,
and lists, shows, searches and exports what it stored.

As in test_oneshot, the runs that need no interaction are scripted in `CASES` and run
concurrently at first use; runs a test must time or signal run in the test itself.
"""

from __future__ import annotations

import gc
import io
import itertools
import json
import os
import pty
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from termchat import cli
from termchat.config import ModelConfig
from termchat.devserver import ProviderServer, Script
from termchat.errors import RateLimitedError
from termchat.events import Finish, Usage
from termchat.history import ConversationRecord, HistoryStore, as_json
from termchat.tui import OPENED_EXCHANGES
from termchat.turn import Conversation, Reply, Status
from tests.support.cli import (
    BASE_CONFIG,
    TERMCHAT,
    environment,
    lines_of,
    run_concurrently,
    spawn,
    termchat,
)
from tests.support.tmux import Tmux

SECRET = "sk-hist-SECRET-4242424242"
# What a conversation stored by a run with only OPENAI_BASE_URL set is called.
MODEL = ModelConfig(name="openai:gpt-4.1-mini", provider="openai", model="gpt-4.1-mini")
MAY_1 = 1714554000.0  # 2024-05-01 09:00 UTC
HOUR = 3600.0
OFF = "termchat: warning: history is off for this run: "
GOES_ON = "; chatting continues without it"
SLOW = [f"chunk{i} " for i in range(100)]
Run = subprocess.CompletedProcess[bytes]


def db_of(tmp: Path) -> Path:
    """The history file of a run with `environment(tmp, ...)`."""
    return tmp / "data" / "termchat" / "history.db"


def rows(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Query `db` as another process would, without ever creating it."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        found = connection.execute(sql, params).fetchall()
    connection.close()
    return found


def messages(db: Path, cid: int = 1) -> list[tuple[Any, ...]]:
    return rows(db, "SELECT seq, role, text, status FROM messages WHERE conversation_id = ? "
                    "ORDER BY seq", cid)


def reply_row(db: Path) -> tuple[str, str]:
    """The text and status of the newest reply; empty until there is one."""
    try:
        found = rows(db, "SELECT text, status FROM messages WHERE role = 'assistant' "
                         "ORDER BY id DESC LIMIT 1")
    except sqlite3.OperationalError:  # created, but its tables not yet
        found = []
    return (found[0][0], found[0][1]) if found else ("", "")


def database_files(db: Path) -> dict[str, bytes]:
    """The bytes of the database and its -wal and -shm files, as they are now."""
    found = {}
    for path in db.parent.glob(f"{db.name}*"):
        # The log goes when the last connection closes, maybe between glob and read.
        with suppress(FileNotFoundError):
            found[path.name] = path.read_bytes()
    return found


def stored(text: str, status: Status = Status.COMPLETE, **fields: Any) -> Reply:
    reply = Reply(model=MODEL.model, provider=MODEL.provider, initial_text=text, status=status,
                  **fields)
    reply.ended_at = reply.started_at + 1.5
    return reply


def seed(db: Path, *turns: tuple[str, Reply], at: float | None = None) -> int:
    """A conversation stored as a chat would store it; `at` backdates it."""
    with HistoryStore.open(db) as store:
        record = store.new_conversation()
        for prompt, reply in turns:
            record.user_prompt(prompt, MODEL).finish(reply)
    assert record.id is not None
    if at is not None:
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE conversations SET created = ?, updated = ? WHERE id = ?",
                               (at, at, record.id))
            connection.execute("UPDATE messages SET created = ?, updated = ? "
                               "WHERE conversation_id = ?", (at, at, record.id))
        connection.close()
    return record.id


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# --- the scripted runs --------------------------------------------------------------------

def _france_and_ocean(tmp: Path) -> AbstractContextManager[None]:
    """Two stored conversations: France (with a failed turn), then the ocean (with a
    cancelled, partial turn), the most recent."""
    db = db_of(tmp)
    seed(db, ("Capital of France?", stored("Paris.")),
         ("Population?", stored("", Status.ERROR, error=RateLimitedError("Slow down."))),
         at=MAY_1)
    seed(db, ("Largest ocean?", stored("The Pacific.")),
         ("And the smallest?", stored("The Arc", Status.CANCELLED)), at=MAY_1 + HOUR)
    return nullcontext()


def _corrupt(tmp: Path) -> AbstractContextManager[None]:
    db_of(tmp).parent.mkdir(parents=True)
    db_of(tmp).write_bytes(b"\x00\xffnot sqlite" * 500)
    return nullcontext()


@contextmanager
def _locked(tmp: Path) -> Iterator[None]:
    """Another process holds the database's write lock for the whole run."""
    HistoryStore.open(db_of(tmp)).close()
    holder = sqlite3.connect(db_of(tmp), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@dataclass
class Case:
    """One run: what the server answers, the arguments, the config, and what is set up in
    its temporary directory first (held for the length of the run)."""

    args: list[str]
    reply: Script = field(default_factory=lambda: Script(text="default reply"))
    config: str = BASE_CONFIG
    prepare: Callable[[Path], AbstractContextManager[None]] = lambda tmp: nullcontext()
    data_home: str | None = None


@dataclass
class Result:
    run: Run
    requests: list[dict[str, Any]]
    db: Path

    @property
    def stderr(self) -> list[str]:
        return lines_of(self.run.stderr)


CASES: dict[str, Case] = {
    "stored": Case(["-u", "What is stored?"],
                   Script(text="Everything, in order.", input_tokens=12, output_tokens=34)),
    "error": Case(["tell me"], Script(chunks=["one ", "two ", "three"], error_after=2)),
    "continue": Case(["-c", "Deepest point?"], Script(text="The Mariana Trench."),
                     prepare=_france_and_ocean),
    "cid": Case(["--cid", "1", "And Spain?"], Script(text="Madrid."),
                prepare=_france_and_ocean),
    "no-history": Case(["--no-history", "hi"]),
    "config-off": Case(["hi"], config="history = false\n" + BASE_CONFIG),
    "under-a-file": Case(["hi"], data_home="plain-file"),
    "corrupt": Case(["hi"], prepare=_corrupt),
    "locked": Case(["hi"], prepare=_locked),
    "continue-corrupt": Case(["-c", "hi"], prepare=_corrupt),
    "continue-nothing": Case(["-c", "hi"]),
    "continue-off": Case(["-c", "hi"], config="history = false\n" + BASE_CONFIG),
    "cid-unknown": Case(["--cid", "7", "hi"], prepare=_france_and_ocean),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    """Every case in `CASES`, each against its own server and data directory, concurrently."""
    servers: list[ProviderServer] = []
    tmps = {name: tmp_path_factory.mktemp(name) for name in CASES}

    def run(name: str) -> Result:
        case, tmp = CASES[name], tmps[name]
        servers.append(server := ProviderServer(default=case.reply).start())
        env = environment(tmp, server, config=case.config)
        if case.data_home is not None:
            (tmp / case.data_home).write_text("")
            env["XDG_DATA_HOME"] = str(tmp / case.data_home)
        with case.prepare(tmp):
            done = termchat(case.args, env)
        return Result(done, [request.body for request in server.requests], db_of(tmp))

    with run_concurrently(CASES, run, servers) as results:
        yield results


# --- every exchange is stored -------------------------------------------------------------

def test_a_one_shot_run_stores_its_prompt_and_reply(results: dict[str, Result]) -> None:
    result = results["stored"]
    assert result.run.returncode == 0, result.run.stderr
    assert result.run.stdout == b"Everything, in order.\n"
    assert rows(result.db, "SELECT id, title, model FROM conversations") == [
        (1, "What is stored?", "openai:gpt-4.1-mini")]
    assert rows(result.db, "SELECT seq, role, text, status, model, provider, finish_reason, "
                           "input_tokens, output_tokens FROM messages ORDER BY seq") == [
        (0, "user", "What is stored?", "complete", "gpt-4.1-mini", "openai", None, None, None),
        (1, "assistant", "Everything, in order.", "complete", "gpt-4.1-mini", "openai", "stop",
         12, 34)]
    (duration,) = rows(result.db, "SELECT duration FROM messages WHERE seq = 1")[0]
    assert 0 < duration < 30


def test_the_prompt_is_stored_before_the_request_is_sent(provider_server: ProviderServer,
                                                         tmp_path: Path) -> None:
    provider_server.queue(Script(text="Late but here.", header_delay=1.5))
    proc = spawn(["Anyone there?"], environment(tmp_path, provider_server))
    (request,) = provider_server.wait_for_requests(1, timeout=20)
    in_flight = messages(db_of(tmp_path))
    assert request.first_chunk_at is None, "the reply started before the database was read"
    assert in_flight == [(0, "user", "Anyone there?", "complete"),
                         (1, "assistant", "", "streaming")]
    out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out) == (0, b"Late but here.\n"), err
    assert messages(db_of(tmp_path))[1] == (1, "assistant", "Late but here.", "complete")


def test_a_streaming_reply_is_checkpointed_and_the_key_is_never_stored(
        provider_server: ProviderServer, tmp_path: Path) -> None:
    chunks = [f"word{i} " for i in range(16)]
    provider_server.queue(Script(chunks=chunks, delay=0.2))
    env = environment(tmp_path, provider_server)
    env["OPENAI_API_KEY"] = SECRET
    proc = spawn(["count slowly"], env)
    db = db_of(tmp_path)
    seen: list[tuple[str, str]] = []
    files: dict[str, bytes] = {}
    while proc.poll() is None:
        row = reply_row(db)
        if row[0] and row not in seen:
            seen.append(row)
            # Mid-stream, the write-ahead log holds the newest writes: read every file.
            files.update(database_files(db))
        time.sleep(0.02)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    full = "".join(chunks)
    assert out.decode() == full + "\n"
    texts = [text for text, status in seen if status == "streaming"]
    assert len(texts) >= 2, f"the text did not grow while streaming: {seen}"
    assert all(a != b and b.startswith(a) for a, b in itertools.pairwise(texts))
    assert full.startswith(texts[-1])
    assert reply_row(db) == (full, "complete")

    assert "history.db-wal" in files
    files.update(database_files(db))
    for name, data in files.items():
        assert SECRET.encode() not in data and b"SECRET-4242" not in data, name
    assert provider_server.requests[0].headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_reply_stopped_by_a_signal_is_stored_cancelled_with_its_partial_text(
        provider_server: ProviderServer, tmp_path: Path, signum: int, code: int) -> None:
    provider_server.queue(Script(chunks=SLOW, delay=0.2))
    proc = spawn(["hi"], environment(tmp_path, provider_server))
    assert proc.stdout is not None
    first = os.read(proc.stdout.fileno(), 100)
    proc.send_signal(signum)
    rest, err = proc.communicate(timeout=10)
    assert proc.returncode == code, err
    printed = (first + rest).decode()
    assert printed.startswith("chunk0 ") and "chunk99" not in printed
    assert reply_row(db_of(tmp_path)) == (printed.removesuffix("\n"), "cancelled")


def test_a_provider_error_mid_stream_is_stored_with_its_partial_text(
        results: dict[str, Result]) -> None:
    result = results["error"]
    assert result.run.returncode == 1
    assert messages(result.db)[1] == (1, "assistant", "one two ", "error")
    (error,) = rows(result.db, "SELECT error FROM messages WHERE seq = 1")[0]
    assert "reported an error mid-reply" in error


def test_kill_9_mid_stream_leaves_a_partial_reply_that_continue_sends_as_context(
        provider_server: ProviderServer, tmp_path: Path) -> None:
    provider_server.queue(Script(chunks=[f"piece{i} " for i in range(80)], delay=0.1))
    env = environment(tmp_path, provider_server)
    proc = spawn(["Tell me a long story"], env)
    db = db_of(tmp_path)
    wait_for(lambda: reply_row(db)[0] != "")
    proc.kill()
    proc.communicate(timeout=10)
    partial, status = reply_row(db)
    assert partial.startswith("piece0 ") and status == "streaming"

    provider_server.queue(Script(text="And so it ends."))
    run = termchat(["-c", "Go on"], env)
    assert (run.returncode, run.stdout, run.stderr) == (0, b"And so it ends.\n", b"")
    assert provider_server.requests[-1].body["messages"] == [
        {"role": "user", "content": "Tell me a long story"},
        {"role": "assistant", "content": partial},
        {"role": "user", "content": "Go on"}]
    assert messages(db) == [(0, "user", "Tell me a long story", "complete"),
                            (1, "assistant", partial, "interrupted"),
                            (2, "user", "Go on", "complete"),
                            (3, "assistant", "And so it ends.", "complete")]

    show = termchat(["--show", "1"], env)
    assert show.returncode == 0
    shown = lines_of(show.stdout)
    header = "--- assistant · openai:gpt-4.1-mini · [interrupted: partial reply]"
    assert shown[shown.index("Tell me a long story") + 2].startswith(header)
    assert partial in show.stdout.decode()


# --- continuing ---------------------------------------------------------------------------

def test_continue_carries_the_last_conversations_turns_partial_replies_included(
        results: dict[str, Result]) -> None:
    result = results["continue"]
    assert result.run.returncode == 0, result.run.stderr
    assert result.run.stdout == b"The Mariana Trench.\n"
    (body,) = result.requests
    assert body["messages"] == [
        {"role": "user", "content": "Largest ocean?"},
        {"role": "assistant", "content": "The Pacific."},
        {"role": "user", "content": "And the smallest?"},
        {"role": "assistant", "content": "The Arc"},
        {"role": "user", "content": "Deepest point?"}]
    assert messages(result.db, 2)[4:] == [(4, "user", "Deepest point?", "complete"),
                                          (5, "assistant", "The Mariana Trench.", "complete")]
    assert len(messages(result.db, 1)) == 4


def test_cid_continues_the_conversation_it_names_without_its_failed_turns(
        results: dict[str, Result]) -> None:
    result = results["cid"]
    assert result.run.returncode == 0, result.run.stderr
    (body,) = result.requests
    assert body["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Spain?"}]
    assert messages(result.db, 1)[4:] == [(4, "user", "And Spain?", "complete"),
                                          (5, "assistant", "Madrid.", "complete")]
    assert len(messages(result.db, 2)) == 4


@pytest.mark.parametrize(("case", "code", "line"), [
    ("continue-nothing", 2, "termchat: -c/--continue: there is no conversation to continue "
                            "yet; leave out -c to start one"),
    ("continue-off", 2, "termchat: -c/--continue continues a stored conversation, but "
                        "history = false in "),
    ("cid-unknown", 2, "termchat: No conversation 7 in the history; `termchat --list` shows "
                       "the ids."),
    ("continue-corrupt", 1, "termchat: cannot continue a conversation: "),
])
def test_continuing_without_a_usable_conversation_is_one_line_and_sends_nothing(
        results: dict[str, Result], case: str, code: int, line: str) -> None:
    result = results[case]
    assert result.run.returncode == code
    (said,) = result.stderr
    assert said.startswith(line), said
    assert result.requests == [] and result.run.stdout == b""


# --- history off, or unusable -------------------------------------------------------------

@pytest.mark.parametrize("case", ["no-history", "config-off"])
def test_with_history_off_nothing_is_written(results: dict[str, Result], case: str) -> None:
    result = results[case]
    assert (result.run.returncode, result.run.stdout, result.run.stderr) == \
        (0, b"default reply\n", b"")
    assert not result.db.parent.exists()


@pytest.mark.parametrize(("case", "reason"), [
    ("under-a-file", "plain-file is not a directory"),
    ("corrupt", "is corrupt or not a database"),
    ("locked", "is locked by another process (waited 3 s)"),
])
def test_an_unusable_database_is_one_warning_and_the_chat_goes_on(
        results: dict[str, Result], case: str, reason: str) -> None:
    result = results[case]
    assert (result.run.returncode, result.run.stdout) == (0, b"default reply\n")
    (line,) = result.stderr
    assert line.startswith(OFF) and line.endswith(GOES_ON) and reason in line, line


def test_the_locked_database_was_left_untouched(results: dict[str, Result]) -> None:
    assert rows(results["locked"].db, "SELECT count(*) FROM messages") == [(0,)]


# --- two writers at once ------------------------------------------------------------------

def test_two_one_shot_runs_and_a_tui_writer_at_once_all_succeed(
        provider_server: ProviderServer, tmp_path: Path) -> None:
    # The demo reply quotes the prompt, so each reply says which run it belongs to.
    provider_server.default = Script(delay=0.04)
    env = environment(tmp_path, provider_server)
    db = db_of(tmp_path)
    HistoryStore.open(db).close()
    procs = {name: spawn([f"{name} asks"], env) for name in ("alpha", "beta")}
    provider_server.wait_for_requests(1, timeout=20)
    problems: list[str] = []
    gamma = "".join(f"gamma{i} " for i in range(30))

    def tui_writer() -> None:
        # What the TUI does: its own connection, a prompt, then checkpoints as it streams.
        with HistoryStore.open(db, warn=problems.append) as store:
            recorder = store.new_conversation().user_prompt("gamma asks", MODEL)
            reply = stored("", Status.STREAMING)
            for word in gamma.split():
                reply.add_text(f"{word} ")
                recorder.checkpoint(reply)
                time.sleep(0.05)
            reply.status = Status.COMPLETE
            recorder.finish(reply)

    writer = threading.Thread(target=tui_writer)
    writer.start()
    outputs = {name: proc.communicate(timeout=30) for name, proc in procs.items()}
    writer.join()
    assert problems == []
    first, second = provider_server.requests
    assert first.last_chunk_at is not None
    assert second.received_at < first.last_chunk_at, "the two runs did not overlap"
    replies = dict(rows(db, "SELECT c.title, m.text || '|' || m.status FROM messages m "
                            "JOIN conversations c ON c.id = m.conversation_id "
                            "WHERE m.role = 'assistant'"))
    assert replies.pop("gamma asks") == f"{gamma}|complete"
    for name, (out, err) in outputs.items():
        assert (procs[name].returncode, err) == (0, b"")
        assert f"> {name} asks" in out.decode()
        assert replies.pop(f"{name} asks") == out.decode().removesuffix("\n") + "|complete"
    assert replies == {}


# --- listing, showing, searching, exporting -----------------------------------------------

@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict[str, int]]:
    """A history of three conversations (an hour apart) and the environment to read it."""
    tmp = tmp_path_factory.mktemp("library")
    env = environment(tmp, base_url="http://127.0.0.1:9/v1")
    env["TZ"] = "UTC"
    db = db_of(tmp)
    ids = {
        "rome": seed(db, ("Plan a trip to Rome", stored("Day one: the Colosseum.")),
                     at=MAY_1),
        "regex": seed(db, ("Fix my regex", stored(
            "Use a raw string.", finish=Finish.from_raw("stop"), usage=Usage(12, 34))),
            ("Now explain it", stored("A raw string keeps back", Status.CANCELLED)),
            ("And escapes?", stored("", Status.ERROR, error=RateLimitedError("Slow down."))),
            at=MAY_1 + HOUR),
        "evil": seed(db, ("Evil \x1b]0;pwned\x07 title", stored("Harmless \x1b[2J reply.")),
                     at=MAY_1 + 2 * HOUR),
    }
    return env, ids


def test_list_is_plain_tab_separated_and_newest_first_when_piped(
        library: tuple[dict[str, str], dict[str, int]]) -> None:
    env, ids = library
    run = termchat(["--list"], env)
    assert (run.returncode, run.stderr) == (0, b"")
    assert lines_of(run.stdout) == [
        f"{ids['evil']}\t2024-05-01 11:00\topenai:gpt-4.1-mini\t2\tEvil \x1b]0;pwned\x07 title",
        f"{ids['regex']}\t2024-05-01 10:00\topenai:gpt-4.1-mini\t6\tFix my regex",
        f"{ids['rome']}\t2024-05-01 09:00\topenai:gpt-4.1-mini\t2\tPlan a trip to Rome"]
    limited = termchat(["--list", "--limit", "1"], env)
    assert [line.split("\t")[0] for line in lines_of(limited.stdout)] == [str(ids["evil"])]


def test_list_on_a_terminal_is_a_table_without_escape_sequences_from_titles(
        library: tuple[dict[str, str], dict[str, int]]) -> None:
    env, _ = library
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen([TERMCHAT, "--list"], stdout=terminal, stderr=subprocess.PIPE,
                                env={**env, "TERM": "dumb", "COLUMNS": "100"})
        os.close(terminal)
        output = b""
        while chunk := _read(controller):
            output += chunk
        assert proc.wait(timeout=10) == 0
    finally:
        os.close(controller)
    text = output.decode()
    assert "ID" in text and "Title" in text and "Plan a trip to Rome" in text
    assert "Evil" in text and "pwned" not in text


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the other end closed
        return b""


def test_search_finds_words_from_replies_and_says_when_nothing_matches(
        library: tuple[dict[str, str], dict[str, int]]) -> None:
    env, ids = library
    run = termchat(["--search", "colosseum"], env)
    assert (run.returncode, run.stderr) == (0, b"")
    assert lines_of(run.stdout) == [
        f"{ids['rome']}\t2024-05-01 09:00\tassistant\tPlan a trip to Rome\tDay one: the "
        "Colosseum."]
    prefix = termchat(["--search", "rege*"], env)
    assert [line.split("\t")[:3] for line in lines_of(prefix.stdout)] == [
        [str(ids["regex"]), "2024-05-01 10:00", "user"]]
    nothing = termchat(["--search", "marmot"], env)
    assert (nothing.returncode, nothing.stdout) == (0, b"")
    assert lines_of(nothing.stderr) == ["termchat: no messages match 'marmot'."]


def test_show_marks_how_each_reply_ended(
        library: tuple[dict[str, str], dict[str, int]]) -> None:
    env, ids = library
    run = termchat(["--show", str(ids["regex"])], env)
    assert (run.returncode, run.stderr) == (0, b"")
    # Each heading ends with its message's number, in the order they were written.
    lines = lines_of(run.stdout)
    numbers = [int(n) for n in re.findall(r"^--- .* · #(\d+)$", "\n".join(lines), re.M)]
    assert len(numbers) == 6 and numbers == sorted(numbers)
    assert [re.sub(r" · #\d+$", "", line) for line in lines] == [
        f"Conversation {ids['regex']}: Fix my regex",
        "model openai:gpt-4.1-mini · started 2024-05-01 10:00 · updated 2024-05-01 10:00 · "
        "6 messages",
        "", "--- user", "Fix my regex",
        "", "--- assistant · openai:gpt-4.1-mini · finish stop · in 12 · out 34 · 1.5s",
        "Use a raw string.",
        "", "--- user", "Now explain it",
        "", "--- assistant · openai:gpt-4.1-mini · [cancelled: partial reply] · 1.5s",
        "A raw string keeps back",
        "", "--- user", "And escapes?",
        "", "--- assistant · openai:gpt-4.1-mini · [error: Slow down.] · 1.5s", ""]


def test_export_markdown_contains_every_message(
        library: tuple[dict[str, str], dict[str, int]]) -> None:
    env, ids = library
    run = termchat(["--export", str(ids["regex"])], env)
    assert run.returncode == 0
    markdown = run.stdout.decode()
    assert markdown.startswith("# Fix my regex\n")
    order = [markdown.index(text) for text in (
        "## User\n\nFix my regex", "Use a raw string.", "## User\n\nNow explain it",
        "A raw string keeps back", "*cancelled", "## User\n\nAnd escapes?", "*error")]
    assert order == sorted(order)


def test_export_json_round_trips_what_is_stored(
        library: tuple[dict[str, str], dict[str, int]]) -> None:
    env, ids = library
    for name in ("regex", "evil"):
        run = termchat(["--export", str(ids[name]), "--format", "json"], env)
        assert run.returncode == 0
        with HistoryStore.open(Path(env["XDG_DATA_HOME"]) / "termchat" / "history.db") as store:
            assert json.loads(run.stdout) == as_json(store.tree(ids[name], blobs=True))
    assert "Harmless \x1b[2J reply." in [m["text"] for m in json.loads(run.stdout)["messages"]]


def test_unknown_ids_are_one_line_and_exit_2(
        library: tuple[dict[str, str], dict[str, int]]) -> None:
    env, _ = library
    for args in (["--show", "99"], ["--export", "abc", "--format", "json"]):
        run = termchat(args, env)
        assert (run.returncode, run.stdout) == (2, b"")
        assert lines_of(run.stderr) == [f"termchat: No conversation {args[1]} in the history; "
                                        "`termchat --list` shows the ids."]


def test_an_empty_history_is_a_friendly_line_and_is_not_created(tmp_path: Path) -> None:
    env = environment(tmp_path)
    run = termchat(["--list"], env)
    assert (run.returncode, run.stdout) == (0, b"")
    assert lines_of(run.stderr) == ["termchat: no conversations are stored yet."]
    assert not db_of(tmp_path).parent.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--list", "hello"], "--list takes no prompt (got 'hello')"),
    (["--search", "two", "words"], "--search takes no prompt (got 'words'); quote the words"),
    (["--list", "--show", "1"], "argument --show: not allowed with argument --list"),
    (["--export", "1", "--search", "x"], "argument --search: not allowed with argument"),
    (["--show", "1", "-c"], "--show cannot be combined with -c/--continue"),
    (["--list", "--json"], "--list cannot be combined with --json"),
    (["--format", "json", "hi"], "--format goes with --export"),
    (["--limit", "3", "--show", "1"], "--limit goes with --list or --search"),
    (["--list", "--limit", "0"], "--limit must be above 0"),
    (["--search", " * "], "--search needs a word to look for"),
    (["-c", "--cid", "1", "hi"], "argument --cid: not allowed with argument -c/--continue"),
    (["-c", "--no-history", "hi"], "-c/--continue continues a stored conversation, but "
                                   "--no-history turns the history off"),
])
def test_history_options_used_wrongly_are_one_usage_line(
        tmp_path: Path, args: list[str], message: str) -> None:
    run = termchat(args, environment(tmp_path, base_url="http://127.0.0.1:9/v1"))
    assert (run.returncode, run.stdout) == (2, b"")
    (line,) = lines_of(run.stderr)
    assert line.startswith(f"termchat: {message}"), line
    assert not db_of(tmp_path).exists()


# --- the TUI on a stored conversation -----------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


TuiRun = Callable[[list[str]], dict[str, Any]]


@pytest.fixture
def tui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TuiRun:
    """Runs `cli.main(args)` as on a terminal; what `run_tui` was called with."""
    env = environment(tmp_path, base_url="http://127.0.0.1:9/v1")
    for name in [n for n in os.environ if n.startswith(("OPENAI_", "ANTHROPIC_", "TERMCHAT_"))]:
        monkeypatch.delenv(name)
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.setenv(name, env[name])
    calls: list[dict[str, Any]] = []

    def run_tui(config: object, model: ModelConfig, **options: Any) -> int:
        calls.append({"model": model, "collecting": gc.isenabled(), **options})
        return 0

    monkeypatch.setattr("termchat.tui.app.run_tui", run_tui)

    def run(args: list[str]) -> dict[str, Any]:
        # Set here, not in the fixture: pytest's capture replaces the streams for the test.
        with monkeypatch.context() as patch:
            patch.setattr("sys.stdin", _Terminal())
            patch.setattr("sys.stdout", _Terminal())
            assert cli.main(args) == 0
        call = calls.pop()
        # Start-up runs without the cyclic collector (the TUI turns it on after its first
        # frame); `main` gives it back as it found it.
        assert call.pop("collecting") is False and gc.isenabled()
        if call.get("history") is not None:
            call["history"].close()
        return call

    return run


def test_continue_with_no_prompt_on_a_terminal_opens_the_tui_on_the_last_conversation(
        tui: TuiRun, tmp_path: Path) -> None:
    _france_and_ocean(tmp_path)
    call = tui(["-c"])
    conversation: Conversation = call["conversation"]
    assert [(e.prompt, e.reply.text, e.reply.status) for e in conversation.exchanges] == [
        ("Largest ocean?", "The Pacific.", Status.COMPLETE),
        ("And the smallest?", "The Arc", Status.CANCELLED)]
    assert conversation.model.label == "openai:gpt-4.1-mini"
    assert isinstance(conversation.history, ConversationRecord)
    assert conversation.history.id == 2
    assert call["history"] is conversation.history.store

    conversation = tui(["--cid", "1", "-m", "openai:other-model"])["conversation"]
    assert [e.prompt for e in conversation.exchanges] == ["Capital of France?", "Population?"]
    assert conversation.model.label == "openai:other-model"


@pytest.mark.parametrize(("args", "config", "enabled"), [
    ([], BASE_CONFIG, True),
    (["--no-history"], BASE_CONFIG, False),
    ([], "history = false\n" + BASE_CONFIG, False),
])
def test_a_fresh_tui_opens_the_history_unless_it_is_off(
        tui: TuiRun, tmp_path: Path, args: list[str], config: str, enabled: bool) -> None:
    (tmp_path / "config" / "termchat" / "config.toml").write_text(config)
    call = tui(args)
    assert call == {"model": call["model"], "history_enabled": enabled, "tools": True,
                    "yes": False, "allow_tools": ()}
    assert not db_of(tmp_path).exists(), "the app opens the history, after its first frame"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_continue_in_a_real_terminal_shows_the_last_conversation_and_goes_on_with_it(
        tmux: Tmux, provider_server: ProviderServer, tmp_path: Path) -> None:
    _france_and_ocean(tmp_path)
    provider_server.queue(Script(text="The Mariana Trench.", chunk_size=4, delay=0.01))
    tmux.start(f"{TERMCHAT} -c; echo EXIT=$?; sleep 600")
    tmux.wait_for(r"The Pacific\.")
    tmux.wait_for(r"The Arc")
    tmux("send-keys", "-l", "Deepest point?")
    tmux("send-keys", "Enter")
    tmux.wait_for(r"The Mariana Trench\.")
    tmux("send-keys", "C-q")
    tmux.wait_for(r"^EXIT=0$")
    assert [m["content"] for m in provider_server.requests[-1].body["messages"]] == [
        "Largest ocean?", "The Pacific.", "And the smallest?", "The Arc", "Deepest point?"]
    assert messages(db_of(tmp_path), 2)[4:] == [
        (4, "user", "Deepest point?", "complete"),
        (5, "assistant", "The Mariana Trench.", "complete")]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_continuing_a_long_conversation_at_once_sends_all_of_it(
        tmux: Tmux, provider_server: ProviderServer, tmp_path: Path) -> None:
    """The TUI reads a long conversation's end before its first frame and the rest after it:
    a prompt typed the moment the end shows still goes with every earlier exchange."""
    exchanges = OPENED_EXCHANGES * 3
    seed(db_of(tmp_path), *[(f"Question {n}?", stored(f"Answer {n}.")) for n in range(exchanges)])
    provider_server.queue(Script(text="All of them.", chunk_size=4, delay=0.01))
    tmux.start(f"{TERMCHAT} -c; echo EXIT=$?; sleep 600")
    tmux.wait_for(rf"Answer {exchanges - 1}\.")
    tmux("send-keys", "-l", "How many?")
    tmux("send-keys", "Enter")
    tmux.wait_for(r"All of them\.")
    tmux("send-keys", "C-q")
    tmux.wait_for(r"^EXIT=0$")
    sent = [m["content"] for m in provider_server.requests[-1].body["messages"]]
    assert sent == [*itertools.chain.from_iterable(
        (f"Question {n}?", f"Answer {n}.") for n in range(exchanges)), "How many?"]
