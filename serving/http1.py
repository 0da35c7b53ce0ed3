"""A small HTTP/1.1 client for the SLM hot path: pooled keep-alive connections, one POST at a time each.

aiohttp costs about 80 us of CPU per request on this path (timeouts, tracing hooks, cookie handling,
multidicts, a stream reader per response); the gateway needs none of it to POST a JSON body to vLLM and
read the answer. This client writes the request in one ``transport.write`` and parses the response with
httptools (the C parser uvicorn uses; chunked transfer decoding included), at about a third of the cost
(docs/performance.md). Health polls and ``/tokenize`` stay on aiohttp.

Timeouts: ``connect_s`` for opening a connection; ``read_s`` from sending the request to the end of a
response read with ``read()``, and for streams read with ``iter_chunks()`` between two pieces of the
body (a stream may run longer than ``read_s`` in all, as long as it keeps moving).

Keep-alive: a connection goes back to the pool only after a complete response the server lets us keep;
idle connections older than ``idle_s`` are closed rather than reused (vLLM's server drops idle
connections after 5 s, and reusing one as it closes would fail the request). A request that fails on a
*reused* connection before any response byte arrived is sent once more on a fresh connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools


class HttpError(Exception):
    """The connection failed, closed early, or the response could not be parsed."""


class BodyTooLarge(HttpError):
    """The response body is larger than the caller accepts."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal keeps its brackets
        return (host if self.port == default else f"{host}:{self.port}").encode("idna")


def split_url(url: str) -> tuple[Origin, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Origin(parts.scheme, parts.hostname, port), target


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done: asyncio.Future[None] = self.loop.create_future()
        self.body: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's class

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - never asked for
            self._fail(HttpError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"bad HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if exc is None and self.status and not any(k in (b"content-length", b"transfer-encoding")
                                                    for k, _ in self.headers):
            self.complete = True  # a body without a length ends with the connection (HTTP/1.0 style)
            self.keep_alive = False
            self.arm(None)
            self._wake()
            return
        self._fail(HttpError(f"connection closed before the response ended ({exc or 'EOF'})"))

    # -- httptools callbacks -----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful before the message completes
        if not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > 1 << 20 and not self.paused and self.transport is not None:
            self.transport.pause_reading()  # a reader that falls behind: stop reading, TCP pushes back
            self.paused = True
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- helpers -----------------------------------------------------------------------------------
    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if not self.headers_done.done():
            self.headers_done.set_exception(exc)
            self.headers_done.exception()  # retrieved: no "never retrieved" warning if nobody waits
        self._wake()
        self.close()

    def close(self) -> None:
        self.closed = True
        self.arm(None)
        if self.transport is not None:
            self.transport.close()

    def arm(self, timeout_s: float | None) -> None:
        """(Re)start the read deadline: when it passes, the exchange fails with TimeoutError and the
        connection is closed. One timer handle per wait, cheaper than an ``asyncio.timeout`` scope."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(timeout_s, self._expire) if timeout_s is not None else None

    def _expire(self) -> None:
        self.timer = None
        self._fail(TimeoutError("no response from the server in time"))

    def take_body(self) -> bytes:
        data = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.transport.resume_reading()
            self.paused = False
        return data

    async def more(self) -> None:
        """Wait until more body arrives, the response completes or the connection fails (the read
        deadline, see ``arm``, fails it)."""
        if self.body or self.complete or self.error is not None:
            return
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def reusable(self) -> bool:
        return self.complete and not self.closed and self.error is None and self.keep_alive


class Response:
    """A response whose headers have arrived. Read it with ``read()`` or ``iter_chunks()``, then
    ``release()`` (done automatically when the body has been read to the end)."""

    def __init__(self, client: Http1Client, origin: Origin, conn: _Connection, read_s: float,
                 slot: asyncio.Semaphore) -> None:
        self._client, self._origin, self._conn, self._read_s = client, origin, conn, read_s
        self._slot = slot
        self.status = conn.status
        self.headers = conn.headers
        self._released = False

    def __del__(self) -> None:
        # A response dropped unread (e.g. a stream never iterated) must not keep its in-flight slot.
        if not self._released:
            self._released = True
            try:
                self._conn.close()
                self._slot.release()
            except Exception:  # pragma: no cover - the loop may be gone at interpreter exit
                pass

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def read(self, max_bytes: int | None = None) -> bytes:
        """The whole body. Over ``max_bytes`` it raises ``BodyTooLarge`` and drops the connection, having
        kept at most about ``max_bytes`` in memory."""
        conn = self._conn
        chunks: list[bytes] = []
        size = 0
        try:  # the deadline armed when the request was sent covers the whole answer
            declared = self.header(b"content-length")
            if max_bytes is not None and declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise BodyTooLarge(f"response body of {int(declared)} bytes is over the limit of {max_bytes}")
            while True:
                await conn.more()
                if conn.body:
                    piece = conn.take_body()
                    size += len(piece)
                    if max_bytes is not None and size > max_bytes:
                        raise BodyTooLarge(f"response body is over the limit of {max_bytes} bytes")
                    chunks.append(piece)
                if conn.error is not None:
                    raise conn.error
                if conn.complete:
                    return b"".join(chunks)
        finally:
            self.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body pieces as they arrive (chunked encoding already removed)."""
        conn = self._conn
        try:
            conn.arm(None)
            while True:
                if not (conn.body or conn.complete or conn.error):
                    conn.arm(self._read_s)  # a stream may take long in all, but must keep moving;
                    await conn.more()
                    conn.arm(None)  # while the reader is busy with a piece, nothing is timed
                if conn.body:
                    yield conn.take_body()
                    continue
                if conn.error is not None:
                    raise conn.error
                if conn.complete:
                    return
        finally:
            self.release()

    async def finish(self, timeout_s: float) -> None:
        """Skip what is left of the body (for a stream whose last event was read) so the connection
        can be kept; give up after ``timeout_s``."""
        conn = self._conn
        conn.arm(timeout_s)
        while not conn.complete and conn.error is None:
            await conn.more()
            conn.take_body()
        self.release()

    def release(self) -> None:
        """Give the connection back (a complete response) or close it (anything else)."""
        if self._released:
            return
        self._released = True
        self._conn.arm(None)
        if self._conn.reusable():
            self._client._put(self._origin, self._conn)
        else:
            self._conn.close()
        self._slot.release()


class Http1Client:
    def __init__(self, max_idle: int = 256, idle_s: float = 3.0, max_in_flight: int = 512) -> None:
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._max_idle = max_idle
        self._max_in_flight = max_in_flight
        self._slots: dict[Origin, asyncio.Semaphore] = {}
        self._idle_s = idle_s
        self._ssl: ssl.SSLContext | None = None
        self._urls: dict[str, tuple[Origin, str]] = {}

    async def request(self, url: str, body: bytes, headers: dict[str, str] | None = None, *,
                      connect_s: float = 5.0, read_s: float = 30.0) -> Response:
        """POST ``body`` and wait for the response headers. At most ``max_in_flight`` requests per
        server are open at once (each holds a connection until its response is released); more wait.
        The wait counts against ``read_s``."""
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = split_url(url)
            if len(self._urls) < 1024:
                self._urls[url] = parsed
        origin, target = parsed
        head = [b"POST ", target.encode("ascii"), b" HTTP/1.1\r\nHost: ", origin.host_header,
                b"\r\nContent-Length: ", str(len(body)).encode("ascii"), b"\r\n"]
        for name, value in (headers or {}).items():
            head += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
        head += [b"\r\n", body]
        data = b"".join(head)
        slot = self._slots.get(origin)
        if slot is None:
            slot = self._slots[origin] = asyncio.Semaphore(self._max_in_flight)
        if slot.locked():
            async with asyncio.timeout(read_s):
                await slot.acquire()
        else:
            await slot.acquire()
        try:
            conn, reused = self._get(origin), True
            if conn is None:
                conn, reused = await self._open(origin, connect_s), False
            try:
                return await self._exchange(origin, conn, data, read_s, slot)
            except HttpError:
                if not reused or conn.got_bytes:
                    raise
            # The server closed a kept-alive connection as we reused it: nothing was answered, try afresh.
            return await self._exchange(origin, await self._open(origin, connect_s), data, read_s, slot)
        except BaseException:
            slot.release()
            raise

    async def _exchange(self, origin: Origin, conn: _Connection, data: bytes, read_s: float,
                        slot: asyncio.Semaphore) -> Response:
        assert conn.transport is not None
        conn._reset()
        try:
            conn.arm(read_s)
            conn.transport.write(data)
            await conn.headers_done
        except BaseException:
            conn.close()
            raise
        return Response(self, origin, conn, read_s, slot)

    async def _open(self, origin: Origin, connect_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        ssl_ctx: Any = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ssl_ctx = self._ssl
        try:
            async with asyncio.timeout(connect_s):
                _, conn = await loop.create_connection(lambda: _Connection(loop), origin.host, origin.port,
                                                       ssl=ssl_ctx)
        except OSError as exc:
            raise HttpError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from None
        return conn

    def _get(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_s:
                return conn
            conn.close()
        return None

    def _put(self, origin: Origin, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, deque())
        now = time.monotonic()
        while idle and (idle[0].closed or now - idle[0].idle_since >= self._idle_s):
            idle.popleft().close()  # the oldest first: expired ones would otherwise wait at the bottom
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()
