"""``python -m gateway.ledger``: upgrade the ledger schema to head (the child process a serving worker
starts when its database is not at head; see ``gateway.ledger.migrate``)."""

import sys

from gateway.ledger.migrate import main

sys.exit(main())
