"""Stream raw ledger rows to CSV or Parquet (pyarrow, the ``export`` extra) for a warehouse.

Rows are read with a server-side cursor in batches and written batch by batch, so memory stays flat
whatever the window's size. Timestamps are UTC (ISO 8601 in CSV, ``timestamp[us, UTC]`` in Parquet).
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import sqlalchemy as sa

from gateway.ledger.columns import COLUMNS
from gateway.ledger.schema import requests as t

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

BATCH = 10_000


class ExportError(RuntimeError):
    """The export cannot run (pyarrow missing for Parquet)."""


async def batches(engine: AsyncEngine, since: datetime | None, until: datetime | None,
                  size: int = BATCH) -> AsyncIterator[list[dict[str, Any]]]:
    where = []
    if since is not None:
        where.append(t.c.ts >= since)
    if until is not None:
        where.append(t.c.ts < until)
    q = sa.select(t).where(*where).order_by(t.c.ts, t.c.id).execution_options(yield_per=size)
    async with engine.connect() as conn:
        result = await conn.stream(q)
        async for part in result.mappings().partitions(size):
            yield [dict(r) for r in part]


def _csv_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict | list):
        return json.dumps(v)
    return "" if v is None else v


async def to_csv(engine: AsyncEngine, out: IO[str], since: datetime | None, until: datetime | None,
                 progress: Callable[[int], None] | None = None) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    async for part in batches(engine, since, until):
        writer.writerows([_csv_value(r[c]) for c in COLUMNS] for r in part)
        n += len(part)
        if progress is not None:
            progress(n)
    return n


def _arrow_schema() -> Any:
    import pyarrow as pa

    ints = {"prompt_tokens", "completion_tokens", "status"}
    floats = {"confidence", "latency_ms", "ttft_ms", "cost_usd", "baseline_cost_usd", "shadow_cost_usd"}
    fields = []
    for c in COLUMNS:
        if c == "ts":
            typ = pa.timestamp("us", tz="UTC")
        elif c == "stream":
            typ = pa.bool_()
        elif c in ints:
            typ = pa.int64()
        elif c in floats:
            typ = pa.float64()
        else:
            typ = pa.string()
        fields.append(pa.field(c, typ))
    return pa.schema(fields)


async def to_parquet(engine: AsyncEngine, path: Path, since: datetime | None, until: datetime | None,
                     progress: Callable[[int], None] | None = None) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError("Parquet export needs pyarrow: pip install 'slm-gateway[export]'") from None
    schema = _arrow_schema()
    n = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        async for part in batches(engine, since, until):
            for r in part:
                if r["extra"] is not None:
                    r["extra"] = json.dumps(r["extra"])
            writer.write_table(pa.Table.from_pylist(part, schema=schema))
            n += len(part)
            if progress is not None:
                progress(n)
    return n
