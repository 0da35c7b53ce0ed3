"""The SQLite sink: stdlib ``sqlite3``, one connection owned by one worker thread (WAL, synchronous=NORMAL)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from gateway.ledger.columns import VERSION_TABLE
from gateway.ledger.sink import RowRejected, Values, dirty_sql, hours, insert_sql, row_values

T = TypeVar("T")


def _row_error(exc: sqlite3.Error) -> bool:
    """Errors caused by a row's content (everything else: the store is unavailable)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return True
    # A value sqlite3 cannot bind (the message is the only way to tell it from a closed connection).
    return isinstance(exc, sqlite3.InterfaceError | sqlite3.ProgrammingError) and "binding" in str(exc)


class SqliteSink:
    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._sql = insert_sql("?")
        self._dirty = dirty_sql("?")
        self._conn: sqlite3.Connection | None = None
        # One thread: the connection is only ever used from it, and writes are serialized.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")

    def values(self, row: Mapping[str, Any]) -> Values:
        return row_values(row, sqlite=True)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def insert(self, rows: Sequence[Values]) -> None:
        await self._call(self._insert, rows)

    async def revision(self) -> frozenset[str] | None:
        return await self._call(self._revision)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._call(self._drop), 5.0)
        finally:
            self._thread.shutdown(wait=False)

    # -- on the worker thread ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _insert(self, rows: Sequence[Values]) -> None:
        conn = self._connect()
        try:
            with conn:  # one transaction: committed, or rolled back on any error
                conn.executemany(self._sql, rows)
                conn.executemany(self._dirty, hours(rows, sqlite=True))
        except sqlite3.Error as exc:
            if _row_error(exc):
                raise RowRejected(f"{type(exc).__name__}: {exc}") from exc
            self._drop()
            raise

    def _revision(self) -> frozenset[str] | None:
        conn = self._connect()
        try:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (VERSION_TABLE,)).fetchone() is None:
                return None
            return frozenset(r[0] for r in conn.execute(f"SELECT version_num FROM {VERSION_TABLE}"))
        except sqlite3.Error:
            self._drop()
            raise
