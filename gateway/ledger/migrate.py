"""Ledger schema migrations in a short-lived child process, so a serving worker never loads alembic.

The worker reads the schema revision with its raw driver (``Sink.revision``) and runs this module only
when it differs from ``HEAD_REVISION``: ``python -m gateway.ledger`` (``main`` below) reads ``{"url": ...,
"base_dir": ...}`` as JSON on stdin (the URL may hold a password: never on the command line) and
upgrades to head with alembic (``gateway.ledger.store.migrate``, PostgreSQL advisory lock included).
Exit status 0 means the schema is at head; otherwise the reason is on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path


class MigrationFailed(RuntimeError):
    """The migration process failed (its error output is in the message)."""


async def run_migration(url: str, base_dir: str | Path, *, timeout_s: float) -> None:
    """Upgrade the ledger schema to head in a child process; raises ``MigrationFailed`` (or
    ``TimeoutError``, after killing the child)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.ledger", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    request = json.dumps({"url": url, "base_dir": str(base_dir)}).encode()
    try:
        _, err = await asyncio.wait_for(proc.communicate(request), timeout_s)
    except BaseException:  # a timeout or cancellation: don't leave the child behind
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5.0)
        raise
    if proc.returncode != 0:
        lines = [ln for ln in err.decode("utf-8", "replace").strip().splitlines() if ln.strip()]
        raise MigrationFailed(f"exit status {proc.returncode}: {lines[-1] if lines else 'no error output'}")


async def _upgrade(url: str, base_dir: str) -> None:
    from gateway.ledger.store import create_engine, migrate, normalize_url

    engine = create_engine(normalize_url(url, base_dir))
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        asyncio.run(_upgrade(request["url"], request.get("base_dir", ".")))
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line: the parent reports the last
        print(f"ledger migration failed: {reason}", file=sys.stderr)
        return 1
    return 0

