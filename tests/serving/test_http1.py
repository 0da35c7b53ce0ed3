"""serving.http1 against raw TCP servers that answer exactly as scripted: keep-alive reuse, chunked
bodies split at every byte, a server that drops an idle connection, refusals, timeouts, back-pressure."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from serving.http1 import BodyTooLarge, Http1Client, HttpError
from serving.slm import sse_batches

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


class Server:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.script(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"


def keep_alive_json(server_box: list[Server]) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            server_box[0].requests.append((head, body))
            answer = b'{"echo": ' + body + b"}"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                         + str(len(answer)).encode() + b"\r\n\r\n" + answer)
            await writer.drain()
    return script


async def test_post_reuses_one_kept_alive_connection_and_sends_the_body_as_given() -> None:
    box: list[Server] = []
    async with Server(keep_alive_json(box)) as server:
        box.append(server)
        client = Http1Client()
        for i in range(5):
            resp = await client.request(server.url, b'{"n": %d}' % i, {"content-type": "application/json"})
            assert resp.status == 200
            assert await resp.read() == b'{"echo": {"n": %d}}' % i
        client.close()
    assert server.connections == 1
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\ncontent-type: application/json\r\n" in head and b"\r\nContent-Length: 8\r\n" in head
    assert body == b'{"n": 0}'


async def test_chunked_stream_split_at_every_byte_yields_every_event() -> None:
    events = [b'data: {"i": %d}\n\n' % i for i in range(3)] + [b"data: [DONE]\n\n"]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(len(wire)):  # one byte per packet: every boundary is somewhere in the middle
            writer.write(wire[i:i + 1])
            await writer.drain()
        await reader.read()  # keep the connection open

    async with Server(script) as server:
        client = Http1Client()
        resp = await client.request(server.url, b"{}")
        got = [p async for batch in sse_batches(resp.iter_chunks()) for p in batch]
        assert got == [b'{"i": 0}', b'{"i": 1}', b'{"i": 2}', b"[DONE]"]
        assert sum(len(q) for q in client._idle.values()) == 1, "a complete chunked response keeps the connection"
        client.close()


async def test_a_kept_connection_the_server_drops_as_it_is_reused_is_retried_on_a_fresh_one() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)
        # the next request on this connection: closed unanswered (a keep-alive timeout racing the reuse)

    async with Server(script) as server:
        client = Http1Client(idle_s=60)
        first = await client.request(server.url, b"{}")
        assert await first.read() == b"ok"
        second = await client.request(server.url, b"{}")
        assert second.status == 200 and await second.read() == b"ok"
        client.close()
    assert server.connections == 2


async def test_connections_closed_while_idle_are_not_reused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async with Server(script) as server:
        client = Http1Client(idle_s=60)
        assert await (await client.request(server.url, b"{}")).read() == b"ok"
        await asyncio.sleep(0.05)  # the server's close arrives while the connection sits in the pool
        assert await (await client.request(server.url, b"{}")).read() == b"ok"
        client.close()
    assert server.connections == 2


async def test_connection_close_answers_are_not_reused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()

    async with Server(script) as server:
        client = Http1Client()
        for _ in range(2):
            assert await (await client.request(server.url, b"{}")).read() == b"ok"
        client.close()
    assert server.connections == 2


async def test_refused_connection_is_an_http_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HttpError, match="cannot connect"):
        await Http1Client().request(f"http://127.0.0.1:{port}/v1/x", b"{}", connect_s=1)


async def test_silent_server_times_out_on_headers_and_on_a_stalled_stream() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with Server(silent) as server:
        with pytest.raises(TimeoutError):
            await Http1Client().request(server.url, b"{}", read_s=0.2)

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with Server(stalls) as server:
        resp = await Http1Client().request(server.url, b"{}", read_s=0.3)
        pieces: list[bytes] = []
        with pytest.raises(TimeoutError):
            async for piece in resp.iter_chunks():
                pieces.append(piece)
        assert pieces == [b"hello"]


async def test_server_that_breaks_off_mid_body_is_an_http_error() -> None:
    async def breaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()

    async with Server(breaks) as server:
        resp = await Http1Client().request(server.url, b"{}")
        with pytest.raises(HttpError, match="closed before the response ended"):
            await resp.read()


async def test_garbage_is_an_http_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with Server(garbage) as server:
        with pytest.raises(HttpError, match="bad HTTP response"):
            await Http1Client().request(server.url, b"{}")


async def test_a_large_body_arrives_whole_through_back_pressure() -> None:
    big = bytes(range(256)) * (3 * 4096)  # 3 MiB: past the 1 MiB read pause

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big))
        writer.write(big)
        await writer.drain()
        await reader.read()

    async with Server(script) as server:
        resp = await Http1Client().request(server.url, b"{}")
        assert await resp.read() == big


async def test_sse_parser_handles_crlf_comments_and_a_missing_final_newline() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for p in [b": keep-alive\r\n\r\ndata: {\"a\"", b": 1}\r\n\r\nevent: x\ndata:", b" [DONE]"]:
            yield p

    assert [b async for b in sse_batches(pieces())] == [[b'{"a": 1}'], [b"[DONE]"]]


async def test_sse_batches_group_the_events_that_arrive_together() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"data: 1\n\ndata: 2\n\nda"
        yield b"ta: 3\n"
        yield b"\ndata: 4\n\ndata: [DONE]\n\n"

    assert [b async for b in sse_batches(pieces())] == [[b"1", b"2"], [b"3"], [b"4", b"[DONE]"]]


async def test_a_slow_reader_is_not_timed_out_only_a_silent_server_is() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"1\r\nb\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with Server(script) as server:
        resp = await Http1Client().request(server.url, b"{}", read_s=0.3)
        pieces: list[bytes] = []
        async for piece in resp.iter_chunks():
            pieces.append(piece)
            await asyncio.sleep(0.5)  # the consumer (a slow client downstream) takes longer than read_s
        assert pieces == [b"a", b"b"]


async def test_requests_beyond_the_in_flight_limit_wait_for_a_slot() -> None:
    open_now = 0
    most = 0

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most
        while True:
            await read_request(reader)
            open_now += 1
            most = max(most, open_now)
            await asyncio.sleep(0.1)
            open_now -= 1
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async with Server(slow) as server:
        client = Http1Client(max_in_flight=2)

        async def one() -> bytes:
            return await (await client.request(server.url, b"{}")).read()

        assert await asyncio.gather(*(one() for _ in range(6))) == [b"ok"] * 6
        assert most == 2
        # a response dropped without being read gives its slot back; a full client times out waiting
        held = await client.request(server.url, b"{}")
        dropped = await client.request(server.url, b"{}")
        del dropped
        assert await (await client.request(server.url, b"{}", read_s=1)).read() == b"ok"
        also_held = await client.request(server.url, b"{}")
        with pytest.raises(TimeoutError):  # both slots held by responses nobody has read yet
            await client.request(server.url, b"{}", read_s=0.2)
        assert await held.read() == b"ok" and await also_held.read() == b"ok"
        assert await (await client.request(server.url, b"{}")).read() == b"ok"
        client.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and its key."""
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                           "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key),
                           "-out", str(cert)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a test certificate: {made.stderr[-200:]!r}")
    return cert, key


async def test_https_with_a_trusted_certificate(certificate: tuple[Path, Path]) -> None:
    import ssl

    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecure")
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(script, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        untrusting = Http1Client()
        with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.request(f"https://localhost:{port}/v1/x", b"{}")
        client = Http1Client()
        client._ssl = ssl.create_default_context(cafile=str(cert))  # as SSL_CERT_FILE would make it
        resp = await client.request(f"https://localhost:{port}/v1/x", b"{}")
        assert await resp.read() == b"secure"
        client.close()
    finally:
        server.close()


async def test_a_body_without_length_ends_with_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")
        for piece in (b'{"a": ', b"1}"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
        # then the connection closes: that is the end of the body

    async with Server(script) as server:
        client = Http1Client()
        assert await (await client.request(server.url, b"{}")).read() == b'{"a": 1}'
        assert not client._idle.get(next(iter(client._slots))), "a connection that ended the body is not kept"


def test_urls_split_into_origin_target_and_host_header() -> None:
    from serving.http1 import split_url

    origin, target = split_url("http://vllm.internal:8000/v1/chat/completions?x=1")
    assert (origin.host, origin.port, target, origin.host_header) == \
        ("vllm.internal", 8000, "/v1/chat/completions?x=1", b"vllm.internal:8000")
    assert split_url("https://gpu.example.com/v1")[0].host_header == b"gpu.example.com"
    assert split_url("http://[::1]:8000/v1")[0].host_header == b"[::1]:8000"
    with pytest.raises(ValueError, match="not an http"):
        split_url("ftp://x/y")


async def test_ipv6_loopback() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        assert b"\r\nHost: [::1]:" in head
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nv6")
        await writer.drain()
        await reader.read()

    try:
        server = await asyncio.start_server(script, "::1", 0)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    port = server.sockets[0].getsockname()[1]
    try:
        assert await (await Http1Client().request(f"http://[::1]:{port}/v1/x", b"{}")).read() == b"v6"
    finally:
        server.close()


@pytest.mark.parametrize("declared", [True, False])
async def test_a_body_over_the_cap_is_refused_and_not_held(declared: bool) -> None:
    big = b"x" * 200_000

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if declared:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big) + big)
        else:  # chunked: the size is only known as it arrives
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for i in range(0, len(big), 10_000):
                writer.write(b"%x\r\n%s\r\n" % (10_000, big[i:i + 10_000]))
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with Server(script) as server:
        client = Http1Client()
        resp = await client.request(server.url, b"{}")
        with pytest.raises(BodyTooLarge):
            await resp.read(max_bytes=50_000)
        assert sum(len(q) for q in client._idle.values()) == 0, "a refused body's connection is not kept"
        resp = await client.request(server.url, b"{}")
        assert len(await resp.read(max_bytes=500_000)) == len(big)  # under the cap: read as usual
        client.close()


async def test_a_stream_event_that_never_ends_is_refused() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b'data: {"i": 0}\n\n'
        for _ in range(100):
            yield b"data: " + b"y" * 1000  # no newline: one event growing forever

    got: list[bytes] = []
    with pytest.raises(BodyTooLarge):
        async for batch in sse_batches(pieces(), max_event_bytes=20_000):
            got.extend(batch)
    assert got == [b'{"i": 0}']
