"""`slmgw demo`: the gateway end to end on a machine with no GPU and no API key.

Two local stand-in upstreams play the parts of vLLM (serving the sql/code/support/math adapters) and
of the hosted LLM; they are not models and say so in every answer. Example requests go through the real
``openai`` SDK, and a table shows where each went and why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("sql", {"messages": [{"role": "user", "content":
        "Write a SQL query for total revenue per month from the orders table, joined with customers."}]}),
    ("code", {"messages": [{"role": "user", "content":
        "My Python function raises a KeyError traceback when the dict is empty, how do I fix it?"}]}),
    ("support", {"messages": [{"role": "user", "content":
        "I was charged twice for my order and want a refund to my card."}]}),
    ("math", {"messages": [{"role": "user", "content":
        "If a shirt costs $40 after a 20 percent discount, how much was it before? Solve step by step."}]}),
    ("general", {"messages": [{"role": "user", "content":
        "Suggest three names for a golden retriever puppy."}]}),
    ("ambiguous", {"messages": [{"role": "user", "content":
        "Should I learn SQL or Python first if I want to change careers?"}]}),
    ("follow-up", {"messages": [
        {"role": "user", "content": "Count of orders per customer from the orders table, in SQL please."},
        {"role": "assistant", "content": "SELECT customer_id, COUNT(*) FROM orders GROUP BY customer_id;"},
        {"role": "user", "content": "now only for customers in France"}]}),
    ("streamed", {"stream": True, "stream_options": {"include_usage": True}, "messages": [
        {"role": "user", "content": "Refactor this Python class to use a dataclass."}]}),
    ("named model", {"model": "llm", "messages": [{"role": "user", "content": "Summarise SQL in one line."}]}),
]


def _default_policy() -> Path:
    return Path(__file__).resolve().parent.parent / "deploy" / "examples" / "policy.yaml"


def run_demo(config: Path | None = None) -> int:
    from openai import OpenAI

    from gateway.background import BackgroundGateway
    from gateway.config import PolicyError, load_policy
    from serving.standin import StandinServer

    console = Console(width=None if Console().is_terminal else 130)
    slm = StandinServer(models=["sql", "code", "support", "math"]).start()
    llm = StandinServer(models=["gpt-4o-mini"]).start()
    console.print("[bold]slm-gateway demo[/bold]: two local [yellow]stand-in upstreams[/yellow] "
                  "(not models) play vLLM and the hosted LLM")
    console.print(f"  stand-in vLLM (adapters sql, code, support, math): {slm.base_url}")
    console.print(f"  stand-in hosted LLM (openai/gpt-4o-mini via litellm): {llm.base_url}")
    env = {"SLMGW_VLLM_URL": slm.base_url, "SLMGW_LLM_MODEL": "openai/gpt-4o-mini",
           "SLMGW_LLM_API_BASE": llm.base_url, "SLMGW_LLM_API_KEY": "stand-in-key",
           "SLMGW_API_KEY": "demo-key"}
    os.environ.update(env)
    path = config or _default_policy()
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="slmgw-demo-"))
    ledger_url = f"sqlite+aiosqlite:///{workdir / 'ledger.sqlite'}"
    # The demo's ledger lives in a temporary directory, not next to the policy.
    policy = policy.model_copy(update={"ledger": policy.ledger.model_copy(
        update={"url": ledger_url, "spill_dir": str(workdir / "spill")})})
    t0 = time.perf_counter()
    gateway = BackgroundGateway(policy).start()
    console.print(f"  gateway ({path.name}) on {gateway.base_url}, started in "
                  f"{time.perf_counter() - t0:.1f}s\n")
    client = OpenAI(base_url=gateway.base_url, api_key="demo-key", max_retries=0)
    table = Table(title="Requests through the gateway (openai SDK)", show_lines=False)
    for col in ("example", "prompt", "route", "model", "conf", "reason", "overhead ms"):
        table.add_column(col, overflow="fold", min_width=40 if col == "prompt" else None)
    failures = 0
    try:
        for label, req in [*EXAMPLES, ("SLM down", EXAMPLES[0][1])]:
            if label == "SLM down":
                slm.stop()
            try:
                table.add_row(label, _prompt(req), *_send(client, req))
            except Exception as exc:
                failures += 1
                table.add_row(label, _prompt(req), "[red]error[/red]", "", "", str(exc)[:80], "")
        models = [m.id for m in client.models.list().data]
        console.print(table)
        console.print(f"models offered by GET /v1/models: {', '.join(models)}")
        console.print("\nThe last row stopped the stand-in vLLM: the same SQL request escalated to the LLM.")
    finally:
        gateway.stop()  # drains the ledger
        llm.stop()
        slm.stop()
    from gateway.costs import CostModel

    baseline = CostModel.from_policy(policy).baseline_model
    console.print("\n[bold]What these requests cost[/bold] (`slmgw report --by route`; the stand-ins' token "
                  f"counts, {baseline}'s list price as the baseline, the policy's GPU-hour price for the SLMs):")
    from gateway.reports.cli import By, Format, report

    report(since="1h", until=None, by=By.route, fmt=Format.table, config=None, ledger_url=ledger_url)
    shutil.rmtree(workdir, ignore_errors=True)
    console.print("\nRun it for real: [bold]slmgw serve --config deploy/examples/policy.yaml[/bold] "
                  "(README: Run it for real).")
    return 1 if failures else 0


def _prompt(req: dict[str, Any]) -> str:
    text = str(req["messages"][-1]["content"])
    return text if len(text) <= 40 else text[:37] + "..."


def _send(client: Any, req: dict[str, Any]) -> list[str]:
    body = {"model": "auto", **req}
    stream = body.pop("stream", False)
    if stream:
        raw = client.chat.completions.with_raw_response.create(stream=True, **body)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        raw = client.chat.completions.with_raw_response.create(**body)
        text = raw.parse().choices[0].message.content or ""
    if not text:
        raise RuntimeError("empty answer")
    h = raw.headers
    return [h.get("x-slmgw-route", ""), h.get("x-slmgw-model", ""), h.get("x-slmgw-confidence", ""),
            h.get("x-slmgw-reason", ""), h.get("x-slmgw-overhead-ms", "")]
