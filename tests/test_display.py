"""What a real OpenAI-compatible server showed: a model id that is a file path must not push
the counts and timings out of the status bar, `--list` or the history list."""

from __future__ import annotations

import html
import re
import sqlite3
import time
from pathlib import Path

import pytest
from rich.text import Text

from termchat.config import ModelConfig
from termchat.events import Finish, Usage
from termchat.history import HistoryStore
from termchat.tui.status import describe, fit
from termchat.turn import Reply, Status
from tests.support.cli import environment, on_terminal

PATH_MODEL = "/home/someone/models/Meta-Llama-3.1-8B-Instruct-Q4_K_M-imatrix-2024.gguf"


def _reply() -> Reply:
    return Reply(model=PATH_MODEL, provider="openai", initial_text="hi",
                 status=Status.COMPLETE, finish=Finish.from_raw("stop"),
                 usage=Usage(input_tokens=120, output_tokens=45), started_at=0.0,
                 first_token_at=0.4, ended_at=2.0)


def test_a_long_model_id_gives_way_in_the_status_bar() -> None:
    line: Text = fit(describe(f"openai:{PATH_MODEL}", _reply()), 80)
    plain = line.plain
    assert line.cell_len <= 80
    assert "done" in plain and "finish stop" in plain and "in 120 · out 45" in plain
    # The model's name is elided from its start: its file name is what tells models apart.
    assert plain.startswith("…") and "imatrix-2024.gguf" in plain


def test_a_narrow_status_bar_keeps_the_state_and_drops_the_timings_first() -> None:
    plain = fit(describe(f"openai:{PATH_MODEL}", _reply()), 60).plain
    assert "done" in plain and "ttft" not in plain
    assert len(plain) <= 60


def test_the_status_bar_is_whole_when_there_is_room() -> None:
    plain = fit(describe("openai:gpt-4.1-mini", _reply()), 200).plain
    assert plain.startswith("openai:gpt-4.1-mini  done  │  finish stop  │  in 120 · out 45")
    assert "ttft 0.40s" in plain


def _stored(tmp_path: Path) -> dict[str, str]:
    env = environment(tmp_path, base_url="http://127.0.0.1:9/v1")
    model = ModelConfig(name=f"openai:{PATH_MODEL}", provider="openai", model=PATH_MODEL)
    path = tmp_path / "data" / "termchat" / "history.db"
    with HistoryStore.open(path) as store:
        record = store.new_conversation()
        record.user_prompt("Write a haiku about the sea", model).finish(
            Reply(model=PATH_MODEL, provider="openai", initial_text="waves",
                  status=Status.COMPLETE))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE conversations SET updated = 1714554000")
    return env


def test_list_at_80_columns_keeps_the_title(tmp_path: Path) -> None:
    code, out, err = on_terminal(["--list"], _stored(tmp_path))
    assert (code, err) == (0, b"")
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.decode())
    assert "Title" in text and "Write a haiku about the sea" in text
    assert all(len(line) <= 80 for line in text.replace("\r", "").splitlines())


async def test_the_history_list_shows_count_and_date_before_a_long_model_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from termchat.config import Config
    from termchat.tui.app import TermchatApp
    from termchat.tui.history_screen import HistoryScreen

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    _stored(tmp_path)
    model = ModelConfig(name="gpt", provider="openai", model="gpt-4.1-mini")
    with HistoryStore.open(tmp_path / "data" / "termchat" / "history.db") as store:
        app = TermchatApp(Config(path=tmp_path / "config.toml"), model, history=store,
                          cursor_blink=False, show_timings=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("ctrl+r")
            await pilot.pause(0.5)
            assert isinstance(app.screen, HistoryScreen)
            screen = html.unescape(app.export_screenshot()).replace("\xa0", " ")
            assert "2 messages · 2024-05-01" in screen
    monkeypatch.undo()
    time.tzset()
