"""Client keys created with ``slmgw keys``: stored as SHA-256 hashes in the ledger's database.

``store`` holds the queries (``table`` the table, imported with SQLAlchemy at first use), ``refresh``
keeps each gateway process's in-memory copy current, ``cli`` is the ``slmgw keys`` command group. See
docs/security.md.
"""
