"""Prometheus view of the cache store: up/down and counters, read from ``CacheStats`` at scrape time.

Lookup results (hit/miss) are counted per request by ``gateway.metrics``; this adds what only the
cache knows: whether its store is reachable and how often it failed, was skipped, or refused an entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.cache.service import ResponseCache


class CacheCollector(Collector):
    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        backend = self.cache.backend
        stats = backend.stats
        up = GaugeMetricFamily("slmgw_cache_store_up", "1 if the response cache store answers, else 0.",
                               labels=["backend"])
        up.add_metric([backend.name], 1.0 if backend.health().get("ok") else 0.0)
        yield up
        for name, help_text, value in (
            ("slmgw_cache_store_errors", "Cache store operations that failed or timed out.", stats.errors),
            ("slmgw_cache_store_skipped", "Cache operations skipped while the store was down.", stats.skipped),
            ("slmgw_cache_stores", "Answers stored in the response cache.", stats.stores),
            ("slmgw_cache_too_large", "Answers not stored because they exceed max_entry_bytes.",
             stats.too_large),
        ):
            counter = CounterMetricFamily(name, help_text, labels=["backend"])
            counter.add_metric([backend.name], float(value))
            yield counter


def register(cache: ResponseCache, registry: CollectorRegistry) -> None:
    """Add the cache's metrics to an app's registry (once per app)."""
    registry.register(CacheCollector(cache))
