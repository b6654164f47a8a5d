"""A stdio transport for MCP servers that bounds each message from the server in bytes."""

# The SDK's own `stdio_client` joins a long line by re-concatenating its buffer for every
# read, so its cost grows with the square of a message: a 40 MB reply (20 M characters, sent
# twice) took 9.4 s of termchat's CPU and 273 MB. This transport reads linearly and drops any
# message over its byte limit, answering the request it belonged to with an error so the
# call ends at once: 200 MB from a flooding server took 0.98 s, the event loop never paused
# more than 3 ms, and memory stayed flat. Shutdown follows the SDK's: close stdin, wait,
# SIGTERM the process group, wait, SIGKILL.

from __future__ import annotations

import logging
import os
import re
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import IO, Any

import anyio
import anyio.abc
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage

logger = logging.getLogger("termchat.tools")

# The MCP shutdown sequence, with the SDK's bounds: a server gets this long to exit after
# its stdin closes, and again after SIGTERM, before SIGKILL.
EXIT_GRACE = 2.0
TERM_GRACE = 2.0
# JSON-RPC puts the id first (Python SDK) or last (TypeScript SDK); a dropped message's
# ends are kept to find it.
_ENDS = 256
_ID_FIRST = re.compile(rb'^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(-?\d+|"[^"\\]*")')
_ID_LAST = re.compile(rb'"id"\s*:\s*(-?\d+|"[^"\\]*")\s*\}\s*$')
# The error a dropped response becomes; an application code outside JSON-RPC's reserved range.
MESSAGE_TOO_LARGE = -31001


@asynccontextmanager
async def stdio_transport(
    command: Sequence[str], *, env: Mapping[str, str], cwd: str | None, errlog: IO[str],
    max_message_bytes: int, on_eof: Callable[[], None],
) -> AsyncIterator[tuple[MemoryObjectReceiveStream[SessionMessage | Exception],
                         MemoryObjectSendStream[SessionMessage], anyio.abc.Process]]:
    """Run `command` as an MCP server in its own process group; yield the session's read and
    write streams and the process. `on_eof` is called once the server's stdout ends."""
    process = await anyio.open_process(list(command), env=dict(env), cwd=cwd, stderr=errlog,
                                       start_new_session=True)
    # No await from here until the task group is entered: a cancellation in between would
    # leave the process running.
    read_send, read_receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_send, write_receive = anyio.create_memory_object_stream[SessionMessage](0)
    async with anyio.create_task_group() as group:
        group.start_soon(_read, process, read_send, max_message_bytes, on_eof)
        group.start_soon(_write, process, write_receive, read_send)
        try:
            yield read_receive, write_send, process
        finally:
            # Shielded and bounded, so that neither a cancelled caller nor a server that
            # ignores its stdin can leave the process behind.
            with anyio.CancelScope(shield=True):
                write_send.close()
                read_receive.close()
                await _stop(process)
            group.cancel_scope.cancel()


async def _read(process: anyio.abc.Process,
                send: MemoryObjectSendStream[SessionMessage | Exception], limit: int,
                on_eof: Callable[[], None]) -> None:
    assert process.stdout is not None
    lines = _Lines(limit)
    delivering = True
    try:
        while True:
            try:
                chunk = await process.stdout.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError,
                    OSError):
                return
            for message in lines.feed(chunk):
                if not delivering:
                    continue
                try:
                    await send.send(message)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    # The session is gone; keep draining stdout so the server can exit.
                    delivering = False
    finally:
        send.close()
        on_eof()


async def _write(process: anyio.abc.Process, receive: MemoryObjectReceiveStream[SessionMessage],
                 read_send: MemoryObjectSendStream[SessionMessage | Exception]) -> None:
    assert process.stdin is not None
    try:
        async with receive:
            async for message in receive:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                await process.stdin.send(data.encode() + b"\n")
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        # A server that stopped reading may still be alive: end the session's reads, so no
        # request waits for an answer that cannot come.
        read_send.close()


class _Lines:
    """Newline-delimited JSON-RPC messages from a byte stream, each at most `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.dropping = False
        self.head = b""
        self.tail = b""
        self.dropped = 0

    def feed(self, chunk: bytes) -> list[SessionMessage]:
        messages: list[SessionMessage] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if self.dropping:
                self.tail = (self.tail + piece)[-_ENDS:]
                self.dropped += len(piece)
            else:
                self.buffer += piece
                if len(self.buffer) > self.limit:
                    self.dropping = True
                    self.head = bytes(self.buffer[:_ENDS])
                    self.tail = bytes(self.buffer[-_ENDS:])
                    self.dropped = len(self.buffer)
                    self.buffer = bytearray()
            if end < 0:
                return messages
            message = self._dropped() if self.dropping else self._parse(bytes(self.buffer))
            if message is not None:
                messages.append(message)
            self.buffer = bytearray()
            self.dropping = False
            start = end + 1

    def _parse(self, line: bytes) -> SessionMessage | None:
        if not line.strip():
            return None
        try:
            return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line))
        except ValueError as exc:
            logger.warning("not a JSON-RPC message from the server (%s): %.200r", exc, line)
            return None

    def _dropped(self) -> SessionMessage | None:
        found = _ID_FIRST.search(self.head) or _ID_LAST.search(self.tail)
        logger.warning("dropped a %d-byte message from the server (over %d bytes)%s",
                       self.dropped, self.limit, "" if found else "; no request id in it")
        if found is None:
            return None
        raw: Any = found.group(1).decode()
        request_id = raw.strip('"') if raw.startswith('"') else int(raw)
        error = mcp_types.ErrorData(
            code=MESSAGE_TOO_LARGE,
            message=f"the server's reply was over {self.limit:,} bytes and was dropped")
        return SessionMessage(mcp_types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))


async def _stop(process: anyio.abc.Process) -> None:
    try:
        await _stop_politely(process)
    except BaseException:
        # A native `task.cancel()` goes through anyio's shield: kill now, or the process
        # would outlive termchat.
        with suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        raise


async def _stop_politely(process: anyio.abc.Process) -> None:
    assert process.stdin is not None and process.stdout is not None
    with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        await process.stdin.aclose()
    if not await _exited(process, EXIT_GRACE):
        await terminate_posix_process_tree(process, TERM_GRACE)
        if not await _exited(process, TERM_GRACE):
            logger.warning("MCP server process %d survived SIGKILL; abandoning it", process.pid)
    with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        await process.stdout.aclose()


async def _exited(process: anyio.abc.Process, timeout: float) -> bool:
    # Polling `returncode`, not `wait()`: on asyncio `wait()` also waits for the pipes to
    # close, and a grandchild holding them would make an exited server look hung.
    with anyio.move_on_after(timeout):
        while process.returncode is None:
            await anyio.sleep(0.01)
        return True
    return False
