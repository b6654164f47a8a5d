"""OpenAI Chat Completions on the wire: SSE chunks, the non-streamed completion, error bodies."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from termchat.devserver.scripts import Script, ToolCall, Turn, generate
from termchat.devserver.wire import DEFAULT_MODEL, Kind, Plan, dumps, rand, status_phrase

# status -> (type, code, message), as the real API words them.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", "model_not_found",
          "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded",
          "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None,
          "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

HEADERS = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache"),
           ("openai-version", "2020-10-01"), ("openai-processing-ms", "1")]
"""A stream's headers, besides framing and the request id."""


def _sse(obj: object) -> bytes:
    return f"data: {dumps(obj)}\n\n".encode()


def _base(model: str, id: str, fingerprint: str) -> dict[str, Any]:
    """The fields every chunk of one stream repeats."""
    return {"id": id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "service_tier": "default", "system_fingerprint": fingerprint}


def _chunk(base: dict[str, Any], delta: dict[str, Any] | None, finish: str | None = None,
           **extra: Any) -> bytes:
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return _sse({**base, "choices": choices, **extra})


def openai_chunk(delta: dict[str, Any] | None, finish: str | None = None, *,
                 usage: dict[str, Any] | None = None, model: str = DEFAULT_MODEL,
                 id: str = "chatcmpl-termchat-local") -> bytes:
    """One ``data:`` event of a Chat Completions stream, as the server writes it.

    ``delta`` is ``choices[0].delta``, e.g. ``{"content": "Hi"}``; None gives ``"choices": []``,
    as the final usage chunk has. ``usage``, if given, is the chunk's usage field.
    """
    extra = {} if usage is None else {"usage": usage}
    return _chunk(_base(model, id, "fp_termchat"), delta, finish, **extra)


def openai_done() -> bytes:
    """The ``data: [DONE]`` event that ends a Chat Completions stream."""
    return b"data: [DONE]\n\n"


def openai_stream_events(text_deltas: Sequence[str], finish: str | None = None, *,
                         tool_calls: Sequence[ToolCall] = (), usage: bool = False,
                         model: str = DEFAULT_MODEL) -> list[bytes]:
    """A complete, valid Chat Completions stream body, one event per item, exactly as the server
    streams it: the role chunk, the text deltas, the tool calls, the finish (None -> "stop",
    or "tool_calls" with calls), with ``usage`` the usage chunk, and ``[DONE]``."""
    reply = Script(chunks=list(text_deltas), finish=finish, tool_calls=list(tool_calls),
                   usage="always" if usage else "never")
    turn = generate(reply, {"model": model}, "openai")
    return [data for _, data in stream(reply, {}, turn).steps if data]


def error_body(status: int, etype: str | None, message: str | None,
               code: str | None) -> dict[str, Any]:
    default_type, default_code, default_message = _ERRORS.get(status, (
        "invalid_request_error" if status < 500 else "server_error", None, status_phrase(status)))
    return {"error": {"message": message or default_message, "type": etype or default_type,
                      "param": None, "code": code if code is not None else default_code}}


def _usage(turn: Turn) -> dict[str, Any]:
    return {
        "prompt_tokens": turn.input_tokens,
        "completion_tokens": turn.output_tokens,
        "total_tokens": turn.input_tokens + turn.output_tokens,
        "prompt_tokens_details": {"cached_tokens": turn.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": turn.reasoning_tokens, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def _call_ids(turn: Turn) -> list[str]:
    return [call.id or f"call_{rand(24)}" for call in turn.calls]


def _finish(reply: Script, turn: Turn) -> str:
    return reply.finish or ("tool_calls" if turn.calls else "stop")


def _call_order(turn: Turn, interleave: bool) -> list[tuple[int, str | None]]:
    """(index, argument fragment) in stream order; None is the call's header (id and name)."""
    per_call = [[(i, None), *((i, f) for f in call.fragments)]
                for i, call in enumerate(turn.calls)]
    if not interleave:
        return [step for steps in per_call for step in steps]
    longest = max(map(len, per_call), default=0)
    return [steps[n] for n in range(longest) for steps in per_call if n < len(steps)]


def stream(reply: Script, body: dict[str, Any], turn: Turn) -> Plan:
    options = body.get("stream_options")
    asked = isinstance(options, dict) and bool(options.get("include_usage"))
    with_usage = reply.usage == "always" or (reply.usage == "auto" and asked)
    base = _base(turn.model, f"chatcmpl-{rand(29)}", f"fp_{secrets.token_hex(5)}")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        # Asked-for usage makes every chunk carry "usage": null until the usage chunk.
        return _chunk(base, delta, finish, **({"usage": None} if with_usage else {}))

    ids = _call_ids(turn)

    def header(i: int) -> dict[str, Any]:
        return {"index": i, "id": ids[i], "type": "function",
                "function": {"name": turn.calls[i].name, "arguments": ""}}

    key = "refusal" if reply.refusal else "content"
    order = _call_order(turn, reply.interleave)
    if reply.refusal:
        first: dict[str, Any] = {"role": "assistant", "content": None, "refusal": ""}
    elif turn.deltas or not turn.calls:
        first = {"role": "assistant", "content": "", "refusal": None}
    else:
        # With no text the real API opens with the first call's header in the role chunk.
        first = {"role": "assistant", "content": None, "tool_calls": [header(0)], "refusal": None}
        order = order[1:]
    steps: list[tuple[Kind, bytes]] = [("event", chunk(first))]
    steps += [("content", chunk({key: d})) for d in turn.deltas]
    for i, fragment in order:
        if fragment is None:
            steps.append(("event", chunk({"tool_calls": [header(i)]})))
        else:
            piece = {"index": i, "function": {"arguments": fragment}}
            steps.append(("content", chunk({"tool_calls": [piece]})))
    steps += [("end", b""), ("event", chunk({}, _finish(reply, turn)))]
    if with_usage:
        steps.append(("event", _chunk(base, None, usage=_usage(turn))))
    steps.append(("event", openai_done()))
    # A mid-stream error is worded like a 500: type server_error, no code.
    error = error_body(500, reply.error_type, reply.error_message, reply.error_code)
    return Plan(headers=HEADERS, steps=steps, error_event=_sse(error),
                keepalive=b": keep-alive\n\n")


def completion(reply: Script, turn: Turn) -> dict[str, Any]:
    text = "".join(turn.deltas)
    content = None if reply.refusal or (turn.calls and not text) else text
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if turn.calls:
        message["tool_calls"] = [
            {"id": id_, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for id_, call in zip(_call_ids(turn), turn.calls, strict=True)]
    message |= {"refusal": text if reply.refusal else None, "annotations": []}
    obj: dict[str, Any] = {
        "id": f"chatcmpl-{rand(29)}", "object": "chat.completion", "created": int(time.time()),
        "model": turn.model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _finish(reply, turn)}],
        "service_tier": "default", "system_fingerprint": f"fp_{secrets.token_hex(5)}"}
    if reply.usage != "never":
        obj["usage"] = _usage(turn)
    return obj
