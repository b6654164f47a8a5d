"""Textual's compositor, its partial updates rendering only what they cover.

For a partial update (a streaming reply's last two rows), Textual renders every widget whose
clip overlaps the changed region, and all of each one's visible rows: a top-level widget's
clip is the whole screen, so every frame rendered the screen, the conversation view, its
scrollbar, the input box and the key bar, about 90 rows, to send the 2 that changed (a quarter
of a frame's cost). This one renders the widgets whose visible part overlaps the region, and
only their rows in it. What goes to the terminal is the same, byte for byte
(tests/test_tui_compositor.py); a full update is Textual's own.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual._compositor import Compositor
from textual.geometry import Region
from textual.strip import Strip


class PartialCompositor(Compositor):
    def _get_renders(self, crop: Region | None = None
                     ) -> Iterable[tuple[Region, Region, list[Strip]]]:
        if crop is None:
            yield from super()._get_renders(crop)
            return
        top, height = crop.y, crop.height
        for widget, (region, clip) in self.visible_widgets.items():
            visible = region.intersection(clip)
            if not crop.overlaps(visible):
                continue
            # The widget's visible columns, in the rows the update covers: the clip given
            # back is the part rendered, which is what the chops are cut from.
            rows = visible.intersection(Region(visible.x, top, visible.width, height))
            yield region, rows, widget.render_lines(
                Region(rows.x - region.x, rows.y - region.y, rows.width, rows.height))
