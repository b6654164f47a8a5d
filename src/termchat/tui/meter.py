"""The cost and context meter: what each reply cost, what the chat has cost so far, how full
the model's context window is, and whether the next request can fit.

Nothing here is on the path to the first frame or the first token: genai-prices and its data
load in a thread once the first frame is out and the provider's SDK is ready (or, when a
reply was sent before that, once it has finished), and replies are priced in a thread when
they finish (never while text streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from termchat import content
from termchat.config import Config, ModelConfig
from termchat.content import Attachment, AttachmentKind, ToolCall, ToolResult
from termchat.errors import ConfigError, ContextLengthError, TermchatError
from termchat.events import Usage
from termchat.present import count
from termchat.tui.notices import notify
from termchat.tui.status import Gauge
from termchat.turn import Conversation, Exchange, Reply, Status
from termchat.untrusted import safe_line

if TYPE_CHECKING:
    from termchat.history import StoredConversation
    from termchat.pricing import Cost

# The chat screen's own key for a new chat, named in the advice.
NEW_CHAT_KEY = "Ctrl+N"


@dataclass(frozen=True)
class Priced:
    """One reply's cost, with what it was worked out from."""

    reply: Reply
    model: ModelConfig
    usage: Usage
    """The reply's tokens, summed over its rounds."""
    cost: Cost


@dataclass(frozen=True)
class Room:
    """How full the context window is: the last request's reported input tokens against the
    current model's window (either may be unknown)."""

    tokens: int | None
    window: int | None

    @property
    def share(self) -> float | None:
        return None if self.tokens is None or not self.window else self.tokens / self.window


class Meter:
    """The chat screen's cost and context figures: fed the replies as they finish, it prices
    them (each tool round on its own) in a thread and tells the screen (`changed`) when the
    status bar has something new to show."""

    def __init__(self, screen: Screen[Any], config: Config, changed: Callable[[], None]) -> None:
        self._screen = screen
        self._config = config
        self._changed = changed
        self._ready = asyncio.Event()
        self._loading = False
        self._conversation: Conversation | None = None
        self._model: ModelConfig | None = None
        # Keyed by id(): a Reply is a dataclass, equal by value and not hashable. Each value
        # holds its reply, so no id is reused while it is here.
        self._priced: dict[int, Priced] = {}
        self._models: dict[int, tuple[Reply, ModelConfig]] = {}
        self._last: Reply | None = None
        self._gauge: Gauge | None = None
        self._room = Room(None, None)
        self._warned: WeakSet[Conversation] = WeakSet()
        self._confirmed: tuple[object, ...] | None = None

    @property
    def ready(self) -> bool:
        """genai-prices and its data are loaded: prices and windows cost microseconds now."""
        return self._ready.is_set()

    # -- fed by the chat screen ----------------------------------------------------------------

    async def preload(self, conversation: Conversation, busy: Callable[[], bool]) -> None:
        """Load genai-prices in a thread, after the provider's SDK (two imports at once stall
        the event loop longer than one after the other); then price what is on screen. Not
        while a reply streams (`busy`): the screen calls again once it has finished."""
        # A provider that cannot be prepared says why when a prompt is sent, not here.
        with contextlib.suppress(Exception):
            await conversation.prepare()
        if busy() or self._loading:
            return
        # From here on, nothing waits for `busy`: a prompt sent meanwhile overlaps 20-50 ms
        # of import in a thread, not the import on the event loop.
        self._loading = True
        try:
            await asyncio.to_thread(_preload)
        finally:
            # Even when the data failed to load: the lookups then fail in their worker, and
            # nothing waits for them forever.
            self._ready.set()
        self._refresh()

    def finished(self, conversation: Conversation, exchange: Exchange) -> None:
        """`exchange`'s reply ended (however it ended), sent to `conversation.model`."""
        self._models[id(exchange.reply)] = (exchange.reply, conversation.model)
        self._follow(conversation)
        self._refresh()

    def grew(self, conversation: Conversation) -> None:
        """`conversation`'s earlier exchanges came in: it opened with its end alone."""
        self._follow(conversation)
        self._refresh()

    def gauge(self, conversation: Conversation, reply: Reply | None) -> Gauge | None:
        """What the status bar shows while `reply` is the one on it: its cost once priced;
        while another streams, the conversation's cost so far and the last known room."""
        if self._follow(conversation) or conversation.model != self._model:
            # Another chat, or another model (whose window the room is measured against).
            self._model = conversation.model
            self._refresh()
        gauge = self._gauge
        if gauge is None or reply is self._last:
            return gauge
        chat = gauge.chat or gauge.reply
        return Gauge(chat=chat if chat and chat != "cost unknown" else None,
                     context=gauge.context, near_full=gauge.near_full)

    def _follow(self, conversation: Conversation) -> bool:
        """Start over when the screen shows another conversation; True when it did."""
        if conversation is self._conversation:
            return False
        self._conversation = conversation
        self._priced.clear()
        self._last, self._gauge, self._room = None, None, Room(None, None)
        self._confirmed = None
        return True

    # -- pricing -------------------------------------------------------------------------------

    def _refresh(self) -> None:
        # A conversation that opened with its end alone is priced once it is all in: the
        # chat's cost is the sum over all of it.
        if self._conversation is not None and self._conversation.exchanges \
                and self._conversation.older is None:
            self._screen.run_worker(self._price(self._conversation), group="meter",
                                    exclusive=True, exit_on_error=False)

    async def _price(self, conversation: Conversation) -> None:
        await self._ready.wait()
        done = [e.reply for e in conversation.exchanges if e.reply.status.final]
        todo = [(reply, self._model_of(reply, conversation)) for reply in done
                if id(reply) not in self._priced]
        priced, room = await asyncio.to_thread(_work_out, todo, conversation, done)
        if conversation is not self._conversation:
            return
        self._priced.update((id(p.reply), p) for p in priced)
        self._room = room
        self._last = done[-1] if done else None
        self._gauge = self._gauge_of([self._priced[id(r)] for r in done if id(r) in self._priced],
                                     room, bool(done))
        self._changed()
        if self._gauge is not None and self._gauge.near_full \
                and conversation not in self._warned:
            self._warned.add(conversation)
            notify(self._screen, near_full_warning(conversation, room), title="Context",
                   severity="warning", timeout=12)

    def _gauge_of(self, priced: list[Priced], room: Room, replied: bool) -> Gauge | None:
        from termchat.pricing import format_cost, format_share, near_full, total

        if not replied:
            return None
        # Neither a model with `price = false` nor a refused request (nothing billed) has a
        # cost to show.
        shown = [p for p in priced if _billed(p.cost)]
        reply = format_cost(priced[-1].cost) if priced and _billed(priced[-1].cost) else ""
        chat = format_cost(total(p.cost for p in priced)) if len(shown) > 1 else ""
        share = room.share
        return Gauge(reply=reply or None, chat=chat or None,
                     context=f"ctx {format_share(share)}" if share is not None else "ctx ?",
                     near_full=near_full(share))

    def _model_of(self, reply: Reply, conversation: Conversation) -> ModelConfig:
        """The model a reply came from: as sent in this session, else (a reopened chat) the
        conversation's model, or as `stored_model` finds it."""
        if id(reply) in self._models:
            return self._models[id(reply)][1]
        current = conversation.model
        if (reply.provider, reply.model) in (("", ""), (current.provider, current.model)):
            return current
        return stored_model(self._config, None, reply.provider, reply.model)

    def stored_cost(self, stored: StoredConversation) -> tuple[str | None, str]:
        """A stored conversation's cost, for the history screen: for its list (a figure, or
        None when no part of it is known) and its preview (the figure, or what is unknown).
        Run in a thread: it may load genai-prices."""
        from termchat.pricing import format_cost, price, total

        costs = [price(stored_model(self._config, stored.model, m.provider, m.model), m.usage)
                 for m in stored.messages if m.role == "assistant"
                 and not (m.status == "error" and not m.text and not m.usage.known)]
        cost = total(costs)
        if cost.hidden:
            return None, ""
        if not _billed(cost):
            return None, "nothing billed"
        shown = format_cost(cost)
        return (shown if cost.priced else None), shown

    # -- what the user asks for ----------------------------------------------------------------

    def report(self, conversation: Conversation) -> CostReport:
        """The per-reply figures for the detail view (priced so far)."""
        self._follow(conversation)
        rows = [self._priced[id(e.reply)] for e in conversation.exchanges
                if id(e.reply) in self._priced]
        return CostReport(conversation.model.label, rows, self._room, self.ready)

    def will_not_fit(self, conversation: Conversation, prompt: str,
                     attachments: Sequence[Attachment]) -> str | None:
        """A warning when the next request clearly cannot fit the context window; None when
        it may (or the window is not known yet). The same prompt and attachments sent again
        right after the warning go without it: the user may know better."""
        from termchat import pricing

        model = conversation.model
        if not self.ready and model.context_window is None:
            return None  # the data is still loading: never make the first request wait for it
        key = (id(conversation), prompt, tuple(a.digest for a in attachments), model.label)
        if self._confirmed == key:
            self._confirmed = None
            return None
        estimate = next_request_estimate(conversation, prompt, attachments)
        if not pricing.will_not_fit(model, estimate):
            return None
        self._confirmed = key
        window = pricing.context_window(model) or 0
        advice = "remove attachments, " if attachments else ""
        return (f"This request is at least {estimate:,} tokens, more than "
                f"{safe_line(model.label)}'s {window:,}-token context window, so it would be "
                f"refused: {advice}shorten it, or start a new chat ({NEW_CHAT_KEY}). Press "
                "Enter again to send it anyway.")


def stored_model(config: Config, alias: str | None, provider: str, model: str) -> ModelConfig:
    """The model a stored reply came from, as `-c` would resolve it: the conversation's
    alias when it still names that model, a configured model of that provider and id, or
    `provider:model` (with the environment's base URL). The store keeps no base_url, so this
    is the best it can know."""
    if alias:
        try:
            named = config.resolve_model(alias)
        except ConfigError:
            named = None
        if named is not None and (named.provider, named.model) == (provider, model):
            return named
    for configured in config.models.values():
        if (configured.provider, configured.model) == (provider, model):
            return configured
    label = f"{provider}:{model}"
    try:
        return config.resolve_model(label)
    except ConfigError:
        return ModelConfig(label, provider, model)


def _billed(cost: Cost) -> bool:
    """A cost to show: something was (or may have been) billed, and its model is priced."""
    return not cost.hidden and bool(cost.priced or cost.unpriced)


def _preload() -> None:
    from termchat import pricing

    # As for the SDK: the import's objects are long-lived, and collecting them over and
    # over costs more than the import.
    gc.disable()
    try:
        pricing.preload()
    finally:
        gc.freeze()
        gc.enable()


def last_input(reply: Reply) -> int | None:
    """The input tokens of the last request `reply` took (its last round); None when not
    known. A reopened reply keeps only its rounds' sum: with tool calls in it, that is more
    than any one of its requests held."""
    if reply.round_usages:
        return reply.last_usage.input_tokens
    if any(isinstance(part, ToolCall) for part in reply.parts):
        return None
    return reply.usage.input_tokens


def _measured(reply: Reply) -> bool:
    """`reply`'s request says how full the window was: it reported its input, or it was a
    request that went through (a refused or cancelled one with no count says nothing)."""
    return last_input(reply) is not None or reply.status is Status.COMPLETE


def _work_out(todo: list[tuple[Reply, ModelConfig]], conversation: Conversation,
              done: list[Reply]) -> tuple[list[Priced], Room]:
    """Price the replies in `todo`, and measure the room the last request took (in a thread:
    a reopened chat of a thousand replies takes a while)."""
    from termchat import pricing

    priced = [Priced(reply, model, reply.usage, reply_cost(reply, model))
              for reply, model in todo]
    last = next((reply for reply in reversed(done) if _measured(reply)), None)
    tokens = last_input(last) if last is not None else None
    window = pricing.context_window(conversation.model) if tokens is not None else None
    return priced, Room(tokens, window)


def reply_cost(reply: Reply, model: ModelConfig) -> Cost:
    """What a reply cost: each of its rounds priced on its own (a long request's tier applies
    to that request, not to a sum), added up; a round with no usage report is unknown. A
    request refused before anything arrived is not billed. A reopened reply has only its
    rounds' sum."""
    from termchat.pricing import Cost, Why, price, total

    refused = reply.status is Status.ERROR and not reply.text
    rounds = reply.round_usages
    if not rounds:
        if refused and not reply.usage.known:
            return Cost()
        return price(model, reply.usage)
    costs = []
    for number, usage in enumerate(rounds, 1):
        if usage.known:
            costs.append(price(model, usage))
        elif not (refused and number == len(rounds)):
            costs.append(Cost.unknown(Why.NO_USAGE))
    return total(costs)


def next_request_estimate(conversation: Conversation, prompt: str,
                          attachments: Sequence[Attachment]) -> int:
    """A deliberately low count of the tokens the next request carries: the last reported
    input count (which covers everything up to that request), then what came after it, by
    `pricing.estimate_tokens` and `attachments.estimate_tokens`; everything by estimate when
    no count was reported."""
    from termchat import attachments as files
    from termchat import pricing

    provider = conversation.model.provider
    chars, tokens = 0, 0

    def add(attachment: Attachment) -> None:
        nonlocal chars, tokens
        if attachment.kind is AttachmentKind.TEXT:
            chars += len(files.text_block(attachment))
        else:
            tokens += files.estimate_tokens(attachment, provider) or 0

    exchanges = [e for e in conversation.exchanges if e.in_context]
    reported, start = 0, 0
    for index in range(len(exchanges) - 1, -1, -1):
        counted = last_input(exchanges[index].reply)
        if counted is not None:
            reported, start = counted, index
            break
    else:
        chars += len(conversation.system or "")
    for index, exchange in enumerate(exchanges[start:], start):
        if not reported or index > start:
            chars += len(exchange.prompt)
            for attachment in exchange.attachments:
                add(attachment)
        for part in exchange.reply.parts:
            if isinstance(part, content.Text):
                chars += len(part.text)
            elif isinstance(part, ToolCall):
                chars += len(part.name) + len(part.arguments)
            elif isinstance(part, ToolResult):
                chars += len(part.content)
    chars += len(prompt)
    for attachment in attachments:
        add(attachment)
    return reported + tokens + pricing.estimate_tokens(chars, provider=provider)


# -- words -------------------------------------------------------------------------------------

def _attached(conversation: Conversation) -> int:
    return sum(len(e.attachments) for e in conversation.exchanges if e.in_context)


def near_full_warning(conversation: Conversation, room: Room) -> str:
    """The one warning as the conversation passes 80% of the window, and what to do."""
    files = _attached(conversation)
    drop = f", or leave out attachments (the {files} in this chat are sent again with every " \
           "request)" if files else ""
    return (f"The last request used {safe_line(_percent(room))} of "
            f"{safe_line(conversation.model.label)}'s context window ({room.tokens:,} of "
            f"{room.window or 0:,} tokens). Before it overflows: start a new chat "
            f"({NEW_CHAT_KEY}) with what matters{drop}.")


def _percent(room: Room) -> str:
    from termchat.pricing import format_share

    return format_share(room.share)


_CORE_ADVICE = "; shorten it or start a new conversation."


def error_text(error: TermchatError, attachments: int = 0) -> str:
    """A provider error as the TUI says it: a full context window names what to do here."""
    if not isinstance(error, ContextLengthError):
        return error.message
    base = error.message.removesuffix(_CORE_ADVICE).rstrip(".")
    drop = " or remove its attachments (Shift+Tab, then Delete)" if attachments else ""
    return (f"{base}. Start a new chat ({NEW_CHAT_KEY}), or shorten the prompt{drop} and send "
            "it again: the prompt is back in the input.")


# -- the detail view ---------------------------------------------------------------------------

def _detail_cost(cost: Cost, nothing: str = "refused, not billed") -> str:
    from termchat.pricing import format_cost

    if cost.hidden:
        return "not priced"
    return format_cost(cost) if _billed(cost) else nothing


@dataclass(frozen=True)
class CostReport:
    """What the detail view shows."""

    model: str
    replies: list[Priced]
    room: Room
    ready: bool

    def renderable(self) -> Group:
        from termchat.pricing import explain, format_share, total

        table = Table(box=None, padding=(0, 1), show_edge=False, expand=False)
        table.add_column(Text("#", "bold"), justify="right")
        table.add_column(Text("model", "bold"))
        for name in ("in", "cached", "out", "cost"):
            table.add_column(Text(name, "bold"), justify="right")
        for number, priced in enumerate(self.replies, 1):
            usage = priced.usage
            table.add_row(Text(str(number)), Text(safe_line(priced.model.label)),
                          Text(count(usage.input_tokens)), Text(count(usage.cached_tokens)),
                          Text(count(usage.output_tokens)), Text(_detail_cost(priced.cost)))
        lines: list[Text] = []
        if self.replies:
            whole = total(p.cost for p in self.replies)
            table.add_section()
            table.add_row(Text(""), Text("this chat", "bold"), Text(""), Text(""), Text(""),
                          Text(_detail_cost(whole, "nothing billed"), "bold"))
            if why := explain(whole):
                lines.append(Text(f"Unknown: {why}.", "dim"))
        else:
            lines.append(Text("No reply has finished yet.", "dim"))
        room = self.room
        context = "Context: no request has reported its input tokens yet."
        if room.tokens is not None:
            of = f"{room.window:,}-token window" if room.window else \
                "window, whose size is unknown (set context_window for this model in the config)"
            share = f" ({format_share(room.share)})" if room.share is not None else ""
            context = f"Context: the last request took {room.tokens:,} tokens of the {of}{share}."
        caption = "Prices are still loading." if not self.ready else (
            "Prices come from the genai-prices package's bundled data (upgrade the package to "
            "update them) or the config's price; each tool round is priced on its own.")
        return Group(Text(f"Cost and context · {safe_line(self.model)}", "bold"), Text(""),
                     table, Text(""), *lines, Text(context), Text(caption, "dim"))


class CostScreen(ModalScreen[None]):
    """Per-reply tokens and cost, the chat's total, and the context window."""

    DEFAULT_CSS = """
    CostScreen {
        align: center middle;
    }
    #cost-detail {
        width: 100;
        max-width: 100%;
        height: auto;
        max-height: 90%;
        padding: 1 2;
        border: round $primary;
        background: $surface;
    }
    #cost-detail Static {
        width: 100%;
        height: auto;
    }
    """

    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, report: CostReport) -> None:
        super().__init__()
        self._report = report

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="cost-detail"):
            yield Static(self._report.renderable())
            yield Static(Text("Escape closes this.", "dim"))

    def action_close(self) -> None:
        self.dismiss(None)
