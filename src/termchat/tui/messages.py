"""The conversation's message widgets: the user's prompt, the assistant's reply, an error line."""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from termchat.tui.blocks import BlockRenderer
from termchat.turn import Status

CURSOR = "▋"
_CURSOR_STYLE = Style(color="#d0d0d0")
_MARKS = {
    Status.CANCELLED: ("⏹ cancelled — partial reply kept", "bold #e0a030"),
    Status.INTERRUPTED: ("⚠ interrupted — partial reply kept", "bold #e0a030"),
    Status.ERROR: ("✖ failed — partial reply shown, not kept as context", "bold #e05050"),
}


class UserMessage(Static):
    """The user's prompt, shown verbatim (no Markdown: what was typed is what was sent)."""

    def __init__(self, prompt: str) -> None:
        super().__init__(Text(prompt), classes="user")


class ErrorLine(Static):
    """One clear line saying what went wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(Text(f"✖ {message}"), classes="error")


class AssistantMessage(Widget):
    """A reply rendered as Markdown while it streams, with a cursor after the last character.

    A line-API widget over `BlockRenderer`: appending text re-renders only the last Markdown
    block, and the compositor asks for just the visible lines, so a frame costs the same at
    the end of a long reply as at its start.
    """

    DEFAULT_CSS = """
    AssistantMessage { height: auto; }
    """

    def __init__(self, text: str = "", *, streaming: bool = False,
                 status: Status = Status.COMPLETE, cursor_blink: bool = True) -> None:
        super().__init__(classes="assistant")
        self._renderer = BlockRenderer(text)
        self._reasoning: list[str] = []
        self.streaming = streaming
        self.status = status
        self._cursor_blink = cursor_blink
        self._cursor_on = True
        self._lines: list[Strip] = []
        self._lines_width = -1
        self._stale = True

    @property
    def text(self) -> str:
        return self._renderer.text

    def on_mount(self) -> None:
        self._renderer.console = self.app.console
        if self.streaming and self._cursor_blink:
            self._blink = self.set_interval(0.5, self._toggle_cursor)

    def append(self, fragment: str) -> None:
        self._renderer.append(fragment)
        self._stale = True
        self.refresh(layout=True)

    def append_reasoning(self, fragment: str) -> None:
        self._reasoning.append(fragment)
        self._stale = True
        self.refresh(layout=True)

    def finish(self, status: Status) -> None:
        """The reply ended: drop the cursor and mark a partial reply."""
        self.streaming = False
        self.status = status
        if self._cursor_blink and hasattr(self, "_blink"):
            self._blink.stop()
        self._stale = True
        self.refresh(layout=True)

    def _toggle_cursor(self) -> None:
        self._cursor_on = not self._cursor_on
        if self._lines:
            self.refresh(Region(0, len(self._lines) - 1, self.size.width, 1))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._render_lines(width))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        lines = self._render_lines(width)
        if y >= len(lines):
            return Strip.blank(width, self.rich_style)
        line = lines[y]
        if self.streaming and y == len(lines) - 1:
            line = _with_cursor(line, self._cursor_on, width)
        return line.apply_style(self.rich_style)

    def _render_lines(self, width: int) -> list[Strip]:
        if self._stale or width != self._lines_width:
            self._lines = self._build(width)
            self._lines_width = width
            self._stale = False
        return self._lines

    def _build(self, width: int) -> list[Strip]:
        lines: list[Strip] = []
        if self._reasoning:
            reasoning = Text("".join(self._reasoning), style="italic #8a8a8a")
            console = self.app.console
            rendered = console.render_lines(reasoning, console.options.update_width(width))
            lines.extend(Strip(line, width) for line in rendered)
            lines.append(Strip.blank(width))
        body = self._renderer.lines(width)
        lines.extend(body)
        if not body and self.streaming:
            lines.append(Strip.blank(width))
        mark = _MARKS.get(self.status) if not self.streaming else None
        if mark is not None:
            text, style = mark
            lines.append(Strip.blank(width))
            lines.append(Strip([Segment(text[:width], Style.parse(style))]).extend_cell_length(
                width))
        return lines


def _with_cursor(line: Strip, visible: bool, width: int) -> Strip:
    """`line` with the cursor glyph placed right after its last visible character."""
    end = cell_len(line.text.rstrip())
    if end >= width:
        return line
    glyph = Segment(CURSOR if visible else " ", _CURSOR_STYLE)
    return Strip.join([line.crop(0, end), Strip([glyph], 1), line.crop(end + 1, width)])
