"""The conversation's message widgets: the user's prompt, the assistant's reply, an error line."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from termchat.tui.conversation import (
    PRERENDER_SLICE,
    ConversationView,
    estimate_rows,
    laid_out_size,
)
from termchat.turn import Status
from termchat.untrusted import Safe

if TYPE_CHECKING:
    from termchat.tui.blocks import BlockRenderer

CURSOR = "▋"
NO_TEXT = Safe("")
# New text is rendered at most once per FRAME_SECONDS (a frame's worth of chunks at a time,
# which keeps chunk-to-screen well under 50 ms), and when that is dear (a long code block or
# table at the end) rarer still, within RENDER_SHARE of the time, so frames and keys always
# get their turn. Rendering every chunk as it came cost half a core at 200 chunks a second.
FRAME_SECONDS = 1 / 30
BLINK_SECONDS = 0.5
GROWTH_STEP = 8
# More pieces than this between two renders is a flood (1,500 a second at 30 frames a
# second; a model streams 20-200): then ten frames a second show it as well, for a third of
# the layout and painting.
FLOOD_PIECES = 50
FLOOD_SECONDS = 1 / 10
RENDER_SHARE = 0.25
# A render due within this long goes at once. New text comes with a read of the reply's socket,
# and those are paced a frame apart (`READ_PACE` of the providers): text and frame arrive
# together, and a timer for the last millisecond would be an extra wake-up of its own. (And
# Textual drops a one-shot timer whose delay passes before it first looks at the clock.)
FRAME_SLACK = FRAME_SECONDS / 6
# A finished reply taller than this many screens shows its end first: the blocks that fill
# them, below rows standing for the rest until that is rendered in idle moments.
TAIL_SCREENS = 2
_CURSOR_STYLE = Style(color="#d0d0d0")
_MARKS = {
    Status.CANCELLED: ("■ cancelled — partial reply kept", "bold #e0a030"),
    Status.INTERRUPTED: ("⚠ interrupted — partial reply kept", "bold #e0a030"),
    Status.ERROR: ("✖ failed — partial reply shown, not kept as context", "bold #e05050"),
}


def status_mark(status: Status) -> str | None:
    """The line that marks a reply that did not complete, if it did not."""
    mark = _MARKS.get(status)
    return mark[0] if mark is not None else None


class UserMessage(Static):
    """The user's prompt, shown verbatim (no Markdown: what was typed is what was sent)."""

    def __init__(self, prompt: Safe) -> None:
        super().__init__(Text(prompt), classes="user")
        self._prompt = prompt

    def clone(self) -> UserMessage:
        return UserMessage(self._prompt)


class ErrorLine(Static):
    """One clear line saying what went wrong and what to do."""

    def __init__(self, message: Safe) -> None:
        super().__init__(Text(f"✖ {message}"), classes="error")
        self._message = message

    def clone(self) -> ErrorLine:
        return ErrorLine(self._message)


class NoteLine(Static):
    """One line saying what became of an exchange that has nothing else to show."""

    def __init__(self, message: Safe) -> None:
        super().__init__(Text(message), classes="note")
        self._message = message

    def clone(self) -> NoteLine:
        return NoteLine(self._message)


class AssistantMessage(Widget):
    """A reply rendered as Markdown while it streams, with a cursor after the last character.

    A line-API widget over `BlockRenderer`: new text is rendered once per frame however many
    chunks arrived, only the last Markdown block is re-rendered, and only the lines after the
    settled blocks are repainted, so a frame costs the same at the end of a long reply as at
    its start.
    """

    DEFAULT_CSS = """
    AssistantMessage { height: auto; }
    """
    virtual_size = laid_out_size()

    def __init__(self, text: Safe = NO_TEXT, *, streaming: bool = False,
                 status: Status = Status.COMPLETE, cursor_blink: bool = True,
                 rendered: BlockRenderer | None = None, tail_first: bool = False) -> None:
        """`rendered` is the reply's text already rendered ahead (see `Prerender`). With
        `tail_first`, a long finished reply shows its end at once and the rest once it is
        rendered in idle moments (a conversation opens at its end: that is what is seen)."""
        super().__init__(classes="assistant")
        # Markdown parsing and rendering load on the first reply, not before the first frame.
        from termchat.tui.blocks import BlockRenderer

        self._renderer = rendered or BlockRenderer(text)
        self._reasoning: list[str] = []
        self._reasoning_lines: list[Strip] = []
        self._reasoning_changed = False
        self._stable_before = 0
        self.streaming = streaming
        self.status = status
        self._cursor_blink = cursor_blink
        self._cursor_on = True
        self._lines: list[Strip] = []
        self._width = -1
        self._stale = True
        # The first content line changed since the last repaint request (None: nothing).
        self._repaint_from: int | None = None
        self._flush_pending = False
        self._last_flush = 0.0
        # Pieces of text since the last render, and whether they came faster than anyone
        # reads (a flood: then a frame costs more than the text is worth).
        self._pieces = 0
        self._flooded = False
        self._flush_cost = FRAME_SECONDS * RENDER_SHARE
        self._cursor_y = 0
        self._painted_height = 0
        self._laid_out_height = 0
        self._reported_height = 0
        self._style: Style | None = None
        self._tail_first = tail_first and not streaming and rendered is None
        # While only the end is shown: (width, rows standing for the rest, the end's renderer).
        self._tail: tuple[int, int, BlockRenderer] | None = None

    @property
    def text(self) -> str:
        return self._renderer.text

    @property
    def has_reasoning(self) -> bool:
        return bool(self._reasoning)

    def clone(self) -> AssistantMessage:
        """The same finished reply, with its rendering: nothing is rendered again."""
        again = AssistantMessage(Safe(self.text), status=self.status,
                                 cursor_blink=self._cursor_blink, rendered=self._renderer)
        again._reasoning = list(self._reasoning)
        again._reasoning_changed = bool(self._reasoning)
        return again

    def on_mount(self) -> None:
        if self.streaming and self._cursor_blink:
            self._blink = self.set_interval(BLINK_SECONDS, self._toggle_cursor)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._style = None

    def append(self, fragment: Safe) -> None:
        self._whole_now()
        self._renderer.append(fragment)
        self._pieces += 1
        self._changed()

    def append_reasoning(self, fragment: Safe) -> None:
        self._reasoning.append(fragment)
        self._reasoning_changed = True
        self._changed()

    def finish(self, status: Status) -> None:
        """The reply ended: drop the cursor and mark a partial reply."""
        self.streaming = False
        self.status = status
        if self._cursor_blink and hasattr(self, "_blink"):
            self._blink.stop()
        # The last frame goes out at once, with the status bar that says the reply is done.
        self._stale = True
        self._flush()

    def show_now(self) -> None:
        """Render the text that came since the last frame now rather than at its frame: the
        status bar is about to say the reply is done, and both go out in one frame."""
        if self._flush_pending:
            self._flush()

    def _changed(self) -> None:
        self._stale = True
        if self._flush_pending:
            return
        self._flush_pending = True
        gap = FLOOD_SECONDS if self._flooded else FRAME_SECONDS
        gap = max(gap, self._flush_cost / RENDER_SHARE)
        delay = self._last_flush + gap - time.perf_counter()
        if delay > FRAME_SLACK:
            self.set_timer(delay, self._flush)
        else:
            self.call_later(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        self._flooded = self._pieces > FLOOD_PIECES and self.streaming
        self._pieces = 0
        self._last_flush = began = time.perf_counter()
        self._render_new_text()
        # A moving average: one dear flush does not slow the next ten.
        self._flush_cost += (time.perf_counter() - began - self._flush_cost) / 4

    @property
    def _height(self) -> int:
        """The lines the widget takes: while it streams, room for the next few lines too, so
        the view scrolls (every line on screen redrawn) once per GROWTH_STEP new lines."""
        lines = len(self._lines)
        return -(-lines // GROWTH_STEP) * GROWTH_STEP if self.streaming else lines

    def _render_new_text(self) -> None:
        if self._width < 0:
            self.refresh(layout=True)
            return
        if self._stale:
            self._rebuild(self._width)
        height = self._height
        not_laid_out = height - self._laid_out_height
        if self._repaint_from is not None:
            # Lines above the first changed one are repainted from Textual's cache, and the
            # screen is laid out again only if the height changed.
            self._request_repaint(layout=not_laid_out != 0)
        # Told even when a layout got here first, so the view follows every new line.
        if height > self._reported_height and isinstance(self.parent, ConversationView):
            self.parent.content_grew(max(not_laid_out, 0))
        self._reported_height = height

    def _request_repaint(self, layout: bool = False) -> None:
        start = self._repaint_from or 0
        self._repaint_from = None
        # Down to one line past the end: the bottom padding moves when the height changes.
        end = max(len(self._lines), self._painted_height) + 1
        self._painted_height = len(self._lines)
        self.refresh(Region(0, start, self._width, end - start), layout=layout)

    def _stable_lines(self) -> int:
        """How many leading lines later text cannot change."""
        return len(self._reasoning_lines) + self._renderer.stable_lines

    def _toggle_cursor(self) -> None:
        if self._cursor_on and time.perf_counter() - self._last_flush < BLINK_SECONDS:
            return  # text is flowing: the cursor moves with it, and a blink is a frame more
        self._cursor_on = not self._cursor_on
        if self._lines:
            self.refresh(Region(0, self._cursor_y, self.size.width, 1))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        # Text that came after the last render waits for the next one (the flush is due):
        # rendering it here too would render most of it twice.
        if width != self._width or (self._stale and not self._flush_pending):
            self._rebuild(width)
        if self._repaint_from is not None:
            # Laid out before `_flush` came: the lines that changed go out in this frame.
            self._request_repaint()
        self._laid_out_height = self._height
        return self._laid_out_height

    def render_line(self, y: int) -> Strip:
        # New text is rendered by `_flush` or the layout, never halfway through painting, so
        # a frame never mixes new lines with cached old ones.
        width = self.size.width
        if width != self._width:
            self._rebuild(width)
        if self._style is None:
            self._style = self.rich_style
        if y >= len(self._lines):
            return Strip.blank(width, self._style)
        line = self._lines[y]
        if self.streaming and y == self._cursor_y:
            line = _with_cursor(line, self._cursor_on, width)
        return line.apply_style(self._style)

    def _rebuild(self, width: int) -> None:
        if self._renderer.console is None:
            # Here, not on mount: a layout from the screen's update timer may come before the
            # mount is handled.
            self._renderer.console = self.app.console
        previous = self._lines if width == self._width else []
        self._width = width
        self._stale = False
        start = self._stable_before
        if self._reasoning and (not previous or self._reasoning_changed):
            start = 0
            reasoning = Text("".join(self._reasoning), style="italic #8a8a8a")
            console = self.app.console
            rendered = console.render_lines(reasoning, console.options.update_width(width))
            self._reasoning_lines = [*(Strip(line, width) for line in rendered),
                                     Strip.blank(width)]
        self._reasoning_changed = False
        lines = list(self._reasoning_lines)
        body = self._tail_lines(width) if self._tail_first else None
        if body is None:
            body = self._renderer.lines(width)
        lines.extend(body)
        if not body and self.streaming:
            lines.append(Strip.blank(width))
        old_cursor_y = self._cursor_y
        self._cursor_y = _last_text_line(lines)
        mark = _MARKS.get(self.status) if not self.streaming else None
        if mark is not None:
            text, style = mark
            lines.append(Strip.blank(width))
            lines.append(Strip([Segment(text[:width], Style.parse(style))]).extend_cell_length(
                width))
        self._lines = lines
        # Settled lines are the same Strip objects from one rebuild to the next.
        changed = _first_difference(previous, lines, start)
        self._stable_before = self._stable_lines()
        if previous:
            changed = min(changed, old_cursor_y)
        self._repaint_from = changed if self._repaint_from is None else min(
            self._repaint_from, changed)


    # --- A long reply's end first --------------------------------------------------------

    def _tail_lines(self, width: int) -> list[Strip] | None:
        """The reply's last blocks (those that fill TAIL_SCREENS screens), below blank rows
        of the height the rest is estimated to take; None once the whole is rendered, or
        when the end is all of it."""
        from termchat.markdown_lines import block_starts
        from termchat.tui.blocks import BlockRenderer

        if self._tail is None or self._tail[0] != width:
            if not self.is_attached:  # measured while its screen is going: the whole, then
                self._tail_first = False
                return None
            text = self.text
            wanted = max(self.screen.size.height, 1) * TAIL_SCREENS
            if estimate_rows(text, width) <= 2 * wanted:
                self._tail_first = False
                return None
            starts = block_starts(text)
            split = next((start for start in reversed(starts)
                          if estimate_rows(text[start:], width) >= wanted), 0)
            if split == 0:
                self._tail_first = False
                return None
            first = self._tail is None
            # The blank line Rich puts between two blocks is in the estimate's extra row.
            # Code in one colour: highlighters load (20-80 ms each) before the whole is shown.
            self._tail = (width, estimate_rows(text[:split], width),
                          BlockRenderer(text[split:], self.app.console, plain_code=True))
            if first:
                self.call_after_refresh(self._render_whole_soon)
                if isinstance(self.parent, ConversationView):
                    self.parent.whole_before_shown(self)
        _, head_rows, tail = self._tail
        return [Strip.blank(width)] * head_rows + tail.lines(width)

    @property
    def estimated_rows(self) -> int:
        """While its end alone is shown, the rows from its top to the end of those standing
        for its head (its reasoning's lines, if any, come first); 0 once it is whole."""
        if not self._tail_first or self._tail is None:
            return 0
        return len(self._reasoning_lines) + self._tail[1]

    def show_whole(self) -> None:
        """The view is about to show the rows standing for its head: render the whole now."""
        self._whole_now()

    def _render_whole_soon(self) -> None:
        self.run_worker(self._render_whole(), group="whole", exclusive=True,
                        exit_on_error=False)

    async def _render_whole(self) -> None:
        """Render the whole reply a slice at a time, then show it in place of its end alone,
        keeping what the view shows where it is."""
        from termchat.markdown_lines import fence_languages, load_highlighters
        from termchat.tui.blocks import Prerender

        text = self.text
        await asyncio.to_thread(lambda: load_highlighters(fence_languages(text)))
        ahead = Prerender(text, self.app.console)
        while self._tail_first and not ahead.step(self._width, PRERENDER_SLICE):
            await asyncio.sleep(0)
        if self._tail_first:
            self._renderer = ahead.renderer
            self._whole_now()

    def _whole_now(self) -> None:
        """From now on the whole reply is shown (rendered now unless rendered ahead)."""
        if not self._tail_first:
            return
        self._tail_first = False
        self._tail = None
        if self._width < 0:
            return
        before = self._height
        self._rebuild(self._width)
        grown = self._height - before
        view = self.parent
        if isinstance(view, ConversationView) and grown:
            if view.following:
                view.content_grew(max(grown, 0))
            elif self.virtual_region.y < view.scroll_y:
                view.shift(grown)  # the rows standing for the rest were above the view
        self.refresh(layout=True)


def _first_difference(old: list[Strip], new: list[Strip], start: int) -> int:
    """The index of the first line of `new` that differs from `old`, looking from `start` on
    (lines before it are known to be the same objects). The tail is rendered anew each time,
    but mostly only its last line has changed: only that one is repainted."""
    start = min(start, len(old), len(new))
    for y in range(start, min(len(old), len(new))):
        if old[y] is not new[y] and old[y] != new[y]:
            return y
    return min(len(old), len(new))


def _last_text_line(lines: list[Strip]) -> int:
    """The last line with visible text: the cursor goes there, not on a code block's padding."""
    for y in range(len(lines) - 1, max(len(lines) - 4, 0) - 1, -1):
        if lines[y].text.strip():
            return y
    return max(len(lines) - 1, 0)


def _with_cursor(line: Strip, visible: bool, width: int) -> Strip:
    """`line` with the cursor glyph placed right after its last visible character."""
    end = cell_len(line.text.rstrip())
    if end >= width:
        return line
    glyph = Segment(CURSOR if visible else " ", _CURSOR_STYLE)
    return Strip.join([line.crop(0, end), Strip([glyph], 1), line.crop(end + 1, width)])
