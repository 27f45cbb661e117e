"""Geometry: cameras, rotations, Procrustes. Pure batched torch functions over leading dims.

Conventions: ``x_cam = R @ x_world + t`` (OpenCV: x right, y down, z forward), K (3, 3),
dist = (k1, k2, p1, p2, k3), metres inside, quaternions with an explicit ``scalar_first``.
"""

from pose3d.geometry.camera import (
    Camera,
    camera_to_world,
    dist_from_h36m,
    distort_normalized,
    extrinsics_from_h36m,
    extrinsics_from_martinez,
    intrinsics_matrix,
    normalize_screen,
    normalized_to_pixels,
    pixels_to_normalized,
    project,
    project_camera,
    projection_matrix,
    quaternion_to_matrix,
    stack_cameras,
    undistort_points,
    unnormalize_screen,
    world_to_camera,
)
from pose3d.geometry.procrustes import align_similarity, apply_similarity, similarity_procrustes
from pose3d.geometry.rotations import (
    axis_angle_to_matrix,
    look_at,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    random_rotation,
    rotation_about_axis,
    rotation_angle_deg,
    skew,
)
from pose3d.geometry.shapes import check_shape

__all__ = [
    "Camera", "camera_to_world", "dist_from_h36m", "distort_normalized", "extrinsics_from_h36m",
    "extrinsics_from_martinez", "intrinsics_matrix", "normalize_screen", "normalized_to_pixels",
    "pixels_to_normalized", "project", "project_camera", "projection_matrix",
    "quaternion_to_matrix", "stack_cameras", "undistort_points", "unnormalize_screen",
    "world_to_camera", "align_similarity", "apply_similarity", "similarity_procrustes",
    "axis_angle_to_matrix", "look_at", "matrix_to_axis_angle", "matrix_to_quaternion",
    "random_rotation", "rotation_about_axis", "rotation_angle_deg", "skew", "check_shape",
]
