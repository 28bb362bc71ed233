from gateway.process.cli import main

raise SystemExit(main())
