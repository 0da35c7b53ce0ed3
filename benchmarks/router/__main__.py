from benchmarks.router.run import main

raise SystemExit(main())
