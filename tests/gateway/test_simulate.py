"""Simulate a policy change on recorded traffic (issue 18): requests recorded with their text
(ledger.store_prompts) are replayed through a new policy's router, without calling any model."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import yaml

from gateway.background import BackgroundGateway
from gateway.config import load_policy
from serving.standin import StandinServer
from tests.conftest import API_KEY, policy_dict

SQL = [{"role": "user", "content": "Write a SQL query that joins the orders table with customers."}]
CODE = [{"role": "user", "content": "Fix this python function bug"}]
JOKE = [{"role": "user", "content": "Tell me a joke"}]


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM slmgw_requests").fetchone()[0])


def test_simulate_replays_recorded_traffic_through_a_new_policy(tmp_path: Path, slm_upstream: StandinServer,
                                                                llm_upstream: StandinServer) -> None:
    doc = policy_dict(slm_upstream.base_url, llm_upstream.base_url,
                      ledger={"url": f"sqlite:///{tmp_path / 'l.sqlite'}", "flush_interval_s": 0.05,
                              "store_prompts": True})
    for backend in doc["slm_backends"].values():
        backend["cost"] = {"usd_per_1m_tokens": 0.2}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    with BackgroundGateway(load_policy(path), path=path) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0)
        for messages in (SQL, SQL, CODE, JOKE):
            client.chat.completions.create(model="auto", messages=messages)
        client.embeddings.create(model="auto", input="hello")
        deadline = time.monotonic() + 10
        while _rows(tmp_path / "l.sqlite") < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
    with sqlite3.connect(tmp_path / "l.sqlite") as conn:
        stored = [r[0] for r in conn.execute("SELECT prompt_text FROM slmgw_requests WHERE domain = 'sql'")]
    assert json.loads(stored[0]) == SQL  # the messages, as JSON
    # The new policy: sql loses its keywords (so SQL requests go to the LLM).
    doc["domains"][0]["keywords"] = ["zzzz"]
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump(doc))
    cmd = [sys.executable, "-m", "gateway.cli", "policy", "simulate", "--config", str(new), "--since", "1h"]
    out = subprocess.run([*cmd, "--format", "json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["replayed"] == 4 and data["not_replayed"]["embedding"] == 1 and data["changed"] == 2
    sql = data["by_domain"]["sql"]
    assert (sql["actual"]["slm_requests"], sql["simulated"]["slm_requests"]) == (2, 0)
    assert sql["simulated"]["cost_usd"] > sql["actual"]["cost_usd"]  # the LLM costs more than the SLM
    assert sql["simulated"]["savings_usd"] < sql["actual"]["savings_usd"]
    assert data["by_domain"]["code"]["actual"] == data["by_domain"]["code"]["simulated"]
    assert {(c["old"]["route"], c["new"]["route"]) for c in data["changes"]} == {("slm", "llm")}
    assert all(c["old"]["reason"].startswith("keywords sql") for c in data["changes"])
    table = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "Requests whose route changes" in table.stdout and "TOTAL" in table.stdout
    # Without stored text there is nothing to replay, and the command says so.
    doc["ledger"]["store_prompts"] = False
    doc["ledger"]["url"] = f"sqlite:///{tmp_path / 'plain.sqlite'}"
    path.write_text(yaml.safe_dump(doc))
    with BackgroundGateway(load_policy(path), path=path) as gw:
        openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0).chat.completions.create(
            model="auto", messages=SQL)
        deadline = time.monotonic() + 10
        while _rows(tmp_path / "plain.sqlite") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    plain = subprocess.run([*cmd[:-4], "--config", str(path), "--since", "1h", "--format", "json"],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    result: dict[str, Any] = json.loads(plain.stdout)
    assert result["replayed"] == 0 and result["not_replayed"]["no_stored_text"] == 1
