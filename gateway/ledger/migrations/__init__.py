"""Alembic migrations of the ledger schema (applied by ``gateway.ledger.store.migrate``)."""
