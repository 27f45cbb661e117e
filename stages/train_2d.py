"""Stage ``train_2d``: train the SimpleBaseline pose_resnet on the person crops.

    python stages/train_2d.py --crops-h5 data/crops/crops.h5 --crops-index data/crops/crops.parquet \
        --model-dir models/pose2d --checkpoint models/pose2d/checkpoint.pt \
        --metrics reports/metrics/train_2d.json --curves reports/plots/curves_train_2d.csv
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pose3d import cli, params, pose2d, tracking
from pose3d.data.crops import Augmentation, read_crop_index
from pose3d.data.io import DataError, write_json
from pose3d.models.pose_resnet import PoseResNetConfig
from pose3d.train import TrainConfig, save_model

log = logging.getLogger("train_2d")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops-h5", required=True)
    ap.add_argument("--crops-index", required=True)
    ap.add_argument("--model-dir", required=True, help="writes model.pt + config.json here")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--curves", required=True)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    s = cli.setup("pose2d", a.params)
    p, base = s.params, s.base
    try:
        index = read_crop_index(a.crops_index)
    except DataError as e:
        log.error("%s", e)
        return 1
    model_config = PoseResNetConfig(depth=p.depth, num_joints=len(index.meta["joint_names"]),
                                    deconv_channels=p.deconv_channels, deconv_kernel=p.deconv_kernel,
                                    num_deconv=p.num_deconv)
    trainer_config = TrainConfig(epochs=p.epochs, device=base.device, cpu_precision=base.cpu_precision,
                                 channels_last=p.channels_last, seed=base.seed,
                                 checkpoint=Path(a.checkpoint), curves_csv=Path(a.curves), desc="train_2d")
    aug = Augmentation(scale=p.aug_scale, rotation=p.aug_rotation, rotation_prob=p.aug_rotation_prob,
                       flip_prob=p.aug_flip_prob, color=p.aug_color, brightness=p.aug_brightness,
                       shift=p.aug_shift)
    # the checkpoint resumes only for identical params and identical crops
    fp = params.fingerprint(p, base) + "-" + str(index.meta.get("crop_size")) + f"-{len(index)}"
    flat = {**s.flat, "extract.crop_size": index.crop_size}
    with tracking.stage_run(stage="train_2d", params=flat, base=base) as run:
        model, history, final = pose2d.fit(
            a.crops_h5, index, model_config=model_config, trainer_config=trainer_config, run=run,
            fingerprint=fp, max_train_crops=p.max_train_crops, val_max_crops=p.val_max_crops,
            batch_size=p.batch_size, lr=p.lr, lr_schedule=p.lr_schedule, lr_steps=p.lr_steps,
            lr_factor=p.lr_factor, weight_decay=p.weight_decay, sigma=p.sigma, augmentation=aug, flip_test=p.flip_test,
            decode_method=p.decode)
        save_model(a.model_dir, model, {**model_config.to_dict(), "input_size": index.crop_size,
                                        "sigma": p.sigma, "architecture": "pose_resnet"})
        final["epochs"] = len(history)
        write_json(a.metrics, final)
        run.log_metrics({f"final_{k}": v for k, v in pose2d.flat_metrics(final).items()})
        run.log_artifact(a.metrics)
    log.info("train_2d: validation PCK@0.1 %.4f, mean error %.2f px (%.2f per 1000 px)",
             final["pck_0.1"], final["mean_px_error"], final["mean_px_error_per_1000px"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
