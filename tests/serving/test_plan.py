"""`slmgw serving plan`: vLLM launch plans built from a policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gateway.config import parse_policy
from serving.cli import app
from serving.plan import PlanError, build_plan, render

BASE = "meta-llama/Llama-3.2-1B-Instruct"


def policy(slm: dict[str, Any], domains: list[dict[str, str]] | None = None) -> Any:
    return parse_policy({
        "slm_backends": slm,
        "llm_backends": {"gpt": {"model": "openai/gpt-4o-mini"}},
        "domains": domains if domains is not None else [{"name": n, "backend": n} for n in slm],
        "fallback": {"llm": "gpt"},
    })


def adapter(name: str, urls: list[str], **kw: Any) -> dict[str, Any]:
    return {"base_urls": urls, "model": name, "base_model": BASE, "adapter_path": f"/adapters/{name}", **kw}


def test_adapters_sharing_servers_make_one_plan_with_replicas() -> None:
    urls = ["http://vllm-a:8000/v1", "http://vllm-b:8000/v1"]
    plans = build_plan(policy({
        "sql": adapter("sql", urls, context_length=4096, lora_rank=8),
        "code": adapter("code", urls, context_length=8192, lora_rank=32),
    }))
    assert len(plans) == 1
    p = plans[0]
    assert p.replicas == urls
    assert p.base_model == BASE
    assert p.served_names == ["sql", "code"]
    assert p.domains == ["sql", "code"]
    assert p.max_model_len == 8192  # one window per server: the largest any backend on it needs
    a = p.args
    assert a[:2] == ["--model", BASE]
    i = a.index("--lora-modules")
    assert a[i + 1:i + 3] == ["sql=/adapters/sql", "code=/adapters/code"]
    assert a[a.index("--max-loras") + 1] == "2"
    assert a[a.index("--max-lora-rank") + 1] == "32"
    assert a[a.index("--max-model-len") + 1] == "8192"
    assert a[a.index("--port") + 1] == "8000"
    assert "--enable-lora" in a
    assert p.command()[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]


def test_base_model_served_under_its_name_and_separate_servers() -> None:
    plans = build_plan(policy({
        "sql": adapter("sql", ["http://gpu1:8000/v1"]),
        "chat": {"base_url": "http://gpu2:9000/v1", "model": "qwen-small",
                 "base_model": "Qwen/Qwen2.5-0.5B-Instruct", "context_length": 2048},
    }))
    assert [p.replicas for p in plans] == [["http://gpu1:8000/v1"], ["http://gpu2:9000/v1"]]
    chat = plans[1]
    assert chat.args[:4] == ["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--served-model-name", "qwen-small"]
    assert "--enable-lora" not in chat.args
    assert chat.args[chat.args.index("--port") + 1] == "9000"
    assert "--max-lora-rank" not in plans[0].args  # no rank given: vLLM's default


def test_base_and_adapters_on_one_server() -> None:
    url = ["http://vllm:8000/v1"]
    (p,) = build_plan(policy({
        "base": {"base_urls": url, "model": "llama", "base_model": BASE},
        "sql": adapter("sql", url),
    }))
    assert p.served_names == ["llama", "sql"]
    assert p.args[p.args.index("--served-model-name") + 1] == "llama"


def test_api_key_is_never_printed() -> None:
    pol = policy({"sql": adapter("sql", ["http://vllm:8000/v1"], api_key="sk-very-secret")})
    (p,) = build_plan(pol)
    assert p.env == ["VLLM_API_KEY"]
    for fmt in ("text", "json", "yaml"):
        out = render([p], fmt)
        assert "sk-very-secret" not in out
        assert "VLLM_API_KEY" in out


def test_extra_vllm_args_once_per_server() -> None:
    url = ["http://vllm:8000/v1"]
    (p,) = build_plan(policy({
        "sql": adapter("sql", url, vllm_args=["--tensor-parallel-size", "2"]),
        "code": adapter("code", url, vllm_args=["--tensor-parallel-size", "2", "--enforce-eager"]),
    }))
    assert p.args[-3:] == ["--tensor-parallel-size", "2", "--enforce-eager"]


@pytest.mark.parametrize(("slm", "message"), [
    ({"sql": adapter("sql", ["http://v:8000/v1"]),
      "code": adapter("code", ["http://v:8000/v1"], base_model="other/model")}, "one base model"),
    ({"sql": {"base_url": "http://v:8000/v1", "model": "sql", "adapter_path": "/a/sql"}}, "base_model"),
    ({"sql": adapter("sql", ["http://v:8000/v1"]),
      "sql2": adapter("sql", ["http://v:8000/v1"], adapter_path="/elsewhere")}, "two paths"),
    ({"base": {"base_url": "http://v:8000/v1", "model": "sql", "base_model": BASE},
      "sql": adapter("sql", ["http://v:8000/v1"])}, "also the base model"),
])
def test_inconsistent_servers_are_errors(slm: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        build_plan(policy(slm, domains=[]))


def test_cli_text_and_json(tmp_path: Path) -> None:
    cfg = tmp_path / "policy.yaml"
    cfg.write_text(yaml.safe_dump({
        "slm_backends": {"sql": adapter("sql", ["http://vllm:8000/v1"]),
                         "code": adapter("code", ["http://vllm:8000/v1"])},
        "llm_backends": {"gpt": {"model": "openai/gpt-4o-mini"}},
        "domains": [{"name": "sql", "backend": "sql"}, {"name": "code", "backend": "code"}],
        "fallback": {"llm": "gpt"},
    }, sort_keys=False))
    runner = CliRunner()
    res = runner.invoke(app, ["plan", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "python -m vllm.entrypoints.openai.api_server --model" in res.output
    assert "--lora-modules sql=/adapters/sql code=/adapters/code" in res.output
    res = runner.invoke(app, ["plan", "--config", str(cfg), "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data[0]["served_names"] == ["sql", "code"]
    assert data[0]["container_args"][0] == "--model"
    res = runner.invoke(app, ["plan", "--config", str(cfg), "--format", "yaml"])
    assert yaml.safe_load(res.output)[0]["replicas"] == ["http://vllm:8000/v1"]


def test_cli_reports_bad_policy(tmp_path: Path) -> None:
    cfg = tmp_path / "policy.yaml"
    cfg.write_text("slm_backends: {}\nfallback: {llm: nope}\n")
    res = CliRunner().invoke(app, ["plan", "--config", str(cfg)])
    assert res.exit_code == 2
    assert "llm_backends" in res.output
