"""The ledger's memory is bounded even when rows can be neither written nor spilled (issue 13): rows
over ``memory_max_rows`` are counted in a metric and logged with their request ids, never dropped
silently."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gateway.costs import CostModel
from gateway.ledger import Ledger
from gateway.metrics import Metrics

try:
    from tests.gateway.ledger_helpers import PRICES, policy, rec
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import PRICES, policy, rec  # type: ignore[no-redef]


async def test_rows_beyond_the_memory_bound_are_counted_and_logged(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "ledger.sqlite").mkdir()  # the store is down: every connection fails
    (tmp_path / "spill").write_text("a file, so the spill directory cannot be created")
    p = policy({"ledger": {"url": "sqlite:///ledger.sqlite", "spill_dir": "spill", "flush_interval_s": 0.05,
                           "retry_max_s": 0.1, "buffer_max": 10, "memory_max_rows": 60}},
               base_dir=str(tmp_path))
    metrics = Metrics()
    ledger = Ledger.from_policy(p, metrics=metrics, costs=CostModel.from_policy(p, PRICES))
    await ledger.start()
    caplog.set_level(logging.ERROR, logger="gateway.ledger.writer")
    try:
        for i in range(100):
            ledger.record(rec(request_id=f"r{i:03d}"))
            if i % 10 == 0:
                await asyncio.sleep(0.02)  # let the spiller try (and fail)
        state = ledger.state()
        assert state.buffered == 60, state
        assert state.dropped == 40, state
        assert state.as_dict()["dropped"] == 40
        assert metrics.registry.get_sample_value("slmgw_ledger_rows_dropped_total") == 40
        assert "cannot spill" in caplog.text or "DROPPED" in caplog.text
    finally:
        await ledger.close(within_s=0.5)
    logged = caplog.text
    assert "DROPPED" in logged and "r099" in logged and "r060" in logged  # each dropped id is named
    # close() could not write or spill the 60 kept rows either: they are counted and logged too.
    assert ledger.state().dropped == 100
    assert metrics.registry.get_sample_value("slmgw_ledger_rows_dropped_total") == 100
