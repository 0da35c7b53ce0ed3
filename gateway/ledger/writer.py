"""The ledger service: ``record`` on the response path, batched writes in the background.

``record(rec)`` prices the request, appends one row to an in-memory buffer and returns: no I/O, no
awaiting, never raises. A background task writes the buffer in batches. While the store is down the
rows wait in memory (up to ``buffer_max``), then a second task spills them to JSONL files in
``spill_dir``; the files are replayed into the store once it answers again, and at the next start if
the process stopped first. ``close()`` writes everything, or spills what it cannot write: no row is
dropped. Rows carry an event id (primary key, inserted with ON CONFLICT DO NOTHING), so retrying a
batch whose commit outcome is unknown never duplicates it.

Rows are written with the raw driver (``gateway.ledger.sink``: sqlite3 or asyncpg), and the schema
revision is read with it too: only when it is not ``HEAD_REVISION`` does a child process run the
alembic migrations (``gateway.ledger.migrate``). A serving worker never imports SQLAlchemy or alembic;
``Ledger.engine`` (an SQLAlchemy engine for reports) is created at its first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gateway.costs import Cost, CostModel
from gateway.ids import new_id
from gateway.ledger.columns import HEAD_REVISION, clean
from gateway.ledger.migrate import MigrationFailed, run_migration
from gateway.ledger.sink import RowRejected
from gateway.ledger.spill import SpillDir

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.config import LedgerConfig, Policy
    from gateway.ledger.sink import Sink
    from gateway.metrics import Metrics
    from gateway.records import RequestRecord

log = logging.getLogger(__name__)

_FIELDS = ("request_id", "tenant", "endpoint", "requested_model", "stream", "route", "domain", "model",
           "backend", "reason", "confidence", "escalation", "prompt_tokens", "completion_tokens",
           "latency_ms", "ttft_ms", "status", "error_code", "cache", "would_route", "key_id",
           "policy_version")


@dataclass(frozen=True, slots=True)
class LedgerHealth:
    ok: bool
    """False while the store is unreachable (rows are kept and nothing is lost; serving goes on)."""
    store: Literal["starting", "up", "down", "closed"]
    buffered: int
    """Rows in memory waiting to be written."""
    spilled: int
    """Rows in spill files waiting for replay."""
    dropped: int
    """Rows given up since start (memory full and spilling impossible); also a metric and logged."""
    written: int
    """Rows written by this process since start."""
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "store": self.store, "buffered": self.buffered, "spilled": self.spilled,
                "dropped": self.dropped, "written": self.written, "last_error": self.last_error}


class Ledger:
    def __init__(self, config: LedgerConfig, costs: CostModel, *, url: str, spill_dir: str,
                 metrics: Metrics | None = None, base_dir: str | Path = ".") -> None:
        self.config = config
        self.costs = costs
        self.url = url
        """The ledger URL as configured (a relative SQLite file is resolved against ``base_dir``)."""
        self.base_dir = base_dir
        self.metrics = metrics
        self.spill = SpillDir(spill_dir)
        self.sink: Sink | None = None
        self._engine: AsyncEngine | None = None
        self._buf: deque[dict[str, Any]] = deque()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._spill_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._schema_ready = not config.migrate
        self._state: Literal["starting", "up", "down", "closed"] = "starting"
        self._last_error: str | None = None
        self._written = 0
        self._spilled = 0
        self._dropped = 0
        self._drop_ids: list[str] = []
        self._drop_logged = -1e9
        self._closing = False

    @classmethod
    def from_policy(cls, policy: Policy, *, metrics: Metrics | None = None,
                    costs: CostModel | None = None) -> Ledger:
        """Build from the policy (raises ``CostConfigError`` for an unpriced baseline)."""
        return cls(policy.ledger, costs or CostModel.from_policy(policy), url=policy.ledger.url,
                   base_dir=policy.base_dir, spill_dir=str(policy.resolve_path(policy.ledger.spill_dir)),
                   metrics=metrics)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, apply migrations and start the writer. A store that is down at start is not
        fatal: rows are buffered/spilled and the schema is migrated once it answers. Raises
        ``ValueError`` for a URL that is neither SQLite nor PostgreSQL."""
        from gateway.ledger.dsn import parse_store_url
        from gateway.ledger.sink import open_sink

        self.sink = open_sink(parse_store_url(self.url, self.base_dir), connect_timeout_s=self._connect_timeout_s)
        self.spill.recover_stale()
        self._spilled = await asyncio.to_thread(self.spill.count_rows)
        try:
            async with self._lock:
                await asyncio.wait_for(self._ensure_schema(), self.config.write_timeout_s * 3)
            self._state = "up"
        except MigrationFailed as exc:
            self._fail(exc, "ledger schema migration failed at start; buffering")
        except Exception as exc:
            self._fail(exc, "ledger store unreachable at start; buffering")
        self._tasks = [asyncio.create_task(self._write_loop(), name="ledger-writer"),
                       asyncio.create_task(self._spill_loop(), name="ledger-spiller")]
        if self._spilled:
            self._wake.set()

    async def flush(self, within_s: float | None = None) -> None:
        """Write every buffered and spilled row now. Raises the store's error (rows are kept)."""
        try:
            async with asyncio.timeout(within_s):
                async with self._lock:
                    await self._drain()
        except Exception as exc:
            self._fail(exc, "ledger flush failed")
            raise

    async def close(self, within_s: float = 10.0) -> None:
        """Stop the writer and write everything; what cannot be written within ``within_s`` is spilled."""
        if self._state == "closed":
            return
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            await self.flush(within_s)
        except Exception as exc:
            log.warning("ledger: %d rows spilled at close (%s)", len(self._buf), exc)
            self._spill_now()
        if self.sink is not None:
            with contextlib.suppress(Exception):
                await self.sink.close()
        if self._engine is not None:
            with contextlib.suppress(Exception):
                await self._engine.dispose()
            self._engine = None
        self._state = "closed"

    @property
    def engine(self) -> AsyncEngine | None:
        """An SQLAlchemy engine on the ledger's database for readers (reports, ``/admin/report``),
        created at first use; None before ``start`` and after ``close``. The writer does not use it."""
        if self.sink is None or self._state == "closed":
            return None
        if self._engine is None:
            from gateway.ledger.store import create_engine, normalize_url

            self._engine = create_engine(normalize_url(self.url, self.base_dir),
                                         connect_timeout_s=self._connect_timeout_s)
        return self._engine

    @property
    def _connect_timeout_s(self) -> float:
        return min(self.config.write_timeout_s, 5.0)

    def health(self) -> dict[str, Any]:
        """JSON-safe state for /health/ready (``ok`` is False while the store is unreachable; the
        gateway keeps serving and nothing is lost, so this should not fail readiness on its own)."""
        return self.state().as_dict()

    def state(self) -> LedgerHealth:
        return LedgerHealth(ok=self._state in ("up", "starting"), store=self._state,
                            buffered=len(self._buf), spilled=self._spilled, dropped=self._dropped,
                            written=self._written, last_error=self._last_error)

    # -- the response path -------------------------------------------------------------------------

    def price(self, rec: RequestRecord) -> Cost:
        """Cost of a finished request, e.g. for the ``x-slmgw-cost-usd`` header. Never raises."""
        return self.costs.price(rec)

    def record(self, rec: RequestRecord, cost: Cost | None = None) -> Cost:
        """Queue one finished request (synchronous, O(1), never raises, no I/O). Returns its cost."""
        try:
            cost = cost if cost is not None else self.costs.price(rec)
        except Exception:
            cost = Cost(0.0, 0.0)
        try:
            row = self._row(rec, cost)
            if len(self._buf) >= self.config.memory_max_rows:
                self._drop([row], "memory full (ledger.memory_max_rows) and the rows cannot be spilled")
                return cost
            self._buf.append(row)
            if len(self._buf) >= self.config.batch_size:
                self._wake.set()
            if len(self._buf) > self.config.buffer_max:
                self._spill_wake.set()
        except Exception:
            log.exception("ledger: could not queue request %s", getattr(rec, "request_id", "?"))
        if self.metrics is not None:
            try:
                self.metrics.observe(rec, cost.cost_usd, cost.baseline_cost_usd, cost.shadow_cost_usd)
            except Exception:
                log.exception("metrics: observe failed")
        return cost

    def _row(self, rec: RequestRecord, cost: Cost) -> dict[str, Any]:
        row: dict[str, Any] = {name: clean(getattr(rec, name), name) for name in _FIELDS}
        row["id"] = new_id()
        row["ts"] = float(rec.ts)
        row["day"] = datetime.fromtimestamp(rec.ts, UTC).strftime("%Y-%m-%d")
        row["cost_usd"] = cost.cost_usd
        row["baseline_cost_usd"] = cost.baseline_cost_usd
        row["shadow_cost_usd"] = cost.shadow_cost_usd
        row["baseline_model"] = clean(self.costs.baseline_model, "baseline_model")
        row["prompt_text"] = clean(rec.prompt_text, "prompt_text") if self.config.store_prompts else None
        row["extra"] = dict(rec.extra) if rec.extra else None
        return row

    # -- background --------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        delay = self.config.flush_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.flush_interval_s)
            self._wake.clear()
            if not self._buf and not self._spilled:
                continue
            try:
                async with self._lock:
                    await self._drain()
                delay = self.config.flush_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fail(exc, "ledger write failed; retrying")
                # While the store is down, retry on a backoff rather than on every full batch.
                delay = min(delay * 2, self.config.retry_max_s)
                await asyncio.sleep(delay)

    async def _spill_loop(self) -> None:
        while True:
            await self._spill_wake.wait()
            self._spill_wake.clear()
            if len(self._buf) > self.config.buffer_max and self._state != "up":
                await self._spill_async()
            elif len(self._buf) > self.config.buffer_max:
                # The store is up but behind: give the writer one write timeout before spilling.
                await asyncio.sleep(self.config.write_timeout_s)
                if len(self._buf) > self.config.buffer_max:
                    await self._spill_async()

    def _take_all(self) -> list[dict[str, Any]]:
        rows = list(self._buf)
        self._buf.clear()
        return rows

    async def _spill_async(self) -> None:
        rows = self._take_all()
        try:
            await asyncio.to_thread(self.spill.write, rows)
            self._spilled += len(rows)
            log.warning("ledger: store unavailable, spilled %d rows to %s", len(rows), self.spill.path)
        except Exception:
            log.exception("ledger: cannot spill to %s; keeping rows in memory", self.spill.path)
            self._buf.extendleft(reversed(rows))

    def _spill_now(self) -> None:
        rows = self._take_all()
        try:
            self.spill.write(rows)
            self._spilled += len(rows)
        except Exception as exc:
            self._drop(rows, f"cannot spill to {self.spill.path}: {type(exc).__name__}: {exc}", force=True)

    def _drop(self, rows: list[dict[str, Any]], why: str, *, force: bool = False) -> None:
        """The one place rows are given up: counted (metric and ``dropped``) and logged, never silently."""
        self._dropped += len(rows)
        if self.metrics is not None:
            self.metrics.ledger_dropped.inc(len(rows))
        self._drop_ids.extend(str(r.get("request_id")) for r in rows)
        now = time.monotonic()
        if not force and now - self._drop_logged < 1.0 and len(self._drop_ids) < 1000:
            return  # one line a second during an outage, not one per request
        self._drop_logged = now
        log.error("ledger: DROPPED %d rows (%d since start): %s; request ids: %s", len(self._drop_ids),
                  self._dropped, why, ", ".join(self._drop_ids))
        self._drop_ids.clear()

    def _fail(self, exc: BaseException, what: str) -> None:
        msg = f"{type(exc).__name__}: {exc}".strip()[:500]
        if self._state != "down" or msg != self._last_error:
            log.warning("%s: %s", what, msg)
        self._state = "down"
        self._last_error = msg
        if len(self._buf) > self.config.buffer_max:
            self._spill_wake.set()

    # -- writing (caller holds self._lock) ---------------------------------------------------------

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        assert self.sink is not None
        found = await asyncio.wait_for(self.sink.revision(), self.config.write_timeout_s)
        if found != {HEAD_REVISION}:
            # Once per database (and release): alembic runs in a child process, not in this worker.
            log.info("ledger: schema at %s, migrating to %s", sorted(found) if found else "nothing", HEAD_REVISION)
            await run_migration(self.url, self.base_dir, timeout_s=max(self.config.write_timeout_s * 3, 60.0))
            found = await asyncio.wait_for(self.sink.revision(), self.config.write_timeout_s)
            if found != {HEAD_REVISION}:
                raise MigrationFailed(f"schema is at {sorted(found or ())} after migrating, expected {HEAD_REVISION}")
        self._schema_ready = True

    async def _drain(self) -> None:
        if self.sink is None:
            raise RuntimeError("ledger not started")
        await self._ensure_schema()
        for path in self.spill.pending():
            claimed = self.spill.claim(path)
            if claimed is None:
                continue
            rows = await asyncio.to_thread(self.spill.read, claimed)
            for i in range(0, len(rows), self.config.batch_size):
                await self._insert(rows[i:i + self.config.batch_size])
            claimed.unlink(missing_ok=True)
            self._spilled = max(0, self._spilled - len(rows))
        while self._buf:
            n = min(len(self._buf), self.config.batch_size)
            batch = [self._buf.popleft() for _ in range(n)]
            try:
                await self._insert(batch)
            except BaseException:
                self._buf.extendleft(reversed(batch))
                raise
            self._written += n
        self._state = "up"

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        assert self.sink is not None
        sink = self.sink
        try:
            values = [sink.values(r) for r in rows]
            await asyncio.wait_for(sink.insert(values), self.config.write_timeout_s)
        except RowRejected as exc:
            # A row the store refuses (not an outage): write the others, park the bad one apart.
            log.error("ledger: batch rejected (%s); writing rows one by one", exc)
            for row in rows:
                try:
                    await asyncio.wait_for(sink.insert([sink.values(row)]), self.config.write_timeout_s)
                except RowRejected as one:
                    self._reject(row, one)

    def _reject(self, row: dict[str, Any], exc: Exception) -> None:
        log.error("ledger: row %s rejected by the store: %s", row.get("id"), exc)
        dead = SpillDir(self.spill.path / "rejected")
        try:
            dead.write([row])
        except Exception:
            log.exception("ledger: LOST row %s", row.get("id"))
