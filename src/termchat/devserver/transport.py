"""HTTP/1.1 over one client connection: request parsing, chunked writing, client-gone detection."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from termchat.devserver.wire import status_phrase

_MAX_HEAD_BYTES = 64 * 1024


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
    """Content deltas written (for a raw script, body items)."""
    completed: bool = False
    """The response was sent to its (scripted) end and the body terminated properly."""
    disconnected_at: float | None = None
    """When the server noticed the client close the connection before the response was
    complete."""


@dataclass
class RawRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


def head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {status_phrase(status)}",
             f"date: {email.utils.formatdate(usegmt=True)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Connection:
    """One client connection: a background reader that notices the client leaving at once,
    a request parser over its buffer, and chunked writing that keeps the record current."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_client_gone: Callable[[Request | None], None]) -> None:
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
        # asyncio already sets it on TCP sockets; raw scripts rely on it, so it is not left to
        # an implementation detail.
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

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

    async def read_request(self) -> RawRequest | None:
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > _MAX_HEAD_BYTES or not await self._more():
                return None
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
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
        return RawRequest(method, target.split("?", 1)[0], headers, body, keep_alive)

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

    async def flush(self, *, last: bool = False, chunked: bool = True) -> None:
        """Write what is queued as one HTTP chunk (or as it is, not ``chunked``); ``last`` also
        ends the body: the terminating chunk, or nothing but the record."""
        framed = data = b"".join(self._pending)
        if chunked:
            framed = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
            if last:
                framed += b"0\r\n\r\n"
        if not framed and not last:
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
        if framed:
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
