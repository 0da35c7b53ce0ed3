"""Prometheus series for audits (registered on the gateway's registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.verdicts = Counter("slmgw_audit_verdicts", "Audit verdicts of SLM answers against the reference.",
                                ["domain", "mode", "verdict"], registry=registry)
        self.cost = Counter("slmgw_audit_cost_usd", "USD spent on audit reference, judge and shadow calls.",
                            registry=registry)
        self.skipped = Counter("slmgw_audit_skipped", "Sampled audits not run (budget: daily budget spent; "
                               "busy: max_in_flight reached).", ["reason"], registry=registry)
        self.guardrail = Gauge("slmgw_guardrail_active", "1 while a domain's guardrail acts (alert, "
                               "raise_threshold, shadow).", ["domain", "action"], registry=registry)

    def observe(self, domain: str, mode: str, verdict: str, cost: float) -> None:
        self.verdicts.labels(domain, mode, verdict).inc()
        if cost > 0:
            self.cost.inc(cost)
