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

    def content_grew(self) -> None:
        """Call after adding to a message; keeps the newest line in view when following."""
        if self.following and not self._stick_pending:
            self._stick_pending = True
            self.call_after_refresh(self._stick)

    def _stick(self) -> None:
        self._stick_pending = False
        if self.following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
