"""The Textual app: the chat screen, its key bindings, and the worker that streams replies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker

from termchat.config import Config, ModelConfig
from termchat.errors import TermchatError
from termchat.events import Event, ReasoningDelta, TextDelta
from termchat.tui.conversation import ConversationView
from termchat.tui.messages import AssistantMessage, ErrorLine, UserMessage
from termchat.tui.prompt import PromptInput
from termchat.tui.status import StatusBar
from termchat.turn import Conversation, Exchange, Reply

if TYPE_CHECKING:
    from textual.command import Provider


class ChatScreen(Screen):
    """The conversation, the prompt, the status bar and the footer."""

    BINDINGS = [
        # On the screen, not the app: a priority binding here leaves modal screens (the
        # command palette) their own Escape.
        Binding("escape", "cancel_reply", "Cancel reply", priority=True),
        Binding("ctrl+n", "new_conversation", "New chat"),
        Binding("ctrl+o", "copy_reply", "Copy reply"),
        Binding("ctrl+g", "copy_code", "Copy code"),
    ]

    def __init__(self, conversation: Conversation) -> None:
        super().__init__()
        self.conversation = conversation
        self._worker: Worker[None] | None = None
        self.last_reply: Reply | None = None

    @property
    def chat_app(self) -> TermchatApp:
        assert isinstance(self.app, TermchatApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield ConversationView(id="conversation")
        yield PromptInput(id="prompt")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        view = self.query_one(ConversationView)
        for exchange in self.conversation.exchanges:
            view.mount(UserMessage(exchange.prompt))
            view.mount(AssistantMessage(exchange.reply.text, status=exchange.reply.status))
            self.last_reply = exchange.reply
        view.scroll_end(animate=False)
        self.query_one(PromptInput).focus()
        self._update_status()
        self.set_interval(0.25, self._update_status)

    @property
    def streaming(self) -> bool:
        return self._worker is not None and self._worker.is_running

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_reply":
            return self.streaming
        return True

    def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        if self.streaming:
            self.notify("A reply is still streaming: press Escape to cancel it first.",
                        severity="warning")
            return
        self.query_one(PromptInput).clear()
        self._worker = self._send(message.text)
        self.refresh_bindings()

    @work(exclusive=True, group="reply", exit_on_error=False)
    async def _send(self, prompt: str) -> None:
        view = self.query_one(ConversationView)
        view.following = True
        await view.mount(UserMessage(prompt))
        try:
            exchange = self.conversation.start(prompt)
        except TermchatError as exc:
            await view.mount(ErrorLine(exc.message))
            self._restore_prompt(prompt)
            view.content_grew()
            return
        reply = exchange.reply
        self.last_reply = reply
        widget = AssistantMessage(streaming=True, cursor_blink=self.chat_app.cursor_blink)
        await view.mount(widget)
        view.content_grew()
        self._update_status()

        def on_event(event: Event) -> None:
            if isinstance(event, TextDelta):
                widget.append(event.text)
                view.content_grew()
            elif isinstance(event, ReasoningDelta):
                widget.append_reasoning(event.text)
                view.content_grew()
            if self.chat_app.event_hook is not None:
                self.chat_app.event_hook(event)

        try:
            await self.conversation.stream(exchange, on_event)
        except asyncio.CancelledError:
            self._finished(widget, exchange)
            raise
        except TermchatError as exc:
            self._finished(widget, exchange)
            await view.mount(ErrorLine(exc.message))
            view.content_grew()
            if not exchange.in_context:
                self._restore_prompt(prompt)
            return
        self._finished(widget, exchange)

    def _finished(self, widget: AssistantMessage, exchange: Exchange) -> None:
        widget.finish(exchange.reply.status)
        self.query_one(ConversationView).content_grew()
        self._update_status()
        self.call_after_refresh(self.refresh_bindings)

    def _restore_prompt(self, prompt: str) -> None:
        """Put a failed prompt back so nothing the user typed is lost."""
        prompt_input = self.query_one(PromptInput)
        current = prompt_input.text
        prompt_input.load_text(prompt if not current.strip() else f"{prompt}\n\n{current}")
        prompt_input.move_cursor(prompt_input.document.end)

    def action_cancel_reply(self) -> None:
        if self._worker is not None and self._worker.is_running:
            # Cancel exactly once: a second cancel can leak a pooled connection in httpx.
            self._worker.cancel()

    def _update_status(self) -> None:
        status = self.query_one(StatusBar)
        status.show(self.conversation.model.label, self.last_reply,
                    timings=self.chat_app.show_timings)

    def action_new_conversation(self) -> None:
        if self.streaming:
            self.notify("Cancel the reply in flight (Escape) before starting a new chat.",
                        severity="warning")
            return
        old = self.conversation
        self.conversation = self.chat_app.new_conversation(old.model)
        self.run_worker(old.aclose())
        self.last_reply = None
        self.query_one(ConversationView).remove_children()
        self._update_status()
        self.query_one(PromptInput).focus()

    def switch_model(self, model: ModelConfig) -> None:
        if self.streaming:
            self.notify("Cancel the reply in flight (Escape) before switching model.",
                        severity="warning")
            return
        self.conversation.switch_model(model)
        self._update_status()
        self.notify(f"Now talking to {model.label}.")

    def action_copy_reply(self) -> None:
        reply = self.last_reply
        if reply is None or not reply.text:
            self.notify("There is no reply to copy yet.", severity="warning")
            return
        self.app.copy_to_clipboard(reply.text)
        self.notify("Copied the last reply to the clipboard.")

    def action_copy_code(self, index: int = -1) -> None:
        from termchat.tui.blocks import code_blocks

        blocks = code_blocks(self.last_reply.text) if self.last_reply else []
        if not blocks:
            self.notify("The last reply has no code block.", severity="warning")
            return
        self.app.copy_to_clipboard(blocks[index])
        self.notify("Copied a code block to the clipboard.")


def _chat_commands() -> type[Provider]:
    # Imported when the palette first opens, keeping it off the path to the first frame.
    from termchat.tui.commands import ChatCommands

    return ChatCommands


class TermchatApp(App[int]):
    """termchat's interactive front end."""

    CSS_PATH = Path(__file__).with_name("chat.tcss")
    TITLE = "termchat"
    COMMANDS = App.COMMANDS | {_chat_commands}

    def __init__(self, config: Config, model: ModelConfig, *,
                 conversation: Conversation | None = None, cursor_blink: bool = True,
                 show_timings: bool = True) -> None:
        super().__init__()
        self.config = config
        self.cursor_blink = cursor_blink
        self.show_timings = show_timings
        # Benchmarks and tests observe every event as the screen receives it.
        self.event_hook: Callable[[Event], None] | None = None
        self._initial = conversation or self.new_conversation(model)

    def get_default_screen(self) -> ChatScreen:
        return self.chat

    @cached_property
    def chat(self) -> ChatScreen:
        return ChatScreen(self._initial)

    def new_conversation(self, model: ModelConfig) -> Conversation:
        return Conversation(model)

    async def on_unmount(self) -> None:
        await self.chat.conversation.aclose()


def run_tui(config: Config, model: ModelConfig) -> int:
    app = TermchatApp(config, model)
    app.run()
    return app.return_code or 0
