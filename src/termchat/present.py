"""How a reply, a count or a date is told to a person: written once, used by the status bar,
the `-u` line, `--show` and `--export`, and the history screen alike. Plain strings; each
front end styles them its own way."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from termchat.events import FinishKind

if TYPE_CHECKING:
    from termchat.events import Usage
    from termchat.turn import Reply

UNKNOWN = "unknown"
# Code blocks' colours, the same in the TUI, on a terminal and in `--show`.
CODE_THEME = "monokai"
# Private-use characters mark the matched words of a search snippet: they never occur in chat
# text, where brackets (SQLite's default) often do.
MARK = ("\ue000", "\ue001")

_STATE_WORDS = {"complete": "done"}
_PARTIAL = {"cancelled": "cancelled: partial reply", "interrupted": "interrupted: partial reply",
            "streaming": "still being written"}


def count(value: int | None) -> str:
    return UNKNOWN if value is None else str(value)


def plural(number: int, word: str, words: str | None = None) -> str:
    """`1 message`, `1,234 messages`."""
    return f"{number:,} {word if number == 1 else words or word + 's'}"


def local_time(seconds: float) -> str:
    """A timestamp as the user's clock reads it, to the minute: `2024-05-01 09:00`."""
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def iso_time(seconds: float) -> str:
    """A timestamp for machines: ISO 8601 in UTC."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def marked(snippet: str) -> list[tuple[str, bool]]:
    """A search snippet as pieces, each with whether it is a matched word (between `MARK`s)."""
    first, *rest = snippet.split(MARK[0])
    pieces = [(first, False)]
    for chunk in rest:
        matched, _, after = chunk.partition(MARK[1])
        pieces += [(matched, True), (after, False)]
    return [(text, match) for text, match in pieces if text]


def state(reply: Reply) -> str:
    """`done`, `streaming`, `cancelled`..."""
    return _STATE_WORDS.get(reply.status.value, reply.status.value)


def usage_fields(usage: Usage) -> list[str]:
    """`in 12`, `out 345`, then cached and reasoning tokens when there are any."""
    fields = [f"in {count(usage.input_tokens)}", f"out {count(usage.output_tokens)}"]
    if usage.cached_tokens:
        fields.append(f"cached {usage.cached_tokens}")
    if usage.reasoning_tokens:
        fields.append(f"reasoning {usage.reasoning_tokens}")
    return fields


def timing_fields(reply: Reply) -> list[str]:
    """`ttft 0.41s`, `52.3 tok/s` (`~` when estimated from characters), `6.6s`; nothing
    before the first token, and no rate until there is one."""
    if reply.first_token_at is None:
        return []
    rate = _rate(reply)
    return [f"ttft {reply.ttft:.2f}s", *([rate] if rate else []), f"{reply.elapsed:.1f}s"]


def finish_field(reply: Reply) -> str:
    """`finish stop`, `finish length — hit the length limit`, or `finish none (cancelled)`."""
    if reply.finish is None:
        return f"finish none ({reply.status.value})"
    return f"finish {reply.finish.describe()}"


def usage_line(reply: Reply) -> str:
    """The `-u` line: `finish stop · in 12 · out 345 · cached 0 · ttft 0.41s · 52.3 tok/s ·
    6.6s`. Every field is always there (`unknown` when the server did not say): scripts
    read it by position."""
    usage = reply.usage
    finish = reply.finish.reason if reply.finish else f"none ({reply.status.value})"
    fields = [f"finish {finish}", f"in {count(usage.input_tokens)}",
              f"out {count(usage.output_tokens)}", f"cached {count(usage.cached_tokens)}"]
    if usage.reasoning_tokens:
        fields.append(f"reasoning {usage.reasoning_tokens}")
    fields.append(f"ttft {UNKNOWN}" if reply.ttft is None else f"ttft {reply.ttft:.2f}s")
    fields.append(_rate(reply) or f"tok/s {UNKNOWN}")
    fields.append(f"{reply.elapsed:.1f}s")
    return " · ".join(fields)


def _rate(reply: Reply) -> str | None:
    rate = reply.tokens_per_second
    if rate is None:
        return None
    # Without a reported output count the rate is estimated from characters: say so.
    estimated = "~" if reply.usage.output_tokens is None else ""
    return f"{estimated}{rate:.1f} tok/s"


def reply_header(reply: Reply) -> str:
    """A stored reply's heading in `--show`: `assistant · openai:gpt-4.1-mini · finish stop ·
    in 12 · out 345 · 6.6s`, with a bracketed mark when the reply did not complete."""
    fields = ["assistant", f"{reply.provider}:{reply.model}"]
    fields += _outcome(reply)
    if reply.finish is not None:
        fields.append(finish_field(reply))
    if reply.usage.known:
        fields += usage_fields(reply.usage)
    if reply.ended_at:
        fields.append(f"{reply.elapsed:.1f}s")
    if reply.continued:
        fields.append(continued(reply))
    return " · ".join(fields)


def continued(reply: Reply) -> str:
    """`continued`, `continued 2 times`: a reply that went on after it stopped."""
    return "continued" if reply.continued == 1 else f"continued {reply.continued} times"


def reply_footer(reply: Reply) -> str:
    """A reply's footer in an export: how it ended, tokens and timings."""
    fields = [reply.status.value]
    finish = reply.finish
    if finish is not None and (finish.kind is not FinishKind.COMPLETE or finish.meaning):
        fields.append(finish.describe())
    if reply.error is not None:
        fields.append(reply.error.message)
    if reply.usage.known:
        fields += usage_fields(reply.usage)
    fields += timing_fields(reply)
    return " · ".join(fields)


def _outcome(reply: Reply) -> list[str]:
    status = reply.status.value
    if status == "error":
        return [f"[error: {reply.error.message}]" if reply.error else "[error]"]
    return [f"[{_PARTIAL[status]}]"] if status in _PARTIAL else []
