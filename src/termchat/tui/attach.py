"""Files handed to the model from the TUI: the attach dialog with path completion, the chips
above the prompt (removable until the prompt is sent), `@path` mentions gathered on send,
and the line under a sent prompt that names what went with it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.style import Style
from textual.widget import Widget
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from termchat import attachments as files
from termchat.content import Attachment
from termchat.errors import BadRequestError, TermchatError
from termchat.tui.notices import notify
from termchat.untrusted import Safe, safe, safe_line

# The chip row and the dialog's list show at most this many candidates.
SHOWN_CANDIDATES = 12


def label(attachment: Attachment) -> Safe:
    """`notes.md · text · 2.1 KB`: the name made safe to show."""
    return safe_line(files.describe(attachment))


def insertable(path: str) -> bool:
    """A path that can be typed into an input as it is: a name holding controls or bidi
    characters would be shown changed (or drive the terminal), so it is picked from a list,
    never inserted."""
    return "\n" not in path and safe(path) == path


def load_checked(path: str, provider: str, cwd: Path) -> Attachment:
    """The file at `path` (relative to `cwd`, `~` expanded), named as typed, checked against
    `provider`'s limits; `files.AttachmentError` says in one sentence why not."""
    target = Path(path).expanduser()
    if not target.is_absolute():
        target = cwd / target
    attachment = files.load(target, name=path)
    files.check(attachment, provider)
    return attachment


def rejected(error: TermchatError, attachments: Sequence[Attachment], model: str) -> str | None:
    """A server's refusal of a prompt's images or PDFs in one sentence that names them and
    says what to do here; None for any other error."""
    if not attachments or not isinstance(error, BadRequestError):
        return None
    refused = files.rejection(error.message, attachments)
    if refused is None:
        return None
    kinds = refused.kinds
    return (f"{refused.host} rejected the request with {refused.names} attached "
            f"({refused.status}: {refused.message}); {safe_line(model)} there may not take "
            f"{kinds}: remove {'it' if len(refused.named) == 1 else 'them'} (Shift+Tab, then "
            f"Delete) and send again, or switch to a model that takes {kinds}.")


# -- completion ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Completion:
    """What Tab makes of a path being typed: `final` when it names a file (nothing more to
    type), not a directory or a prefix shared by several; `cycling` while Tab goes through
    several candidates in turn."""

    path: str
    final: bool
    cycling: bool = False


class Completer:
    """Shell-like Tab completion of a path: the longest prefix the candidates share, then,
    pressed again, each candidate in turn."""

    def __init__(self) -> None:
        self._cycle: list[str] = []

    def next(self, typed: str, cwd: Path) -> Completion | None:
        if typed in self._cycle:
            options = self._cycle
            chosen = options[(options.index(typed) + 1) % len(options)]
            return Completion(chosen, not chosen.endswith("/"), cycling=True)
        self._cycle = []
        options = [c for c in files.complete(typed, cwd) if insertable(c)]
        if not options:
            return None
        if len(options) == 1:
            return Completion(options[0], not options[0].endswith("/"))
        common = _shared_prefix(options)
        if len(common) > len(typed):
            return Completion(common, False)
        self._cycle = options
        return Completion(options[0], not options[0].endswith("/"), cycling=True)


def _shared_prefix(texts: Sequence[str]) -> str:
    """The characters every one of `texts` starts with (a name's prefix, not whole path
    components: `no` for `notes.md` and `novel/`)."""
    first, last = min(texts), max(texts)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def mention_text(completion: Completion) -> str:
    """The `@path` for a completion. Until it names a file, typing goes on inside it: a
    quoted path is left open, and a bare one may end in a dot (`@notes.`), which only a
    finished mention leaves out."""
    path = completion.path
    if not completion.final and not any(c.isspace() or c == '"' for c in path):
        return f"@{path}"
    text = files.mention(path)
    return text[:-1] if not completion.final and text.endswith('"') else text


def candidates_line(typed: str, candidates: Sequence[str]) -> Content:
    """The hint above the prompt while an `@path` is typed."""
    if not candidates:
        return Content.styled(f"@{safe_line(typed)}: no such file or directory here", "dim")
    shown = [safe_line(c) for c in candidates[:SHOWN_CANDIDATES]]
    more = len(candidates) - len(shown)
    tail = f"  (+{more})" if more > 0 else ""
    return Content.assemble(("Tab ", "bold"), ("  ".join(shown) + tail, "dim"))


class CompletionLine(Static):
    """The paths an `@mention` being typed can complete to (hidden otherwise)."""

    DEFAULT_CSS = """
    CompletionLine {
        height: 1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.display = False

    def show(self, content: Content | None) -> None:
        self.display = content is not None
        if content is not None:
            self.update(content)


# -- chips -----------------------------------------------------------------------------------

class Chips(Static, can_focus=True):
    """The files attached to the prompt being written, one chip each (name · kind · size ✕).
    A click on a chip removes it; focused (Shift+Tab from the prompt), ←/→ pick one and
    Delete or Backspace removes it."""

    DEFAULT_CSS = """
    Chips {
        height: auto;
        padding: 0 1;
        &:focus {
            background: $boost;
        }
    }
    """

    BINDINGS = [
        Binding("left", "pick(-1)", "Previous", show=False),
        Binding("right", "pick(1)", "Next", show=False),
        Binding("delete,backspace", "remove_picked", "Remove file"),
        Binding("escape,enter", "app.focus('prompt')", "Back to the prompt", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._files: list[Attachment] = []
        self._picked = 0
        # Taken by a send: given back if the prompt comes back (the request failed).
        self._sent: tuple[Attachment, ...] = ()
        self.display = False

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        return tuple(self._files)

    def add(self, attachment: Attachment) -> bool:
        """Attach `attachment`, unless the same file under the same name already is."""
        if any((a.digest, a.name) == (attachment.digest, attachment.name)
               for a in self._files):
            return False
        self._files.append(attachment)
        self._picked = len(self._files) - 1
        self._redraw()
        return True

    def take(self) -> tuple[Attachment, ...]:
        """The attachments, for a prompt being sent: the chips go."""
        self._sent, self._files = tuple(self._files), []
        self._redraw()
        return self._sent

    def give_back(self) -> None:
        """The prompt came back to the input: so do its chips."""
        for attachment in self._sent:
            self.add(attachment)
        self._sent = ()

    def action_remove(self, index: int) -> None:
        if 0 <= index < len(self._files):
            removed = self._files.pop(index)
            self._picked = min(self._picked, max(len(self._files) - 1, 0))
            if not self._files and self.has_focus:
                self.screen.focus_next()  # the prompt, below
            self._redraw()
            notify(self, f"Removed {removed.name}; it will not be sent.", timeout=3)

    def action_remove_picked(self) -> None:
        self.action_remove(self._picked)

    def action_pick(self, step: int) -> None:
        if self._files:
            self._picked = (self._picked + step) % len(self._files)
            self._redraw()

    def on_focus(self) -> None:
        self._redraw()

    def on_blur(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        self.display = bool(self._files)
        pieces: list[Content] = []
        for index, attachment in enumerate(self._files):
            # No-break spaces: a chip wraps to the next line whole, never in its middle.
            text = f" {label(attachment)} ✕ ".replace(" ", "\xa0")
            style = "reverse" if self.has_focus and index == self._picked else "on $panel"
            chip = Content.styled(text, style).stylize(Style.from_meta(
                {"@click": f"remove({index})"}))
            pieces += [chip, Content(" ")]
        self.update(Content.assemble(*pieces))


class AttachmentTray(Vertical):
    """Above the prompt: the `@path` completions while one is typed, and the chips."""

    DEFAULT_CSS = """
    AttachmentTray {
        height: auto;
        /* The blank line above the prompt: the chips sit right on top of it. */
        margin: 1 1 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # The prompt last told of `@path`s that are not files: sent again, it goes as it is.
        self._told_missing: str | None = None

    def compose(self) -> ComposeResult:
        yield CompletionLine(id="completions")
        yield Chips(id="chips")

    @property
    def chips(self) -> Chips:
        return self.query_one(Chips)

    async def gather(self, prompt: str, provider: str, earlier: Sequence[Attachment],
                     cwd: Path) -> tuple[Attachment, ...] | None:
        """What a prompt sends: the chips, then each file it mentions as `@path`, loaded and
        checked with the conversation's earlier attachments against `provider`'s limits.
        None when something is refused (said in one notification; nothing is sent). A
        mentioned path where nothing exists may be an address, not a file: that is said
        once, and the same prompt sent again goes without it."""
        chosen = list(self.chips.attachments)
        missing: list[str] = []
        for path in dict.fromkeys(path for _, _, path in files.find_mentions(prompt)):
            target = Path(path).expanduser()
            target = target if target.is_absolute() else cwd / target
            if not target.exists() and not target.is_symlink():
                missing.append(path)
                continue
            try:
                attachment = await asyncio.to_thread(load_checked, path, provider, cwd)
            except files.AttachmentError as exc:
                notify(self, exc.message, title="Not sent", severity="error", timeout=8)
                return None
            if all(a.digest != attachment.digest for a in chosen):
                chosen.append(attachment)
        if missing and prompt != self._told_missing:
            self._told_missing = prompt
            names = ", ".join(f"@{p}" for p in missing)
            notify(self, f"Nothing to attach at {names}: no such file. Press Enter again to "
                   "send the prompt as it is.", title="Not sent", severity="warning",
                   timeout=8)
            return None
        try:
            files.check_request([*earlier, *chosen], provider)
        except files.AttachmentError as exc:
            notify(self, exc.message, title="Not sent", severity="error", timeout=8)
            return None
        self._told_missing = None
        return tuple(chosen)


# -- on a sent prompt ------------------------------------------------------------------------

class AttachedFiles(Static):
    """Under a sent prompt: the files that went with it, one line each."""

    DEFAULT_CSS = """
    AttachedFiles {
        padding: 0 1;
        background: $boost;
        border-left: outer $primary;
        color: $text-muted;
    }
    """

    def __init__(self, lines: Sequence[Safe]) -> None:
        super().__init__(Content("\n".join(f"+ {line}" for line in lines)), classes="attached")
        self._lines = tuple(lines)

    def clone(self) -> AttachedFiles:
        return AttachedFiles(self._lines)


def sent_with(attachments: Sequence[Attachment]) -> list[Widget]:
    """The widgets that show a sent prompt's attachments (none without any)."""
    return [AttachedFiles([label(a) for a in attachments])] if attachments else []


# -- the attach dialog -----------------------------------------------------------------------

class PathInput(Input):
    """The dialog's path, where Tab completes instead of moving the focus."""

    BINDINGS = [Binding("tab", "screen.complete", "Complete", show=False, priority=True),
                Binding("down", "screen.focus_candidates", "Candidates", show=False)]


class AttachScreen(ModalScreen[Attachment | None]):
    """Type (Tab completes) or pick a path; Enter attaches it once it is loaded and checked.
    A refusal is one notification and the dialog stays, to fix the path."""

    DEFAULT_CSS = """
    AttachScreen {
        align: center middle;
    }
    #attach-dialog {
        width: 80;
        max-width: 100%;
        height: auto;
        padding: 1 2;
        border: round $primary;
        background: $surface;
    }
    #attach-candidates {
        height: auto;
        max-height: 12;
        border: none;
        padding: 0;
    }
    #attach-hint {
        color: $text-muted;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, provider: str, cwd: Path, *, cursor_blink: bool = True) -> None:
        super().__init__()
        self._provider = provider
        self._cwd = cwd
        self._cursor_blink = cursor_blink
        self._completer = Completer()
        self._candidates: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="attach-dialog"):
            yield Label(Content.styled(f"Attach a file (from {safe_line(str(self._cwd))})",
                                       "bold"))
            path = PathInput(placeholder="path: text, PNG, JPEG, GIF, WebP or PDF",
                             id="attach-path")
            path.cursor_blink = self._cursor_blink
            yield path
            yield OptionList(id="attach-candidates")
            yield Label("Tab completes · ↓ picks from the list · Enter attaches · Escape "
                        "cancels", id="attach-hint")

    def on_mount(self) -> None:
        self._show_candidates("")

    @on(Input.Changed, "#attach-path")
    def _typed(self, event: Input.Changed) -> None:
        self._show_candidates(event.value)

    def _show_candidates(self, typed: str) -> None:
        self._candidates = files.complete(typed, self._cwd)
        options = self.query_one("#attach-candidates", OptionList)
        options.set_options(Option(Content(safe_line(c)), id=str(i))
                            for i, c in enumerate(self._candidates))
        options.display = bool(self._candidates)

    def action_complete(self) -> None:
        path = self.query_one(PathInput)
        completion = self._completer.next(path.value, self._cwd)
        if completion is not None:
            path.value = completion.path
            path.cursor_position = len(path.value)

    def action_focus_candidates(self) -> None:
        options = self.query_one("#attach-candidates", OptionList)
        if self._candidates:
            options.focus()
            options.highlighted = 0

    @on(OptionList.OptionSelected, "#attach-candidates")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        chosen = self._candidates[int(event.option.id or 0)]
        if chosen.endswith("/") and insertable(chosen):
            path = self.query_one(PathInput)
            path.value = chosen
            path.cursor_position = len(chosen)
            path.focus()
        else:
            self._try_attach(chosen)

    @on(Input.Submitted, "#attach-path")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self._try_attach(event.value)

    @work(exclusive=True, group="attach")
    async def _try_attach(self, path: str) -> None:
        try:
            attachment = await asyncio.to_thread(load_checked, path, self._provider, self._cwd)
        except files.AttachmentError as exc:
            notify(self, exc.message, title="Not attached", severity="error", timeout=8)
            return
        self.dismiss(attachment)

    def action_cancel(self) -> None:
        self.dismiss(None)
