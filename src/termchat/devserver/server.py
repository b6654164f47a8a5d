"""The server: a daemon thread running asyncio, the reply queue, the records, the routing."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from termchat.devserver import anthropic_wire, openai_wire
from termchat.devserver.scripts import Script, generate
from termchat.devserver.transport import Connection, Request, head
from termchat.devserver.wire import ANTHROPIC_PATH, OPENAI_PATH, Plan, Provider, dumps, rand

# Below this much pending output a zero-delay stream keeps coalescing events into one write.
_FLUSH_BYTES = 64 * 1024


class ProviderServer:
    """A local OpenAI + Anthropic server on a background thread.

    ``queue()`` scripts the next replies (FIFO, shared by both endpoints); when the queue is
    empty the ``default`` reply answers. ``log``, if given, is called (on the server thread)
    with a line per request and per client disconnect. Usable as a context manager.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, default: Script | None = None,
                 *, log: Callable[[str], None] | None = None) -> None:
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
        self._thread = threading.Thread(target=self._run, args=(ready, failure),
                                        name="termchat-devserver", daemon=True)
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
            if not self._cond.wait_for(lambda: len(self._disconnects) > self._disconnects_taken,
                                       timeout):
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
                asyncio.start_server(self._serve, self.host, self.port))
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
        conn = Connection(reader, writer, self._client_gone)
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

    async def _handle(self, conn: Connection) -> bool:
        """Serve one request; False when the connection should close."""
        raw = await conn.read_request()
        if raw is None:
            return False
        provider: Provider = ("anthropic" if raw.path == ANTHROPIC_PATH
                              or (raw.path != OPENAI_PATH and "anthropic-version" in raw.headers)
                              else "openai")
        try:
            body = json.loads(raw.body) if raw.body else {}
        except ValueError:
            body = None
        rec = Request(path=raw.path, headers=raw.headers,
                      body=body if isinstance(body, dict) else {}, received_at=time.monotonic())
        conn.active = rec
        self._record(rec)
        stream = rec.body.get("stream") is True
        if self._log:
            self._log(f"{raw.method} {raw.path} model={rec.body.get('model')} "
                      f"{'stream' if stream else 'json'}")
        authorization = raw.headers.get("authorization", "")
        if raw.method != "POST" or raw.path not in (OPENAI_PATH, ANTHROPIC_PATH):
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
            if reply.raw is not None:
                return await self._raw(conn, provider, reply) and raw.keep_alive
            if reply.status != 200:
                if not await conn.pause(reply.header_delay):
                    return False
                await self._error(conn, provider, reply)
            elif stream:
                return await self._stream(conn, provider, reply, rec.body) and raw.keep_alive
            else:
                return await self._complete(conn, provider, reply, rec.body) and raw.keep_alive
        return raw.keep_alive

    def _ids(self, provider: Provider) -> tuple[str, list[tuple[str, str]]]:
        if provider == "openai":
            request_id = f"req_{secrets.token_hex(16)}"
            return request_id, [("x-request-id", request_id)]
        request_id = f"req_011C{rand(20)}"
        return request_id, [("request-id", request_id)]

    async def _send_json(self, conn: Connection, status: int, headers: list[tuple[str, str]],
                         payload: dict[str, Any]) -> None:
        data = dumps(payload).encode()
        headers = [("content-type", "application/json"), ("content-length", str(len(data))),
                   ("connection", "keep-alive"), *headers]
        rec, now = conn.active, time.monotonic()
        if rec is not None:
            rec.first_chunk_at = rec.last_chunk_at = now
            rec.completed = True
        conn.active = None
        await conn.write(head(status, headers) + data)

    async def _error(self, conn: Connection, provider: Provider, reply: Script) -> None:
        request_id, headers = self._ids(provider)
        if not reply.should_retry:
            headers.append(("x-should-retry", "false"))
        if reply.retry_after is not None:
            headers.append(("retry-after", reply.retry_after))
        if provider == "openai":
            payload = openai_wire.error_body(reply.status, reply.error_type, reply.error_message,
                                             reply.error_code)
        else:
            payload = anthropic_wire.error_body(reply.status, reply.error_type,
                                                reply.error_message, request_id)
        await self._send_json(conn, reply.status, headers, payload)

    async def _complete(self, conn: Connection, provider: Provider, reply: Script,
                        body: dict[str, Any]) -> bool:
        if not await conn.pause(reply.header_delay + reply.first_delay):
            return False
        if reply.stall_after is not None:
            await conn.closed.wait()
            return False
        if reply.disconnect_after is not None:
            conn.abort()
            return False
        turn = generate(reply, body, provider)
        payload = (openai_wire.completion(reply, turn) if provider == "openai"
                   else anthropic_wire.message(reply, turn))
        await self._send_json(conn, 200, self._ids(provider)[1], payload)
        return True

    async def _stream(self, conn: Connection, provider: Provider, reply: Script,
                      body: dict[str, Any]) -> bool:
        """Send a scripted stream; True if the connection can serve another request."""
        turn = generate(reply, body, provider)
        plan = (openai_wire.stream(reply, body, turn) if provider == "openai"
                else anthropic_wire.stream(reply, turn))
        if not await conn.pause(reply.header_delay):
            return False
        headers = [*plan.headers, ("transfer-encoding", "chunked"), ("connection", "keep-alive"),
                   *self._ids(provider)[1]]
        await conn.write(head(200, headers))
        sent = 0
        for kind, data in plan.steps:
            if kind == "event":
                conn.queue(data)
                continue
            # A cut-off due at this point, or one past the last delta, which applies at "end".
            cut = next((name for name, after in (
                ("error", reply.error_after), ("disconnect", reply.disconnect_after),
                ("stall", reply.stall_after), ("end", reply.end_without_finish_after))
                if after is not None and (after == sent or kind == "end")), None)
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

    async def _raw(self, conn: Connection, provider: Provider, reply: Script) -> bool:
        """Send ``reply.raw`` as it is; True if the connection can serve another request."""
        items = [item for item in reply.raw or [] if item]
        headers = list((openai_wire.HEADERS if provider == "openai" else anthropic_wire.HEADERS)
                       if reply.raw_headers is None else reply.raw_headers)
        named = {name.lower() for name, _ in headers}
        framing = {"chunked": [("transfer-encoding", "chunked"), ("connection", "keep-alive")],
                   "length": [("content-length", str(sum(map(len, items)))),
                              ("connection", "keep-alive")],
                   "close": [("connection", "close")]}[reply.raw_framing]
        headers += [(name, value) for name, value in framing if name not in named]
        await conn.write(head(reply.raw_status, [*headers, *self._ids(provider)[1]]))
        chunked = reply.raw_framing == "chunked"
        for n, item in enumerate(items):
            if n and not await conn.pause(reply.raw_gap):
                return False
            conn.queue(item, delta=True)
            await conn.flush(chunked=chunked)
            if conn.closed.is_set():
                return False
        await conn.flush(last=True, chunked=chunked)
        conn.active = None
        if reply.raw_framing == "close":
            conn.abort()
            return False
        return not any(name.lower() == "connection" and "close" in value.lower()
                       for name, value in headers)

    async def _cut(self, conn: Connection, plan: Plan, cut: str) -> bool:
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
        description="A local OpenAI + Anthropic compatible server that streams a demo reply.")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--delay", type=float, default=0.02,
                        help="seconds between chunks (default 0.02)")
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
            "Ctrl+C to stop.", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0

