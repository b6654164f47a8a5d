"""Command line: parse arguments, load config, and hand off to the TUI or the one-shot filter."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

from termchat import __version__
from termchat.config import Config, ModelConfig, NotConfiguredError, load_config
from termchat.errors import TermchatError, UsageError

EXAMPLES = """\
examples:
  termchat                                   open the chat TUI
  termchat "why is the sky blue?"            one reply, streamed to stdout
  echo "2+2?" | termchat                     the prompt from stdin
  cat app.py | termchat "explain this"       argument, a blank line, then stdin
  termchat -m anthropic:claude-sonnet-4-5 -s "be terse" "hi"
  termchat -u --max-tokens 50 "write a poem"  usage line on stderr
  termchat --json "hi" | jq .usage

models: an alias from the config file, or provider:model (openai:gpt-4.1-mini,
anthropic:claude-sonnet-4-5); an OpenAI-compatible server is openai:MODEL with
OPENAI_BASE_URL or base_url in the config.
output: piped, exactly the reply's text (no colour, no reasoning); on a terminal, the
reply rendered as Markdown.
exit codes: 0 ok (a cut-off reply too, with a warning on stderr), 1 provider or network
error, 2 usage or config error, 130 interrupted (Ctrl+C), 143 terminated.
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
                        help="print one JSON object: text, model, finish, usage, timings")
    parser.add_argument("-u", "--usage", action="store_true",
                        help="print finish reason, tokens and timings to stderr")
    parser.add_argument("--config", metavar="PATH", help="config file (default: "
                        "$XDG_CONFIG_HOME/termchat/config.toml, or $TERMCHAT_CONFIG)")
    parser.add_argument("--version", action="version", version=f"termchat {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run termchat with `argv`; with None (the installed command) it is the whole process,
    and a finished one-shot run exits at once (see `_exit_now`)."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), exit_now=argv is None)
    except NotConfiguredError as exc:
        sys.stderr.write(first_run_help(exc))
        return exc.exit_code
    except TermchatError as exc:
        print(f"termchat: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _main(argv: list[str], *, exit_now: bool = False) -> int:
    args = build_parser().parse_args(argv)
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise UsageError("--max-tokens must be above 0")
    if args.temperature is not None and not 0 <= args.temperature <= 2:
        raise UsageError("--temperature must be from 0 to 2")
    config = load_config(args.config)
    for warning in config.warnings:
        print(f"termchat: {warning}", file=sys.stderr)
    model = resolve(config, args)
    interactive = (not args.prompt and sys.stdin is not None and sys.stdin.isatty()
                   and sys.stdout.isatty())
    if interactive and not (args.json or args.no_stream):
        from termchat.tui.app import run_tui

        return run_tui(config, model)
    from termchat.oneshot import run_oneshot

    code = run_oneshot(args, config, model)
    if exit_now:
        _exit_now(code)
    return code


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
    model = config.resolve_model(args.model)
    return model.with_overrides(system=args.system, max_tokens=args.max_tokens,
                                temperature=args.temperature)


def first_run_help(exc: NotConfiguredError) -> str:
    """The one screen a user sees when nothing is configured: what to set, and where."""
    python = shlex.quote(sys.executable)
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

Try termchat right now with no key, against its built-in local provider server:
  {python} -m termchat.devserver &
  OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=local termchat "hello"
"""
