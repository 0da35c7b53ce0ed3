"""`slmgw policy simulate`: a policy change tried on recorded traffic before it ships."""

from __future__ import annotations

import asyncio
import enum
import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Try a policy on recorded traffic.", no_args_is_help=True)


class Format(enum.StrEnum):
    table = "table"
    json = "json"


@app.command("simulate")
def simulate_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="The NEW policy file to try.")],
    since: Annotated[str, typer.Option(help="Start: 7d, 24h, 30m, 2w or an ISO date (UTC).")] = "7d",
    until: Annotated[str | None, typer.Option(help="End (exclusive); default now.")] = None,
    ledger_url: Annotated[str | None, typer.Option(help="Ledger to read (default: the policy's ledger.url).")] = None,
    limit: Annotated[int, typer.Option(min=0, help="Most changed requests listed.")] = 50,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """Replay recorded requests (those whose text the ledger kept: ledger.store_prompts) through the new
    policy's router and escalation rules, without calling any model, and compare routes, costs and savings
    with what happened."""
    from datetime import UTC, datetime

    from gateway.config import PolicyError, load_policy
    from gateway.reports.compute import ReportError, parse_time

    try:
        policy = load_policy(config)
        start = parse_time(since)
        end = parse_time(until) if until else datetime.now(UTC)
        result = asyncio.run(_run(policy, ledger_url or policy.ledger.url, start, end, limit))
    except (PolicyError, ReportError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if fmt == Format.json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _table(result)


async def _run(policy: Any, url: str, start: Any, end: Any, limit: int) -> dict[str, Any]:
    from gateway.ledger.store import create_engine, normalize_url
    from gateway.simulate import simulate

    engine = create_engine(normalize_url(url, policy.base_dir))
    try:
        return (await simulate(engine, policy, start, end, limit)).as_dict()
    finally:
        await engine.dispose()


def _table(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    skipped = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in data["not_replayed"].items() if v)
    table = Table(title=f"Replayed {data['replayed']} recorded requests ({data['changed']} change route)"
                        + (f"; not replayed: {skipped}" if skipped else ""), title_justify="left")
    for h in ("domain", "requests", "SLM % now", "SLM % new", "cost now", "cost new", "savings now",
              "savings new"):
        table.add_column(h, justify="left" if h == "domain" else "right")
    rows = [*data["by_domain"].items(), ("TOTAL", data["totals"])]
    for domain, sides in rows:
        a, s = sides["actual"], sides["simulated"]
        table.add_row(domain, f"{a['requests']:,}", f"{a['slm_share_pct']:.1f}", f"{s['slm_share_pct']:.1f}",
                      f"${a['cost_usd']:,.4f}", f"${s['cost_usd']:,.4f}", f"${a['savings_usd']:,.4f}",
                      f"${s['savings_usd']:,.4f}", style="bold" if domain == "TOTAL" else None)
    console.print(table)
    if data["changes"]:
        changes = Table(title="Requests whose route changes", title_justify="left")
        for h in ("request", "now", "reason now", "new", "reason new"):
            changes.add_column(h)
        for c in data["changes"]:
            changes.add_row(c["request_id"], f"{c['old']['route']}:{c['old']['backend'] or '-'}", c["old"]["reason"],
                            f"{c['new']['route']}:{c['new']['backend'] or '-'}", c["new"]["reason"])
        console.print(changes)
