"""Mergeable latency histograms with fixed log-spaced buckets (for the ledger's hourly rollups).

Bucket ``i`` holds latencies in ``(GAMMA**(i - OFFSET - 1), GAMMA**(i - OFFSET)]`` ms and is read back
as the point whose relative distance to both edges is equal, so any value estimated from a bucket is
within ``ALPHA`` (~1 %) of every latency in it (DDSketch's mapping, with fixed buckets so histograms
from different hours, processes and stores merge by adding counts). Bucket 0 holds everything at or
below ``MIN_MS`` (read back as 0), the last bucket everything above ``MAX_MS``.

Small cells also keep their latencies exactly (``EXACT_MAX`` values): a report whose group holds few
successful requests gets exact percentiles, the same as computed from raw rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

GAMMA = 1.02
ALPHA = (GAMMA - 1) / (GAMMA + 1)
"""Largest relative error of a value read back from its bucket (0.0099)."""
MIN_MS = 1e-3
MAX_MS = 1e8
OFFSET = math.ceil(-math.log(MIN_MS, GAMMA)) + 1
SIZE = OFFSET + math.ceil(math.log(MAX_MS, GAMMA)) + 2
EXACT_MAX = 32
"""A rollup cell with at most this many successful requests stores their latencies exactly too."""
MERGED_EXACT_MAX = 10_000
"""A report group keeps exact latencies while it holds at most this many (else it uses the buckets)."""

_LN_GAMMA = math.log(GAMMA)
_PAIR = np.dtype([("i", "<u2"), ("n", "<u4")])
Counts = npt.NDArray[np.int64]


def bucket(ms: float) -> int:
    if ms <= MIN_MS:
        return 0
    return max(1, min(SIZE - 1, OFFSET + math.ceil(math.log(ms) / _LN_GAMMA)))


def buckets(values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """``bucket`` for many values at once."""
    with np.errstate(divide="ignore", invalid="ignore"):
        idx = OFFSET + np.ceil(np.log(np.maximum(values, MIN_MS)) / _LN_GAMMA)
    out = np.clip(idx, 1, SIZE - 1).astype(np.int64)
    out[values <= MIN_MS] = 0
    return out


def value(i: int) -> float:
    """The value a bucket is read back as."""
    if i <= 0:
        return 0.0
    upper = GAMMA ** (i - OFFSET)
    return 2.0 * upper / (GAMMA + 1.0)


def empty() -> Counts:
    return np.zeros(SIZE, dtype=np.int64)


def encode(values: Iterable[float]) -> bytes:
    """Sparse bytes (bucket index, count pairs) of the values' histogram."""
    arr = np.fromiter(values, dtype=np.float64)
    if arr.size == 0:
        return b""
    idx, counts = np.unique(buckets(arr), return_counts=True)
    out = np.empty(idx.size, dtype=_PAIR)
    out["i"] = idx
    out["n"] = counts
    return out.tobytes()


def encode_counts(counts: Counts) -> bytes:
    """Sparse bytes of dense counts (as ``encode``)."""
    idx = np.flatnonzero(counts)
    out = np.empty(idx.size, dtype=_PAIR)
    out["i"] = idx
    out["n"] = counts[idx]
    return out.tobytes()


def add_encoded(into: Counts, blob: bytes | None) -> None:
    """Add ``encode``d histograms (one, or several concatenated) to dense counts."""
    if blob:
        pairs = np.frombuffer(blob, dtype=_PAIR)
        into += np.bincount(pairs["i"], weights=pairs["n"], minlength=SIZE).astype(np.int64)


def add_values(into: Counts, values: Iterable[float]) -> None:
    arr = np.fromiter(values, dtype=np.float64)
    if arr.size:
        np.add.at(into, buckets(arr), 1)


def encode_exact(values: list[float]) -> bytes | None:
    """The values themselves (float64), or None when there are more than ``EXACT_MAX``."""
    return np.asarray(values, dtype=np.float64).tobytes() if len(values) <= EXACT_MAX else None


def decode_exact(blob: bytes) -> list[float]:
    return np.frombuffer(blob, dtype=np.float64).tolist()


def percentile(counts: Counts, q: float) -> float | None:
    """Linear interpolation between closest ranks (as ``gateway.reports.compute.percentile`` on sorted
    values), each rank's value read back from its bucket."""
    n = int(counts.sum())
    if n == 0:
        return None
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    cum = np.cumsum(counts)
    v_lo = value(int(np.searchsorted(cum, lo, side="right")))
    v_hi = value(int(np.searchsorted(cum, hi, side="right")))
    return v_lo + (v_hi - v_lo) * (pos - lo)
