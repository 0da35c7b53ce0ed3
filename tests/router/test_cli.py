"""`slmgw router train|eval|calibrate|predict` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from router.cli import app
from router.examples import EVAL_FILE, TRAIN_FILE
from router.model import RouterModel

runner = CliRunner()


def test_train_eval_calibrate_predict(tmp_path: Path) -> None:
    out = tmp_path / "r.npz"
    csv_file = tmp_path / "extra.csv"
    csv_file.write_text('text,label\n"SELECT count(*) FROM orders GROUP BY region, please",sql\n', encoding="utf-8")
    res = runner.invoke(app, ["train", "--data", str(TRAIN_FILE), "--data", str(csv_file), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "sql=81" in res.output and out.is_file()
    assert RouterModel.load(out).manifest["training"]["files"] == ["train.jsonl", "extra.csv"]

    res = runner.invoke(app, ["eval", "--model", str(out), "--data", str(EVAL_FILE), "--format", "json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["examples"] == sum(1 for _ in EVAL_FILE.open())
    assert 0.5 < report["accuracy"] <= 1.0
    assert {"coverage", "leakage", "misroute", "confusion", "per_class", "sweep"} <= set(report)

    res = runner.invoke(app, ["eval", "--model", str(out), "--data", str(EVAL_FILE)])
    assert res.exit_code == 0 and "confusion" in res.output and "leakage" in res.output

    res = runner.invoke(app, ["calibrate", "--model", str(out), "--data", str(EVAL_FILE), "--max-leakage", "0.02"])
    assert res.exit_code == 0, res.output
    model = RouterModel.load(out)
    assert set(model.thresholds) == {"code", "math", "sql", "support"}
    assert model.manifest["calibration"]["max_leakage"] == 0.02
    res = runner.invoke(app, ["eval", "--model", str(out), "--data", str(EVAL_FILE), "--format", "json"])
    assert json.loads(res.output)["leakage"] <= 0.02

    res = runner.invoke(app, ["predict", "--model", str(out), "Write a SQL query that counts users per day."])
    assert res.exit_code == 0 and res.output.startswith("sql=")


def test_errors_are_clear_and_exit_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["eval", "--model", str(tmp_path / "none.npz"), "--data", str(EVAL_FILE)])
    assert res.exit_code == 2 and "none.npz: file not found" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi"}\n', encoding="utf-8")
    res = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "x.npz")])
    assert res.exit_code == 2 and "bad.jsonl:1: 'label' must be a non-empty string" in res.output
