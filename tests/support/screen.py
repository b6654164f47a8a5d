"""What a Textual screen sends to the terminal: the text of every line of every widget."""

from __future__ import annotations

from textual.app import App
from textual.widget import Widget

from tests.support.hostile import FORBIDDEN


def lines_of(widget: Widget) -> list[str]:
    """Every line of `widget` and of the widgets in it, as text: Textual writes a segment's
    text to the terminal as it is."""
    return [each.render_line(y).text for each in [widget, *widget.query("*")]
            for y in range(each.size.height)]


def unsafe_lines(app: App[object]) -> list[str]:
    """The lines on the current screen holding a character a terminal could obey."""
    return [line for line in lines_of(app.screen) if set(line) & FORBIDDEN]


def shown(app: App[object]) -> str:
    """The current screen's lines joined, to look for a phrase (non-breaking spaces as
    spaces)."""
    return "\n".join(lines_of(app.screen)).replace("\xa0", " ")
