"""Hot reload (issue 18): a changed policy file is picked up without a restart; a bad file changes
nothing; requests in flight finish under their policy; every ledger row names the policy version that
routed it; reloads reach every worker (``slmgw serve --workers 2``) through Redis."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.background import BackgroundGateway, free_port
from gateway.config import load_policy
from serving.standin import StandinServer
from tests.conftest import ADMIN_KEY, API_KEY, policy_dict

SQL = [{"role": "user", "content": "Write a SQL query that joins the orders table with customers."}]
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    os.replace(tmp, path)  # as editors and config management do: the file is never half-written


def _doc(tmp: Path, slm: StandinServer, llm: StandinServer, **extra: Any) -> dict[str, Any]:
    doc = policy_dict(slm.base_url, llm.base_url, ledger={"url": f"sqlite:///{tmp / 'l.sqlite'}",
                                                          "flush_interval_s": 0.05}, **extra)
    return doc


def _versions(tmp: Path) -> list[str | None]:
    with sqlite3.connect(tmp / "l.sqlite") as conn:
        return [r[0] for r in conn.execute("SELECT policy_version FROM slmgw_requests ORDER BY ts")]


def _reload_rows(tmp: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp / "l.sqlite") as conn:
        try:
            return list(conn.execute("SELECT actor, ok, old_version, new_version, diff, errors, restart_needed "
                                     "FROM slmgw_policy_reloads ORDER BY ts"))
        except sqlite3.OperationalError:
            return []


def _wait(predicate: Any, within_s: float = 15.0) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_reload_applies_a_valid_file_and_refuses_a_bad_one(tmp_path: Path, slm_upstream: StandinServer,
                                                           llm_upstream: StandinServer) -> None:
    path = tmp_path / "policy.yaml"
    doc = _doc(tmp_path, slm_upstream, llm_upstream)
    _write(path, doc)
    with BackgroundGateway(load_policy(path), path=path) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0)
        first = client.chat.completions.with_raw_response.create(model="auto", messages=SQL)
        v1 = first.headers["x-slmgw-policy-version"]
        assert first.headers["x-slmgw-route"] == "slm" and len(v1) == 12
        # The sql domain loses its keywords: the same request is now general and goes to the LLM.
        doc["domains"][0]["keywords"] = ["zzzz"]
        doc["server"] = {"port": 9999, "max_messages": 50}
        _write(path, doc)
        resp = httpx.post(f"{gw.url}/admin/reload", headers=ADMIN, timeout=30)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["ok"] and body["previous_version"] == v1 and body["version"] != v1
        assert {c["path"] for c in body["changed"]} == {"domains", "server.port", "server.max_messages"}
        assert body["restart_needed"] == ["server.port"]
        second = client.chat.completions.with_raw_response.create(model="auto", messages=SQL)
        assert second.headers["x-slmgw-policy-version"] == body["version"]
        assert second.headers["x-slmgw-route"] == "llm" and second.headers["x-slmgw-domain"] != "sql"
        # A bad file: 400 with every error and its path; the running policy keeps serving.
        doc["router"]["threshold"] = 7
        doc["domains"][0]["backend"] = "nope"
        doc["surprise"] = 1
        _write(path, doc)
        bad = httpx.post(f"{gw.url}/admin/reload", headers=ADMIN, timeout=30)
        assert bad.status_code == 400
        errors = bad.json()["errors"]
        assert any(e.startswith("router.threshold") for e in errors) and any("surprise" in e for e in errors)
        assert bad.json()["error"]["code"] == "invalid_policy"
        third = client.chat.completions.with_raw_response.create(model="auto", messages=SQL)
        assert third.headers["x-slmgw-policy-version"] == body["version"]
        assert httpx.post(f"{gw.url}/admin/reload", headers={"authorization": f"Bearer {API_KEY}"}).status_code == 403
        rows = _wait(lambda: len(_reload_rows(tmp_path)) >= 2 and _reload_rows(tmp_path))
    assert _versions(tmp_path) == [v1, body["version"], body["version"]]
    actor, ok, old, new, diff, _errors, restart = rows[0]
    assert (actor, ok, old, new) == ("admin api", 1, v1, body["version"])
    assert "domains" in diff and "server.port" in restart
    assert rows[1][1] == 0 and "surprise" in rows[1][5]


def test_twenty_reloads_under_load_fail_no_request(tmp_path: Path, slm_upstream: StandinServer,
                                                   llm_upstream: StandinServer) -> None:
    path = tmp_path / "policy.yaml"
    doc = _doc(tmp_path, slm_upstream, llm_upstream)
    _write(path, doc)
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()
    sent = [0]

    def load(gw: BackgroundGateway) -> None:
        client = openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0, timeout=30)
        while not stop.is_set():
            try:
                stream = sent[0] % 3 == 0
                raw = client.chat.completions.with_raw_response.create(model="auto", messages=SQL, stream=stream)
                if stream:
                    "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
                seen.add(raw.headers["x-slmgw-policy-version"])
                sent[0] += 1
            except Exception as exc:
                failures.append(repr(exc))

    published: list[str] = []
    with BackgroundGateway(load_policy(path), path=path) as gw:
        threads = [threading.Thread(target=load, args=(gw,)) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(20):
            if i % 5 == 4:
                _write(path, {**doc, "router": "not a mapping"})  # an invalid file among them
            else:
                doc["router"]["threshold"] = 0.3 + 0.01 * i
                doc["limits"] = {"tenants": {"tenant-a": {"max_tokens": 1000 + i}}}  # limits rebuilt too
                _write(path, doc)
            resp = httpx.post(f"{gw.url}/admin/reload", headers=ADMIN, timeout=30)
            assert resp.status_code == (400 if i % 5 == 4 else 200), resp.text
            if resp.status_code == 200:
                published.append(resp.json()["version"])
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(30)
        total = sent[0]
        _wait(lambda: len(_versions(tmp_path)) >= total)
    assert failures == [] and total > 40
    versions = _versions(tmp_path)
    assert len(versions) >= total and None not in versions
    assert set(versions) <= {*published, versions[0]} and len(set(published)) == 16
    assert seen <= set(versions)


def _serve(path: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port",
                             str(port), "--workers", str(workers), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("the gateway did not start")


def _versions_seen(port: int, n: int = 30) -> set[str]:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0)
    return {client.chat.completions.with_raw_response.create(model="auto", messages=SQL)
            .headers["x-slmgw-policy-version"] for _ in range(n)}


@pytest.mark.timeout(300)
def test_a_reload_reaches_every_worker_and_sighup_reloads(tmp_path: Path, slm_upstream: StandinServer,
                                                          llm_upstream: StandinServer) -> None:
    key = f"slmgw-test:policy:{time.time_ns()}"
    path = tmp_path / "policy.yaml"
    doc = _doc(tmp_path, slm_upstream, llm_upstream, reload={"redis_url": "redis://127.0.0.1:6379/0", "key": key,
                                                             "redis_poll_s": 0.5})
    _write(path, doc)
    port = free_port()
    proc = _serve(path, port, workers=2)
    try:
        _up(port, proc)
        before = _versions_seen(port)
        assert len(before) == 1
        doc["router"]["threshold"] = 0.55
        _write(path, doc)
        resp = httpx.post(f"http://127.0.0.1:{port}/admin/reload", headers=ADMIN, timeout=30)  # one worker
        assert resp.status_code == 200, resp.text
        new = resp.json()["version"]
        assert _wait(lambda: _versions_seen(port) == {new}, within_s=20), "a worker kept the old policy"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    # One process, no Redis: SIGHUP reloads it.
    doc.pop("reload")
    _write(path, doc)
    port = free_port()
    proc = _serve(path, port, workers=1)
    try:
        _up(port, proc)
        (old,) = _versions_seen(port, 3)
        doc["router"]["threshold"] = 0.65
        _write(path, doc)
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: _versions_seen(port, 3) not in ({old}, set()), within_s=20)
        assert proc.poll() is None  # reloaded, not restarted or stopped
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_the_file_watch_reloads_by_itself(tmp_path: Path, slm_upstream: StandinServer,
                                          llm_upstream: StandinServer) -> None:
    path = tmp_path / "policy.yaml"
    doc = _doc(tmp_path, slm_upstream, llm_upstream, reload={"watch_s": 0.2})
    _write(path, doc)
    with BackgroundGateway(load_policy(path), path=path) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0)

        def version() -> str:
            return client.chat.completions.with_raw_response.create(
                model="auto", messages=SQL).headers["x-slmgw-policy-version"]

        first = version()
        doc["router"]["threshold"] = 0.42
        _write(path, doc)
        assert _wait(lambda: version() != first, within_s=10)
        rows = _wait(lambda: _reload_rows(tmp_path))
    assert rows[0][0] == "file watch" and rows[0][1] == 1
