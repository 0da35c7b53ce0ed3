"""Request ledger: one row per finished request, with its cost, baseline cost and routing facts.

``Ledger.from_policy(policy)`` -> ``await start()``; per request ``record(rec)`` (sync, never raises);
``await close()`` at shutdown. See ``gateway.ledger.writer`` for the buffering/spill contract.
"""

from gateway.ledger.writer import Ledger, LedgerHealth

__all__ = ["Ledger", "LedgerHealth"]
