"""Helpers for driving the TUI against the local provider server."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from termchat.config import Config
from termchat.devserver import ProviderServer
from termchat.tui.app import TermchatApp
from termchat.tui.messages import AssistantMessage
from termchat.tui.status import StatusBar
from tests.support.models import model_for

MARKDOWN_REPLY = """# Results

Some **bold** text and `code`.

- first item
- second item

```python
def answer() -> int:
    return 42
```

| name | value |
|------|------:|
| a    | 1     |
| b    | 22    |

Done.
"""




def make_app(server: ProviderServer, provider: str = "openai", *,
             config: Config | None = None, **overrides: object) -> TermchatApp:
    return TermchatApp(config or Config(path=Path("/nonexistent/config.toml")),
                       model_for(server, provider, **overrides), cursor_blink=False,
                       show_timings=False)


async def send(pilot: Pilot, prompt: str) -> None:
    """Type `prompt` into the input and press Enter."""
    # A snapshot's first step runs as the app starts, maybe before the prompt is mounted.
    await wait_until(pilot, lambda: bool(pilot.app.screen.query("#prompt")))
    await pilot.click("#prompt")
    prompt_input = pilot.app.screen.query_one("#prompt")
    prompt_input.load_text(prompt)  # type: ignore[attr-defined]
    await pilot.press("enter")
    # The prompt goes once the keys before Enter are in (a moment later): wait until it has
    # left the input, so what the test does next sees it sent (or queued). A prompt that is
    # held back stays; that is then over in a second.
    for _ in range(50):
        if prompt_input.text != prompt:  # type: ignore[attr-defined]
            break
        await pilot.pause(0.02)


async def wait_until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.02)


# A scrollbar's column at the end of a row: its thumb moves as estimated heights change.
THUMB = re.compile("[\u2581-\u2588\u2594\u2595\\s]*$")


def rows_on_screen(app: TermchatApp) -> list[str]:
    """The screen's rows as text, from its screenshot."""
    svg = app.export_screenshot()
    rows = re.findall(r'<text class="[^"]*" x="[^"]*" y="([^"]*)"[^>]*>([^<]*)</text>', svg)
    lines: dict[float, str] = {}
    for y, text in rows:
        lines[float(y)] = lines.get(float(y), "") + html.unescape(text).replace("\xa0", " ")
    return [lines[y] for y in sorted(lines)]


def view_rows(app: TermchatApp, rows: int) -> list[str]:
    """The first `rows` rows on screen without the scrollbar's column, whose thumb moves as
    estimated heights are corrected."""
    return [THUMB.sub("", row) for row in rows_on_screen(app)[:rows]]


def replies(app: TermchatApp) -> list[AssistantMessage]:
    return list(app.chat.query(AssistantMessage))


def reply_started(app: TermchatApp) -> bool:
    """The first reply has some text on screen."""
    return bool(replies(app)) and bool(replies(app)[0].text)


def screen_lines(widget: AssistantMessage) -> list[str]:
    return [widget.render_line(y).text for y in range(widget.get_content_height(
        widget.size, widget.size, widget.size.width))]


def status_text(app: TermchatApp) -> str:
    return app.chat.query_one(StatusBar).line.plain


async def finish(pilot: Pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.05)


async def disconnect_seen(server: ProviderServer, timeout: float = 2.0) -> float:
    """When the server saw the client go (blocking wait, off the event loop)."""
    record = await asyncio.to_thread(server.wait_for_disconnect, timeout)
    assert record.disconnected_at is not None
    return record.disconnected_at
