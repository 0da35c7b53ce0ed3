"""Audit verdicts become difficulty-model labels (issues 15/16): `slmgw quality export-audits`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from gateway.audit.store import AuditStore
from gateway.audit.tables import AUDITS
from gateway.costs import CostModel
from gateway.ledger import Ledger
from gateway.quality_cli import app as quality_app
from router.difficulty_train import read_records

try:
    from tests.gateway.ledger_helpers import PRICES, policy, rec
except ImportError:  # tests/gateway is not a package
    from ledger_helpers import PRICES, policy, rec  # type: ignore[no-redef]

NOW = 1_750_000_000.0


def _audit(i: int, verdict: str, prompt_text: str | None) -> dict[str, Any]:
    return {"id": f"a{i}", "request_id": f"req-{i}", "ts": NOW + i, "tenant": "acme", "domain": "sql",
            "mode": "audit", "slm_backend": "sql-slm", "slm_model": "sql", "reference_model": "m",
            "judge_model": "m", "verdict": verdict, "order1": None, "order2": None, "disagree": False,
            "error": None, "slm_cost_usd": 0.0, "reference_cost_usd": 0.0, "judge_cost_usd": 0.0,
            "prompt_text": prompt_text, "slm_answer": None, "reference_answer": None}


async def test_export_audits_writes_training_records(tmp_path: Path) -> None:
    p = policy({"ledger": {"url": "sqlite:///ledger.sqlite", "store_prompts": True}}, base_dir=str(tmp_path))
    ledger = Ledger.from_policy(p, costs=CostModel.from_policy(p, PRICES))
    await ledger.start()
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "rows per day in orders"}]
    ledger.record(rec(request_id="req-2", ts=NOW, prompt_text=json.dumps(chat)))  # text from the ledger row
    await ledger.flush()
    store = AuditStore(lambda: ledger.engine, tmp_path / "spill")
    for row in (_audit(1, "win", json.dumps([{"role": "user", "content": "top 5 customers by revenue"}])),
                _audit(2, "loss", None), _audit(3, "tie", json.dumps([{"role": "user", "content": "count users"}])),
                _audit(4, "error", json.dumps([{"role": "user", "content": "x"}])), _audit(5, "win", None)):
        store.add(AUDITS, row)
    await store.flush()
    await ledger.close()
    out = tmp_path / "labels.jsonl"
    args = ["export-audits", "--ledger-url", f"sqlite:///{tmp_path / 'ledger.sqlite'}", "--since", "2025-01-01",
            "--out", str(out)]
    result = await asyncio.to_thread(CliRunner().invoke, quality_app, args)  # the CLI runs its own loop
    assert result.exit_code == 0, result.output
    assert "wrote 3 records" in result.output and "1 without a verdict" in result.output
    assert "1 without stored text" in result.output
    records = read_records([out])
    assert [(r.text, r.slm_score, r.llm_score) for r in records] == [
        ("top 5 customers by revenue", 1.0, 0.0), ("rows per day in orders", 0.0, 1.0), ("count users", 1.0, 1.0)]
    bad = CliRunner().invoke(quality_app, ["export-audits", "--out", str(out)])
    assert bad.exit_code == 2 and "give --config POLICY or --ledger-url URL" in bad.output
