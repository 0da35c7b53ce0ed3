"""Routing quality under style shift: thresholds cross-fitted by source, and rates per source.

Given each request's probabilities from a model that never saw its source (``router.crossfit``) or
simply calibration data from several sources, ``crossfit_routes`` sets, for every source, the
thresholds that the threshold rule picks on *all the other sources*, and routes that source with
them. No source's thresholds are chosen on that source, so its coverage and leakage estimate what a
new source (new traffic) will see. ``by_source`` gives per-source rates, ``summary`` the mean and the
worst source per label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from router.calibrate import DEFAULT_RULE, calibrate
from router.metrics import route
from router.model import GENERAL


@dataclass(frozen=True, slots=True)
class SourceRates:
    source: str
    label: str
    """The source's label (its majority label when it holds several)."""
    n: int
    recall: float
    """Argmax accuracy, before any threshold."""
    coverage: float
    """In-domain rows sent to their own SLM (nan for a general source)."""
    leakage: float
    """General rows sent to any SLM (nan for a domain source)."""
    misroute: float


def crossfit_routes(probs: npt.NDArray[np.float32], true: Sequence[str], sources: Sequence[str],
                    labels: Sequence[str], max_leakage: float = 0.02, rule: str = DEFAULT_RULE
                    ) -> tuple[npt.NDArray[np.bool_], dict[str, dict[str, float]]]:
    """Whether each row goes to an SLM under thresholds calibrated without its source, and those
    thresholds per source."""
    src = np.asarray(sources)
    slm = np.zeros(len(true), dtype=bool)
    per: dict[str, dict[str, float]] = {}
    names = list(dict.fromkeys(sources))
    if len(names) < 2:
        raise ValueError("cross-fitting by source needs at least two sources")
    true_arr = np.asarray(true)
    for name in names:
        held = src == name
        rest = ~held
        if GENERAL not in set(true_arr[rest].tolist()):
            thr = {lab: 1.0 for lab in labels if lab != GENERAL}  # nothing to measure leakage on: all off
        else:
            thr, _ = calibrate(probs[rest], true_arr[rest].tolist(), labels, max_leakage, rule)
        per[name] = thr
        slm[held] = route(probs[held], labels, thr).slm
    return slm, per


def by_source(probs: npt.NDArray[np.float32], true: Sequence[str], sources: Sequence[str], labels: Sequence[str],
              slm: npt.NDArray[np.bool_]) -> list[SourceRates]:
    """One row per (source, label) pair: a source holding several labels gives a row per label."""
    src, true_arr = np.asarray(sources), np.asarray(true)
    pred = np.asarray(labels)[probs.argmax(axis=1)]
    out = []
    for name in dict.fromkeys(sources):
        for lab in sorted(set(true_arr[src == name].tolist())):
            m = (src == name) & (true_arr == lab)
            n = int(m.sum())
            ok = slm[m] & (pred[m] == lab)
            if lab == GENERAL:
                cov, leak, mis = float("nan"), float(slm[m].mean()), float("nan")
            else:
                cov, leak, mis = float(ok.mean()), float("nan"), float((slm[m] & (pred[m] != lab)).mean())
            out.append(SourceRates(name, lab, n, float((pred[m] == lab).mean()), cov, leak, mis))
    return out


def summary(rows: Sequence[SourceRates]) -> dict[str, dict[str, Any]]:
    """Per label: sources, mean and worst (coverage for domains, leakage for general, over sources
    with equal weight), mean recall and misroute."""
    out: dict[str, dict[str, Any]] = {}
    for lab in sorted({r.label for r in rows}):
        rs = [r for r in rows if r.label == lab]
        key = "leakage" if lab == GENERAL else "coverage"
        vals = [getattr(r, key) for r in rs]
        worst = max(rs, key=lambda r: r.leakage) if lab == GENERAL else min(rs, key=lambda r: r.coverage)
        out[lab] = {"sources": len(rs), "metric": key, "mean": float(np.mean(vals)),
                    "worst": float(getattr(worst, key)), "worst_source": worst.source,
                    "recall": float(np.mean([r.recall for r in rs])),
                    "misroute": float(np.nanmean([r.misroute for r in rs])) if lab != GENERAL else float("nan")}
    return out


def expected_under_shift(rows: Sequence[SourceRates]) -> dict[str, float]:
    """Coverage (mean over domain sources), leakage (mean over general sources) and misroute."""
    dom = [r for r in rows if r.label != GENERAL]
    gen = [r for r in rows if r.label == GENERAL]
    return {"coverage": float(np.mean([r.coverage for r in dom])) if dom else float("nan"),
            "leakage": float(np.mean([r.leakage for r in gen])) if gen else float("nan"),
            "worst_leakage": float(max(r.leakage for r in gen)) if gen else float("nan"),
            "misroute": float(np.mean([r.misroute for r in dom])) if dom else float("nan")}
