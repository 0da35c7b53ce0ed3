"""The gateway's own overhead, next to calling the upstream directly and next to the LiteLLM proxy.

One command, one run, one machine, one load client (wrk) for all three:

    .venv/bin/python -m benchmarks.overhead [--duration 10] [--concurrency 1,16,64] [--out FILE]

It starts a stand-in OpenAI-compatible upstream (``serving.standin``, fixed small answer), then
measures (a) the upstream directly, (b) ``slmgw serve`` with one worker (routing on, cache off, ledger
on), (c) the LiteLLM proxy with one worker (installed into its own virtual environment on first use,
``LITELLM_LOCAL_MODEL_COST_MAP=True``), non-streaming and streaming, at each concurrency. It prints a
table and writes JSON: requests/s, latency p50/p99 and their excess over direct, time to first token
for streams (a separate small client at concurrency 1), CPU seconds per 1,000 requests and resident
memory of the proxy process. Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
PROXY_VENV = Path(os.environ.get("SLMGW_LITELLM_PROXY_VENV", Path.home() / ".cache/slmgw/litellm-proxy-venv"))
GATEWAY_KEY = "sk-bench"
PROMPT = "Write a SQL query for the total revenue per month from the orders table (report @N@)."


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    def pids(self) -> list[int]:
        """The process and its children (uvicorn / litellm workers)."""
        pids = [self.popen.pid]
        try:
            out = subprocess.run(["pgrep", "-P", str(self.popen.pid)], capture_output=True, text=True).stdout
            pids += [int(p) for p in out.split()]
        except OSError:
            pass
        return pids

    def cpu_seconds(self) -> float:
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
        return total

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()


def start(name: str, cmd: list[str], url: str, health: str, env: dict[str, str], workdir: Path,
          timeout: float = 120) -> Proc:
    log = workdir / f"{name}.log"
    popen = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **env},
                             cwd=REPO, start_new_session=True)
    proc = Proc(name, popen, url, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(health, timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.stop()
    raise RuntimeError(f"{name} did not become healthy in {timeout}s: {log.read_text()[-2000:]}")


def ensure_litellm_proxy() -> Path:
    exe = PROXY_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"installing the LiteLLM proxy into {PROXY_VENV} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(PROXY_VENV)], check=True)
    subprocess.run([str(PROXY_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


# -- load ------------------------------------------------------------------------------------------------
# Every request carries a different prompt (a counter in the text), so nothing along the path can
# answer it from a memo of an earlier one: the router classifies each one afresh.
WRK_SCRIPT = """
local template = {body}
local headers = {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {key}"}}
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", nil, headers, (template:gsub("@N@", tostring(n))))
end
"""


@dataclass
class Cell:
    target: str
    stream: bool
    concurrency: int
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    requests: int = 0
    cpu_s_per_1k: float | None = None
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(url: str, body: dict[str, Any], concurrency: int, duration: float, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(json.dumps(body)), key=GATEWAY_KEY))
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "--timeout", "10s", "--latency", "-s",
           str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    res: dict[str, float] = {"errors": 0.0}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            res["rps"] = float(line.split()[1])
        elif re.match(r"^50(\.0+)?%", line):
            res["p50"] = _ms(line.split()[1])
        elif re.match(r"^99(\.0+)?%", line):
            res["p99"] = _ms(line.split()[1])
        elif "requests in" in line:
            res["requests"] = float(line.split()[0])
        elif line.startswith("Non-2xx"):
            res["errors"] += float(line.split()[-1])
        elif line.startswith("Socket errors"):
            res["errors"] += sum(int(n) for n in re.findall(r"\d+", line))
    if "rps" not in res:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    return res


async def ttft(url: str, body: dict[str, Any], n: int) -> tuple[float, float]:
    """p50 and p99 of time to the first `data:` line, one request at a time."""
    times: list[float] = []
    async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            async with client.stream("POST", url, json=body) as resp:
                resp.raise_for_status()
                first = True
                async for line in resp.aiter_lines():
                    if first and line.startswith("data:"):
                        times.append((time.perf_counter() - t0) * 1000)
                        first = False
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def idle_memory(procs: dict[str, Proc], urls: dict[str, str], targets: list[str]) -> dict[str, float]:
    """Resident memory of each proxy once it has served 20 requests (imports done, pools open) and sat
    idle for a second: what a worker costs before load."""
    for target in targets:
        if target not in procs:
            continue
        body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8}
        with httpx.Client(timeout=30, headers={"authorization": f"Bearer {GATEWAY_KEY}"}) as client:
            for _ in range(20):
                client.post(urls[target] + "/chat/completions", json=body).raise_for_status()
    time.sleep(1)
    return {name: proc.rss_mb() for name, proc in procs.items() if name != "upstream"}


# -- the run ---------------------------------------------------------------------------------------------
def gateway_policy(upstream: str, workdir: Path, audit: float | None = None) -> Path:
    import yaml

    policy = yaml.safe_load((REPO / "deploy/examples/policy.yaml").read_text())
    policy["cache"] = {"enabled": False}
    if audit is not None:  # sampled SLM answers audited: a reference call and two judge calls, in the background
        policy["audit"] = {"sample_rate": audit, "daily_budget_usd": 1e9, "max_in_flight": 256}
    # The policy is rewritten into a temp dir: keep its router model where the shipped policy finds it.
    policy["router"]["model_path"] = str((REPO / "deploy/examples" / policy["router"]["model_path"]).resolve())
    policy["ledger"] = {"url": f"sqlite+aiosqlite:///{workdir / ('audit-' if audit else '')}ledger.sqlite"}
    path = workdir / ("policy-audit.yaml" if audit else "policy.yaml")
    path.write_text(yaml.safe_dump(policy))
    env = {"SLMGW_VLLM_URL": upstream, "SLMGW_LLM_API_BASE": upstream, "SLMGW_API_KEY": GATEWAY_KEY,
           "SLMGW_LLM_API_KEY": "x", "SLMGW_LLM_MODEL": "openai/gpt-4o-mini"}
    os.environ.update(env)
    return path


def litellm_config(upstream: str, workdir: Path) -> Path:
    path = workdir / "litellm.yaml"
    path.write_text(json.dumps({
        "model_list": [{"model_name": "auto", "litellm_params": {"model": "openai/sql", "api_base": upstream,
                                                                 "api_key": "x"}}],
        "general_settings": {"master_key": GATEWAY_KEY},
        "litellm_settings": {"drop_params": True, "telemetry": False},
    }))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--targets", default="direct,slm-gateway,litellm-proxy",
                        help="comma-separated: direct, slm-gateway, slm-gateway-audit (audits at 100%%), "
                             "litellm-proxy")
    parser.add_argument("--ttft-requests", type=int, default=200)
    parser.add_argument("--audit-rate", type=float, default=1.0,
                        help="sample rate of the slm-gateway-audit target (default 1.0: every SLM answer)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/overhead/results.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    levels = [int(c) for c in args.concurrency.split(",")]
    targets = args.targets.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="slmgw-overhead-"))
    procs: dict[str, Proc] = {}
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    try:
        print(f"starting the stand-in upstream on {upstream}", flush=True)
        procs["upstream"] = start("upstream", [sys.executable, "-m", "serving.standin", "--port", str(up_port),
                                   "--models", "sql,code,support,math,gpt-4o-mini"],
                                  upstream, f"http://127.0.0.1:{up_port}/health", {}, workdir)
        urls = {"direct": upstream}
        if "slm-gateway" in targets:
            gw_port = free_port()
            policy = gateway_policy(upstream, workdir)
            print("starting slm-gateway (1 worker)", flush=True)
            procs["slm-gateway"] = start("slm-gateway", [str(REPO / ".venv/bin/slmgw") if (
                REPO / ".venv/bin/slmgw").exists() else "slmgw", "serve", "--config", str(policy), "--port",
                str(gw_port), "--workers", "1", "--log-level", "warning"], f"http://127.0.0.1:{gw_port}/v1",
                f"http://127.0.0.1:{gw_port}/health/ready", {}, workdir)
            urls["slm-gateway"] = procs["slm-gateway"].url
        if "slm-gateway-audit" in targets:
            ga_port = free_port()
            policy = gateway_policy(upstream, workdir, audit=args.audit_rate)
            print(f"starting slm-gateway with audits at {args.audit_rate:.0%} (1 worker)", flush=True)
            procs["slm-gateway-audit"] = start("slm-gateway-audit", [str(REPO / ".venv/bin/slmgw") if (
                REPO / ".venv/bin/slmgw").exists() else "slmgw", "serve", "--config", str(policy), "--port",
                str(ga_port), "--workers", "1", "--log-level", "warning"], f"http://127.0.0.1:{ga_port}/v1",
                f"http://127.0.0.1:{ga_port}/health/ready", {}, workdir)
            urls["slm-gateway-audit"] = procs["slm-gateway-audit"].url
        if "litellm-proxy" in targets:
            exe = ensure_litellm_proxy()
            lp_port = free_port()
            print("starting the LiteLLM proxy (1 worker)", flush=True)
            procs["litellm-proxy"] = start(
                "litellm-proxy", [str(exe), "--config", str(litellm_config(upstream, workdir)), "--port",
                                  str(lp_port), "--host", "127.0.0.1", "--num_workers", "1"],
                f"http://127.0.0.1:{lp_port}/v1", f"http://127.0.0.1:{lp_port}/health/liveliness",
                {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}, workdir, timeout=180)
            urls["litellm-proxy"] = procs["litellm-proxy"].url
        idle = idle_memory(procs, urls, targets)
        cells: list[Cell] = []
        for stream in (False, True):
            for conc in levels:
                for target in targets:
                    model = "sql" if target == "direct" else "auto"
                    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}],
                                            "temperature": 0, "max_tokens": 32}
                    if stream:
                        body["stream"] = True
                    proc = procs.get(target)
                    cpu0 = proc.cpu_seconds() if proc else 0.0
                    print(f"  {target:14s} {'stream' if stream else 'json  '} c={conc:<3d} ...", end="", flush=True)
                    res = run_wrk(urls[target] + "/chat/completions", body, conc, args.duration, workdir)
                    cell = Cell(target, stream, conc, rps=res["rps"], p50_ms=res.get("p50", float("nan")),
                                p99_ms=res.get("p99", float("nan")), errors=int(res["errors"]),
                                requests=int(res.get("requests", 0)))
                    if proc and cell.requests:
                        cell.cpu_s_per_1k = (proc.cpu_seconds() - cpu0) / cell.requests * 1000
                    print(f" {cell.rps:8.0f} req/s  p50 {cell.p50_ms:6.2f} ms  p99 {cell.p99_ms:7.2f} ms"
                          f"  errors {cell.errors}", flush=True)
                    cells.append(cell)
        for cell in cells:
            base = next(c for c in cells if c.target == "direct" and c.stream == cell.stream
                        and c.concurrency == cell.concurrency)
            if cell.target != "direct":
                cell.added_p50_ms = cell.p50_ms - base.p50_ms
                cell.added_p99_ms = cell.p99_ms - base.p99_ms
        ttfts: dict[str, tuple[float, float]] = {}
        for target in targets:
            model = "sql" if target == "direct" else "auto"
            body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": True,
                    "temperature": 0}
            ttfts[target] = asyncio.run(ttft(urls[target] + "/chat/completions", body, args.ttft_requests))
        memory = {name: proc.rss_mb() for name, proc in procs.items() if name != "upstream"}
        report(cells, ttfts, memory, levels, targets, idle)
        args.out.write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "duration_s": args.duration},
            "cells": [asdict(c) for c in cells],
            "ttft_ms": {t: {"p50": v[0], "p99": v[1]} for t, v in ttfts.items()},
            "rss_mb": memory,
            "rss_idle_mb": idle,
        }, indent=2))
        print(f"\nwrote {args.out}")
        return 0
    finally:
        for proc in procs.values():
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(cells: list[Cell], ttfts: dict[str, tuple[float, float]], memory: dict[str, float],
           levels: list[int], targets: list[str], idle: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Gateway overhead (one worker each, same upstream, wrk -t1)")
    for col in ("mode", "conc", "target", "req/s", "p50 ms", "p99 ms", "added p50", "added p99", "CPU s/1k req",
                "errors", "vs litellm"):
        table.add_column(col, justify="right" if col not in ("mode", "target") else "left")
    for stream in (False, True):
        for conc in levels:
            row_cells = [c for c in cells if c.stream == stream and c.concurrency == conc]
            lit = next((c for c in row_cells if c.target == "litellm-proxy"), None)
            for c in row_cells:
                ratio = f"{c.rps / lit.rps:.1f}x" if lit and lit.rps and c.target == "slm-gateway" else ""
                table.add_row("stream" if stream else "json", str(conc), c.target, f"{c.rps:,.0f}",
                              f"{c.p50_ms:.2f}", f"{c.p99_ms:.2f}",
                              "" if c.added_p50_ms is None else f"{c.added_p50_ms:+.2f}",
                              "" if c.added_p99_ms is None else f"{c.added_p99_ms:+.2f}",
                              "" if c.cpu_s_per_1k is None else f"{c.cpu_s_per_1k:.2f}", str(c.errors), ratio)
    console = Console(width=160)
    console.print(table)
    ttft_table = Table(title="Time to first token, streaming, concurrency 1")
    for col in ("target", "p50 ms", "p99 ms", "added p50"):
        ttft_table.add_column(col)
    for target in targets:
        p50, p99 = ttfts[target]
        added = "" if target == "direct" else f"{p50 - ttfts['direct'][0]:+.2f}"
        ttft_table.add_row(target, f"{p50:.2f}", f"{p99:.2f}", added)
    console.print(ttft_table)
    console.print("resident memory, idle after 20 requests / after the run: "
                  + ", ".join(f"{k} {idle.get(k, float('nan')):.0f} / {v:.0f} MB" for k, v in memory.items()))


if __name__ == "__main__":
    sys.exit(main())
