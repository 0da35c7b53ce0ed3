"""Hot reload under load: how long a reload takes with the shipped router, and what clients see meanwhile.

    .venv/bin/python -m benchmarks.reload [--reloads 10] [--concurrency 4] [--steady-s 10]

Starts the stand-in upstream and ``slmgw serve`` (one worker) with the shipped policy and router, sends
requests from ``--concurrency`` clients for ``--steady-s`` seconds (steady state), then keeps them running
while it changes the policy file and reloads ``--reloads`` times through ``POST /admin/reload``
(in turn: a threshold change, a limits change, and a switch to another copy of the router model file,
which loads the model again as a retrained model would). It prints one table: reload time (the gateway's
``took_ms``, model loads apart), client latency p50/p99 at steady state and during the reloads with their
ratio, and failed requests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.overhead.run import GATEWAY_KEY, PROMPT, REPO, free_port, gateway_policy, start

ADMIN_KEY = "sk-bench-admin"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _clients(url: str, n: int, stop: asyncio.Event, out: list[tuple[float, float]], failed: list[str]) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16}

    async def one(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                resp = await client.post(url, json=body)
                if resp.status_code != 200:
                    failed.append(f"{resp.status_code}: {resp.text[:200]}")
            except httpx.HTTPError as exc:
                failed.append(repr(exc))
            out.append((time.monotonic(), (time.perf_counter() - t0) * 1000))

    async with httpx.AsyncClient(headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=30) as client:
        await asyncio.gather(*(one(client) for _ in range(n)))


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    os.replace(tmp, path)


async def run(args: argparse.Namespace, gateway: str, policy_path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    stop = asyncio.Event()
    samples: list[tuple[float, float]] = []
    failed: list[str] = []
    load = asyncio.create_task(_clients(gateway + "/v1/chat/completions", args.concurrency, stop, samples, failed))
    await asyncio.sleep(args.steady_s)
    steady_end = time.monotonic()
    took: list[float] = []
    took_model: list[float] = []
    windows: list[tuple[float, float]] = []
    models = [doc["router"]["model_path"], str(policy_path.parent / "router-copy.npz")]
    await asyncio.to_thread(lambda: Path(models[1]).write_bytes(Path(models[0]).read_bytes()))
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as admin:
        for i in range(args.reloads):
            if i % 3 == 0:
                doc["router"]["threshold"] = round(0.55 + 0.01 * i, 2)
            elif i % 3 == 1:
                doc["limits"] = {"tenants": {"default": {"max_tokens": 1000 + i}}}
            else:
                doc["router"]["model_path"] = models[(i // 3 + 1) % 2]
            await asyncio.to_thread(_write, policy_path, doc)
            t0 = time.monotonic()
            resp = await admin.post(gateway + "/admin/reload")
            windows.append((t0, time.monotonic() + 0.5))  # the reload and the half second after it
            if resp.status_code != 200:
                failed.append(f"reload {i}: {resp.status_code} {resp.text[:200]}")
            else:
                (took_model if i % 3 == 2 else took).append(float(resp.json()["took_ms"]))
            await asyncio.sleep(args.pause_s)
    stop.set()
    await load
    steady = [ms for t, ms in samples if t <= steady_end]
    during = [ms for t, ms in samples if any(a <= t <= b for a, b in windows)]
    return {"took_ms": took, "took_model_ms": took_model, "steady": steady, "during": during, "failed": failed,
            "requests": len(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--steady-s", type=float, default=10.0)
    parser.add_argument("--pause-s", type=float, default=1.0, help="seconds between reloads")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="slmgw-reload-"))
    procs = []
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}/v1"
        procs.append(start("upstream", [sys.executable, "-m", "serving.standin", "--port", str(up_port), "--models",
                                        "sql,code,support,math,gpt-4o-mini"], upstream,
                           f"http://127.0.0.1:{up_port}/health", {}, workdir))
        path = gateway_policy(upstream, workdir)
        doc = yaml.safe_load(path.read_text())
        doc["auth"]["admin_keys"] = [ADMIN_KEY]
        path.write_text(yaml.safe_dump(doc))
        port = free_port()
        exe = str(REPO / ".venv/bin/slmgw") if (REPO / ".venv/bin/slmgw").exists() else "slmgw"
        procs.append(start("slm-gateway", [exe, "serve", "--config", str(path), "--port", str(port), "--log-level",
                                           "warning"], f"http://127.0.0.1:{port}/v1",
                           f"http://127.0.0.1:{port}/health/ready", {}, workdir))
        res = asyncio.run(run(args, f"http://127.0.0.1:{port}", path, doc))
    finally:
        for proc in procs:
            proc.stop()
    from rich.console import Console
    from rich.table import Table

    s50, s99 = _pct(res["steady"], 50), _pct(res["steady"], 99)
    d50, d99 = _pct(res["during"], 50), _pct(res["during"], 99)
    table = Table(title=f"Hot reload under load ({args.reloads} reloads, {args.concurrency} clients, shipped router)",
                  title_justify="left")
    for h in ("measure", "value"):
        table.add_column(h)
    took = res["took_ms"]
    table.add_row("reload took (gateway), median / max", f"{statistics.median(took):.0f} / {max(took):.0f} ms"
                  if took else "-")
    tm = res["took_model_ms"]
    table.add_row("reload with a new router model file, median / max",
                  f"{statistics.median(tm):.0f} / {max(tm):.0f} ms" if tm else "-")
    table.add_row("client p50 steady / during reloads", f"{s50:.2f} / {d50:.2f} ms ({d50 / s50:.2f}x)")
    table.add_row("client p99 steady / during reloads", f"{s99:.2f} / {d99:.2f} ms ({d99 / s99:.2f}x)")
    table.add_row("requests (steady / during reload windows / all)",
                  f"{len(res['steady'])} / {len(res['during'])} / {res['requests']}")
    table.add_row("failed requests or reloads", str(len(res["failed"])))
    Console(width=160).print(table)
    for line in res["failed"][:10]:
        print("  failed:", line)
    return 0 if not res["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
