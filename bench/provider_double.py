"""An OpenAI Chat Completions stand-in for the real-terminal benchmark, independent of termchat.

A standard-library asyncio HTTP/1.1 server on 127.0.0.1 that answers
`POST /v1/chat/completions` with an SSE stream of pre-computed chunks (role chunk, content
chunks, finish chunk, usage chunk, `[DONE]`), chunked and keep-alive, and `GET /log` with what
it sent. It shares no code with `termchat.devserver`, so the benchmark does not measure
termchat against its own idea of the wire format.

The prompt picks the reply: its last user message must contain `zq<UID> <REPLY> <RATE>`,
where REPLY names a text given with `--reply` (or `tiny`, always there, for warming a client
up) and RATE is chunks per second (0: as fast as the socket takes them). The usage chunk
reports UID as `completion_tokens`, so the client's status line can tell this reply's end
from an earlier one's. Content chunks that carry a mark (see `marked_chunks`) have their send
time logged.

    .venv/bin/python bench/provider_double.py --reply big=46000:11468
    # prints "port N"; runs until Ctrl+C, or until stdin closes if it is a pipe
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import stat
import sys
import time
from dataclasses import dataclass, field

PROMPT = re.compile(r"\bzq(\d+) (\w+) (\d+(?:\.\d+)?)\b")
MARK = re.compile(r"\bmk(\d{3})\b")
MARK_EVERY = 100  # content chunks between marks
DRAIN_EVERY = 256  # events written between drains at full speed
HEAD_LIMIT = 64 * 1024


def even_chunks(text: str, count: int) -> list[str]:
    """`text` cut into exactly `count` pieces whose lengths differ by at most one."""
    return [text[len(text) * i // count:len(text) * (i + 1) // count] for i in range(count)]


def marked_chunks(size: int, count: int, every: int = MARK_EVERY) -> list[str]:
    """`termchat.sample.long_reply(size)` in `count` chunks, with a mark ` mkNNN` appended to
    about every `every`-th chunk, so a screen shows how far the reply has got.

    A mark goes only where it stays one visible word: after a chunk that ends a word of
    prose (the next chunk starts with a space), never in a code fence or a table row.
    """
    import bisect

    from termchat.sample import long_reply

    text = long_reply(size)
    chunks = even_chunks(text, count)
    fences = [found.end() for found in re.finditer("```", text)]
    end, due, number = 0, every, 0
    for index, chunk in enumerate(chunks[:-1]):
        end += len(chunk)
        in_fence = bisect.bisect_right(fences, end) % 2 == 1
        line = text[text.rfind("\n", 0, end) + 1:end]
        if (index >= due and number < 1000 and not in_fence and line.strip()
                and not line.lstrip().startswith("|") and chunk[-1:].isalpha()
                and chunks[index + 1].startswith(" ")):
            chunks[index] = f"{chunk} mk{number:03d}"
            number += 1
            due = index + every
    return chunks


def _event(payload: dict[str, object]) -> bytes:
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _chunk(model: str, delta: dict[str, object], finish: str | None = None,
           usage: dict[str, object] | None = None, choices: bool = True) -> bytes:
    return _event({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if choices else [],
        "usage": usage,
    })


@dataclass
class Sent:
    """What the server did for one streamed request (times are `time.monotonic()`)."""

    uid: int
    reply: str
    rate: float
    started: float
    finished: float | None = None
    marks: dict[str, float] = field(default_factory=dict)
    hung_up: bool = False


class Double:
    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies = replies
        self.log: list[Sent] = []
        self._encoded: dict[tuple[str, str], list[tuple[bytes, str | None]]] = {}

    def encoded(self, reply: str, model: str) -> list[tuple[bytes, str | None]]:
        """The content events of `reply` for `model`, each with its mark (or None)."""
        key = (reply, model)
        if key not in self._encoded:
            events = []
            for text in self.replies[reply]:
                mark = MARK.search(text)
                events.append((_chunk(model, {"content": text}), mark and mark.group(0)))
            self._encoded[key] = events
        return self._encoded[key]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError,
                                 asyncio.LimitOverrunError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > HEAD_LIMIT:
                    break
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and path == "/log":
                    self._plain(writer, 200, json.dumps([vars(s) for s in self.log]).encode(),
                                "application/json")
                elif method == "POST" and path == "/v1/chat/completions":
                    await self._stream(writer, json.loads(body))
                else:
                    self._plain(writer, 404, b'{"error":{"message":"not found"}}',
                                "application/json")
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        writer.close()

    def _plain(self, writer: asyncio.StreamWriter, status: int, body: bytes, kind: str) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
        writer.write(f"HTTP/1.1 {status} {reason}\r\ncontent-type: {kind}\r\n"
                     f"content-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n".encode()
                     + body)

    async def _stream(self, writer: asyncio.StreamWriter, request: dict[str, object]) -> None:
        messages = request.get("messages") or []
        prompt = next((str(m.get("content")) for m in reversed(messages)  # type: ignore[union-attr]
                       if isinstance(m, dict) and m.get("role") == "user"), "")
        found = PROMPT.search(prompt)
        if found is None or found.group(2) not in self.replies:
            self._plain(writer, 400, json.dumps({"error": {
                "message": f"prompt must contain zqUID REPLY RATE with REPLY one of "
                           f"{sorted(self.replies)}", "type": "invalid_request_error"}}).encode(),
                        "application/json")
            return
        uid, reply, rate = int(found.group(1)), found.group(2), float(found.group(3))
        model = str(request.get("model", "gpt-4.1-mini"))
        sent = Sent(uid, reply, rate, time.monotonic())
        self.log.append(sent)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                     b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n"
                     b"x-request-id: req_bench%d\r\n\r\n" % uid)
        writer.write(_chunk(model, {"role": "assistant", "content": "", "refusal": None}))
        loop = asyncio.get_running_loop()
        events = self.encoded(reply, model)
        try:
            for index, (data, mark) in enumerate(events):
                if rate:
                    delay = sent.started + index / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
                else:
                    writer.write(data)
                    if index % DRAIN_EVERY == 0:
                        await writer.drain()
                if mark:
                    sent.marks[mark] = time.monotonic()
            writer.write(_chunk(model, {}, "stop"))
            writer.write(_chunk(model, {}, usage={
                "prompt_tokens": 7, "completion_tokens": uid, "total_tokens": uid + 7,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
                choices=False))
            data = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
            await writer.drain()
        except ConnectionError:
            sent.hung_up = True
            raise
        finally:
            sent.finished = time.monotonic()


def parse_reply(spec: str) -> tuple[str, list[str]]:
    """`NAME=SIZE:CHUNKS` -> (NAME, the marked chunks)."""
    name, _, rest = spec.partition("=")
    size, _, count = rest.partition(":")
    return name, marked_chunks(int(size), int(count))


async def run(replies: dict[str, list[str]], port: int) -> None:
    double = Double(replies)
    for name in replies:
        double.encoded(name, "gpt-4.1-mini")
    server = await asyncio.start_server(double.serve, "127.0.0.1", port, limit=HEAD_LIMIT * 2)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        if stat.S_ISFIFO(os.fstat(0).st_mode):
            # Started with a pipe as stdin: the parent closing it (or dying) ends the server.
            await asyncio.to_thread(sys.stdin.buffer.read)
        else:
            await asyncio.Event().wait()  # until Ctrl+C or a signal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reply", action="append", default=[], metavar="NAME=SIZE:CHUNKS",
                        help="a reply the prompt can ask for (long_reply(SIZE) in CHUNKS)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    replies = dict(parse_reply(spec) for spec in args.reply or ["big=46000:11468"])
    replies["tiny"] = ["Hello", " there", "."]
    asyncio.run(run(replies, args.port))


if __name__ == "__main__":
    main()
