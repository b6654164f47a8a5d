"""The Textual app: opens the history after the first frame, keeps what is typed during
start-up, ends cleanly on a signal, and shows the chat screen."""

from __future__ import annotations

import asyncio
import gc
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from textual import events
from textual.app import App

from termchat.config import Config, ModelConfig
from termchat.errors import EXIT_HANGUP, EXIT_INTERRUPTED, EXIT_TERMINATED, ConfigError
from termchat.tui.chat_screen import ChatScreen
from termchat.tui.notices import notify
from termchat.turn import Conversation

if TYPE_CHECKING:
    from textual.command import Provider
    from textual.driver import Driver
    from textual.theme import Theme

    from termchat.history import HistoryStore
    from termchat.tools.box import ServerStatus
    from termchat.tui.history_screen import HistoryScreen
    from termchat.tui.tools import ToolsSession


def _chat_commands() -> type[Provider]:
    # Imported when the palette first opens, keeping it off the path to the first frame.
    from termchat.tui.commands import ChatCommands

    return ChatCommands


def _collect_from_now() -> None:
    """After the first frame: garbage collection back on if start-up turned it off (see
    `cli.main`), with everything made so far frozen out of its sight."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


class TermchatApp(App[int]):
    """termchat's interactive front end."""

    CSS_PATH = Path(__file__).with_name("chat.tcss")
    TITLE = "termchat"
    COMMANDS = App.COMMANDS | {_chat_commands}

    def __init__(self, config: Config, model: ModelConfig, *,
                 conversation: Conversation | None = None, history: HistoryStore | None = None,
                 open_history: bool = False, cursor_blink: bool = True,
                 show_timings: bool = True, demo: str | None = None, tools: bool = True,
                 yes: bool = False, allow_tools: tuple[str, ...] = ()) -> None:
        """`history` is an open store; `open_history` opens the default one after the first
        frame instead, keeping SQLite off the path to it. The config's MCP servers start
        after the first frame too, unless `tools` is false; `yes` and `allow_tools` let
        calls run unasked (as `--yes` and `--allow-tool` do)."""
        super().__init__()
        self.config = config
        self._tools_wanted = tools and bool(config.tools.servers)
        self._tool_approvals = (yes, allow_tools)
        self.tools: ToolsSession | None = None
        self.history = history
        if history is not None:
            # Save failures during the session are notifications, not stderr under the screen.
            history.warn = self.warn
        self._open_history = open_history
        self._quitting = False
        self._early_input: list[events.Key | events.Paste] | None = []
        self.chat = ChatScreen(conversation or Conversation(
            model, history=history.new_conversation() if history is not None else None),
            config, cursor_blink=cursor_blink, show_timings=show_timings, demo=demo)
        self.chat.history = history
        # The user's keys ([keys] in the config) over the default ones, by binding id.
        self.set_keymap(config.keys)
        if config.theme is not None and config.theme in self.available_themes:
            self.theme = config.theme
        self._saved_theme = self.theme

    def _theme_chosen(self, theme: Theme) -> None:
        """A theme chosen (in the palette) is kept in the config for the next start."""
        if theme.name != self._saved_theme:
            self._saved_theme = theme.name
            self.run_worker(self._save_theme(theme.name), group="theme", exclusive=True)

    async def _save_theme(self, name: str) -> None:
        from termchat.config import save_theme

        try:
            await asyncio.to_thread(save_theme, self.config.path, name)
        except ConfigError as exc:
            self.notify(exc.message, severity="warning")

    def on_mount(self) -> None:
        self.call_after_refresh(_collect_from_now)
        self.theme_changed_signal.subscribe(self, self._theme_chosen)
        loop = asyncio.get_running_loop()
        for signum, code in ((signal.SIGTERM, EXIT_TERMINATED), (signal.SIGHUP, EXIT_HANGUP),
                             (signal.SIGINT, EXIT_INTERRUPTED)):
            loop.add_signal_handler(signum, self._signalled, code)
        if self._open_history:
            self.call_after_refresh(self._open_store)
        else:
            self.chat.history_ready.set()
        if self._tools_wanted:
            self.call_after_refresh(self._start_tools)

    def _start_tools(self) -> None:
        """Start the MCP servers, after the first frame (the SDK is imported in a thread)."""
        from termchat.tui.tools import ToolsSession

        yes, allow_tools = self._tool_approvals
        self.tools = ToolsSession(self.config.tools, yes=yes, allow_tools=allow_tools)
        self.tools.start(self._tools_changed)
        self.chat.use_tools(self.tools)

    def _tools_changed(self, status: ServerStatus) -> None:
        """A server failed to start or stopped working: one line naming it and why."""
        from termchat.tools.servers import ServerState

        if status.state is ServerState.FAILED and not self._quitting:
            notify(self, f"{status.line} The chat goes on without its tools; its log: "
                   f"{status.log_path}", severity="error", timeout=12)

    def _open_store(self) -> None:
        self.run_worker(self._open_store_in_thread(), group="history", exit_on_error=False)

    async def _open_store_in_thread(self) -> None:
        """Open the store in a thread: importing the history package and opening SQLite
        take 50-100 ms, which on the event loop would hold up a first Enter typed at once.
        What it has to say while opening is said here, on the event loop."""
        said: list[str] = []

        def opened() -> HistoryStore | None:
            from termchat.history import open_or_warn

            return open_or_warn(True, said.append)

        store = await asyncio.to_thread(opened)
        if store is not None:
            store.warn = self.warn
        for line in said:
            self.warn(line)
        self.history = self.chat.history = store
        conversation = self.chat.conversation
        if store is not None and conversation.history is None and not conversation.exchanges:
            conversation.history = store.new_conversation()
        self.chat.history_ready.set()

    def on_chat_screen_ready(self) -> None:
        self.replay_early_input()

    def on_history_screen_deleted(self, message: HistoryScreen.Deleted) -> None:
        self.chat.forget_record(message.cid)

    async def on_event(self, event: events.Event) -> None:
        if self._early_input is not None and isinstance(event, events.Key | events.Paste):
            # Typed during start-up, before the prompt exists: kept for it, in order.
            self._early_input.append(event)
            event.stop()
            return
        await super().on_event(event)

    def replay_early_input(self) -> None:
        """The chat screen is up with its prompt focused: what was typed ahead goes to it."""
        early, self._early_input = self._early_input or [], None
        for event in early:
            if isinstance(event, events.Paste):
                self.post_message(events.Paste(event.text))
            else:
                self.post_message(events.Key(event.key, event.character))

    def _signalled(self, code: int) -> None:
        """SIGTERM, SIGHUP or SIGINT: end the reply in flight (it is saved as cancelled), then
        leave the way a quit does, so the terminal gets its screen, cursor and mouse back."""
        if not self._quitting:
            self._quitting = True
            self.run_worker(self._quit(code), group="quit")

    async def _quit(self, code: int = 0) -> None:
        await self.chat.stop_reply()
        self.exit(return_code=code)

    async def action_quit(self) -> None:
        await self._quit()

    def warn(self, line: str) -> None:
        """A one-line warning (history unavailable, a save that failed) as a notification."""
        notify(self, line, severity="warning", timeout=10)

    def get_driver_class(self) -> type[Driver]:
        driver = super().get_driver_class()
        if driver.__name__ == "LinuxDriver":  # Not imported on Windows, which has no termios.
            from termchat.tui.driver import HangupSafeDriver

            return HangupSafeDriver
        return driver

    def get_default_screen(self) -> ChatScreen:
        return self.chat

    async def on_unmount(self) -> None:
        if self.tools is not None:
            # Every server stopped and gone before termchat is (bounded: CLOSE_TIMEOUT).
            await self.tools.aclose()
        await self.chat.conversation.aclose()
        if self.history is not None:
            self.history.close()


def run_tui(config: Config, model: ModelConfig, *, history: HistoryStore | None = None,
            conversation: Conversation | None = None, history_enabled: bool = True,
            demo: str | None = None, tools: bool = True, yes: bool = False,
            allow_tools: tuple[str, ...] = ()) -> int:
    """Run the app; with no store given, the default one opens after the first frame. `demo`
    (how to set up a real model) says the model is the built-in demo server. `tools` false
    (`--no-tools`) starts no MCP server; `yes` and `allow_tools` pre-approve calls."""
    app = TermchatApp(config, model, conversation=conversation, history=history,
                      open_history=history is None and history_enabled, demo=demo,
                      tools=tools, yes=yes, allow_tools=allow_tools)
    app.run()
    return app.return_code or 0
