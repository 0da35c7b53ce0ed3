import sys

from benchmarks.reload.run import main

sys.exit(main())
