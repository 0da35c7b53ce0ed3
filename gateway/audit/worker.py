"""The audit process: runs the audits a gateway worker hands over, so their reference and judge calls
(litellm costs milliseconds of CPU per call) never share a CPU-bound event loop, or the GIL, with client
requests. One per gateway worker, started by ``gateway.audit.client.AuditClient`` (spawned: a clean
interpreter), fed through a queue of jobs; it writes verdicts to the ledger database itself and sends
events back (verdicts for the metrics, guardrail states, counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from dataclasses import asdict
from typing import Any

log = logging.getLogger(__name__)


def main(policy_data: dict[str, Any], base_dir: str, jobs: Any, events: Any, log_level: int) -> None:
    """Process entry point: serve jobs until a ``("stop",)`` message (or the parent's queue closes)."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s audit-worker %(name)s: %(message)s")
    with contextlib.suppress(OSError):  # audits wait; client requests on the same cores do not
        os.nice(10)
    asyncio.run(_serve(policy_data, base_dir, jobs, events))


async def _serve(policy_data: dict[str, Any], base_dir: str, jobs: Any, events: Any) -> None:
    from gateway.audit.guardrails import Guardrails
    from gateway.audit.service import AuditJob, Auditor
    from gateway.audit.store import AuditStore
    from gateway.config import Policy
    from gateway.costs import CostModel
    from gateway.ledger.store import create_engine, normalize_url
    from serving.dispatch import Dispatcher

    policy = Policy.model_validate({**policy_data, "base_dir": base_dir})
    config = policy.audit
    assert config is not None
    loop = asyncio.get_running_loop()

    def emit(event: tuple[Any, ...]) -> None:
        with contextlib.suppress(Exception):  # a parent that went away must not stop the audits
            events.send(event)

    engine = create_engine(normalize_url(policy.ledger.url, base_dir))
    store = AuditStore(lambda: engine, policy.resolve_path(policy.ledger.spill_dir))
    store.start()
    thresholds = {d.name: d.threshold if d.threshold is not None else policy.router.threshold
                  for d in policy.domains}
    guardrails = Guardrails(config, thresholds, store) if config.guardrails else None
    if guardrails is not None:
        guardrails.on_change = lambda domain, state: emit(("guard", domain, asdict(state)))
        await guardrails.start()
    dispatcher = Dispatcher(policy)
    if policy.slm_backends and config.shadow and policy.router.shadow:
        await dispatcher.start()  # shadow audits call SLMs: know which replicas are up
    auditor = Auditor(policy, config, dispatcher, CostModel.from_policy(policy), store, guardrails)
    auditor.emit = emit
    auditor.dispatcher.llm.litellm  # noqa: B018 - import litellm now, not on the first audit
    stopped = asyncio.Event()
    resets: set[asyncio.Task[Any]] = set()

    def handle(message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "job":
            auditor.submit(AuditJob(**message[1]))
        elif kind == "reset" and guardrails is not None:
            task = loop.create_task(guardrails.reset(message[1], actor=message[2]))
            resets.add(task)
            task.add_done_callback(resets.discard)
        elif kind == "stop":
            stopped.set()

    def read() -> None:  # the queue blocks: read it on a thread, act on the loop
        while True:
            try:
                message = jobs.recv()
            except (EOFError, OSError):
                message = ("stop",)
            loop.call_soon_threadsafe(handle, message)
            if message[0] == "stop":
                return

    threading.Thread(target=read, name="audit-jobs", daemon=True).start()
    emit(("ready",))
    await stopped.wait()
    await auditor.close(within_s=10.0)
    await store.close()
    if guardrails is not None:
        await guardrails.close()
    await dispatcher.close()
    await engine.dispose()
