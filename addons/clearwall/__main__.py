from clearwall.cli import main

raise SystemExit(main())
