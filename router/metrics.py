"""Routing quality: accuracy, coverage, leakage, threshold sweeps and per-domain calibration.

Definitions (over a labelled set, ``general`` being the out-of-scope class):

* **coverage**: share of in-domain examples sent to *their own* domain's SLM;
* **leakage**: share of ``general`` examples sent to *any* SLM;
* **misroute**: share of in-domain examples sent to *another* domain's SLM.

A request goes to an SLM when its most probable label is a domain and that probability is at least
the domain's threshold; everything else escalates to the LLM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from router.model import GENERAL

GRID = np.round(np.arange(0.20, 1.001, 0.01), 2)  # 1.00 all but switches a domain off


@dataclass
class Routed:
    pred: npt.NDArray[np.int64]
    conf: npt.NDArray[np.float32]
    slm: npt.NDArray[np.bool_]


def route(probs: npt.NDArray[np.float32], labels: Sequence[str], thresholds: Mapping[str, float],
          default: float = 0.5) -> Routed:
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(pred)), pred]
    thr = np.asarray([2.0 if lab == GENERAL else thresholds.get(lab, default) for lab in labels])
    return Routed(pred=pred, conf=conf, slm=conf >= thr[pred])


def rates(routed: Routed, y: npt.NDArray[np.int64], labels: Sequence[str]) -> dict[str, float]:
    gen = labels.index(GENERAL) if GENERAL in labels else -1
    is_gen = y == gen
    ind = ~is_gen
    cov = float((routed.slm & (routed.pred == y) & ind).sum() / max(ind.sum(), 1))
    mis = float((routed.slm & (routed.pred != y) & ind).sum() / max(ind.sum(), 1))
    leak = float((routed.slm & is_gen).sum() / max(is_gen.sum(), 1))
    return {"coverage": cov, "leakage": leak, "misroute": mis}


def evaluate(probs: npt.NDArray[np.float32], true: Sequence[str], labels: Sequence[str],
             thresholds: Mapping[str, float], default: float = 0.5) -> dict[str, Any]:
    """Everything `slmgw router eval` prints, as plain data."""
    unknown = sorted(set(true) - set(labels))
    if unknown:
        raise ValueError(f"the data has labels the model does not know: {unknown}")
    y = np.asarray([labels.index(t) for t in true], dtype=np.int64)
    routed = route(probs, labels, thresholds, default)
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, routed.pred), 1)
    per_class = {}
    for i, lab in enumerate(labels):
        tp = int(cm[i, i])
        per_class[lab] = {"precision": tp / max(int(cm[:, i].sum()), 1),
                          "recall": tp / max(int(cm[i, :].sum()), 1), "support": int(cm[i, :].sum())}
    sweep = []
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        r = rates(route(probs, labels, {}, t), y, labels)
        sweep.append({"threshold": t, **r})
    return {
        "examples": len(y),
        "accuracy": float((routed.pred == y).mean()),
        "per_class": per_class,
        "labels": list(labels),
        "confusion": cm.tolist(),
        "thresholds": {lab: (thresholds.get(lab, default) if lab != GENERAL else None) for lab in labels},
        **rates(routed, y, labels),
        "sweep": sweep,
    }


def calibrate(probs: npt.NDArray[np.float32], true: Sequence[str], labels: Sequence[str],
              max_leakage: float = 0.02) -> tuple[dict[str, float], dict[str, float]]:
    """Per-domain thresholds that maximise coverage while leakage stays within ``max_leakage``.

    Each domain's threshold only affects requests whose top label is that domain, so the problem
    separates: for a penalty ``lam`` each domain independently picks the grid threshold maximising
    ``covered - lam * (leaked + misrouted)``; the smallest penalty meeting the leakage budget wins.
    Returns the thresholds and the rates they achieve on this data.
    """
    if GENERAL not in labels:
        raise ValueError("calibration needs a 'general' label to measure leakage")
    y = np.asarray([labels.index(t) for t in true], dtype=np.int64)
    gen = labels.index(GENERAL)
    n_in = max(int((y != gen).sum()), 1)
    n_gen = max(int((y == gen).sum()), 1)
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(y)), pred]
    domains = [i for i, lab in enumerate(labels) if i != gen]
    # gain/leak/mis[d][g]: counts if domain d used GRID[g]
    table: dict[int, tuple[npt.NDArray[np.float64], ...]] = {}
    for d in domains:
        sel = pred == d
        above = conf[sel][:, None] >= GRID[None, :]
        yd = y[sel][:, None]
        gain = (above & (yd == d)).sum(axis=0) / n_in
        leak = (above & (yd == gen)).sum(axis=0) / n_gen
        mis = (above & (yd != d) & (yd != gen)).sum(axis=0) / n_in
        table[d] = (gain.astype(float), leak.astype(float), mis.astype(float))
    best: tuple[float, dict[str, float]] | None = None
    for lam in np.concatenate([[0.0], np.geomspace(0.01, 1000, 300)]):
        choice = {}
        total_leak = 0.0
        total_gain = 0.0
        for d in domains:
            gain, leak, mis = table[d]
            # ties go to the higher threshold: a margin for traffic unlike the validation set
            score = gain - lam * (leak + mis)
            g = int(np.flatnonzero(score >= score.max() - 1e-12)[-1])
            choice[labels[d]] = float(GRID[g])
            total_leak += leak[g]
            total_gain += gain[g]
        if total_leak <= max_leakage + 1e-12 and (best is None or total_gain > best[0] + 1e-12):
            best = (total_gain, choice)
    thresholds = best[1] if best is not None else {labels[d]: 1.0 for d in domains}
    r = rates(route(probs, labels, thresholds), y, labels)
    return thresholds, r
