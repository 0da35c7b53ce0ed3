"""`slmgw keys`: create, list and revoke client keys in the key store (the ledger's database)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

app = typer.Typer(help="Client keys: stored hashed in the ledger database; enable with auth.key_store.",
                  no_args_is_help=True)
T = TypeVar("T")
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Routing policy YAML file (for ledger.url).")]


def _with_engine(config: Path, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    from gateway.cli import _load
    from gateway.config import Policy
    from gateway.ledger.store import create_engine, migrate, normalize_url

    policy = _load(config)
    assert isinstance(policy, Policy)

    async def run() -> T:
        engine = create_engine(normalize_url(policy.ledger.url, policy.base_dir))
        try:
            await migrate(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except OSError as exc:
        typer.echo(f"error: cannot reach the key store ({policy.ledger.url}): {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("create")
def create(
    config: ConfigOpt,
    tenant: Annotated[str, typer.Option(help="Tenant the key's requests are recorded under.")],
    name: Annotated[str | None, typer.Option(help="A label for the key (e.g. the app using it).")] = None,
    budget_usd: Annotated[float | None, typer.Option(min=0, help="USD this key may spend per budget "
                                                     "period (limits.budget_period).")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Tokens per minute.")] = None,
) -> None:
    """Create a key and print it once; only its SHA-256 hash is stored."""
    from gateway.keys import store

    key, row = _with_engine(config, lambda e: store.create(e, tenant, name=name, budget_usd=budget_usd,
                                                           rpm=rpm, tpm=tpm))
    typer.echo(key)
    typer.echo(f"created {row.key_id} for tenant {tenant!r}; the key is shown only this once.", err=True)


@app.command("list")
def list_(
    config: ConfigOpt,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List keys (id, prefix, tenant, limits; never the key)."""
    from gateway.keys import store

    rows = _with_engine(config, lambda e: store.list_keys(e, tenant=tenant, include_revoked=all_))
    if as_json:
        for r in rows:
            typer.echo(json.dumps({"key_id": r.key_id, "prefix": r.prefix, "tenant": r.tenant, "name": r.name,
                                   "budget_usd": r.budget_usd, "rpm": r.rpm, "tpm": r.tpm,
                                   "created_at": r.created_at.isoformat() if r.created_at else None,
                                   "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("key_id", "prefix", "tenant", "name", "budget_usd", "rpm", "tpm", "created", "revoked")
    for r in rows:
        table.add_row(r.key_id, r.prefix + "...", r.tenant, r.name or "", _opt(r.budget_usd), _opt(r.rpm),
                      _opt(r.tpm), f"{r.created_at:%Y-%m-%d %H:%M}" if r.created_at else "",
                      f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "")
    Console(width=160).print(table)


def _opt(value: object) -> str:
    return "" if value is None else str(value)


@app.command("revoke")
def revoke(config: ConfigOpt, key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")]) -> None:
    """Revoke a key; gateways stop accepting it within auth.key_store.refresh_s seconds."""
    from gateway.keys import store

    if not _with_engine(config, lambda e: store.revoke(e, key_id)):
        typer.echo(f"error: no active key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
