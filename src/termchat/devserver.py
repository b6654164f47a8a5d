"""A faithful local LLM provider server, for tests and for trying termchat without a key.

It speaks the OpenAI Chat Completions and the Anthropic Messages wire formats (SSE streams
and plain JSON) over real HTTP/1.1 sockets, so the real ``openai`` and ``anthropic`` SDKs run
against it unmodified. Replies are scripted with :class:`Script` (chunking, delays, errors,
cut-offs, stalls); every request is recorded as a :class:`Request`, including when the client
hung up mid-reply.

The asyncio loop runs in a daemon thread, so sync tests, async tests on their own loop and
child processes can all talk to it. Standard library only.

By hand::

    python -m termchat.devserver [--port N] [--delay S]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import email.utils
import http
import json
import secrets
import string
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ProviderServer", "Request", "Script", "main"]

_OPENAI_PATH = "/v1/chat/completions"
_ANTHROPIC_PATH = "/v1/messages"
_ALNUM = string.ascii_letters + string.digits
_MAX_HEAD_BYTES = 64 * 1024
# Below this much pending output a zero-delay stream keeps coalescing events into one write.
_FLUSH_BYTES = 64 * 1024
_QUOTE_LIMIT = 300

_Provider = Literal["openai", "anthropic"]
_Kind = Literal["event", "content", "end"]

_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}

# status -> (type, code, message), as the real API words them.
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to access this resource."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again in 1s.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@dataclass
class Script:
    """A scripted reply; the server renders it in whichever wire format was asked for.

    Cut-off counts (``error_after`` and friends) count content deltas; a count at or beyond
    the number of deltas applies after the last one, before the finish.
    """

    text: str = ""
    """The reply text; "" (with ``chunks`` unset) means the demo reply echoing the prompt."""
    chunks: list[str] | None = None
    """An explicit cut of the text into deltas; overrides ``text`` and ``chunk_size``."""
    chunk_size: int = 12
    """Characters (code points, never bytes) per delta when ``chunks`` is None."""
    delay: float = 0.0
    """Seconds between content deltas."""
    first_delay: float = 0.0
    """Seconds after the headers (and the stream preamble) before the first delta; for a
    non-streaming request, added to ``header_delay``."""
    header_delay: float = 0.0
    """Seconds before the response headers are sent at all."""
    finish: str | None = None
    """Raw finish/stop reason; None -> "stop" (OpenAI) / "end_turn" (Anthropic)."""
    usage: Literal["auto", "always", "never"] = "auto"
    """OpenAI only: "auto" streams usage only when ``stream_options.include_usage`` is set;
    "never" omits usage everywhere, like servers that send none. Anthropic always has usage."""
    input_tokens: int | None = None
    """None -> an estimate from the prompt (characters // 4 + 1)."""
    output_tokens: int | None = None
    """None -> an estimate from the generated text plus ``reasoning_tokens``."""
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    thinking: str = ""
    """Anthropic: a thinking block (thinking_delta + signature_delta) before the text."""
    refusal: str = ""
    """OpenAI: refusal deltas instead of text. Anthropic: sent as the text, with stop reason
    "refusal" unless ``finish`` says otherwise."""
    status: int = 200
    """Non-200: an error response in the provider's own JSON error format."""
    error_type: str | None = None
    """Error type; None -> the provider's type for ``status`` (or for a mid-stream error)."""
    error_message: str | None = None
    error_code: str | None = None
    """OpenAI ``error.code``, e.g. "context_length_exceeded"."""
    retry_after: str | None = None
    """Retry-After header value on error responses."""
    should_retry: bool = False
    """Unless True, error responses carry ``x-should-retry: false`` so SDK retries don't
    slow tests down."""
    error_after: int | None = None
    """After N deltas, send a mid-stream error event and end the body."""
    disconnect_after: int | None = None
    """After N deltas, close the socket without ending the chunked body. A non-streaming
    request with this set is closed without any response."""
    stall_after: int | None = None
    """After N deltas, send nothing more and hold the connection until the client goes.
    A non-streaming request with this set never gets a response."""
    end_without_finish_after: int | None = None
    """After N deltas, end the body cleanly but with no finish, usage, [DONE] or
    message_stop."""
    keepalive: bool = False
    """Interleave ``: keep-alive`` comments (OpenAI) or ping events (Anthropic)."""


@dataclass
class Request:
    """One recorded request and what became of its response. Times are time.monotonic()."""

    path: str
    headers: dict[str, str]
    """Lower-cased header names."""
    body: dict[str, Any]
    received_at: float
    first_chunk_at: float | None = None
    """When the first content delta (or a non-streamed body) was written."""
    last_chunk_at: float | None = None
    """When the final byte of the body was written, or the last delta if the body was cut."""
    chunks_sent: int = 0
    """Content deltas written."""
    completed: bool = False
    """The response was sent to its (scripted) end and the body terminated properly."""
    disconnected_at: float | None = None
    """When the server noticed the client close the connection before the response was
    complete."""


@dataclass
class _RawRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


@dataclass
class _Plan:
    """A rendered stream: headers, then events, with content deltas marked for pacing."""

    headers: list[tuple[str, str]]
    steps: list[tuple[_Kind, bytes]]
    error_event: bytes
    keepalive: bytes


@dataclass
class _Turn:
    """What the model "generated" for one request, independent of the wire format."""

    model: str
    deltas: list[str]
    thinking_deltas: list[str]
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int


def _rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _dumps(obj: object) -> str:
    # Compact and with raw UTF-8, like the real APIs: a multi-byte character split across
    # bytes would corrupt the JSON, which is why deltas are cut on code points.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _openai_sse(obj: object) -> bytes:
    return f"data: {_dumps(obj)}\n\n".encode()


def _anthropic_sse(obj: dict[str, Any]) -> bytes:
    return f"event: {obj['type']}\ndata: {_dumps(obj)}\n\n".encode()


def _reason(status: int) -> str:
    if status == 529:
        return "Overloaded"
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}", f"date: {email.utils.formatdate(usegmt=True)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _text_of(content: object) -> str:
    """Text of a message's content: a string or a list of typed parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def _prompt(body: dict[str, Any]) -> tuple[str, int]:
    """The last user message and the number of prompt characters (system included)."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    texts = [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    last_user = next(
        (
            _text_of(m.get("content"))
            for m in reversed(messages)
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        "",
    )
    return last_user, len(_text_of(body.get("system"))) + sum(map(len, texts))


def _demo_text(last_user: str) -> str:
    said = last_user.strip() or "(nothing)"
    if len(said) > _QUOTE_LIMIT:
        said = said[:_QUOTE_LIMIT] + "…"
    quoted = "\n".join(f"> {line}" if line else ">" for line in said.splitlines())
    return (
        "## Echo from the local provider\n\n"
        f"You said:\n\n{quoted}\n\n"
        "This reply comes from the **termchat local provider server**, not a real model.\n\n"
        "- It streams in small chunks, like a real model\n"
        "- It speaks both the OpenAI and the Anthropic wire formats\n"
        "- Token counts are *estimates* (about four characters a token)\n\n"
        "| Provider | Endpoint |\n"
        "| --- | --- |\n"
        f"| OpenAI | `{_OPENAI_PATH}` |\n"
        f"| Anthropic | `{_ANTHROPIC_PATH}` |\n\n"
        "```python\n"
        "def greet(name: str) -> str:\n"
        '    return f"Hello, {name}!"\n'
        "```\n"
    )


def _cut(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _turn(reply: Script, body: dict[str, Any], provider: _Provider) -> _Turn:
    last_user, prompt_chars = _prompt(body)
    if provider == "openai" and reply.refusal:
        deltas = _cut(reply.refusal, reply.chunk_size)
    elif reply.chunks is not None:
        deltas = list(reply.chunks)
    else:
        text = reply.text or reply.refusal or _demo_text(last_user)
        deltas = _cut(text, reply.chunk_size)
    thinking = _cut(reply.thinking, reply.chunk_size) if provider == "anthropic" else []
    generated = sum(map(len, deltas)) + sum(map(len, thinking))
    return _Turn(
        model=str(body.get("model") or "termchat-local"),
        deltas=deltas,
        thinking_deltas=thinking,
        input_tokens=prompt_chars // 4 + 1 if reply.input_tokens is None else reply.input_tokens,
        output_tokens=(
            generated // 4 + 1 + reply.reasoning_tokens
            if reply.output_tokens is None
            else reply.output_tokens
        ),
        cached_tokens=reply.cached_tokens,
        reasoning_tokens=reply.reasoning_tokens,
    )


def _openai_usage(turn: _Turn) -> dict[str, Any]:
    return {
        "prompt_tokens": turn.input_tokens,
        "completion_tokens": turn.output_tokens,
        "total_tokens": turn.input_tokens + turn.output_tokens,
        "prompt_tokens_details": {"cached_tokens": turn.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": turn.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_error_body(
    status: int, etype: str | None, message: str | None, code: str | None
) -> dict[str, Any]:
    default_type, default_code, default_message = _OPENAI_ERRORS.get(
        status,
        ("invalid_request_error" if status < 500 else "server_error", None, _reason(status)),
    )
    return {
        "error": {
            "message": message or default_message,
            "type": etype or default_type,
            "param": None,
            "code": code if code is not None else default_code,
        }
    }


def _anthropic_error_body(
    status: int, etype: str | None, message: str | None, request_id: str
) -> dict[str, Any]:
    default_type, default_message = _ANTHROPIC_ERRORS.get(
        status, ("invalid_request_error" if status < 500 else "api_error", _reason(status))
    )
    return {
        "type": "error",
        "error": {"type": etype or default_type, "message": message or default_message},
        "request_id": request_id,
    }


def _openai_stream(reply: Script, body: dict[str, Any], turn: _Turn) -> _Plan:
    options = body.get("stream_options")
    asked = isinstance(options, dict) and bool(options.get("include_usage"))
    with_usage = reply.usage == "always" or (reply.usage == "auto" and asked)
    base: dict[str, Any] = {
        "id": f"chatcmpl-{_rand(29)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": turn.model,
        "service_tier": "default",
        "system_fingerprint": f"fp_{secrets.token_hex(5)}",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        obj = {**base, "choices": [choice]}
        if with_usage:
            obj["usage"] = None
        return _openai_sse(obj)

    key = "refusal" if reply.refusal else "content"
    first = (
        {"role": "assistant", "content": None, "refusal": ""}
        if reply.refusal
        else {"role": "assistant", "content": "", "refusal": None}
    )
    steps: list[tuple[_Kind, bytes]] = [("event", chunk(first))]
    steps += [("content", chunk({key: d})) for d in turn.deltas]
    steps += [("end", b""), ("event", chunk({}, reply.finish or "stop"))]
    if with_usage:
        steps.append(("event", _openai_sse({**base, "choices": [], "usage": _openai_usage(turn)})))
    steps.append(("event", b"data: [DONE]\n\n"))
    # A mid-stream error is worded like a 500: type server_error, no code.
    error = _openai_error_body(500, reply.error_type, reply.error_message, reply.error_code)
    return _Plan(
        headers=[
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("openai-version", "2020-10-01"),
            ("openai-processing-ms", "1"),
        ],
        steps=steps,
        error_event=_openai_sse(error),
        keepalive=b": keep-alive\n\n",
    )


def _openai_completion(reply: Script, turn: _Turn) -> dict[str, Any]:
    text = "".join(turn.deltas)
    message = {
        "role": "assistant",
        "content": None if reply.refusal else text,
        "refusal": text if reply.refusal else None,
        "annotations": [],
    }
    obj: dict[str, Any] = {
        "id": f"chatcmpl-{_rand(29)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": turn.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish or "stop",
            }
        ],
        "service_tier": "default",
        "system_fingerprint": f"fp_{secrets.token_hex(5)}",
    }
    if reply.usage != "never":
        obj["usage"] = _openai_usage(turn)
    return obj


def _anthropic_stop(reply: Script) -> str:
    return reply.finish or ("refusal" if reply.refusal and not reply.text else "end_turn")


def _anthropic_usage(turn: _Turn, *, final: bool) -> dict[str, Any]:
    """Usage as message_start has it (output_tokens 1) or, ``final``, as counted at the end."""
    usage: dict[str, Any] = {
        "input_tokens": turn.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": turn.cached_tokens,
        "output_tokens": turn.output_tokens if final else 1,
    }
    if final and turn.reasoning_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": turn.reasoning_tokens}
    return usage


def _signature() -> str:
    return base64.b64encode(secrets.token_bytes(96)).decode()


def _anthropic_stream(reply: Script, turn: _Turn) -> _Plan:
    ping = _anthropic_sse({"type": "ping"})
    message = {
        "id": f"msg_01{_rand(22)}",
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**_anthropic_usage(turn, final=False), "service_tier": "standard"},
    }
    steps: list[tuple[_Kind, bytes]] = [
        ("event", _anthropic_sse({"type": "message_start", "message": message}))
    ]

    def block(
        index: int, start: dict[str, Any], deltas: list[tuple[_Kind, dict[str, Any]]]
    ) -> None:
        event = {"type": "content_block_start", "index": index, "content_block": start}
        steps.append(("event", _anthropic_sse(event)))
        if index == 0:
            # The real API sends one ping right after the first block starts.
            steps.append(("event", ping))
        steps.extend(
            (kind, _anthropic_sse({"type": "content_block_delta", "index": index, "delta": d}))
            for kind, d in deltas
        )

    index = 0
    if turn.thinking_deltas:
        thinking: list[tuple[_Kind, dict[str, Any]]] = [
            ("content", {"type": "thinking_delta", "thinking": t}) for t in turn.thinking_deltas
        ]
        thinking.append(("event", {"type": "signature_delta", "signature": _signature()}))
        block(0, {"type": "thinking", "thinking": "", "signature": ""}, thinking)
        steps.append(("event", _anthropic_sse({"type": "content_block_stop", "index": 0})))
        index = 1
    block(
        index,
        {"type": "text", "text": ""},
        [("content", {"type": "text_delta", "text": d}) for d in turn.deltas],
    )
    steps += [
        ("end", b""),
        ("event", _anthropic_sse({"type": "content_block_stop", "index": index})),
        (
            "event",
            _anthropic_sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _anthropic_stop(reply), "stop_sequence": None},
                    "usage": _anthropic_usage(turn, final=True),
                }
            ),
        ),
        ("event", _anthropic_sse({"type": "message_stop"})),
    ]
    error = {
        "type": "error",
        "error": {
            "type": reply.error_type or "overloaded_error",
            "message": reply.error_message or "Overloaded",
        },
    }
    return _Plan(
        headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")],
        steps=steps,
        error_event=_anthropic_sse(error),
        keepalive=ping,
    )


def _anthropic_message(reply: Script, turn: _Turn) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if turn.thinking_deltas:
        content.append(
            {
                "type": "thinking",
                "thinking": "".join(turn.thinking_deltas),
                "signature": _signature(),
            }
        )
    content.append({"type": "text", "text": "".join(turn.deltas)})
    return {
        "id": f"msg_01{_rand(22)}",
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": content,
        "stop_reason": _anthropic_stop(reply),
        "stop_sequence": None,
        "usage": {**_anthropic_usage(turn, final=True), "service_tier": "standard"},
    }


class _Connection:
    """One client connection: a background reader that notices the client leaving at once,
    a request parser over its buffer, and chunked writing that keeps the record current."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_client_gone: Callable[[Request | None], None],
    ) -> None:
        self._on_client_gone = on_client_gone
        self._reader = reader
        self._writer = writer
        self._buf = bytearray()
        self._data = asyncio.Event()
        self.closed = asyncio.Event()
        self.active: Request | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._pending_deltas = 0
        self._pump = asyncio.create_task(self._read_forever())

    async def _read_forever(self) -> None:
        # The SDKs never pipeline, so anything read mid-response is just buffered; an EOF or a
        # reset mid-response is the client hanging up, noticed here even while the response
        # side sleeps or stalls.
        with contextlib.suppress(OSError):
            while data := await self._reader.read(1 << 20):
                self._buf += data
                self._data.set()
        self.closed.set()
        self._data.set()
        self._on_client_gone(self.active)

    async def _more(self) -> bool:
        if self.closed.is_set():
            return False
        self._data.clear()
        await self._data.wait()
        return True

    async def read_request(self) -> _RawRequest | None:
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > _MAX_HEAD_BYTES or not await self._more():
                return None
        head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        try:
            method, target, version = head[0].split(" ", 2)
        except ValueError:
            return None
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                return None
            key, value = name.strip().lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            return None
        while len(self._buf) < length:
            if not await self._more():
                return None
        body = bytes(self._buf[:length])
        del self._buf[:length]
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        return _RawRequest(method, target.split("?", 1)[0], headers, body, keep_alive)

    async def pause(self, seconds: float) -> bool:
        """Sleep, waking early if the client leaves; True while it is still connected."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), seconds)
        return not self.closed.is_set()

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    def queue(self, data: bytes, *, delta: bool = False) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        self._pending_deltas += delta

    @property
    def pending_size(self) -> int:
        return self._pending_size

    async def flush(self, *, last: bool = False) -> None:
        """Write what is queued as one HTTP chunk; ``last`` also ends the chunked body."""
        data = b"".join(self._pending)
        framed = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        if last:
            framed += b"0\r\n\r\n"
        if not framed:
            return
        rec, now = self.active, time.monotonic()
        # The record is updated before the bytes leave, so a client that has just read them
        # (in another thread) already sees it current.
        if rec is not None:
            if self._pending_deltas:
                rec.first_chunk_at = rec.first_chunk_at or now
                rec.chunks_sent += self._pending_deltas
            if self._pending_deltas or last:
                rec.last_chunk_at = now
            if last:
                rec.completed = True
        self._pending.clear()
        self._pending_size = self._pending_deltas = 0
        await self.write(framed)

    def abort(self) -> None:
        """Close the socket, as a crashing server would, without it counting as the client
        hanging up."""
        self.active = None
        self._writer.close()

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        self._writer.close()


class ProviderServer:
    """A local OpenAI + Anthropic server on a background thread.

    ``queue()`` scripts the next replies (FIFO, shared by both endpoints); when the queue is
    empty the ``default`` reply answers. ``log``, if given, is called (on the server thread)
    with a line per request and per client disconnect. Usable as a context manager.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        default: Script | None = None,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.default = default or Script()
        self._log = log
        self._cond = threading.Condition()
        self._queue: collections.deque[Script] = collections.deque()
        self._records: list[Request] = []
        self._disconnects: list[Request] = []
        self._disconnects_taken = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> ProviderServer:
        """Bind and serve in a daemon thread; raises OSError if the port is taken."""
        if self._thread is not None:
            raise RuntimeError("ProviderServer already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="termchat-devserver", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> ProviderServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def queue(self, *replies: Script) -> None:
        with self._cond:
            self._queue.extend(replies)

    @property
    def requests(self) -> list[Request]:
        with self._cond:
            return list(self._records)

    @property
    def disconnects(self) -> list[Request]:
        """Requests whose client hung up mid-response, in the order that happened."""
        with self._cond:
            return list(self._disconnects)

    def wait_for_requests(self, n: int, timeout: float = 5) -> list[Request]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._records) >= n, timeout):
                raise TimeoutError(f"expected {n} requests, got {len(self._records)}")
            return list(self._records)

    def wait_for_disconnect(self, timeout: float = 5) -> Request:
        """The next client disconnect not returned by an earlier call, waiting for it."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: len(self._disconnects) > self._disconnects_taken, timeout
            ):
                raise TimeoutError(f"no client disconnect within {timeout} s")
            self._disconnects_taken += 1
            return self._disconnects[self._disconnects_taken - 1]

    def reset(self) -> None:
        with self._cond:
            self._queue.clear()
            self._records.clear()
            self._disconnects.clear()
            self._disconnects_taken = 0

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, self.host, self.port)
            )
        except OSError as exc:
            failure.append(exc)
            loop.close()
            ready.set()
            return
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _record(self, rec: Request) -> None:
        with self._cond:
            self._records.append(rec)
            self._cond.notify_all()

    def _client_gone(self, rec: Request | None) -> None:
        if rec is None or rec.completed or rec.disconnected_at is not None:
            return
        with self._cond:
            rec.disconnected_at = time.monotonic()
            self._disconnects.append(rec)
            self._cond.notify_all()
        if self._log:
            self._log(f"  client disconnected after {rec.chunks_sent} chunks")

    def _next_reply(self) -> Script:
        with self._cond:
            return self._queue.popleft() if self._queue else self.default

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Connection(reader, writer, self._client_gone)
        try:
            while await self._handle(conn):
                pass
        except OSError:
            self._client_gone(conn.active)
        except asyncio.CancelledError:
            # Only stop() cancels; ending quietly keeps asyncio's client-task callback from
            # logging the cancellation as an error.
            pass
        finally:
            await conn.close()
            self._tasks.discard(task)

    async def _handle(self, conn: _Connection) -> bool:
        """Serve one request; False when the connection should close."""
        raw = await conn.read_request()
        if raw is None:
            return False
        provider: _Provider = (
            "anthropic"
            if raw.path == _ANTHROPIC_PATH
            or (raw.path != _OPENAI_PATH and "anthropic-version" in raw.headers)
            else "openai"
        )
        try:
            body = json.loads(raw.body) if raw.body else {}
        except ValueError:
            body = None
        rec = Request(
            path=raw.path,
            headers=raw.headers,
            body=body if isinstance(body, dict) else {},
            received_at=time.monotonic(),
        )
        conn.active = rec
        self._record(rec)
        stream = rec.body.get("stream") is True
        if self._log:
            self._log(
                f"{raw.method} {raw.path} model={rec.body.get('model')} "
                f"{'stream' if stream else 'json'}"
            )
        authorization = raw.headers.get("authorization", "")
        if raw.method != "POST" or raw.path not in (_OPENAI_PATH, _ANTHROPIC_PATH):
            message = f"Invalid URL ({raw.method} {raw.path})"
            await self._error(conn, provider, Script(status=404, error_message=message))
        elif not authorization.lower().startswith("bearer ") and not raw.headers.get("x-api-key"):
            message = "No API key provided: send `Authorization: Bearer KEY` or `x-api-key`."
            await self._error(conn, provider, Script(status=401, error_message=message))
        elif not isinstance(body, dict):
            message = "The request body is not valid JSON."
            await self._error(conn, provider, Script(status=400, error_message=message))
        else:
            reply = self._next_reply()
            if reply.status != 200:
                if not await conn.pause(reply.header_delay):
                    return False
                await self._error(conn, provider, reply)
            elif stream:
                return await self._stream(conn, provider, reply, rec.body) and raw.keep_alive
            else:
                return await self._complete(conn, provider, reply, rec.body) and raw.keep_alive
        return raw.keep_alive

    def _ids(self, provider: _Provider) -> tuple[str, list[tuple[str, str]]]:
        if provider == "openai":
            request_id = f"req_{secrets.token_hex(16)}"
            return request_id, [("x-request-id", request_id)]
        request_id = f"req_011C{_rand(20)}"
        return request_id, [("request-id", request_id)]

    async def _send_json(
        self,
        conn: _Connection,
        status: int,
        headers: list[tuple[str, str]],
        payload: dict[str, Any],
    ) -> None:
        data = _dumps(payload).encode()
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(data))),
            ("connection", "keep-alive"),
            *headers,
        ]
        rec, now = conn.active, time.monotonic()
        if rec is not None:
            rec.first_chunk_at = rec.last_chunk_at = now
            rec.completed = True
        conn.active = None
        await conn.write(_head(status, headers) + data)

    async def _error(self, conn: _Connection, provider: _Provider, reply: Script) -> None:
        request_id, headers = self._ids(provider)
        if not reply.should_retry:
            headers.append(("x-should-retry", "false"))
        if reply.retry_after is not None:
            headers.append(("retry-after", reply.retry_after))
        if provider == "openai":
            payload = _openai_error_body(
                reply.status, reply.error_type, reply.error_message, reply.error_code
            )
        else:
            payload = _anthropic_error_body(
                reply.status, reply.error_type, reply.error_message, request_id
            )
        await self._send_json(conn, reply.status, headers, payload)

    async def _complete(
        self, conn: _Connection, provider: _Provider, reply: Script, body: dict[str, Any]
    ) -> bool:
        if not await conn.pause(reply.header_delay + reply.first_delay):
            return False
        if reply.stall_after is not None:
            await conn.closed.wait()
            return False
        if reply.disconnect_after is not None:
            conn.abort()
            return False
        turn = _turn(reply, body, provider)
        payload = (
            _openai_completion(reply, turn)
            if provider == "openai"
            else _anthropic_message(reply, turn)
        )
        await self._send_json(conn, 200, self._ids(provider)[1], payload)
        return True

    async def _stream(
        self, conn: _Connection, provider: _Provider, reply: Script, body: dict[str, Any]
    ) -> bool:
        """Send a scripted stream; True if the connection can serve another request."""
        turn = _turn(reply, body, provider)
        plan = (
            _openai_stream(reply, body, turn)
            if provider == "openai"
            else _anthropic_stream(reply, turn)
        )
        if not await conn.pause(reply.header_delay):
            return False
        headers = [
            *plan.headers,
            ("transfer-encoding", "chunked"),
            ("connection", "keep-alive"),
            *self._ids(provider)[1],
        ]
        await conn.write(_head(200, headers))
        sent = 0
        for kind, data in plan.steps:
            if kind == "event":
                conn.queue(data)
                continue
            # A cut-off due at this point, or one past the last delta, which applies at "end".
            cut = next(
                (
                    name
                    for name, after in (
                        ("error", reply.error_after),
                        ("disconnect", reply.disconnect_after),
                        ("stall", reply.stall_after),
                        ("end", reply.end_without_finish_after),
                    )
                    if after is not None and (after == sent or kind == "end")
                ),
                None,
            )
            if cut is not None:
                return await self._cut(conn, plan, cut)
            if kind == "end":
                continue
            pause = reply.first_delay if sent == 0 else reply.delay
            if pause > 0:
                await conn.flush()
                if not await conn.pause(pause):
                    return False
            if reply.keepalive:
                conn.queue(plan.keepalive)
            conn.queue(data, delta=True)
            sent += 1
            if reply.delay > 0 or conn.pending_size >= _FLUSH_BYTES:
                await conn.flush()
                if conn.closed.is_set():
                    return False
        await conn.flush(last=True)
        conn.active = None
        return True

    async def _cut(self, conn: _Connection, plan: _Plan, cut: str) -> bool:
        if cut == "error":
            conn.queue(plan.error_event)
        if cut in ("error", "end"):
            await conn.flush(last=True)
            conn.active = None
            return True
        await conn.flush()
        if cut == "disconnect":
            conn.abort()
        else:
            await conn.closed.wait()
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m termchat.devserver``: serve the demo reply until Ctrl+C."""
    parser = argparse.ArgumentParser(
        prog="python -m termchat.devserver",
        description="A local OpenAI + Anthropic compatible server that streams a demo reply.",
    )
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument(
        "--delay", type=float, default=0.02, help="seconds between chunks (default 0.02)"
    )
    args = parser.parse_args(argv)
    default = Script(delay=args.delay, chunk_size=6)

    def log(line: str) -> None:
        print(line, flush=True)

    server = ProviderServer(port=args.port, default=default, log=log)
    try:
        try:
            server.start()
        except OSError:
            print(f"Port {args.port} is taken; using a free port instead.", flush=True)
            server = ProviderServer(port=0, default=default, log=log).start()
        print(
            f"termchat local provider server on {server.url}\n"
            f"  OpenAI:    export OPENAI_BASE_URL={server.openai_base_url} OPENAI_API_KEY=local\n"
            f"  Anthropic: export ANTHROPIC_BASE_URL={server.anthropic_base_url}"
            " ANTHROPIC_API_KEY=local\n"
            "Ctrl+C to stop.",
            flush=True,
        )
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
