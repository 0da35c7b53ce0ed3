"""Prometheus metrics (``slmgw_*``), one registry per app so several apps can live in one process.

No tenant or prompt labels: label values are routes, domains, statuses, reasons and backend names,
all bounded by the policy. ``/metrics`` is served by ``gateway.reports.admin.metrics_router`` behind
the admin key (costs are business data; see docs/costs.md for the Prometheus scrape config).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from gateway.records import RequestRecord

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _label(value: str | None) -> str:
    return value if value else "none"


def _reason_kind(reason: str) -> str:
    # "slm_error:connect" stays as is; measurements are dropped to bound cardinality.
    from gateway.records import escalation_kind

    return escalation_kind(reason)[:64]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("slmgw_requests", "Finished requests.",
                                ["route", "domain", "status", "endpoint"], registry=r)
        self.escalations = Counter("slmgw_escalations", "SLM-bound requests answered by the LLM.",
                                   ["reason"], registry=r)
        self.cache = Counter("slmgw_cache_lookups", "Cache lookups by result.", ["result"], registry=r)
        self.tokens = Counter("slmgw_tokens", "Tokens processed.", ["route", "kind"], registry=r)
        self.cost = Counter("slmgw_cost_usd", "Actual cost in USD.", ["route"], registry=r)
        self.baseline = Counter("slmgw_baseline_cost_usd",
                                "What the baseline LLM would have cost (estimate), USD.", ["route"],
                                registry=r)
        self.savings = Counter("slmgw_savings_usd", "Baseline cost minus actual cost, USD (only "
                               "non-negative savings are counted here; see the report for net).",
                               ["route"], registry=r)
        self.shadow_savings = Counter("slmgw_shadow_savings_usd",
                                      "Shadow mode: would-be savings had the router's route been taken.",
                                      registry=r)
        self.latency = Histogram("slmgw_request_latency_seconds", "Request latency, whole response.",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("slmgw_time_to_first_token_seconds", "Streams: time to first token.",
                              ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.backend_up = Gauge("slmgw_backend_up", "1 if the backend is healthy, else 0.",
                                ["backend", "kind"], registry=r)
        self.ledger_buffered = Gauge("slmgw_ledger_buffered_rows",
                                     "Ledger rows waiting in memory.", registry=r)
        self.ledger_dropped = Counter("slmgw_ledger_rows_dropped_total",
                                      "Ledger rows dropped because they could be neither written nor "
                                      "spilled and memory was full (ledger.memory_max_rows).", registry=r)
        self.ledger_store_up = Gauge("slmgw_ledger_store_up", "1 if the ledger store accepts writes.",
                                     registry=r)
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self.audit: Any = None
        """``gateway.audit.metrics.AuditMetrics`` once audits start (kept across policy reloads)."""
        self.limits_fail_open: Any = None
        """The rate limiter's fail-open counter once limits start (kept across policy reloads)."""

    def _c(self, metric: Any, *values: str) -> Any:
        # prometheus_client's labels() costs microseconds a call; the label sets here are few (bounded
        # by the policy), so each child is looked up once and kept.
        key = (metric._name, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe(self, rec: RequestRecord, cost: float, baseline: float,
                shadow: float | None = None) -> None:
        """Count one finished request (called by ``Ledger.record``)."""
        route = rec.route
        c = self._c
        c(self.requests, route, _label(rec.domain), str(rec.status), rec.endpoint).inc()
        if rec.escalation:
            c(self.escalations, _reason_kind(rec.escalation)).inc()
        if rec.cache != "bypass":
            c(self.cache, rec.cache).inc()
        if rec.prompt_tokens > 0:
            c(self.tokens, route, "prompt").inc(rec.prompt_tokens)
        if rec.completion_tokens > 0:
            c(self.tokens, route, "completion").inc(rec.completion_tokens)
        if cost > 0:
            c(self.cost, route).inc(cost)
        if baseline > 0:
            c(self.baseline, route).inc(baseline)
        if baseline > cost:
            c(self.savings, route).inc(baseline - cost)
        if shadow is not None and baseline > shadow:
            self.shadow_savings.inc(baseline - shadow)
        c(self.latency, route).observe(max(rec.latency_ms, 0.0) / 1000.0)
        if rec.ttft_ms is not None:
            c(self.ttft, route).observe(max(rec.ttft_ms, 0.0) / 1000.0)

    def set_backend_health(self, backend: str, kind: str, up: bool) -> None:
        self.backend_up.labels(backend, kind).set(1 if up else 0)

    def set_ledger_state(self, buffered: int, store_up: bool) -> None:
        self.ledger_buffered.set(buffered)
        self.ledger_store_up.set(1 if store_up else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
