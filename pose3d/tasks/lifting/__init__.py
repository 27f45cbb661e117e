"""2D -> 3D lifting: data and augmentation (:mod:`.data`), per-model training steps
(:mod:`.steps`), and the stage pipeline (:mod:`.pipeline`: train, predict, score, write)."""
