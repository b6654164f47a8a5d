"""What both SDK providers share: the HTTP client, typed errors for anything the SDK raises,
and reading what a stream sends as the untrusted data it is."""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar

import httpx2

from termchat.config import ModelConfig
from termchat.errors import ProviderError
from termchat.providers._errors import map_error

T = TypeVar("T")


# An event stream's socket is read at most this often (a read that fills the buffer is followed
# by the next at once), each read taking all that came in the meantime: the socket is not
# watched between reads. A wake-up of the event loop costs about 0.2 ms of CPU on an idle
# machine, far more than parsing the chunk it brings: at 190 chunks a second, a read per chunk
# was a third of the TUI's CPU. 1/30 s is the TUI's frame, so a chunk waits in the kernel no
# longer than it would otherwise wait for its frame.
READ_PACE = 1 / 30


class _PacedReads:
    """The reads of the connection an event stream comes over, paced while the stream lasts.

    httpx offers no way to give its connection pool a network backend, so the connection's
    stream (the `network_stream` extension of the response) has its `read` stood in for."""

    def __init__(self, network: Any, pace: float) -> None:
        self._network = network
        self._read = network.read
        self._pace = pace
        self._next = 0.0
        setattr(network, "read", self.read)  # noqa: B010 (an instance's method stood in for)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        loop = asyncio.get_running_loop()
        if (wait := self._next - loop.time()) > 0:
            await asyncio.sleep(wait)
        data: bytes = await self._read(max_bytes, timeout)
        # Reads keep to their beat: one a little late does not put off the next. After a
        # pause in the stream the beat starts again; after a full read, more is waiting and
        # the next read goes at once.
        if len(data) < max_bytes:
            self._next = max(self._next + self._pace, loop.time() + self._pace / 2)
        else:
            self._next = 0.0
        return data

    def end(self) -> None:
        """The stream is over: the connection, back in the pool, reads as it did."""
        if vars(self._network).get("read") == self.read:
            delattr(self._network, "read")


class _EventStream(httpx2.AsyncByteStream):
    """An event stream's bytes, its connection's reads paced; with `repair`, invalid UTF-8
    replaced (U+FFFD), so one bad byte in a delta costs one character instead of the rest of
    the reply (the SDKs decode strictly)."""

    def __init__(self, inner: httpx2.AsyncByteStream, repair: bool,
                 reads: _PacedReads | None) -> None:
        self._inner = inner
        self._repair = repair
        self._reads = reads

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if not self._repair:
            async for data in self._inner:
                yield data
            return
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        async for data in self._inner:
            yield decoder.decode(data).encode()
        yield decoder.decode(b"", final=True).encode()

    async def aclose(self) -> None:
        if self._reads is not None:
            self._reads.end()
        await self._inner.aclose()


async def _event_streams(response: httpx2.Response) -> None:
    if "event-stream" not in response.headers.get("content-type", ""):
        return
    assert isinstance(response.stream, httpx2.AsyncByteStream)
    # Only a body sent as it is can be repaired: a compressed one is decoded after this.
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    network = response.extensions.get("network_stream")
    reads = None
    # A stream of another transport (no `read`, or one that cannot be stood in for) is read
    # as it comes.
    if callable(getattr(network, "read", None)) and hasattr(network, "__dict__"):
        reads = _PacedReads(network, READ_PACE)
    response.stream = _EventStream(response.stream, encoding in ("", "identity"), reads)


# A continuation without a prefill: the reply so far as the assistant's turn, then this.
CONTINUE_INSTRUCTION = ("Your reply above was cut off. Continue it from exactly where it "
                        "stopped: do not repeat anything, do not comment, start with the very "
                        "next characters (a space or a line break if one comes next).")


class SDKProvider:
    """The base of a provider built on one of the official SDKs (given as `sdk`)."""

    sdk: ModuleType
    # The SDK's own base exception: what its request can raise besides transport errors.
    sdk_error: type[Exception]

    def __init__(self, model: ModelConfig, api_key: str, client_class: Any) -> None:
        self.model = model
        self._secrets = [api_key]
        self._client = client_class(
            api_key=api_key,
            base_url=model.base_url or None,
            # termchat retries itself (turn.run_turn), so the user sees what it waits for.
            max_retries=0,
            timeout=httpx2.Timeout(model.idle_timeout, connect=model.connect_timeout),
            http_client=self.sdk.DefaultAsyncHttpxClient(
                event_hooks={"response": [_event_streams]}),
        )

    def _error(self, exc: BaseException, *, started: bool, received: bool = False
               ) -> ProviderError:
        return map_error(exc, self.sdk, self.model, started=started, received=received,
                         secrets=self._secrets)

    async def _open(self, request: Awaitable[T]) -> T:
        """The SDK's stream for `request`, once the response headers are in."""
        try:
            return await request
        except (self.sdk_error, httpx2.HTTPError, ValueError) as exc:
            raise self._error(exc, started=False) from None

    async def _items(self, stream: Any, received: Callable[[], bool]
                     ) -> AsyncGenerator[Any, None]:
        """The SDK stream's items; closing this (or cancelling its reader) closes the HTTP
        response at once, whatever the consumer was awaiting. Only the SDK's own failures are
        mapped (`received` says whether any of the reply had arrived by then): an exception
        from termchat's handling of an item is a bug, and stays one."""
        async with stream:
            iterator = aiter(stream)
            while True:
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    raise self._error(exc, started=True, received=received()) from None
                yield item

    async def aclose(self) -> None:
        await self._client.close()


def field(obj: Any, name: str) -> Any:
    """`obj[name]` of a JSON object of a stream, or None for anything else (a hostile server
    may send a string, a list or a number where an object belongs)."""
    return obj.get(name) if isinstance(obj, dict) else None


def text_field(obj: Any, name: str) -> str | None:
    value = field(obj, name)
    return value if isinstance(value, str) else None


def count_field(obj: Any, name: str) -> int | None:
    """A token count: a non-negative integer, else unknown."""
    value = field(obj, name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def content_type(stream: Any) -> str:
    """The content type the stream's response said it has ("" if none)."""
    value = stream.response.headers.get("content-type", "")
    return value if isinstance(value, str) else ""
