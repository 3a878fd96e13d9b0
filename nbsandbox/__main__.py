from nbsandbox.cli import main

raise SystemExit(main())
