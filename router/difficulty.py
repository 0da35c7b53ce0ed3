"""The difficulty model: P(the SLM's answer will be worse than the LLM's) for one request.

A linear model over word 1-2-gram TF-IDF features of the request text plus a few shape features
(length, digits, symbols). Training is in ``router.difficulty_train`` (scikit-learn); inference here is
plain Python and NumPy (no scikit-learn), a few tens of microseconds per request.

Artifact: one ``.npz`` loaded with ``allow_pickle=False`` (opening it cannot run code): ``manifest``
(JSON bytes: format, version, params, training summary, ``payload_sha256`` over the other arrays),
``vocab`` (terms), ``idf``, ``coef`` (vocabulary then shape features), ``intercept``, ``shape_mean``
and ``shape_scale`` (standardisation of the shape features). ``DifficultyError`` names the file and the
problem when an artifact cannot be used.

``HardGate`` applies the model to a routing decision: a request the router sends to a domain's SLM
goes to the LLM instead when p reaches that domain's threshold, with the reason
``hard sql p=0.81>=0.70``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from gateway.config import Policy
    from router.base import Decision

FORMAT = "slmgw-difficulty"
FORMAT_VERSION = 1
MAX_CHARS = 600
"""Only the first characters of a request are read, so a huge prompt costs what a long one does."""

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_SYMBOLS = "=+-*/^<>()[]{}|\\_$%"
SHAPE_CLIP = 3.0
"""Standardised shape features are clipped to +-3, so an odd request (100k characters) cannot push p
far beyond what training saw."""
SHAPE_FEATURES = ("log_chars", "log_words", "digit_share", "symbol_share", "questions", "lines")

FloatArray = npt.NDArray[np.float64]


class DifficultyError(ValueError):
    """A difficulty artifact that cannot be used (missing, corrupt or incompatible)."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"difficulty model {path}: {problem}")


def analyze(text: str) -> list[str]:
    """Lower-cased word unigrams and bigrams of the first ``MAX_CHARS`` characters (punctuation and
    symbols are tokens of their own: ``=``, ``^`` and ``?`` say something about difficulty)."""
    words = _WORD.findall(text[:MAX_CHARS].lower())
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


def shape(text: str) -> list[float]:
    """The shape features, in ``SHAPE_FEATURES`` order (all on the whole text, cheap to count)."""
    n = len(text)
    head = text[:MAX_CHARS]
    m = max(len(head), 1)
    digits = sum(map(head.count, "0123456789"))
    symbols = sum(map(head.count, _SYMBOLS))
    return [math.log1p(n), math.log1p(len(head.split())), digits / m, symbols / m, float(head.count("?")),
            float(head.count("\n"))]


def request_text(request: Mapping[str, Any]) -> str:
    """The latest user turn of a chat request (text parts only), or a completion's prompt."""
    messages = request.get("messages")
    if isinstance(messages, list):
        for msg in reversed(messages):
            if isinstance(msg, Mapping) and msg.get("role") == "user":
                content = msg.get("content")
                if isinstance(content, str):
                    return content
                if isinstance(content, list):
                    return "\n".join(p["text"] for p in content if isinstance(p, Mapping)
                                     and p.get("type") == "text" and isinstance(p.get("text"), str))
                return ""
        return ""
    prompt = request.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    return ""


def payload_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        if name == "manifest":
            continue
        arr = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + b"\0" + str(arr.dtype).encode() + b"\0" + str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class DifficultyModel:
    vocab: dict[str, int]
    idf: FloatArray
    coef: FloatArray
    intercept: float
    shape_mean: FloatArray
    shape_scale: FloatArray
    manifest: dict[str, Any]

    def __post_init__(self) -> None:
        n = len(self.idf)
        object.__setattr__(self, "_shape", [(float(c), float(m), float(sc)) for c, m, sc in
                                            zip(self.coef[n:], self.shape_mean, self.shape_scale, strict=True)])

    def score(self, text: str) -> float:
        """P(SLM answer worse than the LLM's) for one text."""
        counts = Counter(analyze(text))  # counting and lookups in C: ~3x faster than a Python loop
        ids = np.fromiter(map(self.vocab.get, counts, itertools.repeat(-1)), dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        known = ids >= 0
        num = den = 0.0
        if known.any():
            ids, tf = ids[known], tf[known]
            w = (1.0 + np.log(tf)) * self.idf[ids]
            num, den = float(w @ self.coef[ids]), float(w @ w)
        z = self.intercept + (num / math.sqrt(den) if den > 0.0 else 0.0)
        for f, (c, m, sc) in zip(shape(text), self._shape, strict=True):  # type: ignore[attr-defined]
            z += c * min(max((f - m) / sc, -SHAPE_CLIP), SHAPE_CLIP)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def score_request(self, request: Mapping[str, Any]) -> float:
        return self.score(request_text(request))

    def arrays(self) -> dict[str, np.ndarray]:
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        return {"vocab": np.array(terms, dtype=np.str_), "idf": self.idf, "coef": self.coef,
                "intercept": np.array([self.intercept]), "shape_mean": self.shape_mean,
                "shape_scale": self.shape_scale}

    def save(self, path: Path | str) -> Path:
        out = Path(path)
        arrays = self.arrays()
        manifest = {**self.manifest, "format": FORMAT, "format_version": FORMAT_VERSION,
                    "shape_features": list(SHAPE_FEATURES), "max_chars": MAX_CHARS,
                    "payload_sha256": payload_sha256(arrays)}
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as fh:
            arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        return out

    @classmethod
    def load(cls, path: Path | str) -> DifficultyModel:
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except FileNotFoundError:
            raise DifficultyError(p, "no such file") from None
        except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, CRC errors
            raise DifficultyError(p, f"not a readable .npz ({type(exc).__name__}: {exc})") from None
        missing = {"manifest", "vocab", "idf", "coef", "intercept", "shape_mean", "shape_scale"} - set(arrays)
        if missing:
            raise DifficultyError(p, f"missing arrays {sorted(missing)}")
        try:
            manifest = json.loads(arrays["manifest"].tobytes().decode())
        except ValueError:
            raise DifficultyError(p, "unreadable manifest") from None
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise DifficultyError(p, f"not a {FORMAT} v{FORMAT_VERSION} artifact "
                                     f"({manifest.get('format')} v{manifest.get('format_version')})")
        if manifest.get("max_chars") != MAX_CHARS or manifest.get("shape_features") != list(SHAPE_FEATURES):
            raise DifficultyError(p, f"built for another featurizer (max_chars {manifest.get('max_chars')}, this "
                                     f"version reads {MAX_CHARS}): retrain it")
        if manifest.get("payload_sha256") != payload_sha256(arrays):
            raise DifficultyError(p, "checksum mismatch: arrays changed after the manifest was written")
        n = len(arrays["vocab"])
        if arrays["idf"].shape != (n,) or arrays["coef"].shape != (n + len(SHAPE_FEATURES),) \
                or arrays["shape_mean"].shape != (len(SHAPE_FEATURES),) \
                or arrays["shape_scale"].shape != (len(SHAPE_FEATURES),):
            raise DifficultyError(p, "array shapes disagree")
        vocab = {str(t): i for i, t in enumerate(arrays["vocab"].tolist())}
        return cls(vocab, arrays["idf"].astype(np.float64), arrays["coef"].astype(np.float64),
                   float(arrays["intercept"][0]), arrays["shape_mean"].astype(np.float64),
                   arrays["shape_scale"].astype(np.float64), manifest)


class HardGate:
    """Escalate requests the difficulty model finds too hard for their domain's SLM.

    ``thresholds`` maps a domain to its ``hard_threshold``; a domain without one is never gated.
    ``apply`` never raises: a scoring failure keeps the router's decision (and says so in the reason).
    """

    def __init__(self, model: DifficultyModel, thresholds: Mapping[str, float]) -> None:
        self.model = model
        self.thresholds = dict(thresholds)

    def apply(self, decision: Decision, request: Mapping[str, Any]) -> Decision:
        if decision.target != "slm" or decision.domain is None:
            return decision
        limit = self.thresholds.get(decision.domain)
        if limit is None:
            return decision
        try:
            p = self.model.score_request(request)
        except Exception as exc:  # never fail a request over the optional gate
            return replace(decision, reason=f"{decision.reason}; difficulty_error {type(exc).__name__}")
        if p >= limit:
            return replace(decision, target="llm", reason=f"hard {decision.domain} p={p:.2f}>={limit:.2f}; "
                                                          f"{decision.reason}")
        return decision


def hard_gate(policy: Policy) -> HardGate | None:
    """The gate a policy asks for: None unless some domain sets ``hard_threshold``. A model that cannot
    be loaded raises ``DifficultyError`` (at start-up, naming the file)."""
    thresholds = {d.name: d.hard_threshold for d in policy.domains if d.hard_threshold is not None}
    path = policy.router.difficulty_model_path
    if not thresholds or not path:
        return None
    return HardGate(DifficultyModel.load(policy.resolve_path(path)), thresholds)
