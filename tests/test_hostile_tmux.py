"""The installed `termchat` TUI in a real terminal (tmux) against hostile input and hostile
circumstances: a reply cannot write the clipboard or set the title; a signal mid-reply saves
the reply and gives the terminal back; keys typed while it starts are kept."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from termchat.devserver import ProviderServer, Script
from termchat.history import HistoryStore, StoredMessage
from tests.support.cli import TERMCHAT
from tests.support.tmux import Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

IN_PANE = f"{TERMCHAT}; echo EXIT=$?; sleep 600"
# The pane's terminal: in the alternate screen, cursor shown, mouse reporting on.
MODES = "#{alternate_on} #{cursor_flag} #{mouse_any_flag}"


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def stored_messages(tmp_path: Path) -> list[StoredMessage]:
    """The messages of the last conversation in the history of the pane's termchat."""
    with HistoryStore.open(tmp_path / "data" / "termchat" / "history.db") as store:
        cid = store.last_conversation_id()
        assert cid is not None, "nothing was saved"
        return store.get(cid).messages


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            # The command name, in parentheses, may hold spaces: the fields follow its end.
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry))
    return found


def termchat_pid(tmux: Tmux) -> int:
    """The pid of the pane's termchat: the pane's shell's child running it (other termchat
    processes run on this machine; none of them may be touched)."""
    shell = int(tmux("display-message", "-p", "#{pane_pid}").strip())
    [pid] = [child for child in children(shell)
             if TERMCHAT.encode() in Path(f"/proc/{child}/cmdline").read_bytes()]
    return pid


def test_a_reply_cannot_write_the_clipboard_or_set_the_title_of_a_real_terminal(
        tmux: Tmux, provider_server: ProviderServer, tmp_path: Path) -> None:
    provider_server.queue(Script(chunks=[
        "Clip\x1b]52;c;aGVs", "bG8=\x07board and ", "title\x1b]0;pwned-title\x07 and ",
        "screen\x1b[2J\x1b[H kept, ", "ST-ended\x1b]52;c;aGVsbG8=\x1b\\ too."], delay=0.02))
    # First the pane proves the terminal obeys: its own OSC 52 becomes a paste buffer and its
    # OSC 2 the pane's title. Then, after Enter, termchat runs in the same pane.
    control = r"printf '\033]52;c;Y29udHJvbA==\007\033]2;control-title\007'; read go; "
    tmux("start-server", ";", "set-option", "-s", "set-clipboard", "on", ";",
         "new-session", "-d", "-x", "100", "-y", "30", control + IN_PANE)
    wait_until(lambda: tmux("list-buffers").strip() != "")
    assert tmux("show-buffer") == "control"
    assert tmux("display-message", "-p", "#{pane_title}").strip() == "control-title"
    tmux("delete-buffer")
    tmux("send-keys", "Enter")
    tmux.wait_for(r"New chat")

    tmux("send-keys", "-l", "show me")
    tmux("send-keys", "Enter")
    tmux.wait_for(r"Clipboard and title and screen kept, ST-ended too\.")
    tmux.wait_for(r"done")
    assert tmux("list-buffers") == ""
    assert tmux("display-message", "-p", "#{pane_title}").strip() == "control-title"
    screen = "\n".join(tmux.screen())
    assert "show me" in screen  # nothing cleared the screen
    assert not any(remnant in screen for remnant in ("52;", "pwned", "[2J", "]0;", "aGVs"))
    # The sequences did reach termchat (server and SDK passed them on): it made them inert.
    [_, reply] = stored_messages(tmp_path)
    assert reply.text.startswith("Clip\x1b]52;c;aGVsbG8=\x07board")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                              (signal.SIGINT, 130)])
def test_a_signal_mid_reply_saves_it_and_gives_the_terminal_back(
        tmux: Tmux, provider_server: ProviderServer, tmp_path: Path, signum: int,
        code: int) -> None:
    text = "Streaming words for a while. " * 200
    provider_server.queue(Script(text=text, chunk_size=8, delay=0.03))
    tmux.start(IN_PANE)
    tmux.wait_for(r"New chat")
    tmux("send-keys", "-l", "talk")
    tmux("send-keys", "Enter")
    tmux.wait_for(r"a while\. Streaming words")
    assert tmux("display-message", "-p", MODES).split() == ["1", "0", "1"]

    os.kill(termchat_pid(tmux), signum)
    tmux.wait_for(rf"^EXIT={code}$")
    assert tmux("display-message", "-p", MODES).split() == ["0", "1", "0"]
    [prompt, reply] = stored_messages(tmp_path)
    assert (prompt.text, reply.status) == ("talk", "cancelled")
    sent = provider_server.requests[-1].chunks_sent
    assert len("Streaming words for a while. Streaming words") <= len(reply.text)
    assert text[:8 * sent].startswith(reply.text)


def test_when_the_terminal_itself_goes_away_mid_reply_termchat_saves_it_and_exits(
        tmux: Tmux, provider_server: ProviderServer, tmp_path: Path) -> None:
    # When a terminal hangs up the kernel sends its session leader SIGHUP and then SIGCONT;
    # Textual takes the SIGCONT for a resume after Ctrl+Z and then blocks on the dead terminal.
    # termchat leads the session when it is the pane's command, as in `ssh host termchat`.
    text = "Streaming words for a while. " * 2000
    provider_server.queue(Script(text=text, chunk_size=8, delay=0.001))
    tmux.start(f"exec {TERMCHAT}")
    tmux.wait_for(r"New chat")
    tmux("send-keys", "-l", "talk")
    tmux("send-keys", "Enter")
    tmux.wait_for(r"a while\. Streaming words")
    pid = int(tmux("display-message", "-p", "#{pane_pid}").strip())
    assert TERMCHAT.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert os.getsid(pid) == pid

    tmux.kill()
    wait_until(lambda: not Path(f"/proc/{pid}").exists()
               or b"zombie" in Path(f"/proc/{pid}/status").read_bytes(), timeout=10)
    [prompt, reply] = stored_messages(tmp_path)
    assert (prompt.text, reply.status) == ("talk", "cancelled")
    assert reply.text.startswith("Streaming words for a while. Streaming words")


def test_a_prompt_typed_while_termchat_starts_is_sent_and_saved(
        tmux: Tmux, provider_server: ProviderServer, tmp_path: Path) -> None:
    provider_server.queue(Script(text="Typed ahead and answered."))
    # Typed before termchat even starts, so the terminal is still in line mode (its ICRNL
    # makes the Enter a line feed), however soon the screen is up after that.
    tmux.start(f"sleep 1; {IN_PANE}")
    tmux("send-keys", "-l", "typed early")
    tmux("send-keys", "Enter")
    assert not any("New chat" in line for line in tmux.screen()), "typed after start-up"
    tmux.wait_for(r"Typed ahead and answered\.")
    tmux.wait_for(r"done")
    assert provider_server.requests[-1].body["messages"] == [
        {"role": "user", "content": "typed early"}]
    tmux("send-keys", "C-q")
    tmux.wait_for(r"^EXIT=0$")
    assert [(m.role, m.text) for m in stored_messages(tmp_path)] == [
        ("user", "typed early"), ("assistant", "Typed ahead and answered.")]
