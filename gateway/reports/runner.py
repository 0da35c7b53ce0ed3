"""Reports off the serving event loop: one report thread with its own event loop and engine, a time
limit, and a short-lived cache of recent results.

``/admin/report`` (and so the dashboard) used to build reports on the serving loop, where reading a
month of rows stalled client requests. Here a report runs on a separate thread and loop, so the serving
loop only awaits a future; identical requests within ``ttl_s`` (a dashboard refreshing, several tabs)
share one result, and one still running is joined rather than started again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

CacheKey = tuple[str, str | None, str]


class ReportTimeout(Exception):
    """The report took longer than the runner's time limit (it was cancelled)."""


class ReportRunner:
    def __init__(self, url: str, *, timeout_s: float = 30.0, ttl_s: float = 5.0, max_entries: int = 16) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._engine: AsyncEngine | None = None
        self._cache: OrderedDict[CacheKey, tuple[float, Future[dict[str, Any]]]] = OrderedDict()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slmgw-reports", daemon=True)
        self._thread.start()

    def _engine_here(self) -> AsyncEngine:  # on the report loop: engines belong to one loop
        if self._engine is None:
            from gateway.ledger.store import create_engine

            self._engine = create_engine(self.url)
        return self._engine

    async def _build(self, since: datetime, until: datetime | None, by: str) -> dict[str, Any]:
        from gateway.reports.compute import build_report

        return await asyncio.wait_for(build_report(self._engine_here(), since=since, until=until, by=by),
                                      self.timeout_s)

    async def report(self, key: CacheKey, since: datetime, until: datetime | None, by: str) -> dict[str, Any]:
        """The report for ``key`` (the request's own since/until/by strings), built on the report thread
        unless a result younger than ``ttl_s`` (or a build in progress) exists. Raises ``ReportTimeout``."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and (now - hit[0] < self.ttl_s or not hit[1].done()):
                fut = hit[1]
            else:
                fut = asyncio.run_coroutine_threadsafe(self._build(since, until, by), self._loop)
                self._cache[key] = (now, fut)
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        try:  # shielded: a client going away must not cancel a build other requests share
            return await asyncio.shield(asyncio.wrap_future(fut))
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._forget(key, fut)
            raise ReportTimeout(f"the report took longer than {self.timeout_s:g} s") from None
        except Exception:
            self._forget(key, fut)
            raise

    def _forget(self, key: CacheKey, fut: Future[dict[str, Any]]) -> None:
        with self._lock:  # failures are not cached
            entry = self._cache.get(key)
            if entry is not None and entry[1] is fut:
                del self._cache[key]

    def close(self) -> None:
        async def _dispose() -> None:
            if self._engine is not None:
                await self._engine.dispose()

        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(_dispose(), self._loop).result(5.0)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5.0)
