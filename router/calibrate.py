"""Threshold rules: per-domain thresholds from labelled calibration data and a leakage budget.

Every rule reads the same thing: for each request of the calibration set, its top label and that
label's probability. A domain's threshold only affects requests whose top label is that domain. The
budget ``max_leakage`` is always **total**: the share of *all* ``general`` requests of the calibration
set that go to *any* SLM (what the target measures), not a budget per domain.

* ``lagrange``: per-domain thresholds from a Lagrangian search that penalises leaked *and* misrouted
  requests (``router.metrics.calibrate``; the rule of every artifact calibrated before this module,
  which recorded no ``rule`` in its calibration note);
* ``shared``: one threshold for all domains, the lowest grid value whose total leakage is within
  budget (fewest free parameters, so the least sensitive to single calibration prompts);
* ``total``: per-domain thresholds that maximise total coverage subject to total leakage within
  budget, found exactly by dynamic programming over leaked-prompt counts (ties: fewer misroutes,
  then higher thresholds);
* ``band:D``: ``total`` with every threshold kept within ``D`` of the ``shared`` threshold (a cap on
  how far one domain can move on a few calibration prompts); the shared thresholds are inside the
  band, so its coverage on the calibration data is never below ``shared``'s;
* ``split``: the budget split equally between the domains, each domain's threshold the lowest whose
  own leakage is within its share (a domain's threshold then depends only on the general prompts
  that domain scores highest, not on how the others spend the budget);
* ``bag:R``: rule ``R``'s thresholds averaged over 30 bootstrap resamples of the calibration data
  (seeded), then raised one grid step at a time, all domains together, until the total leakage on the
  full calibration data is within budget again. **The default** (``slmgw router calibrate``, the
  benchmark, the demo build): on the validation folds it reached ``lagrange``'s coverage with about
  half its fold-to-fold threshold movement.

Thresholds are stored the same way whatever the rule (the manifest's calibration note names it), so
artifacts calibrated by any rule load with the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from router.metrics import GRID, rates, route
from router.metrics import calibrate as lagrange
from router.model import GENERAL

RULES = ("lagrange", "shared", "total", "band:0.05", "band:0.1", "band:0.2", "split", "bag:lagrange", "bag:total")
BOOTSTRAPS = 30
DEFAULT_RULE = "bag:total"  # picked on cross-fitted validation (docs/router.md, "Threshold rules")


def _counts(probs: npt.NDArray[np.float32], y: npt.NDArray[np.int64], labels: Sequence[str]
            ) -> tuple[list[int], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per domain (rows, in ``labels`` order without general) and grid threshold (columns): how many
    requests of its own label, general ones and other domains' ones it would send to its SLM."""
    gen = labels.index(GENERAL)
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(y)), pred]
    domains = [i for i in range(len(labels)) if i != gen]
    cov = np.zeros((len(domains), len(GRID)), dtype=np.int64)
    leak, mis = cov.copy(), cov.copy()
    for r, d in enumerate(domains):
        sel = pred == d
        above = conf[sel][:, None] >= GRID[None, :]
        yd = y[sel][:, None]
        cov[r] = (above & (yd == d)).sum(axis=0)
        leak[r] = (above & (yd == gen)).sum(axis=0)
        mis[r] = (above & (yd != d) & (yd != gen)).sum(axis=0)
    return domains, cov, leak, mis


def _shared_index(leak: npt.NDArray[np.int64], budget: int) -> int:
    ok = np.flatnonzero(leak.sum(axis=0) <= budget)
    return int(ok[0]) if len(ok) else len(GRID) - 1


def _best_within(cov: npt.NDArray[np.int64], leak: npt.NDArray[np.int64], mis: npt.NDArray[np.int64],
                 budget: int, lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]) -> list[int] | None:
    """Grid index per domain (within [lo, hi]) maximising coverage, then minimising misroutes, then
    maximising the thresholds, with total leaked count <= budget. Exact: a knapsack over domains whose
    state is the number of leaked prompts used so far."""
    # state[b] = (score tuple, chosen indices) with b leaked prompts used so far
    state: dict[int, tuple[tuple[int, int, int], list[int]]] = {0: ((0, 0, 0), [])}
    for r in range(cov.shape[0]):
        nxt: dict[int, tuple[tuple[int, int, int], list[int]]] = {}
        for used, (score, picks) in state.items():
            for g in range(int(lo[r]), int(hi[r]) + 1):
                b = used + int(leak[r, g])
                if b > budget:
                    continue
                s = (score[0] + int(cov[r, g]), score[1] - int(mis[r, g]), score[2] + g)
                if b not in nxt or s > nxt[b][0]:
                    nxt[b] = (s, [*picks, g])
        state = nxt
    if not state:
        return None
    return max(state.values(), key=lambda v: v[0])[1]


def calibrate(probs: npt.NDArray[np.float32], true: Sequence[str], labels: Sequence[str],
              max_leakage: float = 0.02, rule: str = DEFAULT_RULE) -> tuple[dict[str, float], dict[str, float]]:
    """Thresholds for every non-general label by ``rule`` (see the module docstring) with total leakage
    at most ``max_leakage`` on this data, and the rates they achieve on it. If no thresholds meet the
    budget, every domain gets 1.0 (all but switched off)."""
    if GENERAL not in labels:
        raise ValueError("calibration needs a 'general' label to measure leakage")
    unknown = sorted(set(true) - set(labels))
    if unknown:
        raise ValueError(f"the data has labels the model does not know: {unknown}")
    if rule == "lagrange":
        return lagrange(probs, true, labels, max_leakage)
    y = np.asarray([labels.index(t) for t in true], dtype=np.int64)
    if rule.startswith("bag:"):
        return _bagged(probs, y, labels, max_leakage, rule[4:])
    n_gen = int((y == labels.index(GENERAL)).sum())
    budget = int(np.floor(max_leakage * n_gen + 1e-9))
    domains, cov, leak, mis = _counts(probs, y, labels)
    k = len(GRID) - 1
    shared = _shared_index(leak, budget)
    if rule == "shared":
        picks: list[int] | None = [shared] * len(domains)
    elif rule == "total":
        picks = _best_within(cov, leak, mis, budget, np.zeros(len(domains), np.int64),
                             np.full(len(domains), k, np.int64))
    elif rule == "split":
        share = budget / len(domains)  # fractional shares: the summed leaked counts stay <= budget
        picks = [int(np.flatnonzero(leak[r] <= share + 1e-9)[0]) if (leak[r] <= share + 1e-9).any() else k
                 for r in range(len(domains))]
    elif rule.startswith("band:"):
        width = round(float(rule[5:]) / 0.01)
        lo = np.full(len(domains), max(shared - width, 0), np.int64)
        hi = np.full(len(domains), min(shared + width, k), np.int64)
        picks = _best_within(cov, leak, mis, budget, lo, hi)
    else:
        raise ValueError(f"unknown threshold rule {rule!r} (known: {', '.join(RULES)}, band:D)")
    if picks is None:
        picks = [k] * len(domains)
    thresholds = {labels[d]: float(GRID[g]) for d, g in zip(domains, picks, strict=True)}
    return thresholds, rates(route(probs, labels, thresholds), y, labels)


def _bagged(probs: npt.NDArray[np.float32], y: npt.NDArray[np.int64], labels: Sequence[str], max_leakage: float,
            inner: str) -> tuple[dict[str, float], dict[str, float]]:
    if inner.startswith("bag:"):
        raise ValueError("bag:R needs a rule R that is not itself bagged")
    rng = np.random.default_rng(0)
    names = [labels[i] for i in y]
    runs = []
    for _ in range(BOOTSTRAPS):
        idx = rng.integers(0, len(y), size=len(y))
        runs.append(calibrate(probs[idx], [names[i] for i in idx], labels, max_leakage, inner)[0])
    thr = {d: round(float(np.mean([t[d] for t in runs])), 2) for d in runs[0]}
    gen = labels.index(GENERAL)
    budget = np.floor(max_leakage * int((y == gen).sum()) + 1e-9)
    while True:
        r = rates(route(probs, labels, thr), y, labels)
        if r["leakage"] * int((y == gen).sum()) <= budget + 1e-9 or min(thr.values()) >= 1.0:
            return thr, r
        thr = {d: min(round(v + 0.01, 2), 1.0) for d, v in thr.items()}
