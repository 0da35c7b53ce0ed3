"""``slmgw router ...``: train, evaluate and calibrate router models.

Only typer is imported at module level, so mounting this app keeps ``slmgw --help`` instant; numpy,
scikit-learn and rich load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from router.model import RouterModel

app = typer.Typer(help="Train, evaluate and calibrate the classifier router.", no_args_is_help=True)

DataOpt = Annotated[list[Path], typer.Option("--data", help="JSONL {text,label} or CSV (text,label) file.")]
ModelOpt = Annotated[Path, typer.Option("--model", help="Router model file (.npz).")]
DEFAULT_RULE = "bag:total"  # router.calibrate.DEFAULT_RULE, repeated so --help does not import numpy (tested)


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(2)


def train_model(data_files: list[Path], out: Path, featurizer: str = "tfidf", progress: bool = False,
                background: bool = True) -> Path:
    """Train a router on labelled example files and write the artifact to ``out``; returns ``out``.
    With ``background`` (tfidf only) the shipped general background joins as ``general`` examples."""
    from router.data import read_examples
    from router.model import train

    texts, labels = read_examples(data_files)
    bg = _background() if background and featurizer == "tfidf" else None
    if not progress:
        model = train(texts, labels, featurizer=featurizer, background=bg)
    else:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as bar:
            task = bar.add_task("reading", total=4)

            def step(msg: str) -> None:
                bar.update(task, description=msg, advance=1)

            model = train(texts, labels, featurizer=featurizer, progress=step, background=bg)
            bar.update(task, description="saving", completed=4)
    model.manifest["training"]["files"] = [Path(f).name for f in data_files]
    return model.save(out)


@app.command("train")
def train_cmd(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Where to write the model (.npz).")],
    featurizer: Annotated[str, typer.Option(help="tfidf (default) or minilm (needs the embeddings extra).")]
    = "tfidf",
    background: Annotated[bool, typer.Option(
        help="Add the shipped general background (derived features of public general prompts) as 'general' "
             "examples, so in-domain data alone still gives a general detector.")] = True,
) -> None:
    """Train a router model from labelled prompts."""
    try:
        path = train_model(data, out, featurizer, progress=True, background=background)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    from router.model import RouterModel

    m = RouterModel.load(path)
    per = m.manifest["training"]["per_label"]
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): labels "
               + ", ".join(f"{k}={v}" for k, v in per.items()))


def _background() -> Any:
    from router.background import BACKGROUND_FILE, load

    return load(BACKGROUND_FILE) if BACKGROUND_FILE.is_file() else None


def _load(model: Path) -> RouterModel:
    from router.model import ModelError, RouterModel

    try:
        return RouterModel.load(model)
    except ModelError as exc:
        raise _fail(str(exc)) from None


def _probs(m: RouterModel, data: list[Path]) -> tuple[Any, list[str]]:
    from router.data import read_examples

    try:
        texts, labels = read_examples(data)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    unknown = sorted(set(labels) - set(m.labels))
    if unknown:
        raise _fail(f"the data has labels the model does not know: {unknown} (model: {m.labels})")
    return m.predict_proba(texts), labels


@app.command("eval")
def eval_cmd(
    model: ModelOpt,
    data: DataOpt,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    threshold: Annotated[float, typer.Option(help="Threshold for labels the model has none for.")] = 0.5,
) -> None:
    """Accuracy, per-class precision/recall, confusion matrix, coverage and leakage."""
    from router.metrics import evaluate

    if fmt not in ("table", "json"):
        raise _fail("--format must be table or json")
    m = _load(model)
    probs, labels = _probs(m, data)
    report = evaluate(probs, labels, m.labels, m.thresholds, threshold)
    if fmt == "json":
        typer.echo(json.dumps(report, indent=2))
    else:
        print_report(report)


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"examples {report['examples']}  accuracy {report['accuracy']:.1%}  "
                  f"coverage {report['coverage']:.1%}  leakage {report['leakage']:.1%}  "
                  f"misroute {report['misroute']:.1%}  (at the model's thresholds)")
    t = Table(title="per class")
    for col in ("label", "precision", "recall", "support", "threshold"):
        t.add_column(col, justify="right")
    for lab, r in report["per_class"].items():
        thr = report["thresholds"].get(lab)
        t.add_row(lab, f"{r['precision']:.1%}", f"{r['recall']:.1%}", str(r["support"]),
                  "-" if thr is None else f"{thr:.2f}")
    console.print(t)
    cm = Table(title="confusion (rows: true, columns: predicted)")
    cm.add_column("")
    for lab in report["labels"]:
        cm.add_column(lab, justify="right")
    for lab, row in zip(report["labels"], report["confusion"], strict=True):
        cm.add_row(lab, *(str(v) for v in row))
    console.print(cm)
    sw = Table(title="one threshold for every domain")
    for col in ("threshold", "coverage", "leakage", "misroute"):
        sw.add_column(col, justify="right")
    for r in report["sweep"]:
        sw.add_row(f"{r['threshold']:.2f}", f"{r['coverage']:.1%}", f"{r['leakage']:.1%}", f"{r['misroute']:.1%}")
    console.print(sw)


@app.command("calibrate")
def calibrate_cmd(
    model: ModelOpt,
    data: DataOpt,
    max_leakage: Annotated[float, typer.Option(
        min=0.0, max=1.0,
        help="Total leakage budget on this data: the share of all 'general' examples sent to any SLM "
             "(not a budget per domain).")] = 0.02,
    rule: Annotated[str, typer.Option(
        help="Threshold rule: bag:total, lagrange, shared, total, split, band:D or bag:R "
             "(docs/router.md).")] = DEFAULT_RULE,
    out: Annotated[Path | None, typer.Option(help="Write here instead of over --model.")] = None,
) -> None:
    """Pick per-domain thresholds on validation data and write them into the model."""
    from router.calibrate import calibrate

    m = _load(model)
    probs, labels = _probs(m, data)
    if "general" not in labels:
        probs, labels = _with_background(m, probs, labels)
    try:
        thresholds, achieved = calibrate(probs, labels, m.labels, max_leakage, rule)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if len(data) > 1:
        _print_shift(m, data, probs, labels, max_leakage, rule)
    m.update_thresholds(thresholds, {"max_leakage": max_leakage, "budget": "total", "rule": rule,
                                     "examples": len(labels), "files": [p.name for p in data],
                                     **{k: round(v, 4) for k, v in achieved.items()}})
    dest = m.save(out or model)
    typer.echo(f"thresholds ({rule}) " + ", ".join(f"{k}={v:.2f}" for k, v in thresholds.items()))
    typer.echo(f"on this data: coverage {achieved['coverage']:.1%}, leakage {achieved['leakage']:.1%} (total), "
               f"misroute {achieved['misroute']:.1%}; wrote {dest}")


def _with_background(m: RouterModel, probs: Any, labels: list[str]) -> tuple[Any, list[str]]:
    """No general examples to measure leakage on: add the background's held-out general rows."""
    import numpy as np

    from router.background import rows_for
    from router.features import TfidfFeaturizer

    bg = _background()
    if bg is None or not isinstance(m.featurizer, TfidfFeaturizer):
        return probs, labels
    rows = rows_for(bg.calibration_rows(), bg, m.featurizer)
    z = (np.asarray(rows @ m.coef.T) + m.intercept) / m.temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    typer.echo(f"no general examples in the data: leakage measured on {rows.shape[0]} held-out rows of the "
               "shipped general background")
    return np.vstack([probs, p.astype(np.float32)]), [*labels, *(["general"] * rows.shape[0])]


def _print_shift(m: RouterModel, data: list[Path], probs: Any, labels: list[str], max_leakage: float,
                 rule: str) -> None:
    """Each file routed with thresholds calibrated on the other files: what a new source should expect."""
    from router.data import read_examples
    from router.shift import by_source, crossfit_routes, expected_under_shift

    sources = [str(p) for p in data for _ in read_examples([p])[0]]
    if len(sources) != len(labels):
        return
    try:
        slm, _ = crossfit_routes(probs, labels, sources, m.labels, max_leakage, rule)
    except ValueError:
        return
    rows = by_source(probs, labels, sources, m.labels, slm)
    exp = expected_under_shift(rows)
    typer.echo("expected under shift (each file routed with thresholds calibrated on the other files): "
               f"coverage {exp['coverage']:.1%}, leakage {exp['leakage']:.1%} (worst file "
               f"{exp['worst_leakage']:.1%}), misroute {exp['misroute']:.1%}")
    for r in rows:
        rate = f"leakage {r.leakage:.1%}" if r.label == "general" else f"coverage {r.coverage:.1%}"
        typer.echo(f"  {Path(r.source).name} [{r.label}, {r.n}]: {rate}")


@app.command("predict")
def predict_cmd(model: ModelOpt, text: Annotated[str, typer.Argument(help="A prompt to classify.")],
                top: Annotated[int, typer.Option(help="How many contributing words/n-grams to show.")] = 8) -> None:
    """Show the class probabilities for one prompt and the words or character n-grams (``*gram*``)
    that pushed it towards its top label (each one's addition to that label's log-odds)."""
    m = _load(model)
    probs, known, pushed = m.explain_parts([(text, 1.0)], top)
    ranked = sorted(zip(m.labels, probs.tolist(), strict=True), key=lambda p: -p[1])
    typer.echo("  ".join(f"{lab}={p:.3f}" for lab, p in ranked) + f"  (known n-grams {known:.0%})")
    if pushed:
        typer.echo(f"pushed towards {ranked[0][0]} by: " + ", ".join(f"{t!r} +{v:.2f}" for t, v in pushed))
