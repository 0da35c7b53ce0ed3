"""Run the gateway in a background thread on a free loopback port (demo, tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.config import Policy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class BackgroundGateway:
    def __init__(self, policy: Policy, port: int | None = None, path: Path | None = None) -> None:
        self.policy = policy
        self.port = port or free_port()
        self.app = create_app(policy, path=path)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="on", loop="asyncio")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout: float = 30.0) -> BackgroundGateway:
        self._thread = threading.Thread(target=self.server.run, name="slmgw-gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the gateway failed to start; see the log above")
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not start in time")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)

    def __enter__(self) -> BackgroundGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
