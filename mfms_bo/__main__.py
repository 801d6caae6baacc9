from mfms_bo.cli import main

raise SystemExit(main())
