"""Router benchmark: routing quality and speed per featurizer, and the CLINC150 protocol.

    .venv/bin/python -m benchmarks.router [--loso-only | --no-loso]
        [--featurizers tfidf,minilm] [--clinc-test FILE] [--json OUT]
        [--recipe chat|plain] [--chat-weight 20] [--char-ngrams 2-5] [--no-general] [--no-code] [--no-project]
        [--threshold-rule lagrange|shared|total|band:D]

See benchmarks/router/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import json
import statistics
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

from benchmarks.router.sources import (  # noqa: E402
    CODE_FILE,
    RECIPES,
    Example,
    build,
    clinc,
    data_dir,
    near_duplicates,
    read_labelled,
    split,
    split_by_label,
)
from gateway.config import parse_policy  # noqa: E402
from router.calibrate import DEFAULT_RULE, calibrate  # noqa: E402
from router.classifier import ClassifierRouter  # noqa: E402
from router.examples import CHAT_FILE, EVAL_FILE, GENERAL_FILE, TRAIN_FILE  # noqa: E402
from router.features import embeddings_available  # noqa: E402
from router.metrics import evaluate  # noqa: E402
from router.model import RouterModel, train  # noqa: E402

console = Console(width=180)
DOMAINS = ("sql", "code", "support", "math")
MAX_LEAKAGE = 0.02
PROJECT = "project prompts"


def policy_for(model_path: Path) -> Any:
    raw = {
        "slm_backends": {"vllm": {"base_url": "http://127.0.0.1:9/v1", "model": "base", "context_length": 8192}},
        "llm_backends": {"llm": {"model": "openai/gpt-4o-mini"}},
        "domains": [{"name": d, "backend": "vllm"} for d in DOMAINS],
        "router": {"kind": "classifier", "model_path": str(model_path)},
        "fallback": {"llm": "llm"},
    }
    return parse_policy(raw, "<benchmark>", str(REPO))


def latency(model: RouterModel, model_path: Path, texts: list[str], calls: int,
            repeats: int = 1) -> dict[str, float]:
    """p50/p99 (ms) of ClassifierRouter.decide on single-turn chat requests: wall-clock time and the
    calling thread's CPU time (which leaves out time spent waiting for a core on a loaded machine).
    With ``repeats`` > 1 the whole measurement runs that many times and the medians are reported."""
    router = ClassifierRouter(model, policy_for(model_path))
    reqs = [{"model": "auto", "messages": [{"role": "user", "content": t}]} for t in texts]
    for r in reqs[:50]:
        router.decide(r)
    runs: list[tuple[float, float, float, float]] = []
    for _ in range(max(1, repeats)):
        wall, cpu = [], []
        for i in range(calls):
            r = reqs[i % len(reqs)]
            c0 = time.thread_time_ns()
            t0 = time.perf_counter()
            router.decide(r)
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.thread_time_ns() - c0) / 1e6)
        wall.sort()
        cpu.sort()
        k = min(calls - 1, int(calls * 0.99))
        runs.append((statistics.median(wall), wall[k], statistics.median(cpu), cpu[k]))
    cols = list(zip(*runs, strict=True))
    return {name: statistics.median(col) for name, col in zip(("p50", "p99", "cpu_p50", "cpu_p99"), cols,
                                                               strict=True)}


def quality(model: RouterModel, examples: list[Example], probs: Any, thresholds: dict[str, float] | None = None,
            default: float = 0.5) -> dict[str, Any]:
    return evaluate(probs, [e.label for e in examples], model.labels,
                    model.thresholds if thresholds is None else thresholds, default)


def run_featurizer(name: str, featurizer: str, train_set: list[Example], val: list[Example],
                   eval_sets: list[tuple[str, list[Example]]], timing: list[Example], workdir: Path, calls: int,
                   weights: dict[str, float] | None = None,
                   temperature_set: list[Example] | None = None, repeats: int = 1,
                   featurizer_params: dict[str, Any] | None = None, rule: str = DEFAULT_RULE) -> list[dict[str, Any]]:
    """Train on ``train_set`` (example weight by source from ``weights``, default 1), calibrate on ``val``
    (2% total leakage budget, threshold rule ``rule``), time decide() on ``timing`` and evaluate on every named set."""
    weights = weights or {}
    sw = [weights.get(e.source, 1.0) for e in train_set] if weights else None
    temp = ([e.text for e in temperature_set], [e.label for e in temperature_set]) if temperature_set else None
    with console.status(f"[{name}] training on {len(train_set)} examples"):
        t0 = time.perf_counter()
        model = train([e.text for e in train_set], [e.label for e in train_set], featurizer=featurizer,
                      sample_weight=sw, temperature_data=temp,
                      featurizer_params=featurizer_params if featurizer == "tfidf" else None)
        train_s = time.perf_counter() - t0
    with console.status(f"[{name}] calibrating on {len(val)} validation examples"):
        probs = model.predict_proba([e.text for e in val])
        thresholds, _ = calibrate(probs, [e.label for e in val], model.labels, MAX_LEAKAGE, rule)
        model.update_thresholds(thresholds, {"max_leakage": MAX_LEAKAGE, "budget": "total", "rule": rule,
                                             "examples": len(val)})
    path = model.save(workdir / f"{name}.npz")
    t0 = time.perf_counter()
    model = RouterModel.load(path)
    load_s = time.perf_counter() - t0
    with console.status(f"[{name}] timing decide()"):
        lat = latency(model, path, [e.text for e in timing], calls, repeats)
    rows = []
    for set_name, exs in eval_sets:
        if not exs:
            continue
        with console.status(f"[{name}] evaluating on {set_name}"):
            probs = model.predict_proba([e.text for e in exs])
            for thr_name, thr in (("calibrated", None), ("0.5 flat", {})):
                q = quality(model, exs, probs, thr)
                rows.append({"featurizer": name, "set": set_name, "thresholds": thr_name, "examples": len(exs),
                             "accuracy": q["accuracy"], "coverage": q["coverage"], "leakage": q["leakage"],
                             "misroute": q["misroute"], "p50_ms": lat["p50"], "p99_ms": lat["p99"],
                             "cpu_p50_ms": lat["cpu_p50"], "cpu_p99_ms": lat["cpu_p99"],
                             "size_mb": path.stat().st_size / 1e6, "load_s": load_s, "train_s": train_s,
                             "calibrated": thresholds, "rule": rule, "temperature": model.temperature,
                             "per_class": q["per_class"], "confusion": q["confusion"], "labels": q["labels"]})
    console.print(f"[{name}] trained in {train_s:.0f} s; temperature {model.temperature:.2f}; thresholds ({rule}) "
                  + ", ".join(f"{k}={v:.2f}" for k, v in thresholds.items()))
    return rows


def print_quality(rows: list[dict[str, Any]]) -> None:
    t = Table(title=f"routing quality (thresholds calibrated on the validation split, max leakage {MAX_LEAKAGE:.0%})")
    for col in ("featurizer", "eval set", "thresholds", "n", "accuracy", "coverage", "leakage", "misroute",
                "decide p50", "decide p99", "cpu p99", "model size", "load"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["featurizer"], r["set"], r["thresholds"], str(r["examples"]), f"{r['accuracy']:.1%}",
                  f"{r['coverage']:.1%}", f"{r['leakage']:.1%}", f"{r['misroute']:.1%}", f"{r['p50_ms']:.3f} ms",
                  f"{r['p99_ms']:.3f} ms", f"{r['cpu_p99_ms']:.3f} ms", f"{r['size_mb']:.1f} MB",
                  f"{r['load_s']:.2f} s")
    console.print(t)


def print_recall(rows: list[dict[str, Any]]) -> None:
    t = Table(title="per-class recall (argmax, no thresholds) on the project prompts")
    labels = rows[0]["labels"]
    t.add_column("featurizer")
    for lab in labels:
        t.add_column(lab, justify="right")
    for r in rows:
        if r["set"] == PROJECT and r["thresholds"] == "calibrated":
            t.add_row(r["featurizer"], *(f"{r['per_class'][lab]['recall']:.0%}" for lab in labels))
    console.print(t)


# -- CLINC150 --------------------------------------------------------------------------------------
def load_clinc_test(path: Path) -> list[tuple[str, str]]:
    """The original data_full.json (keys test / oos_test) or JSONL of {"text", "label"} with label "oos"."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and "test" in data:
        return [(t, i) for t, i in data["test"]] + [(t, "oos") for t, _ in data.get("oos_test", [])]
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [(r["text"], r["label"]) for r in rows]


def clinc_scores(model: RouterModel, pairs: list[tuple[str, str]], tau: float) -> tuple[float, float]:
    probs = model.predict_proba([t for t, _ in pairs])
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(pred)), pred]
    oos = model.labels.index("oos")
    names = np.asarray(model.labels)
    out = np.where((pred == oos) | (conf < tau), "oos", names[pred])
    gold = np.asarray([lab for _, lab in pairs])
    ins = gold != "oos"
    return float((out[ins] == gold[ins]).mean()), float((out[~ins] == "oos").mean())


def run_clinc(featurizer: str, test_file: Path | None) -> list[tuple[str, str, float, float]]:
    data, _ = clinc(data_dir())
    tr = [(t, i) for t, i in data["train"]] + [(t, "oos") for t, _ in data["oos_train"]]
    val = [(t, i) for t, i in data["val"]] + [(t, "oos") for t, _ in data["oos_val"]]
    with console.status(f"[clinc/{featurizer}] training on {len(tr)} queries, 151 classes"):
        model = train([t for t, _ in tr], [lab for _, lab in tr], featurizer=featurizer)
    with console.status(f"[clinc/{featurizer}] choosing the threshold on val"):
        grid = np.round(np.arange(0.0, 0.96, 0.01), 2)
        scored = [(tau, *clinc_scores(model, val, float(tau))) for tau in grid]
        # the threshold that maximises (in-scope accuracy + out-of-scope recall) on val
        tau, ins, oos = max(scored, key=lambda s: s[1] + s[2])
    rows = [(featurizer, "val, oos class only (tau=0)", *clinc_scores(model, val, 0.0)),
            (featurizer, f"val, tau={tau:.2f} (chosen on val)", ins, oos)]
    if test_file is not None:
        test = load_clinc_test(test_file)
        rows.append((featurizer, f"test, tau={tau:.2f}", *clinc_scores(model, test, float(tau))))
    return rows


def print_clinc(rows: list[tuple[str, str, float, float]], have_test: bool) -> None:
    t = Table(title="CLINC150, oos-train setting (Larson et al. 2019, Table 2)")
    for col in ("model", "split / threshold", "in-scope accuracy", "out-of-scope recall"):
        t.add_column(col, justify="right")
    for feat, where, ins, oos in rows:
        t.add_row(feat, where, f"{ins:.1%}", f"{oos:.1%}")
    t.add_row("BERT (paper)", "test", "96.9%", "40.3%")
    t.add_row("MLP (paper)", "test", "93.5%", "47.4%")
    console.print(t)
    if not have_test:
        console.print("CLINC's test split is not in ../shared/data: the rows above are on val (whose data also "
                      "chose the threshold), so they are optimistic next to the paper's test numbers. "
                      "Pass --clinc-test data_full.json for test.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_feats = "tfidf,minilm" if embeddings_available() else "tfidf"
    ap.add_argument("--featurizers", default=default_feats, help=f"comma-separated (default {default_feats})")
    ap.add_argument("--recipe", choices=RECIPES, default="chat",
                    help="public-source recipe: chat (artefacts removed, default) or plain (as before)")
    ap.add_argument("--chat-weight", type=float, default=20.0,
                    help="example weight of the project-written prompts in the +project rows (default 20)")
    ap.add_argument("--char-ngrams", default="2-5",
                    help="tfidf character n-gram range (default 2-5, picked on validation; docs/router.md)")
    ap.add_argument("--general", action=argparse.BooleanOptionalAction, default=True,
                    help="also use train_general.jsonl like train_chat.jsonl (70%% trains at the chat weight, "
                         "30%% joins calibration and the chat held-out row); default on, --no-general for the old")
    ap.add_argument("--code", action=argparse.BooleanOptionalAction, default=True,
                    help="also use train_code.jsonl (chat-style code prompts + support/general hard negatives) "
                         "the same way; default on, --no-code for the previous recipe")
    ap.add_argument("--threshold-rule", default=DEFAULT_RULE,
                    help=f"threshold rule of router.calibrate (default {DEFAULT_RULE}; docs/router.md)")
    ap.add_argument("--no-project", action="store_true",
                    help="only the public-sources rows (no train.jsonl / train_chat.jsonl)")
    ap.add_argument("--clinc-test", type=Path, help="CLINC150 test data (data_full.json or JSONL)")
    ap.add_argument("--no-clinc", action="store_true", help="skip the CLINC150 protocol")
    ap.add_argument("--clinc-featurizers", default="tfidf", help="featurizers for CLINC (default tfidf)")
    ap.add_argument("--calls", type=int, default=3000, help="decide() calls timed per featurizer")
    ap.add_argument("--repeats", type=int, default=3,
                    help="latency measured this many times (median of the p50s and p99s reported)")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the training pool to use")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/slmgw-router-bench"))
    ap.add_argument("--loso", action=argparse.BooleanOptionalAction, default=True,
                    help="first the leave-one-source-out headline (benchmarks/router/loso.py; default on)")
    ap.add_argument("--loso-only", action="store_true", help="only the leave-one-source-out headline")
    args = ap.parse_args(argv)
    if args.loso or args.loso_only:
        from benchmarks.router import loso

        loso_args = ["--calls", str(args.calls), "--workdir", str(args.workdir)]
        if args.json:
            loso_args += ["--json", str(args.json.with_name(args.json.stem + "-loso.json"))]
        code = loso.main(loso_args)
        if code or args.loso_only:
            return code
    if not data_dir().is_dir():
        console.print(f"no data at {data_dir()} (set SLMGW_DATA_DIR)")
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    with console.status("building the training pool from " + str(data_dir())):
        pool = build(scale=args.scale, recipe=args.recipe)
        train_set, val, test = split(pool, (0.7, 0.1, 0.2))
    styled = read_labelled(EVAL_FILE)
    project_train = read_labelled(TRAIN_FILE)
    # train_chat.jsonl: 70% trains, 30% is held out for calibration, temperature and its own row
    chat_train, chat_val = split_by_label(read_labelled(CHAT_FILE), 0.7)
    if args.general:
        # train_general.jsonl (chat-style general prompts) the same way: 70% trains, 30% calibrates
        gen_train, gen_val = split_by_label(read_labelled(GENERAL_FILE), 0.7)
        chat_train, chat_val = chat_train + gen_train, chat_val + gen_val
    if args.code:
        # train_code.jsonl (chat-style code prompts + hard negatives) the same way
        code_train, code_val = split_by_label(read_labelled(CODE_FILE), 0.7)
        chat_train, chat_val = chat_train + code_train, chat_val + code_val
    project = project_train + chat_train
    dup = near_duplicates(styled, project)
    unseen = [e for i, e in enumerate(styled) if i not in dup]
    console.print(f"pool {len(pool)} ({args.recipe} recipe): train {len(train_set)}, validation {len(val)}, "
                  f"held-back {len(test)}; project prompts {len(styled)} ({EVAL_FILE.name}), of which "
                  f"{len(dup)} near-duplicate a project training prompt; chat prompts {len(chat_train)} train / "
                  f"{len(chat_val)} held out ({CHAT_FILE.name})")
    public_sets = [("held-back split", test), (PROJECT, styled)]
    project_sets = [("held-back split", test), ("chat held-out", chat_val), (PROJECT, styled),
                    (PROJECT + " w/o near-dups", unseen)]
    weights = {TRAIN_FILE.name: args.chat_weight, CHAT_FILE.name: args.chat_weight,
               GENERAL_FILE.name: args.chat_weight, CODE_FILE.name: args.chat_weight}
    lo, hi = (int(v) for v in args.char_ngrams.split("-"))
    tfidf_params = {"char_min": lo, "char_max": hi}
    rows: list[dict[str, Any]] = []
    for feat in [f for f in args.featurizers.split(",") if f]:
        rows += run_featurizer(feat, feat, train_set, val, public_sets, styled, args.workdir, args.calls,
                               repeats=args.repeats, featurizer_params=tfidf_params, rule=args.threshold_rule)
        if not args.no_project:
            # public sources + the project's own prompts (train.jsonl and 70% of train_chat.jsonl),
            # calibrated on the public validation split plus the held-out 30% of train_chat.jsonl
            rows += run_featurizer(f"{feat}+project", feat, train_set + project, val + chat_val, project_sets,
                                   styled, args.workdir, args.calls, weights=weights, temperature_set=chat_val,
                                   repeats=args.repeats, featurizer_params=tfidf_params, rule=args.threshold_rule)
    print_quality(rows)
    print_recall(rows)
    clinc_rows: list[tuple[str, str, float, float]] = []
    if not args.no_clinc:
        for feat in [f for f in args.clinc_featurizers.split(",") if f]:
            clinc_rows += run_clinc(feat, args.clinc_test)
        print_clinc(clinc_rows, args.clinc_test is not None)
    if args.json:
        args.json.write_text(json.dumps({"routing": rows, "clinc": clinc_rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
