"""Explain a routing decision (issue 18): the admin endpoint against the running policy, and the CLI
against a policy file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.background import BackgroundGateway
from tests.conftest import ADMIN_KEY, API_KEY, policy_dict

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
SQL = [{"role": "user", "content": "Write a SQL query that joins the orders table with customers."}]


def test_admin_explain_shows_the_whole_decision(make_policy: Any, slm_upstream: Any) -> None:
    policy = make_policy(cache={"enabled": True}, router={"kind": "keyword", "threshold": 0.6},
                         slm_backends={n: {"base_url": slm_upstream.base_url, "model": n, "supports": []}
                                       for n in ("sql", "code", "support", "math")})
    with BackgroundGateway(policy) as gw:
        resp = httpx.post(f"{gw.url}/admin/route/explain", headers=ADMIN, json={"messages": SQL, "temperature": 0})
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["decision"]["target"] == "slm" and out["decision"]["domain"] == "sql"
        assert out["decision"]["reason"].startswith("keywords sql=")
        assert out["decision"]["scores"]["sql"] == 1.0 and out["threshold"] == 0.6
        assert out["targets"] == ["slm:sql", "llm:llm"]
        checks = {c["check"]: c for c in out["checks"]}
        assert checks["unsupported_feature"]["fired"] is False and checks["context_length"]["detail"]["fits"] == "yes"
        assert checks["slm_health"]["detail"]["state"] == "up"
        assert out["cache"] == {"checked": True, "cacheable": True, "would_answer": False, "why_not": None}
        assert len(out["policy_version"]) == 12
        # After a real request at temperature 0, the cache would answer the same body.
        httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {API_KEY}"},
                   json={"model": "auto", "messages": SQL, "temperature": 0}, timeout=30)
        for _ in range(50):
            out = httpx.post(f"{gw.url}/admin/route/explain", headers=ADMIN,
                             json={"messages": SQL, "temperature": 0}, params={"tenant": "tenant-a"}).json()
            if out["cache"]["would_answer"]:
                break
        assert out["cache"]["would_answer"] is True
        tools = httpx.post(f"{gw.url}/admin/route/explain", headers=ADMIN, json={
            "messages": SQL, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}).json()
        assert {c["check"]: c for c in tools["checks"]}["unsupported_feature"] == \
            {"check": "unsupported_feature", "fired": True, "detail": "tools"}
        general = httpx.post(f"{gw.url}/admin/route/explain", headers=ADMIN,
                             json={"messages": [{"role": "user", "content": "Tell me a joke"}]}).json()
        assert general["decision"]["target"] == "llm" and general["targets"] == ["llm:llm"]
        assert httpx.post(f"{gw.url}/admin/route/explain", headers={"authorization": f"Bearer {API_KEY}"},
                          json={"messages": SQL}).status_code == 403
        bad = httpx.post(f"{gw.url}/admin/route/explain", headers=ADMIN, json={"model": "nope", "messages": SQL})
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "model_not_found"


def test_cli_explain_offline(tmp_path: Path, slm_upstream: Any, llm_upstream: Any) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy_dict(slm_upstream.base_url, llm_upstream.base_url)))
    cmd = [sys.executable, "-m", "gateway.cli", "route", "explain", "--config", str(path)]
    result = subprocess.run([*cmd, "fix this python function bug"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["decision"]["domain"] == "code" and out["targets"][0] == "slm:code"
    assert out["cache"] == {"checked": False}
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"model": "llm", "messages": SQL}))
    named = json.loads(subprocess.run([*cmd, "--body", str(body)], capture_output=True, text=True,
                                      timeout=60).stdout)
    assert named["decision"]["reason"] == "requested model llm" and named["targets"] == ["llm:llm"]
    missing = subprocess.run([*cmd], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "give a prompt or --body" in missing.stderr
