"""A client that leaves in the middle of a stream: the gateway stops reading the upstream at once,
records the request as 499 client_disconnected, and goes on serving."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.background import BackgroundGateway
from gateway.config import Policy
from serving.standin import StandinServer
from tests.conftest import API_KEY


def _row(db: str, request_id: str, wait_s: float = 10.0) -> sqlite3.Row | None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if Path(db).exists():
            with sqlite3.connect(db) as conn:
                conn.row_factory = sqlite3.Row
                try:
                    row: sqlite3.Row | None = conn.execute(
                        "SELECT * FROM slmgw_requests WHERE request_id = ?", (request_id,)).fetchone()
                except sqlite3.OperationalError:  # table not created yet
                    row = None
            if row is not None:
                return row
        time.sleep(0.1)
    return None


def test_client_leaving_mid_stream_is_recorded_and_cuts_the_upstream(
        make_policy: Callable[..., Policy], start_gateway: Callable[[Policy], BackgroundGateway],
        slm_upstream: StandinServer, tmp_path: Path) -> None:
    gw = start_gateway(make_policy(ledger={"url": f"sqlite:///{tmp_path / 'l.sqlite'}", "flush_interval_s": 0.1}))
    slm_upstream.state.chunk_delay_s = 0.3  # ten words: a three-second stream
    try:
        body = {"model": "sql", "stream": True, "messages": [{"role": "user", "content": "count the orders"}]}
        headers = {"authorization": f"Bearer {API_KEY}", "x-request-id": "req-leaves-early"}
        with httpx.Client(timeout=10) as client:
            with client.stream("POST", f"{gw.base_url}/chat/completions", json=body, headers=headers) as resp:
                assert resp.status_code == 200
                first = next(resp.iter_lines())
                assert first.startswith("data: {")
            # leaving the block closes the connection with the stream still running upstream
            after = client.post(f"{gw.base_url}/chat/completions", headers=headers | {"x-request-id": "req-next"},
                                json={"model": "sql", "messages": [{"role": "user", "content": "hi"}]})
            assert after.status_code == 200
    finally:
        slm_upstream.state.chunk_delay_s = 0.0
    row = _row(str(tmp_path / "l.sqlite"), "req-leaves-early")
    assert row is not None, "the abandoned stream has no ledger row"
    assert row["status"] == 499 and row["error_code"] == "client_disconnected"
    assert row["latency_ms"] < 1500, f"the gateway kept reading the upstream for {row['latency_ms']:.0f} ms"
