"""Latency percentiles of a report group, from raw latencies and rollup histograms alike.

Exact (linear interpolation between closest ranks over the sorted values, as before rollups) while
every part the group was built from carried its latencies exactly and there are at most
``histogram.MERGED_EXACT_MAX`` of them; otherwise read from the merged fixed-bucket histogram, within
~1 % of the exact value (``gateway.ledger.histogram``).
"""

from __future__ import annotations

from gateway.ledger import histogram


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class Latencies:
    """A mergeable set of latencies (ms)."""

    def __init__(self) -> None:
        self.n = 0
        self.counts = histogram.empty()
        self.exact: list[float] | None = []

    def _keep(self, extra: int) -> bool:
        if self.exact is not None and len(self.exact) + extra > histogram.MERGED_EXACT_MAX:
            self.exact = None
        return self.exact is not None

    def add_values(self, values: list[float]) -> None:
        if not values:
            return
        self.n += len(values)
        histogram.add_values(self.counts, values)
        if self._keep(len(values)) and self.exact is not None:
            self.exact.extend(values)

    def add_cells(self, n: int, hists: list[bytes], exacts: list[bytes | None]) -> None:
        """Add rollup cells: ``n`` latencies in all, their encoded histograms and exact values (None for
        a cell that kept only its histogram)."""
        if not n:
            return
        self.n += n
        histogram.add_encoded(self.counts, b"".join(hists))
        if any(e is None for e in exacts):
            self.exact = None
        elif self._keep(n) and self.exact is not None:
            self.exact.extend(histogram.decode_exact(b"".join(e for e in exacts if e is not None)))

    def add(self, other: Latencies) -> None:
        if not other.n:
            return
        self.n += other.n
        self.counts += other.counts
        if other.exact is None:
            self.exact = None
        elif self._keep(other.n) and self.exact is not None:
            self.exact.extend(other.exact)

    def percentile(self, q: float) -> float | None:
        if self.exact is not None:
            return percentile(sorted(self.exact), q)
        return histogram.percentile(self.counts, q)
