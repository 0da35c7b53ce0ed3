"""Hostile and malformed requests get 4xx in OpenAI's error format, never 500; every upstream call has
a timeout."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway.background import BackgroundGateway
from gateway.config import Policy
from gateway.errors import InvalidRequest
from gateway.hardening import MAX_DEPTH, check_json_shape
from tests.conftest import API_KEY

HEADERS = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}


@pytest.fixture(scope="module")
def gw(slm_upstream: object, llm_upstream: object,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundGateway]:
    from gateway.config import parse_policy
    from tests.conftest import policy_dict

    tmp = tmp_path_factory.mktemp("hardening")
    doc = policy_dict(slm_upstream.base_url, llm_upstream.base_url,  # type: ignore[attr-defined]
                      server={"max_body_bytes": 64 * 1024, "max_messages": 8},
                      ledger={"url": f"sqlite+aiosqlite:///{tmp / 'l.sqlite'}"})
    with BackgroundGateway(parse_policy(doc, base_dir=str(tmp))) as g:
        yield g


def _nested(depth: int) -> bytes:
    return b'{"model":"auto","messages":[{"role":"user","content":"hi"}],"x":' + b"[" * depth + b"]" * depth + b"}"


MSG = b'"messages":[{"role":"user","content":"hi"}]'
CASES: list[tuple[str, bytes, int]] = [
    ("invalid utf-8", b'{"model":"auto",' + MSG[:-3] + b'\xff\xfe"}]}', 400),
    ("lone surrogate", b'{"model":"auto",' + MSG[:-3] + b'\\ud800"}]}', 400),
    ("truncated", b'{"model":"auto",' + MSG[:-2], 400),
    ("empty body", b"", 400),
    ("top-level array", b"[1,2,3]", 400),
    ("top-level string", b'"hello"', 400),
    ("NaN", b'{"model":"auto",' + MSG + b',"temperature":NaN}', 400),
    ("nesting 100", _nested(100), 400),
    ("nesting 5000", _nested(5000), 400),
    ("messages not a list", b'{"model":"auto","messages":"hi"}', 400),
    ("content a number", b'{"model":"auto","messages":[{"role":"user","content":5}]}', 400),
    ("message a list", b'{"model":"auto","messages":[[1]]}', 400),
    ("role unknown", b'{"model":"auto","messages":[{"role":"root","content":"x"}]}', 400),
    ("model a dict", b'{"model":{"a":1},' + MSG + b"}", 400),
    ("model empty", b'{"model":"",' + MSG + b"}", 400),
    ("max_tokens a string", b'{"model":"auto",' + MSG + b',"max_tokens":"9"}', 400),
    ("max_tokens huge", b'{"model":"auto",' + MSG + b',"max_tokens":1' + b"0" * 40 + b"}", 400),
    ("n negative", b'{"model":"auto",' + MSG + b',"n":-1}', 400),
    ("stream a string", b'{"model":"auto",' + MSG + b',"stream":"yes"}', 400),
    ("too many messages", b'{"model":"auto","messages":[' + b",".join([b'{"role":"user","content":"a"}'] * 9)
     + b"]}", 400),
    ("content parts of junk", b'{"model":"auto","messages":[{"role":"user","content":[{"type":"x"},{}]}]}', 400),
    ("text part not a string",
     b'{"model":"auto","messages":[{"role":"user","content":[{"type":"text","text":1}]}]}', 400),
    ("text parts", b'{"model":"auto","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}', 200),
    ("huge string", b'{"model":"auto","messages":[{"role":"user","content":"' + b"a" * 70_000 + b'"}]}', 413),
    ("unknown model", b'{"model":"gpt-9",' + MSG + b"}", 404),
]


@pytest.mark.parametrize(("name", "raw", "status"), CASES, ids=[c[0] for c in CASES])
def test_hostile_chat_bodies(gw: BackgroundGateway, name: str, raw: bytes, status: int) -> None:
    resp = httpx.post(f"{gw.base_url}/chat/completions", content=raw, headers=HEADERS, timeout=30)
    assert resp.status_code == status, resp.text
    if status >= 400:
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/embeddings"])
def test_other_endpoints_refuse_junk(gw: BackgroundGateway, path: str) -> None:
    for raw in (b'{"model":"auto","prompt":[[["x"]]]}', b'{"model":"auto","input":{"a":1}}', _nested(300),
                b'{"model":"auto","prompt":' + b"1" * 400 + b"}"):
        resp = httpx.post(f"{gw.url}{path}", content=raw, headers=HEADERS, timeout=30)
        assert resp.status_code == 400, (raw[:60], resp.text)


def test_declared_length_over_limit_is_413_before_reading(gw: BackgroundGateway) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + API_KEY.encode() + b"\r\ncontent-length: 99999999\r\n\r\n{")
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"


def test_shape_check_limits() -> None:
    check_json_shape({"a": [[[1]]]})
    deep: object = []
    for _ in range(MAX_DEPTH):
        deep = [deep]
    with pytest.raises(InvalidRequest, match="nested deeper"):
        check_json_shape({"x": deep})
    with pytest.raises(InvalidRequest, match="more than 10"):
        check_json_shape({"x": list(range(20))}, max_nodes=10)


def test_every_upstream_call_has_a_timeout(make_policy: object) -> None:
    # The policy schema gives every backend a finite timeout, and the clients pass them on.
    import inspect

    import serving.llm
    import serving.slm
    from gateway.config import LimitsConfig, LlmBackend, SlmBackend

    assert SlmBackend.model_fields["timeout_s"].default > 0
    assert SlmBackend.model_fields["connect_timeout_s"].default > 0
    assert LlmBackend.model_fields["timeout_s"].default > 0
    assert LimitsConfig.model_fields["redis_timeout_ms"].default > 0
    slm_source = inspect.getsource(serving.slm)
    assert "connect_s=backend.connect_timeout_s, read_s=backend.timeout_s" in slm_source
    assert 'args["timeout"] = backend.timeout_s' in inspect.getsource(serving.llm)


def test_slow_slm_times_out_and_escalates(make_policy: object, start_gateway: object, slm_upstream: object) -> None:
    from collections.abc import Callable

    assert callable(make_policy) and callable(start_gateway)
    mk: Callable[..., Policy] = make_policy
    policy = mk()
    slm = {name: {**b.model_dump(mode="json", exclude_none=True), "timeout_s": 0.3}
           for name, b in policy.slm_backends.items()}
    gw = start_gateway(mk(slm_backends=slm))
    slm_upstream.state.delay_s = 3.0  # type: ignore[attr-defined]
    resp = httpx.post(f"{gw.base_url}/chat/completions", headers=HEADERS, timeout=30,
                      json={"model": "sql", "messages": [{"role": "user", "content": "select 1"}]})
    assert resp.status_code == 200 and resp.headers["x-slmgw-route"] == "llm"
    assert "slm_timeout" in resp.headers["x-slmgw-reason"]
