from videogen_client.cli import main

raise SystemExit(main())
