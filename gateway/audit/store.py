"""Where audit verdicts and guardrail events go: the ledger's database, through the ledger's spill path.

Rows are buffered and written in the background. While the database cannot take them they are spilled
to JSONL files under ``<ledger.spill_dir>/audits`` and replayed when it answers again, or at the next
start; ``close`` writes or spills what is left. No verdict is dropped. Inserts skip ids already stored,
so a replay never duplicates a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.ledger.spill import SpillDir

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

_TABLE_KEY = "_table"


class AuditStore:
    def __init__(self, engine: Any, spill_dir: str | Path, flush_interval_s: float = 1.0) -> None:
        self._engine = engine
        """A callable returning the ledger's SQLAlchemy engine (created lazily by the ledger)."""
        self.spill = SpillDir(Path(spill_dir) / "audits")
        self._buf: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._interval = flush_interval_s
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failing = False

    def add(self, table: str, row: dict[str, Any]) -> None:
        """Queue one row (JSON-safe; ``ts`` as Unix seconds). Never raises, no I/O."""
        self._buf.append({**row, _TABLE_KEY: table})
        self._wake.set()

    def start(self) -> None:
        self.spill.recover_stale()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="audit-writer")

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                if not self.failing:
                    log.warning("audits: store unavailable (%s: %s); verdicts are spilled to %s and replayed",
                                type(exc).__name__, str(exc)[:200], self.spill.path)
                self.failing = True
                await asyncio.sleep(self._interval)

    async def flush(self) -> None:
        """Write buffered and spilled rows. On failure the buffered rows are spilled (never lost) and the
        error is raised."""
        async with self._lock:
            rows, self._buf = self._buf, []
            try:
                for path in self.spill.pending():
                    claimed = self.spill.claim(path)
                    if claimed is None:
                        continue
                    await self._insert(SpillDir.read(claimed))
                    claimed.unlink(missing_ok=True)
                if rows:
                    await self._insert(rows)
                    self.written += len(rows)
            except Exception:
                if rows:
                    await asyncio.to_thread(self.spill.write, rows)
                raise
            if self.failing:
                log.info("audits: store available again")
                self.failing = False

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        from gateway.audit.schema import audits, guardrail_events, policy_reloads

        engine: AsyncEngine | None = self._engine()
        if engine is None:
            raise RuntimeError("the ledger database is not open")
        tables = {t.name: t for t in (audits, guardrail_events, policy_reloads)}
        async with engine.begin() as conn:
            insert = _insert_ignoring_duplicates(conn.dialect.name)
            for name, table in tables.items():
                values = [_values(r) for r in rows if r.get(_TABLE_KEY) == name]
                if values:
                    await conn.execute(insert(table).on_conflict_do_nothing(index_elements=["id"]), values)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        try:
            await asyncio.wait_for(self.flush(), 10.0)
        except Exception as exc:
            log.warning("audits: could not write at close (%s); rows are in %s", type(exc).__name__, self.spill.path)

    def health(self) -> dict[str, Any]:
        return {"ok": not self.failing, "buffered": len(self._buf), "written": self.written}


def _values(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != _TABLE_KEY}
    out["ts"] = datetime.fromtimestamp(float(out["ts"]), UTC)
    return out


def _insert_ignoring_duplicates(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
