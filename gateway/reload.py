"""Hot reload: a new policy file (and router model) without a restart and without dropping a request.

``Reloader.reload`` reads and validates the file first; a bad file changes nothing (every error is
logged with its field path and returned). Otherwise it builds a new ``Services`` that shares every
component whose settings did not change (connections, the SLM health pollers, the cache, the ledger,
the audit process) and rebuilds only the rest, then swaps ``app.state.services`` and
``app.state.pipeline`` in one step. A request reads both once, when it starts, so a request in flight
finishes under the policy it started with and one that starts after the swap uses the new one.
Components replaced by the reload are closed after a grace period, when their requests are done.

Settings that cannot change live (``server.host``, ``server.port``, ``ledger``, ``cache``) keep their
old values and are reported as needing a restart. Every reload attempt is a row in
``slmgw_policy_reloads``: who, when, old and new version, the diff (secrets masked), errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import Policy, PolicyError, load_policy
from gateway.ids import new_id
from gateway.policy_version import model_digest, policy_diff, policy_version, restart_needed, sections

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gateway.audit.store import AuditStore
    from gateway.services import Services

log = logging.getLogger(__name__)

RELOADS = "slmgw_policy_reloads"
_DISPATCH = {"slm_backends", "llm_backends", "fallback", "embeddings"}
_GRACE_S = 30.0
"""How long replaced components live on for the requests that started under them."""


@dataclass
class ReloadResult:
    ok: bool
    version: str
    previous_version: str
    changed: list[dict[str, Any]] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    took_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "version": self.version, "previous_version": self.previous_version,
                "changed": self.changed, "restart_needed": self.restart_needed, "errors": self.errors,
                "took_ms": round(self.took_ms, 1)}


class Reloader:
    def __init__(self, app: FastAPI, path: Path | None, store: AuditStore | None) -> None:
        self.app = app
        self.path = path
        """The policy file; None for a gateway built from a Policy object (no reload)."""
        self.store = store
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._stat: tuple[float, int] | None = self._file_stat()
        self.reloads = 0

    def _file_stat(self) -> tuple[float, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime, st.st_size

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def reload(self, actor: str) -> ReloadResult:
        """Validate and apply the policy file. Never raises; a failure keeps the old policy serving."""
        async with self._lock:
            t0 = time.perf_counter()
            old = self.services
            result = ReloadResult(False, old.version, old.version)
            try:
                if self.path is None:
                    raise PolicyError("<policy>", ["this gateway was not started from a policy file"])
                new_policy, digest = await asyncio.to_thread(_load, self.path)
                result.version = policy_version(new_policy, digest)
                result.changed = policy_diff(old.policy, new_policy, old.model_digest)
                result.restart_needed = restart_needed(result.changed)
                if result.changed:
                    await self._swap(old, _keep_restart_only(old.policy, new_policy), digest, result)
                result.ok = True
                self.reloads += 1
            except PolicyError as exc:
                result.errors = list(exc.errors)
                for err in exc.errors:
                    log.error("reload: %s: %s (the running policy %s stays)", exc.source, err, old.version)
            except Exception as exc:  # a router model that will not load, a backend that will not start
                result.errors = [f"{type(exc).__name__}: {exc}"]
                log.exception("reload failed; the running policy %s stays", old.version)
            result.took_ms = (time.perf_counter() - t0) * 1000
            self._stat = self._file_stat()
            if result.ok and result.changed:
                log.info("reload by %s: policy %s -> %s in %.0f ms (%d changes%s)", actor, result.previous_version,
                         result.version, result.took_ms, len(result.changed),
                         f"; needs a restart: {', '.join(result.restart_needed)}" if result.restart_needed else "")
            self._record(actor, result)
            return result

    async def _swap(self, old: Services, policy: Policy, digest: str, result: ReloadResult) -> None:
        from gateway.pipeline import Pipeline

        new, retired = await rebuild(old, policy, digest, sections(result.changed))
        new.version = result.version
        pipeline = Pipeline(new)  # its difficulty model was loaded once already by rebuild(): cannot fail now
        # The swap: attribute writes with no await between them.
        self.app.state.services = new
        self.app.state.pipeline = pipeline
        self.app.state.policy = policy
        if retired:
            task = asyncio.get_running_loop().create_task(_close_later(retired))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _record(self, actor: str, result: ReloadResult) -> None:
        if self.store is None:
            return
        self.store.add(RELOADS, {"id": new_id(), "ts": time.time(), "actor": actor[:128],
                                 "host": f"{socket.gethostname()}:{os.getpid()}"[:128], "ok": result.ok,
                                 "old_version": result.previous_version, "new_version": result.version,
                                 "diff": result.changed, "errors": result.errors,
                                 "restart_needed": result.restart_needed})

    async def watch_file(self, interval_s: float) -> None:
        """Reload whenever the file's modification time or size changes (``reload.watch_s``)."""
        while True:
            await asyncio.sleep(interval_s)
            stat = self._file_stat()
            if stat is not None and stat != self._stat:
                await self.reload("file watch")

    async def close(self) -> None:
        for task in list(self._closing):
            task.cancel()


def _load(path: Path) -> tuple[Policy, str]:
    policy = load_policy(path)
    return policy, model_digest(policy)


def _keep_restart_only(old: Policy, new: Policy) -> Policy:
    """The new policy with the settings that need a restart put back to their running values."""
    server = new.server.model_copy(update={"host": old.server.host, "port": old.server.port})
    return new.model_copy(update={"server": server, "ledger": old.ledger, "cache": old.cache})


async def rebuild(old: Services, policy: Policy, digest: str, changed: set[str]) -> tuple[Services, list[Any]]:
    """A ``Services`` for ``policy`` sharing what did not change; returns it and the replaced components."""
    from gateway.auth import KeyRing
    from gateway.costs import CostModel
    from gateway.services import Services
    from router.base import build_router
    from serving.dispatch import Dispatcher

    retired: list[Any] = []
    # What can fail comes first, before anything is started: a router model that does not load, a price.
    # Both are CPU work: off the event loop.
    router = old.router
    if changed & {"router", "domains"}:
        router = await asyncio.to_thread(_router, old, policy, digest, build_router)
    costs = await asyncio.to_thread(CostModel.from_policy, policy) \
        if changed & (_DISPATCH | {"costs", "domains"}) else None
    from router.difficulty import hard_gate

    await asyncio.to_thread(hard_gate, policy)  # a difficulty model that does not load fails the reload here
    dispatcher = Dispatcher(policy)
    if changed & _DISPATCH:
        await dispatcher.start()
        retired.append(old.dispatcher)
    else:  # same backends: keep the connections and the health pollers
        dispatcher.slm, dispatcher.health = old.dispatcher.slm, old.dispatcher.health
        dispatcher.health.policy = policy
    dispatcher.llm._litellm = old.dispatcher.llm._litellm
    keys = KeyRing(policy) if "auth" in changed else old.keys
    new = Services(policy=policy, router=router, dispatcher=dispatcher, keys=keys, extras=dict(old.extras),
                   auditor=old.auditor, guardrails=old.guardrails, version=old.version, model_digest=digest)
    ledger = new.extras.get("ledger")
    if ledger is not None and costs is not None:
        ledger.costs = costs
    if changed & {"auth", "limits", "privacy"}:
        retired += await _rebuild_guards(old, new, changed)
    if "audit" in changed:
        retired += await _rebuild_audits(old, new)
    new.extras["slm"] = dispatcher.health
    return new, retired


def _router(old: Services, policy: Policy, digest: str, build: Any) -> Any:
    """The new policy's router. A classifier whose model file is unchanged keeps its loaded model (a
    threshold change costs microseconds, not the ~0.3 s of loading the model again)."""
    from router.classifier import ClassifierRouter

    same_file = (policy.router.kind == old.policy.router.kind == "classifier"
                 and policy.router.model_path == old.policy.router.model_path and digest == old.model_digest)
    if same_file and isinstance(old.router, ClassifierRouter):
        return ClassifierRouter(old.router.model, policy)
    # Loading a model is ~0.3 s of Python on this thread; hand the GIL back to the event loop ten times as
    # often meanwhile, so requests in flight keep moving (p99 during a model reload, docs/operations.md).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(interval / 10)
    try:
        return build(policy)
    finally:
        sys.setswitchinterval(interval)


async def _rebuild_guards(old: Services, new: Services, changed: set[str]) -> list[Any]:
    from gateway.hardening import start_guards

    retired = [c for name in ("limits", "keystore") if (c := old.extras.get(name)) is not None
               and ((name == "limits" and "limits" in changed) or (name == "keystore" and "auth" in changed))]
    for name in ("limits", "keystore", "privacy"):
        new.extras.pop(name, None)
    kept_limits = old.extras.get("limits") if "limits" not in changed else None
    kept_store = old.extras.get("keystore") if "auth" not in changed else None
    await start_guards(new)
    for name, kept in (("limits", kept_limits), ("keystore", kept_store)):
        if kept is not None:  # unchanged: keep the running one, close the one start_guards just made
            fresh = new.extras.get(name)
            if fresh is not None and fresh is not kept:
                retired.append(fresh)
            new.extras[name] = kept
    return retired


async def _rebuild_audits(old: Services, new: Services) -> list[Any]:
    from gateway.audit.setup import start_audits

    metrics = new.extras.get("metrics")
    new.auditor, new.guardrails = None, None
    for name in ("audit", "guardrails"):
        new.extras.pop(name, None)
    if metrics is not None:
        await start_audits(new, metrics)
    return [c for c in (old.auditor, old.guardrails) if c is not None]


async def _close_later(components: list[Any]) -> None:
    await asyncio.sleep(_GRACE_S)
    for component in components:
        try:
            await component.close()
        except Exception:
            log.exception("reload: closing a replaced %s failed", type(component).__name__)
