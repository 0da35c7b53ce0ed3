"""A policy's version and the difference between two policies.

The version is the first 12 hex digits of the SHA-256 of the validated policy (canonical JSON, secrets
included, so a rotated key is a new version) and of every model file it names (a retrained router with
the same policy file is a new version too). The ledger stores it with each request.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import Policy

RESTART_ONLY = ("server.host", "server.port", "ledger", "cache")
"""Settings a running gateway cannot change: a reload reports them and keeps the old values."""


def _model_files(policy: Policy) -> list[Path]:
    paths = [getattr(policy.router, name, None) for name in ("model_path", "difficulty_model_path")]
    return [policy.resolve_path(p) for p in paths if isinstance(p, str) and p]


def model_digest(policy: Policy) -> str:
    """SHA-256 over the contents of the model files the policy names."""
    h = hashlib.sha256()
    for path in _model_files(policy):
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(f"missing:{path}".encode())
    return h.hexdigest()


def policy_version(policy: Policy, models: str | None = None) -> str:
    """The version; ``models`` is the policy's ``model_digest`` when already computed."""
    h = hashlib.sha256(json.dumps(policy.model_dump(mode="json"), sort_keys=True, default=str).encode())
    h.update((models if models is not None else model_digest(policy)).encode())
    return h.hexdigest()[:12]


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: value}


_SECRET_WORDS = ("key", "secret", "password", "token")


def _shown(path: str, value: Any) -> Any:
    """Secrets are shown as changed, never as values."""
    last = path.rsplit(".", 1)[-1].lower()
    if any(w in last for w in _SECRET_WORDS) or path.startswith(("auth.api_keys", "auth.admin_keys")):
        return "***" if value is not None else None
    if isinstance(value, str) and "://" in value and "@" in value:  # a URL with credentials
        return "***"
    return value


def policy_diff(old: Policy, new: Policy, old_models: str) -> list[dict[str, Any]]:
    """Changed leaves as ``{"path", "old", "new"}`` (lists compared whole; secrets masked).
    ``old_models`` is the ``model_digest`` taken when the old policy was loaded (its files may have been
    overwritten since)."""
    a, b = _flat(old.model_dump(mode="json")), _flat(new.model_dump(mode="json"))
    changes = []
    for path in sorted(set(a) | set(b)):
        if a.get(path) != b.get(path):
            changes.append({"path": path, "old": _shown(path, a.get(path)), "new": _shown(path, b.get(path))})
    if old_models != model_digest(new):
        changes.append({"path": "router.model_files", "old": "previous contents", "new": "new contents"})
    return changes


def sections(changes: list[dict[str, Any]]) -> set[str]:
    """Top-level sections touched by a diff."""
    return {c["path"].split(".", 1)[0] for c in changes}


def restart_needed(changes: list[dict[str, Any]]) -> list[str]:
    return sorted({c["path"] for c in changes if c["path"].startswith(RESTART_ONLY)})
