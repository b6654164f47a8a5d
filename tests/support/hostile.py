"""What a hostile server sends, and what must never reach a terminal: a vocabulary of stream
items (valid text and every kind of damage), their bytes in each provider's wire format, and
what a reader must make of them."""

from __future__ import annotations

import json
from dataclasses import dataclass

from termchat.devserver import anthropic_event, openai_chunk, openai_done
from termchat.errors import (
    MalformedStreamError,
    NothingArrivedError,
    ProviderError,
    StreamInterruptedError,
)
from termchat.untrusted import repair

# Everything a terminal could obey rather than show, besides tab and newline.
FORBIDDEN = {chr(c) for c in [*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0)]} | {
    "\u061c", "\u200e", "\u200f", *map(chr, range(0x202a, 0x202f)),
    *map(chr, range(0x2066, 0x206a)), "\u2028", "\u2029"}

HOSTILE = [
    "\x1b]52;c;aGVsbG8=\x07",          # OSC 52: write the clipboard
    "\x1b]52;c;aGVsbG8=\x1b\\",        # ... terminated by ST
    "\x1b]0;pwned\x07",                # set the window title
    "\x1b[2J\x1b[H",                   # clear the screen, cursor home
    "\x1b[31;1m", "\x1b[?1049h", "\x1b[6n",
    "\x1bP+q544e\x1b\\",               # DCS (XTGETTCAP)
    "\x9b2J", "\x9d0;title\x07",       # 8-bit CSI and OSC
    "\u202e", "\u2066", "\u200f",      # bidi override, isolate, mark
    "\r", "\r\n", "\x08", "\x00", "\x7f", "\x1b", "\x1b[", "\x1b]",
]


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class BadUtf8:
    """A delta whose bytes hold `bad` (not UTF-8) between two texts."""

    before: str
    bad: bytes
    after: str


@dataclass(frozen=True)
class Noise:
    """Something a reader must skip: a comment, an unknown event, a field of the wrong type."""

    kind: str


@dataclass(frozen=True)
class BadJson:
    pass


Item = Text | BadUtf8 | Noise | BadJson
NOISE = ["comment", "unknown-event", "unknown-field", "null-text", "number-text", "list-text",
         "no-delta", "no-choices", "choices-not-a-list", "unknown-delta-type", "not-an-object",
         "parts-not-objects", "usage-not-an-object"]
def _dumps(value: object) -> bytes:
    # ASCII escapes, as any JSON encoder may write them: a lone surrogate travels as \udXXX.
    return json.dumps(value).encode()


def _openai_event(delta: object) -> bytes:
    return b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk", "created": 0,
                               "model": "m", "choices": [{"index": 0, "delta": delta,
                                                          "finish_reason": None}]}) + b"\n\n"


def _anthropic_delta(delta: object, *, with_delta: bool = True) -> bytes:
    event: dict[str, object] = {"type": "content_block_delta", "index": 0}
    if with_delta:
        event["delta"] = delta
    return b"event: content_block_delta\ndata: " + _dumps(event) + b"\n\n"


def render(provider: str, item: Item) -> bytes:
    """One item as `provider`'s wire bytes."""
    openai = provider == "openai"
    match item:
        case Text(text):
            return _openai_event({"content": text}) if openai else \
                _anthropic_delta({"type": "text_delta", "text": text})
        case BadUtf8(before, bad, after):
            marker = "\u2603MARK\u2603"
            good = render(provider, Text(f"{before}{marker}{after}"))
            return good.replace(json.dumps(marker)[1:-1].encode(), bad)
        case BadJson():
            return b"data: {\"choices\": [{\"delta\": {\"content\": \"x\"\n\n" if openai else \
                b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \n\n"
        case Noise(kind):
            return _noise(provider, kind)
    raise AssertionError(item)


def _noise(provider: str, kind: str) -> bytes:
    openai = provider == "openai"
    if kind == "comment":
        return b": keep-alive\n\n"
    if kind == "unknown-event":
        return b"data: {\"object\": \"surprise\", \"x\": [1, 2]}\n\n" if openai else \
            b"event: surprise\ndata: {\"type\": \"surprise\"}\n\n"
    if kind == "unknown-field":
        return _openai_event({"content": "", "weird": {"a": 1}}) if openai else \
            anthropic_event({"type": "content_block_delta", "index": 0, "weird": True,
                             "delta": {"type": "text_delta", "text": "", "odd": 1}})
    values = {"null-text": None, "number-text": 42, "list-text": ["x"]}
    if kind in values:
        return _openai_event({"content": values[kind]}) if openai else \
            _anthropic_delta({"type": "text_delta", "text": values[kind]})
    if kind == "no-delta":
        return _openai_event(None) if openai else _anthropic_delta(None, with_delta=False)
    if kind == "no-choices":
        return b"data: " + _dumps({"id": "c", "choices": []}) + b"\n\n" if openai else \
            _anthropic_delta(None)
    if kind == "not-an-object":  # the event's data is JSON, but no object
        return b"data: [1, \"choices\", null]\n\n" if openai else \
            b"event: content_block_delta\ndata: \"content_block_delta\"\n\n"
    if kind == "parts-not-objects":  # where an object belongs, a string, a number, a list
        return b"data: " + _dumps({"id": "c", "choices": ["x", 3, [{"delta": {}}]]}) + b"\n\n" \
            if openai else anthropic_event({"type": "content_block_start", "index": [0],
                                            "content_block": "tool_use"})
    if kind == "usage-not-an-object":
        return b"data: " + _dumps({"id": "c", "choices": [], "usage": [5, 6]}) + b"\n\n" \
            if openai else anthropic_event({"type": "message_delta", "usage": "lots"})
    if kind == "choices-not-a-list":
        return b"data: " + _dumps({"id": "c", "choices": 5}) + b"\n\n" if openai else \
            _anthropic_delta("a string")
    return _openai_event("not an object") if openai else \
        _anthropic_delta({"type": "citations_delta", "citation": {"x": 1}})


def stream_body(provider: str, items: list[Item], ending: str, finish: str) -> list[bytes]:
    """The whole body, event by event."""
    if provider == "openai":
        events = [openai_chunk({"role": "assistant", "content": ""})]
        events += [render(provider, item) for item in items]
        tail = [b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk", "created": 0,
                                    "model": "m", "choices": [{"index": 0, "delta": {},
                                                               "finish_reason": finish}]})
                + b"\n\n", openai_done()]
    else:
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                   "content": [], "stop_reason": None, "usage": {"input_tokens": 3,
                                                                 "output_tokens": 1}}
        events = [anthropic_event({"type": "message_start", "message": message}),
                  anthropic_event({"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}})]
        events += [render(provider, item) for item in items]
        tail = [anthropic_event({"type": "content_block_stop", "index": 0}),
                b"event: message_delta\ndata: " + _dumps({
                    "type": "message_delta", "delta": {"stop_reason": finish},
                    "usage": {"output_tokens": 5}}) + b"\n\n",
                anthropic_event({"type": "message_stop"})]
    if ending == "finish":
        return events + tail
    if ending == "cut":
        # Cut inside the finish event's JSON: the SDKs drop an event the body ends in.
        return [*events, tail[0][:tail[0].index(b"{") + 5]]
    return events


@dataclass
class Expected:
    text: str
    finish: str | None
    error: type[ProviderError] | None


def expected(items: list[Item], ending: str, finish: str) -> Expected:
    """What the reader must make of the stream."""
    text = ""
    for item in items:
        if isinstance(item, BadJson):
            return Expected(repair(text), None, MalformedStreamError)
        if isinstance(item, Text):
            text += item.text
        elif isinstance(item, BadUtf8):
            text += item.before + item.bad.decode("utf-8", "replace") + item.after
    text = repair(text)
    if ending == "finish":
        return Expected(text, repair(finish), None)
    return Expected(text, None, StreamInterruptedError if text else NothingArrivedError)


