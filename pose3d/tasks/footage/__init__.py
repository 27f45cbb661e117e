"""Your own footage in, 3D out: videos (or 2D keypoints from another tool) -> 3D poses, exports
(BVH, TRC, C3D, VideoPose3D npz, Parquet) and a 3D skeleton video. See :mod:`.pipeline`."""

from pose3d.tasks.footage.pipeline import FootageResult, infer

__all__ = ["FootageResult", "infer"]
