"""``slmgw ledger``: maintain the request ledger (rollups, retention, export).

Imports only typer at import time (``slmgw --help`` stays instant); the work is in
``gateway.ledger.rollup``, ``gateway.ledger.prune`` and ``gateway.ledger.export``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from rich.progress import Progress
    from sqlalchemy.ext.asyncio import AsyncEngine

app = typer.Typer(help="Maintain the request ledger: rollups, retention, export.", no_args_is_help=True)
T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Policy file; its ledger.url is read.")]
UrlOpt = Annotated[str | None, typer.Option(help="Ledger URL (overrides --config).")]


class Format(enum.StrEnum):
    csv = "csv"
    parquet = "parquet"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _policy_ledger(config: Path | None, ledger_url: str | None) -> tuple[str, str, float | None]:
    from gateway.config import PolicyError, load_policy

    if config is None:
        if ledger_url is None:
            raise typer.BadParameter("give --config POLICY or --ledger-url URL")
        return ledger_url, ".", None
    try:
        policy = load_policy(config)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    return ledger_url or policy.ledger.url, policy.base_dir, policy.ledger.retention_days


def _run(url: str, base_dir: str, job: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    from gateway.ledger.store import create_engine, normalize_url

    async def main() -> T:
        engine = create_engine(normalize_url(url, base_dir))
        try:
            return await job(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:
        cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
        text = (str(cause).strip().splitlines() or [""])[0]
        raise _fail(f"ledger at {url.split('@')[-1]}: {type(cause).__name__}: {text}") from None


def _progress() -> Progress:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False)


def _time(value: str | None) -> datetime | None:
    from gateway.reports.compute import ReportError, parse_time

    try:
        return parse_time(value) if value else None
    except ReportError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("rollup")
def rollup_cmd(config: ConfigOpt = None, ledger_url: UrlOpt = None,
               rebuild: Annotated[bool, typer.Option(help="Recompute every hour, not only dirty ones.")] = False,
               ) -> None:
    """Compute the hourly rollups of every complete hour written since they were last computed
    (backfills rows written before rollups existed). Reports do this too, for their window."""
    from gateway.ledger import rollup

    url, base_dir, _ = _policy_ledger(config, ledger_url)

    async def job(engine: AsyncEngine) -> int:
        if rebuild:
            await rollup.mark_all(engine)
        with _progress() as bar:
            task = bar.add_task("rolling up hours", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return await rollup.refresh(engine, progress=tick)

    typer.echo(f"rolled up {_run(url, base_dir, job)} hours")


@app.command("prune")
def prune_cmd(config: ConfigOpt = None, ledger_url: UrlOpt = None,
              older_than: Annotated[str | None, typer.Option(
                  help="Delete raw rows older than this (7d, 2w, or an ISO date); default: the policy's "
                       "ledger.retention_days.")] = None) -> None:
    """Delete expired raw rows (after rolling their hours up; reports keep their totals)."""
    from gateway.ledger.prune import prune

    url, base_dir, retention = _policy_ledger(config, ledger_url)
    if older_than is not None:
        cutoff = _time(older_than)
    elif retention is not None:
        cutoff = datetime.now(UTC) - timedelta(days=retention)
    else:
        raise typer.BadParameter("give --older-than, or set ledger.retention_days in the policy")
    assert cutoff is not None

    async def job(engine: AsyncEngine) -> int:
        with _progress() as bar:
            task = bar.add_task("deleting raw rows", total=None)
            return await prune(engine, cutoff, progress=lambda d, t: bar.update(task, completed=d, total=t))

    n = _run(url, base_dir, job)
    typer.echo(f"deleted {n} raw rows older than {cutoff.replace(minute=0, second=0, microsecond=0).isoformat()}")


@app.command("export")
def export_cmd(config: ConfigOpt = None, ledger_url: UrlOpt = None,
               since: Annotated[str | None, typer.Option(help="Start: 30d, 24h or an ISO date (UTC).")] = None,
               until: Annotated[str | None, typer.Option(help="End (exclusive); default now.")] = None,
               fmt: Annotated[Format, typer.Option("--format", "-f", help="csv or parquet.")] = Format.csv,
               output: Annotated[Path | None, typer.Option("--output", "-o",
                                                           help="File (CSV: default stdout).")] = None) -> None:
    """Stream raw rows to CSV or Parquet for a warehouse, in batches (constant memory)."""
    import sys

    from gateway.ledger import export

    url, base_dir, _ = _policy_ledger(config, ledger_url)
    start, end = _time(since), _time(until)
    if fmt is Format.parquet and output is None:
        raise typer.BadParameter("Parquet needs --output FILE")

    async def job(engine: AsyncEngine) -> int:
        with _progress() as bar:
            task = bar.add_task("exporting rows", total=None)

            def tick(n: int) -> None:
                bar.update(task, completed=n)

            if fmt is Format.parquet:
                assert output is not None
                return await export.to_parquet(engine, output, start, end, tick)
            if output is None:
                return await export.to_csv(engine, sys.stdout, start, end, tick)
            with output.open("w", encoding="utf-8", newline="") as fh:
                return await export.to_csv(engine, fh, start, end, tick)

    n: Any = _run(url, base_dir, job)
    typer.echo(f"exported {n} rows", err=True)


@app.command("serve-reports")
def serve_reports(config: Annotated[Path, typer.Option("--config", "-c", help="Policy file.")],
                  host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
                  port: Annotated[int, typer.Option(help="Port.")] = 8081) -> None:
    """Serve /admin/report and /admin/dashboard from a process of their own (admin keys from the
    policy), so the serving workers never build reports."""
    import uvicorn

    from gateway.config import PolicyError, load_policy
    from gateway.reports.server import create_reports_app

    try:
        policy = load_policy(config)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if not policy.auth.admin_keys:
        raise _fail("the policy has no auth.admin_keys: the report API would refuse every request")
    uvicorn.run(create_reports_app(policy), host=host, port=port, loop="uvloop", http="httptools",
                access_log=False, server_header=False)
