"""The README's commands as a user runs them: `slmgw demo` and `slmgw serve` with the shipped policy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from gateway.background import free_port
from serving.standin import StandinServer

REPO = Path(__file__).resolve().parents[2]
SLMGW = [sys.executable, "-m", "gateway.cli"]


def test_demo_runs_and_shows_both_routes() -> None:
    result = subprocess.run([*SLMGW, "demo"], capture_output=True, text=True, timeout=180, cwd=REPO,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "stand-in" in out
    assert "│ slm " in out and "│ llm " in out
    assert "escalated slm_unreachable" in out
    # the baseline named in the text is the one the report prices (the policy's costs.baseline_llm)
    assert "openai/gpt-4o's list price as the baseline" in out and "(baseline: openai/gpt-4o;" in out


def test_serve_with_the_example_policy(slm_upstream: StandinServer, llm_upstream: StandinServer,
                                      tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SLMGW_VLLM_URL": slm_upstream.base_url, "SLMGW_LLM_API_BASE": llm_upstream.base_url,
           "SLMGW_LLM_API_KEY": "upstream", "SLMGW_API_KEY": "sk-serve-test", "SLMGW_LLM_MODEL": "openai/gpt-4o-mini",
           # the ledger and its spill directory go to the test's directory, not next to the shipped policy
           "SLMGW_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.sqlite'}", "SLMGW_SPILL_DIR": str(tmp_path / "spill")}
    proc = subprocess.Popen([*SLMGW, "serve", "--config", str(REPO / "deploy/examples/policy.yaml"),
                             "--port", str(port)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "gateway did not become ready"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-serve-test", max_retries=0)
        chat = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "SQL query: revenue per month from the orders table"}])
        assert chat.headers["x-slmgw-route"] == "slm" and chat.headers["x-slmgw-model"] == "sql"
        general = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Tell me about the moon landing"}])
        assert general.headers["x-slmgw-route"] == "llm"
        completion = client.completions.create(model="auto", prompt="Write a python function to add numbers")
        assert completion.choices[0].text.startswith("[stand-in code]")
        emb = client.embeddings.create(model="auto", input="hello")
        assert len(emb.data[0].embedding) > 0
        assert "auto" in [m.id for m in client.models.list().data]
    finally:
        proc.terminate()
        proc.wait(15)
    import sqlite3

    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:  # stopping drained the ledger into it
        routes = [r for (r,) in db.execute("SELECT route FROM slmgw_requests ORDER BY ts")]
    assert routes[:3] == ["slm", "llm", "slm"] and len(routes) == 4


def test_serve_refuses_an_invalid_policy(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("llm_backends: {}\nfallback: {llm: x}\n")
    result = subprocess.run([*SLMGW, "serve", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "llm_backends" in result.stderr


def test_serving_plan_for_the_example_policy_serves_the_names_the_gateway_calls() -> None:
    env = {**os.environ, "SLMGW_API_KEY": "k", "SLMGW_ADAPTER_DIR": "/adapters"}
    result = subprocess.run([*SLMGW, "serving", "plan", "--config", str(REPO / "deploy/examples/policy.yaml")],
                            capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "--enable-lora" in result.stdout
    for name in ("sql", "code", "support", "math"):
        assert f"{name}=/adapters/{name}" in result.stdout
