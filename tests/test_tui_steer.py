"""Steering in the TUI (Pilot, the real SDKs, the local provider server): regenerate and flip
between the replies, continue a cut-off reply in the same reply, edit and resend the last
prompt as a branch, undo with the prompt back in the input; keys remapped by the config's
`[keys]`, and the palette's theme kept in the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from termchat.config import load_config
from termchat.devserver import ProviderServer, Script
from termchat.tui.keybar import KeyBar
from termchat.tui.messages import NoteLine, UserMessage
from termchat.tui.prompt import PromptInput
from tests.support.screen import lines_of
from tests.support.tui import finish, make_app, replies, send, status_text, wait_until


def sent(server: ProviderServer) -> list[tuple[str, Any]]:
    return [(m["role"], m["content"]) for m in server.requests[-1].body["messages"]
            if m["role"] != "system"]


def shown(app: Any) -> list[str]:
    return [reply.text for reply in replies(app)]


def notes(app: Any) -> list[str]:
    return [str(note.render()) for note in app.chat.query(NoteLine)]


async def test_regenerate_keeps_both_replies_and_the_one_shown_is_the_context(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="First answer."), Script(text="Second answer."),
                          Script(text="Follow-up."))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "question")
        await finish(pilot)
        await pilot.press("f5")
        await finish(pilot)
        assert shown(app) == ["Second answer."]
        assert sent(provider_server) == [("user", "question")]
        assert any("reply 2/2" in note for note in notes(app))

        await pilot.press("alt+left")
        await finish(pilot)
        assert shown(app) == ["First answer."]
        assert any("reply 1/2" in note for note in notes(app))
        await send(pilot, "and then?")
        await finish(pilot)
        assert sent(provider_server) == [("user", "question"), ("assistant", "First answer."),
                                         ("user", "and then?")]


async def test_continue_appends_to_the_same_reply(provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="Counting: one, two, ", finish="length"),
                          Script(text="three."))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "count")
        await finish(pilot)
        await pilot.press("ctrl+f")
        await finish(pilot)
        assert shown(app) == ["Counting: one, two, three."]
        assert sent(provider_server)[1] == ("assistant", "Counting: one, two, ")
        exchange = app.chat.conversation.exchanges[-1]
        assert exchange.reply.continued == 1 and len(app.chat.conversation.exchanges) == 1
        assert "continued" in status_text(app)
        # Nothing left to continue: a sentence, and nothing sent.
        count = len(provider_server.requests)
        await pilot.press("ctrl+f")
        await finish(pilot)
        assert len(provider_server.requests) == count


async def test_edit_the_last_prompt_sends_a_branch_and_undo_gives_the_prompt_back(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="A1"), Script(text="A2"), Script(text="A2b"))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "one")
        await finish(pilot)
        await send(pilot, "two")
        await finish(pilot)
        await pilot.press("f2")
        prompt = app.chat.query_one(PromptInput)
        assert prompt.text == "two"
        prompt.load_text("two, better")
        await pilot.press("enter")
        await finish(pilot)
        assert sent(provider_server) == [("user", "one"), ("assistant", "A1"),
                                         ("user", "two, better")]
        assert shown(app) == ["A1", "A2b"]
        assert any("prompt 2/2" in note for note in notes(app))

        await pilot.press("f8")
        await finish(pilot)
        assert shown(app) == ["A1"]
        assert [str(m.render()) for m in app.chat.query(UserMessage)] == ["one"]
        assert prompt.text == "two, better"


async def test_keys_are_the_users(provider_server: ProviderServer, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[keys]\nsubmit = "ctrl+s"\nnewline = "enter"\nregenerate = "f9"\n'
                    'copy_reply = "f10"\n')
    provider_server.queue(Script(text="Hello."), Script(text="Again."))
    app = make_app(provider_server, config=load_config(str(path), env={}))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.click("#prompt")
        await pilot.press("h", "i", "enter", "x")
        prompt = app.chat.query_one(PromptInput)
        assert prompt.text == "hi\nx" and not provider_server.requests
        await pilot.press("ctrl+s")
        await finish(pilot)
        assert shown(app) == ["Hello."]
        await pilot.press("f5")  # no longer regenerate
        await finish(pilot)
        assert len(provider_server.requests) == 1
        await pilot.press("f9")
        await finish(pilot)
        assert shown(app) == ["Again."]
        assert app.chat.key_for("regenerate").lower() == "f9"
        # The palette names each steering command with the key it has now.
        from termchat.tui.commands import _steering_commands

        names = [name for name, _, _ in _steering_commands(app.chat)]
        assert any(n.startswith("Regenerate the last reply (") and n.lower().endswith("(f9)")
                   for n in names)
        keys = app.chat.query_one(KeyBar)
        await wait_until(pilot, lambda: "f10" in " ".join(lines_of(keys)).lower())


async def test_a_theme_chosen_is_kept_in_the_config(provider_server: ProviderServer,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('# mine\nhistory = false\n')
    app = make_app(provider_server, config=load_config(str(path), env={}))
    async with app.run_test(size=(100, 30)) as pilot:
        app.theme = "nord"
        await wait_until(pilot, lambda: "nord" in path.read_text())
    assert path.read_text() == '# mine\nhistory = false\ntheme = "nord"\n'
    again = make_app(provider_server, config=load_config(str(path), env={}))
    async with again.run_test(size=(100, 30)):
        assert again.theme == "nord"


async def test_a_cancelled_reply_can_be_edited_then_continued_from_the_edit(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="Step one. Step two is wrong. " * 30, chunk_size=4,
                                 delay=0.02),
                          Script(text=" Step two, right."))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "steps")
        await wait_until(pilot, lambda: "wrong" in "".join(shown(app)))
        await pilot.press("escape")
        await finish(pilot)
        await pilot.press("f3")
        prompt = app.chat.query_one(PromptInput)
        assert prompt.text.startswith("Step one. Step two is wrong.")
        prompt.load_text("Step one.")
        await pilot.press("enter")
        await finish(pilot)
        assert len(provider_server.requests) == 2, [n.message for n in app._notifications]
        assert sent(provider_server)[1] == ("assistant", "Step one.")
        assert shown(app) == ["Step one. Step two, right."]
        reply = app.chat.conversation.exchanges[-1].reply
        assert (reply.text, reply.continued, reply.status.value) == (
            "Step one. Step two, right.", 1, "complete")


async def test_an_earlier_reply_with_alternatives_is_marked_and_can_be_flipped(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="A1"), Script(text="A1b"), Script(text="B"),
                          Script(text="C"))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "one")
        await finish(pilot)
        await pilot.press("f5")
        await finish(pilot)
        await send(pilot, "two")
        await finish(pilot)
        assert shown(app) == ["A1b", "B"]
        # The earlier reply says it has another; the palette offers to flip it.
        assert any("reply 2/2" in note for note in notes(app))
        from termchat.tui.commands import _branch_commands

        [(name, flip, _)] = _branch_commands(app.chat)
        assert name == "Exchange 1 “one”: show reply 1 of 2"
        await flip()
        await finish(pilot)
        assert shown(app) == ["A1"]
        await send(pilot, "three")
        await finish(pilot)
        assert sent(provider_server) == [("user", "one"), ("assistant", "A1"),
                                         ("user", "three")]


async def test_an_earlier_prompt_can_be_edited_and_the_chat_forked(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="A1"), Script(text="A2"), Script(text="U1"),
                          Script(text="F1"))
    app = make_app(provider_server)
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "one")
        await finish(pilot)
        await send(pilot, "two")
        await finish(pilot)
        from termchat.tui.commands import ChatCommands

        commands = {name: run for name, run, _ in ChatCommands(app.chat)._commands()}
        commands["Edit and resend exchange 1 “one”"]()
        prompt = app.chat.query_one(PromptInput)
        assert prompt.text == "one"
        prompt.load_text("uno")
        await pilot.press("enter")
        await finish(pilot)
        assert sent(provider_server) == [("user", "uno")]
        assert shown(app) == ["U1"]
        assert any("prompt 2/2" in note for note in notes(app))

        before = app.chat.conversation
        commands = {name: run for name, run, _ in ChatCommands(app.chat)._commands()}
        commands["Fork into a new conversation"]()
        await finish(pilot)
        assert app.chat.conversation is not before and shown(app) == ["U1"]
        await send(pilot, "and?")
        await finish(pilot)
        assert sent(provider_server) == [("user", "uno"), ("assistant", "U1"), ("user", "and?")]
        assert len(before.exchanges) == 1  # the original is left as it was
