"""Spill files: ledger rows parked on local disk while the store is unreachable.

Each spill is one complete JSONL file, written to a temporary name, fsynced and renamed, so a crash
never leaves half a file to replay. A replaying process claims a file by renaming it to
``NAME.replaying-PID`` (atomic, so two workers never replay the same file); the file is deleted only
after its rows are in the store. Rows carry their event id, so a replay interrupted half-way can be
repeated without duplicates.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


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
        own = f".replaying-{os.getpid()}"
        return sorted(p for p in self.path.iterdir()
                      if p.name.startswith("spill-") and (p.suffix == ".jsonl" or p.name.endswith(own)))

    def claim(self, path: Path) -> Path | None:
        """Take a file for replay; None if another process took it first."""
        own = f".replaying-{os.getpid()}"
        if path.name.endswith(own):
            return path
        target = path.with_name(path.name + own)
        try:
            os.replace(path, target)
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

    def recover_stale(self) -> int:
        """Release claims of processes that died mid-replay, so their rows are replayed again."""
        if not self.path.is_dir():
            return 0
        n = 0
        for p in self.path.iterdir():
            name, _, pid = p.name.rpartition(".replaying-")
            if name and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                try:
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
