"""Threshold rules of router.calibrate: total leakage budget, exactness, the shared cap."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from router.calibrate import RULES, calibrate
from router.metrics import GRID, rates, route
from router.model import RouterModel

LABELS = ["code", "general", "math", "sql"]


def synthetic(seed: int = 3) -> tuple[np.ndarray, list[str]]:
    """Three domains whose in-domain prompts and general look-alikes overlap differently, plus one
    general prompt that math scores very high (the kind of outlier that moves a per-domain threshold)."""
    rng = np.random.default_rng(seed)
    rows: list[list[float]] = []
    true: list[str] = []

    def add(label: str, top: str, lo: float, hi: float, n: int) -> None:
        for _ in range(n):
            c = rng.uniform(lo, hi)
            row = [(1 - c) / 3] * 4
            row[LABELS.index(top)] = c
            rows.append(row)
            true.append(label)

    add("code", "code", 0.45, 1.0, 120)
    add("math", "math", 0.55, 1.0, 120)
    add("sql", "sql", 0.7, 1.0, 120)
    add("general", "general", 0.4, 1.0, 300)
    add("general", "code", 0.3, 0.7, 40)
    add("general", "math", 0.3, 0.65, 30)
    add("general", "sql", 0.3, 0.75, 30)
    add("general", "math", 0.93, 0.95, 1)
    add("sql", "code", 0.4, 0.6, 10)  # misroutes
    return np.asarray(rows, dtype=np.float32), true


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_keeps_total_leakage_within_budget(rule: str) -> None:
    p, true = synthetic()
    for budget in (0.0, 0.01, 0.02, 0.05):
        thr, achieved = calibrate(p, true, LABELS, budget, rule)
        assert set(thr) == {"code", "math", "sql"}
        assert achieved["leakage"] <= budget + 1e-12
        y = np.asarray([LABELS.index(t) for t in true])
        assert rates(route(p, LABELS, thr), y, LABELS) == achieved


def test_total_is_the_best_coverage_at_the_budget_and_beats_the_other_rules() -> None:
    p, true = synthetic()
    got = {rule: calibrate(p, true, LABELS, 0.02, rule) for rule in RULES}
    best = got["total"][1]["coverage"]
    for rule, (_, r) in got.items():
        assert r["coverage"] <= best + 1e-12, rule
    assert got["band:0.1"][1]["coverage"] >= got["shared"][1]["coverage"]
    assert best > got["shared"][1]["coverage"]  # the domains do differ here


def test_total_matches_brute_force_on_two_domains() -> None:
    labels = ["code", "general", "sql"]
    rng = np.random.default_rng(7)
    p = rng.dirichlet([1.0, 1.0, 1.0], size=150).astype(np.float32)
    true = [labels[i] for i in rng.integers(0, 3, size=150)]
    _, achieved = calibrate(p, true, labels, 0.05, "total")
    y = np.asarray([labels.index(t) for t in true])
    best = 0.0
    for a, b in itertools.product(GRID, GRID):
        r = rates(route(p, labels, {"code": float(a), "sql": float(b)}), y, labels)
        if r["leakage"] <= 0.05 + 1e-12:
            best = max(best, r["coverage"])
    assert achieved["coverage"] == pytest.approx(best)
    assert achieved["leakage"] <= 0.05


def test_shared_is_one_threshold_and_band_stays_near_it() -> None:
    p, true = synthetic()
    shared, _ = calibrate(p, true, LABELS, 0.02, "shared")
    assert len(set(shared.values())) == 1
    t = next(iter(shared.values()))
    lower = {k: round(t - 0.01, 2) for k in shared}  # one grid step lower breaks the budget
    y = np.asarray([LABELS.index(x) for x in true])
    assert rates(route(p, LABELS, lower), y, LABELS)["leakage"] > 0.02
    band, _ = calibrate(p, true, LABELS, 0.02, "band:0.05")
    assert all(abs(v - t) <= 0.05 + 1e-9 for v in band.values())
    total, _ = calibrate(p, true, LABELS, 0.02, "total")
    # the outlier general prompt at 0.93-0.95 cannot push math above 0.95 under any rule
    assert total["math"] <= 0.96


def test_no_feasible_thresholds_switch_the_domains_off_and_bad_rules_fail() -> None:
    labels = ["code", "general"]
    p = np.asarray([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    thr, _ = calibrate(p, ["general", "code"], labels, 0.0, "total")
    assert thr == {"code": 1.0}
    with pytest.raises(ValueError, match="unknown threshold rule"):
        calibrate(p, ["general", "code"], labels, 0.02, "median")
    with pytest.raises(ValueError, match="general"):
        calibrate(p, ["code", "code"], ["code", "sql"], 0.02, "shared")


def test_bagged_rules_meet_the_budget_on_the_full_data_and_are_deterministic() -> None:
    p, true = synthetic()
    a = calibrate(p, true, LABELS, 0.02, "bag:total")
    assert a == calibrate(p, true, LABELS, 0.02, "bag:total")
    assert a[1]["leakage"] <= 0.02
    with pytest.raises(ValueError, match="not itself bagged"):
        calibrate(p, true, LABELS, 0.02, "bag:bag:total")


def test_cli_rule_is_recorded_and_both_old_and_new_artifacts_load(
        trained: tuple[RouterModel, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from router import calibrate as calibrate_module
    from router.cli import DEFAULT_RULE, app
    from router.examples import DEMO_MODEL, TRAIN_FILE

    assert DEFAULT_RULE == calibrate_module.DEFAULT_RULE
    _, path = trained
    out = tmp_path / "new.npz"
    runner = CliRunner()
    res = runner.invoke(app, ["calibrate", "--model", str(path), "--data", str(TRAIN_FILE), "--rule", "bag:total",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "(total)" in res.output
    model = RouterModel.load(out)
    assert model.manifest["calibration"]["rule"] == "bag:total"
    assert model.manifest["calibration"]["budget"] == "total"
    assert set(model.thresholds) == {"code", "math", "sql", "support"}
    assert RouterModel.load(DEMO_MODEL).thresholds  # whatever rule calibrated the shipped model
    res = runner.invoke(app, ["calibrate", "--model", str(path), "--data", str(TRAIN_FILE), "--rule", "median",
                              "--out", str(out)])
    assert res.exit_code == 2 and "unknown threshold rule" in res.output
