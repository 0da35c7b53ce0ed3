"""Build the audit services from the policy at start-up, and close them at shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.metrics import Metrics
    from gateway.services import Services


async def start_audits(services: Services, metrics: Metrics) -> None:
    """With a policy ``audit`` section: the guardrails this worker routes by, and the client of its audit
    process (which runs the audits, the judge and the guardrail windows)."""
    policy = services.policy
    config = policy.audit
    if config is None:
        return
    from gateway.audit.client import AuditClient
    from gateway.audit.guardrails import Guardrails
    from gateway.audit.metrics import AuditMetrics

    audit_metrics = getattr(metrics, "audit", None)
    if audit_metrics is None:  # once per registry: a policy reload starts audits again
        audit_metrics = metrics.audit = AuditMetrics(metrics.registry)
    own = getattr(services.router, "thresholds", None) or {}  # a classifier's calibrated thresholds
    thresholds = {d.name: float(own.get(d.name, d.threshold if d.threshold is not None else policy.router.threshold))
                  for d in policy.domains}
    # This worker's copy only follows states (from Redis, or from its audit process); it never judges.
    guardrails = Guardrails(config, thresholds, store=None) if config.guardrails else None
    if guardrails is not None:
        guardrails.metrics = audit_metrics
        guardrails._export()
        await guardrails.start()
    services.guardrails = guardrails
    if guardrails is not None:
        services.extras["guardrails"] = guardrails
    if config.sample_rate <= 0 and not any(rate > 0 for rate in config.domain_rates.values()):
        return  # nothing will be sampled (e.g. SLMGW_AUDIT_RATE unset): no audit process, no memory for it
    services.auditor = AuditClient(policy, config, guardrails, audit_metrics)
    await services.auditor.start()
    services.extras["audit"] = services.auditor


async def stop_audits(services: Services) -> None:
    """Let running audits finish and their verdicts be written (or spilled), then stop."""
    if services.auditor is not None:
        await services.auditor.close()
    if services.guardrails is not None:
        await services.guardrails.close()
