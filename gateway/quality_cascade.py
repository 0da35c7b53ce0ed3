"""Replay recorded SLM answers through confidence floors: cost against quality (`slmgw quality eval-cascade`).

Input JSONL, one recorded request per line: ``answer_logprob`` (the SLM answer's mean token logprob, as
the ledger's ``extra`` keeps it), ``slm_score`` and ``llm_score`` (1/0 or a number in [0, 1]: an audit
verdict or a benchmark label for each model's answer), and optionally ``slm_cost_usd`` /
``llm_cost_usd`` (else the command's defaults). In a cascade the SLM always answers first; below the
floor its answer is discarded and the LLM's served, so an escalated request pays both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Replay:
    logprob: float
    slm_score: float
    llm_score: float
    slm_cost: float
    llm_cost: float


@dataclass(frozen=True)
class Row:
    floor: float
    escalated_pct: float
    quality: float
    cost_per_request: float
    gap_recovered_pct: float


def read_replays(path: Path | str, slm_cost: float, llm_cost: float) -> list[Replay]:
    from router.difficulty_train import jsonl_objects, parse_score

    out: list[Replay] = []
    for where, obj in jsonl_objects(path):
        lp = obj.get("answer_logprob") if isinstance(obj, dict) else None
        if isinstance(lp, str):
            lp = float(lp)  # the ledger's extra keeps it as text
        if not isinstance(lp, int | float):
            raise ValueError(f"{where}: needs a number 'answer_logprob'")
        out.append(Replay(float(lp), parse_score(obj.get("slm_score"), where),
                          parse_score(obj.get("llm_score"), where),
                          float(obj.get("slm_cost_usd", slm_cost)), float(obj.get("llm_cost_usd", llm_cost))))
    return out


def sweep(replays: Sequence[Replay], floors: Iterable[float] | None = None) -> list[Row]:
    """One row per floor (default: the 0th, 10th, ..., 100th percentiles of the recorded logprobs, plus
    "never escalate"), lowest escalation first."""
    if not replays:
        raise ValueError("no recorded answers")
    lp = np.array([r.logprob for r in replays])
    slm = np.array([r.slm_score for r in replays])
    llm = np.array([r.llm_score for r in replays])
    sc = np.array([r.slm_cost for r in replays])
    lc = np.array([r.llm_cost for r in replays])
    if floors is None:
        floors = [-np.inf, *np.quantile(lp, np.linspace(0, 1, 11)).tolist(), np.inf]
    weak, strong = float(slm.mean()), float(llm.mean())
    rows = []
    for floor in sorted(set(floors)):
        esc = lp < floor
        quality = float(np.where(esc, llm, slm).mean())
        cost = float((sc + np.where(esc, lc, 0.0)).mean())
        gap = (quality - weak) / (strong - weak) * 100 if strong != weak else float("nan")
        rows.append(Row(float(floor), float(esc.mean() * 100), quality * 100, cost, gap))
    return rows
