"""Keeps one gateway process's copy of the key store current.

Looking a key up in the database on every request would put the database on the hot path (and make
every request fail while it is down). Instead each process loads the active keys at start and every
``auth.key_store.refresh_s`` seconds: a new key works, and a revoked key stops working, within that
interval. While the database is unreachable the last loaded set stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from gateway.keys import store

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from gateway.auth import KeyRing
    from gateway.config import Policy

log = logging.getLogger(__name__)


class KeyStoreRefresher:
    def __init__(self, policy: Policy, keyring: KeyRing, engine: AsyncEngine | None = None) -> None:
        self.policy = policy
        self.keyring = keyring
        self.interval = policy.auth.key_store.refresh_s
        self._engine = engine
        self._own_engine = engine is None
        self._task: asyncio.Task[None] | None = None
        self.loaded = 0
        self.last_ok: float | None = None
        self.last_error: str | None = None

    async def start(self) -> None:
        if self._engine is None:
            from gateway.ledger.store import create_engine, migrate, normalize_url

            self._engine = create_engine(normalize_url(self.policy.ledger.url, self.policy.base_dir),
                                         connect_timeout_s=3.0)
            if self.policy.ledger.migrate:
                with contextlib.suppress(Exception):  # a down database is retried by the loop
                    await asyncio.wait_for(migrate(self._engine), 15)
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="keystore-refresh")

    async def refresh(self) -> bool:
        assert self._engine is not None
        try:
            keys = await asyncio.wait_for(store.load_active(self._engine), max(self.interval, 2.0))
        except Exception as exc:
            if self.last_error is None:
                log.warning("key store unreachable (%s); keeping the %d keys loaded before",
                            type(exc).__name__, self.loaded)
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            return False
        self.keyring.set_store_keys(keys)
        if self.last_error is not None:
            log.info("key store reachable again; %d active keys", len(keys))
        self.loaded, self.last_ok, self.last_error = len(keys), time.time(), None
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()

    def health(self) -> dict[str, Any]:
        return {"ok": self.last_error is None, "keys": self.loaded, "last_error": self.last_error}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._own_engine and self._engine is not None:
            await self._engine.dispose()
