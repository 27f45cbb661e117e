"""Stage logic, one module (or package) per task: pose2d (train_2d, detect_2d), lifting
(lift@<model>), image3d (train_hg3d), triangulate (triangulate@<method>), evaluate, data (studio,
prepare, extract). Each exposes ``run_stage(setup, paths, tracker) -> str`` for
:func:`pose3d.runtime.cli.run_stage`; stages/*.py only name their files."""
