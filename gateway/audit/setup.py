"""Build the audit services from the policy at start-up, and close them at shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.ledger import Ledger
    from gateway.metrics import Metrics
    from gateway.services import Services


async def start_audits(services: Services, ledger: Ledger, metrics: Metrics) -> None:
    """Auditor, guardrails and their store, when the policy has an ``audit`` section."""
    policy = services.policy
    config = policy.audit
    if config is None:
        return
    from gateway.audit.guardrails import Guardrails
    from gateway.audit.metrics import AuditMetrics
    from gateway.audit.service import Auditor
    from gateway.audit.store import AuditStore

    store = AuditStore(lambda: ledger.engine, ledger.spill.path)
    store.start()
    thresholds = {d.name: d.threshold if d.threshold is not None else policy.router.threshold
                  for d in policy.domains}
    guardrails = Guardrails(config, thresholds, store) if config.guardrails else None
    if guardrails is not None:
        await guardrails.start()
    audit_metrics = AuditMetrics(metrics.registry)
    if guardrails is not None:
        guardrails.metrics = audit_metrics
        guardrails._export()
    services.auditor = Auditor(policy, config, services.dispatcher, ledger.costs, store, guardrails, audit_metrics)
    services.guardrails = guardrails
    services.extras["audit_store"] = store
    services.extras["audit"] = services.auditor
    if guardrails is not None:
        services.extras["guardrails"] = guardrails


async def stop_audits(services: Services) -> None:
    """Let running audits finish (briefly), then write their verdicts."""
    if services.auditor is not None:
        await services.auditor.close()
        await services.auditor.store.close()
    if services.guardrails is not None:
        await services.guardrails.close()
