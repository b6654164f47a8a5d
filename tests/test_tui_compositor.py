"""The chat screen's compositor renders only what a partial update covers, and sends the
terminal exactly what Textual's own would: for any set of changed regions, on a screen of
every kind of message, while a reply streams and after, scrolled or not."""

from __future__ import annotations

import random
import types

from textual._compositor import ChopsUpdate, Compositor
from textual.geometry import Region

from termchat.devserver import ProviderServer, Script
from termchat.sample import long_reply
from termchat.tui.app import TermchatApp
from termchat.tui.compositor import PartialCompositor
from tests.support.tui import finish, make_app, replies, send, wait_until


def update(app: TermchatApp, regions: list[Region], stock: bool) -> str:
    """The bytes a partial update of `regions` writes, by this compositor or Textual's."""
    compositor = app.screen._compositor
    assert isinstance(compositor, PartialCompositor)
    if stock:
        # Textual's own, on the same map.
        compositor._get_renders = types.MethodType(  # type: ignore[method-assign]
            Compositor._get_renders, compositor)
    try:
        crop = Region.from_union(regions).intersection(compositor.size.region)
        spans = list(compositor._regions_to_spans(regions))
        is_rendered_line = {y for y, _, _ in spans}.__contains__
        chops = compositor._render_chops(crop, is_rendered_line)
        return ChopsUpdate(chops, spans, [cuts[1:] for cuts in compositor.cuts]
                           ).render_segments(app.console)
    finally:
        vars(compositor).pop("_get_renders", None)


def random_regions(rng: random.Random, width: int, height: int) -> list[Region]:
    regions = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        x, y = rng.randrange(width), rng.randrange(height)
        regions.append(Region(x, y, rng.randint(1, width - x), rng.randint(1, height - y)))
    return regions


def same_as_textual(app: TermchatApp, rng: random.Random, cases: int = 150) -> None:
    width, height = app.size
    for _ in range(cases):
        regions = random_regions(rng, width, height)
        assert update(app, regions, stock=False) == update(app, regions, stock=True), regions


async def test_partial_updates_are_the_ones_textual_would_send(
        provider_server: ProviderServer) -> None:
    rng = random.Random(14)
    text = long_reply(6_000, seed=7)
    provider_server.queue(Script(text="A first reply, with `code` and **bold**.\n\n- one\n- two"))
    provider_server.queue(Script(text=text, chunk_size=40, delay=0.01))
    app = make_app(provider_server)
    async with app.run_test(size=(90, 28)) as pilot:
        await send(pilot, "first")
        await finish(pilot)
        await send(pilot, "second")
        await wait_until(pilot, lambda: len(replies(app)) == 2 and len(replies(app)[1].text) > 1500)
        same_as_textual(app, rng)  # while it streams, the cursor on screen
        await finish(pilot)
        same_as_textual(app, rng)
        view = app.chat.query_one("#conversation")
        view.scroll_to(y=view.max_scroll_y // 2, animate=False)
        await pilot.pause(0.1)
        same_as_textual(app, rng)
        assert replies(app)[1].text == text
