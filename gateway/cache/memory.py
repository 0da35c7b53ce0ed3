"""In-process LRU: the cache when no Redis URL is configured (one gateway process only)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gateway.cache.backend import CacheStats


class MemoryBackend:
    """Least-recently-used store bounded by entry count and total bytes, with per-entry expiry.

    Values are kept as bytes, so what a caller later does to its objects cannot change a stored answer
    and the byte bound is honest.
    """

    name = "memory"

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    async def start(self) -> None:
        return None

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        if len(value) > self.max_bytes or ttl_s <= 0:
            return False
        if key in self._data:
            self._drop(key)
        self._data[key] = (self._clock() + ttl_s, value)
        self._bytes += len(value)
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._data)))
        return True

    async def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self._data if k.startswith(prefix)]
        for k in keys:
            self._drop(k)
        return len(keys)

    def _drop(self, key: str) -> None:
        _, value = self._data.pop(key)
        self._bytes -= len(value)

    def health(self) -> dict[str, Any]:
        return {"backend": self.name, "ok": True, "entries": len(self._data), "bytes": self._bytes}

    async def close(self) -> None:
        self._data.clear()
        self._bytes = 0
