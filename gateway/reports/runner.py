"""Reports off the serving event loop: built in a report process (default) or on a report thread, with
a time limit and a short-lived cache of recent results.

``/admin/report`` (and so the dashboard) used to build reports on the serving loop, where reading a
month of rows stalled client requests. Here the serving loop only awaits a future. In the default
``process`` mode the report is built in one long-lived child process (``gateway.reports.child``), so it
neither holds the worker's GIL nor grows its memory; ``thread`` mode uses a thread with its own event
loop and engine (less isolation, no extra process). Identical requests within ``ttl_s`` (a dashboard
refreshing, several tabs) share one result, and a request joins a build in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

CacheKey = tuple[str, str | None, str]
_GRACE_S = 5.0
"""How long past its time limit a report process may take to give up before it is killed."""


class ReportTimeout(Exception):
    """The report took longer than the runner's time limit (it was cancelled)."""


class ReportRunner:
    def __init__(self, url: str, *, mode: Literal["process", "thread"] = "process", timeout_s: float = 30.0,
                 ttl_s: float = 5.0, max_entries: int = 16) -> None:
        self.url = url
        self.mode = mode
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._cache: OrderedDict[CacheKey, tuple[float, Future[dict[str, Any]]]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._engine: AsyncEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if mode == "process":
            self._start_pool()
        else:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="slmgw-reports", daemon=True)
            self._thread.start()

    # -- process mode ------------------------------------------------------------------------------

    def _start_pool(self) -> None:
        from gateway.reports import child

        # spawn: a clean interpreter (forking a worker with running threads and open sockets is unsafe)
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=child.init)
        self._pool.submit(child.warm_up)

    def _kill_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for proc in list(getattr(pool, "_processes", {}).values()):  # a report stuck past its limit
            with contextlib.suppress(Exception):
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    # -- thread mode -------------------------------------------------------------------------------

    def _engine_here(self) -> AsyncEngine:  # on the report loop: engines belong to one loop
        if self._engine is None:
            from gateway.ledger.store import create_engine

            self._engine = create_engine(self.url)
        return self._engine

    async def _build(self, since: datetime, until: datetime | None, by: str) -> dict[str, Any]:
        from gateway.reports.compute import build_report

        return await asyncio.wait_for(build_report(self._engine_here(), since=since, until=until, by=by),
                                      self.timeout_s)

    # -- both --------------------------------------------------------------------------------------

    def _submit(self, since: datetime, until: datetime | None, by: str) -> Future[dict[str, Any]]:
        if self.mode == "thread":
            assert self._loop is not None
            return asyncio.run_coroutine_threadsafe(self._build(since, until, by), self._loop)
        from gateway.reports import child

        if self._pool is None:
            self._start_pool()
        assert self._pool is not None
        try:
            return self._pool.submit(child.build, self.url, since, until, by, self.timeout_s)
        except BrokenProcessPool:
            self._kill_pool()
            self._start_pool()
            assert self._pool is not None
            return self._pool.submit(child.build, self.url, since, until, by, self.timeout_s)

    async def report(self, key: CacheKey, since: datetime, until: datetime | None, by: str) -> dict[str, Any]:
        """The report for ``key`` (the request's own since/until/by strings), built off the loop unless a
        result younger than ``ttl_s`` (or a build in progress) exists. Raises ``ReportTimeout``."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and (now - hit[0] < self.ttl_s or not hit[1].done()):
                fut = hit[1]
            else:
                fut = self._submit(since, until, by)
                self._cache[key] = (now, fut)
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        try:  # shielded: a client going away must not cancel a build other requests share
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), self.timeout_s + _GRACE_S)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._forget(key, fut)
            if self.mode == "process" and not fut.done():
                self._kill_pool()
            raise ReportTimeout(f"the report took longer than {self.timeout_s:g} s") from None
        except BrokenProcessPool:
            self._forget(key, fut)
            self._kill_pool()
            raise
        except Exception:
            self._forget(key, fut)
            raise

    def _forget(self, key: CacheKey, fut: Future[dict[str, Any]]) -> None:
        with self._lock:  # failures are not cached
            entry = self._cache.get(key)
            if entry is not None and entry[1] is fut:
                del self._cache[key]

    def close(self) -> None:
        if self.mode == "process":
            self._kill_pool()
            return

        async def _dispose() -> None:
            if self._engine is not None:
                await self._engine.dispose()

        if self._loop is not None and self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(_dispose(), self._loop).result(5.0)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5.0)
