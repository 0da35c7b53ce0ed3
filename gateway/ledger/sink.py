"""Where ledger rows go: a small raw-driver writer per store, no SQLAlchemy on the serving path.

``open_sink(url)`` returns a ``Sink`` for SQLite (stdlib ``sqlite3`` on one worker thread) or
PostgreSQL (``asyncpg``). Both store exactly the values SQLAlchemy stored through
``gateway.ledger.schema`` (reports read the table with SQLAlchemy; tests compare the two column by
column): timestamps as aware UTC on PostgreSQL and as naive UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` on
SQLite, booleans as 0/1 on SQLite, ``extra`` as ``json.dumps`` text (``null`` for no extras: the JSON
null, not SQL NULL, as SQLAlchemy's JSON type does).

Errors: ``RowRejected`` means the store refused a row's content (the writer parks the row apart);
anything else means the store is unavailable (rows are kept and retried).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from gateway.ledger.columns import COLUMNS, DIRTY_TABLE, TABLE

if TYPE_CHECKING:
    from gateway.ledger.dsn import StoreUrl

Values = tuple[Any, ...]
"""One row's values in ``COLUMNS`` order, ready for the driver."""

_ALL = operator.itemgetter(*COLUMNS)
_TS = COLUMNS.index("ts")
_EXTRA = COLUMNS.index("extra")


class RowRejected(Exception):
    """The store refused the content of a row (a constraint, an over-long string, a value of the wrong
    type): writing it again will not help. Not raised for outages."""


class Sink(Protocol):
    @property
    def dialect(self) -> Literal["sqlite", "postgresql"]: ...

    def values(self, row: Mapping[str, Any]) -> Values:
        """A buffered (JSON-safe) row as driver values; raises ``RowRejected`` for an unusable row."""
        ...

    async def insert(self, rows: Sequence[Values]) -> None:
        """Insert in one transaction, skipping ids already stored (replays are idempotent), and mark the
        rows' hours for the rollups in the same transaction."""
        ...

    async def revision(self) -> frozenset[str] | None:
        """The schema revisions recorded in the version table; None when there is no such table."""
        ...

    async def close(self) -> None: ...


def insert_sql(placeholder: str) -> str:
    """``INSERT ... ON CONFLICT DO NOTHING`` with ``placeholder % n`` for the n-th value (1-based). No
    conflict target: the only unique key is the row's identity, ``(id)``, or ``(id, ts)`` when the table
    is partitioned by time on PostgreSQL (docs/costs.md), and a replayed row repeats both."""
    marks = ", ".join(placeholder % (i + 1) if "%" in placeholder else placeholder for i in range(len(COLUMNS)))
    return f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({marks}) ON CONFLICT DO NOTHING"


def dirty_sql(placeholder: str) -> str:
    """Mark an hour's rollup as stale (``gateway.ledger.rollup`` recomputes it): written in the same
    transaction as the rows, so a row is never stored without its hour being marked."""
    return (f"INSERT INTO {DIRTY_TABLE} (hour, version) VALUES ({placeholder}, 1) "
            f"ON CONFLICT (hour) DO UPDATE SET version = {DIRTY_TABLE}.version + 1")


def hours(rows: Sequence[Values], sqlite: bool) -> list[tuple[Any]]:
    """The distinct UTC hours of ``rows`` (as stored: naive text on SQLite, aware datetimes on PostgreSQL)."""
    if sqlite:
        return [(h,) for h in sorted({str(r[_TS])[:13] + ":00:00.000000" for r in rows})]
    return [(h,) for h in sorted({r[_TS].replace(minute=0, second=0, microsecond=0) for r in rows})]


def row_values(row: Mapping[str, Any], sqlite: bool) -> Values:
    """Shared by both sinks: the row in column order, ``ts`` as the store's timestamp, ``extra`` as JSON."""
    try:
        if "key_id" not in row:  # spilled by a version before the key_id column: the key was in extra
            extra = row.get("extra")
            row = {**row, "key_id": extra.get("key_id") if isinstance(extra, dict) else None}
        if "policy_version" not in row:  # spilled by a version before the policy_version column
            row = {**row, "policy_version": None}
        out = list(_ALL(row))
        ts = datetime.fromtimestamp(float(out[_TS]), UTC)
        out[_TS] = ts.replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else ts
        extra = out[_EXTRA]
        out[_EXTRA] = "null" if extra is None else json.dumps(extra)
    except (KeyError, TypeError, ValueError, OverflowError, OSError) as exc:
        raise RowRejected(f"row {row.get('id')!r} has an unusable value: {type(exc).__name__}: {exc}") from exc
    return tuple(out)


def open_sink(url: StoreUrl, *, connect_timeout_s: float = 5.0) -> Sink:
    """A sink for ``url`` (no connection is made until the first call)."""
    if url.dialect == "sqlite":
        from gateway.ledger.sink_sqlite import SqliteSink

        return SqliteSink(url.path)
    from gateway.ledger.sink_pg import PostgresSink

    return PostgresSink(url.connect, connect_timeout_s=connect_timeout_s)
