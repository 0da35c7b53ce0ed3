"""Out-of-source probabilities (router.crossfit) and thresholds cross-fitted by source (router.shift)."""

from __future__ import annotations

import numpy as np
import pytest

from router.crossfit import Counts, fit_linear, out_of_source, softmax
from router.features import TfidfFeaturizer
from router.shift import by_source, crossfit_routes, expected_under_shift, summary

TEXTS = ["select name from users where id = 3", "count orders per day in sql", "join two tables on id",
         "reverse a list in python", "python loop never ends", "fix this javascript function",
         "what is the capital of france", "tell me a joke about cats", "how tall is mount everest",
         "select sum of sales group by region", "write a python function to sort", "best pizza in rome"]
LABELS = ["sql", "sql", "sql", "code", "code", "code", "general", "general", "general", "sql", "code", "general"]
SOURCES = ["a", "a", "b", "a", "b", "b", "a", "b", "c", "c", "c", "c"]


def test_fold_features_equal_a_featurizer_fitted_on_the_training_rows_only() -> None:
    counts = Counts(TEXTS, {"char_min": 2, "char_max": 5})
    train_rows = np.flatnonzero(np.asarray(SOURCES) != "a")
    ours = counts.tfidf(train_rows)(counts.matrix[train_rows]).toarray()
    fitted = TfidfFeaturizer(char_min=2, char_max=5).fit_transform([TEXTS[i] for i in train_rows]).toarray()
    assert ours.shape == fitted.shape
    # same columns up to order: compare each row's sorted non-zero weights
    for a, b in zip(ours, fitted, strict=True):
        assert np.allclose(np.sort(a[a > 0]), np.sort(b[b > 0]), atol=1e-5)


def test_held_out_rows_are_scored_by_a_model_that_never_saw_their_source() -> None:
    labels = sorted(set(LABELS))
    y = np.asarray([labels.index(lab) for lab in LABELS])
    counts = Counts(TEXTS)
    probs = out_of_source(counts, labels, y, SOURCES, np.ones(len(y)), c=10.0)
    # reference: featurizer + classifier fitted from scratch without source "b"
    keep = [i for i, s in enumerate(SOURCES) if s != "b"]
    held = [i for i, s in enumerate(SOURCES) if s == "b"]
    f = TfidfFeaturizer()
    x = f.fit_transform([TEXTS[i] for i in keep])
    clf = fit_linear(x, y[keep], np.ones(len(keep)), len(labels))
    ref = softmax(clf.decision_function(f.transform([TEXTS[i] for i in held])))
    assert np.allclose(probs[held], ref, atol=1e-4)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def _probs(rows: list[tuple[str, float]], labels: list[str]) -> np.ndarray:
    out = np.full((len(rows), len(labels)), 0.0, dtype=np.float32)
    for i, (lab, p) in enumerate(rows):
        out[i] = (1 - p) / (len(labels) - 1)
        out[i, labels.index(lab)] = p
    return out


def test_thresholds_for_a_source_are_chosen_without_it() -> None:
    labels = ["general", "sql"]
    # source x: its general prompts look like confident sql; the other sources are clean
    rows = [("sql", 0.95)] * 10 + [("sql", 0.9)] * 10 + [("general", 0.9)] * 40 + [("sql", 0.97)] * 5
    true = ["sql"] * 10 + ["sql"] * 10 + ["general"] * 40 + ["general"] * 5
    src = ["y"] * 10 + ["z"] * 10 + ["y"] * 20 + ["z"] * 20 + ["x"] * 5
    slm, per = crossfit_routes(_probs(rows, labels), true, src, labels, max_leakage=0.02, rule="total")
    # without x, nothing general scores sql: a low threshold is free, so x's general prompts all leak
    assert per["x"]["sql"] <= 0.9
    assert slm[-5:].all()
    rates = by_source(_probs(rows, labels), true, src, labels, slm)
    x = next(r for r in rates if r.source == "x")
    assert x.leakage == 1.0 and x.label == "general"
    s = summary(rates)
    assert s["general"]["worst_source"] == "x" and s["general"]["worst"] == 1.0
    assert s["sql"]["mean"] == pytest.approx(np.mean([r.coverage for r in rates if r.label == "sql"]))
    assert expected_under_shift(rates)["worst_leakage"] == 1.0


def test_crossfit_needs_two_sources() -> None:
    with pytest.raises(ValueError, match="two sources"):
        crossfit_routes(_probs([("sql", 0.9)], ["general", "sql"]), ["sql"], ["a"], ["general", "sql"])
