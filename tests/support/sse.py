"""Stream bodies built event by event, with any JSON value where the text goes.

JSON is written with ASCII escapes, as any encoder may write it: a lone surrogate travels as
`\\udXXX`, which the devserver's own helpers (raw UTF-8) cannot carry.
"""

from __future__ import annotations

import json

from termchat.devserver import anthropic_event, openai_done


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()


def openai_delta(delta: object, finish: str | None = None) -> bytes:
    return b"data: " + _dumps({"id": "c", "object": "chat.completion.chunk", "created": 0,
                               "model": "m", "choices": [{"index": 0, "delta": delta,
                                                          "finish_reason": finish}]}) + b"\n\n"


def anthropic_delta(delta: object, *, with_delta: bool = True) -> bytes:
    event: dict[str, object] = {"type": "content_block_delta", "index": 0}
    if with_delta:
        event["delta"] = delta
    return b"event: content_block_delta\ndata: " + _dumps(event) + b"\n\n"


def text_event(provider: str, text: object) -> bytes:
    """One text delta of `provider`'s stream; `text` may be any JSON value."""
    if provider == "openai":
        return openai_delta({"content": text})
    return anthropic_delta({"type": "text_delta", "text": text})


def head(provider: str) -> list[bytes]:
    """What a stream sends before its first text delta."""
    if provider == "openai":
        return [openai_delta({"role": "assistant", "content": ""})]
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
               "content": [], "stop_reason": None,
               "usage": {"input_tokens": 3, "output_tokens": 1}}
    return [anthropic_event({"type": "message_start", "message": message}),
            anthropic_event({"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}})]


def tail(provider: str) -> list[bytes]:
    """What a stream sends after its last text delta: the finish and the end."""
    if provider == "openai":
        return [openai_delta({}, "stop"), openai_done()]
    return [anthropic_event({"type": "content_block_stop", "index": 0}),
            anthropic_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                             "usage": {"output_tokens": 5}}),
            anthropic_event({"type": "message_stop"})]


def body(provider: str, *middle: bytes) -> list[bytes]:
    """A whole stream: the head, `middle` (events, or bytes that are not), the tail."""
    return [*head(provider), *middle, *tail(provider)]


def text_body(provider: str, *texts: object) -> list[bytes]:
    """A whole stream with one text delta per item of `texts`."""
    return body(provider, *(text_event(provider, text) for text in texts))
