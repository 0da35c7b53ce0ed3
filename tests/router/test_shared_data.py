"""Train on a slice of the public datasets (../shared/data or $SLMGW_DATA_DIR); skipped when absent."""

from __future__ import annotations

import time

import pytest

from benchmarks.router.sources import build, data_dir, fill_placeholders, split, strip_mmlu
from router.metrics import evaluate
from router.model import train


def test_placeholders_and_mmlu_layout() -> None:
    assert fill_placeholders("flights from city_name0 to city_name1 ?", {"city_name0": "boston",
                                                                        "city_name1": "denver"}) \
        == "flights from boston to denver?"
    assert fill_placeholders("papers by author_name10 and author_name1", {"author_name1": "a", "author_name10": "b"}) \
        == "papers by b and a"
    assert strip_mmlu("What is 2+2?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:") == "What is 2+2?"


@pytest.mark.skipif(not data_dir().is_dir(), reason=f"public data not found at {data_dir()} (set SLMGW_DATA_DIR)")
def test_train_on_shared_data_slice() -> None:
    t0 = time.perf_counter()
    pool = build(scale=0.15)
    tr, te = split(pool, (0.8, 0.2))
    model = train([e.text for e in tr], [e.label for e in tr])
    report = evaluate(model.predict_proba([e.text for e in te]), [e.label for e in te], model.labels, {})
    assert model.labels == ["code", "general", "math", "sql", "support"]
    assert report["accuracy"] > 0.9
    assert time.perf_counter() - t0 < 30
