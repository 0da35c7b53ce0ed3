"""APGR and CPT exactly as RouteLLM's evaluation code computes them.

Followed: lm-sys/RouteLLM ``routellm/evals/benchmarks.py`` (``MMLU.evaluate``) and
``routellm/evals/evaluate.py`` (``generate_results``: ``pct_call_metric``, ``auc_metric``,
``apgr_metric``):

1. thresholds are the bin edges of ``pd.qcut(scores, num_results=10)``: the 0, 10, ..., 100th
   percentiles with linear interpolation (duplicates kept);
2. for each edge i, requests with ``score >= edge`` (for the last edge ``score > edge``) go to the strong
   model; quality is the mean score of the chosen answers x 100, and ``strong_percentage`` the share
   of strong calls x 100;
3. points sorted by ``strong_percentage``; AUC = ``trapz(quality, strong_percentage / 100)``;
   APGR = (AUC - weak AUC) / (strong AUC - weak AUC), where the weak/strong AUCs integrate a constant
   (the model's own quality) over the same x points;
4. CPT(p) = ``np.interp(p * (strong - weak) + weak, quality, strong_percentage)`` on the sorted points
   (in percent of calls to the strong model).

Here the weak model is the SLM and the strong model the LLM; a higher score means "send to the LLM".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Point:
    threshold: float
    strong_pct: float
    quality: float


@dataclass(frozen=True)
class Summary:
    apgr: float
    cpt50: float
    cpt80: float
    weak_quality: float
    strong_quality: float
    points: tuple[Point, ...]

    def as_dict(self) -> dict[str, object]:
        return {"apgr": self.apgr, "cpt50_pct": self.cpt50, "cpt80_pct": self.cpt80,
                "slm_quality": self.weak_quality, "llm_quality": self.strong_quality,
                "points": [{"threshold": p.threshold, "llm_pct": p.strong_pct, "quality": p.quality}
                           for p in self.points]}


def curve(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float],
          num_results: int = 10) -> list[Point]:
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weak, dtype=np.float64)
    g = np.asarray(strong, dtype=np.float64)
    if not (len(s) == len(w) == len(g)) or len(s) == 0:
        raise ValueError("scores, weak and strong must be non-empty and of the same length")
    edges = np.quantile(s, np.linspace(0, 1, num_results + 1))
    points = []
    for i, edge in enumerate(edges):
        pick = s >= edge if i != len(edges) - 1 else s > edge
        chosen = np.where(pick, g, w)
        points.append(Point(float(edge), float(pick.mean() * 100), float(chosen.mean() * 100)))
    return points


def summarize(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float],
              num_results: int = 10) -> Summary:
    pts = sorted(curve(scores, weak, strong, num_results), key=lambda p: p.strong_pct)
    x = np.array([p.strong_pct for p in pts]) / 100
    q = np.array([p.quality for p in pts])
    weak_q = float(np.mean(np.asarray(weak, dtype=np.float64)) * 100)
    strong_q = float(np.mean(np.asarray(strong, dtype=np.float64)) * 100)
    auc = float(np.trapezoid(q, x))
    weak_auc = float(np.trapezoid(np.full(len(x), weak_q), x))
    strong_auc = float(np.trapezoid(np.full(len(x), strong_q), x))
    apgr = (auc - weak_auc) / (strong_auc - weak_auc) if strong_auc != weak_auc else float("nan")
    sp = np.array([p.strong_pct for p in pts])

    def cpt(pct: float) -> float:
        return float(np.interp(pct * (strong_q - weak_q) + weak_q, q, sp))

    return Summary(apgr, cpt(0.5), cpt(0.8), weak_q, strong_q, tuple(pts))


def random_scores(n: int, seed: int) -> list[float]:
    """RouteLLM's random router: an independent uniform score per request."""
    return np.random.default_rng(seed).uniform(0, 1, n).tolist()
