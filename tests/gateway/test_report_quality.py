"""Quality in every report (issue 15): audit verdicts per domain with Wilson intervals, audit cost and
net savings, hand-computed, through the real audit store on a real SQLite ledger."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.audit.stats import wilson
from gateway.audit.store import AuditStore
from gateway.audit.tables import AUDITS, GUARDRAIL_EVENTS
from gateway.costs import CostModel
from gateway.ledger import Ledger
from gateway.reports.cli import app as report_app
from gateway.reports.compute import build_report

try:
    from tests.gateway.ledger_helpers import DAY2, PRICES, policy, sample_records
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import DAY2, PRICES, policy, sample_records  # type: ignore[no-redef]

SINCE = datetime(2025, 6, 14, tzinfo=UTC)
UNTIL = datetime(2025, 6, 16, tzinfo=UTC)


def _audit(i: int, domain: str, verdict: str, *, mode: str = "audit", slm: float = 0.0003, ref: float = 0.001,
           judge: float = 0.002, disagree: bool = False, ts: float = DAY2 + 10) -> dict[str, Any]:
    return {"id": f"audit{i}", "request_id": f"req-a{i}", "ts": ts + i, "tenant": "acme", "domain": domain,
            "mode": mode, "slm_backend": f"{domain}-slm", "slm_model": domain, "reference_model": "openai/gpt-4o",
            "judge_model": "openai/gpt-4o", "verdict": verdict, "order1": None, "order2": None,
            "disagree": disagree, "error": None if verdict != "error" else "judge failed", "slm_cost_usd": slm,
            "reference_cost_usd": ref, "judge_cost_usd": judge, "prompt_text": None, "slm_answer": None,
            "reference_answer": None}


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    p = policy({"ledger": {"url": "sqlite:///ledger.sqlite"}}, base_dir=str(tmp_path))
    led = Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES))
    await led.start()
    for r in sample_records():
        led.record(r)
    await led.flush()
    store = AuditStore(lambda: led.engine, tmp_path / "spill")
    for row in (_audit(1, "sql", "win"), _audit(2, "sql", "tie", disagree=True), _audit(3, "sql", "loss"),
                # shadow: the SLM call (0.0005) was extra; the reference (0.004) was the served answer
                _audit(4, "code", "error", mode="shadow", slm=0.0005, ref=0.004, judge=0.0),
                _audit(5, "sql", "win", ts=SINCE.timestamp() - 86_400)):  # before the window
        store.add(AUDITS, row)
    store.add(GUARDRAIL_EVENTS, {"id": "g1", "ts": DAY2, "domain": "sql", "action": "shadow", "actor": "guardrail",
                                 "evidence": {"floor": 0.9}})
    await store.flush()
    yield led
    await led.close()


async def test_audits_and_net_savings_are_hand_computed(ledger: Ledger) -> None:
    assert ledger.engine is not None
    rep = await build_report(ledger.engine, since=SINCE, until=UNTIL, by="domain")
    audit = rep["audit"]
    assert {k: audit[k] for k in ("samples", "wins", "ties", "losses", "errors")} == \
        {"samples": 4, "wins": 1, "ties": 1, "losses": 1, "errors": 1}
    assert audit["samples"] == audit["wins"] + audit["ties"] + audit["losses"] + audit["errors"]
    assert audit["non_inferior_rate"] == pytest.approx(2 / 3, abs=1e-6)
    lo, hi = wilson(2, 3)
    assert (audit["ci_low"], audit["ci_high"]) == (pytest.approx(lo, abs=1e-6), pytest.approx(hi, abs=1e-6))
    assert audit["disagreement_rate"] == pytest.approx(1 / 3, abs=1e-6)
    # 3 x (reference 0.001 + judge 0.002) + the shadow audit's own SLM call 0.0005
    assert audit["cost_usd"] == pytest.approx(0.0095, abs=1e-12)
    t = rep["totals"]
    assert t["savings_usd"] == pytest.approx(0.0278, abs=1e-9)  # as in test_report.py
    assert t["audit_cost_usd"] == pytest.approx(0.0095, abs=1e-12)
    assert t["net_savings_usd"] == pytest.approx(0.0278 - 0.0095, abs=1e-9)
    assert audit["by_domain"]["sql"]["samples"] == 3 and audit["by_domain"]["sql"]["cost_usd"] == pytest.approx(0.009)
    assert audit["by_domain"]["code"]["non_inferior_rate"] is None  # only an error: nothing judged
    assert audit["by_day"]["2025-06-15"]["sql"]["wins"] == 1
    assert list(audit["guardrails"]) == ["sql"] and audit["guardrails"]["sql"]["action"] == "shadow"
    groups = {g["key"]: g for g in rep["groups"]}
    assert groups["sql"]["audit"]["losses"] == 1 and groups["code"]["audit"]["errors"] == 1


def test_cli_table_and_csv_show_quality(ledger: Ledger, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    args = ["--ledger-url", url, "--since", SINCE.isoformat(), "--until", UNTIL.isoformat(), "--by", "domain"]
    table = CliRunner().invoke(report_app, ["report", *args, "--format", "table"])
    assert table.exit_code == 0, table.output
    assert "Quality: audited SLM answers" in table.output and "$0.0183" in table.output
    assert "shadow" in table.output  # sql's guardrail
    out = CliRunner().invoke(report_app, ["report", *args, "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = {r["key"]: r for r in csv.DictReader(io.StringIO(out.output))}
    assert rows["TOTAL"]["audit_samples"] == "4" and float(rows["TOTAL"]["net_savings_usd"]) == pytest.approx(0.0183)
    assert rows["sql"]["audit_losses"] == "1"


async def test_audit_rows_and_quality_on_postgresql(tmp_path: Path) -> None:
    try:
        from tests.gateway.ledger_helpers import pg_database
    except ImportError:  # tests/gateway is not a package
        from ledger_helpers import pg_database  # type: ignore[no-redef]

    async with pg_database() as url:
        p = policy({"ledger": {"url": url}}, base_dir=str(tmp_path))
        led = Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES))
        await led.start()
        try:
            for r in sample_records():
                led.record(r)
            await led.flush()
            store = AuditStore(lambda: led.engine, tmp_path / "spill")
            rows = [_audit(1, "sql", "win"), _audit(2, "sql", "loss"), _audit(3, "sql", "tie", disagree=True)]
            for row in rows:
                store.add(AUDITS, row)
            store.add(AUDITS, rows[0])  # a replayed duplicate is skipped, not counted twice
            await store.flush()
            assert led.engine is not None
            rep = await build_report(led.engine, since=SINCE, until=UNTIL, by="domain")
        finally:
            await led.close()
    audit = rep["audit"]
    assert (audit["samples"], audit["wins"], audit["losses"], audit["ties"]) == (3, 1, 1, 1)
    assert audit["cost_usd"] == pytest.approx(0.009) and rep["totals"]["net_savings_usd"] == pytest.approx(0.0188)
