"""Sensitive-data detection (checksums included) and the two actions through a running gateway:
keep_local never reaches the hosted LLM (503 when the SLM fails), mask rewrites what the LLM sees.
The reason is in x-slmgw-reason and in the ledger row."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from gateway.background import BackgroundGateway
from gateway.config import Policy, PolicyError, parse_policy
from gateway.privacy import Privacy, iban_ok, luhn_ok
from serving.standin import StandinServer
from tests.conftest import API_KEY

CARD = "4111 1111 1111 1111"  # Visa test number (passes Luhn)
IBAN = "DE89 3704 0044 0532 0130 00"  # the standard example IBAN (passes mod-97)
GENERAL = "Tell me a short story about a lighthouse keeper."


def _privacy(**cfg: Any) -> Privacy:
    doc = {"llm_backends": {"llm": {"model": "openai/gpt-4o-mini"}}, "fallback": {"llm": "llm"},
           "privacy": {"action": "mask", **cfg}}
    return Privacy(parse_policy(doc, env={}))


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")
    assert iban_ok(IBAN) and iban_ok("GB82WEST12345698765432")
    assert not iban_ok("DE89 3704 0044 0532 0130 01") and not iban_ok("GB82WEST1234569876543X")


@pytest.mark.parametrize(("text", "kinds"), [
    ("write to jane.doe+x@example.co.uk please", ["email"]),
    (f"my card is {CARD}", ["card"]),
    ("card 4111-1111-1111-1111 exp 12/29", ["card"]),
    (f"IBAN {IBAN}", ["iban"]),
    ("iban gb82west12345698765432", ["iban"]),
    ("call +44 20 7946 0958 or (555) 123-4567", ["phone"]),
    ("phone 555-123-4567", ["phone"]),
    ("order 4111 1111 1111 1112 failed", []),  # fails Luhn: just a number
    ("SELECT * FROM t WHERE id = 1234567890123", []),
    ("on 2024-01-15 at 10:30 we sold 1,234 units", []),
    ("version 3.11.4, port 8080", []),
    ("DE89 3704 0044 0532 0130 01", []),  # mod-97 fails
    ("user@localhost is not an address", []),
])
def test_detection(text: str, kinds: list[str]) -> None:
    found = _privacy().kinds({"messages": [{"role": "user", "content": text}]})
    assert found == kinds


def test_masking_and_custom_patterns() -> None:
    p = _privacy(detectors=["email", "card"], patterns=[{"name": "employee_id", "regex": r"\bEMP-\d{6}\b"}])
    body = {"model": "auto", "messages": [
        {"role": "user", "content": [{"type": "text", "text": f"I am EMP-123456, mail a@b.io, card {CARD}."}]}]}
    masked = p.mask(body)
    assert masked["messages"][0]["content"][0]["text"] == "I am [EMPLOYEE_ID], mail [EMAIL], card [CARD]."
    assert body["messages"][0]["content"][0]["text"].startswith("I am EMP-123456")  # the original is untouched
    assert p.kinds({"prompt": ["a", "x@y.com"]}) == ["email"]


def test_policy_checks() -> None:
    doc: dict[str, Any] = {"llm_backends": {"llm": {"model": "openai/gpt-4o-mini"}}, "fallback": {"llm": "llm"}}
    with pytest.raises(PolicyError, match=r"privacy\.patterns\.0\.regex"):
        parse_policy({**doc, "privacy": {"patterns": [{"name": "x", "regex": "("}]}}, env={})
    with pytest.raises(PolicyError, match=r"privacy\.local_backend"):
        parse_policy({**doc, "privacy": {"action": "keep_local", "local_backend": "nope"}}, env={})


def _post(gw: BackgroundGateway, content: str, model: str = "auto") -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {API_KEY}"},
                      json={"model": model, "messages": [{"role": "user", "content": content}]}, timeout=30)


def _ledger(gw: BackgroundGateway) -> dict[str, dict[str, Any]]:
    gw.stop()  # drains the ledger
    db = make_url(gw.policy.ledger.url).database
    assert db is not None
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM slmgw_requests")}


def test_keep_local_never_reaches_the_hosted_llm(make_policy: Callable[..., Policy],
                                                 start_gateway: Callable[[Policy], BackgroundGateway],
                                                 slm_upstream: StandinServer, llm_upstream: StandinServer) -> None:
    gw = start_gateway(make_policy(privacy={"action": "keep_local", "local_backend": "support"}))
    llm_upstream.state.requests.clear()
    plain = _post(gw, GENERAL)
    assert plain.headers["x-slmgw-route"] == "llm"  # no sensitive data: routed as usual
    assert len(llm_upstream.state.requests) == 1

    sensitive = _post(gw, f"{GENERAL} My email is jane@example.com and card {CARD}.")
    assert sensitive.status_code == 200
    assert sensitive.headers["x-slmgw-route"] == "slm" and sensitive.headers["x-slmgw-model"] == "support"
    assert sensitive.headers["x-slmgw-reason"].startswith("privacy:keep_local[card,email]")
    # Asking for the hosted model by name does not get around the rule either.
    named = _post(gw, "reach me at +1 (555) 123-4567 please", model="llm")
    assert named.headers["x-slmgw-route"] == "slm"
    assert len(llm_upstream.state.requests) == 1

    # The SLM fails: 503 with the reason, and still nothing goes to the LLM.
    slm_upstream.state.fail_status = 500
    failed = _post(gw, "my email is jane@example.com, fix this SQL query join")
    assert failed.status_code == 503
    err = failed.json()["error"]
    assert err["code"] == "sensitive_data_kept_local" and "not sent to a hosted LLM" in err["message"]
    assert failed.headers["x-slmgw-reason"] == "privacy:keep_local[email]"
    assert len(llm_upstream.state.requests) == 1

    rows = _ledger(gw)
    row = rows[sensitive.headers["x-request-id"]]
    assert row["reason"].startswith("privacy:keep_local[card,email]") and row["route"] == "slm"
    assert json.loads(row["extra"])["privacy"] == "card,email"
    assert next(r for r in rows.values() if r["status"] == 503)["extra"].count("email") == 1


def test_keep_local_without_a_local_model_refuses(make_policy: Callable[..., Policy],
                                                  start_gateway: Callable[[Policy], BackgroundGateway],
                                                  llm_upstream: StandinServer) -> None:
    gw = start_gateway(make_policy(privacy={"action": "keep_local"}))
    llm_upstream.state.requests.clear()
    resp = _post(gw, f"{GENERAL} IBAN {IBAN}")
    assert resp.status_code == 503 and "sensitive data (iban)" in resp.json()["error"]["message"]
    assert llm_upstream.state.requests == []


def test_mask_rewrites_what_the_llm_sees(make_policy: Callable[..., Policy],
                                         start_gateway: Callable[[Policy], BackgroundGateway],
                                         llm_upstream: StandinServer) -> None:
    gw = start_gateway(make_policy(privacy={"action": "mask"}))
    llm_upstream.state.requests.clear()
    resp = _post(gw, f"{GENERAL} Charge {CARD} and mail jane@example.com.")
    assert resp.status_code == 200 and resp.headers["x-slmgw-route"] == "llm"
    assert resp.headers["x-slmgw-reason"].startswith("privacy:mask[card,email]")
    sent = json.dumps(llm_upstream.state.requests[-1])
    assert CARD not in sent and "jane@example.com" not in sent
    assert "Charge [CARD] and mail [EMAIL]." in sent
    row = _ledger(gw)[resp.headers["x-request-id"]]
    assert row["reason"].startswith("privacy:mask[card,email]")
