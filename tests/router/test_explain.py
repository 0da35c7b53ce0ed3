"""Readable decisions: the features that pushed a request to its label (Decision.features, `router predict`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from router.base import build_router
from router.cli import app
from router.model import RouterModel
from tests.router.conftest import make_policy

runner = CliRunner()


def _req(text: str) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def test_decision_names_the_words_that_pushed_it(trained: tuple[RouterModel, Path]) -> None:
    _, path = trained
    router = build_router(make_policy(path))
    d = router.decide(_req("write a sql query that joins orders and customers"))
    assert d.domain == "sql" and d.features
    text = " " + "write a sql query that joins orders and customers" + " "
    for term, push in d.features:
        assert push > 0
        assert term in text.split()  # every named word occurs in the request
    pushes = [p for _, p in d.features]
    assert pushes == sorted(pushes, reverse=True)


def test_removing_the_top_feature_lowers_the_label_probability(trained: tuple[RouterModel, Path]) -> None:
    model, _ = trained
    text = "please write a sql query that counts users per day"
    probs, _, pushed = model.explain_parts([(text, 1.0)], 3)
    label = int(np.argmax(probs))
    words = [t for t, _ in pushed]
    assert words, pushed
    without = " ".join(w for w in text.split() if w != words[0])
    assert model.predict_parts([(without, 1.0)])[0][label] < probs[label]


def test_cli_predict_prints_contributions_and_calibrate_expects_shift(trained: tuple[RouterModel, Path],
                                                                      tmp_path: Path) -> None:
    _, path = trained
    res = runner.invoke(app, ["predict", "--model", str(path), "--top", "3", "Write a SQL query that counts users."])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("sql=") and "pushed towards sql by:" in res.output
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"text": "select all rows from the orders table", "label": "sql"}\n'
                 '{"text": "what is the weather like in paris", "label": "general"}\n', encoding="utf-8")
    b.write_text('{"text": "reverse a linked list in python", "label": "code"}\n'
                 '{"text": "tell me a story about a dragon", "label": "general"}\n', encoding="utf-8")
    out = tmp_path / "cal.npz"
    res = runner.invoke(app, ["calibrate", "--model", str(path), "--data", str(a), "--data", str(b),
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "expected under shift" in res.output and "a.jsonl [sql, 1]" in res.output
