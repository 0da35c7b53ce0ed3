"""Load and fault benchmark: hold a fixed concurrency against `slmgw serve` while its dependencies fail.

    .venv/bin/python -m benchmarks.load [--duration 60] [--concurrency 64] [--json OUT]

Everything runs on loopback and is started (and stopped) by this script in a temporary directory:
two stand-in upstreams (`python -m serving.standin`, one for the SLMs, one for the hosted LLM), a private
Redis (`redis-server` on its own port: the response cache and the rate limiter), a private PostgreSQL
cluster (`initdb` + `pg_ctl` on its own port: the ledger and the key store) and the gateway
(`slmgw serve`, one worker). The machine's own Redis and PostgreSQL are never touched.

During the run, each dependency is taken down and brought back once:

    10%-25% of the run   the SLM stand-in is killed (SIGKILL), then restarted on the same port
    40%-55%              Redis is killed, then restarted
    70%-85%              PostgreSQL is stopped (pg_ctl -m immediate), then started

Afterwards the gateway is asked to drain its ledger, stopped (SIGTERM), and the ledger rows are counted:
every request the gateway answered must have exactly one row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
API_KEY = "sk-load-test"
ADMIN_KEY = "sk-load-admin"
PROMPTS = [
    ("auto", "Write a SQL query that joins orders with customers and sums the totals per month."),
    ("auto", "Fix this python function: def f(x): return x +"),
    ("auto", "How do I get a refund for my order? My account shows the card was charged twice."),
    ("auto", "Tell me a short story about a lighthouse keeper."),
    ("auto", "Summarise the history of the printing press in three sentences."),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise SystemExit("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
    return found[-1].parent


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


class Stack:
    """The processes under test, each restartable."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = {name: free_port() for name in ("slm", "llm", "redis", "pg", "gateway")}
        self.pg_bin = _pg_bin()
        self.pg_data = workdir / "pg"
        self.logs: dict[str, Any] = {}

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = self.logs.setdefault(name, open(self.dir / f"{name}.log", "ab"))
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                            env={**os.environ, **(env or {})})

    # -- upstreams, Redis, PostgreSQL -------------------------------------------------------------
    def start_standin(self, name: str) -> None:
        models = "sql,code,support" if name == "slm" else "gpt-4o-mini"
        self._spawn(name, [PY, "-m", "serving.standin", "--port", str(self.ports[name]), "--models", models,
                           "--delay", "0.005"])
        wait_port(self.ports[name])

    def start_redis(self) -> None:
        self._spawn("redis", ["redis-server", "--port", str(self.ports["redis"]), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--protected-mode", "no"])
        wait_port(self.ports["redis"])

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(10)

    def init_pg(self) -> None:
        self.pg_data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            shutil.chown(self.pg_data, "postgres")
        subprocess.run(_as_postgres([str(self.pg_bin / "initdb"), "-D", str(self.pg_data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8"]), check=True, capture_output=True)
        self.start_pg()
        subprocess.run(_as_postgres([str(self.pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.ports["pg"]),
                                     "-U", "postgres", "slmgw"]), check=True, capture_output=True)

    def start_pg(self) -> None:
        opts = f"-p {self.ports['pg']} -c listen_addresses=127.0.0.1 -k {self.pg_data} -c fsync=off"
        subprocess.run(_as_postgres([str(self.pg_bin / "pg_ctl"), "-D", str(self.pg_data), "-o", opts, "-l",
                                     str(self.pg_data / "server.log"), "-w", "start"]), check=True,
                       capture_output=True)

    def stop_pg(self, mode: str = "immediate") -> None:
        subprocess.run(_as_postgres([str(self.pg_bin / "pg_ctl"), "-D", str(self.pg_data), "-m", mode, "-w",
                                     "stop"]), check=False, capture_output=True)

    @property
    def pg_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.ports['pg']}/slmgw"

    # -- the gateway --------------------------------------------------------------------------------
    def write_policy(self) -> Path:
        slm = f"http://127.0.0.1:{self.ports['slm']}/v1"
        redis = f"redis://127.0.0.1:{self.ports['redis']}/0"
        domains = {"sql": ["sql", "query", "join"], "code": ["python", "function", "bug"],
                   "support": ["refund", "order", "account"]}
        policy = {
            "auth": {"api_keys": [{"key": API_KEY, "tenant": "load"}], "admin_keys": [ADMIN_KEY],
                     "key_store": {"enabled": True, "refresh_s": 2}},
            "slm_backends": {d: {"base_url": slm, "model": d, "timeout_s": 5, "connect_timeout_s": 0.5,
                                 "health_interval_s": 1, "max_backoff_s": 2} for d in domains},
            "llm_backends": {"llm": {"model": "openai/gpt-4o-mini", "api_key": "x", "timeout_s": 10,
                                     "api_base": f"http://127.0.0.1:{self.ports['llm']}/v1"}},
            "domains": [{"name": d, "backend": d, "keywords": kw} for d, kw in domains.items()],
            "router": {"kind": "keyword", "threshold": 0.5},
            "fallback": {"llm": ["llm"]},
            "cache": {"enabled": True, "redis_url": redis, "key_prefix": "load:cache:"},
            "ledger": {"url": self.pg_url, "flush_interval_s": 0.5, "spill_dir": str(self.dir / "spill"),
                       "write_timeout_s": 2, "retry_max_s": 2},
            "limits": {"redis_url": redis, "key_prefix": "load:rl:", "budget_cache_s": 2,
                       "default": {"rpm": 10_000_000, "tpm": 1_000_000_000, "budget_usd": 1_000_000}},
            "privacy": {"action": "mask"},
        }
        path = self.dir / "policy.yaml"
        path.write_text(yaml.safe_dump(policy), encoding="utf-8")
        return path

    def start_gateway(self, policy: Path) -> None:
        self._spawn("gateway", [PY, "-m", "gateway.cli", "serve", "-c", str(policy), "--port",
                                str(self.ports["gateway"]), "--log-level", "warning"],
                    env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        wait_port(self.ports["gateway"], timeout=90)

    def stop_gateway(self) -> int:
        proc = self.procs.pop("gateway")
        proc.send_signal(signal.SIGTERM)
        return proc.wait(60)

    def close(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                self.kill(name)
        self.stop_pg("fast")
        for log in self.logs.values():
            log.close()


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    routes: Counter[str] = field(default_factory=Counter)
    timeline: list[tuple[float, int]] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())


async def load(url: str, concurrency: int, duration: float, tally: Tally, t0: float) -> None:
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    deadline = t0 + duration
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        async def worker(w: int) -> None:
            i = w
            while time.monotonic() < deadline:
                model, prompt = PROMPTS[i % len(PROMPTS)]
                i += 1
                # A third are repeatable (temperature 0, a small set of variants): cache hits happen.
                body: dict[str, Any] = {"model": model, "max_tokens": 32, "messages": [
                    {"role": "user", "content": f"{prompt} #{i % 7 if i % 3 == 0 else i}"}]}
                if i % 3 == 0:
                    body["temperature"] = 0
                tally.sent += 1
                start = time.perf_counter()
                try:
                    async with session.post(url, json=body, headers=headers) as resp:
                        await resp.read()
                        tally.statuses[resp.status] += 1
                        tally.routes[resp.headers.get("x-slmgw-route", "-")] += 1
                        tally.timeline.append((time.monotonic() - t0, resp.status))
                except (TimeoutError, aiohttp.ClientError) as exc:
                    tally.transport_errors[type(exc).__name__] += 1
                    continue
                tally.latencies.append((time.perf_counter() - start) * 1000)

        await asyncio.gather(*(worker(w) for w in range(concurrency)))


async def faults(stack: Stack, duration: float, t0: float, events: list[str]) -> None:
    plan = [(0.10, "kill SLM upstream", lambda: stack.kill("slm")),
            (0.25, "restart SLM upstream", lambda: stack.start_standin("slm")),
            (0.40, "kill Redis", lambda: stack.kill("redis")),
            (0.55, "restart Redis", stack.start_redis),
            (0.70, "stop PostgreSQL", stack.stop_pg),
            (0.85, "start PostgreSQL", stack.start_pg)]
    for at, what, action in plan:
        await asyncio.sleep(max(0.0, t0 + at * duration - time.monotonic()))
        await asyncio.to_thread(action)
        events.append(f"{time.monotonic() - t0:6.1f}s  {what}")


async def ledger_drained(gateway: str, within_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    state: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"{gateway}/health/ready") as resp:
                state = (await resp.json()).get("components", {}).get("ledger", {})
            if state.get("store") == "up" and state.get("buffered") == 0 and state.get("spilled") == 0:
                return state
            await asyncio.sleep(0.5)
    return state


def count_rows(url: str) -> int:
    return asyncio.run(_count_async(url))


async def _count_async(url: str) -> int:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.connect() as conn:
        n = int((await conn.execute(text("SELECT count(*) FROM slmgw_requests"))).scalar_one())
    await engine.dispose()
    return n


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-faults", action="store_true", help="load only, no dependency failures")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="slmgw-load-"))
    stack = Stack(workdir)
    events: list[str] = []
    tally = Tally()
    try:
        stack.start_standin("slm")
        stack.start_standin("llm")
        stack.start_redis()
        stack.init_pg()
        stack.start_gateway(stack.write_policy())
        gateway = f"http://127.0.0.1:{stack.ports['gateway']}"

        async def run() -> dict[str, Any]:
            t0 = time.monotonic()
            jobs = [load(f"{gateway}/v1/chat/completions", args.concurrency, args.duration, tally, t0)]
            if not args.no_faults:
                jobs.append(faults(stack, args.duration, t0, events))
            await asyncio.gather(*jobs)
            elapsed = time.monotonic() - t0
            return {"elapsed": elapsed, "ledger": await ledger_drained(gateway)}

        outcome = asyncio.run(run())
        exit_code = stack.stop_gateway()
        rows = count_rows(stack.pg_url)
    finally:
        stack.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    ok = sum(n for s, n in tally.statuses.items() if 200 <= s < 300)
    c4 = sum(n for s, n in tally.statuses.items() if 400 <= s < 500)
    c5 = sum(n for s, n in tally.statuses.items() if s >= 500)
    result = {
        "duration_s": round(outcome["elapsed"], 1), "concurrency": args.concurrency,
        "sent": tally.sent, "answered": tally.answered, "succeeded": ok, "4xx": c4, "5xx": c5,
        "transport_errors": dict(tally.transport_errors), "statuses": dict(tally.statuses),
        "routes": dict(tally.routes), "req_per_s": round(tally.answered / outcome["elapsed"], 1),
        "p50_ms": round(pct(tally.latencies, 0.50), 1), "p99_ms": round(pct(tally.latencies, 0.99), 1),
        "ledger_rows": rows, "ledger_equal": rows == tally.answered, "gateway_exit": exit_code,
        "faults": events, "ledger_state_before_stop": outcome["ledger"],
    }
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0 if result["ledger_equal"] and c5 == 0 else 1


def print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    for line in r["faults"]:
        console.print(f"  fault  {line}")
    title = "load + faults" if r["faults"] else "load, no faults"
    table = Table(title=f"{title}: concurrency {r['concurrency']} for {r['duration_s']} s")
    for col in ("sent", "succeeded", "4xx", "5xx", "transport err", "req/s", "p50 ms", "p99 ms",
                "ledger rows", "answered", "equal"):
        table.add_column(col, justify="right")
    table.add_row(str(r["sent"]), str(r["succeeded"]), str(r["4xx"]), str(r["5xx"]),
                  str(sum(r["transport_errors"].values())), str(r["req_per_s"]), str(r["p50_ms"]),
                  str(r["p99_ms"]), str(r["ledger_rows"]), str(r["answered"]), "yes" if r["ledger_equal"] else "NO")
    console.print(table)
    console.print(f"  statuses {r['statuses']}  routes {r['routes']}  transport errors {r['transport_errors']}")
