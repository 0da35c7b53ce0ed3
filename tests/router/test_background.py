"""The general background (router.background): derived features that give in-domain-only training a
general class, and leakage estimates to `calibrate` when its data has no general examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from router import background
from router.cli import app
from router.data import read_examples, write_jsonl
from router.examples import CHAT_FILE, GENERAL_FILE, TRAIN_FILE
from router.features import TfidfFeaturizer
from router.model import RouterModel, train

runner = CliRunner()


@pytest.fixture(scope="module")
def bg() -> background.Background:
    texts, labels = read_examples([TRAIN_FILE, CHAT_FILE, GENERAL_FILE])
    gen = [t for t, lab in zip(texts, labels, strict=True) if lab == "general"]
    f = TfidfFeaturizer(char_min=2, char_max=5)
    f.fit_transform(gen)  # like the shipped one: a vocabulary that never saw the user's domains
    # the last fifth plays a held-out calibration source
    sources = ["a"] * (len(gen) - len(gen) // 5) + ["truthfulqa"] * (len(gen) // 5)
    return background.build(f, gen, sources)


def test_rows_are_cut_normalised_and_survive_a_round_trip(bg: background.Background, tmp_path: Path) -> None:
    assert (np.diff(bg.rows.indptr) <= background.TOP).all()
    assert np.allclose(np.sqrt(bg.rows.multiply(bg.rows).sum(axis=1)), 1.0, atol=1e-3)
    assert set(bg.part.tolist()) == {0, 1}
    loaded = background.load(background.save(bg, tmp_path / "bg.npz"))
    assert loaded.rows.shape == bg.rows.shape and (loaded.part == bg.part).all()
    assert np.allclose(loaded.rows.toarray(), bg.rows.toarray(), atol=2e-3)  # float16 storage
    assert loaded.featurizer.vocab == bg.featurizer.vocab


def _in_domain() -> tuple[list[str], list[str]]:
    texts, labels = read_examples([TRAIN_FILE])
    keep = [(t, lab) for t, lab in zip(texts, labels, strict=True) if lab in ("sql", "support")]
    return [t for t, _ in keep], [lab for _, lab in keep]


def test_in_domain_training_gets_a_general_class_from_the_background(bg: background.Background) -> None:
    texts, labels = _in_domain()
    plain = train(texts, labels)
    assert plain.labels == ["sql", "support"]
    with_bg = train(texts, labels, background=bg)
    assert with_bg.labels == ["general", "sql", "support"]
    assert with_bg.manifest["training"]["background_rows"] == int((bg.part == 0).sum())
    assert with_bg.manifest["training"]["examples"] == len(texts)
    probs = with_bg.predict_proba(["what should i cook for dinner tonight", "list all orders with sql"])
    assert [with_bg.labels[i] for i in probs.argmax(axis=1)] == ["general", "sql"]
    # the user's own n-grams are kept next to the background's vocabulary
    assert len(with_bg.featurizer.idf) > len(bg.featurizer.idf)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="tfidf featurizer only"):
        train(texts, labels, featurizer="minilm", background=bg)


def test_rows_map_onto_another_vocabulary_by_ngram(bg: background.Background) -> None:
    other = TfidfFeaturizer(char_min=2, char_max=5)
    other.fit_transform(["what should i cook for dinner", "the weather in paris"])
    rows = background.rows_for(bg.rows, bg, other)
    assert rows.shape == (bg.rows.shape[0], len(other.idf))
    assert rows.nnz > 0 and rows.nnz < bg.rows.nnz


def test_calibrate_without_general_examples_uses_the_background(bg: background.Background, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bg.npz"
    background.save(bg, path)
    monkeypatch.setattr(background, "BACKGROUND_FILE", path)
    texts, labels = _in_domain()
    data = tmp_path / "dom.jsonl"
    write_jsonl(data, texts, labels)
    model = tmp_path / "m.npz"
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(model)])
    assert res.exit_code == 0, res.output
    assert "general=" in res.output
    res = runner.invoke(app, ["calibrate", "--model", str(model), "--data", str(data)])
    assert res.exit_code == 0, res.output
    assert "leakage measured on" in res.output and "shipped general background" in res.output
    assert RouterModel.load(model).thresholds
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(model), "--no-background"])
    assert res.exit_code == 0 and "general=" not in res.output
