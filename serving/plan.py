"""vLLM launch plans: the servers a policy's SLM backends expect, as commands and container args.

One vLLM server loads one base model and serves it under any number of names: the base under
``--served-model-name`` and each LoRA adapter under its ``--lora-modules name=path``. The gateway calls
``model`` on every URL in ``base_urls``, so every URL is a server that must serve every backend listing
it. URLs whose launch arguments come out identical are replicas of one plan (only the host differs).

Adapter and model paths are printed as the policy gives them: they are paths as vLLM sees them
(inside its container), not resolved against the gateway's files. Keys are never printed: a backend
with ``api_key`` gets a note to set ``VLLM_API_KEY`` in vLLM's environment (vLLM reads it
there, as it would ``--api-key``), and its plan lists that in ``env``.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from gateway.config import Policy, SlmBackend

MODULE = "vllm.entrypoints.openai.api_server"
API_KEY_ENV = "VLLM_API_KEY"


class PlanError(ValueError):
    """The policy's SLM backends cannot be served by one consistent set of vLLM servers."""


@dataclass
class ServerPlan:
    """One vLLM launch configuration, run once per replica URL."""

    replicas: list[str]
    """OpenAI API roots (as in base_urls) that run this configuration."""
    base_model: str
    """What vLLM loads (`--model`)."""
    served_names: list[str]
    """Every model name the server answers to: base aliases first, then adapters."""
    lora_modules: dict[str, str]
    """Adapter served name -> adapter path."""
    max_model_len: int
    backends: list[str]
    """Policy slm_backends names served here."""
    domains: list[str]
    """Policy domains whose backend is served here."""
    env: list[str] = field(default_factory=list)
    """Environment variables the server needs set (their values are never printed)."""
    args: list[str] = field(default_factory=list)
    """Arguments after `python -m vllm.entrypoints.openai.api_server` (the vllm/vllm-openai image's
    entrypoint), i.e. the container args."""

    def command(self) -> list[str]:
        return ["python", "-m", MODULE, *self.args]


def _port(url: str) -> int:
    parts = urlsplit(url)
    if parts.port:
        return parts.port
    return 443 if parts.scheme == "https" else 80


def _server_args(url: str, members: list[tuple[str, SlmBackend]]
                 ) -> tuple[str, list[str], dict[str, str], int, list[str]]:
    bases = {b.base_model for _, b in members if b.base_model}
    # A backend without adapter_path is the base model served under its own name.
    base_served = [b for _, b in members if not b.adapter_path]
    loaded = bases | {b.base_model or b.model for b in base_served}
    if not loaded:
        raise PlanError(f"{url}: backends {', '.join(n for n, _ in members)} are LoRA adapters but none "
                        "names base_model (the model vLLM loads)")
    if len(loaded) > 1:
        raise PlanError(f"{url}: one vLLM server loads one base model, but its backends name "
                        f"{sorted(loaded)}")
    base = loaded.pop()
    aliases: list[str] = []
    for b in base_served:
        if b.model not in aliases:
            aliases.append(b.model)
    modules: dict[str, str] = {}
    for name, b in members:
        if not b.adapter_path:
            continue
        if b.model in aliases:
            raise PlanError(f"slm_backends.{name}: adapter name {b.model!r} is also the base model's name")
        if modules.get(b.model, b.adapter_path) != b.adapter_path:
            raise PlanError(f"{url}: adapter {b.model!r} is given two paths: {modules[b.model]!r} and "
                            f"{b.adapter_path!r}")
        modules[b.model] = b.adapter_path
    max_len = max(b.context_length for _, b in members)
    args = ["--model", base]
    if aliases:
        args += ["--served-model-name", *aliases]
    if modules:
        ranks = [b.lora_rank for _, b in members if b.adapter_path and b.lora_rank]
        args += ["--enable-lora", "--lora-modules", *(f"{n}={p}" for n, p in modules.items()),
                 "--max-loras", str(len(modules))]
        if ranks:
            args += ["--max-lora-rank", str(max(ranks))]
    args += ["--max-model-len", str(max_len), "--host", "0.0.0.0", "--port", str(_port(url))]
    extra = [a for _, b in members for a in b.vllm_args]
    return base, args + _dedupe_flags(extra), modules, max_len, aliases


def _dedupe_flags(args: list[str]) -> list[str]:
    # Backends on one server often repeat the same extra flags; keep each "--flag value" once.
    out: list[str] = []
    seen: set[tuple[str, ...]] = set()
    i = 0
    while i < len(args):
        item: tuple[str, ...] = (args[i],)
        if args[i].startswith("--") and "=" not in args[i] and i + 1 < len(args) \
                and not args[i + 1].startswith("--"):
            item = (args[i], args[i + 1])
        if item not in seen:
            seen.add(item)
            out.extend(item)
        i += len(item)
    return out


def build_plan(policy: Policy) -> list[ServerPlan]:
    """The vLLM servers the policy's SLM backends need, in the order the policy first names them."""
    by_url: dict[str, list[tuple[str, SlmBackend]]] = {}
    for name, backend in policy.slm_backends.items():
        for url in backend.base_urls:
            by_url.setdefault(url, []).append((name, backend))
    domains_of: dict[str, list[str]] = {}
    for d in policy.domains:
        domains_of.setdefault(d.backend, []).append(d.name)
    plans: list[ServerPlan] = []
    index: dict[tuple[str, ...], ServerPlan] = {}
    for url, members in by_url.items():
        base, args, modules, max_len, aliases = _server_args(url, members)
        key = tuple(args)
        if key in index:
            index[key].replicas.append(url)
            continue
        names = [n for n, _ in members]
        plan = ServerPlan(
            replicas=[url], base_model=base, served_names=[*aliases, *modules], lora_modules=modules,
            max_model_len=max_len, backends=names,
            env=[API_KEY_ENV] if any(b.api_key for _, b in members) else [],
            domains=[d for n in names for d in domains_of.get(n, [])], args=args,
        )
        index[key] = plan
        plans.append(plan)
    return plans


def render(plans: list[ServerPlan], fmt: str = "text") -> str:
    """``text``: commented shell commands; ``json``/``yaml``: a list of servers with ``command`` and
    ``container_args``."""
    if fmt in ("json", "yaml"):
        data = [{**{k: v for k, v in asdict(p).items() if k != "args"}, "command": p.command(),
                 "container_args": p.args} for p in plans]
        if fmt == "json":
            return json.dumps(data, indent=2)
        import yaml

        return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100))
    if not plans:
        return "# the policy has no slm_backends: no vLLM server is needed"
    out: list[str] = []
    for i, p in enumerate(plans, 1):
        out.append(f"# vLLM server {i}: {len(p.replicas)} replica(s): {', '.join(p.replicas)}")
        out.append(f"#   serves {', '.join(p.served_names)} (backends {', '.join(p.backends)}; "
                   f"domains {', '.join(p.domains) or '-'})")
        for var in p.env:
            out.append(f"#   set {var} in vLLM's environment (the backend's api_key; vLLM reads it)")
        out.append(_shell(p.command()))
        out.append("# container args (vllm/vllm-openai image):")
        out.append(json.dumps(p.args))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _shell(cmd: list[str]) -> str:
    parts = [shlex.quote(a) for a in cmd]
    lines, cur = [], parts[:4]
    for a in parts[4:]:
        if a.startswith("--"):
            lines.append(" ".join(cur))
            cur = [a]
        else:
            cur.append(a)
    lines.append(" ".join(cur))
    return " \\\n    ".join(lines)
