"""Spill files: ledger rows parked on local disk while the store is unreachable.

Each spill is one complete JSONL file, written to a temporary name, fsynced and renamed, so a crash
never leaves half a file to replay. A replaying process claims a file by renaming it to
``NAME.replaying-HOST-PID`` (atomic, so two workers never replay the same file); the file is deleted
only after its rows are in the store. Rows carry their event id, so a replay interrupted half-way can be
repeated without duplicates.

The directory may be shared by several hosts (a ReadWriteMany volume in Kubernetes, so rows spilled by a
pod survive its deletion and are replayed by another): a claim names its host, a dead process's claim
is released by its own host at once, and a claim from another host once it is ``STALE_CLAIM_S`` old.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

STALE_CLAIM_S = 600.0
"""A claim by another host older than this is taken back (its replay died with its pod)."""

_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _claim_tag() -> str:
    return f".replaying-{_HOST}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SpillDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seq = 0

    def write(self, rows: Iterable[dict[str, Any]]) -> Path | None:
        """Write rows as one new spill file; returns its path (None if there were no rows)."""
        lines = [json.dumps(r, separators=(",", ":"), default=str) for r in rows]
        if not lines:
            return None
        self.path.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"spill-{time.time_ns()}-{os.getpid()}-{self._seq}"
        tmp = self.path / f".{name}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        final = self.path / f"{name}.jsonl"
        os.replace(tmp, final)
        return final

    def pending(self) -> list[Path]:
        """Files waiting for replay: unclaimed ones and this process's own claims, oldest first."""
        if not self.path.is_dir():
            return []
        own = _claim_tag()
        return sorted(p for p in self.path.iterdir()
                      if p.name.startswith("spill-") and (p.suffix == ".jsonl" or p.name.endswith(own)))

    def claim(self, path: Path) -> Path | None:
        """Take a file for replay; None if another process took it first."""
        own = _claim_tag()
        if path.name.endswith(own):
            return path
        target = path.with_name(path.name + own)
        try:
            os.replace(path, target)
            os.utime(target)  # the claim's age, for hosts that cannot see whether this process lives
        except FileNotFoundError:
            return None
        return target

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
        return rows

    def recover_stale(self, stale_after_s: float = STALE_CLAIM_S) -> int:
        """Release claims of processes that died mid-replay, so their rows are replayed again: on this
        host when the process is gone, from another host (or an older claim without a host) when the
        claim is older than ``stale_after_s``."""
        if not self.path.is_dir():
            return 0
        n = 0
        now = time.time()
        for p in self.path.iterdir():
            name, _, tag = p.name.rpartition(".replaying-")
            host, _, pid = tag.rpartition("-")
            if not name or not pid.isdigit() or p.name.endswith(_claim_tag()):
                continue
            try:
                if host in (_HOST, ""):  # this host's, or a claim from before claims named their host
                    dead = not _alive(int(pid))
                else:
                    dead = now - p.stat().st_mtime > stale_after_s
                if dead:
                    os.replace(p, p.with_name(name))
                    n += 1
            except FileNotFoundError:
                pass
        return n

    def count_rows(self) -> int:
        total = 0
        for p in self.pending():
            try:
                with open(p, "rb") as fh:
                    total += sum(1 for _ in fh)
            except FileNotFoundError:
                pass
        return total
