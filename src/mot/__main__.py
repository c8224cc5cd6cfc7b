from mot.cli import main

raise SystemExit(main())
