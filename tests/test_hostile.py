"""Hostile servers, generatively: streams built from valid events and every kind of damage,
cut across TCP writes anywhere, through the real SDKs over a real socket.

Properties: nothing escapes a provider but a typed termchat error; the text that comes out
(and is stored, piped and shown) is the text that went in, minus what the sanitiser removes;
nothing a terminal would obey reaches a screen; history always holds the prompt and whatever
arrived. The example budget is the `ci` profile's (tests/conftest.py); a long run by hand:

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest -q tests/test_hostile.py
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from termchat.devserver import ProviderServer, Script
from termchat.errors import ProviderError, StreamInterruptedError
from termchat.events import Event, Finish, TextDelta
from termchat.history import HistoryStore
from termchat.oneshot import PipeSink, TerminalSink
from termchat.turn import Conversation
from termchat.untrusted import safe
from tests.support.hostile import (
    FORBIDDEN,
    HOSTILE,
    NOISE,
    BadJson,
    BadUtf8,
    Item,
    Noise,
    Text,
    expected,
    stream_body,
)
from tests.support.models import PROVIDERS, model_for, opened
from tests.support.tui import make_app, send

pytestmark = pytest.mark.fuzz

# Text the model "writes": ordinary, hostile to terminals, and broken Unicode.
TEXT = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=6),
                          st.sampled_from(["\ud83c", "\udf89", "🎉", "é", "\t", "\n"])),
                max_size=4).map("".join)


ITEMS = st.lists(st.one_of(
    TEXT.map(Text), TEXT.map(Text),
    st.builds(BadUtf8, st.text(max_size=3), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0"]),
              st.text(alphabet="abc ", max_size=3)),
    st.sampled_from(NOISE).map(Noise),
    st.just(BadJson())), max_size=10)
ENDINGS = st.sampled_from(["finish", "finish", "early", "cut"])
FINISHES = st.one_of(st.sampled_from(["stop", "length", "end_turn", "max_tokens"]), TEXT)


def cut(body: list[bytes], cuts: list[int]) -> list[bytes]:
    """The body's bytes cut at `cuts` (positions in the whole), whatever they fall inside."""
    whole = b"".join(body)
    bounds = sorted({min(c, len(whole)) for c in cuts} | {0, len(whole)})
    return [whole[a:b] for a, b in itertools.pairwise(bounds) if b > a]


STREAMS = st.tuples(st.sampled_from(PROVIDERS), ITEMS, ENDINGS, FINISHES.filter(bool),
                    st.lists(st.integers(min_value=0, max_value=3000), max_size=8))


def script(provider: str, items: list[Item], ending: str, finish: str,
           cuts: list[int]) -> Script:
    return Script(raw=cut(stream_body(provider, items, ending, finish), cuts),
                  raw_framing="chunked" if ending == "finish" else "close", raw_gap=0.0005)


@pytest.fixture(scope="module")
def server() -> ProviderServer:
    with ProviderServer() as server:
        yield server


@given(STREAMS)
def test_any_stream_gives_its_text_or_a_typed_error(server: ProviderServer,
                                                      case: tuple) -> None:
    provider, items, ending, finish, cuts = case
    server.queue(script(provider, items, ending, finish, cuts))
    want = expected(items, ending, finish)

    async def read() -> tuple[list[Event], BaseException | None]:
        events: list[Event] = []
        async with opened(model_for(server, provider)) as opened_provider:
            try:
                async for event in opened_provider.stream(_ask()):
                    events.append(event)
            except Exception as exc:
                return events, exc
        return events, None

    events, error = asyncio.run(read())
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == want.text
    text.encode("utf-8")
    if want.error is None:
        assert error is None, error
        assert events[-1] == Finish.from_raw(want.finish or "")
    else:
        assert type(error) is want.error, repr(error)
        assert isinstance(error, ProviderError) and "\n" not in str(error)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("kind", NOISE)
def test_every_kind_of_noise_between_two_pieces_of_text_is_passed_over(
        server: ProviderServer, provider: str, kind: str) -> None:
    items: list[Item] = [Text("before "), Noise(kind), Text("after")]
    server.queue(script(provider, items, "finish", "stop", []))

    async def read() -> list[Event]:
        async with opened(model_for(server, provider)) as opened_provider:
            return [event async for event in opened_provider.stream(_ask())]

    events = asyncio.run(read())
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "before after"
    assert events[-1] == Finish.from_raw("stop")


def _ask():
    from termchat.providers import ChatRequest, Message

    return ChatRequest(messages=(Message.of("user", "hi"),))


# Sequences termchat's own terminal output may hold: styles (SGR), the live region's cursor
# hiding, line erasing and moving up. Anything else came from the model.
OWN_SEQUENCES = (r"\x1b\[[0-9;]*m|\x1b\[\?25[lh]|\x1b\[2K|\x1b\[\d*[AG]"
                 r"|\x1b\]8;[^\x1b\x07]*(?:\x1b\\|\x07)")


async def _one_shot(conversation: Conversation, sink: PipeSink | TerminalSink
                    ) -> ProviderError | None:
    """One exchange into `sink` as the one-shot command runs it; the error it ended with."""
    sink.start()
    try:
        await conversation.send("the prompt\x1b[2J", sink.on_event)
    except ProviderError as exc:
        return exc
    finally:
        await conversation.aclose()
    return None


@given(STREAMS)
def test_one_shot_pipes_exactly_shows_safely_and_stores_everything(
        server: ProviderServer, tmp_path_factory: pytest.TempPathFactory, case: tuple) -> None:
    provider, items, ending, finish, cuts = case
    want = expected(items, ending, finish)
    tmp = tmp_path_factory.mktemp("oneshot")
    for kind in ("pipe", "terminal"):
        server.queue(script(provider, items, ending, finish, cuts))
        piped, shown = io.BytesIO(), io.StringIO()
        sink = PipeSink(piped, stream=True) if kind == "pipe" else TerminalSink(
            "m", live=True, console=Console(file=shown, force_terminal=True, width=60,
                                            height=20, color_system="truecolor"))
        with HistoryStore.open(tmp / f"{kind}.db") as store:
            conversation = Conversation(model_for(server, provider),
                                        history=store.new_conversation())
            error = asyncio.run(_one_shot(conversation, sink))
            reply = conversation.exchanges[-1].reply
            sink.close(reply, error, interrupted=False)
            stored = store.get(store.last_conversation_id() or 0)
        assert (error is None) == (want.error is None)
        if kind == "pipe":
            wrote = want.text.encode() + b"\n" if want.text or want.error is None else b""
            assert piped.getvalue() == wrote
        else:
            assert not set(re.sub(OWN_SEQUENCES, "", shown.getvalue()).replace("\r", "")) \
                & FORBIDDEN
        assert [m.role for m in stored.messages] == ["user", "assistant"]
        assert stored.messages[0].text == "the prompt\x1b[2J"
        assert stored.messages[1].text == want.text
        status = "complete" if want.error is None else "interrupted" \
            if issubclass(want.error, StreamInterruptedError) else "error"
        assert stored.messages[1].status == status == reply.status.value


# A Textual app per example: a third of the budget.
@settings(max_examples=max(10, settings().max_examples // 3))
@given(STREAMS)
def test_the_tui_shows_only_safe_text_and_keeps_the_reply(server: ProviderServer,
                                                            case: tuple) -> None:
    from tests.support.tui import finish as settle
    from tests.support.tui import replies

    provider, items, ending, finish, cuts = case
    want = expected(items, ending, finish)
    server.queue(script(provider, items, ending, finish, cuts))

    async def run() -> None:
        app = make_app(server, provider)
        async with app.run_test(size=(80, 30)) as pilot:
            await send(pilot, "hi \x1b]52;c;aGk=\x07 there")
            await settle(pilot)
            shown = replies(app)
            text = shown[0].text if shown else ""
            assert text == safe(want.text)
            for widget in app.screen.query("*"):
                for y in range(widget.size.height):
                    assert not set(widget.render_line(y).text) & FORBIDDEN

    asyncio.run(run())


def test_a_stream_cut_in_every_place_still_reads(tmp_path: Path) -> None:
    """A fixed stream cut at every byte: the boundaries never change the text."""
    items: list[Item] = [Text("Hello, "), Noise("comment"), Text("wörld 🎉\x1b]0;t\x07"),
                         BadUtf8("a", b"\xff", "b"), Text("\ud83c"), Text("\udf89!")]
    with ProviderServer() as server:
        for provider in PROVIDERS:
            body = b"".join(stream_body(provider, items, "finish", "stop"))
            for position in range(1, len(body), 7):
                server.queue(Script(raw=[body[:position], body[position:]], raw_gap=0.001))

                async def read(provider: str = provider) -> str:
                    async with opened(model_for(server, provider)) as reader:
                        return "".join([e.text async for e in reader.stream(_ask())
                                        if isinstance(e, TextDelta)])

                assert asyncio.run(read()) == "Hello, wörld 🎉\x1b]0;t\x07a\ufffdb🎉!"
