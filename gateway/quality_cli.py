"""`slmgw quality`: the difficulty model (train, eval, convert public labels).

Other commands of the group (``export-audits``) are added to ``app`` by their own modules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Quality-aware escalation: the difficulty model and its labels.", no_args_is_help=True)


@app.command("train")
def train_cmd(
    data: Annotated[list[Path], typer.Option("--data", help="JSONL {text, slm_score, llm_score}; repeatable.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the model (.npz).")],
    c: Annotated[float, typer.Option("--c", min=1e-6, help="Inverse L2 regularisation.")] = 1.0,
) -> None:
    """Train the difficulty model: P(SLM answer worse than the LLM's)."""
    from router.difficulty_train import read_records, train

    try:
        records = read_records(data)
        model = train(records, c=c)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    model.save(out)
    info = model.manifest["training"]
    typer.echo(f"{out}: {info['records']} records, {info['worse']} where the SLM was worse, "
               f"{len(model.vocab)} terms")


@app.command("eval")
def eval_cmd(
    model: Annotated[Path, typer.Option("--model", help="Difficulty model (.npz).")],
    data: Annotated[Path, typer.Option("--data", help="JSONL {text, slm_score, llm_score}.")],
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    scores: Annotated[Path | None, typer.Option("--scores", help="Write {text, score} per input line.")] = None,
) -> None:
    """APGR and CPT(50%) as RouteLLM computes them, against random routing (mean of 10 seeds)."""
    from router.difficulty import DifficultyError, DifficultyModel
    from router.difficulty_metrics import random_scores, summarize
    from router.difficulty_train import read_records

    if fmt not in ("table", "json"):
        raise typer.BadParameter("--format must be table or json")
    try:
        m = DifficultyModel.load(model)
        records = read_records([data])
    except (OSError, ValueError, DifficultyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not records:
        typer.echo("error: no records", err=True)
        raise typer.Exit(2)
    values = [m.score(r.text) for r in records]
    if scores is not None:
        with scores.open("w", encoding="utf-8") as fh:
            for r, v in zip(records, values, strict=True):
                fh.write(json.dumps({"text": r.text, "score": v}, ensure_ascii=False) + "\n")
    weak, strong = [r.slm_score for r in records], [r.llm_score for r in records]
    result = summarize(values, weak, strong)
    rand = [summarize(random_scores(len(records), seed), weak, strong) for seed in range(10)]
    rand_apgr = sum(r.apgr for r in rand) / len(rand)
    rand_cpt = sum(r.cpt50 for r in rand) / len(rand)
    if fmt == "json":
        typer.echo(json.dumps({"records": len(records), **result.as_dict(),
                               "random": {"apgr": rand_apgr, "cpt50_pct": rand_cpt, "seeds": 10}}, indent=2))
        return
    typer.echo(f"records {len(records)}  SLM quality {result.weak_quality:.1f}  LLM quality "
               f"{result.strong_quality:.1f}")
    typer.echo(f"{'router':<12} {'APGR':>6} {'CPT(50%)':>9} {'CPT(80%)':>9}")
    typer.echo(f"{'difficulty':<12} {result.apgr:>6.3f} {result.cpt50:>8.1f}% {result.cpt80:>8.1f}%")
    typer.echo(f"{'random':<12} {rand_apgr:>6.3f} {rand_cpt:>8.1f}%")


@app.command("convert-mmlu")
def convert_mmlu(
    src: Annotated[Path, typer.Option("--src", help="RouteLLM mmlu_responses folder (mmlu_*.csv).")],
    out: Annotated[Path, typer.Option("--out", help="JSONL to write.")],
    exclude: Annotated[Path | None, typer.Option("--exclude", help="contaminated_prompts JSONL to drop.")] = None,
) -> None:
    """RouteLLM's MMLU correctness labels as difficulty records (answer options stripped; fields
    ``subject`` and ``group`` kept)."""
    from router.difficulty_train import contaminated_prompts, mmlu_records, write_records

    records = mmlu_records(src, contaminated_prompts(exclude) if exclude else ())
    if not records:
        typer.echo(f"error: no mmlu_*.csv records under {src}", err=True)
        raise typer.Exit(2)
    write_records(records, out)
    typer.echo(f"{out}: {len(records)} records")


@app.command("eval-cascade")
def eval_cascade(
    data: Annotated[Path, typer.Option("--data", help="JSONL {answer_logprob, slm_score, llm_score, "
                                                      "[slm_cost_usd, llm_cost_usd]} per recorded answer.")],
    floor: Annotated[list[float] | None, typer.Option("--floor", help="Floors to try (repeatable); default: "
                                                                      "deciles of the recorded logprobs.")] = None,
    slm_cost: Annotated[float, typer.Option(help="Cost of an SLM answer when a line has none.")] = 0.0,
    llm_cost: Annotated[float, typer.Option(help="Cost of an LLM answer when a line has none.")] = 1.0,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Cost against quality for a sweep of min_answer_confidence floors, replaying recorded answers."""
    from gateway.quality_cascade import read_replays, sweep

    if fmt not in ("table", "json"):
        raise typer.BadParameter("--format must be table or json")
    try:
        rows = sweep(read_replays(data, slm_cost, llm_cost), floor or None)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if fmt == "json":
        typer.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    typer.echo(f"{'floor':>9} {'escalated':>10} {'quality':>8} {'cost/req':>10} {'gap recovered':>14}")
    for r in rows:
        typer.echo(f"{r.floor:>9.3f} {r.escalated_pct:>9.1f}% {r.quality:>8.1f} {r.cost_per_request:>10.5f} "
                   f"{r.gap_recovered_pct:>13.1f}%")


@app.command("export-audits")
def export_audits_cmd(
    out: Annotated[Path, typer.Option("--out", help="JSONL to write ({text, slm_score, llm_score, ...}).")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Policy (its ledger.url).")] = None,
    ledger_url: Annotated[str | None, typer.Option(help="Ledger database URL (instead of --config).")] = None,
    since: Annotated[str, typer.Option(help="Start: 7d, 24h, 30m, 2w or an ISO date (UTC).")] = "30d",
    until: Annotated[str | None, typer.Option(help="End (exclusive); default now.")] = None,
    domain: Annotated[str | None, typer.Option(help="Only this domain's audits.")] = None,
) -> None:
    """Turn the ledger's audit verdicts into difficulty-model training labels (the user's own traffic)."""
    import asyncio
    from datetime import UTC, datetime

    from gateway.audit.export import export_audits, jsonl
    from gateway.config import PolicyError, load_policy
    from gateway.ledger.store import create_engine, normalize_url
    from gateway.reports.compute import ReportError, parse_time

    try:
        if ledger_url is None and config is None:
            raise ValueError("give --config POLICY or --ledger-url URL")
        base_dir = "."
        if ledger_url is None:
            assert config is not None
            policy = load_policy(config)
            ledger_url, base_dir = policy.ledger.url, policy.base_dir
        start = parse_time(since)
        end = parse_time(until) if until else datetime.now(UTC)
        counts: dict[str, int] = {"exported": 0, "errors": 0, "no_text": 0}

        async def run() -> list[dict[str, object]]:
            engine = create_engine(normalize_url(ledger_url or "", base_dir))
            try:
                return await export_audits(engine, start, end, domain, counts)
            finally:
                await engine.dispose()

        records = asyncio.run(run())
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(line + "\n" for line in jsonl(records)), encoding="utf-8")
    except (PolicyError, ReportError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {counts['exported']} records to {out} (skipped: {counts['errors']} without a verdict, "
               f"{counts['no_text']} without stored text: audit.store_texts or ledger.store_prompts)")
