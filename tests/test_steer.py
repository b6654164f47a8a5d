"""A conversation you can steer, in the conversation model, through the real SDKs against the
local provider server: regenerate, edit and resend, choose between alternatives, undo, fork,
and continue a cut-off or cancelled reply (a prefill for Anthropic, an instruction for
OpenAI-compatible servers and for Anthropic models that take no prefill)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from termchat.devserver import ProviderServer, Script
from termchat.errors import UsageError
from termchat.providers._base import CONTINUE_INSTRUCTION
from termchat.turn import Conversation, Status
from tests.support.models import PROVIDERS, model_for

LENGTH = {"openai": "length", "anthropic": "max_tokens"}


def sent(server: ProviderServer, index: int = -1) -> list[tuple[str, Any]]:
    """(role, content) of the messages of a recorded request, system prompt left out."""
    return [(m["role"], m["content"]) for m in server.requests[index].body["messages"]
            if m["role"] != "system"]


def chat(server: ProviderServer, provider: str = "openai") -> Conversation:
    return Conversation(model_for(server, provider))


async def test_regenerate_keeps_the_old_reply_and_the_one_shown_is_the_context(
        srv: ProviderServer) -> None:
    srv.queue(Script(text="First answer."), Script(text="Second answer."),
              Script(text="Follow-up."))
    conversation = chat(srv)
    first = await conversation.send("question")
    second = await conversation.stream(conversation.regenerate())

    assert sent(srv, 0) == sent(srv, 1) == [("user", "question")]
    assert conversation.exchanges == [second]
    options = conversation.alternatives(second)
    assert [e.reply.text for e in options.replies] == ["First answer.", "Second answer."]
    assert options.reply_position == (2, 2) and options.prompt_position == (1, 1)

    conversation.choose(options.reply(-1))
    assert conversation.exchanges == [first]
    assert conversation.alternatives(first).reply_position == (1, 2)
    await conversation.send("and then?")
    assert sent(srv) == [("user", "question"), ("assistant", "First answer."),
                         ("user", "and then?")]


async def test_edit_and_resend_makes_a_branch_and_the_old_one_can_be_chosen_again(
        srv: ProviderServer) -> None:
    srv.queue(Script(text="A1"), Script(text="A2"), Script(text="B1"), Script(text="A3"))
    conversation = chat(srv)
    first = await conversation.send("one")
    old_second = await conversation.send("two")

    edited = await conversation.stream(conversation.edit(first, "one, better"))
    assert sent(srv) == [("user", "one, better")]
    assert conversation.exchanges == [edited]
    options = conversation.alternatives(edited)
    assert [e.prompt for e in options.prompts] == ["one", "one, better"]
    assert options.prompt_position == (2, 2) and options.reply_position == (1, 1)

    # Back to the old prompt: its whole branch is the path again, down to where it ended.
    conversation.choose(options.prompt(-1))
    assert conversation.exchanges == [first, old_second]
    await conversation.send("three")
    assert sent(srv) == [("user", "one"), ("assistant", "A1"), ("user", "two"),
                         ("assistant", "A2"), ("user", "three")]


async def test_editing_a_later_prompt_keeps_what_came_before_it(srv: ProviderServer) -> None:
    srv.queue(Script(text="A1"), Script(text="A2"), Script(text="A2 again"))
    conversation = chat(srv)
    first = await conversation.send("one")
    second = await conversation.send("two")
    edited = await conversation.stream(conversation.edit(second, "two, reworded"))
    assert conversation.exchanges == [first, edited]
    assert sent(srv) == [("user", "one"), ("assistant", "A1"), ("user", "two, reworded")]


async def test_undo_takes_the_exchange_off_the_path_and_keeps_it_as_an_alternative(
        srv: ProviderServer) -> None:
    srv.queue(Script(text="A1"), Script(text="regretted"), Script(text="better"))
    conversation = chat(srv)
    first = await conversation.send("one")
    undone = await conversation.send("bad idea")
    assert conversation.undo() is undone
    assert conversation.exchanges == [first]
    redo = await conversation.send("good idea")
    assert sent(srv) == [("user", "one"), ("assistant", "A1"), ("user", "good idea")]
    assert [e.prompt for e in conversation.alternatives(redo).prompts] == [
        "bad idea", "good idea"]
    assert Conversation(conversation.model).undo() is None


async def test_fork_is_a_new_conversation_with_the_context_up_to_a_message(
        srv: ProviderServer) -> None:
    srv.queue(Script(text="A1"), Script(text="A2"), Script(text="forked reply"))
    conversation = chat(srv)
    first = await conversation.send("one")
    await conversation.send("two")
    fork = conversation.fork(first)
    assert [e.prompt for e in fork.exchanges] == ["one"]
    assert fork.exchanges[0] is not first and fork.exchanges[0].reply is not first.reply
    await fork.send("elsewhere")
    assert sent(srv) == [("user", "one"), ("assistant", "A1"), ("user", "elsewhere")]
    assert len(conversation.exchanges) == 2 and first.reply.text == "A1"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_reply_cut_by_its_length_limit_continues_in_the_same_reply(
        srv: ProviderServer, provider: str) -> None:
    srv.queue(Script(text="The list: one, two, ", finish=LENGTH[provider], input_tokens=10,
                     output_tokens=6),
              Script(text="three, four.", input_tokens=16, output_tokens=4))
    conversation = chat(srv, provider)
    exchange = await conversation.send("count")
    assert exchange.reply.can_continue

    again = await conversation.continue_reply()
    assert again is exchange and conversation.exchanges == [exchange]
    reply = exchange.reply
    assert reply.text == "The list: one, two, three, four."
    assert reply.status is Status.COMPLETE and reply.continued == 1 and reply.rounds == 2
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (26, 10)
    assert not reply.can_continue

    if provider == "anthropic":
        # A prefill: the reply so far is the assistant's turn, without its trailing space.
        assert sent(srv) == [("user", "count"), ("assistant", "The list: one, two,")]
    else:
        assert sent(srv) == [("user", "count"), ("assistant", "The list: one, two, "),
                             ("user", CONTINUE_INSTRUCTION)]
    # The next turn sends the reply as one message.
    srv.queue(Script(text="ok"))
    await conversation.send("thanks")
    assert sent(srv)[1] == ("assistant", "The list: one, two, three, four.")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_cancelled_reply_continues_from_what_arrived(srv: ProviderServer,
                                                            provider: str) -> None:
    srv.queue(Script(chunks=["Half ", "of it"], stall_after=2), Script(text=" and the rest."))
    conversation = chat(srv, provider)
    arrived = asyncio.Event()
    task = asyncio.create_task(conversation.send(
        "go", lambda _: arrived.set() if "of it" in conversation.exchanges[-1].reply.text
        else None))
    await asyncio.wait_for(arrived.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    reply = conversation.exchanges[-1].reply
    assert reply.status is Status.CANCELLED and reply.can_continue

    await conversation.continue_reply()
    assert reply.text == "Half of it and the rest." and reply.status is Status.COMPLETE
    assert sent(srv)[1][0] == "assistant"


async def test_an_anthropic_model_that_takes_no_prefill_is_continued_with_an_instruction(
        srv: ProviderServer) -> None:
    srv.queue(Script(text="Cut ", finish="max_tokens"),
              Script(status=400, error_message="This model does not support assistant message "
                     "prefill. The conversation must end with a user message."),
              Script(text="here."), Script(text="Again ", finish="max_tokens"),
              Script(text="and done."))
    conversation = chat(srv, "anthropic")
    await conversation.send("write")
    await conversation.continue_reply()
    assert conversation.exchanges[-1].reply.text == "Cut here."
    instruction = {"role": "user", "content": CONTINUE_INSTRUCTION}
    assert srv.requests[1].body["messages"][-1] == {"role": "assistant", "content": "Cut"}
    assert srv.requests[2].body["messages"][-2:] == [
        {"role": "assistant", "content": "Cut "}, instruction]

    # The session remembers: the next continuation asks the second way at once.
    await conversation.send("more")
    await conversation.continue_reply()
    assert len(srv.requests) == 5
    assert srv.requests[4].body["messages"][-1] == instruction


async def test_other_bad_requests_on_a_continuation_are_not_taken_for_a_missing_prefill(
        srv: ProviderServer) -> None:
    srv.queue(Script(text="Cut ", finish="max_tokens"),
              Script(status=400, error_message="max_tokens: too large"))
    conversation = chat(srv, "anthropic")
    await conversation.send("write")
    with pytest.raises(Exception, match="max_tokens"):
        await conversation.continue_reply()
    assert len(srv.requests) == 2


async def test_a_complete_reply_or_an_empty_one_cannot_be_continued(srv: ProviderServer) -> None:
    srv.queue(Script(text="All said."))
    conversation = chat(srv)
    with pytest.raises(UsageError):
        conversation.resume()
    await conversation.send("hi")
    with pytest.raises(UsageError, match="regenerate"):
        await conversation.continue_reply()
    assert len(srv.requests) == 1
