"""Steering from the command line: `termchat -c --continue-reply` (or `--cid ID
--continue-reply`) streams the rest of a cut-off or cancelled reply into the same stored
reply, and `termchat --fork ID[:MSG] "prompt"` goes on in a new conversation that starts as
a copy of another, up to one of its messages. The installed command, the real SDKs, the local
provider server."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from termchat.devserver import ProviderServer, Script
from termchat.history import HistoryStore
from tests.support.cli import environment, lines_of, spawn, termchat
from tests.support.models import PROVIDERS

LENGTH = {"openai": "length", "anthropic": "max_tokens"}


def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "termchat" / "history.db"


def messages(server: ProviderServer) -> list[tuple[str, Any]]:
    def text(content: Any) -> Any:
        if isinstance(content, list):
            return "".join(block.get("text", "") for block in content)
        return content
    return [(m["role"], text(m["content"])) for m in server.requests[-1].body["messages"]
            if m["role"] != "system"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_continue_reply_streams_the_rest_into_the_same_reply(
        srv: ProviderServer, tmp_path: Path, provider: str) -> None:
    env = environment(tmp_path, srv, provider)
    srv.queue(Script(text="Counting: one, two, ", finish=LENGTH[provider]),
              Script(text="three, four."))
    first = termchat(["count to four"], env)
    assert first.returncode == 0
    assert "termchat -c --continue-reply" in first.stderr.decode()

    more = termchat(["-c", "--continue-reply", "-u"], env)
    assert more.returncode == 0, more.stderr
    assert more.stdout == b"three, four.\n"
    [usage] = lines_of(more.stderr)
    assert usage.startswith("finish ") and usage.endswith(" · continued")
    # The model is shown the partial: a prefill for Anthropic, the partial and an
    # instruction to go on for OpenAI-compatible servers.
    if provider == "anthropic":
        assert messages(srv)[-1] == ("assistant", "Counting: one, two,")
    else:
        assert messages(srv)[-2] == ("assistant", "Counting: one, two, ")
        assert messages(srv)[-1][0] == "user"

    with HistoryStore.open(db(tmp_path)) as store:
        [conversation] = store.list_conversations()
        shown = store.get(conversation.id).messages
    assert [m.text for m in shown] == ["count to four", "Counting: one, two, three, four."]
    assert (shown[1].status, shown[1].continuations) == ("complete", 1)

    # Nothing left to continue: one sentence, exit 2, nothing sent.
    sent = len(srv.requests)
    again = termchat(["-c", "--continue-reply"], env)
    assert again.returncode == 2 and len(srv.requests) == sent
    assert lines_of(again.stderr) == ["termchat: The last reply was not cut off, so there is "
                                      "nothing to continue; regenerate it for a new one."]


def test_a_cancelled_reply_continues_by_conversation_id_with_json(
        srv: ProviderServer, tmp_path: Path) -> None:
    env = environment(tmp_path, srv)
    srv.queue(Script(text="alpha beta gamma delta " * 40, chunk_size=4, delay=0.05),
              Script(text=" and the end."))
    proc = spawn(["a long answer"], env)
    assert proc.stdout is not None
    proc.stdout.read(20)  # the reply is streaming
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    with HistoryStore.open(db(tmp_path)) as store:
        [conversation] = store.list_conversations()
        partial = store.get(conversation.id).messages[1]
    assert partial.status == "cancelled"

    run = termchat(["--cid", str(conversation.id), "--continue-reply", "--json"], env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["continued"] == 1 and result["status"] == "complete"
    assert result["text"].startswith(partial.text) and result["text"].endswith(" and the end.")
    with HistoryStore.open(db(tmp_path)) as store:
        assert store.get(conversation.id).messages[1].text == result["text"]


def test_continue_reply_needs_a_stored_conversation_and_no_prompt(
        srv: ProviderServer, tmp_path: Path) -> None:
    env = environment(tmp_path, srv)
    for args, says in [
            (["--continue-reply"], "give -c (the last conversation) or --cid ID"),
            (["-c", "--continue-reply", "more"], "takes no prompt or attachment")]:
        run = termchat(args, env)
        assert run.returncode == 2 and says in run.stderr.decode()
    assert srv.requests == []


def test_fork_copies_a_conversation_up_to_a_message_and_goes_on_in_a_new_one(
        srv: ProviderServer, tmp_path: Path) -> None:
    env = environment(tmp_path, srv)
    srv.queue(Script(text="A1"), Script(text="A2"), Script(text="forked"), Script(text="all"))
    assert termchat(["one"], env).returncode == 0
    assert termchat(["-c", "two"], env).returncode == 0
    show = termchat(["--show", "1"], env).stdout.decode()
    numbers = re.findall(r"^--- .* · #(\d+)$", show, re.M)
    assert len(numbers) == 4
    first_reply = numbers[1]

    run = termchat(["--fork", f"1:{first_reply}", "three"], env)
    assert (run.returncode, run.stdout) == (0, b"forked\n")
    assert messages(srv) == [("user", "one"), ("assistant", "A1"), ("user", "three")]
    run = termchat(["--fork", "1", "four"], env)
    assert run.returncode == 0
    assert [m[1] for m in messages(srv)] == ["one", "A1", "two", "A2", "four"]

    with HistoryStore.open(db(tmp_path)) as store:
        texts = {c.id: [m.text for m in store.get(c.id).messages]
                 for c in store.list_conversations()}
    assert texts == {1: ["one", "A1", "two", "A2"], 2: ["one", "A1", "three", "forked"],
                     3: ["one", "A1", "two", "A2", "four", "all"]}
    # The new conversation is the one -c goes on with.
    srv.queue(Script(text="ok"))
    assert termchat(["-c", "five"], env).returncode == 0
    assert [m[1] for m in messages(srv)][-2:] == ["all", "five"]


def test_fork_refuses_what_it_cannot_fork_in_one_sentence(
        srv: ProviderServer, tmp_path: Path) -> None:
    env = environment(tmp_path, srv)
    srv.queue(Script(text="A1"))
    assert termchat(["one"], env).returncode == 0
    for value, says in [("1:x", "MSG is a message number as --show 1 prints them"),
                        ("1:999", "has no message 999"), ("42", "42")]:
        run = termchat(["--fork", value, "hi"], env)
        [line] = lines_of(run.stderr)
        assert run.returncode != 0 and says in line and "Traceback" not in line
    assert termchat(["--fork", "1", "-c", "hi"], env).returncode == 2
    assert len(srv.requests) == 1
