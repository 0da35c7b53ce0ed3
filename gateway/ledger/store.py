"""SQLAlchemy engines and alembic migrations for the ledger store (SQLite file or PostgreSQL).

Used by reports, the CLI, the key store and the migration child process (``gateway.ledger.migrate``);
the serving path writes with the raw drivers in ``gateway.ledger.sink`` and does not import this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.ledger.columns import VERSION_TABLE

__all__ = ["VERSION_TABLE", "create_engine", "current_revision", "downgrade", "head_revision", "insert_rows",
           "migrate", "normalize_url"]

_MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x534C4D4757  # "SLMGW": replicas starting together migrate one at a time


def normalize_url(url: str, base_dir: str | Path = ".") -> str:
    """Async driver for plain URLs (``postgresql://`` -> asyncpg, ``sqlite://`` -> aiosqlite) and a
    relative SQLite file resolved against ``base_dir`` (the policy's directory)."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    elif u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    if u.drivername.startswith("sqlite") and u.database and u.database != ":memory:":
        path = Path(u.database).expanduser()
        if not path.is_absolute():
            path = Path(base_dir) / path
        u = u.set(database=str(path.resolve()))
    return u.render_as_string(hide_password=False)


def create_engine(url: str, *, connect_timeout_s: float = 5.0) -> AsyncEngine:
    """An async engine for the ledger; SQLite gets WAL (reports read while the writer writes)."""
    u = make_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if u.drivername.startswith("sqlite"):
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    elif u.drivername.startswith("postgresql"):
        kwargs.update(pool_size=2, max_overflow=2, connect_args={"timeout": connect_timeout_s})
    engine = create_async_engine(u, **kwargs)
    if u.drivername.startswith("sqlite"):
        @sa.event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    return engine


def _alembic(sync_conn: sa.Connection, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    getattr(command, direction)(cfg, revision)


async def _run(engine: AsyncEngine, direction: str, revision: str) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        await conn.run_sync(_alembic, direction, revision)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` (idempotent; safe with several replicas starting at once)."""
    await _run(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Downgrade the schema to ``revision`` (``base`` drops the ledger table: its rows are lost)."""
    await _run(engine, "downgrade", revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    def _rev(sync_conn: sa.Connection) -> str | None:
        from alembic.runtime.migration import MigrationContext

        ctx = MigrationContext.configure(sync_conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_rev)


def head_revision() -> str | None:
    """The newest migration shipped in the package."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


async def insert_rows(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    """Insert buffered rows with SQLAlchemy (``INSERT ... ON CONFLICT (id) DO NOTHING``): the statement
    the writer used before ``gateway.ledger.sink``, kept as the reference the sinks are compared with
    (tests/gateway/test_ledger_sink.py) and measured against (benchmarks/ledger)."""
    from sqlalchemy.dialects import postgresql, sqlite

    from gateway.ledger.schema import requests, rollup_dirty, to_db

    stmt: Any
    dirty: Any
    if engine.dialect.name == "postgresql":
        stmt = postgresql.insert(requests).on_conflict_do_nothing(index_elements=["id"])
        dirty = postgresql.insert(rollup_dirty)
    else:
        stmt = sqlite.insert(requests).on_conflict_do_nothing(index_elements=["id"])
        dirty = sqlite.insert(rollup_dirty)
    dirty = dirty.on_conflict_do_update(index_elements=["hour"],
                                        set_={"version": rollup_dirty.c.version + 1})
    values = [to_db(r) for r in rows]
    marks = sorted({v["ts"].replace(minute=0, second=0, microsecond=0) for v in values})
    async with engine.begin() as conn:
        await conn.execute(stmt, values)
        if marks:
            await conn.execute(dirty, [{"hour": h, "version": 1} for h in marks])
