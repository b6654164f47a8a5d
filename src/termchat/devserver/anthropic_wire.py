"""Anthropic Messages on the wire: SSE events, the non-streamed message, error bodies."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from typing import Any

from termchat.devserver.scripts import Script, ToolCall, Turn, generate
from termchat.devserver.wire import DEFAULT_MODEL, Kind, Plan, dumps, rand, status_phrase

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error",
          "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}

HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
"""A stream's headers, besides framing and the request id."""


def anthropic_event(obj: dict[str, Any]) -> bytes:
    """One Messages stream event, as the server writes it: the ``event:`` line named after
    ``obj["type"]`` (without it the SDK drops the event), then ``data:``."""
    return f"event: {obj['type']}\ndata: {dumps(obj)}\n\n".encode()


def anthropic_stream_events(text_deltas: Sequence[str], stop_reason: str | None = None, *,
                            tool_calls: Sequence[ToolCall] = (),
                            model: str = DEFAULT_MODEL) -> list[bytes]:
    """A complete, valid Messages stream body, one event per item, exactly as the server
    streams it: message_start, a text block, a tool_use block per call, message_delta
    (``stop_reason`` None -> "end_turn", or "tool_use" with calls) and message_stop."""
    reply = Script(chunks=list(text_deltas), finish=stop_reason, tool_calls=list(tool_calls))
    turn = generate(reply, {"model": model}, "anthropic")
    return [data for _, data in stream(reply, turn).steps if data]


def error_body(status: int, etype: str | None, message: str | None,
               request_id: str) -> dict[str, Any]:
    default_type, default_message = _ERRORS.get(status, (
        "invalid_request_error" if status < 500 else "api_error", status_phrase(status)))
    return {"type": "error",
            "error": {"type": etype or default_type, "message": message or default_message},
            "request_id": request_id}


def _stop(reply: Script, turn: Turn) -> str:
    if reply.finish:
        return reply.finish
    if turn.calls:
        return "tool_use"
    return "refusal" if reply.refusal and not reply.text else "end_turn"


def _call_ids(turn: Turn) -> list[str]:
    return [call.id or f"toolu_01{rand(22)}" for call in turn.calls]


def _input(arguments: str) -> dict[str, Any]:
    # The API parses the model's JSON itself and `input` is always an object, so arguments
    # that are not a JSON object become {} in a non-streamed message; only a stream shows
    # them verbatim, as input_json_delta fragments.
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _usage(turn: Turn, *, final: bool) -> dict[str, Any]:
    """Usage as message_start has it (output_tokens 1) or, ``final``, as counted at the end."""
    usage: dict[str, Any] = {
        "input_tokens": turn.input_tokens, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": turn.cached_tokens,
        "output_tokens": turn.output_tokens if final else 1}
    if final and turn.reasoning_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": turn.reasoning_tokens}
    return usage


def _signature() -> str:
    return base64.b64encode(secrets.token_bytes(96)).decode()


def _message(turn: Turn, content: list[dict[str, Any]], stop: str | None,
             *, final: bool) -> dict[str, Any]:
    return {"id": f"msg_01{rand(22)}", "type": "message", "role": "assistant",
            "model": turn.model, "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {**_usage(turn, final=final), "service_tier": "standard"}}


def stream(reply: Script, turn: Turn) -> Plan:
    ping = anthropic_event({"type": "ping"})
    start = _message(turn, [], None, final=False)
    steps: list[tuple[Kind, bytes]] = [
        ("event", anthropic_event({"type": "message_start", "message": start}))]
    blocks: list[tuple[dict[str, Any], list[tuple[Kind, dict[str, Any]]]]] = []
    if turn.thinking_deltas:
        thinking: list[tuple[Kind, dict[str, Any]]] = [
            ("content", {"type": "thinking_delta", "thinking": t}) for t in turn.thinking_deltas]
        thinking.append(("event", {"type": "signature_delta", "signature": _signature()}))
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, thinking))
    if turn.deltas or not turn.calls:
        blocks.append(({"type": "text", "text": ""},
                       [("content", {"type": "text_delta", "text": d}) for d in turn.deltas]))
    for id_, call in zip(_call_ids(turn), turn.calls, strict=True):
        # Like the real API, an empty fragment first, before any of the arguments.
        fragments: list[tuple[Kind, dict[str, Any]]] = [
            ("event", {"type": "input_json_delta", "partial_json": ""}),
            *(("content", {"type": "input_json_delta", "partial_json": f})
              for f in call.fragments)]
        blocks.append(({"type": "tool_use", "id": id_, "name": call.name, "input": {}},
                       fragments))
    for index, (content_block, deltas) in enumerate(blocks):
        event = {"type": "content_block_start", "index": index, "content_block": content_block}
        steps.append(("event", anthropic_event(event)))
        if index == 0:
            # The real API sends one ping right after the first block starts.
            steps.append(("event", ping))
        steps.extend(
            (kind, anthropic_event({"type": "content_block_delta", "index": index, "delta": d}))
            for kind, d in deltas)
        if index == len(blocks) - 1:
            steps.append(("end", b""))
        steps.append(("event", anthropic_event({"type": "content_block_stop", "index": index})))
    final = {"type": "message_delta",
             "delta": {"stop_reason": _stop(reply, turn), "stop_sequence": None},
             "usage": _usage(turn, final=True)}
    steps += [("event", anthropic_event(final)),
              ("event", anthropic_event({"type": "message_stop"}))]
    error = {"type": "error", "error": {"type": reply.error_type or "overloaded_error",
                                        "message": reply.error_message or "Overloaded"}}
    return Plan(headers=HEADERS, steps=steps, error_event=anthropic_event(error), keepalive=ping)


def message(reply: Script, turn: Turn) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if turn.thinking_deltas:
        content.append({"type": "thinking", "thinking": "".join(turn.thinking_deltas),
                        "signature": _signature()})
    if turn.deltas or not turn.calls:
        content.append({"type": "text", "text": "".join(turn.deltas)})
    content += [{"type": "tool_use", "id": id_, "name": call.name, "input": _input(call.arguments)}
                for id_, call in zip(_call_ids(turn), turn.calls, strict=True)]
    return _message(turn, content, _stop(reply, turn), final=True)
