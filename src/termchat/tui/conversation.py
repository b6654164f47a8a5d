"""The scrolling conversation: follows a streaming reply while the user is at the bottom."""

from __future__ import annotations

from textual.containers import VerticalScroll


class ConversationView(VerticalScroll):
    """Follows new content while at the bottom; scrolling up stops following, and returning
    to the bottom resumes it (Textual's `anchor()` does not re-stick, #6677)."""

    can_focus = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.following = True
        self._stick_pending = False

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value < old_value and new_value < self.max_scroll_y:
            self.following = False
        elif new_value >= self.max_scroll_y:
            self.following = True

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
