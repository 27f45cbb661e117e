"""Learned models (networks only; how each is trained is in :mod:`pose3d.tasks`). Every lifter
maps (B, T, J, 2) screen-normalised 2D -> (B, T, J, 3) root-relative camera-frame metres; the
registries are :data:`pose3d.tasks.lifting.steps.LIFTERS` and :data:`pose3d.tasks.pose2d.MODELS_2D`."""
