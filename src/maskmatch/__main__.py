from maskmatch.cli import main

raise SystemExit(main())
