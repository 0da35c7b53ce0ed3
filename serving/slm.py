"""Client for SLMs served by vLLM's OpenAI-compatible API.

One pooled aiohttp session for all SLM traffic: on this hot path aiohttp handles several times the
request rate of httpx's default pool at the same concurrency (see docs/performance.md and DESIGN.md).
Every failure (refused, timeout, any non-2xx) surfaces as ``UpstreamError`` with a short ``reason``,
so the dispatcher can escalate to the LLM before anything reached the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway.config import SlmBackend
from gateway.errors import UpstreamError, UpstreamTimeout


@dataclass(slots=True)
class SlmStream:
    """An open SSE stream: ``events`` yields each ``data:`` payload (bytes) up to, not including, [DONE]."""

    events: AsyncIterator[bytes]
    close: Any


class SlmClient:
    def __init__(self, limit: int = 512) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, json_serialize=None,  # type: ignore[arg-type]
                                                  auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def _headers(backend: SlmBackend) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if backend.api_key:
            headers["authorization"] = f"Bearer {backend.api_key}"
        return headers

    @staticmethod
    def _timeout(backend: SlmBackend) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=backend.timeout_s, connect=backend.connect_timeout_s)

    async def post(self, backend: SlmBackend, base_url: str, path: str, body: bytes) -> bytes:
        """POST a JSON body and return the 2xx response body; anything else raises UpstreamError."""
        url = base_url + path
        try:
            async with self.session.post(url, data=body, headers=self._headers(backend),
                                         timeout=self._timeout(backend)) as resp:
                data = await resp.read()
                if resp.status >= 300:
                    raise _status_error(resp.status, data, url)
                return data
        except TimeoutError:
            raise UpstreamTimeout(f"SLM at {base_url} timed out", reason="slm_timeout") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"SLM at {base_url} unreachable: {type(exc).__name__}",
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

    async def stream(self, backend: SlmBackend, base_url: str, path: str, body: bytes) -> SlmStream:
        """Open a streaming POST; raises UpstreamError unless the upstream answered 2xx."""
        url = base_url + path
        try:
            cm = self.session.post(url, data=body, headers=self._headers(backend),
                                   timeout=self._timeout(backend))
            resp = await cm.__aenter__()
        except TimeoutError:
            raise UpstreamTimeout(f"SLM at {base_url} timed out", reason="slm_timeout") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"SLM at {base_url} unreachable: {type(exc).__name__}",
                                reason="slm_unreachable") from None
        if resp.status >= 300:
            data = await resp.read()
            resp.release()
            raise _status_error(resp.status, data, url)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for line in resp.content:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        return
                    if payload:
                        yield payload
            except TimeoutError:
                raise UpstreamTimeout("SLM stream timed out", reason="slm_timeout") from None
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"SLM stream broke: {type(exc).__name__}", reason="slm_stream_error") from None
            finally:
                resp.release()

        async def close() -> None:
            resp.release()

        return SlmStream(events(), close)


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


