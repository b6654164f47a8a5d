"""Cost and context in the TUI (Pilot, the real SDKs, the local server over a real socket):
the status bar's cost is genai-prices' own figure for the usage the server reported, summed
over tool rounds and replies; unknown is never $0; the config's price wins; the context meter,
its one warning at 80%, the estimate before a request that cannot fit, and what the
context-length error says to do. genai-prices is never imported before the first frame."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage as Counts
from genai_prices import calc_price
from textual.pilot import Pilot
from textual.widgets import OptionList

from termchat.config import Config, ModelConfig, Rates, load_config
from termchat.content import Text, ToolCall, ToolDefinition, ToolResult
from termchat.devserver import ProviderServer, Script
from termchat.devserver.scripts import ToolCall as ScriptedCall
from termchat.events import Usage
from termchat.history import HistoryStore, continue_conversation
from termchat.pricing import Cost, format_cost
from termchat.tui.app import TermchatApp
from termchat.tui.history_screen import HistoryScreen
from termchat.tui.messages import ErrorLine
from termchat.tui.meter import CostScreen
from termchat.turn import EventSink, Reply, Status
from tests.support.models import PROVIDERS, base_url, model_for
from tests.support.screen import shown
from tests.support.tui import finish, make_app, send, status_text, wait_until

SIZE = (120, 30)
# A model of each provider that genai-prices prices, and its context window there.
PRICED = {"openai": "gpt-4.1-mini", "anthropic": "claude-sonnet-4-5"}
WINDOW = {"openai": ("gpt-4o", 128_000), "anthropic": ("claude-sonnet-4-5", 200_000)}


def priced(server: ProviderServer, provider: str, model: str | None = None,
           **overrides: Any) -> TermchatApp:
    """The devserver priced as `provider`'s `model` (`price = "provider"` in the config)."""
    return make_app(server, provider, model=model or PRICED[provider], price=provider,
                    **overrides)


def package_figure(provider: str, model: str, *, input_tokens: int, cached: int = 0,
                   output_tokens: int) -> Decimal:
    """genai-prices' own price for what the server reported: OpenAI's prompt tokens include
    the cached ones; Anthropic reports its cache reads beside its input tokens."""
    total_input = input_tokens + cached if provider == "anthropic" else input_tokens
    counts = Counts(input_tokens=total_input, cache_read_tokens=cached,
                    output_tokens=output_tokens)
    return calc_price(counts, model, provider_id=provider).total_price


def notifications(app: TermchatApp) -> list[str]:
    return [n.message for n in app._notifications]


async def priced_status(pilot: Pilot, text: str) -> str:
    """The status bar once it shows `text` (pricing runs after the reply, in a thread)."""
    app = pilot.app
    assert isinstance(app, TermchatApp)
    await wait_until(pilot, lambda: text in status_text(app), timeout=10)
    return status_text(app)


# Cost

@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_status_bar_shows_genai_prices_figure_for_each_reply_and_the_chat(
        provider_server: ProviderServer, provider: str) -> None:
    model = PRICED[provider]
    provider_server.queue(Script(text="first", input_tokens=120_000, cached_tokens=20_000,
                                 output_tokens=3_000),
                          Script(text="second", input_tokens=150_000, output_tokens=9_000))
    first = package_figure(provider, model, input_tokens=120_000, cached=20_000,
                           output_tokens=3_000)
    second = package_figure(provider, model, input_tokens=150_000, output_tokens=9_000)
    app = priced(provider_server, provider)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        await finish(pilot)
        status = await priced_status(pilot, format_cost(Cost.of(first)))
        assert "chat" not in status  # one reply: its cost is the chat's
        await send(pilot, "again")
        await finish(pilot)
        status = await priced_status(pilot, f"{format_cost(Cost.of(second))} · chat "
                                            f"{format_cost(Cost.of(first + second))}")
        assert "cost unknown" not in status

        app.chat.action_show_cost()
        await pilot.pause(0.1)
        assert isinstance(app.screen, CostScreen)
        report = app.chat.meter.report(app.chat.conversation)
        assert [p.cost.usd for p in report.replies] == [first, second]
        detail = shown(app)
        reported_input = "140000" if provider == "anthropic" else "120000"
        row = rf"{reported_input}\s+20000\s+3000\s+{re.escape(format_cost(Cost.of(first)))}"
        assert re.search(row, detail), detail
        assert format_cost(Cost.of(first + second)) in detail
        await pilot.press("escape")
        assert not isinstance(app.screen, CostScreen)


class OneTool:
    """A tool runner that answers every call at once."""

    max_rounds = 4
    definitions = (ToolDefinition("lookup", "Looks a thing up", {"type": "object"}),)

    async def run(self, call: ToolCall, on_event: EventSink | None) -> ToolResult:
        return ToolResult(call.id, "found it")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_reply_over_tool_rounds_costs_each_round_priced_on_its_own(
        provider_server: ProviderServer, provider: str) -> None:
    model = PRICED[provider]
    provider_server.queue(
        Script(tool_calls=[ScriptedCall("lookup", "{}")], input_tokens=50_000,
               output_tokens=200),
        Script(text="done looking", input_tokens=60_000, output_tokens=1_000))
    rounds = (package_figure(provider, model, input_tokens=50_000, output_tokens=200)
              + package_figure(provider, model, input_tokens=60_000, output_tokens=1_000))
    app = priced(provider_server, provider)
    async with app.run_test(size=SIZE) as pilot:
        app.chat.conversation.tools = OneTool()
        await send(pilot, "look it up")
        await finish(pilot)
        assert len(provider_server.requests) == 2
        await priced_status(pilot, format_cost(Cost.of(rounds)))
        # The context meter reads the last request, not the rounds' sum.
        assert app.chat.meter.report(app.chat.conversation).room.tokens == 60_000


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_local_server_with_no_price_says_cost_unknown_never_zero(
        provider_server: ProviderServer, provider: str) -> None:
    provider_server.queue(Script(text="hi", input_tokens=1_000, output_tokens=50),
                          Script(text="hi again", input_tokens=1_100, output_tokens=50))
    app = make_app(provider_server, provider)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        await finish(pilot)
        status = await priced_status(pilot, "cost unknown")
        assert "$" not in status
        await send(pilot, "again")
        await finish(pilot)
        status = await priced_status(pilot, "cost unknown · chat cost unknown")
        assert "$" not in status
        app.chat.action_show_cost()
        await pilot.pause(0.1)
        detail = shown(app)
        assert "cost unknown" in detail and "set price for this model in the config" in detail


async def test_a_price_in_the_config_file_is_what_replies_cost(
        provider_server: ProviderServer, tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(textwrap.dedent(f"""
        default_model = "local"
        [models.local]
        provider = "openai"
        model = "gpt-4.1-mini"
        base_url = "{base_url(provider_server, "openai")}"
        api_key = "local"
        max_retries = 0
        price = {{ input = 2.5, output = 10, cached = 0.5 }}
    """))
    config = load_config(str(config_file), env={})
    model = config.resolve_model()
    assert model.price == Rates(Decimal("2.5"), Decimal("10"), Decimal("0.5"))
    provider_server.queue(Script(text="hi", input_tokens=40_000, cached_tokens=10_000,
                                 output_tokens=2_000))
    # 30,000 at $2.50, 10,000 cached at $0.50 and 2,000 out at $10 a million.
    expected = Decimal("0.075") + Decimal("0.005") + Decimal("0.02")
    app = TermchatApp(config, model, cursor_blink=False, show_timings=False)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        await finish(pilot)
        await priced_status(pilot, "$0.1000")
        assert app.chat.meter.report(app.chat.conversation).replies[0].cost.usd == expected


async def test_price_false_shows_no_cost_at_all(provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="hi", input_tokens=1_000, output_tokens=50))
    app = make_app(provider_server, price=False)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        await finish(pilot)
        await priced_status(pilot, "ctx ?")
        assert "cost" not in status_text(app) and "$" not in status_text(app)


async def test_a_refused_request_costs_nothing_and_the_chat_stays_priced(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="fine", input_tokens=10_000, output_tokens=100),
                          Script(status=400, error_message="bad request"))
    figure = package_figure("openai", PRICED["openai"], input_tokens=10_000, output_tokens=100)
    app = priced(provider_server, "openai")
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        await finish(pilot)
        await priced_status(pilot, format_cost(Cost.of(figure)))
        await send(pilot, "this one fails")
        await finish(pilot)
        await wait_until(pilot, lambda: "error" in status_text(app))
        await pilot.pause(0.2)
        report = app.chat.meter.report(app.chat.conversation)
        assert [p.cost.usd for p in report.replies] == [figure, Decimal(0)]
        assert "some unknown" not in status_text(app)


# Context

@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_context_meter_and_its_one_warning_past_80_percent(
        provider_server: ProviderServer, provider: str) -> None:
    model, window = WINDOW[provider]
    near = int(window * 0.81)
    provider_server.queue(Script(text="a", input_tokens=int(window * 0.5), output_tokens=10),
                          Script(text="b", input_tokens=near, output_tokens=10),
                          Script(text="c", input_tokens=near + 1_000, output_tokens=10))
    app = priced(provider_server, provider, model)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "one")
        await finish(pilot)
        await priced_status(pilot, "ctx 50%")
        assert not [n for n in notifications(app) if "context window" in n]

        await send(pilot, "two")
        await finish(pilot)
        await priced_status(pilot, "ctx 81%")
        assert app.chat.meter.gauge(app.chat.conversation, app.chat.last_reply).near_full
        await wait_until(pilot, lambda: any("context window" in n for n in notifications(app)))
        warning = next(n for n in notifications(app) if "context window" in n)
        assert "81%" in warning and f"{window:,}" in warning
        assert "start a new chat (Ctrl+N)" in warning

        await send(pilot, "three")
        await finish(pilot)
        await priced_status(pilot, "ctx 81%")
        await pilot.pause(0.2)
        assert len([n for n in notifications(app) if "context window" in n]) == 1


async def test_switching_model_measures_the_room_against_the_new_window(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="a", input_tokens=104_000, output_tokens=10))
    app = priced(provider_server, "openai", "gpt-4o")
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "one")
        await finish(pilot)
        await priced_status(pilot, "ctx 81%")
        app.chat.switch_model(replace(app.chat.conversation.model, model="gpt-4.1-mini"))
        await priced_status(pilot, "ctx 10%")  # of gpt-4.1-mini's 1,000,000


async def test_a_context_window_from_the_config_measures_a_local_model(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="a", input_tokens=2_048, output_tokens=10))
    app = make_app(provider_server, context_window=8_192)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "one")
        await finish(pilot)
        status = await priced_status(pilot, "ctx 25%")
        assert "cost unknown" in status


async def test_an_unknown_window_or_count_reads_ctx_question_mark(
        provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="a", input_tokens=2_048, output_tokens=10),
                          Script(text="b", usage="never"))
    app = make_app(provider_server)
    async with app.run_test(size=SIZE) as pilot:
        assert "ctx" not in status_text(app)  # nothing to measure before a reply
        await send(pilot, "one")
        await finish(pilot)
        await priced_status(pilot, "ctx ?")
    app = priced(provider_server, "openai")
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "no usage reported")
        await finish(pilot)
        status = await priced_status(pilot, "ctx ?")
        assert "cost unknown" in status


@pytest.mark.parametrize(("tools", "context"), [(False, "ctx 78%"), (True, "ctx ?")])
async def test_a_reopened_chat_measures_its_last_request_unless_only_a_sum_is_stored(
        provider_server: ProviderServer, tmp_path: Path, tools: bool, context: str) -> None:
    """A stored reply keeps its rounds' sum: for a tool turn, that is no request's size."""
    model = model_for(provider_server, model="gpt-4o", price="openai")
    config = Config(path=tmp_path / "config.toml", models={"test": model})
    calls = [ToolCall("c1", "lookup", "{}"), ToolResult("c1", "found")] if tools else []
    usage = Usage(input_tokens=100_000, output_tokens=500)
    with HistoryStore.open(tmp_path / "history.db") as store:
        store.new_conversation().user_prompt("look", model).finish(Reply(
            model=model.model, provider=model.provider, initial_parts=[*calls, Text("done")],
            status=Status.COMPLETE, usage=usage))
        conversation = continue_conversation(config, store, 1)
        app = TermchatApp(config, model, conversation=conversation, history=store,
                          cursor_blink=False, show_timings=False)
        async with app.run_test(size=SIZE) as pilot:
            figure = package_figure("openai", "gpt-4o", input_tokens=100_000,
                                    output_tokens=500)
            status = await priced_status(pilot, format_cost(Cost.of(figure)))
            assert context in status


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_request_that_clearly_cannot_fit_is_held_until_enter_again(
        provider_server: ProviderServer, provider: str) -> None:
    provider_server.queue(Script(text="small", input_tokens=900, output_tokens=10),
                          Script(text="sent anyway"))
    app = make_app(provider_server, provider, context_window=2_000)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "a short one")
        await finish(pilot)
        await priced_status(pilot, "ctx 45%")
        # 900 reported, then 7,500 characters: at least 2,400 tokens, past 110% of 2,000.
        await send(pilot, "word " * 1_500)
        await pilot.pause(0.2)
        assert len(provider_server.requests) == 1
        warning = next(n for n in notifications(app) if "context window" in n)
        assert "2,000-token context window" in warning and "Enter again" in warning
        assert app.chat.query_one("#prompt").text.startswith("word")  # type: ignore[attr-defined]
        await pilot.press("enter")
        await finish(pilot)
        assert len(provider_server.requests) == 2


async def test_a_short_prompt_is_sent_without_a_warning(provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="ok", input_tokens=1_500, output_tokens=10),
                          Script(text="ok"))
    app = make_app(provider_server, context_window=2_000)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "one")
        await finish(pilot)
        await send(pilot, "two")
        await finish(pilot)
        assert len(provider_server.requests) == 2
        assert not [n for n in notifications(app) if "context window" in n]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_context_length_error_says_what_to_do_in_the_tui(
        provider_server: ProviderServer, provider: str) -> None:
    provider_server.queue(Script(status=400, error_code="context_length_exceeded",
                                 error_message="prompt is too long: 210000 tokens > 200000"))
    app = make_app(provider_server, provider)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "far too long")
        await finish(pilot)
        line = str(app.chat.query_one(ErrorLine).render())
        assert "context window" in line
        assert "Start a new chat (Ctrl+N)" in line and "prompt is back" in line
        assert app.chat.query_one("#prompt").text == "far too long"  # type: ignore[attr-defined]


# Off the path to the first frame

FIRST_FRAME = """
import sys
from pathlib import Path

from termchat.config import Config, ModelConfig
from termchat.tui import chat_screen
from termchat.tui.app import TermchatApp
from termchat.tui.history_screen import HistoryScreen

prepare = chat_screen.ChatScreen._prepare

def first_frame(self):
    # Scheduled with call_after_refresh in on_mount: it runs once the first frame is out.
    print("FIRST FRAME", file=sys.stderr, flush=True)
    prepare(self)

chat_screen.ChatScreen._prepare = first_frame

async def main():
    model = ModelConfig("m", "openai", "gpt-4.1-mini", api_key="k",
                        base_url="http://127.0.0.1:9/v1", price="openai")
    app = TermchatApp(Config(path=Path("/nonexistent")), model, cursor_blink=False)
    async with app.run_test() as pilot:
        while not app.chat.meter.ready:
            await pilot.pause(0.05)
    print("PRICES READY", file=sys.stderr, flush=True)

import asyncio
asyncio.run(main())
"""
IMAGE_LIBRARIES = ("PIL", "pypdf", "fitz", "magic", "imghdr", "cv2", "imageio")


def test_genai_prices_and_no_image_library_load_before_the_first_frame() -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", FIRST_FRAME],
                          capture_output=True, text=True, timeout=120, check=False)
    assert "PRICES READY" in done.stderr, done.stderr[-3000:]
    before, _, after = done.stderr.partition("FIRST FRAME")
    imported_before = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                       for line in before.splitlines() if line.startswith("import time:")}
    assert "termchat" in imported_before and "textual" in imported_before
    assert "genai_prices" not in imported_before
    assert not imported_before & set(IMAGE_LIBRARIES)
    # Loaded after it, in the background, ready for the first reply's price.
    assert "genai_prices" in after


TYPED_AHEAD = """
import asyncio
import sys
from pathlib import Path

from termchat.config import Config, ModelConfig
from termchat.devserver import ProviderServer, Script
from termchat.events import TextDelta
from termchat.tui.app import TermchatApp

async def main():
    with ProviderServer() as server:
        server.queue(Script(text="a slow first reply", chunk_size=4, delay=0.05,
                            input_tokens=10, output_tokens=5))
        model = ModelConfig("m", "openai", "gpt-4.1-mini", api_key="k",
                            base_url=server.openai_base_url, price="openai")
        app = TermchatApp(Config(path=Path("/nonexistent")), model, cursor_blink=False)
        seen = []
        async with app.run_test() as pilot:
            app.chat.event_hook = lambda event: seen.append(
                "genai_prices" in sys.modules) if isinstance(event, TextDelta) else None
            # Typed ahead: sent before the provider's SDK (and so the prices) has loaded.
            app.chat.query_one("#prompt").load_text("hello")
            await pilot.press("enter")
            while not app.chat.meter.ready:
                await pilot.pause(0.05)
        print("WHILE STREAMING", any(seen), "DELTAS", len(seen))

asyncio.run(main())
"""


def test_a_reply_sent_before_the_prices_loaded_streams_without_them() -> None:
    done = subprocess.run([sys.executable, "-c", TYPED_AHEAD], capture_output=True,
                          text=True, timeout=120, check=False)
    assert "WHILE STREAMING False DELTAS" in done.stdout, done.stdout + done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) > 1


async def test_the_pre_send_check_never_makes_a_request_wait_for_the_prices(
        provider_server: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from termchat import pricing

    def looked_up(*args: object) -> bool:
        raise AssertionError("the pre-send check waited for genai-prices' data")

    provider_server.queue(Script(text="the answer"))
    app = priced(provider_server, "openai")
    async with app.run_test(size=SIZE) as pilot:
        # As if the data were still loading when Enter is pressed.
        monkeypatch.setattr(type(app.chat.meter), "ready", property(lambda self: False))
        monkeypatch.setattr(pricing, "will_not_fit", looked_up)
        await send(pilot, "the question")
        await finish(pilot)
        assert len(provider_server.requests) == 1


# Snapshots

def test_snapshot_the_status_bar_with_cost_and_a_context_meter_near_full(
        snap_compare: Callable[..., bool], provider_server: ProviderServer) -> None:
    provider_server.queue(Script(text="Plenty of room.", input_tokens=64_000, output_tokens=800),
                          Script(text="Getting full.", input_tokens=104_000, cached_tokens=60_000,
                                 output_tokens=1_200))

    async def run_before(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, TermchatApp)
        await send(pilot, "Summarise the first half.")
        await finish(pilot)
        await send(pilot, "And the second half.")
        await finish(pilot)
        await wait_until(pilot, lambda: "ctx 81%" in status_text(app), timeout=10)
        await wait_until(pilot, lambda: bool(notifications(app)))
        app.clear_notifications()  # the warning is over the status bar
        await pilot.pause(0.1)

    assert snap_compare(priced(provider_server, "openai", "gpt-4o"), terminal_size=(100, 30),
                        run_before=run_before)


# The history screen

async def test_the_history_lists_each_conversations_cost_from_its_stored_tokens(
        tmp_path: Path) -> None:
    gpt = ModelConfig(name="gpt", provider="openai", model="gpt-4.1-mini")
    local = ModelConfig(name="local", provider="openai", model="llama3.2",
                        base_url="http://127.0.0.1:11434/v1")
    config = Config(path=tmp_path / "config.toml", models={"gpt": gpt, "local": local})
    usages = [Usage(input_tokens=12_000, output_tokens=800, cached_tokens=2_000),
              Usage(input_tokens=30_000, output_tokens=1_500)]
    expected = sum(package_figure("openai", "gpt-4.1-mini", input_tokens=u.input_tokens or 0,
                                  cached=u.cached_tokens or 0, output_tokens=u.output_tokens or 0)
                   for u in usages)
    with HistoryStore.open(tmp_path / "history.db") as store:
        for model, title, turns in ((local, "local chat", usages[:1]),
                                    (gpt, "priced chat", usages)):
            record = store.new_conversation()
            for number, usage in enumerate(turns):
                record.user_prompt(f"{title} {number}", model).finish(Reply(
                    model=model.model, provider=model.provider, initial_text="answer",
                    status=Status.COMPLETE, usage=usage))
        app = TermchatApp(config, gpt, history=store, cursor_blink=False, show_timings=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen))
            figure = format_cost(Cost.of(expected))

            def listed() -> list[str]:
                options = app.screen.query_one("#history-list", OptionList).options
                return [str(option.prompt) for option in options]

            await wait_until(pilot, lambda: figure in listed()[0], timeout=10)
            assert "$" not in listed()[1]  # unknown: no figure in the list
            await wait_until(pilot, lambda: "started 20" in shown(app) and figure in shown(app))
            await pilot.press("down", "down")  # into the list, then the local chat
            await wait_until(pilot, lambda: "cost unknown" in shown(app))
