"""Leave-one-source-out routing quality: the headline of the router benchmark.

    .venv/bin/python -m benchmarks.router.loso [--json OUT] [--no-cache]

Every source of the starter recipe's pool (``router.starter``: public corpora without the
non-commercial ones, plus the project's prompt files, each file one source) is held out in turn: a
model trained on all the other sources scores it (``router.crossfit``). Thresholds are cross-fitted
the same way (``router.shift``): the rows of source S are routed with the thresholds the threshold
rule picks on the out-of-source probabilities of every *other* source. So no number below was
produced by a model, threshold or hyperparameter that saw the source it is measured on.

Reported: per source, argmax recall, coverage (domain sources) or leakage (general sources) and
misroute; per label, the mean over its sources and the worst source; then the final starter model
(trained on the whole pool, thresholds on all out-of-source probabilities) on sources it never saw at
all (the non-commercial corpora, evaluation only) and on the in-style ``router/examples/eval.jsonl``;
the previously shipped demo model on the same public sources (all unseen by it); and decide() latency.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from router import corpora, starter  # noqa: E402
from router.calibrate import DEFAULT_RULE  # noqa: E402
from router.examples import EVAL_FILE  # noqa: E402
from router.metrics import evaluate  # noqa: E402
from router.model import RouterModel  # noqa: E402
from router.shift import SourceRates, by_source, crossfit_routes, expected_under_shift, summary  # noqa: E402

console = Console(width=160)


def pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.1%}"


def print_sources(title: str, rows: Sequence[SourceRates]) -> None:
    t = Table(title=title)
    for col in ("label", "source", "n", "argmax recall", "coverage", "leakage", "misroute"):
        t.add_column(col, justify="right")
    for r in sorted(rows, key=lambda r: (r.label, r.source)):
        t.add_row(r.label, r.source, str(r.n), pct(r.recall), pct(r.coverage), pct(r.leakage), pct(r.misroute))
    console.print(t)


def print_summary(title: str, rows: Sequence[SourceRates]) -> dict[str, Any]:
    s = summary(rows)
    exp = expected_under_shift(rows)
    t = Table(title=title)
    for col in ("label", "sources", "metric", "mean", "worst", "worst source", "mean argmax recall", "mean misroute"):
        t.add_column(col, justify="right")
    for lab, d in s.items():
        t.add_row(lab, str(d["sources"]), d["metric"], pct(d["mean"]), pct(d["worst"]), d["worst_source"],
                  pct(d["recall"]), pct(d["misroute"]))
    console.print(t)
    console.print(f"  all domain sources: coverage {pct(exp['coverage'])}, misroute {pct(exp['misroute'])}; "
                  f"general sources: leakage {pct(exp['leakage'])} (worst {pct(exp['worst_leakage'])})")
    return {"per_label": s, "overall": exp}


def fixed_rows(model: RouterModel, examples: Sequence[corpora.Example]) -> list[SourceRates]:
    """Rates per source at the model's own thresholds."""
    probs = model.predict_proba([e.text for e in examples])
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(pred)), pred]
    thr = np.asarray([2.0 if lab == "general" else model.thresholds.get(lab, 0.5) for lab in model.labels])
    slm = conf >= thr[pred]
    return by_source(probs, [e.label for e in examples], [e.source for e in examples], model.labels, slm)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--rule", default=DEFAULT_RULE, help=f"threshold rule (default {DEFAULT_RULE})")
    ap.add_argument("--no-cache", action="store_true", help="recompute the out-of-source probabilities")
    ap.add_argument("--save-model", type=Path, help="write the final starter model here")
    ap.add_argument("--calls", type=int, default=3000, help="decide() calls timed")
    ap.add_argument("--timing-set", choices=("pool", "eval"), default="pool",
                    help="prompts decide() is timed on: 2,000 sampled across the pool (default) or eval.jsonl")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/slmgw-router-bench"))
    args = ap.parse_args(argv)
    root = starter.data_dir()
    if not root.is_dir():
        console.print(f"no data at {root} (set SLMGW_DATA_DIR)")
        return 2
    t0 = time.perf_counter()
    pool = starter.training_pool(root)
    console.print(f"pool: {len(pool)} examples from {len({e.source for e in pool})} sources ({root})")
    xfit = starter.crossfit(pool, progress=lambda m: console.print(f"  [{time.perf_counter() - t0:.0f} s] {m}"),
                            cache=not args.no_cache)
    true, sources = [e.label for e in pool], [e.source for e in pool]
    slm, per_thr = crossfit_routes(xfit.probs, true, sources, xfit.labels, starter.MAX_LEAKAGE, args.rule)
    rows = by_source(xfit.probs, true, sources, xfit.labels, slm)
    out: dict[str, Any] = {"command": "python -m benchmarks.router.loso", "rule": args.rule}
    print_sources("leave one source out: each source scored by a model and thresholds that never saw it", rows)
    out["loso"] = print_summary("leave one source out, per label (mean and worst source)", rows)
    public = [r for r in rows if not r.source.startswith("project:")]
    out["loso_public"] = print_summary("same, public sources only", public)
    out["loso_sources"] = [_row(r) for r in rows]
    spread = {d: (min(t[d] for t in per_thr.values()), max(t[d] for t in per_thr.values()))
              for d in next(iter(per_thr.values()))}
    console.print("cross-fitted thresholds over held-out sources: "
                  + ", ".join(f"{d} {lo:.2f}-{hi:.2f}" for d, (lo, hi) in spread.items()))

    model = starter.fit(pool, xfit, args.rule)
    path = model.save(args.save_model or (args.workdir / "starter.npz"))
    console.print(f"starter model: {path.stat().st_size / 1e6:.1f} MB, thresholds "
                  + ", ".join(f"{k}={v:.2f}" for k, v in model.thresholds.items()))
    nc = [e for e in corpora.load(root, cap=starter.CAP, include_nc=True) if e.nc]
    unseen = fixed_rows(model, nc)
    print_sources("starter model on corpora it never saw (non-commercial: evaluation only)", unseen)
    out["unseen_nc"] = [_row(r) for r in unseen]
    styled = _in_style(model)
    out["in_style_eval_jsonl"] = styled
    from router.examples import DEMO_MODEL

    if DEMO_MODEL.is_file():
        old = RouterModel.load(DEMO_MODEL)
        if old.manifest.get("training", {}).get("recipe") != "router.starter":
            public_pool = [e for e in pool if not e.source.startswith("project:")] + nc
            out["previous_demo"] = print_summary("previously shipped demo model (project data only) on the public "
                                                 "sources, at its own thresholds", fixed_rows(old, public_pool))
            out["previous_demo_in_style"] = _in_style(old)
    from benchmarks.router.run import latency

    timing = ([e.text for e in pool[:: max(1, len(pool) // 2000)]] if args.timing_set == "pool"
              else [json.loads(line)["text"] for line in EVAL_FILE.read_text(encoding="utf-8").splitlines() if line])
    lat = latency(model, path, timing, args.calls, repeats=3)
    console.print(f"decide() on {args.timing_set} prompts: p50 {lat['p50']:.3f} ms,"
                  f" p99 {lat['p99']:.3f} ms (CPU p99 {lat['cpu_p99']:.3f} ms), "
                  f"artifact {path.stat().st_size / 1e6:.1f} MB")
    out["latency_ms"] = lat
    out["artifact_mb"] = path.stat().st_size / 1e6
    out["thresholds"] = model.thresholds
    console.print(f"[{time.perf_counter() - t0:.0f} s]")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


def _row(r: SourceRates) -> dict[str, Any]:
    return {"source": r.source, "label": r.label, "n": r.n, "recall": r.recall, "coverage": r.coverage,
            "leakage": r.leakage, "misroute": r.misroute}


def _in_style(model: RouterModel) -> dict[str, float]:
    """eval.jsonl (the project's own style) at the model's thresholds."""
    rows = [json.loads(line) for line in EVAL_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    probs = model.predict_proba([r["text"] for r in rows])
    rep = evaluate(probs, [r["label"] for r in rows], model.labels, model.thresholds)
    console.print(f"in style (eval.jsonl, {len(rows)}): accuracy {rep['accuracy']:.1%}, "
                  f"coverage {rep['coverage']:.1%}, leakage {rep['leakage']:.1%}, misroute {rep['misroute']:.1%}")
    return {k: rep[k] for k in ("accuracy", "coverage", "leakage", "misroute")}


if __name__ == "__main__":
    raise SystemExit(main())
