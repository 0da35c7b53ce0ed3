"""Client for SLMs served by vLLM's OpenAI-compatible API.

Completions and streams go through ``serving.http1``, a small pooled HTTP/1.1 client that costs about
half of aiohttp's CPU per request on this hot path (docs/performance.md); the health polls and
``/tokenize`` use one pooled aiohttp session. Every failure (refused, timeout, any non-2xx) surfaces as
``UpstreamError`` with a short ``reason``, so the dispatcher can escalate to the LLM before anything
reached the client.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import orjson

from gateway.config import SlmBackend
from gateway.errors import UpstreamError, UpstreamTimeout
from serving.http1 import BodyTooLarge, Http1Client, HttpError, Response


class SlmClient:
    def __init__(self, limit: int = 512) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self.http = Http1Client(max_idle=limit)

    @property
    def session(self) -> aiohttp.ClientSession:
        """aiohttp session for health polls and ``/tokenize``."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, json_serialize=None,  # type: ignore[arg-type]
                                                  auto_decompress=True)
        return self._session

    async def close(self) -> None:
        self.http.close()
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def _headers(backend: SlmBackend) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if backend.api_key:
            headers["authorization"] = f"Bearer {backend.api_key}"
        return headers

    async def _open(self, backend: SlmBackend, base_url: str, path: str, body: bytes) -> Response:
        """POST and wait for the response headers; a non-2xx answer raises UpstreamError."""
        try:
            resp = await self.http.request(base_url + path, body, self._headers(backend),
                                           connect_s=backend.connect_timeout_s, read_s=backend.timeout_s)
            encoding = resp.header(b"content-encoding")
            if encoding not in (None, b"identity"):
                resp.release()
                raise UpstreamError(f"SLM at {base_url} sent an encoded body ({encoding.decode('latin-1')})",
                                    reason="slm_bad_response")
            if resp.status >= 300:
                raise _status_error(resp.status, await resp.read(), base_url + path)
        except TimeoutError:
            raise UpstreamTimeout(f"SLM at {base_url} timed out", reason="slm_timeout") from None
        except HttpError as exc:
            raise UpstreamError(f"SLM at {base_url} unreachable: {exc}", reason="slm_unreachable") from None
        return resp

    async def post(self, backend: SlmBackend, base_url: str, path: str, body: bytes) -> bytes:
        """POST a JSON body and return the 2xx response body; anything else raises UpstreamError."""
        resp = await self._open(backend, base_url, path, body)
        try:
            return await resp.read(backend.max_response_bytes)
        except BodyTooLarge as exc:
            raise UpstreamError(f"SLM at {base_url}: {exc}", reason="slm_response_too_large") from None
        except TimeoutError:
            raise UpstreamTimeout(f"SLM at {base_url} timed out", reason="slm_timeout") from None
        except HttpError as exc:
            raise UpstreamError(f"SLM at {base_url} broke off its answer: {exc}",
                                reason="slm_unreachable") from None

    async def tokenize(self, backend: SlmBackend, root: str, payload: dict[str, Any],
                       timeout_s: float = 2.0) -> int | None:
        """Prompt token count from vLLM's ``/tokenize`` (``root`` is the server root, without /v1);
        None when it cannot say (old vLLM, timeout, error): the caller then estimates."""
        try:
            async with self.session.post(root + "/tokenize", data=orjson.dumps(payload),
                                         headers=self._headers(backend),
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                if resp.status != 200:
                    return None
                data = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        count = data.get("count") if isinstance(data, dict) else None
        return count if isinstance(count, int) else None

    async def stream(self, backend: SlmBackend, base_url: str, path: str,
                     body: bytes) -> AsyncIterator[list[bytes]]:
        """Open a streaming POST; raises UpstreamError unless the upstream answered 2xx. Returns the
        ``data:`` payloads up to, not including, [DONE], in batches (the events that arrived together,
        so they can be passed on in one write). The read timeout applies to each gap between events,
        not to the whole stream. A stream dropped unread gives its connection back when collected."""
        resp = await self._open(backend, base_url, path, body)

        async def events() -> AsyncIterator[list[bytes]]:
            try:
                async with contextlib.aclosing(sse_batches(resp.iter_chunks(),
                                                           backend.max_response_bytes)) as batches:
                    async for batch in batches:
                        if b"[DONE]" in batch:
                            if done := batch[:batch.index(b"[DONE]")]:
                                yield done
                            await resp.finish(0.5)  # the end of the chunked body follows: keep the connection
                            return
                        yield batch
            except TimeoutError:
                raise UpstreamTimeout("SLM stream timed out", reason="slm_timeout") from None
            except BodyTooLarge as exc:
                raise UpstreamError(f"SLM stream: {exc}", reason="slm_response_too_large") from None
            except HttpError as exc:
                raise UpstreamError(f"SLM stream broke: {exc}", reason="slm_stream_error") from None
            finally:
                resp.release()

        return events()


async def sse_batches(chunks: AsyncIterator[bytes],
                      max_event_bytes: int | None = None) -> AsyncGenerator[list[bytes], None]:
    """The non-empty ``data:`` payloads of a server-sent event stream, however its bytes are split: for
    each piece received, the payloads completed by it (pieces that complete none yield nothing). A line
    that grows past ``max_event_bytes`` without ending raises ``BodyTooLarge``."""
    rest = b""
    async for chunk in chunks:
        rest += chunk
        if b"\n" not in chunk:
            if max_event_bytes is not None and len(rest) > max_event_bytes:
                raise BodyTooLarge(f"a stream event is over the limit of {max_event_bytes} bytes")
            continue
        *lines, rest = rest.split(b"\n")
        batch = [payload for line in lines if line.startswith(b"data:") and (payload := line[5:].strip())]
        if batch:
            yield batch
    if rest.startswith(b"data:") and rest[5:].strip():
        yield [rest[5:].strip()]


def _status_error(status: int, data: bytes, url: str) -> UpstreamError:
    detail = data[:300].decode("utf-8", "replace")
    if status == 429:
        reason = "slm_overloaded"
    elif status >= 500:
        reason = f"slm_http_{status}"
    else:
        # vLLM answers 400 for a prompt over the context window and 404 for an adapter it does not
        # serve: both are reasons to let the LLM answer, not the client's error.
        reason = f"slm_rejected_{status}"
    return UpstreamError(f"SLM returned HTTP {status}: {detail}", reason=reason)
