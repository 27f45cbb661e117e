"""Camera calibration from a checkerboard or ChArUco board: detection, per-camera intrinsics,
pairwise extrinsics, bundle adjustment, world frame from a floor take -> cameras.json.

Command: ``python -m pose3d.tasks.calibrate BOARD_TAKE --board SPEC --out cameras.json``
(:mod:`.cli`); library: :func:`pose3d.tasks.calibrate.pipeline.run`.
"""
