"""The history screen: browse, search, open, rename and delete stored conversations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from termchat.attachments import human_size
from termchat.history import (
    ConversationSummary,
    HistoryError,
    HistoryStore,
    SearchHit,
    StoredConversation,
)
from termchat.present import MARK, local_time, marked, plural
from termchat.tui.keybar import KeyBar
from termchat.tui.notices import notify
from termchat.untrusted import safe, safe_line

# The list loads a page at a time: with 10,000 conversations, loading them all made the screen
# take 1.3 s to open instead of 0.7 s (2-core machine), and it grows with the history.
PAGE = 200
SEARCH_HITS = 500
# Typing pauses shorter than this are one search: each search can take ~50 ms.
DEBOUNCE = 0.15
# Costs are filled in this long after a list is shown (or typing stops).
PRICE_DELAY = 0.3
# Holding an arrow key moves the highlight faster than a conversation loads.
PREVIEW_DELAY = 0.05
PREVIEW_MESSAGES = 30
PREVIEW_CHARS = 600


# A stored conversation's cost: for the list (None: nothing of it known) and the preview.
StoredCost = Callable[[StoredConversation], tuple[str | None, str]]


@dataclass
class _Entry:
    """One conversation in the list: its title and the dim line under it."""

    id: int
    title: str
    detail: Content
    summary: ConversationSummary | None = None
    priced: bool = False

    def prompt(self) -> Content:
        return Content.assemble((self.title, "bold"), "\n", self.detail)


class SearchInput(Input):
    """The search box, from which Down moves on to the list."""

    BINDINGS = [Binding("down", "screen.focus_list", "List", key_display="↓")]


class HistoryScreen(Screen[int | None]):
    """Saved conversations, newest first, with a search box and a preview. Dismissed with the
    id of the conversation to open, or None; a deletion is told with `Deleted`."""

    @dataclass
    class Deleted(Message):
        """Conversation `cid` was deleted (the chat on screen may be recording into it)."""

        cid: int

    DEFAULT_CSS = """
    HistoryScreen {
        layout: vertical;
    }
    #history-search {
        margin: 0 1;
        border-title-color: $text-muted;
        &:focus {
            border-title-color: $border;
        }
    }
    #history-body {
        height: 1fr;
    }
    #history-list {
        width: 3fr;
        height: 1fr;
        max-height: 100%;
        margin: 0 0 0 1;
        border: round $foreground 25%;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        &:focus {
            border: round $border;
        }
    }
    #history-preview {
        width: 2fr;
        margin: 0 1;
        padding: 0 1;
        border: round $foreground 25%;
        border-title-color: $text-muted;
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    """

    BINDINGS = [
        Binding("escape", "close", "Close"),
        # Priority, so Enter opens whether the search box or the list has the focus.
        Binding("enter", "open", "Open", priority=True),
        Binding("r,f2", "rename", "Rename", key_display="r"),
        Binding("d,delete", "delete", "Delete", key_display="d"),
        Binding("slash", "focus_search", "Search", key_display="/"),
    ]

    def __init__(self, store: HistoryStore, *, open_id: int | None = None,
                 cursor_blink: bool = True, cost: StoredCost | None = None) -> None:
        """`open_id` is the conversation the chat screen shows (deleting it is told);
        `cost` prices a stored conversation (in a thread), for the list and the preview."""
        super().__init__()
        self.store = store
        self.open_id = open_id
        self._cost = cost
        self._cursor_blink = cursor_blink
        self._entries: dict[int, _Entry] = {}
        self._query = ""
        self._more = False
        self._loading_more = False

    def compose(self) -> ComposeResult:
        search = SearchInput(placeholder="Search every prompt and reply…", id="history-search")
        search.border_title = "History"
        search.cursor_blink = self._cursor_blink
        yield search
        with Horizontal(id="history-body"):
            option_list = OptionList(id="history-list")
            option_list.border_title = "Conversations"
            yield option_list
            with VerticalScroll(id="history-preview") as preview:
                preview.border_title = "Preview"
                yield Static(id="history-preview-text")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#history-search", Input).focus()
        self.watch(self._list, "scroll_y", self._scrolled, init=False)
        self._show("")

    @property
    def _list(self) -> OptionList:
        return self.query_one("#history-list", OptionList)

    def _highlighted(self) -> _Entry | None:
        option = self._list.highlighted_option
        return None if option is None or option.id is None else self._entries[int(option.id)]

    # -- the list -------------------------------------------------------------------------

    @on(Input.Changed, "#history-search")
    def _search_changed(self, event: Input.Changed) -> None:
        # The costs and preview of a list about to change are not worked out meanwhile: what
        # is typed goes first (a long conversation's preview took 40-60 ms to lay out).
        self.workers.cancel_group(self, "costs")
        self.workers.cancel_group(self, "preview")
        self._show(event.value, DEBOUNCE)

    @work(group="list", exclusive=True)
    async def _show(self, query: str, delay: float = 0.0) -> None:
        """Fill the list with the newest conversations, or with those matching `query`.

        The exclusive group cancels a search still waiting out its delay, so a burst of
        keystrokes runs one query.
        """
        await asyncio.sleep(delay)
        query = query.strip()
        hits: list[SearchHit] = []
        try:
            if query:
                hits = await asyncio.to_thread(self.store.search, query, SEARCH_HITS,
                                               highlight=MARK)
                # Titles too: a renamed conversation is found by the name the user gave it.
                titled = await asyncio.to_thread(self.store.list_conversations, PAGE, 0, query)
                entries = _search_entries(hits, titled)
                more = False
            else:
                summaries = await asyncio.to_thread(self.store.list_conversations, PAGE + 1)
                entries = [_summary_entry(s) for s in summaries[:PAGE]]
                more = len(summaries) > PAGE
        except HistoryError as exc:
            notify(self, exc.message, severity="error")
            return
        self._query, self._more = query, more
        self._entries = {entry.id: entry for entry in entries}
        option_list = self._list
        option_list.set_options(Option(entry.prompt(), id=str(entry.id)) for entry in entries)
        option_list.highlighted = 0 if entries else None
        if not entries:
            self._show_preview(None)
        self._update_note(len(hits))
        self.refresh_bindings()
        self._price_list()

    def _scrolled(self) -> None:
        option_list = self._list
        if option_list.scroll_y >= option_list.max_scroll_y - option_list.size.height:
            self._load_more()

    @on(OptionList.OptionHighlighted, "#history-list")
    def _highlight_changed(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is not None:
            self._preview(int(event.option.id))
        if event.option_index >= self._list.option_count - 10:
            self._load_more()
        self.refresh_bindings()

    def _load_more(self) -> None:
        search = self.query_one("#history-search", Input).value.strip()
        if self._more and not self._loading_more and not self._query and not search:
            self._loading_more = True
            self._next_page()

    @work(group="list", exclusive=True)
    async def _next_page(self) -> None:
        try:
            summaries = await asyncio.to_thread(self.store.list_conversations, PAGE + 1,
                                                len(self._entries))
        except HistoryError as exc:
            notify(self, exc.message, severity="error")
            return
        finally:
            self._loading_more = False
        # Another termchat may have added conversations meanwhile, shifting the offset.
        entries = [_summary_entry(s) for s in summaries[:PAGE] if s.id not in self._entries]
        self._more = len(summaries) > PAGE
        self._entries.update((entry.id, entry) for entry in entries)
        self._list.add_options(Option(entry.prompt(), id=str(entry.id)) for entry in entries)
        self._update_note(0)
        self._price_list()

    @work(group="costs", exclusive=True)
    async def _price_list(self) -> None:
        """Each listed conversation's cost, from its messages' stored token counts, filled in
        from the top while the list is open (off the event loop, one at a time)."""
        if self._cost is None:
            return
        # Not in the moment the list appears, when the next key is likeliest.
        await asyncio.sleep(PRICE_DELAY)
        for entry in list(self._entries.values()):
            summary = entry.summary
            if summary is None or entry.priced:
                continue
            try:
                stored = await asyncio.to_thread(self.store.get, entry.id)
            except HistoryError:
                continue
            listed, _ = await asyncio.to_thread(self._cost, stored)
            if self._entries.get(entry.id) is not entry:
                continue
            entry.priced = True
            if listed is not None:
                entry.detail = _summary_detail(summary, listed)
                self._list.replace_option_prompt(str(entry.id), entry.prompt())

    def _update_note(self, hits: int) -> None:
        count = len(self._entries)
        if self._query:
            text = (f"{plural(count, 'conversation')} match “{self._query}”" if count
                    else f"No conversation matches “{self._query}”")
            if hits >= SEARCH_HITS:
                text += f" (in the best {SEARCH_HITS} messages)"
        elif not count:
            text = "No conversations yet: chats are saved as you go."
        else:
            text = plural(count, "conversation") + (", more as you scroll" if self._more else "")
        self._list.border_subtitle = text

    # -- the preview ----------------------------------------------------------------------

    @work(group="preview", exclusive=True)
    async def _preview(self, cid: int) -> None:
        await asyncio.sleep(PREVIEW_DELAY)
        try:
            stored = await asyncio.to_thread(self.store.get, cid)
        except HistoryError as exc:
            self._show_preview(Content(exc.message))
            return
        cost = (await asyncio.to_thread(self._cost, stored))[1] if self._cost else ""
        self._show_preview(_preview(stored, cost))

    def _show_preview(self, content: Content | None) -> None:
        self.query_one("#history-preview-text", Static).update(content or "")
        self.query_one("#history-preview", VerticalScroll).scroll_home(animate=False)

    # -- actions --------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        typing = isinstance(self.focused, Input)
        if action in ("rename", "delete"):
            # r and d are letters to type while the search box has the focus.
            if typing:
                return False
            return self._list.highlighted_option is not None or None
        if action == "focus_search":
            return not typing
        if action == "open":
            return self._list.highlighted_option is not None or None
        return True

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()

    def action_close(self) -> None:
        self.dismiss()

    def action_focus_list(self) -> None:
        self._list.focus()

    def action_focus_search(self) -> None:
        self.query_one("#history-search", Input).focus()

    @on(OptionList.OptionSelected, "#history-list")
    def _clicked(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        entry = self._highlighted()
        if entry is not None:
            self.dismiss(entry.id)

    def action_rename(self) -> None:
        entry = self._highlighted()
        if entry is None:
            return

        def rename(title: str | None) -> None:
            if title is None:
                return
            try:
                self.store.rename(entry.id, title)
            except HistoryError as exc:
                notify(self, exc.message, severity="error")
                return
            # As the store normalises it: one line, runs of spaces squeezed.
            entry.title = " ".join(title.split())
            self._list.replace_option_prompt(str(entry.id), entry.prompt())
            self._preview(entry.id)

        self.app.push_screen(RenameScreen(entry.title, cursor_blink=self._cursor_blink), rename)

    def action_delete(self) -> None:
        entry = self._highlighted()
        if entry is None:
            return

        def delete(confirmed: bool | None) -> None:
            if not confirmed:
                return
            try:
                self.store.delete(entry.id)
            except HistoryError as exc:
                notify(self, exc.message, severity="error")
                return
            self.post_message(self.Deleted(entry.id))
            del self._entries[entry.id]
            option_list = self._list
            option_list.remove_option(str(entry.id))
            # Removing keeps the index, and an unchanged index posts no highlight message.
            following = option_list.highlighted_option
            self._show_preview(None)
            if following is not None and following.id is not None:
                self._preview(int(following.id))
            self._update_note(0)
            self.refresh_bindings()
            also = " The chat on screen goes on as a new conversation." \
                if entry.id == self.open_id else ""
            notify(self, f"Deleted “{entry.title}”.{also}")

        self.app.push_screen(ConfirmScreen(f"Delete “{entry.title}”?",
                                           "Its messages are removed for good."), delete)


class RenameScreen(ModalScreen[str | None]):
    """A one-line dialog for a conversation's new title."""

    DEFAULT_CSS = """
    RenameScreen {
        align: center middle;
    }
    #rename-dialog {
        width: 70;
        height: auto;
        padding: 1 2;
        border: round $primary;
        background: $surface;
    }
    #rename-hint {
        color: $text-muted;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, *, cursor_blink: bool = True) -> None:
        super().__init__()
        self._title = title
        self._cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        with Vertical(id="rename-dialog"):
            yield Label("Rename conversation")
            rename = Input(self._title, id="rename-input")
            rename.cursor_blink = self._cursor_blink
            yield rename
            yield Label("Enter saves · Escape cancels", id="rename-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; anything but y keeps things as they are."""

    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
    }
    #confirm-dialog {
        width: auto;
        max-width: 80;
        height: auto;
        padding: 1 2;
        border: round $error;
        background: $surface;
    }
    #confirm-hint {
        color: $text-muted;
    }
    """

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, detail: str) -> None:
        super().__init__()
        self._question = question
        self._detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Label(Content.styled(self._question, "bold"))
            yield Label(self._detail)
            yield Label("y deletes · n or Escape keeps it", id="confirm-hint")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


# -- rendering ------------------------------------------------------------------------------

def _summary_entry(summary: ConversationSummary) -> _Entry:
    return _Entry(summary.id, safe_line(summary.title), _summary_detail(summary), summary)


def _summary_detail(summary: ConversationSummary, cost: str | None = None) -> Content:
    # The model last: an id can be a long path, and the line is cut at the list's edge.
    priced = f"{cost} · " if cost else ""
    detail = (f"{plural(summary.message_count, 'message')} · {local_time(summary.updated)} · "
              f"{priced}{safe_line(summary.model)}")
    return Content.styled(detail, "dim")


def _search_entries(hits: list[SearchHit], titled: list[ConversationSummary]) -> list[_Entry]:
    """One entry per conversation, in the order of its best hit, then title-only matches."""
    groups: dict[int, list[SearchHit]] = {}
    for hit in hits:
        groups.setdefault(hit.conversation_id, []).append(hit)
    entries = [_Entry(cid, safe_line(group[0].title), _hit_detail(group))
               for cid, group in groups.items()]
    entries += [_summary_entry(s) for s in titled if s.id not in groups]
    return entries


def _hit_detail(group: list[SearchHit]) -> Content:
    best = group[0]
    who = "you" if best.role == "user" else "reply"
    prefix = Content.styled(f"{plural(len(group), 'match', 'matches')} · {who}: ", "dim")
    return prefix + _marked(best.snippet)


def _marked(snippet: str) -> Content:
    """A snippet with its matched words highlighted."""
    return Content.assemble(*((safe(text), "bold $accent") if matched else safe(text)
                              for text, matched in marked(snippet)))


def _preview(stored: StoredConversation, cost: str = "") -> Content:
    """The conversation's title, facts (its cost, when priced) and (last) messages, each
    shortened."""
    messages = stored.messages[-PREVIEW_MESSAGES:]
    priced = f" · {cost}" if cost else ""
    parts: list[Content | str | tuple[str, str]] = [
        (safe_line(stored.title), "bold"), "\n",
        (f"#{stored.id} · {safe_line(stored.model)} · started {local_time(stored.created)}"
         f"{priced}", "dim"),
        "\n",
    ]
    if len(stored.messages) > len(messages):
        parts += [(f"\n… {plural(len(stored.messages) - len(messages), 'earlier message')}",
                   "dim italic"), "\n"]
    for message in messages:
        if message.role == "user":
            parts += ["\n", ("You", "bold $text-primary"), "\n"]
        else:
            label = f"Assistant · {message.provider}:{message.model}"
            if message.status != "complete":
                label += f" · {message.status}"
            label = safe_line(label)
            parts += ["\n", (label, "bold $text-accent"), "\n"]
        for attachment in message.attachments:
            parts += [(safe_line(f"+ {attachment.name} · {human_size(attachment.size)} · "
                                 f"{attachment.media_type}"), "dim"), "\n"]
        text = safe(message.text).strip()
        if len(text) > PREVIEW_CHARS:
            text = text[:PREVIEW_CHARS - 1].rstrip() + "…"
        parts.append(text if text else ("(no text)", "dim italic"))
        parts.append("\n")
    return Content.assemble(*parts)
