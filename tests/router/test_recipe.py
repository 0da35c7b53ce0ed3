"""The chat training recipe: example weights, held-out temperature, source-artefact removal, the
benchmark's splitting and near-duplicate report, and the demo model's calibrated thresholds."""

from __future__ import annotations

import random

import numpy as np
import pytest

from benchmarks.router.sources import (
    CODE_FILE,
    CODE_FRAMES,
    Example,
    build,
    data_dir,
    frame_code,
    frame_sql,
    near_duplicates,
    split_by_label,
)
from router.data import read_examples
from router.examples import CHAT_FILE, DEMO_MODEL, GENERAL_FILE, TRAIN_FILE
from router.features import TfidfFeaturizer
from router.model import RouterModel, train

TEXTS = ["join two tables in sql", "select count from orders group by day", "python list index error",
         "fix my javascript loop", "my card was declined", "refund my order please", "what is 12 times 7",
         "solve 2x + 3 = 9", "best pizza in naples", "tell me a joke"] * 3
LABELS = ["sql", "sql", "code", "code", "support", "support", "math", "math", "general", "general"] * 3


def test_sample_weights_shift_the_model_and_are_recorded() -> None:
    plain = train(TEXTS, LABELS)
    heavy = [5.0 if lab == "math" else 1.0 for lab in LABELS]
    weighted = train(TEXTS, LABELS, sample_weight=heavy)
    probe = plain.labels.index("math")
    p0 = plain.predict_proba(["what is 3 plus 4"])[0, probe]
    p1 = weighted.predict_proba(["what is 3 plus 4"])[0, probe]
    assert weighted.manifest["training"]["weighted"] is True
    assert plain.manifest["training"]["weighted"] is False
    assert p1 != pytest.approx(p0)


def test_sample_weight_length_is_checked() -> None:
    with pytest.raises(ValueError, match="one weight per text"):
        train(TEXTS, LABELS, sample_weight=[1.0])


def test_temperature_from_held_out_data_is_at_least_one() -> None:
    model = train(TEXTS, LABELS, temperature_data=(["sum of sales by month in sql", "my parcel is late"],
                                                   ["sql", "support"]))
    assert model.temperature >= 1.0
    assert model.manifest["training"]["temperature_from"] == "held-out data"
    with pytest.raises(ValueError, match="labels the training data lacks"):
        train(TEXTS, LABELS, temperature_data=(["x"], ["weather"]))


def test_mbpp_opening_is_reframed_and_sql_questions_become_requests() -> None:
    rng = random.Random(1)
    outs = {frame_code("Write a python function to find the sum of a list.", rng) for _ in range(60)}
    assert len(outs) > 4  # several framings
    assert all("find the sum of a list" in o for o in outs)
    assert {f.format(x="find the sum of a list") for f in CODE_FRAMES} >= outs
    assert frame_code("Reverse a string.", rng) == "Reverse a string."  # no opening: unchanged
    q = frame_sql("What is the capital of texas?", rng)
    assert q.endswith("what is the capital of texas?") and q != "what is the capital of texas?"


def test_split_by_label_keeps_every_label_in_both_parts() -> None:
    exs = [Example(f"t{i}", lab, "s") for i, lab in enumerate(["a"] * 10 + ["b"] * 20)]
    first, second = split_by_label(exs, 0.7)
    assert len(first) == 21 and len(second) == 9
    assert {e.label for e in second} == {"a", "b"}
    assert not {e.text for e in first} & {e.text for e in second}


def test_near_duplicates_flags_only_close_texts() -> None:
    training = [Example("how do i deep copy an object in javascript", "code", "t")]
    probe = [Example("How do I deep copy an object in JavaScript?", "code", "e"),
             Example("what is the capital of peru", "general", "e")]
    assert near_duplicates(probe, training) == {0}


@pytest.mark.skipif(not data_dir().is_dir(), reason=f"public data not found at {data_dir()}")
def test_chat_recipe_relabels_calculator_and_frames_sources() -> None:
    pool = build(scale=0.05, recipe="chat")
    sources = {e.source for e in pool}
    assert "clinc/calculator" in sources
    assert all(e.label == "math" for e in pool if e.source == "clinc/calculator")
    mbpp = [e.text for e in pool if e.source == "mbpp"]
    assert sum(t.lower().startswith("write a") for t in mbpp) < 0.5 * len(mbpp)
    with pytest.raises(ValueError, match="unknown recipe"):
        build(scale=0.05, recipe="fancy")


def test_demo_model_is_the_starter_recipe_with_out_of_source_thresholds() -> None:
    model = RouterModel.load(DEMO_MODEL)
    training = model.manifest["training"]
    texts, _ = read_examples([TRAIN_FILE, CHAT_FILE, GENERAL_FILE, CODE_FILE])
    assert training["recipe"] == "router.starter"
    assert training["project_examples"] == len(texts) and training["examples"] > 10 * len(texts)
    sources = set(training["sources"])
    assert {"bitext", "staqc_sql", "gsm8k", "conala", "hwu64"} <= sources
    assert not sources & {"asdiv", "codealpaca_2k", "instruction_wild", "alpaca_5k"}  # non-commercial: never shipped
    assert set(model.thresholds) == {"sql", "code", "support", "math"}
    assert all(0.2 <= t <= 1.0 for t in model.thresholds.values())
    assert model.manifest["calibration"]["rule"] == "bag:total"
    assert model.manifest["calibration"]["budget"] == "total"
    assert "out-of-source" in model.manifest["calibration"]["data"]
    assert DEMO_MODEL.stat().st_size < 50_000_000
    probs = model.predict_proba(["why does my python loop never end", "what's the capital of france",
                                 "CREATE TABLE orders (id INTEGER, total REAL);\nHow many orders are there?"])
    assert [model.labels[i] for i in np.argmax(probs, axis=1)] == ["code", "general", "sql"]


def test_multi_part_vector_is_the_weighted_sum_of_normalised_parts() -> None:
    model = RouterModel.load(DEMO_MODEL)
    f = model.featurizer
    assert isinstance(f, TfidfFeaturizer)
    parts = [("now group it by month", 1.0), ("total revenue per store from the orders table", 0.5)]
    (idx, val), known = f.vector(parts)
    dense = np.zeros(len(f.idf), dtype=np.float64)
    for text, w in parts:
        (i, v), _ = f.vector([(text, 1.0)])
        dense[i] += w * v
    dense /= np.linalg.norm(dense)
    got = np.zeros_like(dense)
    got[idx] = val
    assert np.allclose(got, dense, atol=1e-6)
    assert 0.0 < known <= 1.0
    assert len(set(idx.tolist())) == len(idx)


def test_char_ngram_range_is_a_stored_featurizer_param(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = train(TEXTS, LABELS, featurizer_params={"char_min": 2, "char_max": 5})
    assert isinstance(model.featurizer, TfidfFeaturizer)
    assert any(g.startswith("c") and len(g) == 3 for g in model.featurizer.analyze("ab"))  # "c ab"[:3]
    loaded = RouterModel.load(model.save(tmp_path / "m.npz"))
    assert loaded.featurizer.params()["char_min"] == 2
    probe = ["join two tables please"]
    assert np.allclose(loaded.predict_proba(probe), model.predict_proba(probe), atol=1e-5)
    # artifacts written before the parameter existed read as 3-5
    params = {k: v for k, v in model.featurizer.params().items() if k not in ("char_min", "char_max")}
    old = TfidfFeaturizer.from_arrays(params, model.featurizer.arrays())
    assert (old.params()["char_min"], old.params()["char_max"]) == (3, 5)
    # the demo model is built with the 2-5 range picked on validation
    demo = RouterModel.load(DEMO_MODEL)
    assert (demo.featurizer.params()["char_min"], demo.featurizer.params()["char_max"]) == (2, 5)
