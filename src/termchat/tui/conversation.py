"""The scrolling conversation: follows a streaming reply while the user is at the bottom, and
keeps a long conversation cheap by standing in for the messages far above the view."""

from __future__ import annotations

from textual import events
from textual.containers import VerticalScroll
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget


class StandIn(Widget):
    """Takes the place of messages far above the view: one widget of their total height."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self.rows

    def render_line(self, y: int) -> Strip:
        return Strip.blank(self.size.width, self.rich_style)


class ConversationView(VerticalScroll):
    """Follows new content while at the bottom; scrolling up stops following, and returning
    to the bottom resumes it (Textual's `anchor()` does not re-stick, #6677).

    Every layout walks every widget on the screen, and a streaming reply lays the screen out
    with each new line: `collapse_above` hides the messages more than a screen above the view
    behind one `StandIn` of the same height, and they come back before they can be seen.
    """

    can_focus = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.following = True
        self._stick_pending = False
        self._stand_in: StandIn | None = None
        self._hidden: list[Widget] = []
        self._width = 0

    @property
    def _attached_stand_in(self) -> StandIn | None:
        """The stand-in, unless it went with the messages when a new or another conversation
        replaced them."""
        stand_in = self._stand_in
        return stand_in if stand_in is not None and stand_in.parent is self else None

    @property
    def collapsed(self) -> int:
        """How many messages are hidden behind the stand-in."""
        return len(self._hidden) if self._attached_stand_in is not None else 0

    async def collapse_above(self) -> None:
        """Hide the messages that end more than a screen above the view."""
        limit = self.scroll_y - self.size.height
        candidates = [child for child in self.children
                      if child is not self._stand_in and child.display]
        hiding: list[Widget] = []
        for child in candidates[:-1]:
            if child.virtual_region.bottom > limit:
                break
            hiding.append(child)
        if not hiding:
            return
        stand_in = self._attached_stand_in
        if stand_in is None:
            stand_in = self._stand_in = StandIn()
            self._hidden = []
            await self.mount(stand_in, before=0)
        # Stream layout stacks messages with no gaps: their heights add up to the same end.
        stand_in.rows += sum(child.outer_size.height for child in hiding)
        stand_in.display = True
        for child in hiding:
            child.display = False
        self._hidden.extend(hiding)
        stand_in.refresh(layout=True)

    def show_hidden(self) -> None:
        """Show every hidden message again, where it was."""
        stand_in = self._attached_stand_in
        if stand_in is None or not self._hidden:
            return
        for child in self._hidden:
            if child.parent is self:
                child.display = True
        self._hidden = []
        stand_in.rows = 0
        stand_in.display = False

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        stand_in = self._attached_stand_in
        if stand_in is not None and self._hidden and (
                new_value < stand_in.rows + self.size.height):
            self.show_hidden()  # within a screen of the hidden messages
        super().watch_scroll_y(old_value, new_value)
        if new_value < old_value and new_value < self.max_scroll_y:
            self.following = False
        elif new_value >= self.max_scroll_y:
            self.following = True

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._width:
            self._width = event.size.width
            self.show_hidden()  # at another width the hidden messages would have other heights

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
