"""No gateway is left open by accident (issue 13): without client keys, `slmgw serve` refuses a
non-loopback address unless the policy says ``auth.open: true``; a key whose variable is unset or empty
is a validation error, not a silently dropped entry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.cli import open_gateway_problem
from gateway.config import PolicyError, parse_policy

MINIMAL = {"llm_backends": {"llm": {"model": "openai/gpt-4o-mini"}}, "fallback": {"llm": ["llm"]}}


def _policy(auth: dict[str, object]) -> object:
    return parse_policy({**MINIMAL, "auth": auth}, env={})


def test_no_keys_on_a_public_address_is_refused_unless_open(tmp_path: Path) -> None:
    assert open_gateway_problem(_policy({}), "0.0.0.0") is not None
    assert open_gateway_problem(_policy({}), "192.168.1.5") is not None
    assert open_gateway_problem(_policy({}), "::") is not None
    assert open_gateway_problem(_policy({}), "127.0.0.1") is None
    assert open_gateway_problem(_policy({}), "::1") is None
    assert open_gateway_problem(_policy({}), "localhost") is None
    assert open_gateway_problem(_policy({"open": True}), "0.0.0.0") is None
    assert open_gateway_problem(_policy({"api_keys": ["k"]}), "0.0.0.0") is None
    assert open_gateway_problem(_policy({"key_store": {"enabled": True}}), "0.0.0.0") is None
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "ledger": {"url": f"sqlite:///{tmp_path / 'l.sqlite'}"}}))
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--host",
                             "0.0.0.0", "--port", "9"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "auth.open: true" in result.stderr and "warning: no client keys" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("auth", [
    {"api_keys": ["${SLMGW_TEST_UNSET_KEY:-}"]},
    {"api_keys": [{"key": "${SLMGW_TEST_UNSET_KEY:-}", "tenant": "a"}]},
    {"api_keys": [{"key": "${SLMGW_TEST_EMPTY_KEY}", "tenant": "a"}]},
    {"api_keys": ["k"], "admin_keys": ["${SLMGW_TEST_UNSET_KEY:-}"]},
])
def test_a_key_from_an_unset_or_empty_variable_is_an_error(auth: dict[str, object]) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy({**MINIMAL, "auth": auth}, env={"SLMGW_TEST_EMPTY_KEY": ""})
    text = str(err.value)
    assert "auth." in text and ("empty" in text or "not set" in text), text
