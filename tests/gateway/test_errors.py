"""Every error leaves in OpenAI's format with the status the openai SDK maps to its exception types."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from gateway.background import BackgroundGateway
from serving.standin import StandinServer
from tests.conftest import API_KEY

MSG = [{"role": "user", "content": "hello"}]
AUTH = {"authorization": f"Bearer {API_KEY}"}


def _assert_openai_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in err["message"]
    if code:
        assert err["code"] == code
    return err


def test_malformed_json_is_400(gateway: BackgroundGateway) -> None:
    resp = httpx.post(f"{gateway.base_url}/chat/completions", headers={**AUTH, "content-type": "application/json"},
                      content=b'{"model": "auto", "messages": [')
    err = _assert_openai_error(resp, 400, "invalid_request")
    assert "not valid JSON" in err["message"]


@pytest.mark.parametrize("body", [[1, 2], "text", 5])
def test_non_object_body_is_400(gateway: BackgroundGateway, body: Any) -> None:
    resp = httpx.post(f"{gateway.base_url}/chat/completions", headers=AUTH, json=body)
    _assert_openai_error(resp, 400)


def test_invalid_utf8_is_400(gateway: BackgroundGateway) -> None:
    resp = httpx.post(f"{gateway.base_url}/chat/completions", headers={**AUTH, "content-type": "application/json"},
                      content=b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe"}]}')
    _assert_openai_error(resp, 400)


def test_invalid_fields_are_400_in_the_sdk(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="auto", messages=[{"role": "wizard", "content": "x"}])
    assert info.value.status_code == 400
    assert info.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="auto", messages=MSG, temperature="hot")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="auto", messages=[])


def test_missing_key_is_401(gateway: BackgroundGateway) -> None:
    resp = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "auto", "messages": MSG})
    err = _assert_openai_error(resp, 401, "missing_api_key")
    assert err["type"] == "authentication_error"


def test_wrong_key_is_401_in_the_sdk(gateway: BackgroundGateway) -> None:
    wrong = openai.OpenAI(base_url=gateway.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.chat.completions.create(model="auto", messages=MSG)
    assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_unknown_model_is_404(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9-turbo", messages=MSG)
    assert info.value.code == "model_not_found"
    assert "gpt-9-turbo" in info.value.message


def test_body_over_limit_is_413(make_policy: Any, start_gateway: Any) -> None:
    gw = start_gateway(make_policy(server={"max_body_bytes": 2048}))
    big = [{"role": "user", "content": "x" * 5000}]
    client = openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="auto", messages=big)
    assert info.value.status_code == 413
    assert info.value.code == "request_too_large"
    # chunked upload without content-length is cut off too
    resp = httpx.post(f"{gw.base_url}/chat/completions", headers=AUTH,
                      content=iter([b'{"model": "auto", "messages": [{"role": "user", "content": "', b"y" * 4096,
                                    b'"}]}']))
    _assert_openai_error(resp, 413)


def test_all_backends_failed_is_503(client: Any, slm_upstream: StandinServer, llm_upstream: StandinServer) -> None:
    slm_upstream.state.fail_status = 500
    llm_upstream.state.fail_status = 503
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "sql query on a table"}])
    assert info.value.status_code == 503
    assert info.value.code == "no_backend_available"
    assert "Every backend failed (slm:sql, llm:llm)" in info.value.message
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="auto", messages=MSG, stream=True)
    assert info.value.status_code == 503


def test_llm_rejecting_the_request_is_passed_on_as_400(client: Any, llm_upstream: StandinServer) -> None:
    llm_upstream.state.fail_status = 400
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="auto", messages=MSG)
    assert "rejected the request" in info.value.message


def test_unknown_route_and_method(gateway: BackgroundGateway) -> None:
    _assert_openai_error(httpx.get(f"{gateway.base_url}/nothing-here", headers=AUTH), 404)
    _assert_openai_error(httpx.get(f"{gateway.base_url}/chat/completions", headers=AUTH), 405)


def test_too_many_messages_is_400(make_policy: Any, start_gateway: Any) -> None:
    gw = start_gateway(make_policy(server={"max_messages": 3}))
    client = openai.OpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="auto", messages=MSG * 4)
