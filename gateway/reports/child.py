"""The report process's side of ``gateway.reports.runner``: builds reports with an engine and event loop
kept for the life of the process. Runs in a child process, so a report never holds the serving
worker's GIL or grows its memory."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

_state: dict[str, Any] = {}


class ReportFailed(RuntimeError):
    """A report failed in the child (the original error as text: driver errors may not pickle)."""


def init() -> None:
    """Process initializer: lower this process's CPU priority, so on a busy machine the serving
    workers run first and reports take what is left."""
    import contextlib
    import os

    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)


def warm_up() -> bool:
    """Import what a report needs, so the first real one does not pay for it."""
    import gateway.reports.compute  # noqa: F401

    return True


def build(url: str, since: datetime, until: datetime | None, by: str, timeout_s: float) -> dict[str, Any]:
    from gateway.ledger.store import create_engine
    from gateway.reports.compute import build_report

    loop: asyncio.AbstractEventLoop = _state.setdefault("loop", asyncio.new_event_loop())
    engines: dict[str, AsyncEngine] = _state.setdefault("engines", {})
    if url not in engines:
        engines[url] = create_engine(url)
    job = asyncio.wait_for(build_report(engines[url], since=since, until=until, by=by), timeout_s)
    try:
        return loop.run_until_complete(job)
    except TimeoutError:
        raise
    except Exception as exc:
        raise ReportFailed(f"{type(exc).__name__}: {exc}") from None
