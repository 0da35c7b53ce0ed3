"""Checks of deploy/: each returns a list of problems (empty when fine), so tests can also run them on a
deliberately broken copy and see them fail.

Kustomize: rendered with ``kubectl kustomize`` (kubectl ships kustomize; it is in this machine image's
Debian packages) or a standalone ``kustomize`` binary, whichever is on PATH. Kubernetes schemas: the PyPI
package ``kubernetes-validate``, which ships them (no network). CRDs are not in those schemas: the
ServiceMonitor is checked against ``schemas/servicemonitor-v1.json`` (the fields used here).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
POLICY = K8S / "base" / "policy.cluster.yaml"
SCHEMAS = Path(__file__).parent / "schemas"
# Kubernetes versions the manifests must be valid for: the oldest still commonly run and the newest
# schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", "latest")
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-v1.json"}
# Values the cluster policy needs from the environment (placeholders, as in the Secret templates).
POLICY_ENV = {
    "SLMGW_API_KEY": "REPLACE_ME-client-key",
    "SLMGW_ADMIN_KEY": "REPLACE_ME-admin-key",
    "SLMGW_LEDGER_URL": "postgresql+asyncpg://slmgw:REPLACE_ME@postgres:5432/slmgw",
}


# -- kustomize -------------------------------------------------------------------------------------------

def kustomize_command() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def render(kustomization_dir: Path) -> list[dict[str, Any]]:
    """The overlay's manifests; raises RuntimeError with kustomize's message when it cannot render."""
    cmd = kustomize_command()
    if cmd is None:
        raise RuntimeError("neither kubectl nor kustomize is on PATH")
    proc = subprocess.run([*cmd, str(kustomization_dir)], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kustomize failed for {kustomization_dir}: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(hits) != 1:
        raise LookupError(f"expected one {kind} {name or ''}, found {len(hits)}")
    return hits[0]


def schema_problems(docs: list[dict[str, Any]], versions: tuple[str, ...] = K8S_VERSIONS) -> list[str]:
    """Validate every manifest against the Kubernetes schemas (strict: unknown fields are errors), CRDs
    against their schema here. A kind with no schema at all is a problem too."""
    import jsonschema
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    problems: list[str] = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        crd = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
        if crd is not None:
            schema = json.loads(crd.read_text(encoding="utf-8"))
            validator = jsonschema.Draft202012Validator(schema)
            problems += [f"{where}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                         for e in validator.iter_errors(doc)]
            continue
        for version in versions:
            v = latest_version() if version == "latest" else version
            try:
                kubernetes_validate.validate(doc, v, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in getattr(exc, "path", []))
                problems.append(f"{where} (k8s {v}): {path}: {getattr(exc, 'message', exc)}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{where}: no schema for {doc.get('apiVersion')} {doc.get('kind')} (k8s {v})")
    return problems


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def reference_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Names that must line up after rendering: selectors, ConfigMaps, Secrets, PVCs, ports, HPA target."""
    problems: list[str] = []
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for w in workloads:
        wname = f"{w['kind']}/{w['metadata']['name']}"
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        if not _matches(w["spec"]["selector"].get("matchLabels", {}), labels):
            problems.append(f"{wname}: selector does not match its pod labels")
        pod = _pod_spec(w)
        for vol in pod.get("volumes", []):
            if "configMap" in vol and ("ConfigMap", vol["configMap"]["name"]) not in names:
                problems.append(f"{wname}: volume {vol['name']}: ConfigMap {vol['configMap']['name']} missing")
            if "persistentVolumeClaim" in vol and (
                    "PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]) not in names:
                problems.append(f"{wname}: volume {vol['name']}: PVC missing")
        for c in pod["containers"]:
            for ref in c.get("envFrom", []):
                if "secretRef" in ref and ("Secret", ref["secretRef"]["name"]) not in names:
                    problems.append(f"{wname}: envFrom Secret {ref['secretRef']['name']} missing")
            for env in c.get("env", []):
                sk = env.get("valueFrom", {}).get("secretKeyRef")
                if sk and not sk.get("optional") and not _secret_has(docs, sk["name"], sk["key"]):
                    problems.append(f"{wname}: env {env['name']}: Secret key {sk['name']}/{sk['key']} missing")
    for svc in (d for d in docs if d["kind"] == "Service"):
        sel = svc["spec"].get("selector", {})
        pods = [w for w in workloads if _matches(sel, w["spec"]["template"]["metadata"].get("labels", {}))]
        if not pods:
            problems.append(f"Service/{svc['metadata']['name']}: selects no workload")
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str) and not any(
                    p.get("name") == target for w in pods for c in _pod_spec(w)["containers"]
                    for p in c.get("ports", [])):
                problems.append(f"Service/{svc['metadata']['name']}: targetPort {target} is no container port")
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) not in names:
            problems.append(f"HPA/{hpa['metadata']['name']}: target {ref['kind']}/{ref['name']} missing")
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(_matches(sel, w["spec"]["template"]["metadata"].get("labels", {})) for w in workloads):
            problems.append(f"PDB/{pdb['metadata']['name']}: selects no pods")
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        sel = sm["spec"]["selector"].get("matchLabels", {})
        svcs = [s for s in docs if s["kind"] == "Service" and _matches(sel, s["metadata"].get("labels", {}))]
        if not svcs:
            problems.append(f"ServiceMonitor/{sm['metadata']['name']}: selects no Service")
        for ep in sm["spec"]["endpoints"]:
            if not any(p.get("name") == ep.get("port") for s in svcs for p in s["spec"]["ports"]):
                problems.append(f"ServiceMonitor/{sm['metadata']['name']}: port {ep.get('port')} not on the Service")
            cred = ep.get("authorization", {}).get("credentials")
            if cred and not _secret_has(docs, cred["name"], cred["key"]):
                problems.append(f"ServiceMonitor/{sm['metadata']['name']}: Secret key {cred['name']}/"
                                f"{cred['key']} missing")
    return problems


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _secret_has(docs: list[dict[str, Any]], name: str, key: str) -> bool:
    return any(d["kind"] == "Secret" and d["metadata"]["name"] == name
               and key in {**d.get("data", {}), **d.get("stringData", {})} for d in docs)


# -- the policy and vLLM's args ---------------------------------------------------------------------------

def plan_args(policy_text: str, env: dict[str, str] | None = None) -> list[list[str]]:
    """Container args of every vLLM server `slmgw serving plan` derives from the policy."""
    from gateway.config import parse_policy
    from serving.plan import build_plan

    policy = parse_policy(yaml.safe_load(policy_text), "policy", str(POLICY.parent), env or POLICY_ENV)
    return [p.args for p in build_plan(policy)]


# -- docker-compose ----------------------------------------------------------------------------------------

_REQUIRED_VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*):?\?")


def compose_problems(compose_file: Path) -> list[str]:
    """Structure of a compose file and that what it references exists (no Docker engine needed)."""
    base = compose_file.parent
    text = compose_file.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    problems: list[str] = []
    services: dict[str, Any] = data.get("services") or {}
    volumes = set((data.get("volumes") or {}).keys())
    secrets = set((data.get("secrets") or {}).keys())
    for name, svc in services.items():
        if not svc.get("image") and not svc.get("build"):
            problems.append(f"services.{name}: neither image nor build")
        build = svc.get("build")
        if build:
            ctx = base / build.get("context", ".")
            if not ctx.is_dir():
                problems.append(f"services.{name}.build.context: {ctx} is not a directory")
            elif not (ctx / build.get("dockerfile", "Dockerfile")).is_file():
                problems.append(f"services.{name}.build.dockerfile: not found in {ctx}")
        for i, vol in enumerate(svc.get("volumes", [])):
            source = (vol.split(":")[0] if isinstance(vol, str) else vol.get("source", ""))
            where = f"services.{name}.volumes.{i}"
            if source.startswith((".", "/")):
                if not (base / source).exists():
                    problems.append(f"{where}: {source} does not exist")
            elif source.startswith("${"):
                continue  # a user-supplied path (documented in env.example)
            elif source not in volumes:
                problems.append(f"{where}: named volume {source!r} is not declared under volumes")
        for s in svc.get("secrets", []):
            sname = s if isinstance(s, str) else s.get("source")
            if sname not in secrets:
                problems.append(f"services.{name}.secrets: {sname!r} is not declared under secrets")
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                problems.append(f"services.{name}.depends_on: unknown service {dep!r}")
    env_example = base / "env.example"
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", env_example.read_text(encoding="utf-8"), re.M)) \
        if env_example.is_file() else set()
    for var in sorted(set(_REQUIRED_VAR.findall(text)) - documented):
        problems.append(f"required variable {var} is not in {env_example.name}")
    return problems


# -- Prometheus and Grafana --------------------------------------------------------------------------------

_METRIC = re.compile(r"\b(slmgw_[a-z0-9_]+)")
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def defined_metrics(source_dirs: tuple[Path, ...] = (ROOT / "gateway", ROOT / "serving")) -> set[str]:
    """``slmgw_*`` metric names given as string literals to prometheus_client in the gateway's code."""
    found: set[str] = set()
    for d in source_dirs:
        for py in d.rglob("*.py"):
            text = py.read_text(encoding="utf-8")
            if "prometheus_client" not in text:
                continue
            found.update(re.findall(r"[\"'](slmgw_[a-z0-9_]+)[\"']", text))
    return found


def dashboard_metric_problems(dashboard: dict[str, Any], defined: set[str]) -> list[str]:
    """Every slmgw_* series a panel queries must be one the gateway exports (suffixes as exposed)."""
    problems: list[str] = []
    for expr in _exprs(dashboard):
        for name in _METRIC.findall(expr):
            base = name
            for suffix in _SUFFIXES:
                if name.endswith(suffix) and name.removesuffix(suffix) in defined:
                    base = name.removesuffix(suffix)
                    break
            if base not in defined:
                problems.append(f"{name} (in {expr!r}) is not a metric defined in gateway/ or serving/")
    return problems


def _exprs(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                out.append(v)
            else:
                out.extend(_exprs(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(_exprs(v))
    return out


# -- Dockerfile ----------------------------------------------------------------------------------------------

def hadolint_command() -> list[str] | None:
    import sys

    local = Path(sys.executable).parent / "hadolint"
    if local.is_file():
        return [str(local)]
    found = shutil.which("hadolint")
    return [found] if found else None


def hadolint(dockerfile: Path) -> tuple[int, str]:
    cmd = hadolint_command()
    assert cmd is not None
    proc = subprocess.run([*cmd, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60,
                          check=False)
    return proc.returncode, proc.stdout + proc.stderr


def dockerfile_problems(text: str) -> list[str]:
    """What the gateway image must have, beyond what hadolint checks."""
    lines = [ln.strip() for ln in text.replace("\\\n", " ").splitlines() if ln.strip() and not ln.startswith("#")]
    problems: list[str] = []
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    if len(froms) < 2:
        problems.append("not a multi-stage build")
    users = [ln.split(None, 1)[1] for ln in lines if ln.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final stage does not switch to a non-root USER")
    health = [ln for ln in lines if ln.upper().startswith("HEALTHCHECK ")]
    if not health or "/health/live" not in health[-1]:
        problems.append("no HEALTHCHECK on /health/live")
    entry = [ln for ln in lines if ln.upper().startswith("ENTRYPOINT ")]
    if not entry or json.loads(entry[-1].split(None, 1)[1])[:2] != ["slmgw", "serve"]:
        problems.append("ENTRYPOINT is not [\"slmgw\", \"serve\"]")
    for ln in lines:
        if ln.upper().startswith(("ENV ", "ARG ")) and re.search(r"(KEY|PASSWORD|TOKEN|SECRET)\w*=", ln.upper()):
            problems.append(f"a secret-looking value is baked in: {ln}")
    return problems
