"""Scripted replies, and what the "model" generates from a script and the request it answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from termchat.devserver.wire import ANTHROPIC_PATH, DEFAULT_MODEL, OPENAI_PATH, Provider

_QUOTE_LIMIT = 300


@dataclass
class ToolCall:
    """A function call the model makes, streamed after the reply's text (if any)."""

    name: str
    arguments: str
    """The JSON text the model "generates", sent verbatim: it may be invalid JSON on purpose."""
    id: str | None = None
    """None -> a fresh id per response: "call_" + 24 alphanumerics (OpenAI), "toolu_01" + 22
    (Anthropic)."""
    chunk_size: int = 8
    """Characters (code points) per arguments fragment."""

    @property
    def fragments(self) -> list[str]:
        return cut(self.arguments, self.chunk_size)


@dataclass
class Script:
    """A scripted reply; the server renders it in whichever wire format was asked for.

    Cut-off counts (``error_after`` and friends) count content deltas (text, thinking and
    tool-call argument fragments alike); a count at or beyond the number of deltas applies
    after the last one, before the finish.
    """

    text: str = ""
    """The reply text; "" (with ``chunks`` and ``tool_calls`` unset) means the demo reply
    echoing the prompt."""
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
    """Raw finish/stop reason; None -> "stop" (OpenAI) / "end_turn" (Anthropic), or with tool
    calls "tool_calls" / "tool_use"."""
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
    tool_calls: list[ToolCall] = field(default_factory=list)
    """Calls streamed after the text: OpenAI ``delta.tool_calls`` by index, Anthropic one
    ``tool_use`` block each. Non-streamed replies carry them too."""
    interleave: bool = False
    """OpenAI: parallel calls' fragments alternate between indexes (each call's header still
    comes before its first fragment), as real parallel calls can. Anthropic content blocks
    never interleave, so it is ignored there."""
    raw: list[bytes] | None = None
    """The response body exactly, written item by item: each item is its own TCP write
    (TCP_NODELAY, drained, and with ``raw_gap`` seconds between items) and, with chunked
    framing, its own HTTP chunk. An empty item writes nothing. With ``raw`` set, everything
    else about the reply is ignored, for streaming and non-streaming requests alike; the
    event helpers (``openai_chunk``, ``anthropic_stream_events``...) build realistic items."""
    raw_status: int = 200
    raw_headers: list[tuple[str, str]] | None = None
    """None -> the provider's normal event-stream headers (content-type etc.). The request-id
    header is always added, and so are the framing headers ``raw_framing`` implies
    (transfer-encoding, content-length, connection) unless these headers name them: a script
    can lie about its framing, e.g. chunk-frame its own items under "close"."""
    raw_framing: Literal["chunked", "length", "close"] = "chunked"
    """"length": a content-length of all the items; "close": neither, the body ends when the
    server closes the socket after the last item (end it early to cut a body abruptly)."""
    raw_gap: float = 0.0
    """Seconds between raw items; above 0 each item arrives in a read of its own."""


@dataclass
class Turn:
    """What the model "generated" for one request, independent of the wire format."""

    model: str
    deltas: list[str]
    thinking_deltas: list[str]
    calls: list[ToolCall]
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int


def text_of(content: object) -> str:
    """Text of a message's content: a string or a list of typed parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def _tool_results(content: object) -> list[object]:
    """The contents of an Anthropic user message's ``tool_result`` blocks."""
    if not isinstance(content, list):
        return []
    return [p.get("content") for p in content
            if isinstance(p, dict) and p.get("type") == "tool_result"]


def _latest_input(messages: list[Any]) -> str:
    """The text of the latest user input, or "(tool results)" when that input is tool output
    (an OpenAI ``tool`` message, or Anthropic ``tool_result`` blocks with no text beside)."""
    for m in reversed(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "tool"):
            continue
        text = text_of(m.get("content"))
        if m["role"] == "tool" or (not text.strip() and _tool_results(m.get("content"))):
            return "(tool results)"
        return text
    return ""


def _prompt(body: dict[str, Any]) -> tuple[str, int]:
    """What the demo reply quotes, and the number of prompt characters (system included)."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    contents = [m.get("content") for m in messages if isinstance(m, dict)]
    chars = sum(len(text_of(c)) + sum(len(text_of(r)) for r in _tool_results(c))
                for c in contents)
    return _latest_input(messages), len(text_of(body.get("system"))) + chars


def demo_text(last_user: str) -> str:
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
        f"| OpenAI | `{OPENAI_PATH}` |\n"
        f"| Anthropic | `{ANTHROPIC_PATH}` |\n\n"
        "```python\n"
        "def greet(name: str) -> str:\n"
        '    return f"Hello, {name}!"\n'
        "```\n"
    )


def cut(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def generate(reply: Script, body: dict[str, Any], provider: Provider) -> Turn:
    last_user, prompt_chars = _prompt(body)
    if provider == "openai" and reply.refusal:
        deltas = cut(reply.refusal, reply.chunk_size)
    elif reply.chunks is not None:
        deltas = list(reply.chunks)
    else:
        text = reply.text or reply.refusal or ("" if reply.tool_calls else demo_text(last_user))
        deltas = cut(text, reply.chunk_size)
    thinking = cut(reply.thinking, reply.chunk_size) if provider == "anthropic" else []
    generated = (sum(map(len, deltas)) + sum(map(len, thinking))
                 + sum(len(c.name) + len(c.arguments) for c in reply.tool_calls))
    return Turn(
        model=str(body.get("model") or DEFAULT_MODEL), deltas=deltas, thinking_deltas=thinking,
        calls=list(reply.tool_calls),
        input_tokens=prompt_chars // 4 + 1 if reply.input_tokens is None else reply.input_tokens,
        output_tokens=(generated // 4 + 1 + reply.reasoning_tokens
                       if reply.output_tokens is None else reply.output_tokens),
        cached_tokens=reply.cached_tokens, reasoning_tokens=reply.reasoning_tokens)
