"""Command line: parse arguments, load config, and hand off to the TUI or the one-shot filter."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from termchat import __version__
from termchat.config import Config, ModelConfig, NotConfiguredError, config_path, load_config
from termchat.errors import EXIT_INTERRUPTED, TermchatError, UsageError
from termchat.untrusted import safe, safe_line

if TYPE_CHECKING:
    from termchat.history import HistoryStore
    from termchat.tools.box import ServerStatus
    from termchat.turn import Conversation

EXAMPLES = """\
examples:
  termchat                                   open the chat TUI
  termchat "why is the sky blue?"            one reply, streamed to stdout
  echo "2+2?" | termchat                     the prompt from stdin
  cat app.py | termchat "explain this"       argument, a blank line, then stdin
  termchat -m anthropic:claude-sonnet-5-5 -s "be terse" "hi"
  termchat -u --max-tokens 50 "write a poem"  usage line on stderr
  termchat --json "hi" | jq .usage
  termchat -a photo.png -a notes.md "compare"  attach files (images, PDFs, text)
  cat f.py | termchat -a screenshot.png "why does this fail?"
  termchat -a - "describe it" < photo.png    stdin as a file (-a -)
  termchat --tools                           MCP servers, their state and tools
  termchat --allow-tool time.get_current_time "what time is it in Tokyo?"
  termchat --no-tools "hi"                   no tools, no MCP server started
  termchat -c "and in French?"               continue the last conversation
  termchat --cid 12 "go on"                  continue conversation 12
  termchat -c                                the TUI, on the last conversation
  termchat --list | head                     id, date, model, messages, title
  termchat --search "sky blue"               id, date, role, title, matching words
  termchat --show 12
  termchat --export 12 --format json > chat.json

models: an alias from the config file, or provider:model (openai:gpt-4.1-mini,
anthropic:claude-sonnet-5-5); an OpenAI-compatible server is openai:MODEL with
OPENAI_BASE_URL or base_url in the config.
output: piped, exactly the reply's text (no colour, no reasoning); on a terminal, the
reply rendered as Markdown.
tools: the model may call the tools of the MCP servers in the config ([mcp.NAME]); they
start before the first request and stop before termchat exits. Each call is one line on
stderr; stdout carries only the model's text. A call not pre-approved (allow / trust in the
config, --allow-tool, --yes) is asked about on the terminal (/dev/tty, even when stdin and
stdout are pipes); with no terminal it is denied, and the line says how to allow it.
attachments: -a PATH (repeatable) sends a file with the prompt: text and source files,
PNG/JPEG/GIF/WebP images, PDFs, told apart by their content. A file that is missing,
unreadable, binary of an unknown kind or over the provider's limits is refused before
anything is sent (exit 2).
cost and context: -u and --json give the reply's cost (all tool rounds) from genai-prices'
bundled data or the config's price, "cost unknown" when neither knows it, and the share of
the context window the last request used. A warning says when that passes 80%; a request
whose low estimate is 110% of the window is not sent (exit 2).
history: every prompt and reply is kept in $XDG_DATA_HOME/termchat/history.db, partial
replies included (off for a run with --no-history, always with history = false in the
config). When it cannot be opened, a warning says why and the chat goes on without it,
except with -c or --cid: they need it, and stop with an error (exit 1). -c with nothing
stored yet is a usage error. --list, --show, --search and --export print plain text when
piped (tab-separated rows for --list and --search) and never create the database.
exit codes: 0 ok (a cut-off reply too, with a warning on stderr), 1 provider or network
error, or a history that cannot be read, 2 usage or config error (an unknown conversation
id, a refused attachment, a request too long for the context window too), 129 the
terminal hung up, 130 interrupted (Ctrl+C), 141 stdout was closed (as by | head; the
reply so far is kept), 143 terminated. What arrived is stored in every case.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see termchat --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="termchat",
        description="Chat with large language models in the terminal.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", nargs="*", help="the prompt (stdin is appended when piped)")
    parser.add_argument("-m", "--model", help="a config alias or provider:model")
    parser.add_argument("-s", "--system", help="system prompt for this run")
    parser.add_argument("--max-tokens", type=int, metavar="N", help="cap the reply's length")
    parser.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    parser.add_argument("--no-stream", action="store_true",
                        help="print the reply only when it is complete")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: text, model, finish, usage, timings, "
                        "tool calls, cost, context")
    parser.add_argument("-u", "--usage", action="store_true",
                        help="print finish reason, tokens, timings, context share and cost "
                        "to stderr")
    parser.add_argument("-a", "--attach", action="append", metavar="PATH",
                        help="attach a file (repeatable); - attaches stdin as a file")
    parser.add_argument("--config", metavar="PATH", help="config file (default: "
                        "$XDG_CONFIG_HOME/termchat/config.toml, or $TERMCHAT_CONFIG)")
    parser.add_argument("--demo", action="store_true",
                        help="the chat TUI against the built-in local provider server (no key "
                        "needed, nothing saved); the same opens when no model is configured")
    parser.add_argument("--version", action="version", version=f"termchat {__version__}")
    tools = parser.add_argument_group("tools")
    tools.add_argument("--tools", action="store_true",
                       help="start the MCP servers, list each with its state and tools, "
                       "stop them and exit (1 if one failed to start)")
    tools.add_argument("--no-tools", action="store_true",
                       help="offer the model no tools this run (no MCP server is started)")
    tools.add_argument("--allow-tool", action="append", metavar="NAME",
                       help="run calls of this tool without asking (repeatable): SERVER.TOOL, "
                       "SERVER.* for all of a server's, or TOOL on any server")
    tools.add_argument("-y", "--yes", action="store_true",
                       help="run every tool call without asking")
    history = parser.add_argument_group("history")
    history.add_argument("--no-history", action="store_true", help="store nothing for this run")
    continuing = history.add_mutually_exclusive_group()
    continuing.add_argument("-c", "--continue", dest="continue_", action="store_true",
                            help="continue the most recent conversation (with no prompt on "
                            "a terminal: in the TUI)")
    continuing.add_argument("--cid", metavar="ID", help="continue conversation ID")
    continuing.add_argument("--fork", metavar="ID[:MSG]",
                            help="continue in a new conversation that starts as a copy of "
                            "conversation ID, up to its message MSG (as --show numbers them) "
                            "or all of it; the original is left as it is")
    history.add_argument("--continue-reply", action="store_true",
                         help="with -c or --cid: go on with the last reply from where it "
                         "stopped (cut off or cancelled), in the same reply; takes no prompt")
    views = history.add_mutually_exclusive_group()
    views.add_argument("--list", action="store_true", help="list conversations, newest first")
    views.add_argument("--show", metavar="ID", help="print conversation ID (reasoning is "
                       "left out; --export has it)")
    views.add_argument("--search", metavar="TEXT",
                       help="find prompts and replies containing every word of TEXT "
                       "(word* matches a prefix)")
    views.add_argument("--export", metavar="ID", help="print conversation ID in full, as "
                       "--format says")
    history.add_argument("--limit", type=int, metavar="N",
                         help="at most N rows from --list or --search (default 50)")
    history.add_argument("--format", choices=("markdown", "json"),
                         help="--export format (default markdown)")
    return parser


# Options that only make sense for a reply, refused with --list, --show, --search, --export.
_REPLY_OPTIONS = {
    "demo": "--demo",
    "model": "-m/--model", "system": "-s/--system", "max_tokens": "--max-tokens",
    "temperature": "--temperature", "no_stream": "--no-stream", "json": "--json",
    "usage": "-u/--usage", "no_history": "--no-history", "continue_": "-c/--continue",
    "cid": "--cid", "fork": "--fork", "continue_reply": "--continue-reply",
    "attach": "-a/--attach", "no_tools": "--no-tools",
    "allow_tool": "--allow-tool", "yes": "--yes",
}
# What --tools takes besides --config: whether each tool would run unasked.
_TOOLS_OPTIONS = ("allow_tool", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    """Run termchat with `argv`; with None (the installed command) it is the whole process,
    and a finished one-shot run exits at once (see `_exit_now`)."""
    # No cyclic garbage collection while starting: importing Textual or an SDK and building
    # the first screen allocate hundreds of thousands of objects, and collecting them again
    # and again took 45-90 ms before the first frame. Each front end turns it back on once
    # it is under way, with what was made so far frozen (never scanned again).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), exit_now=argv is None)
    except NotConfiguredError as exc:
        sys.stderr.write(first_run_help(exc))
        return exc.exit_code
    except TermchatError as exc:
        print(safe_line(f"termchat: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if collecting:
            gc.enable()


def _main(argv: list[str], *, exit_now: bool = False) -> int:
    args = build_parser().parse_args(argv)
    view = _check(args)
    if view is not None and view != "--tools":
        from termchat.history_cli import run_view

        return run_view(args, view)
    config = load_config(args.config)
    for warning in config.warnings:
        print(safe_line(f"termchat: {warning}"), file=sys.stderr)
    if view == "--tools":
        return _list_tools(config, args)
    _check_allow_tools(config, args.allow_tool or [])
    history = config.history and not args.no_history
    interactive = (not args.prompt and not args.attach and sys.stdin is not None
                   and sys.stdin.isatty() and sys.stdout.isatty()
                   and not (args.json or args.no_stream))
    store: HistoryStore | None = None
    conversation: Conversation | None = None
    if args.continue_ or args.cid is not None or args.fork is not None:
        store, conversation = _continued(config, args, history=history,
                                         opened=interactive and not args.demo)
    if args.demo and not interactive:
        raise UsageError("--demo opens the chat TUI: run it on a terminal, without a prompt")
    if interactive:
        from termchat.tui.app import run_tui

        allow_tools = tuple(args.allow_tool or ())
        if args.demo:
            return _demo(config)
        if conversation is None:
            try:
                model = resolve(config, args)
            except NotConfiguredError as exc:
                # A first run on a terminal: the main job working, against the local server,
                # with what to set one key away.
                return _demo(config, first_run_help(exc))
            # The app opens the history itself, after its first frame.
            return run_tui(config, model, history_enabled=history, tools=not args.no_tools,
                           yes=args.yes, allow_tools=allow_tools)
        return run_tui(config, conversation.model, conversation=conversation, history=store,
                       tools=not args.no_tools, yes=args.yes, allow_tools=allow_tools)
    if conversation is None:
        from termchat.history import open_or_warn
        from termchat.turn import Conversation

        model = resolve(config, args)
        store = open_or_warn(history, _warn)
        conversation = Conversation(
            model, history=store.new_conversation() if store is not None else None)
    from termchat.oneshot import run_oneshot

    try:
        code = run_oneshot(args, conversation, config.tools)
    finally:
        if store is not None:
            store.close()
    if exit_now:
        _exit_now(code)
    return code


def _demo(config: Config, setup: str | None = None) -> int:
    """The TUI against the built-in local provider server, on a free loopback port of this
    process: labelled a demo, with no history and no file written."""
    from termchat.devserver import ProviderServer, Script
    from termchat.tui.app import run_tui

    with ProviderServer(default=Script(delay=0.02, chunk_size=6)) as server:
        model = ModelConfig(name="demo", provider="openai", model="demo", api_key="demo",
                            base_url=server.openai_base_url, max_retries=0,
                            source="the built-in demo")
        return run_tui(config, model, history_enabled=False, demo=setup or demo_help())


def demo_help() -> str:
    return first_run_help(NotConfiguredError(config_path()))


def _check(args: argparse.Namespace) -> str | None:
    """Refuse option combinations that make no sense; the history view asked for, if any
    (`--list`, `--show`, `--search` or `--export`)."""
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise UsageError("--max-tokens must be above 0")
    if args.temperature is not None and not 0 <= args.temperature <= 2:
        raise UsageError("--temperature must be from 0 to 2")
    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit must be above 0")
    if args.continue_reply:
        if not (args.continue_ or args.cid is not None):
            raise UsageError("--continue-reply goes on with a stored reply: give -c (the last "
                             "conversation) or --cid ID")
        if args.prompt or args.attach:
            raise UsageError("--continue-reply takes no prompt or attachment: it asks the "
                             "model to go on where the reply stopped")
    view = next((f"--{name}" for name in ("list", "show", "search", "export")
                 if _given(getattr(args, name))), None)
    if args.tools:
        if view is not None:
            raise UsageError(f"--tools cannot be combined with {view}")
        view = "--tools"
    if args.limit is not None and view not in ("--list", "--search"):
        raise UsageError("--limit goes with --list or --search")
    if args.format is not None and view != "--export":
        raise UsageError("--format goes with --export")
    if view is None:
        return None
    if args.prompt:
        hint = "; quote the words to search for" if view == "--search" else ""
        raise UsageError(f"{view} takes no prompt (got {' '.join(args.prompt)!r}){hint}")
    for name, option in _REPLY_OPTIONS.items():
        if _given(getattr(args, name)) and not (view == "--tools" and name in _TOOLS_OPTIONS):
            raise UsageError(f"{view} cannot be combined with {option}")
    if view == "--search" and not args.search.strip("* \t\n"):
        raise UsageError("--search needs a word to look for")
    return view


def _list_tools(config: Config, args: argparse.Namespace) -> int:
    """`termchat --tools`: every configured server started, listed with its state and tools
    (and whether each runs unasked), and stopped; 1 when an enabled server failed to start.
    With no server configured nothing is started (and the MCP SDK is not imported)."""
    if not config.tools.servers:
        print(f"No MCP servers are configured: add [mcp.NAME] tables to {config.path} "
              "(see config.example.toml).")
        return 0
    import asyncio

    from termchat.tools.box import ToolBox, listing
    from termchat.tools.policy import ApprovalPolicy
    from termchat.tools.servers import ServerState

    async def started() -> list[ServerStatus]:
        box = ToolBox(config.tools)
        try:
            await box.wait_ready()
            return box.statuses()
        finally:
            await box.aclose()

    statuses = asyncio.run(started())
    policy = ApprovalPolicy(config.tools, yes=args.yes, allow_tools=args.allow_tool or [])
    # Names, descriptions and reasons come from the servers: each line made safe.
    for line in listing(statuses, policy).splitlines():
        print(safe(line))
    return 1 if any(s.state is ServerState.FAILED for s in statuses) else 0


def _check_allow_tools(config: Config, names: list[str]) -> None:
    """`--allow-tool SERVER.TOOL` must name a configured server (a typo would leave every
    call asking, or denied with no terminal, without a word)."""
    import difflib

    for name in names:
        server, dot, tool = name.partition(".")
        if not name.strip() or (dot and not (server and tool)):
            raise UsageError(f"--allow-tool {name!r}: give SERVER.TOOL, SERVER.* or TOOL")
        if dot and server not in config.tools.servers:
            close = difflib.get_close_matches(server, list(config.tools.servers), n=1)
            fix = f"did you mean {close[0]}.{tool}?" if close else \
                f"configured servers: {', '.join(config.tools.servers) or 'none'}"
            raise UsageError(f"--allow-tool {name}: there is no MCP server '{server}' in "
                             f"{config.path}; {fix}")


def _given(value: object) -> bool:
    """Whether an option was on the command line (its default is None or False)."""
    return value is not None and value is not False


def _continued(config: Config, args: argparse.Namespace, *, history: bool,
               opened: bool = False) -> tuple[HistoryStore, Conversation]:
    """The open store and the stored conversation `-c` or `--cid` continues (or the copy
    `--fork` makes), with the command line's model and overrides applied; `opened` in the
    TUI, which reads a long one from its end (the rest after its first frame).

    Continuing needs the history: when it is off or cannot be opened, this raises instead of
    chatting on without the earlier turns the user asked for.
    """
    from termchat.history import (
        HistoryError,
        HistoryStore,
        HistoryUnavailable,
        continue_conversation,
    )

    flag = "--cid" if args.cid is not None else "--fork" if args.fork is not None \
        else "-c/--continue"
    if not history:
        why = "--no-history" if args.no_history else f"history = false in {config.path}"
        raise UsageError(f"{flag} continues a stored conversation, but {why} turns the "
                         "history off")
    try:
        store = HistoryStore.open(warn=_warn)
    except HistoryUnavailable as exc:
        raise HistoryError(f"cannot continue a conversation: {exc.reason}") from None
    try:
        cid = args.cid if args.cid is not None else store.last_conversation_id()
        if args.fork is not None:
            cid = store.fork(*_fork_point(args.fork))
        if cid is None:
            raise UsageError("-c/--continue: there is no conversation to continue yet; leave "
                             "out -c to start one")
        recent: int | None = None
        if opened:
            from termchat.tui import OPENED_EXCHANGES as recent
        conversation = continue_conversation(config, store, cid, recent=recent)
        conversation.switch_model(resolve(config, args) if args.model
                                  else _overridden(conversation.model, args))
    except BaseException:
        store.close()
        raise
    return store, conversation


def _fork_point(value: str) -> tuple[str, int | None]:
    """`--fork ID[:MSG]` as the conversation and the message (None: all of it)."""
    cid, colon, message = value.partition(":")
    if not colon:
        return cid, None
    if not message.isdecimal():
        raise UsageError(f"--fork {value}: MSG is a message number as --show {cid} prints "
                         "them (e.g. --fork 12:5)")
    return cid, int(message)


def _exit_now(code: int) -> NoReturn:
    """End the process without tearing the interpreter down.

    With a provider SDK loaded (thousands of modules), the teardown takes 0.2-0.5 s after the
    reply has been printed in full; a one-shot run has nothing left to clean up by then, so
    only the standard streams are flushed.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def resolve(config: Config, args: argparse.Namespace) -> ModelConfig:
    """The model for this run, with command-line overrides applied."""
    return _overridden(config.resolve_model(args.model), args)


def _overridden(model: ModelConfig, args: argparse.Namespace) -> ModelConfig:
    if args.temperature is not None and model.provider == "anthropic":
        # The Anthropic API version the SDK speaks rejects it; the provider leaves it out.
        _warn("--temperature is ignored for Anthropic models (their API no longer takes it)")
    return model.with_overrides(system=args.system, max_tokens=args.max_tokens,
                                temperature=args.temperature)


def _warn(line: str) -> None:
    """History's one-line warnings (unavailable, a save that failed) on stderr."""
    print(safe_line(f"termchat: warning: {line}"), file=sys.stderr)


def first_run_help(exc: NotConfiguredError) -> str:
    """The one screen a user sees when nothing is configured: what to set, and where."""
    python = shlex.quote(sys.executable)
    beside = Path(sys.executable).with_name("termchat")
    command = shlex.quote(str(beside)) if beside.exists() else "termchat"
    config_path = shlex.quote(str(exc.path))
    shell_rc = "~/.zshrc" if os.environ.get("SHELL", "").endswith("zsh") else "~/.bashrc"
    return f"""\
termchat: no model is configured yet, so there is nothing to talk to.

Set a key for one provider (in your shell, or in {shell_rc}):
  export OPENAI_API_KEY=sk-...            OpenAI
  export ANTHROPIC_API_KEY=sk-ant-...     Anthropic
  export OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=none
                                          an OpenAI-compatible server (Ollama, vLLM, ...)

or name models, keys and defaults in a config file:
  {config_path}
  (every key is documented in config.example.toml)

Try termchat right now with no key: `{command} --demo` opens the chat against its built-in
local provider server (as `{command}` does on a terminal until a model is configured), and
for one-shot replies start that server and point termchat at it:
  {python} -m termchat.devserver &
  OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=local {command} "hello"
"""
