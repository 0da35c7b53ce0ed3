"""The starter recipe (router.starter) end to end on the project's own files (no public data needed)."""

from __future__ import annotations

import numpy as np

from router import starter
from router.shift import by_source, crossfit_routes


def test_thresholds_come_from_out_of_source_probabilities_and_the_model_records_its_recipe() -> None:
    pool = starter.project_examples()[::2]  # half of each file keeps the test quick
    assert {e.source for e in pool} == {"project:" + n for n in starter.PROJECT_FILES}
    assert (starter.weights_of(pool) == starter.PROJECT_WEIGHT).all()
    xfit = starter.crossfit(pool, cache=False)
    assert xfit.probs.shape == (len(pool), 5)
    assert np.allclose(xfit.probs.sum(axis=1), 1.0, atol=1e-4)
    # out of source is harder than in sample: the held-out files are scored worse than the final model scores them
    model = starter.fit(pool, xfit)
    true = np.asarray([model.labels.index(e.label) for e in pool])
    oos_acc = float((xfit.probs.argmax(axis=1) == true).mean())
    in_acc = float((model.predict_proba([e.text for e in pool]).argmax(axis=1) == true).mean())
    assert 0.5 < oos_acc < in_acc
    assert model.temperature == 1.0 and model.manifest["training"]["recipe"] == "router.starter"
    assert model.manifest["calibration"]["data"].startswith("out-of-source")
    assert set(model.thresholds) == {"code", "math", "sql", "support"}
    slm, per = crossfit_routes(xfit.probs, [e.label for e in pool], [e.source for e in pool], model.labels)
    assert set(per) == {e.source for e in pool}
    rows = by_source(xfit.probs, [e.label for e in pool], [e.source for e in pool], model.labels, slm)
    assert all(0.0 <= (r.leakage if r.label == "general" else r.coverage) <= 1.0 for r in rows)
