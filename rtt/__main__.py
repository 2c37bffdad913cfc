from rtt.cli import main

raise SystemExit(main())
