import sys

from benchmarks.reports.run import main

sys.exit(main())
