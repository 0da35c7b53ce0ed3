"""The long-lived objects one gateway process shares, built once from the policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.auth import KeyRing
from gateway.config import Policy
from router.base import Router
from serving.dispatch import Dispatcher

if TYPE_CHECKING:
    from gateway.audit.client import AuditClient
    from gateway.audit.guardrails import Guardrails


@dataclass
class Services:
    policy: Policy
    router: Router
    dispatcher: Dispatcher
    keys: KeyRing
    extras: dict[str, Any] = field(default_factory=dict)
    """Optional components (cache, ledger, health) registered by name."""
    auditor: AuditClient | None = None
    """Sampled quality audits (policy ``audit``), else None."""
    guardrails: Guardrails | None = None
    """Quality floors that act on routing (policy ``audit.guardrails``), else None."""
    version: str = ""
    """The policy's version (``gateway.policy_version``), recorded with every ledger row."""
    model_digest: str = ""
    """Digest of the model files the policy named when it was loaded (a reload compares against it)."""

    async def close(self) -> None:
        await self.dispatcher.close()
