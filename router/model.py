"""The trained router model and its artifact.

An artifact is one ``.npz`` file (a zip of NumPy arrays, loaded with ``allow_pickle=False``, so opening
a model file cannot run code). It holds:

* ``manifest``: JSON (as bytes) with ``format``, ``format_version``, ``labels``, ``featurizer``
  (name, version, params), ``thresholds`` (per label), ``temperature``, ``training`` (examples per
  label, sha256 of the training data), ``libraries`` (versions at training time), ``created``, and
  ``payload_sha256`` (sha256 over every other array, in name order);
* ``coef`` (labels x features), ``intercept``, and the featurizer's arrays (``vocab``, ``idf``).

Loading refuses, with a ``ModelError`` naming the file and the problem: a missing or unreadable file,
a checksum mismatch, another ``format_version``, an unknown featurizer or featurizer version, a
different NumPy major version, or arrays whose shapes disagree with the labels.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from router.background import Background

from router.features import (
    EmbeddingFeaturizer,
    Featurizer,
    FloatArray,
    Parts,
    TfidfFeaturizer,
    make_featurizer,
    normalize,
)

FORMAT = "slmgw-router"
FORMAT_VERSION = 1
GENERAL = "general"


class ModelError(ValueError):
    """A router artifact that cannot be used (missing, corrupt or incompatible)."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"router model {self.path}: {problem}")


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("scikit-learn", "scipy", "sentence-transformers", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def data_sha256(texts: Sequence[str], labels: Sequence[str]) -> str:
    """Hash of the training examples themselves (independent of file format and order of files)."""
    h = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        h.update(label.encode("utf-8", "surrogatepass") + b"\t")
        h.update(text.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


@dataclass
class RouterModel:
    """Labels, a featurizer, a linear layer and a softmax temperature; per-label thresholds."""

    labels: list[str]
    featurizer: Featurizer
    coef: FloatArray
    intercept: FloatArray
    temperature: float = 1.0
    thresholds: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    # -- scoring ---------------------------------------------------------------------------------
    def _rows(self, idx: npt.NDArray[np.int64]) -> FloatArray:
        """The coefficient columns of ``idx`` as a (features x labels) block: gathered from a transposed
        copy, so each feature is one contiguous read instead of one cache miss per label."""
        t = self.__dict__.get("_coef_t")
        if t is None or t.shape[0] != self.coef.shape[1]:
            t = self.__dict__["_coef_t"] = np.ascontiguousarray(self.coef.T)
        return np.asarray(t[idx])

    def _softmax(self, logits: npt.NDArray[np.floating[Any]]) -> FloatArray:
        z = logits / self.temperature
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float32)

    def predict_parts(self, parts: Parts) -> tuple[FloatArray, float]:
        """Class probabilities for one request's weighted parts, and the known-n-gram ratio."""
        vec, known = self.featurizer.vector(parts)
        if isinstance(vec, tuple):
            idx, val = vec
            logits = val @ self._rows(idx) + self.intercept if len(idx) else self.intercept.copy()
        else:
            logits = self.coef @ vec + self.intercept
        return self._softmax(logits), known

    def explain_parts(self, parts: Parts, top: int = 5) -> tuple[FloatArray, float, list[tuple[str, float]]]:
        """``predict_parts`` plus the words that pushed the request towards its top label most.

        A feature's push is its value times its weight for that label minus its mean weight over all
        labels (what it adds to that label's log-odds against the others). Pushes are summed per word
        of the request: a word n-gram gives its push to its words, a character n-gram to the words it
        overlaps (where it first occurs), shared equally. Largest first; empty for featurizers without
        named features."""
        vec, known = self.featurizer.vector(parts)
        if not isinstance(vec, tuple):
            return self._softmax(self.coef @ vec + self.intercept), known, []
        idx, val = vec
        if not len(idx):
            return self._softmax(self.intercept.copy()), known, []
        cols = self._rows(idx).T
        probs = self._softmax(val @ cols.T + self.intercept)
        if not isinstance(self.featurizer, TfidfFeaturizer):
            return probs, known, []
        k = int(probs.argmax())
        push = val * (cols[k] - cols.mean(axis=0))
        n = min(EXPLAIN_FEATURES, len(push))
        order = np.argpartition(-push, n - 1)[:n] if n < len(push) else np.arange(n)
        terms = self.featurizer.terms()
        pairs = [(terms[j], p) for j, p in zip(idx[order].tolist(), push[order].tolist(), strict=True) if p > 0]
        return probs, known, _words_pushed(parts, pairs, top)

    def predict_proba(self, texts: Sequence[str]) -> FloatArray:
        """Probabilities for many texts at once (rows follow ``labels``)."""
        x = self.featurizer.transform(texts)
        logits = np.asarray(x @ self.coef.T) + self.intercept
        return self._softmax(logits)

    def threshold(self, label: str, default: float = 0.5) -> float:
        return self.thresholds.get(label, default)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"coef": self.coef.astype(np.float32),
                                         "intercept": self.intercept.astype(np.float32)}
        for name, arr in self.featurizer.arrays().items():
            arrays["f_" + name] = arr
        manifest = dict(self.manifest)
        manifest.update({
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "labels": list(self.labels),
            "featurizer": {"name": self.featurizer.name, "version": self.featurizer.version,
                           "params": self.featurizer.params()},
            "thresholds": {k: round(float(v), 4) for k, v in self.thresholds.items()},
            "temperature": float(self.temperature),
            "payload_sha256": _payload_sha256(arrays),
        })
        manifest.setdefault("libraries", _library_versions())
        manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.manifest = manifest
        buf = io.BytesIO()
        blob = np.frombuffer(json.dumps(manifest, indent=1, sort_keys=True).encode(), dtype=np.uint8)
        np.savez_compressed(buf, manifest=blob, **arrays)  # type: ignore[arg-type]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)  # atomic: a reader never sees half a model
        return path

    @classmethod
    def load(cls, path: Path | str) -> RouterModel:
        path = Path(path)
        if not path.is_file():
            raise ModelError(path, "file not found" if not path.exists() else "not a regular file")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as exc:  # zip, CRC, npy-header or pickle-refusal errors all mean "corrupt"
            raise ModelError(path, f"corrupt or not a router model ({type(exc).__name__}: {exc})") from None
        if "manifest" not in arrays:
            raise ModelError(path, "no manifest inside: not a router model")
        try:
            manifest = json.loads(arrays.pop("manifest").tobytes().decode())
        except ValueError as exc:
            raise ModelError(path, f"manifest is not valid JSON ({exc})") from None
        _check_manifest(path, manifest, arrays)
        fz = manifest["featurizer"]
        f_arrays = {k[2:]: v for k, v in arrays.items() if k.startswith("f_")}
        featurizer: Featurizer
        try:
            if fz["name"] == "tfidf":
                featurizer = TfidfFeaturizer.from_arrays(fz["params"], f_arrays)
            else:
                featurizer = EmbeddingFeaturizer.from_arrays(fz["params"], f_arrays)
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(path, f"featurizer {fz['name']!r} cannot be rebuilt: {exc}") from None
        labels = list(manifest["labels"])
        coef = np.ascontiguousarray(arrays["coef"], dtype=np.float32)
        intercept = np.asarray(arrays["intercept"], dtype=np.float32)
        n_features = len(featurizer.idf) if isinstance(featurizer, TfidfFeaturizer) else 384
        if coef.shape != (len(labels), n_features) or intercept.shape != (len(labels),):
            raise ModelError(path, f"coefficient shape {coef.shape} does not match {len(labels)} labels "
                                   f"x {n_features} features")
        return cls(labels=labels, featurizer=featurizer, coef=coef, intercept=intercept,
                   temperature=float(manifest.get("temperature", 1.0)),
                   thresholds={k: float(v) for k, v in manifest.get("thresholds", {}).items()},
                   manifest=manifest)

    def update_thresholds(self, thresholds: dict[str, float], note: dict[str, Any] | None = None) -> None:
        self.thresholds = dict(thresholds)
        if note:
            self.manifest["calibration"] = note


EXPLAIN_FEATURES = 16  # strongest features attributed to words in an explanation
EXPLAIN_CHARS = 1500
_TOKEN = re.compile(r"\w+|[^\w\s]+")


def _words_pushed(parts: Parts, pushes: list[tuple[str, float]], top: int) -> list[tuple[str, float]]:
    # character n-grams are placed in the latest turn's first characters only (where the featurizer
    # reads most of them); word n-grams need no placing
    text = " " + normalize(parts[0][0][:EXPLAIN_CHARS]) + " "
    score: dict[str, float] = {}
    for term, p in pushes:
        if term.startswith("w "):
            words = term[2:].split(" ")
        else:
            gram = term[1:]
            pos = text.find(gram)
            if pos < 0:
                continue
            # the whitespace-delimited stretch the n-gram lies in, cut into the analyzer's tokens
            start = text.rfind(" ", 0, pos + 1) + 1 if not gram.startswith(" ") else pos + 1
            end = text.find(" ", pos + len(gram.rstrip(" ")))
            words = _TOKEN.findall(text[start:end if end >= 0 else len(text)])
            if not words:
                continue
        for w in words:
            score[w] = score.get(w, 0.0) + p / len(words)
    ranked = sorted(score.items(), key=lambda kv: -kv[1])[:top]
    return [(w, round(v, 3)) for w, v in ranked]


def _payload_sha256(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _check_manifest(path: Path, m: Any, arrays: dict[str, np.ndarray]) -> None:
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ModelError(path, "manifest does not describe a slmgw router model")
    if m.get("format_version") != FORMAT_VERSION:
        raise ModelError(path, f"artifact format version {m.get('format_version')!r}, this gateway reads "
                               f"version {FORMAT_VERSION}: retrain with `slmgw router train`")
    for key in ("labels", "featurizer", "payload_sha256", "libraries"):
        if key not in m:
            raise ModelError(path, f"manifest lacks {key!r}")
    labels = m["labels"]
    if not isinstance(labels, list) or len(labels) < 2 or len(set(labels)) != len(labels):
        raise ModelError(path, "labels must be a list of at least two distinct names")
    fz = m["featurizer"]
    from router.features import FEATURIZERS

    if not isinstance(fz, dict) or fz.get("name") not in FEATURIZERS:
        raise ModelError(path, f"unknown featurizer {fz.get('name') if isinstance(fz, dict) else fz!r}")
    expected = FEATURIZERS[fz["name"]].version
    if fz.get("version") != expected:
        raise ModelError(path, f"featurizer {fz['name']} version {fz.get('version')!r}, this gateway has "
                               f"version {expected}: retrain")
    trained_np = str(m["libraries"].get("numpy", "0")).split(".")[0]
    if trained_np != np.__version__.split(".")[0]:
        raise ModelError(path, f"trained with numpy {m['libraries'].get('numpy')}, running numpy "
                               f"{np.__version__} (major versions differ): retrain")
    if _payload_sha256(arrays) != m["payload_sha256"]:
        raise ModelError(path, "checksum mismatch: the arrays were changed after the manifest was written")
    for label, value in m.get("thresholds", {}).items():
        if label not in labels or not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
            raise ModelError(path, f"bad threshold {label}={value!r}")


# -- training ------------------------------------------------------------------------------------
def fit_temperature(logits: npt.NDArray[np.floating[Any]], y: npt.NDArray[np.int64]) -> float:
    """Temperature minimising the negative log-likelihood of held-out logits (golden-section search
    on log T in [-3, 3])."""

    def nll(log_t: float) -> float:
        z = logits / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    lo, hi = -3.0, 3.0
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return math.exp((lo + hi) / 2)


def _full_logits(d: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.floating[Any]]:
    return np.column_stack([-d / 2, d / 2]) if d.ndim == 1 else d


def train(texts: Sequence[str], labels: Sequence[str], featurizer: str = "tfidf", c: float = 10.0,
          progress: Callable[[str], None] | None = None, seed: int = 0,
          sample_weight: Sequence[float] | None = None,
          temperature_data: tuple[Sequence[str], Sequence[str]] | None = None,
          featurizer_params: dict[str, Any] | None = None,
          fixed_temperature: float | None = None, background: Background | None = None) -> RouterModel:
    """Fit a router model: featurize, fit a multinomial logistic regression, fit a softmax temperature
    (at least 1), then refit on everything. Thresholds start empty (the policy's default applies until
    ``calibrate`` writes per-label ones).

    ``sample_weight`` multiplies the balanced class weights per example (for example to count
    chat-style examples more than a large public source). The temperature is fitted on
    ``temperature_data`` (held-out texts and labels, ideally in the style of real traffic) with the
    final model if given, else on a stratified 20% split of the training data. ``featurizer_params``
    go to the featurizer's constructor (for tfidf: ``min_df``, ``max_features``, ``char_min``,
    ``char_max``). ``fixed_temperature`` skips the temperature fit (as ``router.crossfit`` does, so
    thresholds calibrated on its out-of-source probabilities mean the same for the final model).
    ``background`` (tfidf only, ``router.background``) adds the shipped general background's training
    rows as ``general`` examples, over the union of its vocabulary and the training texts' n-grams."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    if len(texts) != len(labels) or not texts:
        raise ValueError("need the same non-zero number of texts and labels")
    if background is not None and featurizer != "tfidf":
        raise ValueError("the general background works with the tfidf featurizer only")
    user_texts, user_labels = texts, labels
    n_bg = 0 if background is None else int((background.part == 0).sum())
    if n_bg:
        labels = [*labels, *([GENERAL] * n_bg)]
    names = sorted(set(labels))
    if len(names) < 2:
        raise ValueError(f"need at least two labels, got {names}")
    step = progress or (lambda _msg: None)
    y = np.asarray([names.index(label) for label in labels], dtype=np.int64)
    step("featurizing")
    feat = make_featurizer(featurizer, featurizer_params)
    x = feat.fit_transform(list(texts))
    if background is not None and n_bg and isinstance(feat, TfidfFeaturizer):
        import scipy.sparse as sp

        from router.background import rows_for, union_featurizer

        step("adding the general background")
        feat = union_featurizer(background, feat)
        x = sp.vstack([feat.transform(list(texts)), rows_for(background.train_rows(), background, feat)]).tocsr()
        if sample_weight is not None:
            sample_weight = [*sample_weight, *([1.0] * n_bg)]

    if sample_weight is not None and len(sample_weight) != len(y):
        raise ValueError("sample_weight needs one weight per text")
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)

    def fit(xm: Any, ym: npt.NDArray[np.int64], wm: npt.NDArray[np.float64] | None) -> Any:
        if wm is None:
            clf = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
            return clf.fit(xm, ym)
        # balanced class weights computed on the weighted counts, times the example weights
        totals = np.bincount(ym, weights=wm, minlength=len(names))
        cw = totals.sum() / (len(names) * np.maximum(totals, 1e-12))
        clf = LogisticRegression(C=c, max_iter=2000)
        return clf.fit(xm, ym, sample_weight=wm * cw[ym])

    temperature = 1.0
    counts = np.bincount(y, minlength=len(names))
    if temperature_data is not None:
        unknown = sorted(set(temperature_data[1]) - set(names))
        if unknown:
            raise ValueError(f"temperature data has labels the training data lacks: {unknown}")
    elif fixed_temperature is not None:
        temperature = fixed_temperature
    elif counts.min() >= 5:
        step("fitting temperature on a 20% split")
        idx = np.arange(len(y))
        tr, va = train_test_split(idx, test_size=0.2, stratify=y, random_state=seed)
        clf = fit(x[tr], y[tr], None if sw is None else sw[tr])
        # Only ever soften: a split of the training sources is easier than real traffic, so a fitted
        # T < 1 (sharper probabilities) would make the model surer than it has any right to be.
        temperature = max(1.0, fit_temperature(_full_logits(clf.decision_function(x[va])), y[va]))
    step("fitting classifier")
    clf = fit(x, y, sw)
    if temperature_data is not None and len(temperature_data[0]):
        step("fitting temperature on the given held-out data")
        vx = feat.transform(list(temperature_data[0]))
        vy = np.asarray([names.index(label) for label in temperature_data[1]], dtype=np.int64)
        temperature = max(1.0, fit_temperature(_full_logits(clf.decision_function(vx)), vy))
    coef, intercept = clf.coef_, clf.intercept_
    if len(names) == 2:  # scikit-learn keeps one row for two classes; softmax([-z/2, z/2]) = sigmoid(z)
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.asarray([-intercept[0] / 2, intercept[0] / 2])
    manifest = {"training": {"examples": len(user_texts), "background_rows": n_bg,
                             "per_label": {n: int(k) for n, k in zip(names, counts, strict=True)},
                             "data_sha256": data_sha256(user_texts, user_labels), "C": c,
                             "weighted": sw is not None,
                             "temperature_from": ("held-out data" if temperature_data is not None
                                                  else "fixed" if fixed_temperature is not None
                                                  else "20% split")}}
    return RouterModel(labels=names, featurizer=feat, coef=np.asarray(coef, dtype=np.float32),
                       intercept=np.asarray(intercept, dtype=np.float32), temperature=temperature,
                       manifest=manifest)
