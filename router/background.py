"""The shipped general background: what "general" looks like, for users who train on in-domain data only.

``slmgw router train --data my_sql.jsonl --data my_support.jsonl`` has no general examples, so on its
own it could not tell an SQL question from small talk. The background (``router/examples/
background.npz``) holds the general prompts of the starter pool as **derived features, not texts**: each
prompt's TF-IDF row under the starter vocabulary, cut to its ``TOP`` strongest n-grams (values in
float16), plus the vocabulary and IDF. Rows are split by source: ``part`` 0 (most sources) joins
training as ``general`` examples; ``part`` 1 (whole sources never trained on) estimates leakage in
``calibrate`` when the calibration data has no general examples.

Training with a background uses the union of the background vocabulary and the user's own n-grams
(each with its own IDF), so the user's domain vocabulary is kept and the background's rows keep their
meaning. A model trained without the background can still be calibrated with it: its rows are mapped
onto the model's vocabulary by n-gram.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router.features import TfidfFeaturizer

TOP = 48
BACKGROUND_FILE = Path(__file__).resolve().parent / "examples" / "background.npz"
CALIBRATION_SOURCES = ("nq_open+webquestions", "gpteacher_roleplay", "truthfulqa", "xstest")
"""General sources kept out of the background's training part (part 1), for leakage estimates."""


@dataclass
class Background:
    featurizer: TfidfFeaturizer
    rows: Any
    """CSR matrix (rows x background vocabulary), L2-normalised."""
    part: npt.NDArray[np.int8]
    sources: list[str]

    def train_rows(self) -> Any:
        return self.rows[np.flatnonzero(self.part == 0)]

    def calibration_rows(self) -> Any:
        return self.rows[np.flatnonzero(self.part == 1)]


def build(featurizer: TfidfFeaturizer, texts: Sequence[str], sources: Sequence[str]) -> Background:
    """Rows for general ``texts`` under a fitted featurizer, each cut to its ``TOP`` n-grams."""
    import scipy.sparse as sp
    from sklearn.preprocessing import normalize

    x = featurizer.transform(texts).tocsr()
    indptr, indices, data = [0], [], []
    for i in range(x.shape[0]):
        lo, hi = x.indptr[i], x.indptr[i + 1]
        keep = np.argsort(-x.data[lo:hi])[:TOP]
        indices.append(x.indices[lo:hi][keep])
        data.append(x.data[lo:hi][keep])
        indptr.append(indptr[-1] + len(keep))
    rows = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.asarray(indptr)), shape=x.shape)
    part = np.asarray([1 if s in CALIBRATION_SOURCES else 0 for s in sources], dtype=np.int8)
    return Background(featurizer, normalize(rows), part, sorted(set(sources)))


def save(bg: Background, path: Path) -> Path:
    import json

    arrays = {f"f_{k}": v for k, v in bg.featurizer.arrays().items()}
    np.savez_compressed(path, indptr=bg.rows.indptr.astype(np.int32), indices=bg.rows.indices.astype(np.int32),
                        data=bg.rows.data.astype(np.float16), shape=np.asarray(bg.rows.shape), part=bg.part,
                        meta=np.frombuffer(json.dumps({"params": bg.featurizer.params(), "sources": bg.sources,
                                                       "top": TOP}).encode(), dtype=np.uint8),
                        **arrays)  # type: ignore[arg-type]
    return path


def load(path: Path = BACKGROUND_FILE) -> Background:
    import json

    import scipy.sparse as sp
    from sklearn.preprocessing import normalize

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        f = TfidfFeaturizer.from_arrays(meta["params"], {"vocab": z["f_vocab"], "idf": z["f_idf"]})
        rows = sp.csr_matrix((z["data"].astype(np.float32), z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        part = z["part"].astype(np.int8)
    return Background(f, normalize(rows), part, list(meta["sources"]))


def union_featurizer(bg: Background, user: TfidfFeaturizer) -> TfidfFeaturizer:
    """The background vocabulary (same columns, same IDF) followed by the user's n-grams it lacks."""
    vocab = bg.featurizer.vocab
    idf = [bg.featurizer.idf]
    extra: list[float] = []
    for term, j in sorted(user.vocab.items(), key=lambda kv: kv[1]):
        if term not in vocab:
            vocab[term] = len(vocab)
            extra.append(float(user.idf[j]))
    f = TfidfFeaturizer(**user.params())
    f.vocab = vocab
    f.idf = np.concatenate([*idf, np.asarray(extra, dtype=np.float32)]).astype(np.float32)
    return f


def rows_for(bg_rows: Any, bg: Background, featurizer: TfidfFeaturizer) -> Any:
    """Background rows re-indexed onto ``featurizer``'s columns (n-grams it lacks dropped), L2-normalised."""
    import scipy.sparse as sp
    from sklearn.preprocessing import normalize

    target = featurizer.vocab
    col = np.full(len(bg.featurizer.idf), -1, dtype=np.int64)
    for term, j in bg.featurizer.vocab.items():
        col[j] = target.get(term, -1)
    coo = bg_rows.tocoo()
    keep = col[coo.col] >= 0
    m = sp.csr_matrix((coo.data[keep], (coo.row[keep], col[coo.col[keep]])),
                      shape=(bg_rows.shape[0], len(featurizer.idf)))
    return normalize(m)
