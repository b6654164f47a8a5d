"""The chat screen: the conversation, the prompt, the status bar, and the worker that
streams each reply into them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer
from textual.worker import Worker, WorkerCancelled, WorkerFailed

from termchat.config import Config, ModelConfig
from termchat.content import Attachment
from termchat.errors import ConfigError, TermchatError
from termchat.events import Event, ReasoningDelta, TextDelta
from termchat.history.recording import ConversationRecord
from termchat.tui.attach import AttachmentTray, AttachScreen, rejected, sent_with
from termchat.tui.blocks import Prerender
from termchat.tui.conversation import ConversationView, Pending, estimate_rows
from termchat.tui.messages import AssistantMessage, ErrorLine, NoteLine, UserMessage
from termchat.tui.meter import CostScreen, Meter, error_text
from termchat.tui.notices import notify
from termchat.tui.prompt import PromptInput
from termchat.tui.status import StatusBar
from termchat.turn import Conversation, Exchange, Reply, Status
from termchat.untrusted import Safe, SafeStream, safe, safe_line

if TYPE_CHECKING:
    from termchat.history import HistoryStore


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
        # On the screen, not the app: a priority binding here leaves modal screens (the
        # command palette) their own Escape.
        Binding("escape", "cancel_reply", "Cancel reply", priority=True),
        Binding("ctrl+n", "new_conversation", "New chat"),
        Binding("ctrl+o", "copy_reply", "Copy reply"),
        Binding("ctrl+g", "copy_code", "Copy code"),
        Binding("ctrl+r", "history", "History"),
        Binding("ctrl+t", "attach", "Attach file"),
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
        # Cost and context (termchat.tui.meter).
        self.meter = Meter(self, config, self._update_status)

    def compose(self) -> ComposeResult:
        yield ConversationView(id="conversation")
        yield AttachmentTray(id="tray")
        prompt_input = PromptInput(id="prompt")
        prompt_input.cursor_blink = self.cursor_blink
        yield prompt_input
        yield StatusBar(id="status")
        yield Footer()

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
        self.run_worker(self.conversation.prepare(), group="prepare", exit_on_error=False)

    def _preload_prices(self) -> None:
        self.run_worker(self.meter.preload(self.conversation, lambda: self.streaming),
                        group="prices", exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is self._worker and event.worker.is_finished and not self.meter.ready:
            self._preload_prices()  # held back while the first reply was on its way

    async def _painted(self) -> None:
        """Wait until the screen has been drawn with what was just mounted."""
        drawn = asyncio.get_running_loop().create_future()
        self.call_after_refresh(drawn.set_result, None)
        await drawn

    async def _show_exchanges(self) -> None:
        """Show the conversation from its end: what fills the screen is mounted at once, the
        rest as the view comes near it (rendered ahead in idle moments)."""
        view = self.query_one(ConversationView)
        exchanges = self.conversation.exchanges
        self.last_reply = exchanges[-1].reply if exchanges else None
        await view.open([self._pending(exchange) for exchange in exchanges])
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

    def _pending(self, exchange: Exchange) -> Pending:
        """An exchange as the view mounts it when it comes near."""
        prompt, text = exchange.prompt, exchange.reply.text
        attachments = exchange.attachments
        status = exchange.reply.status
        ahead: Prerender | None = None

        def make() -> list[Widget]:
            rendered = ahead.renderer if ahead is not None and ahead.done else None
            return [UserMessage(safe(prompt)), *sent_with(attachments),
                    AssistantMessage(safe(text), status=status, rendered=rendered)]

        estimates: dict[int, int] = {}

        def estimate(width: int) -> int:
            if width not in estimates:
                # The messages' own padding taken off (an estimate: mounting measures it).
                marked = 2 if status is not Status.COMPLETE else 0
                estimates[width] = (estimate_rows(prompt, width - 3) + len(attachments)
                                    + estimate_rows(text, width - 5) + 2 + marked)
            return estimates[width]

        def prerender(seconds: float) -> bool:
            nonlocal ahead
            shown = self.query(AssistantMessage)
            if not shown:
                return True  # no width to render at yet: mounting renders it
            if ahead is None:
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
        return True

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        if self.streaming:
            self.notify("A reply is still streaming: press Escape to cancel it first.",
                        severity="warning")
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

    def _submit(self, prompt: str, attachments: tuple[Attachment, ...]) -> None:
        # A request that clearly cannot fit waits (said once; Enter again sends it).
        warning = self.meter.will_not_fit(self.conversation, prompt, attachments)
        if warning is not None:
            notify(self, warning, title="Too long", severity="warning", timeout=12)
            return
        self.query_one(PromptInput).clear()
        self.query_one(AttachmentTray).chips.take()
        self._worker = self._send(prompt, attachments)
        self.refresh_bindings()

    @work(exclusive=True, group="reply", exit_on_error=False)
    async def _send(self, prompt: str, attachments: tuple[Attachment, ...]) -> None:
        view = self.query_one(ConversationView)
        view.following = True
        await view.mount(UserMessage(safe(prompt)), *sent_with(attachments))
        view.content_grew()
        # The prompt is on screen in the frame after Enter, before anything that takes time.
        await self._painted()
        await view.collapse_above()
        if not self.conversation.ready:
            self._connecting = True
            self._update_status()
            try:
                await self.conversation.prepare()
            finally:
                self._connecting = False
        await self.history_ready.wait()
        if self.conversation.history is None and self.history is not None \
                and not self.conversation.exchanges:
            self.conversation.history = self.history.new_conversation()
        try:
            exchange = self.conversation.start(prompt, attachments)
        except TermchatError as exc:
            await view.mount(ErrorLine(safe_line(exc.message)))
            self._restore_prompt(prompt)
            view.content_grew()
            return
        reply = exchange.reply
        self.last_reply = reply
        widget = AssistantMessage(streaming=True, cursor_blink=self.cursor_blink)
        await view.mount(widget)
        # The lines of settled blocks live as long as the reply: keep them out of the way of
        # full collections while it streams.
        freezer = self.set_interval(1.0, _keep_out_of_gc)
        view.content_grew()
        self._update_status()
        # The model's words pass the sanitiser on their way to the widget.
        text, thought = SafeStream(), SafeStream()
        shown = reply.status

        def on_event(event: Event) -> None:
            nonlocal shown
            if isinstance(event, TextDelta):
                if piece := text.feed(event.text):
                    widget.append(piece)
                    view.content_grew()
            elif isinstance(event, ReasoningDelta):
                if piece := thought.feed(event.text):
                    widget.append_reasoning(piece)
                    view.content_grew()
            else:
                self._update_status()  # usage, finish or a retry: rare, shown at once
            if reply.status is not shown:
                shown = reply.status
                self._update_status()
            if self.event_hook is not None:
                self.event_hook(event)

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
            if tail := text.flush():
                widget.append(tail)
            if tail := thought.flush():
                widget.append_reasoning(tail)
            self._finished(widget, exchange)
            if cancelled and not reply.text:
                # Nothing arrived: no empty reply on screen, and the prompt is back to send.
                widget.remove()
                view.mount(NoteLine(Safe("■ cancelled before any reply arrived; the prompt is "
                                         "back in the input")))
                self._restore_prompt(prompt)
        if error is not None:
            if not exchange.reply.text:
                await widget.remove()  # nothing arrived: the error line says it all
            await view.mount(ErrorLine(error))
            view.content_grew()
            if not exchange.in_context:
                self._restore_prompt(prompt)

    def _finished(self, widget: AssistantMessage, exchange: Exchange) -> None:
        widget.finish(exchange.reply.status)
        self.meter.finished(self.conversation, exchange)
        # After the final frame has gone out, not before it.
        self.set_timer(0.1, _keep_out_of_gc)
        self.query_one(ConversationView).content_grew()
        self._update_status()
        self.call_after_refresh(self.refresh_bindings)

    def _restore_prompt(self, prompt: str) -> None:
        """Put a failed prompt back, and its chips, so nothing the user chose is lost."""
        self.query_one(AttachmentTray).chips.give_back()
        prompt_input = self.query_one(PromptInput)
        current = prompt_input.text
        prompt_input.load_text(prompt if not current.strip() else f"{prompt}\n\n{current}")
        prompt_input.move_cursor(prompt_input.document.end)

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
        status.show(label, self.last_reply, timings=self.show_timings,
                    connecting=self._connecting,
                    gauge=self.meter.gauge(self.conversation, self.last_reply))

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
        self._prepare()
        self._update_status()
        notify(self, f"Now talking to {model.label}.")

    def action_history(self) -> None:
        from termchat.tui.history_screen import HistoryScreen

        if self.history is None:
            notify(self, self._history_off(), title="No history", severity="warning",
                   timeout=8)
            return
        record = self.conversation.history
        open_id = record.id if isinstance(record, ConversationRecord) else None
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
        record = self.conversation.history
        if cid is None or (isinstance(record, ConversationRecord) and record.id == cid):
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
                                                   self.history, cid)
        except (HistoryError, ConfigError) as exc:
            notify(self, exc.message, severity="error")
            return
        self.open_conversation(conversation)

    def forget_record(self, cid: int) -> None:
        """Conversation `cid` was deleted: if it is the one on screen, its next turns start a
        new conversation instead of failing to save into one that is gone."""
        record = self.conversation.history
        if isinstance(record, ConversationRecord) and record.id == cid \
                and self.history is not None:
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
