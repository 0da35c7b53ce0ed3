"""Where audits and guardrails meet the request path (called by ``gateway.pipeline``): cheap, in memory,
never raising into a request."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from gateway.audit.service import AuditJob

if TYPE_CHECKING:
    from gateway.costs import Cost
    from gateway.records import RequestRecord
    from gateway.services import Services
    from router.base import Decision
    from serving.dispatch import Answer, Target

log = logging.getLogger(__name__)

Mode = Literal["audit", "shadow"]


def guard(services: Services, decision: Decision,
          targets: list[Target]) -> tuple[Decision, list[Target], bool]:
    """Apply the domain's guardrail to an SLM-bound decision: ``shadow`` keeps the decision (so the
    ledger says where it would have gone) but sends the request to the LLMs; ``raise_threshold``
    escalates confidences under the raised threshold. The flag is True for a shadowed request."""
    guards = services.guardrails
    if guards is None or decision.target != "slm" or decision.domain is None:
        return decision, targets, False
    state = guards.state(decision.domain)
    if state is None:
        return decision, targets, False
    domain = decision.domain
    llm_only = services.dispatcher.plan(domain, False)
    if state.action == "shadow":
        return dataclasses.replace(decision, reason=f"guardrail_shadow {domain}; {decision.reason}"), llm_only, True
    threshold = guards.thresholds.get(domain, 0.5) + state.threshold_delta
    if decision.confidence < threshold:
        reason = (f"low_confidence {domain}={decision.confidence:.2f}<{threshold:.2f} "
                  f"(guardrail +{state.threshold_delta:.2f})")
        return dataclasses.replace(decision, target="llm", reason=reason), llm_only, False
    return decision, targets, False


def audit_mode(services: Services, kind: str, rec: RequestRecord, answer: Answer) -> Mode | None:
    """Whether to audit this request (sampled here, once): the SLM answered (``audit``), or the LLM
    answered one the router would have given an SLM, in shadow (``shadow``)."""
    auditor = services.auditor
    if auditor is None or kind not in ("chat", "completion") or rec.domain is None or rec.status >= 400:
        return None
    if answer.route == "slm":
        mode: Mode = "audit"
    elif rec.would_route == "slm" and auditor.config.shadow and services.policy.domain(rec.domain) is not None:
        mode = "shadow"
    else:
        return None
    return mode if auditor.sample(rec.domain) else None


def submit(services: Services, mode: Mode, kind: str, rec: RequestRecord, body: Mapping[str, Any],
           answer: Answer, served_text: str, cost: Cost | None) -> None:
    """Hand the finished request to the auditor (background); never raises."""
    auditor = services.auditor
    domain = services.policy.domain(rec.domain or "")
    if auditor is None or domain is None:
        return
    try:
        job = AuditJob(request_id=rec.request_id, tenant=rec.tenant, domain=domain.name,
                       kind="chat" if kind == "chat" else "completion",
                       body={k: v for k, v in body.items() if k not in ("stream", "stream_options")},
                       mode=mode, slm_backend=answer.backend if mode == "audit" else domain.backend,
                       served_text=served_text, served_cost_usd=cost.cost_usd if cost is not None else 0.0,
                       served_model=answer.model)
        if auditor.submit(job):
            rec.extra["audit"] = mode
    except Exception:
        log.exception("audit: could not start for request %s", rec.request_id)
