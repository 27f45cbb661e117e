"""The studio: the project's own multi-view video dataset (stage ``studio``).

* :mod:`.anthropometry` -- subjects: stature, segment ratios (Drillis & Contini), girth,
  clothing colours, motion style; ``make_subject``, ``rest_offsets``.
* :mod:`.motion` -- procedural actions (15 Human3.6M names) through forward kinematics with
  anatomical limits, leg IK for planted feet, a gait cycle for walking; ``generate``.
* :mod:`.rig` -- Human3.6M-like calibrated, distorted cameras; ``make_rig``.
* :mod:`.render` -- ray-cast capsule/ellipsoid body, textured room, shadows, noise, mp4v
  videos through the lens model; ``render_sequence``, ``render_frame``.
* :mod:`.dataset` -- takes (procedural or real mocap), cameras per subject, parallel rendering.
"""
