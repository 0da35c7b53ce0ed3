"""Key store: `slmgw keys create/list/revoke` against the ledger database, and the gateway accepting
store keys (refreshed in the background), refusing revoked ones within the refresh interval, and
keeping store keys out of /admin."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from gateway.background import BackgroundGateway
from gateway.cli import app as cli
from gateway.config import Policy
from tests.conftest import ADMIN_KEY, API_KEY

runner = CliRunner()


def _policy_file(policy: Policy, tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    doc = policy.model_dump(mode="json", exclude_none=True)
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _keys(*args: str) -> Any:
    result = runner.invoke(cli, ["keys", *args])
    assert result.exit_code == 0, result.output
    return result


def _db(policy: Policy) -> str:
    db = make_url(policy.ledger.url).database
    assert db is not None
    return db


def test_create_prints_the_key_once_and_stores_only_its_hash(make_policy: Callable[..., Policy],
                                                             tmp_path: Path) -> None:
    policy = make_policy()
    cfg = _policy_file(policy, tmp_path)
    out = _keys("create", "-c", str(cfg), "--tenant", "acme", "--budget-usd", "2.5", "--rpm", "30", "--tpm", "9000")
    key = out.stdout.strip().splitlines()[0]
    assert key.startswith("sk-slmgw-") and len(key) > 40
    with sqlite3.connect(_db(policy)) as conn:
        rows = conn.execute("SELECT * FROM slmgw_api_keys").fetchall()
        dump = repr(rows)
    assert len(rows) == 1
    assert key not in dump and key[len("sk-slmgw-") + 4:] not in dump  # the secret part is nowhere
    assert hashlib.sha256(key.encode()).hexdigest() in dump
    listed = _keys("list", "-c", str(cfg), "--json").stdout
    assert '"tenant": "acme"' in listed and '"rpm": 30' in listed and '"budget_usd": 2.5' in listed
    assert key not in listed


def test_revoke_needs_an_active_key(make_policy: Callable[..., Policy], tmp_path: Path) -> None:
    cfg = _policy_file(make_policy(), tmp_path)
    result = runner.invoke(cli, ["keys", "revoke", "-c", str(cfg), "key_doesnotexist"])
    assert result.exit_code == 1


def test_store_keys_work_revocation_takes_effect_and_admin_is_refused(
        make_policy: Callable[..., Policy], start_gateway: Callable[[Policy], BackgroundGateway],
        tmp_path: Path) -> None:
    policy = make_policy(auth={"api_keys": [{"key": API_KEY, "tenant": "tenant-a"}], "admin_keys": [ADMIN_KEY],
                               "key_store": {"enabled": True, "refresh_s": 0.2}})
    cfg = _policy_file(policy, tmp_path)
    key = _keys("create", "-c", str(cfg), "--tenant", "acme").stdout.strip().splitlines()[0]
    gw = start_gateway(policy)

    store_client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)
    resp = store_client.chat.completions.with_raw_response.create(
        model="sql", messages=[{"role": "user", "content": "select 1"}])
    assert resp.http_response.status_code == 200
    # Policy-file keys keep working next to the store.
    policy_client = openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0, timeout=30)
    assert policy_client.models.list().data

    with pytest.raises(openai.AuthenticationError) as wrong:
        openai.OpenAI(base_url=gw.base_url, api_key=key + "x", max_retries=0).models.list()
    assert wrong.value.status_code == 401 and wrong.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    missing = httpx.get(f"{gw.base_url}/models", timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"

    # A store key is a client key: 403 on /admin, the admin key passes.
    admin = httpx.get(f"{gw.url}/admin/report", headers={"authorization": f"Bearer {key}"}, timeout=10)
    assert admin.status_code == 403 and admin.json()["error"]["type"] == "permission_error"
    ok = httpx.get(f"{gw.url}/admin/report", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert ok.status_code == 200

    key_id = _keys("list", "-c", str(cfg), "--json").stdout.split('"key_id": "')[1].split('"')[0]
    _keys("revoke", "-c", str(cfg), key_id)
    deadline = time.monotonic() + 5
    status = 200
    while time.monotonic() < deadline:
        status = httpx.get(f"{gw.base_url}/models", headers={"authorization": f"Bearer {key}"}, timeout=10).status_code
        if status == 401:
            break
        time.sleep(0.05)
    assert status == 401, "a revoked key must stop working within the refresh interval"
    assert _keys("list", "-c", str(cfg), "--json").stdout.strip() == ""  # active keys only
    assert '"revoked_at": "20' in _keys("list", "-c", str(cfg), "--all", "--json").stdout


def test_a_store_keys_own_budget_and_rate_limit(make_policy: Callable[..., Policy],
                                               start_gateway: Callable[[Policy], BackgroundGateway],
                                               tmp_path: Path) -> None:
    import uuid

    import redis

    prefix = f"slmgw:test-issue7:{uuid.uuid4().hex[:8]}:"
    policy = make_policy(auth={"api_keys": [{"key": API_KEY, "tenant": "tenant-a"}],
                               "key_store": {"enabled": True, "refresh_s": 0.2}},
                         ledger={"url": make_policy().ledger.url, "flush_interval_s": 0.05},
                         limits={"redis_url": "redis://127.0.0.1:6379/0", "key_prefix": prefix,
                                 "budget_cache_s": 0.05, "redis_timeout_ms": 2000})
    cfg = _policy_file(policy, tmp_path)
    poor = _keys("create", "-c", str(cfg), "--tenant", "acme", "--budget-usd", "0.000000001").stdout.split()[0]
    slow = _keys("create", "-c", str(cfg), "--tenant", "acme", "--rpm", "2").stdout.split()[0]
    gw = start_gateway(policy)
    try:
        def chat(key: str) -> httpx.Response:
            return httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"},
                              json={"model": "llm", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)

        assert chat(poor).status_code == 200
        deadline = time.monotonic() + 5
        while (resp := chat(poor)).status_code == 200:
            assert time.monotonic() < deadline, "the key's budget was never enforced"
            time.sleep(0.1)
        assert resp.status_code == 429 and resp.headers["x-should-retry"] == "false"
        assert "key key_" in resp.json()["error"]["message"]
        # Same tenant, another key: the budget is the key's, not the tenant's.
        assert [chat(slow).status_code for _ in range(3)] == [200, 200, 429]
        assert chat(API_KEY).status_code == 200
    finally:
        r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for k in r.scan_iter(match=prefix + "*"):
            r.delete(k)
        r.close()
