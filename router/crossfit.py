"""Out-of-source predictions: hold out one source at a time, train on the rest, score the held-out one.

This is what predicts traffic in a style the router never saw (a held-back split of the same sources
scores 97-99% and says little). The n-grams of every text are counted once; each fold then rebuilds
exactly what ``TfidfFeaturizer`` would learn from its training rows alone (n-grams in at least
``min_df`` training texts, the ``max_features`` most frequent, IDF from the training rows), so no
statistic of the held-out source reaches its fold's model. The linear layer is the one
``router.model.train`` fits (multinomial logistic regression, balanced class weights times example
weights), with the softmax temperature fixed at 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from router.features import TfidfFeaturizer

FloatArray = npt.NDArray[np.float32]


def fit_linear(x: Any, y: npt.NDArray[np.int64], weights: npt.NDArray[np.float64], n_labels: int,
               c: float = 10.0) -> Any:
    """Logistic regression with balanced class weights (on the weighted counts) times example weights."""
    from sklearn.linear_model import LogisticRegression

    totals = np.bincount(y, weights=weights, minlength=n_labels)
    cw = totals.sum() / (n_labels * np.maximum(totals, 1e-12))
    return LogisticRegression(C=c, max_iter=2000).fit(x, y, sample_weight=weights * cw[y])


def softmax(z: npt.NDArray[np.floating[Any]]) -> FloatArray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float32)


class Counts:
    """Raw n-gram counts of every text, once (``TfidfFeaturizer.analyze``; n-grams in >= 2 texts)."""

    def __init__(self, texts: Sequence[str], featurizer_params: dict[str, Any] | None = None) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        self.featurizer = TfidfFeaturizer(**(featurizer_params or {}))
        self._vec = CountVectorizer(analyzer=self.featurizer.analyze, min_df=2, dtype=np.int32)
        self.matrix = self._vec.fit_transform(texts).tocsc()

    def transform(self, texts: Sequence[str]) -> Any:
        return self._vec.transform(texts).tocsc()

    def tfidf(self, train_rows: npt.NDArray[np.int64]) -> Callable[[Any], Any]:
        """A function mapping count rows to the TF-IDF rows a featurizer fitted on ``train_rows`` gives."""
        sub = self.matrix[train_rows]
        df = np.asarray((sub > 0).sum(axis=0)).ravel()
        tf = np.asarray(sub.sum(axis=0)).ravel()
        cols = np.flatnonzero(df >= self.featurizer.min_df)
        if len(cols) > self.featurizer.max_features:
            cols = np.sort(cols[np.argsort(-tf[cols], kind="stable")[: self.featurizer.max_features]])
        n = len(train_rows)
        idf = (np.log((1 + n) / (1 + df[cols])) + 1).astype(np.float32)

        def apply(counts: Any) -> Any:
            from sklearn.preprocessing import normalize

            m = counts[:, cols].tocsr().astype(np.float32)
            m.data = 1 + np.log(m.data)
            return normalize(m.multiply(idf).tocsr())

        return apply


def out_of_source(counts: Counts, labels: Sequence[str], y: npt.NDArray[np.int64], sources: Sequence[str],
                  weights: npt.NDArray[np.float64], c: float = 10.0,
                  progress: Callable[[str], None] | None = None) -> FloatArray:
    """Probabilities for every row from the model trained without that row's source."""
    src = np.asarray(sources)
    out = np.zeros((len(y), len(labels)), dtype=np.float32)
    names = list(dict.fromkeys(sources))
    for k, name in enumerate(names):
        held = np.flatnonzero(src == name)
        train_rows = np.flatnonzero(src != name)
        if progress:
            progress(f"fold {k + 1}/{len(names)}: without {name} ({len(held)} rows)")
        tfidf = counts.tfidf(train_rows)
        clf = fit_linear(tfidf(counts.matrix[train_rows]), y[train_rows], weights[train_rows], len(labels), c)
        z = clf.decision_function(tfidf(counts.matrix[held]))
        probs = np.zeros((len(held), len(labels)), dtype=np.float32)
        probs[:, clf.classes_] = softmax(np.asarray(z))  # a fold may lack a label entirely
        out[held] = probs
    return out
