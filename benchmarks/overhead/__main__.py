import sys

from benchmarks.overhead.run import main

sys.exit(main())
