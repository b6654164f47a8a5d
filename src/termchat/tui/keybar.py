"""The keys that do something on a screen, in one line at its bottom."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.style import Style
from rich.text import Text
from textual import events
from textual.widget import Widget

if TYPE_CHECKING:
    from textual.binding import Binding
    from textual.screen import Screen

_DIM = Style(dim=True)


class KeyBar(Widget, can_focus=False):
    """What Textual's `Footer` shows: each shown binding's key and what it does (one per
    action, a disabled one dimmed), the command palette's key at the right; a click presses
    the key. Drawn as one line by one widget: the Footer mounts and styles a widget per key
    each time the keys change (a reply starting or ending), 30-50 ms on the event loop."""

    COMPONENT_CLASSES = {"keybar--key", "keybar--description"}
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
        .keybar--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        .keybar--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # Where each key is drawn: (first cell, end cell, key, enabled), for clicks.
        self._spans: list[tuple[int, int, str, bool]] = []

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._keys_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _keys_changed(self, screen: Screen[object]) -> None:
        self.refresh()

    def shown(self) -> tuple[list[tuple[Binding, bool]], tuple[Binding, bool] | None]:
        """The bindings drawn, in order (the first of each action), and the palette's."""
        active = self.screen.active_bindings
        keys: dict[str, tuple[Binding, bool]] = {}
        for _, binding, enabled, _tooltip in active.values():
            if binding.show and binding.action not in keys:
                keys[binding.action] = (binding, enabled)
        palette = None
        if self.app.ENABLE_COMMAND_PALETTE and self.app.COMMAND_PALETTE_BINDING in active:
            _, binding, enabled, _tooltip = active[self.app.COMMAND_PALETTE_BINDING]
            palette = (binding, enabled)
            keys.pop(binding.action, None)
        return list(keys.values()), palette

    def render(self) -> Text:
        key_style = self.get_component_rich_style("keybar--key")
        description_style = self.get_component_rich_style("keybar--description")
        width = self.size.width
        keys, palette = self.shown()
        right = Text()
        if palette is not None:  # after a bar, which takes the place of its leading space
            right = self._key(palette, key_style, description_style)[1:]
        room = max(width - right.cell_len - 1, 0) if palette is not None else width
        line = Text(no_wrap=True, overflow="crop", end="")
        spans = []
        for binding, enabled in keys:
            part = self._key((binding, enabled), key_style, description_style)
            if line.cell_len + part.cell_len > room:
                break
            spans.append((line.cell_len, line.cell_len + part.cell_len, binding.key, enabled))
            line.append_text(part)
        if palette is not None:
            line.append(" " * (width - line.cell_len - right.cell_len - 1))
            line.append("▏", _DIM)
            start = line.cell_len
            spans.append((start, start + right.cell_len, palette[0].key, palette[1]))
            line.append_text(right)
        self._spans = spans
        return line

    def _key(self, key: tuple[Binding, bool], key_style: Style,
             description_style: Style) -> Text:
        binding, enabled = key
        dim = Style() if enabled else _DIM
        part = Text(f" {self.app.get_key_display(binding)} ", key_style + dim)
        if binding.description:
            part.append(f"{binding.description} ", description_style + dim)
        return part

    def on_click(self, event: events.Click) -> None:
        for start, end, key, enabled in self._spans:
            if start <= event.x < end:
                if enabled:
                    self.app.simulate_key(key.split(",")[0])
                else:
                    self.app.bell()
                return
