import sys

from benchmarks.cache.run import main

sys.exit(main())
