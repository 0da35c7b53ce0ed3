"""Cost-savings reports from the ledger: computation (``compute``), the ``slmgw report`` CLI (``cli``),
the admin API and HTML dashboard (``admin``)."""
