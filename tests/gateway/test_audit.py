"""Sampled audits end to end (issue 15): the real gateway, the real ledger store (SQLite here, PostgreSQL
in one test), loopback stand-ins for the SLM, the reference LLM and a judge whose verdicts are scripted,
all reached through litellm; clients use the openai SDK."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.audit.judge import combine, parse_pick
from gateway.audit.stats import tally, wilson
from gateway.background import BackgroundGateway
from gateway.config import parse_policy
from serving.standin import StandinServer
from tests.conftest import ADMIN_KEY, API_KEY, policy_dict

SQL = [{"role": "user", "content": "Write a SQL query that joins the orders table with customers."}]
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
SLM_MARK = "[stand-in sql]"


def _slm_is_a(body: dict[str, Any]) -> bool:
    prompt = body["messages"][-1]["content"]
    a = prompt.split("[The Start of Assistant A's Answer]", 1)[1].split("[The End of Assistant A's Answer]")[0]
    return SLM_MARK in a


SCRIPTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "slm_better": lambda b: "SLM's query is right. [[A]]" if _slm_is_a(b) else "B is right. [[B]]",
    "llm_better": lambda b: "[[B]]" if _slm_is_a(b) else "[[A]]",
    "always_a": lambda b: "The first one. [[A]]",  # position bias: the orders disagree
    "tie": lambda b: "Both fine. [[C]]",
    "garbage": lambda b: "I cannot decide.",
}


@pytest.fixture(scope="module")
def judge_server() -> Iterator[StandinServer]:
    server = StandinServer(models=["gpt-4o"]).start()
    yield server
    server.stop()


@pytest.fixture
def judge(judge_server: StandinServer) -> Iterator[StandinServer]:
    yield judge_server
    state = judge_server.state
    state.fail_status, state.delay_s, state.reply_fn = None, 0.0, None
    state.requests.clear()


def _policy(tmp: Path, slm: StandinServer, llm: StandinServer, judge: StandinServer, **audit: Any) -> Any:
    doc = policy_dict(slm.base_url, llm.base_url, ledger={"url": f"sqlite:///{tmp / 'l.sqlite'}",
                                                          "spill_dir": str(tmp / "spill"),
                                                          "flush_interval_s": 0.05})
    for backend in doc["slm_backends"].values():
        backend["cost"] = {"usd_per_1m_tokens": 0.2}
    doc["llm_backends"]["judge"] = {"model": "openai/gpt-4o", "api_base": judge.base_url, "api_key": "judge-key",
                                    "timeout_s": 10, "max_retries": 0}
    doc["audit"] = {"sample_rate": 1.0, "judge": "judge", "daily_budget_usd": 100.0, "timeout_s": 10, **audit}
    return parse_policy(doc, base_dir=str(tmp))


def _rows(tmp: Path, table: str = "slmgw_audits") -> list[dict[str, Any]]:
    db = tmp / "l.sqlite"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY ts")]
        except sqlite3.OperationalError:
            return []


def _wait_rows(tmp: Path, n: int, within_s: float = 30.0, table: str = "slmgw_audits") -> list[dict[str, Any]]:
    deadline = time.monotonic() + within_s
    while True:
        rows = _rows(tmp, table)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def _client(gw: BackgroundGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0, timeout=30)


def test_judge_parsing_and_both_order_agreement() -> None:
    assert parse_pick("A is better. [[A]]") == "A" and parse_pick("[[A]] no wait [[ C ]]") == "C"
    assert parse_pick("no verdict") is None and parse_pick(None) is None and parse_pick("[[D]]") is None
    assert combine("A", "B").verdict == "win"  # SLM as A picked, SLM as B picked
    assert combine("B", "A").verdict == "loss"
    assert combine("C", "C").verdict == "tie"
    flipped = combine("A", "A")  # the judge always picks the first answer: position bias
    assert flipped.verdict == "tie" and flipped.disagree
    assert combine("A", None).verdict == "error" and combine(None, "B").verdict == "error"
    lo, hi = wilson(45, 50)
    assert 0.78 < lo < 0.80 and 0.95 < hi < 0.97  # 90% of 50: the textbook interval [0.786, 0.957]
    counts = tally(["win", "tie", "loss", "error", "win"])
    assert (counts.samples, counts.judged, counts.non_inferior_rate) == (5, 4, 0.75)


@pytest.mark.parametrize(("script", "verdict", "disagree"), [
    ("slm_better", "win", False), ("llm_better", "loss", False), ("always_a", "tie", True), ("tie", "tie", False),
    ("garbage", "error", False)])
def test_verdicts_are_recorded_with_costs(tmp_path: Path, slm_upstream: StandinServer, llm_upstream: StandinServer,
                                          judge: StandinServer, script: str, verdict: str, disagree: bool) -> None:
    judge.state.reply_fn = SCRIPTS[script]
    with BackgroundGateway(_policy(tmp_path, slm_upstream, llm_upstream, judge)) as gw:
        raw = _client(gw).chat.completions.with_raw_response.create(model="auto", messages=SQL, temperature=0)
        assert raw.headers["x-slmgw-route"] == "slm"
        rows = _wait_rows(tmp_path, 1)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["verdict"], bool(row["disagree"]), row["mode"], row["domain"]) == (verdict, disagree, "audit", "sql")
    assert row["request_id"] == raw.headers["x-request-id"]
    assert (row["slm_model"], row["reference_model"], row["judge_model"]) == ("sql", "openai/gpt-4o-mini",
                                                                            "openai/gpt-4o")
    assert row["reference_cost_usd"] > 0 and row["judge_cost_usd"] > 0  # priced from litellm's map
    assert row["prompt_text"] is None and row["slm_answer"] is None  # texts only when the policy opts in
    if verdict == "error":
        assert "no [[A]]/[[B]]/[[C]]" in row["error"]
    # The reference got the client's request; the judge got both orders, the SLM's answer as A and as B.
    assert llm_upstream.state.requests[-1]["messages"] == SQL
    judged = [b for b in judge.state.requests if "[User Request]" in b["messages"][-1]["content"]]
    assert sorted(_slm_is_a(b) for b in judged[-2:]) == [False, True]


def test_sampling_rate_per_domain_and_texts_opt_in(tmp_path: Path, slm_upstream: StandinServer,
                                                   llm_upstream: StandinServer, judge: StandinServer) -> None:
    judge.state.reply_fn = SCRIPTS["tie"]
    code = [{"role": "user", "content": "Fix this python function bug: def f(x): return x +"}]
    policy = _policy(tmp_path, slm_upstream, llm_upstream, judge, sample_rate=0.0, domain_rates={"code": 1.0},
                     store_texts=True)
    with BackgroundGateway(policy) as gw:
        client = _client(gw)
        for _ in range(3):
            assert client.chat.completions.with_raw_response.create(
                model="auto", messages=SQL).headers["x-slmgw-route"] == "slm"
        client.chat.completions.create(model="auto", messages=code)
        client.chat.completions.create(model="llm", messages=code)  # the LLM answered: nothing to audit
        rows = _wait_rows(tmp_path, 1)
        time.sleep(1.0)  # would-be audits of the sql requests would have landed by now
        rows = _rows(tmp_path)
    assert [r["domain"] for r in rows] == ["code"]
    assert json.loads(rows[0]["prompt_text"]) == code  # the messages, as the ledger keeps prompts
    assert rows[0]["slm_answer"].startswith("[stand-in code]")
    assert rows[0]["reference_answer"].startswith("[stand-in gpt-4o-mini]")


def test_streams_are_audited_once_they_end(tmp_path: Path, slm_upstream: StandinServer,
                                           llm_upstream: StandinServer, judge: StandinServer) -> None:
    judge.state.reply_fn = SCRIPTS["slm_better"]
    with BackgroundGateway(_policy(tmp_path, slm_upstream, llm_upstream, judge, store_texts=True)) as gw:
        text = "".join(c.choices[0].delta.content or "" for c in _client(gw).chat.completions.create(
            model="auto", messages=SQL, stream=True) if c.choices)
        rows = _wait_rows(tmp_path, 1)
    assert len(rows) == 1 and rows[0]["verdict"] == "win"
    assert rows[0]["slm_answer"] == text


def test_the_daily_budget_stops_audits(tmp_path: Path, slm_upstream: StandinServer, llm_upstream: StandinServer,
                                       judge: StandinServer) -> None:
    judge.state.reply_fn = SCRIPTS["tie"]
    with BackgroundGateway(_policy(tmp_path, slm_upstream, llm_upstream, judge, daily_budget_usd=1e-9)) as gw:
        client = _client(gw)
        client.chat.completions.create(model="auto", messages=SQL)
        _wait_rows(tmp_path, 1)
        for _ in range(3):
            client.chat.completions.create(model="auto", messages=SQL)
        state = httpx.get(f"{gw.url}/admin/guardrails", headers=ADMIN).json()["audit"]
        time.sleep(0.5)
        rows = _rows(tmp_path)
    assert len(rows) == 1  # the first audit spent more than the budget; the next three were skipped
    assert state["skipped"]["budget"] == 3 and state["spent_today_usd"] > 1e-9


def test_a_hanging_or_failing_judge_never_touches_the_client(tmp_path: Path, slm_upstream: StandinServer,
                                                            llm_upstream: StandinServer,
                                                            judge: StandinServer) -> None:
    judge.state.delay_s = 5.0  # hangs past the audit's time limit
    with BackgroundGateway(_policy(tmp_path, slm_upstream, llm_upstream, judge, timeout_s=1.0)) as gw:
        client = _client(gw)
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=SQL)
        assert raw.http_response.status_code == 200 and raw.headers["x-slmgw-route"] == "slm"
        state = httpx.get(f"{gw.url}/admin/guardrails", headers=ADMIN).json()["audit"]
        assert state["done"] == 0  # the client has its answer; the audit runs on
        deadline = time.monotonic() + 20
        while len(judge.state.requests) < 2 and time.monotonic() < deadline:  # both orders sent, both hanging
            time.sleep(0.05)
        judge.state.delay_s = 0.0
        judge.state.fail_status = 500  # and a judge that errors
        assert client.chat.completions.create(model="auto", messages=SQL).choices[0].message.content
        rows = _wait_rows(tmp_path, 2)
    assert [r["verdict"] for r in rows] == ["error", "error"]
    assert "timed out" in rows[0]["error"] and "judge failed" in rows[1]["error"]


def test_shadow_mode_judges_the_slm_it_did_not_serve(tmp_path: Path, slm_upstream: StandinServer,
                                                     llm_upstream: StandinServer, judge: StandinServer) -> None:
    judge.state.reply_fn = SCRIPTS["llm_better"]
    policy = _policy(tmp_path, slm_upstream, llm_upstream, judge)
    policy = policy.model_copy(update={"router": policy.router.model_copy(update={"shadow": True})})
    with BackgroundGateway(policy) as gw:
        raw = _client(gw).chat.completions.with_raw_response.create(model="auto", messages=SQL)
        assert raw.headers["x-slmgw-route"] == "llm"  # the LLM serves in shadow mode
        rows = _wait_rows(tmp_path, 1)
    assert len(rows) == 1
    row = rows[0]
    assert (row["mode"], row["verdict"], row["reference_model"]) == ("shadow", "loss", "openai/gpt-4o-mini")
    assert row["slm_cost_usd"] > 0  # the SLM call made only for the audit is its cost
    assert any(r.get("model") == "sql" for r in slm_upstream.state.requests)


def test_guardrail_shadows_a_failing_domain_until_reset(tmp_path: Path, slm_upstream: StandinServer,
                                                        llm_upstream: StandinServer, judge: StandinServer) -> None:
    import redis

    prefix = f"slmgw-test-audit:{time.time_ns()}:"
    judge.state.reply_fn = SCRIPTS["llm_better"]
    guard = {"sql": {"min_non_inferior": 0.8, "window": 20, "min_samples": 6, "action": "shadow"}}
    policy = _policy(tmp_path, slm_upstream, llm_upstream, judge, guardrails=guard,
                     redis_url="redis://127.0.0.1:6379/0", key_prefix=prefix)
    try:
        with BackgroundGateway(policy) as gw, BackgroundGateway(policy) as replica:
            client = _client(gw)
            for _ in range(6):
                assert client.chat.completions.with_raw_response.create(
                    model="auto", messages=SQL).headers["x-slmgw-route"] == "slm"
            _wait_rows(tmp_path, 6)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # six losses: Wilson upper bound 0.39 < 0.8
                state = httpx.get(f"{replica.url}/admin/guardrails", headers=ADMIN).json()["guardrails"]
                if state["sql"]["action"] == "shadow":
                    break
                time.sleep(0.2)
            assert state["sql"]["action"] == "shadow", state
            assert state["sql"]["evidence"]["window"]["losses"] == 6
            for gateway in (gw, replica):  # every replica now serves sql from the LLM, shadowed
                deadline = time.monotonic() + 5
                while True:
                    raw = _client(gateway).chat.completions.with_raw_response.create(model="auto", messages=SQL)
                    if raw.headers["x-slmgw-route"] == "llm" or time.monotonic() > deadline:
                        break
                    time.sleep(0.3)
                assert raw.headers["x-slmgw-route"] == "llm"
                assert raw.headers["x-slmgw-reason"].startswith("guardrail_shadow sql")
            judge.state.reply_fn = SCRIPTS["slm_better"]  # the SLM was fixed: reset, and stay reset
            reset = httpx.post(f"{replica.url}/admin/guardrails/reset", json={"domain": "sql"}, headers=ADMIN)
            assert reset.status_code == 200 and reset.json()["action"] is None
            deadline = time.monotonic() + 5
            while True:
                raw = client.chat.completions.with_raw_response.create(model="auto", messages=SQL)
                if raw.headers["x-slmgw-route"] == "slm" or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert raw.headers["x-slmgw-route"] == "slm"
            bad = httpx.post(f"{gw.url}/admin/guardrails/reset", json={"domain": "nope"}, headers=ADMIN)
            assert bad.status_code == 404 and bad.json()["error"]["code"] == "guardrail_not_found"
            events = _wait_rows(tmp_path, 2, table="slmgw_guardrail_events")
    finally:
        r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for key in r.scan_iter(match=prefix + "*"):
            r.delete(key)
    assert [e["action"] for e in events] == ["shadow", "reset"]
    assert events[1]["actor"] == "admin api"
    # Shadowed requests were judged too (the SLM kept answering in the background).
    assert any(r["mode"] == "shadow" for r in _rows(tmp_path))


def test_verdicts_survive_a_ledger_that_is_down(tmp_path: Path, slm_upstream: StandinServer,
                                                llm_upstream: StandinServer, judge: StandinServer) -> None:
    judge.state.reply_fn = SCRIPTS["slm_better"]
    policy = _policy(tmp_path, slm_upstream, llm_upstream, judge)
    blocker = tmp_path / "l.sqlite"
    blocker.mkdir()  # the SQLite "file" is a directory: the store is down
    with BackgroundGateway(policy) as gw:
        _client(gw).chat.completions.create(model="auto", messages=SQL)
        deadline = time.monotonic() + 20
        while not list((tmp_path / "spill" / "audits").glob("spill-*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((tmp_path / "spill" / "audits").glob("spill-*")), "the verdict was not spilled"
    blocker.rmdir()  # the store is back: the next start replays the spilled verdict
    with BackgroundGateway(policy):
        rows = _wait_rows(tmp_path, 1)
    assert [r["verdict"] for r in rows] == ["win"]
    assert not list((tmp_path / "spill" / "audits").glob("spill-*"))


async def test_raise_threshold_steps_up_bounded_and_alert_leaves_routing_alone(
        slm_upstream: StandinServer, llm_upstream: StandinServer) -> None:
    from gateway.app import build_services
    from gateway.audit.guardrails import Guardrails
    from gateway.audit.hooks import guard
    from router.base import Decision

    doc = policy_dict(slm_upstream.base_url, llm_upstream.base_url)
    doc["audit"] = {"guardrails": {
        "sql": {"min_non_inferior": 0.9, "window": 10, "min_samples": 5, "action": "raise_threshold",
                "threshold_step": 0.2, "max_threshold": 0.95},
        "code": {"min_non_inferior": 0.9, "window": 10, "min_samples": 5, "action": "alert"}}}
    policy = parse_policy(doc)
    assert policy.audit is not None
    services = build_services(policy)
    guards = Guardrails(policy.audit, {"sql": 0.6, "code": 0.6}, store=None)
    services.guardrails = guards
    for _ in range(4):
        assert await guards.observe("sql", "loss") is None  # under min_samples: no action yet
    tripped = await guards.observe("sql", "loss")
    assert tripped is not None and tripped.action == "raise_threshold"
    assert tripped.threshold_delta == pytest.approx(0.2) and tripped.evidence["window"]["losses"] == 5
    plan = services.dispatcher.plan("sql", True)
    low, targets, shadowed = guard(services, Decision("slm", "sql", 0.7, "classified sql=0.70>=0.60"), plan)
    assert low.target == "llm" and "<0.80 (guardrail +0.20)" in low.reason and not shadowed
    assert [t.route for t in targets] == ["llm"]
    high, targets, _ = guard(services, Decision("slm", "sql", 0.85, "classified sql=0.85>=0.60"), plan)
    assert high.target == "slm" and targets == plan
    for _ in range(5):  # the window started afresh; five more losses step again, up to max_threshold
        await guards.observe("sql", "loss")
    assert guards.states()["sql"].threshold_delta == pytest.approx(0.35)
    for _ in range(4):  # wins and ties keep the rate high enough: no action
        await guards.observe("code", "win")
    assert await guards.observe("code", "tie") is None
    for _ in range(10):
        await guards.observe("code", "loss")
    assert guards.states()["code"].action == "alert"
    assert guards.state("code") is None  # an alert changes no routing
    await services.close()


def test_no_audit_process_when_nothing_is_sampled(tmp_path: Path, slm_upstream: StandinServer,
                                                  llm_upstream: StandinServer, judge: StandinServer) -> None:
    with BackgroundGateway(_policy(tmp_path, slm_upstream, llm_upstream, judge, sample_rate=0.0)) as gw:
        assert gw.app.state.services.auditor is None  # no process costing memory for nothing
        state = httpx.get(f"{gw.url}/admin/guardrails", headers=ADMIN).json()
        assert state["audit"] is None
        assert _client(gw).chat.completions.create(model="auto", messages=SQL).choices[0].message.content
