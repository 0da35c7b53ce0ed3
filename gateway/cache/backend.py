"""The one async interface every cache store implements, and the numbers it reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class CacheStats:
    """Monotonic counters; metrics export them as ``slmgw_cache_*_total``."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    stores: int = 0
    too_large: int = 0
    """Answers not stored because they exceed ``max_entry_bytes``."""
    errors: int = 0
    """Backend operations that failed or timed out."""
    skipped: int = 0
    """Operations not attempted because the backend was marked down (backing off)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class CacheBackend(Protocol):
    """Bytes in, bytes out. Implementations never raise: a failure is a miss or a no-op."""

    name: str
    stats: CacheStats

    async def start(self) -> None:
        """Warm up (first connection) at application start; never raises."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The stored bytes, or None when absent, expired or the store is unavailable."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        """Store with a TTL in seconds; False when not stored."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every key starting with ``prefix`` (admin and tests); the count removed."""
        ...

    def health(self) -> dict[str, Any]:
        """``{"backend", "ok", ...}`` for /health/ready; ``ok`` False while the store is down."""
        ...

    async def close(self) -> None: ...
