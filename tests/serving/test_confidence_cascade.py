"""`slmgw quality eval-cascade`: replaying recorded answers through confidence floors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.quality_cascade import Replay, sweep


def _recorded(n: int, seed: int) -> list[dict[str, float]]:
    """Unsure answers (low logprob) are wrong more often; the LLM is right 90% of the time."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        lp = rng.uniform(-4.0, 0.0)
        out.append({"answer_logprob": lp, "slm_score": float(rng.random() < 1.0 + lp / 4.5),
                    "llm_score": float(rng.random() < 0.9), "slm_cost_usd": 0.001, "llm_cost_usd": 0.01})
    return out


def test_sweep_by_hand() -> None:
    replays = [Replay(-3.0, 0, 1, 1.0, 10.0), Replay(-1.0, 1, 1, 1.0, 10.0), Replay(-0.5, 1, 1, 1.0, 10.0)]
    rows = {r.floor: r for r in sweep(replays, [float("-inf"), -2.0, -0.75])}
    assert (rows[float("-inf")].escalated_pct, rows[float("-inf")].gap_recovered_pct) == (0.0, 0.0)
    assert rows[float("-inf")].quality == pytest.approx(200 / 3)
    assert rows[-2.0].escalated_pct == pytest.approx(100 / 3)
    assert rows[-2.0].quality == pytest.approx(100.0)  # the one wrong SLM answer replaced by a right one
    assert rows[-2.0].cost_per_request == pytest.approx((3 * 1.0 + 10.0) / 3)
    assert rows[-2.0].gap_recovered_pct == pytest.approx(100.0)
    assert rows[-0.75].cost_per_request == pytest.approx((3 * 1.0 + 2 * 10.0) / 3)
    with pytest.raises(ValueError, match="no recorded answers"):
        sweep([])


def test_cli_sweep_trades_cost_for_quality(tmp_path: Path) -> None:
    data = tmp_path / "answers.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _recorded(2000, 3)))
    res = CliRunner().invoke(app, ["quality", "eval-cascade", "--data", str(data), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert rows[0]["escalated_pct"] == 0.0 and rows[-1]["escalated_pct"] == 100.0
    costs = [r["cost_per_request"] for r in rows]
    assert costs == sorted(costs) and costs[0] == pytest.approx(0.001) and costs[-1] == pytest.approx(0.011)
    # Escalating the least confident 30% recovers far more than 30% of the quality gap.
    r30 = next(r for r in rows if 29 <= r["escalated_pct"] <= 31)
    assert r30["gap_recovered_pct"] > 50
    table = CliRunner().invoke(app, ["quality", "eval-cascade", "--data", str(data), "--floor", "-1.5"])
    assert table.exit_code == 0 and "-1.500" in table.output


def test_cli_reports_bad_lines(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"slm_score": 1, "llm_score": 1}) + "\n")
    res = CliRunner().invoke(app, ["quality", "eval-cascade", "--data", str(data)])
    assert res.exit_code == 2 and "bad.jsonl:1: needs a number 'answer_logprob'" in res.output
