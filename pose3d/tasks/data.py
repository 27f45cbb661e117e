"""The data stages: ``studio`` (animate and film), ``prepare`` (import Human3.6M layouts) and
``extract`` (videos -> person crops), and the VideoPose3D export tool. The work is in :mod:`pose3d.data`; these are the stage
bodies for :func:`pose3d.runtime.cli.run_stage`."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from pose3d.data import h36m
from pose3d.data.contracts import read_detections
from pose3d.data.crops import extract_crops
from pose3d.data.export import export_vp3d
from pose3d.data.io import (DataError, atomic_dir, save_cameras, write_metrics,
                            write_mocap)
from pose3d.data.studio import dataset
from pose3d.data.views import GroundTruth

log = logging.getLogger(__name__)


def run_studio_stage(s, paths, tracker) -> str:
    """Animate the subjects and film them. The takes (and every input they need) are built
    first: a bad ``mocap_path`` leaves the previous outputs alone. Once writing has started, an
    error removes all four outputs, so no half-new set is left."""
    p = s.params
    t0 = time.perf_counter()
    takes, cams, subjects = _studio_takes(p, paths)
    outputs = [Path(paths.mocap), Path(paths.cameras), Path(paths.videos), Path(paths.metrics)]
    try:
        return _film(p, paths, tracker, takes, cams, subjects, t0)
    except BaseException:
        for path in outputs:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
        raise


def _studio_takes(p, paths):
    mocap_path = p.mocap_path if paths.mocap_path is None else paths.mocap_path
    if p.source == "procedural":
        takes = dataset.procedural_sequences(p.subjects, p.actions, p.seconds, p.fps, p.seed)
    else:
        if not mocap_path:
            raise DataError("studio.mocap_path: required when studio.source is mocap")
        takes = dataset.mocap_sequences(mocap_path, p.subjects, p.actions if p.actions else None,
                                        p.fps, p.max_seconds, p.seed, p.bvh_unit_m)
    subjects = sorted({t.sequence.subject for t in takes}, key=list(p.subjects).index)
    cams = dataset.make_cameras(subjects, p.num_cameras, p.width, p.height, p.camera_distance,
                                p.camera_height, p.seed)
    return takes, cams, subjects


def _film(p, paths, tracker, takes, cams, subjects, t0) -> str:
    n_pose_frames = sum(len(t.sequence.positions_world) for t in takes)
    log.info("%d takes, %d subjects, %d pose frames, %d cameras", len(takes), len(subjects),
             n_pose_frames, p.num_cameras)
    stats = {"frames": 0, "seconds": 0.0, "fps": 0.0}
    with atomic_dir(paths.videos) as tmp_videos:
        if p.render:
            with tqdm(total=len(takes), desc="studio: takes", unit="take") as bar:
                stats = dataset.render_videos(takes, cams, tmp_videos, p.seed, p.workers, progress=bar.update)
        write_mocap(paths.mocap, [t.sequence for t in takes])
        save_cameras(paths.cameras, cams)
    size = sum(f.stat().st_size for f in Path(paths.videos).rglob("*.mp4"))
    summary = {"takes": len(takes), "subjects": len(subjects), "pose_frames": n_pose_frames,
               "video_frames": stats["frames"], "render_seconds": round(stats["seconds"], 2),
               "render_fps": round(stats["fps"], 2), "videos_mb": round(size / 2**20, 2),
               "seconds": round(time.perf_counter() - t0, 2)}
    write_metrics(paths.metrics, paths.timings, summary)
    tracker.log_metrics(summary)
    return json.dumps(summary)


def run_prepare_stage(s, paths, tracker) -> str:
    """Convert a Human3.6M layout (``prepare.layout``) into the studio layout (empty with ``none``)."""
    p = s.params
    source = p.source if paths.source is None else paths.source
    t0 = time.perf_counter()
    dataset_ = None
    if p.layout != "none":
        dataset_ = h36m.load_layout(p.layout, source, source_2d=p.source_2d, cameras=p.cameras,
                                    images=p.images, allow_pickle=p.allow_pickle, trim_extra_2d=p.trim_extra_2d)
        drop = {}
        if p.drop_s11_directions:
            drop.setdefault("S11", []).extend(p.s11_directions_actions)
        if p.drop_s9_damaged:
            drop.setdefault("S9", []).extend(p.s9_damaged_actions)
        dataset_ = h36m.select(dataset_, subjects=p.subjects, drop=drop, every_nth=p.every_nth)
    summary = h36m.write_prepared(paths.out_dir, dataset_, source_fps=p.source_fps,
                                  test_subjects=p.test_subjects, link_mode=p.link_mode)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    write_metrics(paths.metrics, paths.timings, summary)
    tracker.log_metrics({k: float(v) for k, v in summary.items()})
    return f"{p.layout}: {json.dumps(summary)}"


def run_extract_stage(s, paths, tracker) -> str:
    """Cut the person crops out of every video."""
    p = s.params
    stats = extract_crops(paths.mocap, paths.cameras, paths.videos, paths.out_h5, paths.out_index,
                          crop_size=p.crop_size, frame_stride=p.frame_stride, box_source=p.box_source,
                          box_margin=p.box_margin, bg_frames=p.bg_frames, bg_threshold=p.bg_threshold,
                          on_error=p.on_error, compression=p.compression)
    tracker.log_metrics({"crops": stats["crops"], "videos": stats["videos"],
                         "skipped_videos": len(stats["skipped_videos"]),
                         "background_fallbacks": stats["background_fallbacks"], "seconds": stats["seconds"],
                         "frames_per_s": stats["crops"] / max(stats["seconds"], 1e-9)})
    return (f"{stats['crops']} crops from {stats['videos']} videos in {stats['seconds']:.1f} s "
            f"({len(stats['skipped_videos'])} skipped, {stats['background_fallbacks']} background fallbacks)")


def run_export_vp3d(s, paths, tracker) -> str:
    """Write mocap.h5 + cameras.json (+ detections) in VideoPose3D's npz layout."""
    truth = GroundTruth.load(paths.mocap, paths.cameras, split=paths.split)
    det = read_detections(paths.detections) if paths.detections else None
    out = export_vp3d(paths.out_dir, paths.name, truth, detections=det,
                      detections_source=paths.detections_source, joints=paths.joints)
    return "wrote " + ", ".join(f"{p} ({kind})" for kind, p in out.items())
