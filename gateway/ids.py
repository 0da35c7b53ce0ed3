"""Unique ids without a system call per id: a random per-process prefix and a counter.

96 random bits per process (re-drawn after a fork) keep ids from different gateway replicas and
workers apart; the counter keeps them apart within one. ``os.urandom`` per id cost ~12 us, more than
the rest of the request's bookkeeping.
"""

from __future__ import annotations

import itertools
import os

_pid = -1
_prefix = ""
_counter = itertools.count()


def new_id() -> str:
    """A hex id (32 characters until the counter passes 2**32), unique across processes and replicas."""
    global _pid, _prefix
    if os.getpid() != _pid:
        _pid, _prefix = os.getpid(), os.urandom(12).hex()
    return f"{_prefix}{next(_counter):08x}"
