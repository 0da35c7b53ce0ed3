"""Cache stores: the in-process LRU, and Redis (the real one on :6379, and ones these tests start,
stop and black-hole to see the cache degrade and recover)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as redis_sync

from gateway.cache.memory import MemoryBackend
from gateway.cache.redis_backend import RedisBackend

REDIS_URL = os.environ.get("SLMGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server on its own port (no persistence), to stop and restart mid-test."""

    def __init__(self, port: int | None = None, *extra: str) -> None:
        self.extra = list(extra)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--protected-mode", "no", *self.extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis_sync.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis_sync.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def shared_redis() -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(REDIS_URL, op_timeout_s=0.5)
    yield backend
    await backend.close()


# -- in-process LRU ----------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_get_set_and_expiry() -> None:
    clock = Clock()
    mem = MemoryBackend(clock=clock)
    assert await mem.get("k") is None
    assert await mem.set("k", b"v", ttl_s=10)
    assert await mem.get("k") == b"v"
    clock.now += 9.9
    assert await mem.get("k") == b"v"
    clock.now += 0.2
    assert await mem.get("k") is None
    assert len(mem) == 0 and mem.size_bytes == 0


async def test_memory_evicts_least_recently_used_by_count() -> None:
    mem = MemoryBackend(max_entries=2)
    await mem.set("a", b"1", 60)
    await mem.set("b", b"2", 60)
    assert await mem.get("a") == b"1"  # a is now the most recent
    await mem.set("c", b"3", 60)
    assert await mem.get("b") is None
    assert await mem.get("a") == b"1" and await mem.get("c") == b"3"


async def test_memory_bounded_by_bytes() -> None:
    mem = MemoryBackend(max_entries=100, max_bytes=2048)
    for i in range(5):
        await mem.set(f"k{i}", bytes(600), 60)
    assert mem.size_bytes <= 2048 and len(mem) == 3
    assert await mem.get("k0") is None and await mem.get("k4") is not None
    assert not await mem.set("huge", bytes(4096), 60)
    await mem.set("k4", b"small", 60)  # replacing an entry frees its old size
    assert mem.size_bytes == 1200 + 5


async def test_memory_delete_prefix_and_health() -> None:
    mem = MemoryBackend()
    await mem.set("t1:a", b"1", 60)
    await mem.set("t1:b", b"1", 60)
    await mem.set("t2:a", b"1", 60)
    assert await mem.delete_prefix("t1:") == 2
    assert mem.health() == {"backend": "memory", "ok": True, "entries": 1, "bytes": 1}


# -- Redis: the real one ------------------------------------------------------------------------------

async def test_redis_set_get_with_ttl(shared_redis: RedisBackend, prefix: str) -> None:
    assert await shared_redis.get(prefix + "k") is None
    assert await shared_redis.set(prefix + "k", b"value", ttl_s=120)
    assert await shared_redis.get(prefix + "k") == b"value"
    ttl = redis_sync.Redis.from_url(REDIS_URL).ttl(prefix + "k")
    assert 110 < ttl <= 120
    assert shared_redis.health()["ok"] is True
    assert shared_redis.stats.errors == 0


async def test_redis_entries_expire(shared_redis: RedisBackend, prefix: str) -> None:
    assert await shared_redis.set(prefix + "short", b"v", ttl_s=1)
    assert await shared_redis.get(prefix + "short") == b"v"
    await asyncio.sleep(1.2)
    assert await shared_redis.get(prefix + "short") is None


async def test_redis_delete_prefix_escapes_glob(shared_redis: RedisBackend, prefix: str) -> None:
    await shared_redis.set(prefix + "a*:1", b"v", 60)
    await shared_redis.set(prefix + "ab:1", b"v", 60)
    assert await shared_redis.delete_prefix(prefix + "a*") == 1
    assert await shared_redis.get(prefix + "ab:1") == b"v"


# -- Redis: down, slow, back ------------------------------------------------------------------------

async def test_redis_unreachable_is_a_fast_miss_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", op_timeout_s=0.05, backoff_min_s=60)
    caplog.set_level(logging.WARNING, "slmgw.cache")
    t0 = time.perf_counter()
    for _ in range(50):
        assert await backend.get("k") is None
        assert await backend.set("k", b"v", 60) is False
    assert time.perf_counter() - t0 < 0.5
    assert backend.stats.errors == 1 and backend.stats.skipped == 99  # refused once, then not tried
    health = backend.health()
    assert health["ok"] is False and health["state"] == "down" and "Connection" in health["last_error"]
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    await backend.close()


async def test_redis_outage_relogged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", backoff_min_s=1000, log_interval_s=60,
                           clock=clock)
    caplog.set_level(logging.WARNING, "slmgw.cache")
    await backend.get("k")
    for _ in range(10):
        clock.now += 10
        await backend.get("k")  # 100 s of outage at 10 s steps: one reminder at +60 s
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("still" not in m and "unavailable (" in m for m in msgs) == 1
    assert sum("still unavailable" in m for m in msgs) == 1
    await backend.close()


async def test_redis_slow_server_times_out_within_budget() -> None:
    # A server that accepts connections and never answers: every operation must end at the budget.
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0", op_timeout_s=0.005, failure_threshold=3,
                           backoff_min_s=60)
    try:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            assert await backend.get("k") is None
            times.append(time.perf_counter() - t0)
        assert max(times) < 0.1, times  # 5 ms budget plus scheduling slack on a busy machine
        assert backend.stats.errors == 3 and backend.stats.skipped == 2  # down after 3 timeouts
        assert backend.health()["state"] == "down" and "Timeout" in backend.health()["last_error"]
    finally:
        await backend.close()
        server.close()
        await server.wait_closed()


async def test_one_slow_answer_does_not_mark_redis_down(own_redis: RedisServer) -> None:
    backend = RedisBackend(own_redis.url, op_timeout_s=0.5, failure_threshold=3)
    try:
        await backend.set("k", b"v", 60)
        backend._failed(TimeoutError())  # one timeout on a busy machine
        assert backend.health()["ok"] is True
        assert await backend.get("k") == b"v"
    finally:
        await backend.close()


async def test_redis_stop_and_restart_recovers(own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "slmgw.cache")
    backend = RedisBackend(own_redis.url, op_timeout_s=0.5, backoff_min_s=0.05, backoff_max_s=0.2)
    try:
        assert await backend.set("k", b"v", 60)
        assert await backend.get("k") == b"v"
        own_redis.stop()
        t0 = time.perf_counter()
        for _ in range(20):
            assert await backend.get("k") is None
        assert time.perf_counter() - t0 < 1.0
        assert backend.health()["ok"] is False
        own_redis.start()  # same port, empty (no persistence)
        deadline = time.monotonic() + 5
        while not await backend.set("k2", b"w", 60):
            assert time.monotonic() < deadline, backend.health()
            await asyncio.sleep(0.05)
        assert await backend.get("k2") == b"w"
        assert backend.health()["ok"] is True and backend.health()["down_for_s"] is None
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        await backend.close()


def test_password_is_not_logged() -> None:
    backend = RedisBackend("redis://user:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in backend._safe_url()


async def test_start_connects_up_front_or_reports_down() -> None:
    live = RedisBackend(REDIS_URL, op_timeout_s=0.005)
    await live.start()
    assert live.health()["ok"] is True and live.stats.errors == 0
    assert live._client.connection_pool._available_connections  # a warm connection is pooled
    await live.close()
    dead = RedisBackend(f"redis://127.0.0.1:{free_port()}/0")
    await dead.start()
    assert dead.health()["state"] == "down" and dead.stats.errors == 1
    await dead.close()


async def test_a_slow_reply_keeps_its_connection() -> None:
    # Redis busy for 300 ms (DEBUG SLEEP): the lookup gives up at its budget, but the connection is not
    # torn down; the late reply is read and the connection reused, so no reconnect storm follows.
    server = RedisServer(None, "--enable-debug-command", "yes")
    server.start()
    backend = RedisBackend(server.url, op_timeout_s=0.05, failure_threshold=5)
    try:
        await backend.start()
        admin = redis_sync.Redis(port=server.port)
        assert await backend.set("k", b"v", 60)
        accepted = admin.info("stats")["total_connections_received"]
        connected = threading.Event()

        def sleep_redis() -> None:
            client = redis_sync.Redis(port=server.port)
            client.ping()  # connected before the clock starts: a loaded machine can take a while
            connected.set()
            client.execute_command("DEBUG", "SLEEP", "0.3")

        sleeper = asyncio.create_task(asyncio.to_thread(sleep_redis))
        assert await asyncio.to_thread(connected.wait, 10)
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        assert await backend.get("k") is None
        assert time.perf_counter() - t0 < 0.2
        await sleeper
        await asyncio.sleep(0.05)
        assert await backend.get("k") == b"v"
        # Only the DEBUG SLEEP client connected meanwhile: the backend did not reconnect.
        assert admin.info("stats")["total_connections_received"] == accepted + 1
        admin.close()
        assert backend.health()["ok"] is True and backend.stats.errors == 1
    finally:
        await backend.close()
        server.stop()


async def test_a_reply_that_arrived_while_the_process_was_starved_still_counts(
        shared_redis: RedisBackend, prefix: str) -> None:
    backend = RedisBackend(REDIS_URL, op_timeout_s=0.02)
    await backend.start()
    assert await shared_redis.set(prefix + "k", b"v", 60)

    async def hog() -> None:
        await asyncio.sleep(0)
        time.sleep(0.1)  # noqa: ASYNC251 -- deliberately starve the event loop past the budget

    try:
        results = []
        for _ in range(3):
            blocker = asyncio.create_task(hog())
            results.append(await backend.get(prefix + "k"))
            await blocker
        assert results == [b"v"] * 3
        assert backend.stats.errors == 0 and backend.health()["ok"] is True
    finally:
        await backend.close()
