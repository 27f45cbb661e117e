from pose3d.tasks.calibrate.cli import main

raise SystemExit(main())
