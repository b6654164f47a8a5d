"""History schema v3 on the way out and back in: `--show` and the Markdown export print the
active branch with its tool calls, attachments and alternatives; the JSON export holds the
whole tree and the files, and imports back as the same conversation."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from termchat.config import ModelConfig
from termchat.content import Attachment, AttachmentKind, ToolCall, ToolOutcome, ToolResult
from termchat.events import Finish, Usage
from termchat.history import HistoryError, HistoryStore, as_json, as_markdown
from termchat.history.export import shortened
from termchat.turn import Reply, Status
from tests.support.cli import environment, lines_of, on_terminal, termchat

MODEL = ModelConfig(name="gpt", provider="openai", model="gpt-4.1-mini")
MAY_1 = 1714554000.0  # 2024-05-01 09:00 UTC
NOTES = b"# Notes\nParis is UTC+2 in May.\n"
FORBIDDEN = set("\x1b\x07\x9b\u202e")


def attachment(data: bytes, name: str) -> Attachment:
    return Attachment(name, "text/plain", AttachmentKind.TEXT, hashlib.sha256(data).hexdigest(),
                      len(data), data)


def reply(text: str = "", *, tools: bool = False, result: str = "11:00") -> Reply:
    answer = Reply(model=MODEL.model, provider=MODEL.provider, status=Status.STREAMING)
    answer.started_at, answer.first_token_at = 0.0, 0.5
    if tools:
        answer.add_reasoning("Need the time.")
        answer.sign_reasoning("sig", None)
        answer.add_text("Let me check.")
        answer.add(ToolCall("c1", "time__now", '{"tz": "Europe/Paris"}'))
        answer.add(ToolCall("c2", "files__read", '{"path": "x"}'))
        answer.add(ToolResult("c1", result))
        answer.add(ToolResult("c2", "The user declined.", True, ToolOutcome.DENIED))
    if text:
        answer.add_text(text)
    answer.status, answer.finish, answer.usage = Status.COMPLETE, Finish.from_raw("stop"), \
        Usage(12, 34)
    answer.ended_at = 1.5
    return answer


def seed(store: HistoryStore, result: str = "11:00") -> int:
    """A conversation with a tool turn, an attachment, and a regenerated second reply whose
    first version is shown; an undone third exchange hangs off it."""
    record = store.new_conversation()
    record.user_prompt("Time in Paris?", MODEL, (attachment(NOTES, "notes.md"),)).finish(
        reply("It is 11:00.", tools=True, result=result))
    record.user_prompt("And in Rome?", MODEL).finish(reply("Also 11:00."))
    prompt, first = (m.id for m in store.get(record.id or 0).messages[2:])
    record.regenerate(prompt, MODEL).finish(reply("The same as Paris."))
    record.set_active(first)
    record.user_prompt("Thanks", MODEL).finish(reply("You're welcome."))
    record.undo()
    assert record.id is not None
    return record.id


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "termchat" / "history.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore.open(db_path) as opened:
        yield opened


def backdated(db_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE conversations SET created = ?, updated = ?", (MAY_1, MAY_1))
    db.close()


# -- show and Markdown ---------------------------------------------------------------------

def test_show_prints_the_branch_shown_with_tools_attachments_and_alternatives(
        store: HistoryStore, db_path: Path, tmp_path: Path) -> None:
    cid = seed(store)
    backdated(db_path)
    env = {**environment(tmp_path, base_url="http://127.0.0.1:9/v1"), "TZ": "UTC"}
    run = termchat(["--show", str(cid)], env)
    assert (run.returncode, run.stderr) == (0, b"")
    reply_head = "assistant · openai:gpt-4.1-mini · finish stop · in 12 · out 34 · 1.5s"
    assert lines_of(run.stdout) == [
        f"Conversation {cid}: Time in Paris?",
        "model gpt · started 2024-05-01 09:00 · updated 2024-05-01 09:00 · 4 messages",
        "", "--- user", "Time in Paris?", "[attached notes.md (31 B, text/plain)]",
        "", f"--- {reply_head}", "Let me check.",
        '[tool time__now {"tz": "Europe/Paris"} → ok]', "  11:00",
        '[tool files__read {"path": "x"} → denied]', "  The user declined.",
        "It is 11:00.",
        "", "--- user", "And in Rome?",
        "", f"--- {reply_head} (alternative 1 of 2)", "Also 11:00."]


def test_show_on_a_terminal_keeps_a_hostile_tool_result_off_the_terminal(
        store: HistoryStore, tmp_path: Path) -> None:
    cid = seed(store, result="pwn \x1b]52;c;aGk=\x07 \x1b[2J \u202eevil")
    env = environment(tmp_path, base_url="http://127.0.0.1:9/v1")
    for args in (["--show", str(cid)], ["--export", str(cid)]):
        code, out, err = on_terminal(args, env)
        assert (code, err) == (0, b"")
        text = out.decode()
        assert "time__now" in text and "notes.md" in text and "alternative 1 of 2" in text
        # Only termchat's own styling: no OSC, no clear screen, no bidi override from the tool.
        assert "\x1b]" not in text and "\x1b[2J" not in text and "\u202e" not in text


def test_markdown_shows_the_branch_with_tools_attachments_and_alternatives(
        store: HistoryStore) -> None:
    markdown = as_markdown(store.get(seed(store)))
    expected = ["## User", "", "Time in Paris?", "", "Attached: notes.md (31 B, text/plain)",
                "", "## Assistant (openai:gpt-4.1-mini)", "",
                "<details><summary>Reasoning</summary>", "", "Need the time.", "",
                "</details>", "", "Let me check.", "",
                "**Tool** `time__now` → ok", "", "```json", '{"tz": "Europe/Paris"}', "```", "",
                "Result:", "", "```", "11:00", "```", "",
                "**Tool** `files__read` → denied", "", "```json", '{"path": "x"}', "```", "",
                "Result:", "", "```", "The user declined.", "```", "",
                "It is 11:00.", ""]
    lines = markdown.splitlines()
    start = lines.index("## User")
    assert lines[start:start + len(expected)] == expected
    assert "## Assistant (openai:gpt-4.1-mini) · alternative 1 of 2" in lines
    assert "The same as Paris." not in markdown and "You're welcome." not in markdown


def test_a_result_with_backticks_cannot_end_its_code_block(store: HistoryStore) -> None:
    markdown = as_markdown(store.get(seed(store, result="```\n# not a heading")))
    assert "````\n```\n# not a heading\n````" in markdown


def test_long_results_are_shortened_saying_how_much_was_left() -> None:
    assert shortened("short") == "short"
    assert shortened("\n".join(str(i) for i in range(10))) == "0\n1\n2\n3\n4\n5…\n(4 more lines)"
    assert shortened("x" * 1000) == "x" * 600 + "…\n(400 more characters)"


# -- JSON, the whole tree ------------------------------------------------------------------

def test_export_json_holds_every_branch_and_the_files(store: HistoryStore) -> None:
    cid = seed(store)
    exported = json.loads(json.dumps(as_json(store.tree(cid, blobs=True))))
    assert exported["version"] == 2
    messages = exported["messages"]
    assert [(m["role"], m["text"], m["active"]) for m in messages] == [
        ("user", "Time in Paris?", True), ("assistant", "Let me check.It is 11:00.", True),
        ("user", "And in Rome?", True), ("assistant", "Also 11:00.", True),
        ("assistant", "The same as Paris.", False),
        ("user", "Thanks", False), ("assistant", "You're welcome.", True)]
    parents = [m["parent"] for m in messages]
    ids = [m["id"] for m in messages]
    assert parents == [None, ids[0], ids[1], ids[2], ids[2], ids[3], ids[5]]
    assert messages[1]["parts"][:3] == [
        {"type": "reasoning", "text": "Need the time.", "provider": "openai",
         "signature": "sig"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_call", "id": "c1", "name": "time__now",
         "arguments": '{"tz": "Europe/Paris"}'}]
    assert messages[1]["parts"][5] == {"type": "tool_result", "call_id": "c2",
                                       "content": "The user declined.", "is_error": True,
                                       "outcome": "denied"}
    digest = hashlib.sha256(NOTES).hexdigest()
    assert messages[0]["parts"][1] == {"type": "attachment", "name": "notes.md",
                                       "media_type": "text/plain", "kind": "text",
                                       "digest": digest, "size": len(NOTES)}
    assert exported["attachments"] == {digest: {
        "media_type": "text/plain", "size": len(NOTES),
        "data": base64.b64encode(NOTES).decode()}}


def test_export_json_from_the_command_line_is_the_whole_tree(
        store: HistoryStore, tmp_path: Path) -> None:
    cid = seed(store)
    env = environment(tmp_path, base_url="http://127.0.0.1:9/v1")
    run = termchat(["--export", str(cid), "--format", "json"], env)
    assert run.returncode == 0
    assert json.loads(run.stdout) == as_json(store.tree(cid, blobs=True))
    assert len(json.loads(run.stdout)["messages"]) == 7


def normalised(exported: dict[str, Any]) -> dict[str, Any]:
    """An export with what an import cannot keep taken out: the conversation's id and
    `updated` (the import's time), and the message ids (parents named by position)."""
    data = copy.deepcopy(exported)
    position = {m["id"]: index for index, m in enumerate(data["messages"])}
    for message in data["messages"]:
        message["id"] = position[message["id"]]
        message["parent"] = None if message["parent"] is None else position[message["parent"]]
    del data["id"], data["updated"]
    return data


def test_export_import_export_gives_the_same_conversation(store: HistoryStore,
                                                          tmp_path: Path) -> None:
    cid = seed(store)
    first = json.loads(json.dumps(as_json(store.tree(cid, blobs=True))))
    with HistoryStore.open(tmp_path / "elsewhere.db") as other:
        imported = other.import_json(first)
        second = json.loads(json.dumps(as_json(other.tree(imported, blobs=True))))
        assert [e.reply.text for e in other.load(imported).exchanges] == [
            e.reply.text for e in store.load(cid).exchanges]
        assert other.load(imported).exchanges[0].attachments[0].data == NOTES
    assert normalised(second) == normalised(first)
    assert second["id"] == imported and second["updated"] != first["updated"]
    # Into the same store, the file is still stored once.
    again = store.import_json(first)
    assert normalised(as_json(store.tree(again, blobs=True))) == normalised(first)
    assert {hit.conversation_id for hit in store.search("Rome")} == {cid, again}


def test_a_version_1_export_imports_as_one_branch(store: HistoryStore) -> None:
    old = {"format": "termchat-conversation", "version": 1, "id": 3, "title": "Old",
           "model": "gpt", "created": "2024-05-01T09:00:00+00:00",
           "updated": "2024-05-01T09:05:00+00:00", "messages": [
               {"seq": 0, "role": "user", "text": "What is a marmot?", "reasoning": "",
                "model": "gpt-4.1-mini", "provider": "openai", "status": "complete",
                "finish_reason": None, "finish_kind": None,
                "usage": {"input_tokens": None, "output_tokens": None, "cached_tokens": None,
                          "reasoning_tokens": None}, "ttft": None, "duration": None,
                "error": None, "error_kind": None, "created": "2024-05-01T09:00:00+00:00",
                "updated": "2024-05-01T09:00:00+00:00"},
               {"seq": 1, "role": "assistant", "text": "A ground squirrel.",
                "reasoning": "Rodents.", "model": "gpt-4.1-mini", "provider": "openai",
                "status": "streaming", "finish_reason": "stop", "finish_kind": "complete",
                "usage": {"input_tokens": 5, "output_tokens": 4, "cached_tokens": 0,
                          "reasoning_tokens": None}, "ttft": 0.3, "duration": 1.2,
                "error": None, "error_kind": None, "created": "2024-05-01T09:00:01+00:00",
                "updated": "2024-05-01T09:00:02+00:00"}]}
    cid = store.import_json(old)
    [exchange] = store.load(cid).exchanges
    assert (exchange.prompt, exchange.reply.text, exchange.reply.reasoning) == (
        "What is a marmot?", "A ground squirrel.", "Rodents.")
    assert exchange.reply.status is Status.INTERRUPTED
    assert exchange.reply.usage == Usage(5, 4, 0)
    assert store.get(cid).created == MAY_1


@pytest.mark.parametrize(("change", "why"), [
    (lambda d: d.update(format="other"), "its format is not"),
    (lambda d: d.update(version=9), "version 9 is not one"),
    (lambda d: d["messages"][1].update(parent=12345), "message 2 comes before its parent"),
    (lambda d: d["messages"][4].update(active=True),
     "message 5: its parent has two active children"),
    (lambda d: d["messages"][0]["parts"].append({"type": "tool_call", "id": "x", "name": "y",
                                                 "arguments": ""}),
     "a user message cannot hold a ToolCall part"),
    (lambda d: d["attachments"].clear(), "'notes.md' is not among the attachments"),
    (lambda d: next(iter(d["attachments"].values())).update(data="AAAA"),
     "does not have that sha256 digest"),
    (lambda d: d["messages"][3].update(role="user"), "has the same role as its parent"),
    (lambda d: d["messages"][3].update(status="done"), "status 'done' is not one"),
    (lambda d: d["messages"][3]["usage"].update(input_tokens=-1), "must be a whole number"),
    (lambda d: d["messages"][3].update(created="yesterday"), "not an ISO 8601 time"),
], ids=["format", "version", "parent", "active", "part", "missing file", "digest", "roles",
        "status", "usage", "time"])
def test_import_refuses_what_is_not_an_export_in_one_line(
        store: HistoryStore, change: Any, why: str) -> None:
    exported = json.loads(json.dumps(as_json(store.tree(seed(store), blobs=True))))
    before = len(store.list_conversations())
    change(exported)
    with pytest.raises(HistoryError, match=f"^Not a conversation termchat can import: .*{why}"):
        store.import_json(exported)
    assert len(store.list_conversations()) == before


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2, 10) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)


@pytest.fixture(scope="module")
def exported_once(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with HistoryStore.open(tmp_path_factory.mktemp("export") / "h.db") as store:
        return json.loads(json.dumps(as_json(store.tree(seed(store), blobs=True))))


@pytest.mark.fuzz
@given(st.lists(st.tuples(st.integers(0, 200), json_values), min_size=1, max_size=3))
def test_a_damaged_export_is_imported_or_refused_in_one_line(
        tmp_path_factory: pytest.TempPathFactory, exported_once: dict[str, Any],
        damage: list[tuple[int, Any]]) -> None:
    """Any value put anywhere in a real export: imported, or one `HistoryError` line."""
    data = copy.deepcopy(exported_once)
    for where, value in damage:
        _put(data, where, value)
    with HistoryStore.open(tmp_path_factory.mktemp("import") / "h.db") as store:
        try:
            cid = store.import_json(data)
        except HistoryError as exc:
            assert "\n" not in exc.message
        else:
            store.load(cid)
            as_markdown(store.get(cid))


def _put(data: Any, where: int, value: Any) -> None:
    """Replace the `where`-th value found walking `data` (modulo their count) by `value`."""
    slots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        for key, child in items:
            slots.append((node, key))
            walk(child)

    walk(data)
    node, key = slots[where % len(slots)]
    node[key] = value
