"""`slmgw quality train/eval/convert-mmlu`, and the public MMLU labels (skipped when absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from router.difficulty_train import mmlu_records, write_records
from tests.router.test_difficulty import synthetic

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SLMGW_DATA_DIR", REPO.parent / "shared" / "data")) / "routellm"


def test_train_then_eval_with_scores(tmp_path: Path) -> None:
    train_file, test_file = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    write_records(synthetic(300, 11), train_file)
    held_out = synthetic(120, 12)
    write_records(held_out, test_file)
    runner = CliRunner()
    res = runner.invoke(app, ["quality", "train", "--data", str(train_file), "--out", str(tmp_path / "m.npz")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["quality", "eval", "--model", str(tmp_path / "m.npz"), "--data", str(test_file),
                              "--format", "json", "--scores", str(tmp_path / "s.jsonl")])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["records"] == 120
    assert report["apgr"] > report["random"]["apgr"] + 0.2
    assert report["cpt50_pct"] < report["random"]["cpt50_pct"]
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().split("\n") if x]
    assert [x["text"] for x in lines] == [r.text for r in held_out]
    hard = [x["score"] for i, x in enumerate(lines) if i % 2 == 0]
    easy = [x["score"] for i, x in enumerate(lines) if i % 2 == 1]
    assert sum(hard) / len(hard) > sum(easy) / len(easy)


def test_eval_refuses_a_bad_model(tmp_path: Path) -> None:
    (tmp_path / "m.npz").write_bytes(b"nope")
    write_records(synthetic(4, 1), tmp_path / "d.jsonl")
    res = CliRunner().invoke(app, ["quality", "eval", "--model", str(tmp_path / "m.npz"),
                                   "--data", str(tmp_path / "d.jsonl")])
    assert res.exit_code == 2
    assert "not a readable" in res.output


@pytest.mark.skipif(not (DATA / "mmlu_responses").is_dir(), reason=f"public data not found at {DATA}")
def test_mmlu_conversion(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["quality", "convert-mmlu", "--src", str(DATA / "mmlu_responses"),
                                   "--exclude", str(DATA / "mmlu__contaminated_prompts.jsonl"),
                                   "--out", str(tmp_path / "mmlu.jsonl")])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (tmp_path / "mmlu.jsonl").read_text().split("\n") if x]
    assert len(rows) == 14042 - 5  # RouteLLM's five contaminated prompts are left out
    assert not any("\nA. " in r["text"] or r["text"].endswith("Answer:") for r in rows)
    assert {r["group"] for r in rows} == {"stem", "humanities", "social_sciences", "other"}
    slm = sum(r["slm_score"] for r in rows) / len(rows)
    llm = sum(r["llm_score"] for r in rows) / len(rows)
    assert round(slm, 2) == 0.68 and round(llm, 2) == 0.81  # PROVENANCE.md: 68.1% and 80.6%
    assert len(mmlu_records(DATA / "mmlu_responses")) == 14042
