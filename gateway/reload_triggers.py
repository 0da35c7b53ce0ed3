"""What starts a reload: SIGHUP (single-process gateways), ``POST /admin/reload``, a file watch, and a
version published in Redis by another worker or replica (``reload.redis_url``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.reload import Reloader, ReloadResult

log = logging.getLogger(__name__)


@dataclass
class Triggers:
    reloader: Reloader
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    redis: Any = None
    last_seen: str | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        policy = self.reloader.services.policy
        try:  # only the main thread of a process can take signals (with --workers N, uvicorn's supervisor
            # answers SIGHUP by restarting the workers, which load the new file)
            loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.run("SIGHUP")))
        except (RuntimeError, ValueError, NotImplementedError):
            pass
        cfg = policy.reload
        if cfg.watch_s and self.reloader.path is not None:
            self._spawn(self.reloader.watch_file(cfg.watch_s))
        if cfg.redis_url:
            from redis.asyncio import Redis

            self.redis = Redis.from_url(cfg.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
            self._spawn(self._follow(cfg.key, cfg.redis_poll_s))

    def _spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))

    async def run(self, actor: str) -> ReloadResult:
        """Reload, and announce the new version to the other workers and replicas."""
        result = await self.reloader.reload(actor)
        if result.ok and self.redis is not None:
            self.last_seen = result.version
            try:
                await self.redis.set(self.reloader.services.policy.reload.key, result.version)
            except Exception as exc:
                log.warning("reload: could not publish version %s to Redis (%s); other workers will not "
                            "follow until they are told", result.version, type(exc).__name__)
        return result

    async def _follow(self, key: str, every_s: float) -> None:
        """Reload when another worker has published a version this one does not run."""
        warned = False
        while True:
            await asyncio.sleep(every_s)
            try:
                raw = await self.redis.get(key)
                warned = False
            except Exception as exc:
                if not warned:
                    log.warning("reload: Redis unavailable (%s); not following other workers' reloads",
                                type(exc).__name__)
                    warned = True
                continue
            published = raw.decode() if isinstance(raw, bytes) else raw
            if not published or published == self.last_seen or published == self.reloader.services.version:
                self.last_seen = published
                continue
            self.last_seen = published
            result = await self.reloader.reload("replica")
            if result.ok and result.version != published:
                log.warning("reload: another worker published %s but the file here gives %s (is the policy "
                            "file the same on every replica?)", published, result.version)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.redis is not None:
            await self.redis.aclose()
        await self.reloader.close()
