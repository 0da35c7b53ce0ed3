"""The routing policy: strict validation with field paths, env interpolation, the shipped example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli import app
from gateway.config import PolicyError, interpolate, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "examples" / "policy.yaml"


def minimal(**extra: Any) -> dict[str, Any]:
    return {"llm_backends": {"llm": {"model": "openai/gpt-4o-mini"}}, "fallback": {"llm": "llm"}, **extra}


def test_interpolation_defaults_and_missing() -> None:
    env = {"A": "x", "EMPTY": ""}
    assert interpolate("${A}/${B:-d}/${EMPTY:-e}", env) == "x/d/e"
    with pytest.raises(PolicyError) as info:
        interpolate({"k": ["${NOPE}"]}, env)
    assert info.value.errors == ["k.0: environment variable NOPE is not set (or use ${NOPE:-default})"]


def test_example_policy_reads_the_documented_environment() -> None:
    policy = load_policy(EXAMPLE, env={"SLMGW_API_KEY": "k1"})
    assert [d.name for d in policy.domains] == ["sql", "code", "support", "math"]
    assert {b.model for b in policy.slm_backends.values()} == {"sql", "code", "support", "math"}
    assert {u for b in policy.slm_backends.values() for u in b.base_urls} == {"http://127.0.0.1:8000/v1"}
    assert policy.llm_backends["llm"].model == "openai/gpt-4o-mini"
    assert policy.llm_backends["llm"].api_base is None
    assert policy.auth.api_keys[0].key == "k1"
    env = {"SLMGW_API_KEY": "k1", "SLMGW_VLLM_URL": "http://gpu:9000/v1", "SLMGW_LLM_MODEL": "anthropic/claude",
           "SLMGW_LLM_API_BASE": "http://proxy/v1", "SLMGW_LLM_API_KEY": "sk-x"}
    policy = load_policy(EXAMPLE, env=env)
    assert policy.slm_backends["math"].base_urls == ["http://gpu:9000/v1"]
    assert (policy.llm_backends["llm"].model, policy.llm_backends["llm"].api_base,
            policy.llm_backends["llm"].api_key) == ("anthropic/claude", "http://proxy/v1", "sk-x")


def test_every_error_is_reported_with_its_path() -> None:
    doc = minimal(
        servr={"port": 1},
        server={"port": 70000},
        slm_backends={"s": {"base_url": "ftp://x", "model": "m", "contxt": 5}},
        domains=[{"name": "sql", "backend": "missing"}],
    )
    doc["fallback"] = {"llm": ["llm", "nope"]}
    with pytest.raises(PolicyError) as info:
        parse_policy(doc)
    errors = "\n".join(info.value.errors)
    assert "servr: unknown key" in errors
    assert "server.port:" in errors
    assert "slm_backends.s.contxt: unknown key" in errors
    assert "slm_backends.s.base_urls:" in errors
    # cross-references are checked once the fields themselves are valid
    doc = minimal(slm_backends={"s": {"base_url": "http://x", "model": "m"}},
                  domains=[{"name": "sql", "backend": "missing"}], fallback={"llm": ["llm", "nope"]})
    with pytest.raises(PolicyError) as info:
        parse_policy(doc)
    errors = "\n".join(info.value.errors)
    assert "domains.0.backend: unknown SLM backend 'missing'" in errors
    assert "fallback.llm.1: unknown LLM backend 'nope'" in errors


def test_classifier_router_needs_a_model_path() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(minimal(router={"kind": "classifier"}))
    assert "router" in info.value.errors[0] and "model_path" in info.value.errors[0]


def test_cli_validate_ok_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("SLMGW_API_KEY", "k")
    ok = runner.invoke(app, ["config", "validate", str(EXAMPLE)])
    assert ok.exit_code == 0, ok.output
    assert "OK (4 domains" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(minimal(router={"kind": "magic"}, extra_thing=1)))
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 2
    assert "router.kind:" in result.output and "extra_thing: unknown key" in result.output
    missing = runner.invoke(app, ["config", "validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "cannot read file" in missing.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    result = runner.invoke(app, ["config", "validate", str(broken)])
    assert result.exit_code == 2 and "not valid YAML" in result.output


def test_configuration_reference_matches_the_schema() -> None:
    from gateway.config_reference import render

    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == render(), "docs/configuration.md is stale: run `slmgw config reference > docs/configuration.md`"
    assert "| `max_body_bytes` |" in doc and "## `slm_backends.NAME`" in doc


def test_validate_and_serve_refuse_a_missing_router_model_and_unpriced_baseline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMGW_API_KEY", "k")
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["router"]["model_path"] = str(tmp_path / "missing.npz")
    doc["costs"] = {"baseline_llm": "acme/unknown-model-9"}
    bad = tmp_path / "policy.yaml"
    bad.write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    for args in (["config", "validate", str(bad)], ["serve", "--config", str(bad)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "router: router model" in result.output and "file not found" in result.output
        assert "costs:" in result.output and "acme/unknown-model-9" in result.output
        assert "Traceback" not in result.output
