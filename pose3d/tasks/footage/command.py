"""``p3d infer``: the footage route on the command line (:func:`pose3d.tasks.footage.infer`)."""

from __future__ import annotations

import argparse

from pose3d.tasks.footage.pipeline import DETECTORS, EXPORTS, infer

EXAMPLES = """examples:
  p3d infer clip.mp4 --out out/                         # one camera, focal length assumed
  p3d infer clip.mp4 --focal 1450 --out out/            # one camera, focal length in px
  p3d infer clip.mp4 --detector blazepose --out out/    # BlazePose 2D (weights: p3d fetch-models)
  p3d infer c1.mp4 c2.mp4 c3.mp4 --cameras cameras.json --out out/
  p3d infer --keypoints predictions.json --image-size 1920 1080 --fps 30 --out out/
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "infer", help="videos (or 2D keypoints) -> 3D poses, BVH/TRC/C3D/npz/Parquet, skeleton video",
        description="One camera: person boxes -> 2D (pose_resnet or BlazePose) -> temporal lifter (root-relative 3D + "
                    "trajectory). N calibrated cameras: 2D per view -> RANSAC triangulation + refinement.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="*", help="one video per camera (mp4/avi/mkv/mov/webm or an image folder)")
    p.add_argument("--out", required=True, help="output folder (replaced as a whole when the run succeeds)")
    p.add_argument("--keypoints", nargs="+", default=[], metavar="FILE",
                   help="2D from another tool, one per view: COCO-17 JSON (mmpose/rtmlib), an OpenPose JSON folder, "
                        "MediaPipe 33 (.npy/.npz/.json), DeepLabCut .csv/.h5")
    p.add_argument("--cameras", help="pose3d cameras.json calibrating the views (required for 2+ views)")
    p.add_argument("--subject", help="the cameras.json subject whose cameras to use (when it has several)")
    p.add_argument("--focal", type=float, help="focal length in px of a single uncalibrated camera "
                                               "(default: 1.2 x the longer image side)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), help="image size of --keypoints without video")
    p.add_argument("--fps", type=float, help="frame rate (default: the video's; 30 for keypoints alone)")
    p.add_argument("--background", nargs="+", default=[], metavar="SRC",
                   help="image/video of each view's empty scene (or other clips of the same static camera) for "
                        "the person boxes; default: the clip's own median frame")
    p.add_argument("--detector", default=DETECTORS[0], choices=DETECTORS,
                   help="2D of videos: pose_resnet (studio-trained, background-subtraction boxes; default) or "
                        "blazepose (its own person detector and tracking; weights from `p3d fetch-models`)")
    p.add_argument("--pose2d", help="2D model folder (config.json + model.pt; default: the repo's models/pose2d)")
    p.add_argument("--lifter", help="temporal lifter folder (default: the repo's models/temporal)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--refine-boxes", type=int, default=2, metavar="N",
                   help="passes that re-crop around the previous pass's 2D (default 2)")
    p.add_argument("--ransac-threshold", type=float, default=15.0, metavar="PX", help="RANSAC inlier threshold (px)")
    p.add_argument("--max-frames", type=int, help="only the first N frames")
    p.add_argument("--export", nargs="+", default=list(EXPORTS), choices=EXPORTS, help="formats to write")
    p.add_argument("--no-video", action="store_true", help="skip the skeleton video")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    r = infer(args.videos, args.out, keypoints=args.keypoints, cameras=args.cameras, subject=args.subject,
              focal=args.focal, image_size=args.image_size, fps=args.fps, background=args.background,
              pose2d_dir=args.pose2d, lifter_dir=args.lifter, device=args.device, refine_boxes=args.refine_boxes,
              ransac_threshold_px=args.ransac_threshold, max_frames=args.max_frames, export=args.export,
              video=not args.no_video, progress=not getattr(args, "quiet", False), detector=args.detector)
    print(f"{len(r.joints)} frames, {r.coord_frame} frame, {r.timings['total_s']:.1f} s -> {args.out}: "
          + ", ".join(sorted(p.name for p in r.files.values())))
    return 0
