"""``slmgw policy simulate``: what a new policy would have done with recorded traffic.

Replays the ledger's requests whose text was kept (``ledger.store_prompts: true``) through the new
policy's router and the escalation rules that need no model (difficulty gate, thresholds, context
bounds), without calling any model, and compares routes, costs and savings with what happened. Costs
use each request's recorded tokens priced under the new policy (an estimate: another model would have
answered with other tokens). Cache hits stay cache hits; failed requests are not replayed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.config import Policy
    from serving.dispatch import Kind


@dataclass
class Side:
    requests: int = 0
    slm: int = 0
    cost_usd: float = 0.0
    baseline_usd: float = 0.0

    def add(self, route: str, cost: float, baseline: float) -> None:
        self.requests += 1
        self.slm += route == "slm"
        self.cost_usd += cost
        self.baseline_usd += baseline

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "slm_requests": self.slm,
                "slm_share_pct": round(100 * self.slm / self.requests, 2) if self.requests else 0.0,
                "cost_usd": round(self.cost_usd, 8), "savings_usd": round(self.baseline_usd - self.cost_usd, 8)}


@dataclass
class Simulation:
    replayed: int = 0
    not_replayed: dict[str, int] = field(default_factory=lambda: {"no_stored_text": 0, "failed": 0,
                                                                   "embedding": 0, "unknown_model": 0})
    actual: dict[str, Side] = field(default_factory=dict)
    simulated: dict[str, Side] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    changed: int = 0

    def as_dict(self) -> dict[str, Any]:
        domains = sorted(set(self.actual) | set(self.simulated))
        total_a, total_s = Side(), Side()
        for side, total in ((self.actual, total_a), (self.simulated, total_s)):
            for s in side.values():
                total.requests += s.requests
                total.slm += s.slm
                total.cost_usd += s.cost_usd
                total.baseline_usd += s.baseline_usd
        return {"replayed": self.replayed, "not_replayed": self.not_replayed, "changed": self.changed,
                "totals": {"actual": total_a.as_dict(), "simulated": total_s.as_dict()},
                "by_domain": {d: {"actual": self.actual.get(d, Side()).as_dict(),
                                  "simulated": self.simulated.get(d, Side()).as_dict()} for d in domains},
                "changes": self.changes}


def _body(kind: str, requested_model: str, text: str) -> dict[str, Any]:
    if kind == "chat":
        try:
            messages = json.loads(text)
        except json.JSONDecodeError:
            messages = None
        if not isinstance(messages, list):
            messages = [{"role": "user", "content": text}]
        return {"model": requested_model, "messages": messages}
    return {"model": requested_model, "prompt": text}


async def simulate(engine: AsyncEngine, policy: Policy, since: datetime, until: datetime,
                   limit: int = 50) -> Simulation:
    from gateway.app import build_services
    from gateway.costs import CostModel
    from gateway.errors import GatewayError
    from gateway.ledger.schema import requests as t
    from gateway.pipeline import Pipeline
    from serving.escalation import output_tokens, prompt_bounds

    services = build_services(policy)
    pipeline = Pipeline(services)
    costs = CostModel.from_policy(policy)
    out = Simulation()
    query = sa.select(t.c.request_id, t.c.ts, t.c.endpoint, t.c.requested_model, t.c.route, t.c.domain,
                      t.c.backend, t.c.model, t.c.reason, t.c.status, t.c.prompt_tokens, t.c.completion_tokens,
                      t.c.cost_usd, t.c.baseline_cost_usd, t.c.prompt_text) \
        .where(t.c.ts >= since, t.c.ts < until).order_by(t.c.ts)
    async with engine.connect() as conn:
        result = await conn.stream(query)
        async for row in result:
            if row.endpoint == "embedding":
                out.not_replayed["embedding"] += 1
                continue
            if row.status >= 400 or row.route == "none":
                out.not_replayed["failed"] += 1
                continue
            if row.prompt_text is None:
                out.not_replayed["no_stored_text"] += 1
                continue
            kind: Kind = "chat" if row.endpoint == "chat" else "completion"
            body = _body(kind, row.requested_model, row.prompt_text)
            try:
                decision, targets = pipeline.resolve(kind, body)
            except GatewayError:
                out.not_replayed["unknown_model"] += 1
                continue
            reason = decision.reason
            if targets and targets[0].route == "slm":  # the context bound, as the dispatcher checks it first
                window = policy.slm_backends[targets[0].backend].context_length
                lower, _ = prompt_bounds(kind, body)
                if lower + output_tokens(body) > window:
                    reason = f"escalated context_length; {reason}"
                    targets = targets[1:]
            pt, ct = int(row.prompt_tokens), int(row.completion_tokens)
            if row.route == "cache":
                route, backend, model = "cache", None, row.model
            elif targets:
                route, backend = targets[0].route, targets[0].backend
                model = policy.slm_backends[backend].model if route == "slm" else policy.llm_backends[backend].model
            else:
                route, backend, model = "none", None, None
            new_cost = costs.route_cost(route, backend, model, pt, ct)
            new_baseline = costs.baseline.cost(pt, ct)
            key = row.domain or "general"
            out.replayed += 1
            out.actual.setdefault(key, Side()).add(row.route, float(row.cost_usd), float(row.baseline_cost_usd))
            out.simulated.setdefault(key, Side()).add(route, new_cost, new_baseline)
            if route != row.route or (backend or "") != (row.backend or ""):
                out.changed += 1
                if len(out.changes) < limit:
                    out.changes.append({"request_id": row.request_id, "ts": str(row.ts),
                                        "old": {"route": row.route, "backend": row.backend, "reason": row.reason},
                                        "new": {"route": route, "backend": backend, "reason": reason}})
    await services.close()
    return out
