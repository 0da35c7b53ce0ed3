"""The starter router's recipe: broad public data plus the project's prompts, thresholds from
out-of-source probabilities.

Training pool: every corpus ``router.corpora`` reads **except** the non-commercial ones (those only
ever evaluate), at most ``CAP`` examples per source, plus the project's hand-written prompt files
(``router/examples/*.jsonl``, each file one source, example weight ``PROJECT_WEIGHT``). Thresholds:
each source is held out in turn (``router.crossfit``), and the threshold rule is run on all those
out-of-source probabilities together (2% total leakage budget), so a threshold reflects how confident
the model is on styles it never saw rather than on its own training data. The final model is fitted
on everything with the temperature fixed at 1, as in the folds.

Fixed before any evaluation (not tuned on a held-out source): ``CAP`` 1500, ``PROJECT_WEIGHT`` 5,
C=10, character 2-5-grams (the previous recipe's values where it had them); character n-grams
over the first 300 characters (for the latency budget).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from router import corpora
from router.calibrate import DEFAULT_RULE, calibrate
from router.corpora import Example
from router.crossfit import Counts, out_of_source
from router.data import read_examples
from router.model import RouterModel, data_sha256, train

CAP = 1500
PROJECT_WEIGHT = 5.0
MAX_LEAKAGE = 0.02
C = 10.0
# character n-grams read the first 300 characters of each part (words read all of it), for the 1 ms
# budget: a ~1,100-character prompt cost ~1.6 ms CPU at 1,500 and ~1.3 ms at 500 (loaded machine). Chosen
# for latency; the 1,500 -> 500 step moved no leave-one-source-out per-label mean by more than 1.3 points.
FEATURIZER_PARAMS = {"char_min": 2, "char_max": 5, "char_cap": 300}
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
PROJECT_FILES = ("train.jsonl", "train_chat.jsonl", "train_general.jsonl", "train_code.jsonl")


def data_dir() -> Path:
    """``$SLMGW_DATA_DIR``, else ``../shared/data`` next to the repository."""
    env = os.environ.get("SLMGW_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def project_examples() -> list[Example]:
    out = []
    for name in PROJECT_FILES:
        texts, labels = read_examples([EXAMPLES_DIR / name])
        out += [Example(t, lab, "project:" + name) for t, lab in zip(texts, labels, strict=True)]
    return out


def training_pool(root: Path | None = None, cap: int = CAP) -> list[Example]:
    """Public corpora (no non-commercial ones) and the project's prompt files."""
    return corpora.load(root or data_dir(), cap=cap, include_nc=False) + project_examples()


def weights_of(pool: list[Example]) -> npt.NDArray[np.float64]:
    return np.asarray([PROJECT_WEIGHT if e.source.startswith("project:") else 1.0 for e in pool])


@dataclass
class Crossfit:
    labels: list[str]
    probs: npt.NDArray[np.float32]
    """Each row's probabilities from the model trained without its source."""


def crossfit(pool: list[Example], progress: Callable[[str], None] | None = None, cache: bool = True) -> Crossfit:
    """Out-of-source probabilities of the whole pool (one model per source). With ``cache`` they are
    kept in the temporary directory under the hash of the pool and the recipe, so the benchmark and
    the demo build share one run."""
    labels = sorted({e.label for e in pool})
    key = data_sha256([e.source + "\t" + e.text for e in pool], [e.label for e in pool])
    key = hashlib.sha256(f"{key}{CAP}{PROJECT_WEIGHT}{C}{FEATURIZER_PARAMS}".encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"slmgw-crossfit-{key}.npy"
    if cache and path.is_file():
        return Crossfit(labels, np.load(path, allow_pickle=False))
    y = np.asarray([labels.index(e.label) for e in pool], dtype=np.int64)
    counts = Counts([e.text for e in pool], FEATURIZER_PARAMS)
    probs = out_of_source(counts, labels, y, [e.source for e in pool], weights_of(pool), C, progress)
    if cache:
        np.save(path, probs, allow_pickle=False)
    return Crossfit(labels, probs)


def fit(pool: list[Example], xfit: Crossfit, rule: str = DEFAULT_RULE) -> RouterModel:
    """The final model on the whole pool, with thresholds calibrated on the out-of-source probabilities."""
    true = [e.label for e in pool]
    thresholds, achieved = calibrate(xfit.probs, true, xfit.labels, MAX_LEAKAGE, rule)
    model = train([e.text for e in pool], true, featurizer="tfidf", c=C, sample_weight=weights_of(pool).tolist(),
                  featurizer_params=FEATURIZER_PARAMS, fixed_temperature=1.0)
    if model.labels != xfit.labels:
        raise ValueError(f"labels differ: {model.labels} vs {xfit.labels}")
    project = [e for e in pool if e.source.startswith("project:")]
    model.manifest["training"].update({
        "recipe": "router.starter", "sources": sorted({e.source for e in pool}),
        "project_examples": len(project),
        "project_sha256": data_sha256([e.text for e in project], [e.label for e in project]),
        "per_source_cap": CAP, "project_weight": PROJECT_WEIGHT,
    })
    model.update_thresholds(thresholds, {"max_leakage": MAX_LEAKAGE, "budget": "total", "rule": rule,
                                         "examples": len(true),
                                         "data": "out-of-source probabilities (each source held out in turn)",
                                         "achieved": {k: round(v, 4) for k, v in achieved.items()}})
    return model
