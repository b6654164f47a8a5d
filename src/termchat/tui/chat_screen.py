"""The chat screen: the conversation, the prompt, the status bar, and the worker that
streams each reply into them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import Worker, WorkerCancelled, WorkerFailed

from termchat.config import Config, ModelConfig
from termchat.content import Attachment, ToolCall, ToolResult
from termchat.errors import ConfigError, TermchatError
from termchat.events import Event, Finish, ReasoningDelta, TextDelta, ToolCallArguments
from termchat.keys import keys
from termchat.tui import OPENED_EXCHANGES
from termchat.tui.attach import AttachmentTray, AttachScreen, rejected, sent_with
from termchat.tui.compositor import PartialCompositor
from termchat.tui.conversation import ConversationView, Pending, estimate_rows
from termchat.tui.keybar import KeyBar
from termchat.tui.messages import AssistantMessage, ErrorLine, NoteLine, UserMessage
from termchat.tui.meter import CostScreen, Meter, error_text
from termchat.tui.notices import notify
from termchat.tui.prompt import PromptInput
from termchat.tui.reply_view import CALL_ROWS, NO_TOOLS, ReplyView, ToolNames, stored_widgets
from termchat.tui.rounds import round_lines
from termchat.tui.status import StatusBar
from termchat.turn import Conversation, Exchange, Reply, Status
from termchat.untrusted import Safe, json_text, safe, safe_line

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from termchat.history import HistoryStore
    from termchat.history.recording import ConversationRecord
    from termchat.tools.box import ResolvedCall
    from termchat.tools.config import ToolSelection
    from termchat.tools.policy import Choice, SessionRule
    from termchat.tools.runner import ToolRunner
    from termchat.tui.blocks import Prerender
    from termchat.tui.tools import ToolsSession
    from termchat.turn import History


def _kept(reply: Reply) -> bool:
    """Whether anything of a reply that ended early stays: its text, or calls that ran."""
    return bool(reply.text) or any(isinstance(part, ToolResult) for part in reply.parts)


def _record(history: History | None) -> ConversationRecord | None:
    """`history` as a stored conversation's record, if it is one (the history package is
    imported only once the store is open, after the first frame)."""
    if history is None:
        return None
    from termchat.history.recording import ConversationRecord

    return history if isinstance(history, ConversationRecord) else None


def _keep_out_of_gc() -> None:
    """Move every object alive now (modules, widgets, rendered lines) out of the cyclic
    collector's sight.

    A full collection traverses every tracked object: with Textual, an SDK and a long reply's
    rendered lines that took 20-120 ms each, stalls the user sees mid-stream. Young cyclic
    garbage is collected first; what is frozen is still freed by reference counting, and
    `open_conversation` unfreezes before it drops the old messages so their cycles can go.
    """
    gc.collect(1)
    gc.freeze()


class ChatScreen(Screen[None]):
    """The conversation, the prompt, the status bar and the footer."""

    # Focused as the screen first shows, so keys typed during start-up land in the prompt.
    AUTO_FOCUS = "#prompt"

    BINDINGS = [
        # Steering keys are not in the footer (it would overflow); the palette lists them.
        # On the screen, not the app: a priority binding here leaves modal screens (the
        # command palette) their own Escape.
        Binding(keys("cancel_reply"), "cancel_reply", "Cancel reply", priority=True,
                id="cancel_reply"),
        Binding(keys("regenerate"), "regenerate", "Regenerate", show=False, id="regenerate"),
        Binding(keys("continue_reply"), "continue_reply", "Continue", show=False,
                id="continue_reply"),
        Binding(keys("edit_last"), "edit_last", "Edit prompt", show=False, id="edit_last"),
        Binding(keys("undo"), "undo", "Undo", show=False, id="undo"),
        Binding(keys("edit_partial"), "edit_partial", "Edit the partial", show=False,
                id="edit_partial"),
        Binding(keys("previous_alternative"), "alternative(-1)", "Previous alternative",
                show=False, id="previous_alternative"),
        Binding(keys("next_alternative"), "alternative(1)", "Next alternative", show=False,
                id="next_alternative"),
        Binding(keys("unqueue"), "unqueue", "Take back queued", show=False, id="unqueue"),
        Binding(keys("new_conversation"), "new_conversation", "New chat", id="new_conversation"),
        Binding(keys("copy_reply"), "copy_reply", "Copy reply", id="copy_reply"),
        Binding(keys("copy_code"), "copy_code", "Copy code", id="copy_code"),
        Binding(keys("history"), "history", "History", id="history"),
        Binding(keys("attach"), "attach", "Attach file", id="attach"),
        Binding(keys("tools"), "tools", "Tools", id="tools"),
        Binding(keys("toggle_tool_block"), "toggle_tool_block", "Expand tool",
                id="toggle_tool_block"),
        Binding("f1", "setup", "Set up a model"),
    ]

    @dataclass
    class Ready(Message):
        """The screen is up and its prompt has the focus."""

    def __init__(self, conversation: Conversation, config: Config, *,
                 cursor_blink: bool = True, show_timings: bool = True,
                 demo: str | None = None) -> None:
        """`demo` is how to set up a real model, when the model is the built-in demo."""
        super().__init__()
        # Before anything is laid out: a partial update renders only what it covers.
        self._compositor = PartialCompositor()
        self.conversation = conversation
        self.config = config
        self.demo = demo
        self.cursor_blink = cursor_blink
        self.show_timings = show_timings
        # The store, once the app has opened it; `history_ready` is set then (or when it is
        # known to be off): a prompt typed ahead of it waits for it, so none goes unsaved.
        self.history: HistoryStore | None = None
        self.history_ready = asyncio.Event()
        # Benchmarks and tests observe every event as the screen receives it.
        self.event_hook: Callable[[Event], None] | None = None
        self._worker: Worker[None] | None = None
        self._connecting = False
        self.last_reply: Reply | None = None
        # The exchange whose prompt is being edited in the input (F2): sent as a new branch.
        self._editing: Exchange | None = None
        # The stopped reply whose text is being edited in the input: continued from it.
        self._editing_partial: Exchange | None = None
        # Prompts entered while a reply streams, sent in order as each reply ends.
        self._queue: list[str] = []
        # While the start of a conversation opened at its end is read (`_read_older`): what
        # waits for it (a steering key, a prompt's send), to run once it is in.
        self._waiting: list[Callable[[], object]] | None = None
        # Cost and context (termchat.tui.meter).
        self.meter = Meter(self, config, self._update_status)
        # The MCP servers and approval rules, once the app has started them (after the first
        # frame); None when no server is configured.
        self.tools: ToolsSession | None = None
        # The conversation's tools were chosen in the tools screen (else they follow the
        # model's `tools` in the config when the model changes).
        self._tools_chosen = False
        # The reply streaming now (or the last one), as its widgets.
        self._shown: ReplyView | None = None

    def compose(self) -> ComposeResult:
        yield ConversationView(id="conversation")
        prompt_input = PromptInput(id="prompt")
        prompt_input.cursor_blink = self.cursor_blink
        # In a box of their own: a frame that repaints only the conversation (a reply as it
        # streams) renders the box, not each of them (Textual renders every widget whose
        # clip meets the changed rows, and theirs would be the whole screen).
        with Vertical(id="bottom"):
            yield AttachmentTray(id="tray")
            yield Static(id="queue")
            yield prompt_input
            yield StatusBar(id="status")
        yield KeyBar()

    async def on_mount(self) -> None:
        await self._show_exchanges()
        self.query_one(PromptInput).focus()
        # Once a second while a reply streams (its timings), so the status bar is not a frame
        # of its own four times a second.
        self.set_interval(1.0, self._update_status)
        self.post_message(self.Ready())
        # The provider's SDK loads in the background once the first frame is out.
        self.call_after_refresh(self._prepare)
        # genai-prices after it, for the cost and context meter.
        self.call_after_refresh(self._preload_prices)

    def _prepare(self) -> None:
        self.run_worker(self._warm_up(), group="prepare", exit_on_error=False)

    async def _warm_up(self) -> None:
        """The provider's SDK, then the Markdown renderer (markdown-it, Rich's Markdown,
        Pygments) and the highlighters of the commonest languages (compiling one's rules on
        first use took 2-40 ms, on the event loop mid-reply), each loaded in a thread: neither
        the first frame nor the first reply's first text waits for them. The start of a
        conversation opened at its end is read before: in two threads at once, each would take
        as long as both."""
        await self._all_in()
        await self.conversation.prepare()
        await asyncio.to_thread(importlib.import_module, "termchat.tui.blocks")
        from termchat.markdown_lines import COMMON_LANGUAGES, load_highlighters

        await asyncio.to_thread(load_highlighters, COMMON_LANGUAGES)

    def _preload_prices(self) -> None:
        self.run_worker(self.meter.preload(self.conversation, lambda: self.streaming),
                        group="prices", exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker or not event.worker.is_finished:
            return
        if not self.meter.ready:
            self._preload_prices()  # held back while the first reply was on its way
        if self._queue:
            self._send_queued()

    # --- The queue: prompts entered while a reply streams -------------------------------

    def _enqueue(self, prompt: str) -> None:
        self._queue.append(prompt)
        self.query_one(PromptInput).clear()
        self._show_queue()

    def _show_queue(self) -> None:
        bar = self.query_one("#queue", Static)
        bar.display = bool(self._queue)
        if self._queue:
            first = safe_line(self._queue[0].strip().splitlines()[0])
            more = f" (+{len(self._queue) - 1} more)" if len(self._queue) > 1 else ""
            bar.update(Text(f"⏳ queued: {first[:60]}{'…' if len(first) > 60 else ''}{more}"
                            f" · sent when the reply ends · {self.key_for('unqueue')} takes "
                            "it back to edit or remove"))

    def _send_queued(self) -> None:
        """The reply ended: the next queued prompt goes, unless the reply failed or was cut
        off by the network; then every queued prompt goes back into the input (after the
        failed one, if that came back too): nothing is lost."""
        reply = self.last_reply
        if reply is not None and reply.status in (Status.ERROR, Status.INTERRUPTED):
            queued, self._queue = self._queue, []
            self._show_queue()
            self._restore_prompt("\n\n".join(queued), queued=True)
            notify(self, "The reply failed, so the queued prompts were not sent: they are "
                   "back in the input.", severity="warning")
            return
        prompt = self._queue.pop(0)
        self._show_queue()
        self._submit(prompt, (), queued=True)

    def action_unqueue(self) -> None:
        """The queued prompts back into the input, to edit, send again or delete."""
        if not self._queue:
            notify(self, "Nothing is queued.", severity="warning")
            return
        queued, self._queue = self._queue, []
        self._show_queue()
        self._restore_prompt("\n\n".join(queued), queued=True)

    async def _painted(self) -> None:
        """Wait until the screen has been drawn with what was just mounted."""
        drawn = asyncio.get_running_loop().create_future()
        self.call_after_refresh(drawn.set_result, None)
        await drawn

    async def _show_exchanges(self, *, reply_of_last: bool = True) -> None:
        """Show the conversation from its end: what fills the screen is mounted at once, the
        rest as the view comes near it (rendered ahead in idle moments). Without
        `reply_of_last`, the last exchange shows its prompt only (its reply is to stream)."""
        view = self.query_one(ConversationView)
        exchanges = self.conversation.exchanges
        self.last_reply = exchanges[-1].reply if exchanges else None
        await view.open([self._pending(exchange, reply=reply_of_last or n < len(exchanges))
                         for n, exchange in enumerate(exchanges, 1)])
        if self.demo is not None and not exchanges:
            await view.mount(NoteLine(Safe(
                "This is termchat's demo: replies come from its built-in local server, not a "
                "model, and nothing is saved. Type anything and press Enter to see one "
                "stream; press F1 for how to talk to a real model.")))
        view.following = True
        view.scroll_end(animate=False)
        self._update_status()
        # Once the messages are laid out and rendered, their lines are long-lived.
        self.call_after_refresh(_keep_out_of_gc)
        if self.conversation.older is not None and self._waiting is None:
            self._waiting = []
            self.call_after_refresh(self._read_older_soon)

    def _read_older_soon(self) -> None:
        if self._waiting is not None:
            self.run_worker(self._read_older(self.conversation, self._waiting),
                            group="older", exclusive=True, exit_on_error=False)

    async def _read_older(self, conversation: Conversation,
                          waiting: list[Callable[[], object]]) -> None:
        """`conversation` opened with its end alone (its first frame is out): read the rest
        in a thread and put it above what is shown, the view still showing what it showed.
        What waited for it (`waiting`, see `_held`) runs then, in order."""
        from termchat.history import HistoryError

        shown = list(conversation.exchanges)
        try:
            await conversation.load_older()
        except HistoryError as exc:
            notify(self, f"{exc.message}. The earlier part of this conversation could not "
                   "be read: replies from here on do not see it.", severity="error")
        else:
            if conversation is self.conversation:
                await self._show_older(shown)
        finally:
            self._release(waiting)

    def _release(self, waiting: list[Callable[[], object]] | None) -> None:
        """What waited for the conversation to be all in runs now (once)."""
        if waiting is None:
            return
        if self._waiting is waiting:
            self._waiting = None
        held, waiting[:] = list(waiting), []
        for then in held:
            self.call_later(then)

    async def _show_older(self, shown: list[Exchange]) -> None:
        path = self.conversation.exchanges
        older = path[:len(path) - len(shown)]
        if len(older) + len(shown) != len(path) or any(
                a is not b for a, b in zip(path[len(older):], shown, strict=True)):
            await self._show_exchanges()  # written to meanwhile (by another termchat)
            return
        view = self.query_one(ConversationView)
        await view.add_older([self._pending(exchange) for exchange in older])
        self.meter.grew(self.conversation)
        self.call_after_refresh(_keep_out_of_gc)

    async def _all_in(self) -> None:
        """Wait until the conversation shown is all in (see `_read_older`)."""
        if self._waiting is not None:
            done = asyncio.Event()
            self._waiting.append(done.set)
            await done.wait()

    def _held(self, then: Callable[[], object]) -> bool:
        """While the start of the conversation shown is being read (a moment after it
        opens at its end): `then` is kept to run once it is in, and True."""
        if self._waiting is None:
            return False
        self._waiting.append(then)
        return True

    def _pending(self, exchange: Exchange, *, reply: bool = True) -> Pending:
        """An exchange as the view mounts it when it comes near (its prompt alone without
        `reply`)."""
        prompt, text = exchange.prompt, exchange.reply.text
        attachments = exchange.attachments
        status = exchange.reply.status
        ahead: Prerender | None = None
        calls = sum(isinstance(part, ToolCall) for part in exchange.reply.parts)

        def make() -> list[Widget]:
            if not reply:
                return [UserMessage(safe(prompt)), *sent_with(attachments)]
            # `‹ reply 2/3 ›` under a reply that has alternatives.
            others = [line] if (line := self._alternatives_line(exchange)) else []
            if calls:
                # Its text between its tool calls, as it streamed (rendered on mounting).
                return [UserMessage(safe(prompt)), *stored_widgets(exchange.reply), *others]
            rendered = ahead.renderer if ahead is not None and ahead.done else None
            return [UserMessage(safe(prompt)), *sent_with(attachments),
                    AssistantMessage(safe(text), status=status, rendered=rendered,
                                     tail_first=True), *others]

        estimates: dict[int, int] = {}

        def estimate(width: int) -> int:
            if width not in estimates:
                # The messages' own padding taken off (an estimate: mounting measures it).
                marked = 2 if status is not Status.COMPLETE else 0
                estimates[width] = (estimate_rows(prompt, width - 3) + len(attachments)
                                    + estimate_rows(text, width - 5) + 2 + marked
                                    + CALL_ROWS * calls)
            return estimates[width]

        def prerender(seconds: float) -> bool:
            nonlocal ahead
            shown = self.query(AssistantMessage)
            if not shown or calls:
                return True  # no width to render at yet: mounting renders it
            if ahead is None:
                from termchat.tui.blocks import Prerender

                ahead = Prerender(safe(text), self.app.console)
            return ahead.step(shown.last().size.width, seconds)

        return Pending(make, estimate, prerender)

    def open_conversation(self, conversation: Conversation) -> bool:
        """Show `conversation` and continue it; refused while a reply streams."""
        if self.streaming:
            self.notify("Cancel the reply in flight (Escape) before opening another chat.",
                        severity="warning")
            return False
        old = self.conversation
        self.conversation = conversation
        # Another conversation: what waited for the old one's start runs on this one.
        self.workers.cancel_group(self, "older")
        self._release(self._waiting)
        self._tools_chosen = False
        self._attach_tools(conversation)
        self.run_worker(old.aclose())
        # The messages about to be removed were frozen; let the collector have them again.
        gc.unfreeze()
        self.run_worker(self._show_exchanges(), group="show", exclusive=True)
        self.query_one(PromptInput).focus()
        self._prepare()
        return True

    @property
    def streaming(self) -> bool:
        return self._worker is not None and self._worker.is_running

    async def stop_reply(self) -> None:
        """Cancel the reply in flight, if any, and wait until it is saved as it stood."""
        worker = self._worker
        if worker is not None and worker.is_running:
            worker.cancel()
            with contextlib.suppress(WorkerCancelled, WorkerFailed):
                await worker.wait()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_reply":
            return self.streaming
        if action == "setup":
            return self.demo is not None
        if action == "tools":
            return self.tools is not None
        if action == "toggle_tool_block":
            return bool(self.query("ToolBlock"))  # by name: no need to import it for this
        return True

    def on_text_area_changed(self, event: PromptInput.Changed) -> None:
        if not event.text_area.text.strip():
            # Emptied: the next prompt is a new one again.
            self._editing = self._editing_partial = None

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        if self.streaming:
            self._enqueue(message.text)
            return
        if self._editing_partial is not None:
            self._editing_partial = None
            self.query_one(PromptInput).clear()
            self._worker = self._continue(message.text)
            self.refresh_bindings()
            return
        if not self.query_one(AttachmentTray).chips.attachments and "@" not in message.text:
            self._submit(message.text, ())  # nothing to load: sent in this frame
        else:
            self._gather(message.text)

    @work(exclusive=True, group="gather")
    async def _gather(self, prompt: str) -> None:
        """Load and check the chips' and the `@path`s' files (in a thread), then send."""
        earlier = [attachment for exchange in self.conversation.exchanges
                   if exchange.in_context for attachment in exchange.attachments]
        attachments = await self.query_one(AttachmentTray).gather(
            prompt, self.conversation.model.provider, earlier, Path.cwd())
        if attachments is not None and not self.streaming \
                and self.query_one(PromptInput).text == prompt:
            self._submit(prompt, attachments)

    def _submit(self, prompt: str, attachments: tuple[Attachment, ...], *,
                queued: bool = False) -> None:
        """Send what the input holds (or, `queued`, a prompt that waited: the input and its
        chips are left as they are)."""
        # A request that clearly cannot fit waits (said once; Enter again sends it).
        warning = self.meter.will_not_fit(self.conversation, prompt, attachments)
        if warning is not None:
            notify(self, warning, title="Too long", severity="warning", timeout=12)
            if queued:
                self._restore_prompt(prompt, queued=True)
            return
        editing = None
        if not queued:
            editing, self._editing = self._editing, None
            self.query_one(PromptInput).clear()
            self.query_one(AttachmentTray).chips.take()
        self._worker = self._send(prompt, attachments, editing)
        self.refresh_bindings()

    @work(exclusive=True, group="reply", exit_on_error=False)
    async def _send(self, prompt: str, attachments: tuple[Attachment, ...],
                    editing: Exchange | None = None) -> None:
        """Send `prompt`, or with `editing` send it in that exchange's place (a branch)."""
        view = self.query_one(ConversationView)
        view.following = True
        await view.mount(UserMessage(safe(prompt)), *sent_with(attachments))
        view.content_grew()
        # The prompt is on screen in the frame after Enter, before anything that takes time.
        await self._painted()
        await view.collapse_above()
        # A conversation opened at its end goes on from all of it: its start is read first.
        await self._all_in()
        tools = self.tools
        if not self.conversation.ready or (tools is not None and tools.starting):
            self._connecting = True
            self._update_status()
            try:
                await self.conversation.prepare()
                if tools is not None:
                    # The model is offered the tools of the servers that are up: wait for
                    # those still starting (each bounded by its startup_timeout).
                    await tools.wait_started()
            finally:
                self._connecting = False
        await self.history_ready.wait()
        if self.conversation.history is None and self.history is not None \
                and not self.conversation.exchanges:
            self.conversation.history = self.history.new_conversation()
        try:
            exchange = self.conversation.edit(editing, prompt, attachments) \
                if editing is not None else self.conversation.start(prompt, attachments)
        except TermchatError as exc:
            await view.mount(ErrorLine(safe_line(exc.message)))
            self._restore_prompt(prompt)
            view.content_grew()
            return
        if editing is not None:
            await self._show_exchanges(reply_of_last=False)  # the branch, in its place
        await self._stream_reply(exchange)

    async def _stream_reply(self, exchange: Exchange, *, earlier: str = "") -> None:
        """Stream `exchange`'s reply into new widgets at the view's end (after `earlier`, the
        text a continued reply had), and say how it ended."""
        view = self.query_one(ConversationView)
        prompt, attachments = exchange.prompt, exchange.attachments
        reply = exchange.reply
        self.last_reply = reply
        shown = self._shown = ReplyView(view, reply, cursor_blink=self.cursor_blink,
                                        timings=self.show_timings, names=self._tool_names())
        await shown.start()
        if earlier and (segment := shown.last_segment) is not None:
            segment.append(safe(earlier))
        # The lines of settled blocks live as long as the reply: keep them out of the way of
        # full collections while it streams.
        freezer = self.set_interval(1.0, _keep_out_of_gc)
        self._update_status()
        status_shown = reply.status

        def on_event(event: Event) -> Awaitable[None] | None:
            nonlocal status_shown
            pending = shown.on_event(event)
            if not isinstance(event, TextDelta | ReasoningDelta | ToolCallArguments):
                if isinstance(event, Finish):
                    # The last words come with the finish (one read of the socket): not a
                    # frame after the status bar says done.
                    shown.show_now()
                self._update_status()  # usage, finish, a call's progress: rare, shown at once
            elif reply.status is not status_shown:
                self._update_status()
            status_shown = reply.status
            if self.event_hook is not None:
                self.event_hook(event)
            return pending

        error: Safe | None = None
        cancelled = False
        try:
            await self.conversation.stream(exchange, on_event)
        except asyncio.CancelledError:
            cancelled = True
            raise
        except TermchatError as exc:
            error = safe_line(rejected(exc, attachments, self.conversation.model.label)
                              or error_text(exc, len(attachments)))
        except Exception as exc:
            # A bug in termchat: the reply so far stays, and the user hears about it.
            error = safe_line(f"termchat failed ({type(exc).__name__}: {exc}); what arrived "
                              "is kept. This is a bug: please report it.")
            self.log.error(traceback.format_exc())
        finally:
            freezer.stop()
            if (cancelled or error is not None) and not _kept(reply):
                # Nothing arrived: no empty reply on screen (the error line says it all).
                await shown.remove()
                if cancelled:
                    await view.mount(NoteLine(Safe(
                        "■ cancelled before any reply arrived; the prompt is back in the "
                        "input")))
                    self._restore_prompt(prompt)
            else:
                await shown.finish(reply.status)
                if reply.round_limit:
                    await view.mount(NoteLine(self._round_limit_line(reply)))
            self._turn_ended(exchange)
            if (line := self._alternatives_line()) is not None:
                await view.mount(line)
        if error is not None:
            await view.mount(ErrorLine(error))
            view.content_grew()
            if not exchange.in_context:
                self._restore_prompt(prompt)

    def _round_limit_line(self, reply: Reply) -> Safe:
        limit = self.conversation.tools.max_rounds if self.conversation.tools else reply.rounds
        return Safe(f"■ stopped at the round limit: the model still asked for tools after "
                    f"{reply.rounds} requests ([tools] max_rounds = {limit} in the config); "
                    "its last calls were not run. Send a message to let it go on.")

    def _turn_ended(self, exchange: Exchange) -> None:
        self.meter.finished(self.conversation, exchange)
        # After the final frame has gone out, not before it.
        self.set_timer(0.1, _keep_out_of_gc)
        self.query_one(ConversationView).content_grew()
        self._update_status()
        self.call_after_refresh(self.refresh_bindings)

    def _restore_prompt(self, prompt: str, *, queued: bool = False) -> None:
        """Put a failed prompt back, and its chips, so nothing the user chose is lost; a
        `queued` one (it has no chips of its own) goes after what the input holds."""
        if not queued:
            self.query_one(AttachmentTray).chips.give_back()
        prompt_input = self.query_one(PromptInput)
        current = prompt_input.text
        joined = f"{current}\n\n{prompt}" if queued else f"{prompt}\n\n{current}"
        prompt_input.load_text(prompt if not current.strip() else joined)
        prompt_input.move_cursor(prompt_input.document.end)

    # --- Steering: regenerate, continue, edit, undo, alternatives ------------------------

    def key_for(self, binding_id: str) -> str:
        """The key binding `binding_id` has now (the config's `[keys]` applied), as shown."""
        for active in self.active_bindings.values():
            if active.binding.id == binding_id:
                return self.app.get_key_display(active.binding)
        return ""

    def _steer(self, what: str, then: Callable[[], object]) -> bool:
        """Whether a steering action may go on now: not while a reply streams (said), nor
        before the conversation is all in (`then` is the action again, for then)."""
        if self._held(then):
            return False
        if self.streaming:
            notify(self, f"A reply is still streaming: press Escape to cancel it, then "
                   f"{what}.", severity="warning")
            return False
        return True

    def action_regenerate(self) -> None:
        if self._steer("regenerate", self.action_regenerate):
            self._worker = self._regenerate()
            self.refresh_bindings()

    @work(exclusive=True, group="reply", exit_on_error=False)
    async def _regenerate(self) -> None:
        try:
            exchange = self.conversation.regenerate()
        except TermchatError as exc:
            notify(self, exc.message, severity="warning")
            return
        await self._show_exchanges(reply_of_last=False)
        await self._stream_reply(exchange)

    def action_continue_reply(self) -> None:
        if self._steer("continue it", self.action_continue_reply):
            self._worker = self._continue()
            self.refresh_bindings()

    @work(exclusive=True, group="reply", exit_on_error=False)
    async def _continue(self, edited: str | None = None) -> None:
        """Continue the last reply (from `edited`, its text as the user changed it)."""
        try:
            exchange = self.conversation.resume() if edited is None \
                else self.conversation.edit_partial(edited)
        except TermchatError as exc:
            notify(self, exc.message, severity="warning")
            return
        await self._show_exchanges(reply_of_last=False)
        await self._stream_reply(exchange, earlier=exchange.reply.text)

    def action_edit_partial(self) -> None:
        """A cut-off or cancelled reply's text into the input: Enter continues from it as
        edited (a wrong turn trimmed, say)."""
        if not self._steer("edit it", self.action_edit_partial):
            return
        try:
            last = self.conversation.resumable()
        except TermchatError as exc:
            notify(self, exc.message, severity="warning")
            return
        self._editing, self._editing_partial = None, last
        prompt_input = self.query_one(PromptInput)
        prompt_input.load_text(last.reply.text)
        prompt_input.move_cursor(prompt_input.document.end)
        prompt_input.focus()
        notify(self, "Editing the partial reply: Enter continues it from your text; empty "
               "the input to stop editing.", timeout=6)

    def action_edit_last(self) -> None:
        """The last prompt into the input: Enter sends it as a new branch there."""
        if self.conversation.exchanges:
            self.edit_prompt(self.conversation.exchanges[-1])

    def edit_prompt(self, exchange: Exchange) -> None:
        """`exchange`'s prompt (any on the path) into the input: Enter sends it as a new
        branch at its place; the old branch is kept and can be flipped back to."""
        if not self._steer("edit the prompt", lambda: self.edit_prompt(exchange)):
            return
        self._editing, self._editing_partial = exchange, None
        prompt_input = self.query_one(PromptInput)
        prompt_input.load_text(exchange.prompt)
        prompt_input.move_cursor(prompt_input.document.end)
        prompt_input.focus()
        notify(self, "Editing a prompt: Enter sends it as a new branch (the old one is kept: "
               "‹ › flips back); empty the input to stop editing.", timeout=6)

    async def action_undo(self) -> None:
        """Take the last exchange back (kept as an abandoned branch); its prompt goes back
        in the input."""
        if not self._steer("undo", self.action_undo):
            return
        undone = self.conversation.undo()
        if undone is None:
            notify(self, "There is nothing to undo.", severity="warning")
            return
        self._editing = None
        await self._show_exchanges()
        self._restore_prompt(undone.prompt)

    def action_fork(self) -> None:
        if self._steer("fork", self.action_fork):
            self._fork()

    @work(group="open", exclusive=True)
    async def _fork(self) -> None:
        """Go on in a new conversation that starts as a copy of this one's path (stored as
        its own conversation when the history is on); this one is left as it is."""
        record = _record(self.conversation.history)
        if record is None or record.id is None or self.history is None:
            forked = self.conversation.fork()
            if self.history is not None:
                forked.history = self.history.new_conversation()
        else:
            from termchat.history import HistoryError, continue_conversation

            store, cid = self.history, record.id
            try:
                forked = await asyncio.to_thread(
                    lambda: continue_conversation(self.config, store, store.fork(cid)))
            except (HistoryError, ConfigError) as exc:
                notify(self, exc.message, severity="error")
                return
            forked.switch_model(self.conversation.model)
        if self.open_conversation(forked):
            notify(self, "Forked: this is a new conversation, a copy of the one before; "
                   "that one is kept as it was (Ctrl+R).", timeout=6)

    async def action_alternative(self, step: int) -> None:
        """Flip the last exchange to its previous or next alternative (another reply to its
        prompt, or another prompt at its place)."""
        if self.conversation.exchanges:
            await self.flip(self.conversation.exchanges[-1], step)

    async def flip(self, exchange: Exchange, step: int, *, prompts: bool = False) -> None:
        """Show `exchange`'s previous or next alternative: another reply to its prompt (or,
        with `prompts` or when there is no other reply, another prompt at its place); the
        path below it follows, and it is what the next turn sends."""
        if not self._steer("flip", lambda: self.flip(exchange, step, prompts=prompts)):
            return
        options = self.conversation.alternatives(exchange)
        if len(options.replies) > 1 and not (prompts and len(options.prompts) > 1):
            self.conversation.choose(options.reply(step))
        elif len(options.prompts) > 1:
            self.conversation.choose(options.prompt(step))
        else:
            notify(self, "That reply has no alternatives: regenerate it for one.",
                   severity="warning")
            return
        await self._show_exchanges()

    def _alternatives_line(self, exchange: Exchange | None = None) -> NoteLine | None:
        """`‹ reply 2/3 ›` under `exchange` (the last by default), when it has
        alternatives."""
        if exchange is None:
            if not self.conversation.exchanges:
                return None
            exchange = self.conversation.exchanges[-1]
        options = self.conversation.alternatives(exchange)
        shown = [f"{what} {n}/{count}" for what, (n, count) in
                 (("prompt", options.prompt_position), ("reply", options.reply_position))
                 if count > 1]
        if not shown:
            return None
        return NoteLine(Safe(f"‹ {' · '.join(shown)} ›"))

    def action_cancel_reply(self) -> None:
        if self._worker is not None and self._worker.is_running:
            # Cancel exactly once: a second cancel can leak a pooled connection in httpx.
            self._worker.cancel()

    def action_setup(self) -> None:
        from termchat.tui.setup_screen import SetupScreen

        if self.demo is not None:
            self.app.push_screen(SetupScreen(self.demo))

    def _update_status(self) -> None:
        status = self.query_one(StatusBar)
        label = "demo · built-in local server · F1 set up" if self.demo is not None \
            else self.conversation.model.label
        reply = self.last_reply
        status.show(label, reply, timings=self.show_timings, connecting=self._connecting,
                    gauge=self.meter.gauge(self.conversation, reply))
        # Each round's figures, when there was more than one (also: the palette's rounds).
        tooltip = "\n".join(round_lines(reply)) if reply is not None and reply.rounds > 1 \
            else None
        if tooltip != status.tooltip:
            status.tooltip = tooltip

    def action_attach(self) -> None:
        """The attach dialog; the file it loads and checks becomes a chip."""
        def attached(attachment: Attachment | None) -> None:
            if attachment is not None and not self.query_one(AttachmentTray).chips.add(
                    attachment):
                notify(self, f"{safe_line(attachment.name)} is already attached.", timeout=3)
            self.query_one(PromptInput).focus()

        self.app.push_screen(AttachScreen(self.conversation.model.provider, Path.cwd(),
                                          cursor_blink=self.cursor_blink), attached)

    def action_show_cost(self) -> None:
        """The detail view: each reply's tokens and cost, the chat's, and the context."""
        if self._held(self.action_show_cost):
            return
        self.app.push_screen(CostScreen(self.meter.report(self.conversation)))

    def action_new_conversation(self) -> None:
        if self.streaming:
            self.notify("Cancel the reply in flight (Escape) before starting a new chat.",
                        severity="warning")
            return
        self.open_conversation(self.new_conversation(self.conversation.model))

    def new_conversation(self, model: ModelConfig) -> Conversation:
        history = self.history.new_conversation() if self.history is not None else None
        return Conversation(model, history=history)

    def switch_model(self, model: ModelConfig) -> None:
        if self.streaming:
            self.notify("Cancel the reply in flight (Escape) before switching model.",
                        severity="warning")
            return
        self.conversation.switch_model(model)
        runner = self.tool_runner()
        if runner is not None and self.tools is not None and not self._tools_chosen:
            runner.selection = self.tools.selection_for(model.name)
        self._prepare()
        self._update_status()
        notify(self, f"Now talking to {model.label}.")

    # Tools.

    def use_tools(self, tools: ToolsSession) -> None:
        """The app started its MCP servers: every conversation from now on may use them."""
        self.tools = tools
        self._attach_tools(self.conversation)
        self.refresh_bindings()

    def _attach_tools(self, conversation: Conversation) -> None:
        if self.tools is not None and conversation.tools is None:
            conversation.tools = self.tools.runner(conversation.model.name, self._ask)

    def _tool_names(self) -> ToolNames:
        tools = self.tools
        if tools is None:
            return NO_TOOLS

        def where(name: str) -> tuple[str, str] | None:
            spec = tools.spec(name)
            return (spec.server, spec.tool) if spec is not None else None

        return ToolNames(where, tools.allowed_because)

    async def _ask(self, call: ResolvedCall) -> Choice:
        """Ask the user about `call` in the approval dialog. Escape there stops the reply,
        as Escape does here: the worker is cancelled, and this call and the rest of its
        round are recorded as cancelled."""
        from termchat.tui.approval import ApprovalScreen, Question

        assert self.tools is not None
        shown = self._shown
        block = shown.block_for(call.call.id) if shown is not None else None
        if block is not None:
            block.asking()
        position = shown.position(call.call.id) if shown is not None else None
        spec = call.spec
        question = Question(
            server=safe_line(spec.server), tool=safe_line(spec.tool), name=safe_line(spec.name),
            arguments=safe(json_text(call.arguments, indent=2) if call.arguments else ""),
            summary=safe_line(spec.summary), read_only=spec.read_only, position=position)
        answer: asyncio.Future[Choice | None] = asyncio.get_running_loop().create_future()
        screen = ApprovalScreen(question)

        def answered(choice: Choice | None) -> None:
            if answer.done():
                return
            answer.set_result(choice)
            if choice is None:
                self.action_cancel_reply()

        self.app.push_screen(screen, answered)
        try:
            choice = await answer
        finally:
            if not answer.done():
                # The reply stopped while asking (Ctrl+Q, a signal): the dialog goes too.
                answer.cancel()
                if screen in self.app.screen_stack:
                    screen.pop_until_active()
                    screen.dismiss(None)
        if choice is None:
            # Escape: the cancellation is on its way; this await is where it lands.
            await asyncio.sleep(0)
            raise asyncio.CancelledError
        if block is not None:
            from termchat.tools.policy import Choice as Choices

            if choice is not Choices.DENY:
                block.approved(self.tools.chosen(choice))
        return choice

    def action_tools(self) -> None:
        from termchat.tui.tools_screen import ToolsScreen

        tools, runner = self.tools, self.tool_runner()
        if tools is None or runner is None:
            notify(self, "No MCP servers are configured: add [mcp.NAME] tables to the config "
                   "(config.example.toml shows how).", severity="warning", timeout=8)
            return
        self.app.push_screen(ToolsScreen(tools, runner.selection), self._tools_chosen_in)

    def _tools_chosen_in(self, selection: ToolSelection | None) -> None:
        runner = self.tool_runner()
        if selection is None or runner is None or selection == runner.selection:
            return
        runner.selection = selection
        self._tools_chosen = True

    def tool_runner(self) -> ToolRunner | None:
        """The conversation's tool runner, when there are tools."""
        if self.tools is None:
            return None
        from termchat.tools.runner import ToolRunner

        runner = self.conversation.tools
        return runner if isinstance(runner, ToolRunner) else None

    def set_tool_selection(self, selection: ToolSelection) -> None:
        """Offer the model `selection` in this conversation from its next reply on."""
        self._tools_chosen_in(selection)

    def revoke_rule(self, rule: SessionRule) -> None:
        if self.tools is not None and self.tools.policy.revoke(rule):
            notify(self, f"Calls of {rule.label} ask again.")

    def action_toggle_tool_block(self) -> None:
        """Expand or collapse the focused tool block, else the last one."""
        from termchat.tui.tool_block import ToolBlock

        focused = self.focused
        blocks = self.query(ToolBlock)
        if not blocks:
            return
        block = focused if isinstance(focused, ToolBlock) else blocks.last()
        block.action_expand_collapse()

    def action_rounds(self) -> None:
        from termchat.tui.rounds import RoundsScreen

        reply = self.last_reply
        self.app.push_screen(RoundsScreen(round_lines(reply) if reply is not None else []))

    def action_history(self) -> None:
        from termchat.tui.history_screen import HistoryScreen

        if self.history is None:
            notify(self, self._history_off(), title="No history", severity="warning",
                   timeout=8)
            return
        record = _record(self.conversation.history)
        open_id = record.id if record is not None else None
        self.app.push_screen(HistoryScreen(self.history, open_id=open_id,
                                           cursor_blink=self.cursor_blink,
                                           cost=self.meter.stored_cost),
                             self._open_stored)

    def _history_off(self) -> str:
        if not self.config.history:
            return (f"History is off: {self.config.path} sets history = false, so nothing is "
                    "saved.")
        return ("History is off for this run, so there is nothing to browse (the warning at "
                "startup, if any, said why).")

    def _open_stored(self, cid: int | None) -> None:
        """The history screen closed; `cid` is the conversation it chose to open, if any."""
        record = _record(self.conversation.history)
        if cid is None or (record is not None and record.id == cid):
            return
        if self.streaming:
            notify(self, "A reply is still streaming: press Escape to cancel it, then open "
                   "the conversation.", severity="warning")
            return
        self._load(cid)

    @work(group="open", exclusive=True)
    async def _load(self, cid: int) -> None:
        from termchat.history import HistoryError, continue_conversation

        assert self.history is not None
        try:
            conversation = await asyncio.to_thread(continue_conversation, self.config,
                                                   self.history, cid, recent=OPENED_EXCHANGES)
        except (HistoryError, ConfigError) as exc:
            notify(self, exc.message, severity="error")
            return
        self.open_conversation(conversation)

    def forget_record(self, cid: int) -> None:
        """Conversation `cid` was deleted: if it is the one on screen, its next turns start a
        new conversation instead of failing to save into one that is gone."""
        record = _record(self.conversation.history)
        if record is not None and record.id == cid and self.history is not None:
            self.conversation.history = self.history.new_conversation()

    def action_copy_reply(self) -> None:
        reply = self.last_reply
        if reply is None or not reply.text:
            self.notify("There is no reply to copy yet.", severity="warning")
            return
        self.app.copy_to_clipboard(reply.text)
        self.notify("Copied the last reply to the clipboard.")

    def action_copy_code(self, index: int = -1) -> None:
        from termchat.markdown_lines import code_blocks

        blocks = code_blocks(self.last_reply.text) if self.last_reply else []
        if not blocks:
            self.notify("The last reply has no code block.", severity="warning")
            return
        self.app.copy_to_clipboard(blocks[index])
        self.notify("Copied a code block to the clipboard.")
