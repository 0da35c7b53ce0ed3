"""Coverage/leakage arithmetic and per-domain calibration."""

from __future__ import annotations

import numpy as np
import pytest

from router.metrics import calibrate, evaluate

LABELS = ["code", "general", "sql"]


def probs(rows: list[tuple[float, float, float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def test_evaluate_counts_coverage_leakage_and_misroute() -> None:
    p = probs([(0.9, 0.05, 0.05),   # code -> code slm
               (0.6, 0.3, 0.1),     # code, below its 0.7 threshold -> llm
               (0.1, 0.1, 0.8),     # code -> sql slm (misroute)
               (0.2, 0.7, 0.1),     # general -> llm
               (0.1, 0.1, 0.8)])    # general -> sql slm (leak)
    r = evaluate(p, ["code", "code", "code", "general", "general"], LABELS, {"code": 0.7, "sql": 0.5})
    assert r["coverage"] == pytest.approx(1 / 3)
    assert r["misroute"] == pytest.approx(1 / 3)
    assert r["leakage"] == pytest.approx(1 / 2)
    assert r["accuracy"] == pytest.approx(3 / 5)
    assert r["confusion"] == [[2, 0, 1], [0, 1, 1], [0, 0, 0]]
    assert r["per_class"]["sql"]["precision"] == 0.0
    assert [s["threshold"] for s in r["sweep"]][:2] == [0.3, 0.4]


def test_evaluate_rejects_unknown_labels() -> None:
    with pytest.raises(ValueError, match="does not know"):
        evaluate(probs([(1, 0, 0)]), ["legal"], LABELS, {})


def test_calibrate_meets_the_leakage_budget_and_keeps_coverage() -> None:
    rng = np.random.default_rng(1)
    rows, true = [], []
    for _ in range(300):  # in-domain sql, confident
        c = rng.uniform(0.6, 1.0)
        rows.append((0.0, 1 - c, c))
        true.append("sql")
    for _ in range(300):  # general that looks like sql, less confident
        c = rng.uniform(0.4, 0.75)
        rows.append((0.0, 1 - c, c) if c > 0.5 else (0.0, c, 1 - c))
        true.append("general")
    p = probs(rows)
    thresholds, achieved = calibrate(p, true, LABELS, max_leakage=0.02)
    assert achieved["leakage"] <= 0.02
    assert 0.70 <= thresholds["sql"] <= 0.80
    assert achieved["coverage"] > 0.5
    loose, loose_rates = calibrate(p, true, LABELS, max_leakage=0.5)
    assert loose["sql"] < thresholds["sql"] and loose_rates["coverage"] >= achieved["coverage"]


def test_calibrate_needs_general() -> None:
    with pytest.raises(ValueError, match="general"):
        calibrate(probs([(0.5, 0.5, 0.0)]), ["code"], ["code", "sql", "math"])
