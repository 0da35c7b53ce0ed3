"""The ledger's raw-driver writers (gateway.ledger.sink*): they store exactly what the SQLAlchemy
statement stored (compared column by column on SQLite and PostgreSQL, and through the reports), their
URLs read like SQLAlchemy's, and a refused row is parked while an outage keeps every row for a retry."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from asyncpg.exceptions import _base as asyncpg_base
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url

from gateway.config import parse_policy
from gateway.costs import CostModel
from gateway.ledger import Ledger, sink_pg, sink_sqlite
from gateway.ledger.columns import COLUMNS, FLOATS, HEAD_REVISION, INTEGERS, LIMITS, TABLE
from gateway.ledger.dsn import parse_store_url
from gateway.ledger.schema import requests
from gateway.ledger.sink import open_sink
from gateway.ledger.spill import SpillDir
from gateway.ledger.store import create_engine, head_revision, insert_rows, migrate, normalize_url
from gateway.reports.compute import build_report

try:
    from tests.gateway.ledger_helpers import DAY1, PRICES, pg_database, policy, rec, sample_records
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import DAY1, PRICES, pg_database, policy, rec, sample_records  # type: ignore[no-redef]


def make_ledger(url: str, tmp_path: Path, **ledger: Any) -> Ledger:
    cfg = {"url": url, "spill_dir": "spill", "flush_interval_s": 0.05, "retry_max_s": 0.2,
           "write_timeout_s": 2.0, "store_prompts": True, **ledger}
    p = policy({"ledger": cfg}, base_dir=str(tmp_path))
    return Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES))


def rejected(tmp_path: Path) -> list[dict[str, Any]]:
    return [row for f in sorted((tmp_path / "spill" / "rejected").glob("spill-*.jsonl")) for row in SpillDir.read(f)]


@pytest.fixture(params=["sqlite", "postgresql"])
async def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """Two empty ledger databases at head on the same store: one for each write path."""
    if request.param == "sqlite":
        yield "sqlite:///old.sqlite", "sqlite:///new.sqlite"
        return
    async with pg_database() as old, pg_database() as new:
        yield old, new


# -- the table as plain data ---------------------------------------------------------------------------


def test_columns_are_the_tables_columns() -> None:
    assert TABLE == requests.name
    assert COLUMNS == tuple(c.name for c in requests.columns)
    assert LIMITS == {c.name: c.type.length for c in requests.columns if isinstance(c.type, sa.String)
                      and c.type.length}
    assert FLOATS == {c.name for c in requests.columns if isinstance(c.type, sa.Float)}
    assert INTEGERS == {c.name for c in requests.columns if isinstance(c.type, sa.Integer)}


def test_head_revision_is_the_newest_migration() -> None:
    assert HEAD_REVISION == head_revision()


# -- URLs ------------------------------------------------------------------------------------------------

PG_URLS = [
    "postgresql://postgres@127.0.0.1:5432/ledger",
    "postgresql+asyncpg://u:secret@db.internal/ledger?ssl=require",
    "postgres://u:p%40ss%2Fw@db:6543/led%20ger",
    "postgresql+psycopg://u:s3/cr:t?x#y@[::1]:5433/ledger",  # a raw password with / : ? #
    "postgresql://u@/ledger?host=/var/run/postgresql",
    "postgresql://u@/ledger?host=db.internal:6000&prepared_statement_cache_size=0",
    "postgresql://db/ledger",
]


@pytest.mark.parametrize("url", PG_URLS)
def test_postgresql_urls_connect_like_sqlalchemy(url: str) -> None:
    _, expected = PGDialect_asyncpg().create_connect_args(make_url(normalize_url(url)))
    assert parse_store_url(url).connect == expected


@pytest.mark.parametrize("url", ["sqlite:///ledger.sqlite", "sqlite+aiosqlite:///sub/../l%20x.sqlite",
                                 "sqlite+pysqlite:////abs/ledger.sqlite", "sqlite:///~/ledger.sqlite"])
def test_sqlite_paths_resolve_like_normalize_url(url: str, tmp_path: Path) -> None:
    assert parse_store_url(url, tmp_path).path == make_url(normalize_url(url, tmp_path)).database
    assert parse_store_url("sqlite://").path == parse_store_url("sqlite:///:memory:").path == ":memory:"


def test_password_from_the_environment() -> None:
    secret = "pa:ss/wo?rd#1"
    p = parse_policy({**policy().model_dump(exclude_none=True, exclude={"base_dir"}),
                      "ledger": {"url": "postgresql+asyncpg://app:${PGPASS}@db:5432/ledger"}},
                     env={"PGPASS": secret})
    args = parse_store_url(p.ledger.url).connect
    assert args == {"user": "app", "password": secret, "host": "db", "port": 5432, "database": "ledger"}
    assert make_url(normalize_url(p.ledger.url)).password == secret
    assert secret not in repr(parse_store_url(p.ledger.url))


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_other_stores_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="ledger"):
        parse_store_url(url)


# -- the same stored values as SQLAlchemy ---------------------------------------------------------------


def _varied_rows(ledger: Ledger) -> list[dict[str, Any]]:
    recs = [
        *sample_records(),
        rec(ts=1_750_000_123.456789, stream=True, ttft_ms=3.5, prompt_text="SELECT 1;\n-- é ü 中 \U0001f600",
            extra={"key_id": "key_1", "note": "quote \" and é"}, latency_ms=12.25, confidence=1.0),
        rec(ts=DAY1 + 0.000001, route="none", backend=None, model=None, domain=None, confidence=None, status=502,
            error_code="upstream_error", prompt_tokens=0, completion_tokens=0, latency_ms=50, cache="bypass"),
        rec(ts=0.0, reason="x" * 600, tenant="t" * 200, extra={}),  # clipped by clean(), no extras
        rec(ts=4_102_444_799.999999, latency_ms=1e-300, confidence=0.1 + 0.2),
    ]
    return [ledger._row(r, ledger.price(r)) for r in recs]


def _raw_sqlite(path: str) -> list[tuple[Any, ...]]:
    """Every stored value as SQLite's own literal (type and bytes: 'text', 1, 1.0, NULL)."""
    with sqlite3.connect(path) as conn:
        cols = ", ".join(f"quote({c})" for c in COLUMNS)
        return conn.execute(f"SELECT {cols} FROM {TABLE} ORDER BY id").fetchall()


async def _raw_pg(url: str) -> list[tuple[Any, ...]]:
    """Every stored value as PostgreSQL's text form plus whether it is SQL NULL (json 'null' is not)."""
    conn = await asyncpg.connect(**parse_store_url(url).connect)
    try:
        await conn.execute("SET TimeZone = 'UTC'")
        cols = ", ".join(f"{c}::text, {c} IS NULL" for c in COLUMNS)
        return [tuple(r) for r in await conn.fetch(f"SELECT {cols} FROM {TABLE} ORDER BY id")]
    finally:
        await conn.close()


async def test_sink_stores_what_sqlalchemy_stored(two_stores: tuple[str, str], tmp_path: Path) -> None:
    old_url, new_url = two_stores
    ledger = make_ledger(new_url, tmp_path)
    rows = _varied_rows(ledger)
    old = create_engine(normalize_url(old_url, tmp_path))
    new = create_engine(normalize_url(new_url, tmp_path))
    sink = open_sink(parse_store_url(new_url, tmp_path))
    try:
        await migrate(old)
        await migrate(new)
        await insert_rows(old, rows)  # the statement the writer used before
        await sink.insert([sink.values(r) for r in rows])
        await sink.insert([sink.values(r) for r in rows])  # a replay: no duplicates, no error
        if sink.dialect == "sqlite":
            stored_old = _raw_sqlite(parse_store_url(old_url, tmp_path).path)
            stored_new = _raw_sqlite(parse_store_url(new_url, tmp_path).path)
            by_id = {r[0]: r for r in stored_new}
            first = by_id[repr(rows[9]["id"]).replace('"', "'")]
            assert first[COLUMNS.index("ts")] == "'2025-06-15 15:08:43.456789'"  # naive UTC text
            assert first[COLUMNS.index("stream")] == "1"
            assert first[COLUMNS.index("extra")] == """'{"key_id": "key_1", "note": "quote \\" and \\u00e9"}'"""
            assert by_id[repr(rows[0]["id"]).replace('"', "'")][COLUMNS.index("extra")] == "'null'"  # JSON null
        else:
            stored_old, stored_new = await _raw_pg(old_url), await _raw_pg(new_url)
            extra = 2 * COLUMNS.index("extra")
            assert all(r[extra] == "null" and r[extra + 1] is False for r in stored_new if "key_id" not in r[extra])
        assert len(stored_new) == len(rows)
        for before, after in zip(stored_old, stored_new, strict=True):
            assert before == after
        # Reports read the rows either way, with the same figures.
        since = sample_records()[-1].ts - 1
        for by in ("day", "route", "tenant"):
            kw = {"since": _dt(since), "until": _dt(4_102_444_800.0), "by": by}
            new_report, old_report = await build_report(new, **kw), await build_report(old, **kw)
            new_report.pop("generated_at"), old_report.pop("generated_at")
            assert new_report == old_report
        report = await build_report(new, since=_dt(DAY1), until=_dt(DAY1 + 2 * 86_400))
        assert report["totals"]["requests"] == 10 and report["totals"]["errors"] == 2
    finally:
        await sink.close()
        await old.dispose()
        await new.dispose()


def _dt(ts: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


# -- refused rows are parked, outages are retried --------------------------------------------------------


def test_error_classes() -> None:
    assert sink_sqlite._row_error(sqlite3.IntegrityError("NOT NULL constraint failed: slmgw_requests.tenant"))
    assert sink_sqlite._row_error(sqlite3.DataError("string or blob too big"))
    assert sink_sqlite._row_error(sqlite3.ProgrammingError("Error binding parameter 3: type 'dict' is not supported"))
    assert not sink_sqlite._row_error(sqlite3.OperationalError("database is locked"))
    assert not sink_sqlite._row_error(sqlite3.OperationalError("no such table: slmgw_requests"))
    assert not sink_sqlite._row_error(sqlite3.OperationalError("unable to open database file"))
    assert not sink_sqlite._row_error(sqlite3.ProgrammingError("Cannot operate on a closed database."))
    exc = asyncpg.exceptions
    for refused in (exc.StringDataRightTruncationError("value too long for type character varying(128)"),
                    exc.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
                    exc.NotNullViolationError("null value in column"), exc.UniqueViolationError("dup"),
                    exc.NumericValueOutOfRangeError("out of range"),
                    asyncpg_base.DataError("invalid input for query argument $16: 'x' (an int is required)")):
        assert sink_pg._row_error(refused), refused
    for outage in (ConnectionRefusedError(111, "refused"), OSError("network unreachable"), TimeoutError(),
                   asyncio.CancelledError(), exc.ConnectionDoesNotExistError("closed in the middle"),
                   exc.CannotConnectNowError("the database system is shutting down"),
                   exc.AdminShutdownError("terminating connection"), exc.UndefinedTableError("no table"),
                   exc.InsufficientPrivilegeError("permission denied"), exc.DiskFullError("disk full"),
                   exc.SerializationError("could not serialize"), asyncpg_base.InterfaceError("closed")):
        assert not sink_pg._row_error(outage), outage


def _bad_rows(ledger: Ledger) -> dict[str, dict[str, Any]]:
    """Rows as a spill file may hold them (not cleaned again), each refused for its content."""
    def row(**kw: Any) -> dict[str, Any]:
        return {**ledger._row(rec(), ledger.price(rec())), **kw}

    return {"not_null": row(tenant=None), "bad_ts": row(ts="yesterday"), "long": row(request_id="r" * 300),
            "nul": row(reason="a\x00b"), "type": row(prompt_tokens="many")}


async def _park_and_write(ledger: Ledger, tmp_path: Path, refused: set[str]) -> None:
    await ledger.start()
    try:
        good = [ledger._row(rec(request_id=f"ok-{i}"), ledger.price(rec())) for i in range(5)]
        bad = _bad_rows(ledger)
        ledger._buf.extend([good[0], *bad.values(), *good[1:]])
        await ledger.flush()
        assert ledger.state().ok and ledger.state().buffered == 0
        parked = {r["id"] for r in rejected(tmp_path)}
        assert parked == {bad[k]["id"] for k in refused}
        engine = ledger.engine
        assert engine is not None
        async with engine.connect() as conn:
            ids = set((await conn.execute(sa.text(f"SELECT id FROM {TABLE}"))).scalars())
        assert ids == {r["id"] for r in good} | {bad[k]["id"] for k in bad.keys() - refused}
    finally:
        await ledger.close()


async def test_sqlite_refused_rows_are_parked(tmp_path: Path) -> None:
    # SQLite has no string lengths and takes NUL bytes and text in INTEGER columns: only these two refuse.
    await _park_and_write(make_ledger("sqlite:///l.sqlite", tmp_path), tmp_path, {"not_null", "bad_ts"})


async def test_pg_refused_rows_are_parked(tmp_path: Path) -> None:
    async with pg_database() as url:
        await _park_and_write(make_ledger(url, tmp_path), tmp_path, {"not_null", "bad_ts", "long", "nul", "type"})


async def test_sqlite_missing_table_is_an_outage(tmp_path: Path) -> None:
    ledger = make_ledger("sqlite:///l.sqlite", tmp_path)
    await ledger.start()
    db = tmp_path / "l.sqlite"
    try:
        with sqlite3.connect(db) as conn:
            conn.execute(f"ALTER TABLE {TABLE} RENAME TO moved_away")
        for i in range(30):
            ledger.record(rec(request_id=f"m{i}"))
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await ledger.flush()
        assert ledger.state().store == "down" and ledger.state().buffered == 30
        assert not rejected(tmp_path)
        with sqlite3.connect(db) as conn:
            conn.execute(f"ALTER TABLE moved_away RENAME TO {TABLE}")
        await ledger.flush()
        assert ledger.state().ok and ledger.state().written == 30
    finally:
        await ledger.close()


async def test_pg_refused_connection_is_an_outage(tmp_path: Path) -> None:
    ledger = make_ledger("postgresql://postgres@127.0.0.1:9/ledger", tmp_path)
    await ledger.start()
    try:
        assert ledger.state().store == "down"
        ledger.record(rec())
        with pytest.raises(OSError):
            await ledger.flush()
        assert ledger.state().buffered == 1 and not rejected(tmp_path)
    finally:
        await ledger.close(within_s=1.0)
    assert SpillDir(tmp_path / "spill").count_rows() == 1


async def test_pg_write_timeout_is_an_outage_and_reconnects(tmp_path: Path) -> None:
    async with pg_database() as url:
        ledger = make_ledger(url, tmp_path, write_timeout_s=0.5)
        await ledger.start()
        locker = await asyncpg.connect(**parse_store_url(url).connect)
        try:
            tx = locker.transaction()
            await tx.start()
            await locker.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
            for i in range(10):
                ledger.record(rec(request_id=f"t{i}"))
            with pytest.raises(TimeoutError):
                await ledger.flush()
            assert ledger.state().store == "down" and ledger.state().buffered == 10
            await tx.rollback()
            await ledger.flush()  # on a new connection: the timed-out one was dropped
            assert ledger.state().ok and ledger.state().written == 10
            assert await locker.fetchval(f"SELECT count(*) FROM {TABLE}") == 10
        finally:
            await locker.close()
            await ledger.close()
