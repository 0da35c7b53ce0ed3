"""Schema migrations on the serving path: the worker reads the revision with its raw driver and runs
alembic in a child process only when the schema is not at head; a serving worker on a migrated ledger
imports neither SQLAlchemy nor alembic."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gateway.costs import CostModel
from gateway.ledger import Ledger, writer
from gateway.ledger.columns import HEAD_REVISION, TABLE, VERSION_TABLE
from gateway.ledger.migrate import MigrationFailed, run_migration
from gateway.ledger.store import create_engine, current_revision, migrate, normalize_url

try:
    from tests.gateway.ledger_helpers import PRICES, pg_database, policy, rec
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import PRICES, pg_database, policy, rec  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]


def make_ledger(url: str, tmp_path: Path, **ledger: Any) -> Ledger:
    cfg = {"url": url, "spill_dir": "spill", "flush_interval_s": 0.05, "retry_max_s": 0.2,
           "write_timeout_s": 2.0, **ledger}
    p = policy({"ledger": cfg}, base_dir=str(tmp_path))
    return Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES))


@pytest.fixture
def migrations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each migration the writer starts (and still runs it)."""
    started: list[str] = []

    async def spy(url: str, base_dir: str | Path, *, timeout_s: float) -> None:
        started.append(url)
        await run_migration(url, base_dir, timeout_s=timeout_s)

    monkeypatch.setattr(writer, "run_migration", spy)
    return started


async def _migrate_to(url: str, base_dir: Path, revision: str) -> None:
    engine = create_engine(normalize_url(url, base_dir))
    try:
        await migrate(engine, revision)
    finally:
        await engine.dispose()


async def test_fresh_and_older_schemas_are_migrated_once(tmp_path: Path, migrations: list[str]) -> None:
    await _migrate_to("sqlite:///l.sqlite", tmp_path, "0001")
    ledger = make_ledger("sqlite:///l.sqlite", tmp_path)
    await ledger.start()
    try:
        assert ledger.state().store == "up" and len(migrations) == 1
        assert ledger.sink is not None and await ledger.sink.revision() == {HEAD_REVISION}
        ledger.record(rec())
        await ledger.flush()
    finally:
        await ledger.close()
    again = make_ledger("sqlite:///l.sqlite", tmp_path)
    await again.start()  # at head: no child process
    await again.close()
    assert len(migrations) == 1
    fresh = make_ledger("sqlite:///fresh.sqlite", tmp_path)
    await fresh.start()
    await fresh.close()
    assert len(migrations) == 2
    engine = create_engine(normalize_url("sqlite:///fresh.sqlite", tmp_path))
    try:
        assert await current_revision(engine) == HEAD_REVISION
    finally:
        await engine.dispose()


async def test_migrate_false_never_checks(tmp_path: Path, migrations: list[str]) -> None:
    ledger = make_ledger("sqlite:///l.sqlite", tmp_path, migrate=False)
    await ledger.start()
    ledger.record(rec())
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await ledger.flush()
    await ledger.close(within_s=1.0)
    assert migrations == []


async def test_failed_migration_is_logged_and_keeps_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await _migrate_to("sqlite:///l.sqlite", tmp_path, "head")
    db = tmp_path / "l.sqlite"
    with sqlite3.connect(db) as conn:  # a revision this release does not know (a newer gateway's)
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = '9999'")
    ledger = make_ledger("sqlite:///l.sqlite", tmp_path)
    with caplog.at_level(logging.WARNING, logger="gateway.ledger.writer"):
        await ledger.start()
    try:
        state = ledger.state()
        assert state.store == "down" and state.last_error is not None
        assert state.last_error.startswith("MigrationFailed: exit status 1: ledger migration failed:")
        assert "9999" in state.last_error
        assert "ledger schema migration failed at start; buffering" in caplog.text
        for i in range(20):
            ledger.record(rec(request_id=f"k{i}"))
        with pytest.raises(MigrationFailed):
            await ledger.flush()
        assert ledger.state().buffered == 20
        with sqlite3.connect(db) as conn:
            conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = ?", (HEAD_REVISION,))
        await ledger.flush()
        assert ledger.state().ok and ledger.state().written == 20
    finally:
        await ledger.close()


def test_migration_child_reads_the_url_on_stdin(tmp_path: Path) -> None:
    def child(request: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.ledger"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=120, cwd=REPO)

    ok = child({"url": "sqlite:///m.sqlite", "base_dir": str(tmp_path)})
    assert ok.returncode == 0, ok.stderr
    with sqlite3.connect(tmp_path / "m.sqlite") as conn:
        assert conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(HEAD_REVISION,)]
        assert conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (0,)
    bad = child({"url": "postgresql://app:hunter2@127.0.0.1:9/ledger"})
    assert bad.returncode == 1
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("ledger migration failed:")
    assert "hunter2" not in bad.stderr


async def test_pg_replicas_starting_together_migrate_once(tmp_path: Path, migrations: list[str]) -> None:
    async with pg_database() as url:
        ledgers = [make_ledger(url, tmp_path / str(i)) for i in range(3)]
        await asyncio.gather(*(led.start() for led in ledgers))
        try:
            assert [led.state().store for led in ledgers] == ["up"] * 3
            assert len(migrations) == 3  # each saw no schema; the advisory lock ran one at a time
            for i, led in enumerate(ledgers):
                led.record(rec(request_id=f"replica-{i}"))
                await led.flush()
            assert ledgers[0].sink is not None and await ledgers[0].sink.revision() == {HEAD_REVISION}
        finally:
            for led in ledgers:
                await led.close()


SERVE = textwrap.dedent("""
    import json, os, sys
    import httpx, yaml
    from gateway.background import BackgroundGateway
    from gateway.config import parse_policy
    from serving.standin import StandinServer

    repo, ledger_url = sys.argv[1], sys.argv[2]
    upstream = StandinServer(models=["sql", "code", "support", "math", "gpt-4o-mini"]).start()
    doc = yaml.safe_load(open(os.path.join(repo, "deploy/examples/policy.yaml")))
    doc["router"]["model_path"] = os.path.join(repo, "deploy/examples", doc["router"]["model_path"])
    doc["ledger"] = {"url": ledger_url, "flush_interval_s": 0.05}
    env = {"SLMGW_VLLM_URL": upstream.base_url, "SLMGW_LLM_API_BASE": upstream.base_url,
           "SLMGW_API_KEY": "sk-test", "SLMGW_LLM_API_KEY": "x"}
    policy = parse_policy(doc, base_dir=repo, env={**os.environ, **env})
    with BackgroundGateway(policy) as gw:
        for prompt in ["Write a SQL query joining orders and customers.", "Tell me a story.", "hello"]:
            r = httpx.post(gw.base_url + "/chat/completions", headers={"authorization": "Bearer sk-test"},
                           json={"model": "auto", "messages": [{"role": "user", "content": prompt}]}, timeout=60)
            assert r.status_code == 200, r.text
        ledger = gw.app.state.services.extras["ledger"]
        loaded = sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "alembic", "aiosqlite"})
        print(json.dumps({"loaded": loaded, "store": ledger.state().store}))
    upstream.stop()
""")


def test_serving_worker_imports_neither_sqlalchemy_nor_alembic(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite'}"  # the URL benchmarks/overhead uses
    asyncio.run(_migrate_to(url, tmp_path, "head"))
    out = subprocess.run([sys.executable, "-c", SERVE, str(REPO), url], capture_output=True, text=True,
                         timeout=180, cwd=tmp_path, env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PATH": "/usr/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"loaded": [], "store": "up"}
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:  # written on close, by the raw sink
        assert conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (3,)
