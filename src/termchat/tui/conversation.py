"""The scrolling conversation: follows a streaming reply while the user is at the bottom, and
keeps a conversation of any length cheap by mounting only the messages near the view.

Every layout walks every mounted widget, and a message is rendered (its Markdown, 20-30 ms for
8 KB) before it can be laid out. So a run of messages away from the view is one `StandIn`
widget of their height: estimated for messages never shown, measured for those shown before.
A stand-in gives up its messages as the view comes within a screen of it, those next to the
view first, rendered ahead in idle moments; the scroll position moves by what they really
take beyond their estimate, so the view never jumps. A long reply mounted with its end alone
rendered (the rows above it blank, of an estimated height, until the whole is rendered in
idle moments) is rendered whole at once when the view is about to show those rows, however
busy the machine: they are never seen blank.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from textual.containers import VerticalScroll
from textual.geometry import Region, Size
from textual.reactive import Reactive
from textual.strip import Strip
from textual.widget import Widget

# Opening a conversation mounts the messages that fill this many screens from the bottom.
SCREENS_MOUNTED = 2
# Rendering ahead of the scroll, in idle time: at most this long at a stretch, so a frame
# or a key never waits for it.
PRERENDER_SLICE = 0.004


def laid_out_size() -> Reactive[Size]:
    """A widget's `virtual_size` for a widget whose size only the layout sets.

    Textual's asks for another layout and a repaint whenever it changes, and the layout itself
    changes it: a reply that grew, and the view holding it, laid the screen out twice, each
    time with a full repaint of the view (a sixth of the CPU of a streaming reply). The layout
    repaints what it moved.
    """
    return Reactive(Size(0, 0), layout=False, repaint=False)


@dataclass
class Pending:
    """Messages not mounted (now): how to make their widgets, and their height."""

    make: Callable[[], list[Widget]]
    estimate: Callable[[int], int]
    """Rows at a content width: measured once shown, estimated before."""
    prerender: Callable[[float], bool] | None = None
    """Render ahead for at most some seconds; True once done."""


class StandIn(Widget):
    """Takes the place of a run of messages away from the view: one widget of their height."""

    virtual_size = laid_out_size()

    def __init__(self, pending: Sequence[Pending]) -> None:
        super().__init__()
        self.pending = list(pending)
        self.display = bool(self.pending)
        self._rows: tuple[int, int] | None = None  # (width, rows)

    def rows_at(self, width: int) -> int:
        if self._rows is None or self._rows[0] != width:
            self._rows = (width, sum(item.estimate(width) for item in self.pending))
        return self._rows[1]

    @property
    def rows(self) -> int:
        return self._rows[1] if self._rows is not None else 0

    def changed(self) -> None:
        """Its messages changed: measured again at the next layout."""
        self._rows = None
        self.display = bool(self.pending)
        self.refresh(layout=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self.rows_at(width)

    def render_line(self, y: int) -> Strip:
        return Strip.blank(self.size.width, self.rich_style)


class Estimated(Protocol):
    """A message showing rows that stand in for some of its content, at its top."""

    @property
    def virtual_region(self) -> Region: ...

    @property
    def is_attached(self) -> bool: ...

    @property
    def estimated_rows(self) -> int:
        """How many of its first rows stand in for content (0 once there are none)."""
        ...

    def show_whole(self) -> None:
        """Render what the rows stand for, now."""
        ...


@runtime_checkable
class Entry(Protocol):
    """What the view asks of a message widget to take it off screen and bring it back."""

    def clone(self) -> Widget:
        """A new widget of the same content (and rendering), to mount in this one's place."""
        ...


class ConversationView(VerticalScroll):
    """Follows new content while at the bottom; scrolling up stops following, and returning
    to the bottom resumes it (Textual's `anchor()` does not re-stick, #6677)."""

    can_focus = False
    virtual_size = laid_out_size()

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.following = True
        self._stick_pending = False
        self._revealing = False
        self._estimated: list[Estimated] = []

    def whole_before_shown(self, message: Estimated) -> None:
        """`message` shows rows standing in for content: it is rendered whole when the view
        is about to show them."""
        self._estimated.append(message)

    @property
    def stand_ins(self) -> list[StandIn]:
        return [child for child in self.children if isinstance(child, StandIn)]

    @property
    def collapsed(self) -> int:
        """How many messages (or exchanges never shown) stand behind stand-ins."""
        return sum(len(stand_in.pending) for stand_in in self.stand_ins)

    def _content_width(self) -> int:
        """The width of the view's content (less its scrollbar gutter)."""
        return max(self.scrollable_content_region.width or self.app.size.width - 1, 1)

    async def open(self, exchanges: Sequence[Pending]) -> None:
        """Show `exchanges` from the bottom: those that fill SCREENS_MOUNTED screens are
        mounted, the older ones stand behind one stand-in."""
        await self.remove_children()
        width = self._content_width()
        room = max(self.size.height or self.app.size.height, 1) * SCREENS_MOUNTED
        mounted: list[Widget] = []
        count = 0
        for exchange in reversed(exchanges):
            if room <= 0:
                break
            room -= exchange.estimate(width)
            mounted[:0] = exchange.make()
            count += 1
        older = exchanges[:len(exchanges) - count]
        await self.mount_all([StandIn(older), *mounted])
        if room <= 0:
            # More than fills the view: anchored (Textual scrolls to the end as it lays the
            # view out) until the first frame is out, so that frame shows the end, not the
            # top of what was mounted.
            self.anchor()
            self.call_after_refresh(self._release_anchor)
        if older:
            self.call_after_refresh(self._prerender)

    async def add_older(self, older: Sequence[Pending]) -> None:
        """Exchanges that come before all the view has (read after it opened) go above it,
        behind the stand-in at the top; the view shows what it showed."""
        if not older:
            return
        first = self.children[0] if self.children else None
        if not isinstance(first, StandIn):
            first = StandIn([])
            await self.mount(first, before=0)
        width = self._content_width()
        before = first.rows_at(width) if first.pending else 0
        first.pending[:0] = older
        first.changed()
        self.shift(first.rows_at(width) - before)
        self._lay_out_afresh()
        self._prerender()

    def _release_anchor(self) -> None:
        self.anchor(False)
        # Textual sets an anchored view's scroll unchecked: within bounds again.
        self.scroll_to(y=self.scroll_y, animate=False, immediate=True)

    async def collapse_above(self) -> None:
        """Take the messages that end more than a screen above the view off the screen, into
        the stand-in above them, at their measured height."""
        limit = self.scroll_y - self.size.height
        children = list(self.children)
        shown = [child for child in children if not isinstance(child, StandIn)]
        leaving: list[Widget] = []
        for child in shown[:-1]:
            if child.virtual_region.bottom > limit or not isinstance(child, Entry):
                break
            leaving.append(child)
        if not leaving:
            return
        width = self._content_width()
        pending = [_measured(child, width) for child in leaving]
        first = children.index(leaving[0])
        previous = children[first - 1] if first else None
        above = previous if isinstance(previous, StandIn) else None
        if above is None:
            above = StandIn([])
            await self.mount(above, before=leaving[0])
        # Stream layout stacks messages with no gaps: their heights add up to the same end.
        above.pending.extend(pending)
        above.changed()
        await self.remove_children(leaving)
        self._lay_out_afresh()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        if not self._revealing and any(self._near(stand_in, new_value)
                                       for stand_in in self.stand_ins):
            self.run_worker(self._reveal(), group="reveal", exclusive=True)
        super().watch_scroll_y(old_value, new_value)
        if self._estimated:
            self._show_whole_in_view(new_value)
        if new_value < old_value and new_value < self.max_scroll_y:
            self.following = False
        elif new_value >= self.max_scroll_y:
            self.following = True

    def _show_whole_in_view(self, scroll_y: float) -> None:
        """The messages whose estimated rows the view is about to show: whole now, before
        the frame that would show those rows blank. (Only then: the end shown first is about
        TAIL_SCREENS screens tall, and rendering the whole as a long conversation opens
        would cost its first frame what showing the end first saved.)"""
        height = self.size.height
        for message in list(self._estimated):
            top, rows = message.virtual_region.y, message.estimated_rows
            if not rows or not message.is_attached:
                self._estimated.remove(message)
            elif top < scroll_y + height and scroll_y < top + rows:
                self._estimated.remove(message)
                message.show_whole()

    def _near(self, stand_in: StandIn, scroll_y: float) -> bool:
        """Whether the stand-in is within a screen of the view."""
        top = stand_in.virtual_region.y
        return (stand_in.display and top - self.size.height < scroll_y
                < top + stand_in.rows + self.size.height)

    async def _reveal(self) -> None:
        """Mount what the stand-ins near the view stand for, a screen at a time, from the
        side facing the view (or, for a jump into the middle of one, at the view)."""
        self._revealing = True
        try:
            while near := [s for s in self.stand_ins if self._near(s, self.scroll_y)]:
                await self._reveal_one(near[0])
        finally:
            self._revealing = False
        self._prerender()

    async def _reveal_one(self, stand_in: StandIn) -> None:
        width = self._content_width()
        top, height = stand_in.virtual_region.y, max(self.size.height, 1)
        rows = [item.estimate(width) for item in stand_in.pending]
        if self.scroll_y >= top + stand_in.rows:  # above the view: its last ones
            start = len(rows)
            while start and sum(rows[start:]) < height:
                start -= 1
            end = len(rows)
        elif self.scroll_y + height <= top:  # below the view: its first ones
            start, end = 0, 0
            while end < len(rows) and sum(rows[:end]) < height:
                end += 1
        else:  # the view is in it: what is at the view
            start, offset = 0, top
            while start < len(rows) - 1 and offset + rows[start] <= self.scroll_y:
                offset += rows[start]
                start += 1
            end = start
            while end < len(rows) and sum(rows[start:end]) < 2 * height:
                end += 1
        batch = stand_in.pending[start:end]
        widgets = [widget for item in batch for widget in item.make()]
        for widget in widgets:
            widget.display = False
        estimated = sum(rows[start:end])
        before, after = stand_in.pending[:start], stand_in.pending[end:]
        if before and after:
            # A jump into the middle: the messages before the view get a stand-in of their own.
            await self.mount(StandIn(before), before=stand_in)
            stand_in.pending = after
            await self.mount_all(widgets, before=stand_in)
            above = sum(rows[:start])
        elif after:
            stand_in.pending = after
            await self.mount_all(widgets, before=stand_in)
            above = 0
        else:
            stand_in.pending = before
            await self.mount_all(widgets, after=stand_in)
            above = sum(rows[:start])
        actual = sum(_rows(widget, width) for widget in widgets)
        for widget in widgets:
            widget.display = True
        stand_in.changed()
        self._lay_out_afresh()
        if self.scroll_y >= top + above + estimated:
            # What the view shows is below the new messages: it moves by what they really
            # take beyond their estimate, in the frame that lays them out.
            self.shift(actual - estimated)

    def _lay_out_afresh(self) -> None:
        """Messages were put in or taken out: the next layout places every one anew.

        Textual's stream layout (8.2.8) reuses its last placement of a child found at the same
        index as then, even after an earlier child changed: a message mounted while the one
        before it was still hidden kept its old row when that one was shown, a row below its
        place (the view jumped by a row). A new layout object has no placements to reuse."""
        self.styles.layout = "vertical"
        self.styles.layout = "stream"

    def shift(self, rows: int) -> None:
        """Content above the view grew by `rows` (shrank, if negative): the view moves with
        it, showing what it showed."""
        if rows:
            self.set_reactive(VerticalScroll.scroll_y, self.scroll_y + rows)
            self.set_reactive(VerticalScroll.scroll_target_y, self.scroll_y)

    def _prerender(self) -> None:
        self.run_worker(self._render_ahead(), group="prerender", exclusive=True)

    async def _render_ahead(self) -> None:
        """Render the next messages to mount (those at the edges of the stand-ins next to
        the mounted ones) in idle slices."""
        for stand_in in self.stand_ins:
            nearest = stand_in.pending[-SCREENS_MOUNTED * 2:][::-1] + stand_in.pending[:2]
            for item in nearest:
                if item.prerender is None:
                    continue
                while not item.prerender(PRERENDER_SLICE):
                    await asyncio.sleep(0)
                await asyncio.sleep(0)

    def content_grew(self, lines: int = 0) -> None:
        """Call after adding to a message (`lines` taller, when known); keeps the newest line
        in view when following."""
        if not self.following:
            return
        if lines > 0 and 0 < self.max_scroll_y <= self.scroll_y:
            # Scroll in the frame that lays the new lines out, not the one after: the new end
            # is known before layout (as in Textual's own anchoring, which cannot re-stick).
            end = self.max_scroll_y + lines
            self.set_reactive(VerticalScroll.scroll_y, end)
            self.set_reactive(VerticalScroll.scroll_target_y, end)
        if not self._stick_pending:
            # After layout, settle on the real end whatever else changed height.
            self._stick_pending = True
            self.call_after_refresh(self._stick)

    def _stick(self) -> None:
        self._stick_pending = False
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)


def _measured(widget: Widget, width: int) -> Pending:
    """A shown message taken off screen: made again from itself, at its measured height (at
    another width an estimate, which showing it corrects)."""
    assert isinstance(widget, Entry)
    height = widget.outer_size.height
    return Pending(lambda: [widget.clone()], lambda at: height)


def _rows(widget: Widget, width: int) -> int:
    """The rows a message takes at the view's content width (mounted, maybe not displayed)."""
    gutter = widget.styles.gutter
    inner = max(width - gutter.width, 1)
    size = Size(inner, 0)
    return widget.get_content_height(size, size, inner) + gutter.height


def estimate_rows(text: str, width: int) -> int:
    """About how many rows `text` takes wrapped at `width` (for a message not rendered yet):
    its lines, and as many more as its characters fill. Counted without a Python loop, so a
    thousand 8 KB replies take a millisecond or two; showing a message corrects it anyway."""
    return text.count("\n") + 1 + len(text) // max(width, 1)
