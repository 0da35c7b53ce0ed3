"""The PostgreSQL sink: ``asyncpg`` directly, one connection (the writer is serialized), reconnected
after any failure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from gateway.ledger.columns import VERSION_TABLE
from gateway.ledger.sink import RowRejected, Values, dirty_sql, hours, insert_sql, row_values

if TYPE_CHECKING:
    import asyncpg


def _row_error(exc: BaseException) -> bool:
    """Class 22 (data exception: over-long string, NUL byte, bad value), class 23 (a constraint) and a
    value asyncpg cannot encode. Everything else (refused, reset, shutdown, timeout, missing table) is
    an outage."""
    import asyncpg
    from asyncpg.exceptions import _base

    return isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError | _base.DataError)


class PostgresSink:
    dialect: Literal["postgresql"] = "postgresql"

    def __init__(self, connect: dict[str, Any], *, connect_timeout_s: float = 5.0) -> None:
        self._connect_args = {**connect, "timeout": connect_timeout_s}
        self._sql = insert_sql("$%d")
        self._dirty = dirty_sql("$1")
        self._conn: asyncpg.Connection | None = None

    def values(self, row: Mapping[str, Any]) -> Values:
        return row_values(row, sqlite=False)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            import asyncpg

            self._drop()
            self._conn = await asyncpg.connect(**self._connect_args)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def insert(self, rows: Sequence[Values]) -> None:
        conn = await self._connection()
        try:
            async with conn.transaction():  # all rows and their hours' marks, or nothing
                await conn.executemany(self._sql, rows)
                await conn.executemany(self._dirty, hours(rows, sqlite=False))
        except BaseException as exc:
            if _row_error(exc):
                raise RowRejected(f"{type(exc).__name__}: {exc}") from exc
            self._drop()  # also on cancellation (a write timeout): the protocol state is unknown
            raise

    async def revision(self) -> frozenset[str] | None:
        conn = await self._connection()
        try:
            if await conn.fetchval("SELECT to_regclass($1) IS NULL", VERSION_TABLE):
                return None
            return frozenset(r[0] for r in await conn.fetch(f"SELECT version_num FROM {VERSION_TABLE}"))
        except BaseException:
            self._drop()
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5.0)
            except Exception:
                conn.terminate()
