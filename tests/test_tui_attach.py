"""Attachments in the TUI (Pilot, the real SDKs, the local server over a real socket): the
attach dialog (Ctrl+L and the palette) with path completion, `@path` mentions completed with
Tab and attached on send, chips above the prompt removable before sending and shown on the
sent prompt, each provider's request shape, refusals in one line before any request, and
file names that cannot drive the terminal."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.command import CommandPalette
from textual.pilot import Pilot

from termchat import attachments as files
from termchat.config import Config
from termchat.devserver import ProviderServer, Script
from termchat.history import HistoryStore, continue_conversation
from termchat.tui.app import TermchatApp
from termchat.tui.attach import AttachedFiles, AttachScreen, Chips
from termchat.tui.history_screen import HistoryScreen
from termchat.tui.messages import ErrorLine
from termchat.turn import Reply, Status
from tests.support.files import pdf, png
from tests.support.models import PROVIDERS, model_for
from tests.support.screen import lines_of, shown, unsafe_lines
from tests.support.tui import finish, make_app, send, wait_until

SIZE = (100, 30)
SnapCompare = Callable[..., bool]
NOTES = "# Notes\n\nBuy milk.\n"
# A title-setting OSC 0 and a clipboard-writing OSC 52 (base64 of "pwned"), each ended by
# BEL, and a right-to-left override that would show "exe.txt".
HOSTILE_NAMES = ["evil\x1b]0;pwned\x07\u202etxt.exe", "evil\x1b]52;c;cHduZWQ=\x07\u202etxt.exe"]
HOSTILE_SHOWN = "eviltxt.exe"


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths are typed relative to termchat's working directory: each test has its own."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def some_files(tmp_path: Path) -> dict[str, bytes]:
    files = {"notes.md": NOTES.encode(), "shot.png": png(4, 3), "paper.pdf": pdf(2)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return files


def notifications(app: TermchatApp) -> list[str]:
    return [n.message for n in app._notifications]


def prompt_text(app: TermchatApp) -> str:
    return app.chat.query_one("#prompt").text  # type: ignore[attr-defined, no-any-return]


def chips(app: TermchatApp) -> Chips:
    return app.chat.query_one(Chips)


def user_content(server: ProviderServer) -> list[dict[str, Any]]:
    """The last user message of the last request, as its parts."""
    message = [m for m in server.requests[-1].body["messages"] if m["role"] == "user"][-1]
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


async def attach(pilot: Pilot, path: str) -> None:
    """Ctrl+L, the path, Enter."""
    await pilot.press("ctrl+l")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, AttachScreen))
    await pilot.press(*path)
    await pilot.press("enter")
    await pilot.pause(0.1)


async def type_prompt(pilot: Pilot, text: str) -> None:
    await pilot.click("#prompt")
    await pilot.press(*text)


# Attaching, and what the request carries

def expected_parts(provider: str, files: dict[str, bytes]) -> list[dict[str, Any]]:
    image = base64.b64encode(files["shot.png"]).decode()
    document = base64.b64encode(files["paper.pdf"]).decode()
    text = {"type": "text", "text": f"File: notes.md\n```markdown\n{NOTES}```"}
    if provider == "openai":
        return [text,
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                {"type": "file", "file": {"filename": "paper.pdf",
                                          "file_data": f"data:application/pdf;base64,"
                                                       f"{document}"}}]
    return [text,
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": image}},
            {"type": "document", "source": {"type": "base64",
                                            "media_type": "application/pdf",
                                            "data": document}}]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_files_attached_with_ctrl_t_are_chips_then_parts_of_the_request(
        provider_server: ProviderServer, provider: str, some_files: dict[str, bytes]) -> None:
    provider_server.queue(Script(text="I see three files."))
    app = make_app(provider_server, provider)
    async with app.run_test(size=SIZE) as pilot:
        for name in some_files:
            await attach(pilot, name)
            assert not isinstance(app.screen, AttachScreen)
        assert [a.name for a in chips(app).attachments] == list(some_files)
        row = "\n".join(lines_of(chips(app)))
        assert "notes.md · text · 19 B" in row.replace("\xa0", " ")
        assert "shot.png · image 4×3" in row.replace("\xa0", " ")
        assert "paper.pdf · PDF, 2 pages" in row.replace("\xa0", " ")
        await send(pilot, "what are these?")
        await finish(pilot)
        assert user_content(provider_server) == [{"type": "text", "text": "what are these?"},
                                                 *expected_parts(provider, some_files)]
        assert not chips(app).display and not chips(app).attachments
        sent = "\n".join(lines_of(app.chat.query_one(AttachedFiles)))
        assert "+ notes.md · text" in sent and "+ paper.pdf · PDF, 2 pages" in sent


async def test_a_file_alone_is_sent_with_enter_on_an_empty_prompt(
        provider_server: ProviderServer, some_files: dict[str, bytes]) -> None:
    provider_server.queue(Script(text="A picture."))
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert provider_server.requests == []  # nothing to send yet
        await attach(pilot, "shot.png")
        await pilot.press("enter")
        await finish(pilot)
        assert [p["type"] for p in user_content(provider_server)] == ["image_url"]
        assert "+ shot.png · image 4×3" in "\n".join(lines_of(app.chat.query_one(
            AttachedFiles)))


async def test_the_palette_opens_the_attach_dialog(provider_server: ProviderServer,
                                                   some_files: dict[str, bytes]) -> None:
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"attach a file")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, AttachScreen))
        await pilot.press(*"notes.md", "enter")
        await wait_until(pilot, lambda: bool(chips(app).attachments))


async def test_tab_completes_the_dialogs_path_and_the_list_picks_one(
        provider_server: ProviderServer, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print('hi')\n")
    (tmp_path / "src" / "util.py").write_text("x = 1\n")
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, AttachScreen))
        path = app.screen.query_one("#attach-path")
        await pilot.press("s", "tab")
        assert path.value == "src/"  # type: ignore[attr-defined]
        await pilot.pause(0.05)
        await pilot.press("m", "tab")
        assert path.value == "src/main.py"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, AttachScreen))
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, AttachScreen))
        await pilot.press(*"src/", "down", "down", "enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, AttachScreen))
        assert [a.name for a in chips(app).attachments] == ["src/main.py", "src/util.py"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_at_path_is_completed_with_tab_and_attached_on_send(
        provider_server: ProviderServer, provider: str, some_files: dict[str, bytes]) -> None:
    provider_server.queue(Script(text="Milk."))
    app = make_app(provider_server, provider)
    async with app.run_test(size=SIZE) as pilot:
        await type_prompt(pilot, "summarise @no")
        await pilot.pause(0.05)
        hint = app.chat.query_one("#completions")
        assert hint.display and "notes.md" in "\n".join(lines_of(hint))
        await pilot.press("tab")
        assert prompt_text(app) == "summarise @notes.md "
        await pilot.press(*"please")
        assert not hint.display  # the cursor left the mention
        await pilot.press("enter")
        await finish(pilot)
        assert user_content(provider_server) == [
            {"type": "text", "text": "summarise @notes.md please"},
            expected_parts(provider, some_files)[0]]
        assert "+ notes.md · text · 19 B" in "\n".join(lines_of(app.chat.query_one(
            AttachedFiles)))


async def test_tab_steps_through_candidates_that_share_what_is_typed(
        provider_server: ProviderServer, tmp_path: Path) -> None:
    for name in ("notes.md", "notes.txt"):
        (tmp_path / name).write_text("n\n")
    (tmp_path / "My Notes").mkdir()
    (tmp_path / "My Notes" / "a b.md").write_text("spaced\n")
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        await type_prompt(pilot, "@n")
        await pilot.press("tab")
        assert prompt_text(app) == "@notes."
        await pilot.press("tab")
        assert prompt_text(app) == "@notes.md"
        await pilot.press("tab")
        assert prompt_text(app) == "@notes.txt"
        app.chat.query_one("#prompt").load_text("")  # type: ignore[attr-defined]
        await pilot.press(*"@My", "tab")
        assert prompt_text(app) == '@"My Notes/'  # a quoted path stays open
        await pilot.press("tab")
        assert prompt_text(app) == '@"My Notes/a b.md" '


async def test_a_mention_of_no_file_is_said_and_enter_again_sends_the_text(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="Hello Ada."))
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "say hi to @ada")
        await pilot.pause(0.1)
        assert provider_server.requests == []
        assert any("@ada: no such file" in n and "Enter again" in n
                   for n in notifications(app))
        assert prompt_text(app) == "say hi to @ada"
        await pilot.press("enter")
        await finish(pilot)
        assert user_content(provider_server) == [{"type": "text", "text": "say hi to @ada"}]


# Chips

async def test_a_chip_is_removed_by_a_click_or_by_delete_before_sending(
        provider_server: ProviderServer, some_files: dict[str, bytes]) -> None:
    provider_server.queue(Script(text="Only the PDF."))
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        for name in some_files:
            await attach(pilot, name)
        await pilot.click(Chips, offset=(3, 0))  # on the first chip
        await pilot.pause(0.05)
        assert [a.name for a in chips(app).attachments] == ["shot.png", "paper.pdf"]
        await pilot.click("#prompt")
        await pilot.press("shift+tab")
        assert app.focused is chips(app)
        await pilot.press("left", "delete")  # the last one is picked; left: the first
        assert [a.name for a in chips(app).attachments] == ["paper.pdf"]
        await pilot.press("escape")
        assert app.focused is app.chat.query_one("#prompt")
        await send(pilot, "and this?")
        await finish(pilot)
        parts = user_content(provider_server)
        assert [p["type"] for p in parts] == ["text", "file"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_server_that_rejects_images_names_the_file_in_one_line(
        provider_server: ProviderServer, provider: str, some_files: dict[str, bytes]) -> None:
    provider_server.queue(Script(status=400,
                                 error_message="this model does not support image input"))
    app = make_app(provider_server, provider)
    async with app.run_test(size=SIZE) as pilot:
        await attach(pilot, "shot.png")
        await send(pilot, "what is @notes.md and this?")
        await finish(pilot)
        line = str(app.chat.query_one(ErrorLine).render())
        assert "\n" not in line
        assert "rejected the request with shot.png attached" in line
        assert "notes.md" not in line  # a text file is not what a server without vision refuses
        assert "may not take images" in line and "Shift+Tab" in line


async def test_a_request_that_fails_gives_its_chips_back(provider_server: ProviderServer,
                                                         some_files: dict[str, bytes]) -> None:
    provider_server.queue(Script(status=400, error_message="this server takes no images"))
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        await attach(pilot, "shot.png")
        await send(pilot, "what is it?")
        await finish(pilot)
        assert prompt_text(app) == "what is it?"
        assert [a.name for a in chips(app).attachments] == ["shot.png"]


async def test_the_next_turn_carries_the_attachment_again(
        provider_server: ProviderServer, some_files: dict[str, bytes]) -> None:
    provider_server.queue(Script(text="Milk."), Script(text="Still milk."))
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "read @notes.md")
        await finish(pilot)
        await send(pilot, "and again?")
        await finish(pilot)
        first = provider_server.requests[-1].body["messages"][0]["content"]
        assert first[1]["text"].startswith("File: notes.md")


# Refusals: one line, and no request

@pytest.mark.parametrize(("provider", "size", "sentence"), [
    ("anthropic", 4_000_000, "anthropic takes images up to 3.7 MB (5 MB once base64-encoded)"),
    ("openai", 21 * 1024 * 1024, "no provider takes images over 20 MB"),
])
async def test_an_oversized_image_is_refused_before_any_request(
        provider_server: ProviderServer, tmp_path: Path, provider: str, size: int,
        sentence: str) -> None:
    (tmp_path / "huge.png").write_bytes(png(2000, 2000, padding=size))
    app = make_app(provider_server, provider)
    async with app.run_test(size=SIZE) as pilot:
        await attach(pilot, "huge.png")
        # The dialog stays, to fix the path; the refusal is one notification.
        assert isinstance(app.screen, AttachScreen)
        assert any(sentence in n and "\n" not in n for n in notifications(app))
        await pilot.press("escape")
        await send(pilot, "look at @huge.png")
        await pilot.pause(0.3)
        assert provider_server.requests == []
        assert len([n for n in notifications(app) if sentence in n]) == 2
        assert prompt_text(app) == "look at @huge.png"
        assert not chips(app).attachments


@pytest.mark.parametrize(("make", "reason"), [
    (lambda path: path.mkdir(), "it is a directory"),
    (lambda path: path.symlink_to(path.parent / "gone"), "it is a broken symbolic link"),
    (lambda path: path.write_bytes(bytes(range(256)) * 4), "binary data of an unknown kind"),
])
async def test_an_unusable_path_is_refused_in_one_line_with_no_request(
        provider_server: ProviderServer, tmp_path: Path, make: Callable[[Path], None],
        reason: str) -> None:
    make(tmp_path / "thing")
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "what is @thing")
        await pilot.pause(0.3)
        assert provider_server.requests == []
        refusals = [n for n in notifications(app) if reason in n]
        assert refusals and refusals[0].startswith("cannot attach thing:")
        assert prompt_text(app) == "what is @thing"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
async def test_an_unreadable_file_is_refused(provider_server: ProviderServer,
                                             tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("no\n")
    secret.chmod(0)
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "read @secret.txt")
        await pilot.pause(0.3)
        assert provider_server.requests == []
        assert any("permission denied" in n for n in notifications(app))


@pytest.mark.parametrize("hostile", HOSTILE_NAMES, ids=["osc0", "osc52"])
async def test_a_hostile_file_name_is_shown_inert_everywhere(
        provider_server: ProviderServer, tmp_path: Path, hostile: str) -> None:
    (tmp_path / hostile).write_text("harmless\n")
    provider_server.queue(Script(text="ok"))
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        await type_prompt(pilot, "@ev")
        await pilot.pause(0.05)
        assert HOSTILE_SHOWN in shown(app) and unsafe_lines(app) == []
        # It cannot be typed, so Tab leaves it; the dialog's list picks it.
        await pilot.press("tab")
        assert prompt_text(app) == "@ev"
        app.chat.query_one("#prompt").load_text("")  # type: ignore[attr-defined]
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, AttachScreen))
        assert HOSTILE_SHOWN in shown(app) and unsafe_lines(app) == []
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, AttachScreen))
        assert [a.name for a in chips(app).attachments] == [hostile]
        assert HOSTILE_SHOWN in shown(app) and unsafe_lines(app) == []
        await send(pilot, "what is this?")
        await finish(pilot)
        assert "+ " + HOSTILE_SHOWN in "\n".join(lines_of(app.chat.query_one(AttachedFiles)))
        assert unsafe_lines(app) == []
        assert "pwned" not in shown(app) and "cHduZWQ" not in shown(app)
        assert user_content(provider_server)[1]["text"].startswith(f"File: {HOSTILE_SHOWN}\n")


async def test_a_hostile_stored_file_name_is_inert_when_the_chat_is_reopened(
        provider_server: ProviderServer, tmp_path: Path) -> None:
    (tmp_path / HOSTILE_NAMES[1]).write_text("harmless\n")
    attachment = files.load(tmp_path / HOSTILE_NAMES[1], name=HOSTILE_NAMES[1])
    model = model_for(provider_server)
    config = Config(path=tmp_path / "config.toml", models={"test": model})
    with HistoryStore.open(tmp_path / "history.db") as store:
        store.new_conversation().user_prompt("what is it?", model, (attachment,)).finish(
            Reply(model=model.model, provider=model.provider, initial_text="a file",
                  status=Status.COMPLETE))
        app = TermchatApp(config, model, conversation=continue_conversation(config, store, 1),
                          history=store, cursor_blink=False, show_timings=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.1)
            assert "+ " + HOSTILE_SHOWN in "\n".join(lines_of(app.chat.query_one(
                AttachedFiles)))
            await pilot.press("ctrl+r")
            # The preview lists the prompt's file under it.
            await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen)
                             and f"+ {HOSTILE_SHOWN} · 9 B · text/plain" in shown(app))
            assert unsafe_lines(app) == [] and "cHduZWQ" not in shown(app)


# Reopened

async def test_a_reopened_chat_shows_its_files_by_name_and_size_and_sends_them_again(
        provider_server: ProviderServer, tmp_path: Path, some_files: dict[str, bytes]) -> None:
    provider_server.queue(Script(text="Three files."), Script(text="Still three."))
    model = model_for(provider_server)
    config = Config(path=tmp_path / "config.toml", models={"test": model})
    with HistoryStore.open(tmp_path / "history.db") as store:
        app = TermchatApp(config, model, history=store, cursor_blink=False, show_timings=False)
        async with app.run_test(size=SIZE) as pilot:
            await send(pilot, "read @notes.md @shot.png @paper.pdf")
            await finish(pilot)
    for name in some_files:
        (tmp_path / name).unlink()  # what is sent again is the stored copy
    with HistoryStore.open(tmp_path / "history.db") as store:
        conversation = continue_conversation(config, store, 1)
        app = TermchatApp(config, model, conversation=conversation, history=store,
                          cursor_blink=False, show_timings=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.1)
            sent = "\n".join(lines_of(app.chat.query_one(AttachedFiles)))
            assert "+ notes.md · text · 19 B" in sent
            assert "+ shot.png · image 4×3 · " in sent
            assert "+ paper.pdf · PDF, 2 pages · " in sent
            await send(pilot, "and now?")
            await finish(pilot)
        first = provider_server.requests[-1].body["messages"][0]["content"]
        assert first[1:] == expected_parts("openai", some_files)


# Snapshots

def test_snapshot_chips_a_completion_and_a_sent_prompts_files(
        snap_compare: SnapCompare, provider_server: ProviderServer,
        some_files: dict[str, bytes]) -> None:
    provider_server.queue(Script(text="Three files: notes, a picture and a paper.",
                                 input_tokens=420, output_tokens=12))

    async def run_before(pilot: Pilot) -> None:
        await send(pilot, "what are @notes.md and @shot.png?")
        await finish(pilot)
        for name in ("paper.pdf", "notes.md"):
            await attach(pilot, name)
        await type_prompt(pilot, "compare with @")
        await pilot.pause(0.1)

    assert snap_compare(make_app(provider_server), terminal_size=SIZE, run_before=run_before)
