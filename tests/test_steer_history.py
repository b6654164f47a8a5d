"""Steering a conversation that the history keeps: each change to the tree (regenerate,
edit and resend, choose, continue, undo) is stored as it is made, and a conversation opened
again from the store has the same tree, the same path and the same next request, through the
real SDKs against the local provider server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from termchat.config import Config
from termchat.devserver import ProviderServer, Script
from termchat.errors import UsageError
from termchat.history import HistoryStore
from termchat.history.recording import continue_conversation
from termchat.turn import Conversation
from tests.support.models import PROVIDERS, model_for

LENGTH = {"openai": "length", "anthropic": "max_tokens"}


def sent(server: ProviderServer, index: int = -1) -> list[tuple[str, Any]]:
    return [(m["role"], _text(m["content"])) for m in server.requests[index].body["messages"]
            if m["role"] != "system"]


def _text(content: Any) -> Any:
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content)
    return content


def reopen(store: HistoryStore, cid: int, conversation: Conversation) -> Conversation:
    config = Config(store.path.with_name("config.toml"),
                    models={conversation.model.name: conversation.model},
                    default_model=conversation.model.name)
    return continue_conversation(config, store, cid)


def path(conversation: Conversation) -> list[tuple[str, str]]:
    return [(e.prompt, e.reply.text) for e in conversation.exchanges]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_steered_conversation_opens_again_as_it_was_left(
        srv: ProviderServer, tmp_path: Path, provider: str) -> None:
    srv.queue(Script(text="A1"), Script(text="A2"), Script(text="A2, again"),
              Script(text="B1"), Script(text="The list: one, two, ", finish=LENGTH[provider]),
              Script(text="three."))
    with HistoryStore.open(tmp_path / "history.db") as store:
        record = store.new_conversation()
        conversation = Conversation(model_for(srv, provider), history=record)
        first = await conversation.send("one")
        await conversation.send("two")
        await conversation.stream(conversation.regenerate())
        await conversation.stream(conversation.edit(first, "one, better"))
        await conversation.send("list")
        await conversation.continue_reply()
        assert path(conversation) == [("one, better", "B1"),
                                      ("list", "The list: one, two, three.")]
        assert record.id is not None

        again = reopen(store, record.id, conversation)
        assert path(again) == path(conversation)
        last = again.exchanges[-1]
        assert last.reply.continued == 1 and last.reply.text == "The list: one, two, three."
        assert again.alternatives(again.exchanges[0]).prompt_position == (2, 2)

        # Back to the first prompt: its branch, down to the regenerated reply shown last.
        again.choose(again.alternatives(again.exchanges[0]).prompt(-1))
        assert path(again) == [("one", "A1"), ("two", "A2, again")]
        options = again.alternatives(again.exchanges[1])
        assert [e.reply.text for e in options.replies] == ["A2", "A2, again"]
        assert options.reply_position == (2, 2)

        third = reopen(store, record.id, conversation)
        assert path(third) == [("one", "A1"), ("two", "A2, again")]
        third.choose(third.alternatives(third.exchanges[1]).reply(-1))
        assert path(third) == [("one", "A1"), ("two", "A2")]
        assert third.undo() is not None
        assert path(reopen(store, record.id, conversation)) == [("one", "A1")]


async def test_continuing_a_reopened_cut_off_reply_sends_it_and_grows_the_same_message(
        srv: ProviderServer, tmp_path: Path) -> None:
    srv.queue(Script(text="Roses are red, ", finish="max_tokens", input_tokens=10,
                     output_tokens=5),
              Script(text="violets are blue.", input_tokens=15, output_tokens=4))
    with HistoryStore.open(tmp_path / "history.db") as store:
        record = store.new_conversation()
        conversation = Conversation(model_for(srv, "anthropic"), history=record)
        await conversation.send("a poem")
        assert record.id is not None

        again = reopen(store, record.id, conversation)
        assert again.exchanges[-1].reply.can_continue
        exchange = await again.continue_reply()
        # Anthropic takes the partial as a prefill, without its trailing space.
        assert sent(srv)[-1] == ("assistant", "Roses are red,")
        assert exchange.reply.text == "Roses are red, violets are blue."

        [reply] = [m for m in store.tree(record.id).messages if m.role == "assistant"]
        assert reply.text == "Roses are red, violets are blue."
        assert (reply.status, reply.continuations) == ("complete", 1)
        assert (reply.usage.input_tokens, reply.usage.output_tokens) == (25, 9)


async def test_an_edited_partial_is_what_is_continued_and_stored(
        srv: ProviderServer, tmp_path: Path) -> None:
    srv.queue(Script(text="One. Two is wrong.", finish="length"), Script(text=" Two."))
    with HistoryStore.open(tmp_path / "history.db") as store:
        record = store.new_conversation()
        conversation = Conversation(model_for(srv, "openai"), history=record)
        await conversation.send("count")
        with pytest.raises(UsageError):
            conversation.edit_partial("")
        exchange = await conversation.stream(conversation.edit_partial("One."))
        assert sent(srv)[1] == ("assistant", "One.")
        assert exchange.reply.text == "One. Two."
        assert record.id is not None
        [reply] = [m for m in store.tree(record.id).messages if m.role == "assistant"]
        assert (reply.text, reply.continuations) == ("One. Two.", 1)
