"""Training data and training for the difficulty model (scikit-learn; imported only to train).

Records are JSONL lines ``{"text", "slm_score", "llm_score"}``; a score is 1/0 correctness or a number
in [0, 1]. The label is ``slm_score < llm_score`` (the SLM's answer is worse than the LLM's): ties,
both right or both wrong, are 0, since escalating them buys nothing.

``mmlu_records`` converts RouteLLM's ``mmlu_responses`` CSVs (Mixtral-8x7B as the SLM, GPT-4 as the
LLM) and strips the answer-option layout (``\\nA. ...\\nB. ...\\nAnswer:``), which real traffic lacks.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router.difficulty import SHAPE_CLIP, SHAPE_FEATURES, DifficultyModel, analyze, shape

SLM_COLUMN = "mistralai/Mixtral-8x7B-Instruct-v0.1"
LLM_COLUMN = "gpt-4-1106-preview"
_OPTIONS = re.compile(r"\n[A-D]\. .*?(?=\n[A-D]\. |\nAnswer:\s*$|\Z)", re.S)
_ANSWER = re.compile(r"\nAnswer:\s*$")

# MMLU's four top-level categories (Hendrycks et al., 2021), used to cross-fit by subject group.
_STEM = ("abstract_algebra astronomy college_biology college_chemistry college_computer_science "
         "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
         "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
         "high_school_mathematics high_school_physics high_school_statistics machine_learning")
_HUMANITIES = ("formal_logic high_school_european_history high_school_us_history high_school_world_history "
               "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy "
               "prehistory professional_law world_religions")
_SOCIAL = ("econometrics high_school_geography high_school_government_and_politics "
           "high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality "
           "professional_psychology public_relations security_studies sociology us_foreign_policy")
MMLU_GROUPS: dict[str, str] = {
    **{s: "stem" for s in _STEM.split()}, **{s: "humanities" for s in _HUMANITIES.split()},
    **{s: "social_sciences" for s in _SOCIAL.split()},
}
"""Subject -> group; subjects not listed (business_ethics, clinical_knowledge, ...) are ``other``."""


@dataclass
class Record:
    text: str
    slm_score: float
    llm_score: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def worse(self) -> bool:
        return self.slm_score < self.llm_score


def strip_options(prompt: str) -> str:
    """The question without MMLU's ``A. ... D. ... Answer:`` layout."""
    text = _ANSWER.sub("", prompt)
    return _OPTIONS.sub("", text).strip()


def parse_score(value: Any, where: str) -> float:
    """A correctness score: true/false (or their strings) or a number in [0, 1]; ``where`` names the line."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return float(value.strip().lower() == "true")
    if isinstance(value, int | float) and 0.0 <= float(value) <= 1.0:
        return float(value)
    raise ValueError(f"{where}: score must be true/false or a number in [0, 1], got {value!r}")


def jsonl_objects(path: Path | str) -> Iterator[tuple[str, Any]]:
    """``(where, object)`` for each non-blank line of a JSONL file; a line that is not JSON raises
    ``ValueError`` naming file and line (``where`` is ``path:line``)."""
    with Path(path).open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{i}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg})") from None


def read_records(paths: Iterable[Path | str]) -> list[Record]:
    """JSONL records from each file, in order; a bad line raises ``ValueError`` naming file and line."""
    out: list[Record] = []
    for path in paths:
        for where, obj in jsonl_objects(path):
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ValueError(f"{where}: needs a string field 'text'")
            extra = {k: v for k, v in obj.items() if k not in ("text", "slm_score", "llm_score")}
            out.append(Record(obj["text"], parse_score(obj.get("slm_score"), where),
                              parse_score(obj.get("llm_score"), where), extra))
    return out


def mmlu_records(folder: Path | str, exclude: Iterable[str] = ()) -> list[Record]:
    """RouteLLM's MMLU responses (one CSV per subject, sorted by name) as records, options stripped.

    ``exclude``: original prompts to leave out (RouteLLM drops its ``contaminated_prompts`` from its
    MMLU evaluation)."""
    skip = set(exclude)
    out: list[Record] = []
    for path in sorted(Path(folder).glob("mmlu_*.csv")):
        subject = path.stem.removeprefix("mmlu_")
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                if row["prompt"] in skip:
                    continue
                out.append(Record(strip_options(row["prompt"]), parse_score(row[SLM_COLUMN], str(path)),
                                  parse_score(row[LLM_COLUMN], str(path)),
                                  {"subject": subject, "group": MMLU_GROUPS.get(subject, "other")}))
    return out


def contaminated_prompts(path: Path | str) -> list[str]:
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line)["eval_prompt"] for line in fh if line.strip()]


def write_records(records: Sequence[Record], path: Path | str) -> None:
    with Path(path).open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({"text": r.text, "slm_score": r.slm_score, "llm_score": r.llm_score,
                                 **r.extra}, ensure_ascii=False) + "\n")


def fit(records: Sequence[Record], c: float = 1.0, min_df: int = 2, max_features: int = 50_000
        ) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The scikit-learn objects: (TfidfVectorizer, LogisticRegression, shape mean, shape scale)."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if not records:
        raise ValueError("no training records")
    texts = [r.text for r in records]
    y = np.array([r.worse for r in records], dtype=np.int64)
    if y.min() == y.max():
        raise ValueError("training needs records where the SLM is worse and records where it is not")
    vec = TfidfVectorizer(analyzer=analyze, sublinear_tf=True, min_df=min_df, max_features=max_features)
    x_words = vec.fit_transform(texts)
    sh = np.array([shape(t) for t in texts], dtype=np.float64)
    mean, scale = sh.mean(axis=0), sh.std(axis=0)
    scale[scale == 0] = 1.0
    x = sparse.hstack([x_words, sparse.csr_matrix(np.clip((sh - mean) / scale, -SHAPE_CLIP, SHAPE_CLIP))]).tocsr()
    clf = LogisticRegression(C=c, max_iter=2000)
    clf.fit(x, y)
    return vec, clf, mean, scale


def sklearn_proba(vec: Any, clf: Any, mean: np.ndarray, scale: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """P(worse) through scikit-learn (the reference the fast path must match)."""
    from scipy import sparse

    sh = np.array([shape(t) for t in texts], dtype=np.float64)
    dense = np.clip((sh - mean) / scale, -SHAPE_CLIP, SHAPE_CLIP)
    x = sparse.hstack([vec.transform(texts), sparse.csr_matrix(dense)]).tocsr()
    return np.asarray(clf.predict_proba(x)[:, 1])


def train(records: Sequence[Record], c: float = 1.0, min_df: int = 2,
          max_features: int = 50_000) -> DifficultyModel:
    """Fit TF-IDF (word 1-2-grams, sublinear tf, l2) + shape features -> logistic regression.

    ``c`` (inverse regularisation) is fixed a priori, not tuned on evaluation data."""
    vec, clf, mean, scale = fit(records, c, min_df, max_features)
    worse = sum(r.worse for r in records)
    vocab = {str(t): int(i) for t, i in vec.vocabulary_.items()}
    digest = hashlib.sha256("\n".join(f"{r.slm_score}\t{r.llm_score}\t{r.text}" for r in records)
                            .encode("utf-8", "surrogatepass")).hexdigest()
    manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "params": {"c": c, "min_df": min_df, "max_features": max_features},
                "training": {"records": len(records), "worse": worse, "sha256": digest},
                "shape_features": list(SHAPE_FEATURES)}
    return DifficultyModel(vocab, vec.idf_.astype(np.float64), clf.coef_[0].astype(np.float64),
                           float(clf.intercept_[0]), mean, scale, manifest)
