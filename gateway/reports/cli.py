"""``slmgw report``: the cost-savings report from the ledger as a table, CSV or JSON.

Mounted on the main CLI with ``app.command("report")(report)``; this module imports only typer at
import time so ``slmgw --help`` stays instant.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.table import Table

app = typer.Typer(help="Cost-savings reports from the request ledger.", no_args_is_help=True)


class By(enum.StrEnum):
    day = "day"
    domain = "domain"
    route = "route"
    tenant = "tenant"
    model = "model"


class Format(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def report(
    since: Annotated[str, typer.Option(help="Start: 7d, 24h, 30m, 2w or an ISO date (UTC).")] = "7d",
    until: Annotated[str | None, typer.Option(help="End (exclusive); default now.")] = None,
    by: Annotated[By, typer.Option(help="Group rows by this field.")] = By.day,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    config: Annotated[Path | None, typer.Option("--config", "-c",
                                                help="Policy file; its ledger.url is read.")] = None,
    ledger_url: Annotated[str | None, typer.Option(
        help="Ledger URL (overrides --config), e.g. sqlite:///slmgw-ledger.sqlite or "
             "postgresql://user@host/db.")] = None,
) -> None:
    """Requests, tokens, actual and baseline cost, savings, cache hits, escalations and latency."""
    import asyncio
    import json

    from gateway.reports.compute import ReportError, parse_time

    url, base_dir = _ledger_url(config, ledger_url)
    try:
        start = parse_time(since)
        end = parse_time(until) if until else None
    except ReportError as exc:
        raise typer.BadParameter(str(exc)) from None
    data = asyncio.run(_build(url, base_dir, start, end, by.value))
    if fmt is Format.json:
        typer.echo(json.dumps(data, indent=2))
    elif fmt is Format.csv:
        _csv(data)
    else:
        _table(data)


app.command("report")(report)


@app.callback()
def _group() -> None:
    """Cost-savings reports from the request ledger (also mounted as `slmgw report`)."""


def _ledger_url(config: Path | None, ledger_url: str | None) -> tuple[str, str]:
    if ledger_url:
        return ledger_url, "."
    if config is None:
        raise typer.BadParameter("give --config POLICY or --ledger-url URL")
    from gateway.config import PolicyError, load_policy

    try:
        policy = load_policy(config)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    return policy.ledger.url, policy.base_dir


async def _build(url: str, base_dir: str, since: Any, until: Any, by: str) -> dict[str, Any]:
    from gateway.ledger.store import create_engine, normalize_url
    from gateway.reports.compute import build_report

    engine = create_engine(normalize_url(url, base_dir))
    try:
        return await build_report(engine, since=since, until=until, by=by)
    finally:
        await engine.dispose()


def _csv(data: dict[str, Any]) -> None:
    import csv
    import sys

    from gateway.reports.compute import flat_rows

    rows = list(flat_rows(data))
    names = list(dict.fromkeys(k for row in rows for k in row))  # the TOTAL row may add audit columns
    writer = csv.DictWriter(sys.stdout, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _fmt(value: Any, money: bool = False, pct: bool = False) -> str:
    if value is None:
        return "-"
    if money:
        return f"${value:,.4f}"
    if pct:
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _table(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table to 80 columns
        console = Console(width=220)
    shadow = bool(data["shadow"])
    title = (f"slm-gateway savings by {data['by']}, {data['since'][:16]} .. {data['until'][:16]} UTC  "
             f"(baseline: {', '.join(data['baseline_models']) or '-'}; an estimate, see docs/costs.md)")
    table = Table(title=title, title_justify="left")
    heads = ["key", "requests", "tokens", "cost", "baseline", "savings", "savings %", "cache hit %",
             "escal. %", "p50 ms", "p95 ms"]
    if shadow:
        heads += ["shadow reqs", "would-be cost", "would-be savings", "would-be %"]
    for h in heads:
        table.add_column(h, justify="left" if h == "key" else "right")
    for g in [*data["groups"], {"key": "TOTAL", **data["totals"]}]:
        cells = [str(g["key"]), _fmt(g["requests"]), _fmt(g["total_tokens"]), _fmt(g["cost_usd"], True),
                 _fmt(g["baseline_cost_usd"], True), _fmt(g["savings_usd"], True), _fmt(g["savings_pct"], pct=True),
                 _fmt(g["cache_hit_rate"], pct=True), _fmt(g["escalation_rate"], pct=True), _fmt(g["latency_p50_ms"]),
                 _fmt(g["latency_p95_ms"])]
        if shadow:
            cells += [_fmt(g["shadow_requests"]), _fmt(g["shadow_cost_usd"], True),
                      _fmt(g["shadow_savings_usd"], True), _fmt(g["shadow_savings_pct"], pct=True)]
        table.add_row(*cells, end_section=g["key"] == (data["groups"][-1]["key"] if data["groups"] else ""),
                      style="bold" if g["key"] == "TOTAL" else None)
    console.print(table)
    console.print(_side_table(data))
    audit = data.get("audit")
    if audit and audit.get("samples"):
        console.print(_quality_table(audit, data["totals"]))


def _quality_table(audit: dict[str, Any], totals: dict[str, Any]) -> Table:
    """Audited SLM answers per domain: how often the SLM was at least as good as the reference LLM."""
    from rich.table import Table

    title = (f"Quality: audited SLM answers against the reference LLM (non-inferior = win or tie; 95% Wilson "
             f"interval). Net savings after ${audit['cost_usd']:,.4f} of audits: "
             f"${totals.get('net_savings_usd', 0.0):,.4f}")
    table = Table(title=title, title_justify="left")
    for h in ("domain", "samples", "wins", "ties", "losses", "errors", "non-inferior %", "95% CI",
              "judge disagree %", "audit cost", "guardrail"):
        table.add_column(h, justify="left" if h in ("domain", "guardrail") else "right")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    rows = [*audit["by_domain"].items(), ("TOTAL", audit)]
    for domain, a in rows:
        ci = "-" if a["ci_low"] is None else f"{pct(a['ci_low'])}-{pct(a['ci_high'])}"
        guard = (audit.get("guardrails") or {}).get(domain, {}).get("action") or ""
        table.add_row(domain, _fmt(a["samples"]), _fmt(a["wins"]), _fmt(a["ties"]), _fmt(a["losses"]),
                      _fmt(a["errors"]), pct(a["non_inferior_rate"]), ci, pct(a["disagreement_rate"]),
                      _fmt(a["cost_usd"], True), guard, style="bold" if domain == "TOTAL" else None)
    return table


def _side_table(data: dict[str, Any]) -> Table:
    from rich.table import Table

    totals = data["totals"]
    side = Table(title="Routes, latency and escalations (totals)", title_justify="left")
    for h in ("route", "requests", "p50 ms", "p95 ms"):
        side.add_column(h, justify="left" if h == "route" else "right")
    for route, count in totals["requests_by_route"].items():
        lat = totals["latency_by_route"].get(route, {})
        side.add_row(route, _fmt(count), _fmt(lat.get("p50_ms")), _fmt(lat.get("p95_ms")))
    side.add_section()
    side.add_row("escalations", _fmt(totals["escalations"]), f"{totals['escalation_rate']:.1f}%", "")
    costs = totals.get("escalation_costs_usd", {})
    for reason, count in totals["escalation_reasons"].items():
        side.add_row(f"  {reason}", _fmt(count), "", f"cost {_fmt(costs.get(reason), True)}" if reason in costs else "")
    return side
