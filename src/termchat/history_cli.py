"""`--list`, `--show`, `--search` and `--export`: stored conversations on stdout.

Piped, the output is plain and exact: tab-separated rows for lists (id, date, ...; no
header), the stored text as it is for a conversation (tool calls and attachments on lines
of their own, in brackets). On a terminal, lists are Rich tables,
replies are rendered as Markdown, and escape sequences in stored text are removed. Reading
never creates the database.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, TYPE_CHECKING

from termchat.content import Attachment
from termchat.content import Text as TextPart
from termchat.errors import EXIT_BROKEN_PIPE, silence
from termchat.history import (
    ConversationNotFound,
    HistoryError,
    HistoryStore,
    HistoryUnavailable,
    StoredConversation,
    StoredMessage,
    as_json,
    as_markdown,
    default_path,
)
from termchat.history.export import ToolUse, alternative, attachment_label, shown_parts
from termchat.history.records import one_line
from termchat.present import MARK, local_time, marked, reply_header
from termchat.untrusted import json_text, safe, safe_line

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

DEFAULT_LIMIT = 50
# A tool call's arguments on its `--show` line (the export has them all).
ARGUMENTS_SHOWN = 300


def run_view(args: argparse.Namespace, view: str) -> int:
    """Print what `view` (`--list`, `--show`, `--search` or `--export`) asks for; the exit
    code. Raises `HistoryError` when the database is unusable or the id unknown."""
    out = sys.stdout
    try:
        _run(args, view, out, tty=out.isatty())
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and nowhere to say it.
        silence(out)
        return EXIT_BROKEN_PIPE
    return 0


def _run(args: argparse.Namespace, view: str, out: IO[str], *, tty: bool) -> None:
    path = default_path()
    if not path.exists():
        if view in ("--show", "--export"):
            raise ConversationNotFound(f"No conversation {args.show or args.export} in the "
                                       f"history: nothing is stored yet ({path}).")
        _note("no conversations are stored yet.")
        return
    try:
        store = HistoryStore.open(path, reading=True)
    except HistoryUnavailable as exc:
        raise HistoryError(f"history: {exc.reason}") from None
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    with store:
        if view == "--list":
            _list(store, limit, out, tty=tty)
        elif view == "--search":
            _search(store, args.search, limit, out, tty=tty)
        elif view == "--show":
            _show(store.get(args.show), out, tty=tty)
        elif args.format == "json":
            tree = store.tree(args.export, blobs=True)
            out.write(json_text(as_json(tree), indent=2) + "\n")
        else:
            markdown = as_markdown(store.get(args.export))
            out.write(safe(markdown) if tty else markdown)


def _list(store: HistoryStore, limit: int, out: IO[str], *, tty: bool) -> None:
    conversations = store.list_conversations(limit=limit)
    if not conversations:
        _note("no conversations are stored yet.")
        return
    if not tty:
        for c in conversations:
            out.write(f"{c.id}\t{local_time(c.updated)}\t{c.model}\t{c.message_count}\t{c.title}\n")
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", justify="right", no_wrap=True)
    table.add_column("Updated", no_wrap=True)
    # A model's id can be a file path: it gives way before the title does.
    table.add_column("Model", no_wrap=True, overflow="ellipsis", max_width=20)
    table.add_column("Msgs", justify="right", no_wrap=True)
    table.add_column("Title", ratio=1, min_width=16, overflow="ellipsis", no_wrap=True)
    for c in conversations:
        # Text, not str: a title like "[bold]" must not be read as Rich markup.
        table.add_row(str(c.id), local_time(c.updated), Text(safe(c.model)),
                      str(c.message_count), Text(safe(c.title)))
    _console(out).print(table)


def _search(store: HistoryStore, text: str, limit: int, out: IO[str], *, tty: bool) -> None:
    hits = store.search(text, limit, highlight=MARK if tty else ("", ""))
    if not hits:
        _note(f"no messages match {text!r}.")
        return
    if not tty:
        for hit in hits:
            out.write(f"{hit.conversation_id}\t{local_time(hit.created)}\t{hit.role}\t{hit.title}\t"
                      f"{hit.snippet}\n")
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", justify="right", no_wrap=True)
    table.add_column("Date", no_wrap=True)
    table.add_column("Role", no_wrap=True)
    table.add_column("Title")
    table.add_column("Match")
    for hit in hits:
        table.add_row(str(hit.conversation_id), local_time(hit.created), hit.role,
                      Text(safe(hit.title)), _highlighted(hit.snippet))
    _console(out).print(table)


def _highlighted(snippet: str) -> Text:
    from rich.text import Text

    text = Text()
    for part, matched in marked(snippet):
        text.append(safe(part), style="bold reverse" if matched else None)
    return text


def _show(stored: StoredConversation, out: IO[str], *, tty: bool) -> None:
    """The active path, one headed block per message: its text, attachments and tool calls in
    order; a reply's header says how it ended, and a message with alternatives says so."""
    head = (f"model {stored.model} · started {local_time(stored.created)} · updated "
            f"{local_time(stored.updated)} · {len(stored.messages)} messages")
    if not tty:
        out.write(f"Conversation {stored.id}: {stored.title}\n{head}\n")
        for message in stored.messages:
            body = "\n".join(_plain(part) for part in shown_parts(message))
            out.write(f"\n--- {_describe(message)}\n{body}\n")
        return
    from rich.text import Text

    from termchat.markdown_lines import full_markdown

    console = _console(out)
    console.print(Text(f"Conversation {stored.id}: {safe(stored.title)}", style="bold"))
    console.print(Text(safe(head), style="dim"))
    for message in stored.messages:
        console.print()
        style = "bold cyan" if message.role == "user" else "bold magenta"
        if message.status not in ("complete", "streaming"):
            style = "bold yellow"
        console.print(Text(f"─── {safe(_describe(message))}", style=style))
        shown = shown_parts(message)
        if not shown:
            console.print(Text("(no text)", style="dim"))
        for part in shown:
            if not isinstance(part, TextPart):
                console.print(Text(safe(_plain(part)), style="dim"))
            elif message.role == "assistant" and part.text.strip():
                console.print(full_markdown(safe(part.text)))
            else:
                console.print(Text(safe(part.text)))


def _plain(part: TextPart | Attachment | ToolUse) -> str:
    """A part as `--show` prints it: text as it is, an attachment or a tool call in
    brackets (a call's result indented below it)."""
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, Attachment):
        return f"[attached {attachment_label(part)}]"
    line = f"[tool {part.name} {one_line(part.arguments, ARGUMENTS_SHOWN)} → {part.outcome}]"
    return "\n".join([line, *("  " + row for row in part.result.splitlines())])


def _describe(message: StoredMessage) -> str:
    """A message's header: `user`, or how the reply ended (see `present.reply_header`), and
    `(alternative 2 of 3)` when it has alternatives."""
    header = "user" if message.role == "user" else reply_header(message.to_reply())
    other = alternative(message.siblings)
    return f"{header} ({other})" if other else header


def _note(line: str) -> None:
    """A friendly line on stderr, keeping stdout empty for scripts."""
    print(safe_line(f"termchat: {line}"), file=sys.stderr)


def _console(out: IO[str]) -> Console:
    from rich.console import Console

    return Console(file=out, highlight=False)
