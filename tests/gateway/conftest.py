"""Fixtures shared by the gateway tests that use the machine's Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_sync

REDIS_URL = os.environ.get("SLMGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted afterwards."""
    p = f"slmgw-test:{uuid.uuid4().hex[:10]}:"
    yield p
    client = redis_sync.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=p + "*"))
    if keys:
        client.delete(*keys)
    client.close()
