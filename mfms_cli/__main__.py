from mfms_cli.main import main

raise SystemExit(main())
