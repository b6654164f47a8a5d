"""History schema v3, the tree: a conversation keeps every branch it grew (a regenerated
reply, an edited prompt, a continued reply, an undone exchange, a fork), shows and sends one
path through them, and flips between them without losing any."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from termchat.config import Config, ModelConfig
from termchat.content import Attachment, AttachmentKind, Text, ToolCall, ToolResult
from termchat.events import Finish, Usage
from termchat.history import ConversationRecord, HistoryError, HistoryStore, continue_conversation
from termchat.turn import Conversation, Exchange, Reply, Status

MODEL = ModelConfig(name="gpt", provider="openai", model="gpt-4.1-mini")
CLAUDE = ModelConfig(name="claude", provider="anthropic", model="claude-sonnet-4-5")
CONFIG = Config(path=Path("/nonexistent/termchat.toml"), models={"gpt": MODEL})


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "history.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[HistoryStore]:
    with HistoryStore.open(db_path) as opened:
        yield opened


def done(text: str, status: Status = Status.COMPLETE, **fields: object) -> Reply:
    reply = Reply(model=MODEL.model, provider=MODEL.provider, initial_text=text, status=status,
                  **fields)
    reply.started_at, reply.first_token_at, reply.ended_at = 0.0, 0.5, 2.0
    return reply


def chat(record: ConversationRecord, *turns: tuple[str, str]) -> ConversationRecord:
    for prompt, answer in turns:
        record.user_prompt(prompt, MODEL).finish(done(answer))
    return record


def path_texts(store: HistoryStore, cid: int | None) -> list[str]:
    return [m.text for m in store.get(cid or 0).messages]


def ids(store: HistoryStore, cid: int | None) -> list[int]:
    return [m.id for m in store.get(cid or 0).messages]


# -- regenerate -----------------------------------------------------------------------------

def test_regenerate_shows_the_new_reply_and_keeps_the_old_one_to_flip_back_to(
        store: HistoryStore) -> None:
    record = chat(store.new_conversation(), ("Name a colour", "Teal."), ("A shape?", "Hexagon."))
    prompt, old = ids(store, record.id)[2:]

    record.regenerate(prompt, CLAUDE).finish(done("Circle."))
    assert path_texts(store, record.id) == ["Name a colour", "Teal.", "A shape?", "Circle."]
    new = store.get(record.id or 0).messages[3]
    assert (new.siblings.ids, new.siblings.position, new.siblings.count) == ((old, new.id), 2, 2)
    assert store.siblings(old).position == 1
    assert store.get(record.id or 0).model == "claude"
    # What the next turn sends is what is shown.
    assert [e.reply.text for e in store.load(record.id or 0).exchanges] == ["Teal.", "Circle."]

    record.set_active(old)
    assert path_texts(store, record.id)[-1] == "Hexagon."
    assert [m.text for m in store.tree(record.id or 0).messages] == [
        "Name a colour", "Teal.", "A shape?", "Hexagon.", "Circle."]
    record.user_prompt("Why?", MODEL).finish(done("Six sides."))
    assert path_texts(store, record.id)[3:] == ["Hexagon.", "Why?", "Six sides."]


def test_a_regenerated_reply_is_checkpointed_while_it_streams(store: HistoryStore,
                                                              db_path: Path) -> None:
    record = chat(store.new_conversation(), ("Tell a joke", "Knock knock."))
    recorder = record.regenerate(ids(store, record.id)[0], MODEL)
    reply = Reply(status=Status.STREAMING)
    reply.add_text("Why did")
    recorder.checkpoint(reply)
    with HistoryStore.open(db_path) as other:
        shown = other.get(record.id or 0).messages[1]
    assert (shown.text, shown.status, shown.siblings.position) == ("Why did", "streaming", 2)


# -- edit and resend ------------------------------------------------------------------------

def test_edit_and_resend_starts_a_branch_and_the_old_one_can_be_restored(
        store: HistoryStore) -> None:
    record = chat(store.new_conversation(), ("Plan a trip", "Where to?"),
                  ("Rome", "Day one: the Colosseum."), ("And day two?", "The Vatican."))
    first_reply, rome = ids(store, record.id)[1:3]

    record.prompt_after(first_reply, "Paris", MODEL).finish(done("Day one: the Louvre."))
    assert path_texts(store, record.id) == ["Plan a trip", "Where to?", "Paris",
                                            "Day one: the Louvre."]
    paris = store.get(record.id or 0).messages[2]
    assert (paris.siblings.ids, paris.siblings.position) == ((rome, paris.id), 2)

    # Flipping back to Rome brings its whole branch, down to its last exchange.
    record.set_active(rome)
    assert path_texts(store, record.id)[2:] == ["Rome", "Day one: the Colosseum.",
                                                "And day two?", "The Vatican."]
    assert record.follows == ids(store, record.id)[-1]


def test_editing_the_first_prompt_makes_an_alternative_first_prompt(
        store: HistoryStore) -> None:
    record = chat(store.new_conversation(), ("Hi", "Hello."))
    original = ids(store, record.id)[0]
    record.prompt_after(None, "Hey", MODEL).finish(done("Hey there."))
    assert path_texts(store, record.id) == ["Hey", "Hey there."]
    assert store.get(record.id or 0).messages[0].siblings.ids == (original, original + 2)


def test_a_reply_from_another_conversation_cannot_be_branched_from(
        store: HistoryStore) -> None:
    said: list[str] = []
    store.warn = said.append
    one = chat(store.new_conversation(), ("a", "b"))
    two = chat(store.new_conversation(), ("c", "d"))
    two.prompt_after(ids(store, one.id)[1], "e", MODEL).finish(done("f"))
    assert said and "is not a reply of conversation" in said[0]
    assert path_texts(store, two.id) == ["c", "d"]


# -- continue --------------------------------------------------------------------------------

def test_a_continued_reply_grows_in_place(store: HistoryStore, db_path: Path) -> None:
    record = store.new_conversation()
    record.user_prompt("Write a poem", MODEL).finish(done(
        "Roses are", finish=Finish.from_raw("length"), usage=Usage(10, 100)))
    reply_id = ids(store, record.id)[1]

    recorder = record.continue_reply(reply_id)
    assert store.get(record.id or 0).messages[1].status == "streaming"
    # The turn hands the recorder the whole reply: loaded, resumed, and growing.
    more = store.load(record.id or 0).exchanges[-1].reply
    more.resume()
    more.status = Status.STREAMING
    more.add_text(" red,")
    recorder.checkpoint(more)
    assert path_texts(store, record.id)[1] == "Roses are red,"
    more.add_text("\nviolets are blue.")
    more.add(ToolCall("c1", "rhyme", "{}"))
    more.add(ToolResult("c1", "true"))
    more.status, more.finish = Status.COMPLETE, Finish.from_raw("stop")
    more.usage = more.usage + Usage(120, 8)
    more.ended_at = more.started_at + 3.5
    recorder.finish(more)

    [message] = [m for m in store.tree(record.id or 0).messages if m.role == "assistant"]
    assert message.id == reply_id
    assert message.parts == (Text("Roses are red,\nviolets are blue."),
                             ToolCall("c1", "rhyme", "{}"), ToolResult("c1", "true"))
    assert (message.status, message.finish) == ("complete", Finish.from_raw("stop"))
    assert message.usage == Usage(130, 108)
    assert (message.ttft, message.duration) == (pytest.approx(0.5), pytest.approx(3.5))
    assert message.continuations == 1
    assert store.search("violets")[0].message_id == reply_id


def test_continuing_a_reply_that_has_alternatives_shows_it(store: HistoryStore) -> None:
    record = chat(store.new_conversation(), ("Q", "first"))
    first = ids(store, record.id)[1]
    record.regenerate(ids(store, record.id)[0], MODEL).finish(done("second"))
    record.continue_reply(first).finish(done("first and more"))
    assert path_texts(store, record.id) == ["Q", "first and more"]
    assert record.follows == first


@pytest.mark.parametrize("branch", ["regenerate", "continue", "edit"])
def test_a_killed_writer_loses_at_most_the_text_since_its_last_checkpoint(
        db_path: Path, branch: str) -> None:
    with HistoryStore.open(db_path) as store:
        record = chat(store.new_conversation(), ("Tell a long story", "Once"))
        prompt, reply = ids(store, record.id)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        child = HistoryStore.open(db_path)
        branching = child.resume(record.id or 0)
        recorder = (branching.regenerate(prompt, MODEL) if branch == "regenerate" else
                    branching.continue_reply(reply) if branch == "continue" else
                    branching.prompt_after(reply, "Go on", MODEL))
        partial = Reply(status=Status.STREAMING,
                        initial_text="Once" if branch == "continue" else "")
        partial.add_text(" upon a time")
        recorder.checkpoint(partial)
        os.write(write, b"x")
        time.sleep(60)
        os._exit(1)
    os.close(write)
    assert os.read(read, 1) == b"x"
    os.close(read)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)

    with HistoryStore.open(db_path) as store:
        shown = store.get(record.id or 0).messages
    assert (shown[-1].text, shown[-1].status) == (
        "Once upon a time" if branch == "continue" else " upon a time", "interrupted")
    assert len(shown) == (4 if branch == "edit" else 2)


# -- undo ------------------------------------------------------------------------------------

def test_undo_takes_the_last_exchange_off_the_path_and_keeps_it(
        store: HistoryStore, db_path: Path) -> None:
    record = chat(store.new_conversation(), ("Hi", "Hello."), ("Insult me", "No."))
    undone = ids(store, record.id)[2]

    assert record.undo() == undone
    assert path_texts(store, record.id) == ["Hi", "Hello."]
    assert [c.preview for c in store.list_conversations()] == ["Hello."]
    assert len(store.tree(record.id or 0).messages) == 4
    # The reply before it has no active child: the branch is abandoned, not deleted.
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM messages WHERE parent_id = ? AND active = 1",
                          (ids(store, record.id)[1],)).fetchone() == (0,)
    db.close()
    assert [e.prompt for e in store.load(record.id or 0).exchanges] == ["Hi"]

    record.user_prompt("Tell me a joke", MODEL).finish(done("Knock knock."))
    assert path_texts(store, record.id)[2:] == ["Tell me a joke", "Knock knock."]
    assert store.get(record.id or 0).messages[2].siblings.ids == (undone, undone + 2)
    store.activate(undone)
    assert path_texts(store, record.id)[2:] == ["Insult me", "No."]


def test_undoing_every_exchange_leaves_an_empty_path_that_can_start_again(
        store: HistoryStore) -> None:
    record = chat(store.new_conversation(), ("one", "1"))
    assert record.undo() is not None
    assert record.undo() is None
    assert store.get(record.id or 0).messages == []
    assert store.load(record.id or 0).exchanges == []
    record.user_prompt("two", MODEL).finish(done("2"))
    assert path_texts(store, record.id) == ["two", "2"]
    assert store.resume(record.id or 0).follows == ids(store, record.id)[1]


# -- fork ------------------------------------------------------------------------------------

def test_fork_copies_the_path_up_to_a_message_into_a_new_conversation(
        store: HistoryStore, db_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    image = Attachment("a.png", "image/png", AttachmentKind.IMAGE,
                       hashlib.sha256(data).hexdigest(), len(data), data)
    record = store.new_conversation()
    record.user_prompt("Look", MODEL, (image,)).finish(done("A square."))
    chat(record, ("Colour?", "Black."), ("Size?", "Tiny."))
    original = ids(store, record.id)

    forked = store.fork(record.id or 0, original[3])
    assert forked != record.id
    assert path_texts(store, forked) == ["Look", "A square.", "Colour?", "Black."]
    assert set(ids(store, forked)).isdisjoint(original)
    assert store.load(forked).exchanges[0].attachments == (image,)
    assert path_texts(store, record.id)[-1] == "Tiny."
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM blobs").fetchone() == (1,)
    db.close()
    # A prompt is forked with its reply: an exchange is the unit of context.
    assert path_texts(store, store.fork(record.id or 0, original[2]))[-1] == "Black."
    assert path_texts(store, store.fork(record.id or 0)) == path_texts(store, record.id)
    # The fork goes on by itself.
    chat(store.resume(forked), ("Shape?", "Square."))
    assert path_texts(store, forked)[-1] == "Square." and len(ids(store, record.id)) == 6
    store.delete(record.id or 0)
    assert store.load(forked).exchanges[0].attachments[0].data == data

    with pytest.raises(HistoryError, match="has no message 999"):
        store.fork(forked, 999)


# -- search and flip -------------------------------------------------------------------------

def test_a_search_hit_on_another_branch_opens_that_branch(store: HistoryStore) -> None:
    record = chat(store.new_conversation(), ("Fruit?", "Apple."))
    record.regenerate(ids(store, record.id)[0], MODEL).finish(done("Banana."))
    [hit] = store.search("apple")
    assert path_texts(store, record.id)[-1] == "Banana."

    assert store.activate(hit.message_id) == record.id
    assert path_texts(store, record.id)[-1] == "Apple."
    with pytest.raises(HistoryError, match="No message 12345"):
        store.activate(12345)


def test_the_list_previews_the_end_of_the_branch_shown_and_counts_every_message(
        store: HistoryStore) -> None:
    record = chat(store.new_conversation(), ("Q", "old answer"))
    old = ids(store, record.id)[1]
    record.regenerate(ids(store, record.id)[0], MODEL).finish(done("", Status.ERROR))
    [summary] = store.list_conversations()
    assert (summary.preview, summary.message_count) == ("Q", 3)
    store.activate(old)
    assert store.list_conversations()[0].preview == "old answer"


def test_the_database_holds_one_active_child_per_message(store: HistoryStore,
                                                         db_path: Path) -> None:
    record = chat(store.new_conversation(), ("Q", "A"))
    record.regenerate(ids(store, record.id)[0], MODEL).finish(done("B"))
    with sqlite3.connect(db_path) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE messages SET active = 1 WHERE role = 'assistant'")
    db.close()


# -- any sequence of steps --------------------------------------------------------------------

steps = st.lists(st.tuples(st.sampled_from(["prompt", "regenerate", "edit", "continue",
                                            "flip", "undo"]), st.integers(0, 30)),
                 min_size=1, max_size=14)


@pytest.mark.fuzz
@given(steps)
def test_any_steps_keep_the_path_shown_the_one_a_simple_model_predicts(
        tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[str, int]]) -> None:
    """A model of the tree in a few lines of Python (children in order, one chosen each),
    against the store after the same steps."""
    path = tmp_path_factory.mktemp("steps") / "history.db"
    parent: dict[int, int | None] = {}
    chosen: dict[int | None, int | None] = {}
    texts: dict[int, str] = {}

    def predicted() -> list[int]:
        found, node = [], chosen.get(None)
        while node is not None:
            found.append(node)
            node = chosen.get(node)
        return found

    with HistoryStore.open(path) as store:
        record = store.new_conversation()
        for number, (step, pick) in enumerate([("prompt", 0), *plan]):
            shown = predicted()
            prompts = [m for m in texts if m in parent and texts[m].startswith("p")]
            replies = [m for m in texts if texts[m].startswith("r")]
            if step != "flip" and not prompts:
                step = "prompt"
            if step == "prompt":
                recorder = record.user_prompt(f"p{number}", MODEL)
                after = shown[-1] if shown else None
            elif step == "regenerate":
                prompt = prompts[pick % len(prompts)]
                recorder = record.regenerate(prompt, MODEL)
            elif step == "edit":
                after = replies[pick % len(replies)]
                recorder = record.prompt_after(after, f"p{number}", MODEL)
            elif step == "continue":
                target = replies[pick % len(replies)]
                record.continue_reply(target).finish(done(texts[target] + "+"))
                texts[target] += "+"
                for node in _ancestry(parent, target):
                    chosen[parent[node]] = node
                continue
            elif step == "flip":
                if texts:
                    target = list(texts)[pick % len(texts)]
                    record.set_active(target)
                    for node in _ancestry(parent, target):
                        chosen[parent[node]] = node
                continue
            else:
                undone = record.undo()
                if undone is not None:
                    chosen[parent[undone]] = None
                continue
            recorder.finish(done(f"r{number}"))
            message_ids = getattr(recorder, "message_ids", None)
            assert message_ids is not None
            new_prompt, new_reply = message_ids
            if step == "regenerate":
                parent[new_reply] = new_prompt
                for node in _ancestry(parent, new_reply):
                    chosen[parent[node]] = node
            else:
                parent[new_prompt], parent[new_reply] = after, new_prompt
                texts[new_prompt] = f"p{number}"
                for node in _ancestry(parent, new_reply):
                    chosen[parent[node]] = node
            texts[new_reply] = f"r{number}"
        assert record.id is not None
        assert ids(store, record.id) == predicted()
        assert [m.text for m in store.get(record.id).messages] == [
            texts[m] for m in predicted()]
        exchanges = store.load(record.id).exchanges
        assert [e.message_ids for e in exchanges] == list(zip(predicted()[::2],
                                                              predicted()[1::2], strict=True))
        assert sorted(m.id for m in store.tree(record.id).messages) == sorted(texts)
        for recent in (1, 2, 3):
            check_read_from_its_end(store, record.id, recent)


def check_read_from_its_end(store: HistoryStore, cid: int, recent: int) -> None:
    """A conversation read from its end (`recent` exchanges) has the whole one's last
    exchanges, each with the same alternatives; read in full afterwards it is the whole one,
    the exchanges read first among it as they were."""
    whole = continue_conversation(CONFIG, store, cid)
    end = continue_conversation(CONFIG, store, cid, recent=recent)
    if len(whole.exchanges) <= recent:
        assert end.older is None
    else:
        assert end.older is not None
    assert [e.message_ids for e in end.exchanges] == [
        e.message_ids for e in whole.exchanges][-len(end.exchanges) or len(whole.exchanges):]
    assert len(end.exchanges) == min(recent, len(whole.exchanges))
    for exchange, same in zip(end.exchanges, whole.exchanges[-len(end.exchanges):],
                              strict=True):
        assert alternatives(end, exchange) == alternatives(whole, same)
    first = list(end.exchanges)
    asyncio.run(end.load_older())
    assert end.older is None
    assert [e.message_ids for e in end.exchanges] == [e.message_ids for e in whole.exchanges]
    assert all(a is b for a, b in zip(end.exchanges[-len(first) or len(end.exchanges):],
                                       first, strict=True))
    for exchange, same in zip(end.exchanges, whole.exchanges, strict=True):
        assert alternatives(end, exchange) == alternatives(whole, same)
        assert exchange.prompt == same.prompt and exchange.reply.text == same.reply.text
        assert (exchange.parent.message_ids if exchange.parent else None) == (
            same.parent.message_ids if same.parent else None)


def alternatives(conversation: Conversation, exchange: Exchange) -> tuple[object, ...]:
    options = conversation.alternatives(exchange)
    return ([e.message_ids for e in options.replies], [e.message_ids for e in options.prompts],
            options.reply_position, options.prompt_position)


def test_a_long_conversation_read_from_its_end_has_the_alternatives_at_its_first_place(
        store: HistoryStore) -> None:
    record = chat(store.new_conversation(), *[(f"q{n}", f"a{n}") for n in range(12)])
    assert record.id is not None
    path = ids(store, record.id)
    # Alternatives where the end read starts (both kinds), and one just before it.
    record.regenerate(path[-6], MODEL).finish(done("a9 again"))
    record.set_active(path[-5])
    record.prompt_after(path[-7], "q9 edited", MODEL).finish(done("a9 edited"))
    record.set_active(path[-5])
    record.regenerate(path[-8], MODEL).finish(done("a8 again"))
    record.set_active(path[-7])
    assert ids(store, record.id) == path
    end = continue_conversation(CONFIG, store, record.id, recent=3)
    assert [e.prompt for e in end.exchanges] == ["q9", "q10", "q11"]
    options = end.alternatives(end.exchanges[0])
    assert options.reply_position == (1, 2) and options.prompt_position == (1, 2)
    for recent in range(1, 14):
        check_read_from_its_end(store, record.id, recent)


def _ancestry(parent: dict[int, int | None], node: int) -> list[int]:
    chain = [node]
    above = parent[node]
    while above is not None:
        chain.append(above)
        above = parent[above]
    return chain


def test_flipping_to_a_message_of_another_conversation_changes_nothing(
        store: HistoryStore) -> None:
    one = chat(store.new_conversation(), ("a", "b"))
    one.regenerate(ids(store, one.id)[0], MODEL).finish(done("c"))
    two = chat(store.new_conversation(), ("d", "e"))
    with pytest.raises(HistoryError, match=f"Conversation {two.id} has no message"):
        two.set_active(store.tree(one.id or 0).messages[1].id)
    assert path_texts(store, one.id) == ["a", "c"]
