"""Difficulty-model benchmark: APGR / CPT on MMLU cross-fitted by subject group, and its latency.

    .venv/bin/python -m benchmarks.quality [--c 1.0] [--json OUT]

Data: RouteLLM's ``mmlu_responses`` (Mixtral-8x7B = SLM, GPT-4 = LLM) under ``$SLMGW_DATA_DIR`` or
``../shared/data``, minus RouteLLM's own ``contaminated_prompts`` (as its evaluation does), answer
options stripped. Each of MMLU's four subject groups is scored by a model trained on the other three;
the pooled out-of-group scores give the headline. Metrics: ``router.difficulty_metrics`` (RouteLLM's
evaluation code). Latency: ``HardGate.apply`` on chat requests built from held-out questions (what
the gate adds to a routing decision), plus one 100,000-character prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from router.base import Decision  # noqa: E402
from router.difficulty import DifficultyModel, HardGate  # noqa: E402
from router.difficulty_metrics import Summary, random_scores, summarize  # noqa: E402
from router.difficulty_train import Record, contaminated_prompts, mmlu_records, train  # noqa: E402

console = Console(width=140)


def data_dir() -> Path:
    env = os.environ.get("SLMGW_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def load() -> list[Record]:
    base = data_dir() / "routellm"
    return mmlu_records(base / "mmlu_responses", contaminated_prompts(base / "mmlu__contaminated_prompts.jsonl"))


def crossfit(records: list[Record], c: float) -> tuple[list[float], dict[str, DifficultyModel], float]:
    scores = [0.0] * len(records)
    models: dict[str, DifficultyModel] = {}
    t0 = time.perf_counter()
    for group in sorted({r.extra["group"] for r in records}):
        model = train([r for r in records if r.extra["group"] != group], c=c)
        models[group] = model
        for i, r in enumerate(records):
            if r.extra["group"] == group:
                scores[i] = model.score(r.text)
    return scores, models, time.perf_counter() - t0


def _timed(gate: HardGate, decision: Decision, body: dict[str, Any]) -> tuple[float, float]:
    w, c = time.perf_counter_ns(), time.thread_time_ns()
    gate.apply(decision, body)
    return (time.perf_counter_ns() - w) / 1e6, (time.thread_time_ns() - c) / 1e6


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * q))]


def latency(records: list[Record], models: dict[str, DifficultyModel]) -> dict[str, float]:
    """Per-call time of ``HardGate.apply`` on an SLM decision, each request scored by the model that
    did not see its group; 3 passes, the first discarded as warm-up. Wall-clock time includes whatever
    else the machine runs (other processes preempting this one); thread CPU time does not."""
    gates = {g: HardGate(m, {"general": 2.0}) for g, m in models.items()}  # 2.0: never escalates
    decision = Decision("slm", "general", 0.9, "classified general=0.90>=0.70")
    sample = records[:: max(1, len(records) // 3000)]
    reqs = [(gates[r.extra["group"]], {"model": "auto", "messages": [{"role": "user", "content": r.text}]})
            for r in sample]
    wall: list[float] = []
    cpu: list[float] = []
    for rnd in range(3):
        for gate, body in reqs:
            w, c = _timed(gate, decision, body)
            if rnd:
                wall.append(w)
                cpu.append(c)
    big = {"model": "auto", "messages": [{"role": "user", "content": "why is this integral divergent? " * 3125}]}
    gate = next(iter(gates.values()))
    long_cpu = [_timed(gate, decision, big)[1] for _ in range(200)]
    return {"calls": len(wall), "p50_ms": _pct(wall, 0.5), "p99_ms": _pct(wall, 0.99), "max_ms": max(wall),
            "cpu_p50_ms": _pct(cpu, 0.5), "cpu_p99_ms": _pct(cpu, 0.99),
            "cpu_p99_ms_100k_chars": _pct(long_cpu, 0.99), "load_avg_1m": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--c", type=float, default=1.0, help="inverse regularisation (fixed, not tuned here)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)
    try:
        records = load()
    except FileNotFoundError as exc:
        console.print(f"[red]data not found[/red]: {exc} (set SLMGW_DATA_DIR)")
        return 2
    weak = [r.slm_score for r in records]
    strong = [r.llm_score for r in records]
    scores, models, train_s = crossfit(records, args.c)
    rows: list[tuple[str, Summary]] = [("difficulty (cross-fit by group)", summarize(scores, weak, strong))]
    rand = [summarize(random_scores(len(records), seed), weak, strong) for seed in range(10)]
    oracle = summarize([float(r.worse) + 1e-9 * i for i, r in enumerate(records)], weak, strong)
    out: dict[str, Any] = {"records": len(records), "train_seconds": train_s, "c": args.c}

    table = Table(title=f"MMLU, {len(records)} questions (RouteLLM decontaminated), SLM = Mixtral-8x7B, "
                        f"LLM = GPT-4; cross-fitted by subject group")
    for col in ("router", "APGR", "CPT(50%)", "CPT(80%)", "note"):
        table.add_column(col)
    for name, s in rows:
        table.add_row(name, f"{s.apgr:.3f}", f"{s.cpt50:.1f}%", f"{s.cpt80:.1f}%", "")
        out["difficulty"] = s.as_dict()
    ra, rc5, rc8 = (np.array([getattr(r, k) for r in rand]) for k in ("apgr", "cpt50", "cpt80"))
    table.add_row("random (10 seeds)", f"{ra.mean():.3f} ± {ra.std():.3f}", f"{rc5.mean():.1f}%",
                  f"{rc8.mean():.1f}%", "RouteLLM's random router")
    out["random"] = {"apgr_mean": float(ra.mean()), "apgr_sd": float(ra.std()), "cpt50_pct": float(rc5.mean()),
                     "cpt80_pct": float(rc8.mean())}
    table.add_row("oracle (knows the labels)", f"{oracle.apgr:.3f}", f"{oracle.cpt50:.1f}%", f"{oracle.cpt80:.1f}%",
                  "upper bound")
    out["oracle"] = {"apgr": oracle.apgr, "cpt50_pct": oracle.cpt50}
    s0 = rows[0][1]
    table.add_row("always SLM", "-", "-", "-", f"0% LLM calls, quality {s0.weak_quality:.1f}")
    table.add_row("always LLM", "-", "-", "-", f"100% LLM calls, quality {s0.strong_quality:.1f}")
    console.print(table)

    per = Table(title="per held-out group (model trained on the other three)")
    for col in ("group", "questions", "APGR", "random APGR (10 seeds)", "CPT(50%)"):
        per.add_column(col)
    out["groups"] = {}
    for group in sorted(models):
        idx = [i for i, r in enumerate(records) if r.extra["group"] == group]
        w, g = [weak[i] for i in idx], [strong[i] for i in idx]
        s = summarize([scores[i] for i in idx], w, g)
        rg = float(np.mean([summarize(random_scores(len(idx), k), w, g).apgr for k in range(10)]))
        per.add_row(group, str(len(idx)), f"{s.apgr:.3f}", f"{rg:.3f}", f"{s.cpt50:.1f}%")
        out["groups"][group] = {"n": len(idx), "apgr": s.apgr, "random_apgr": rg, "cpt50_pct": s.cpt50}
    console.print(per)

    lat = latency(records, models)
    out["latency"] = lat
    console.print(f"HardGate.apply (what the difficulty model adds to a decision), {lat['calls']} calls: "
                  f"wall p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms, max {lat['max_ms']:.3f} ms; "
                  f"thread CPU p50 {lat['cpu_p50_ms']:.3f} ms, p99 {lat['cpu_p99_ms']:.3f} ms; 100,000-character "
                  f"prompt CPU p99 {lat['cpu_p99_ms_100k_chars']:.3f} ms. Load average (1 min) "
                  f"{lat['load_avg_1m']:.2f} on {os.cpu_count()} CPUs. Training 4 folds: {train_s:.0f} s.")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0
