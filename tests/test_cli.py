"""The one stage wrapper: error policy, exit codes, clean-up of what a killed run left."""

from __future__ import annotations

import pytest
import yaml

from pose3d.runtime import cli
from pose3d.data.io import DataError

ARGS = {"--inp": dict(required=True), "--out": dict(output=True, required=True),
        "--model-dir": dict(output=True, required=True)}


@pytest.fixture()
def params(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"base": {"mlflow": False}, "evaluate": {}}))
    return p


def _argv(tmp_path, params):
    return ["--inp", str(tmp_path / "in.txt"), "--out", str(tmp_path / "out" / "pred.parquet"),
            "--model-dir", str(tmp_path / "model"), "--params", str(params)]


def test_a_stage_removes_the_temporaries_a_killed_run_left(tmp_path, params):
    (tmp_path / "out").mkdir()
    (tmp_path / "model").mkdir()
    debris = [tmp_path / "out" / ".pred.parquet.k3j2.parquet.tmp",      # atomic_path of --out
              tmp_path / "model" / ".checkpoint.pt.x9a.pt.tmp",         # a checkpoint mid-write
              tmp_path / ".model.q1w2"]                                  # atomic_dir of --model-dir
    for d in debris[:2]:
        d.write_bytes(b"half")
    debris[2].mkdir()
    keep = [tmp_path / "in.txt", tmp_path / ".in.txt.a1.txt.tmp", tmp_path / "model" / "model.pt"]
    for k in keep:
        k.write_bytes(b"user data")
    seen = []
    assert cli.run_stage("doc", "evaluate", ARGS, lambda s, a, run: seen.append(a) or "ok",
                         argv=_argv(tmp_path, params), device=False) == 0
    assert seen and not any(d.exists() for d in debris)
    assert all(k.exists() for k in keep)  # inputs (and their temporaries) are not the stage's


def test_bad_input_exits_1_with_the_message_and_params_errors_exit_2(tmp_path, params, caplog):
    def body(s, a, run):
        raise DataError(f"{a.inp}: file not found")

    assert cli.run_stage("doc", "evaluate", ARGS, body, argv=_argv(tmp_path, params), device=False) == 1
    assert f"{tmp_path / 'in.txt'}: file not found" in caplog.text
    params.write_text(yaml.safe_dump({"base": {"mlflow": False}, "evaluate": {"split": "nope"}}))
    with pytest.raises(SystemExit) as e:
        cli.run_stage("doc", "evaluate", ARGS, body, argv=_argv(tmp_path, params), device=False)
    assert e.value.code == 2


def test_a_bad_mocap_path_leaves_the_previous_studio_outputs_alone(tmp_path):
    from pose3d.tasks import data

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"mlflow": False},
                                      "studio": {"source": "mocap", "mocap_path": str(tmp_path / "nope.bvh")}}))
    old = {name: tmp_path / name for name in ("mocap.h5", "cameras.json", "studio.json")}
    for f in old.values():
        f.write_text("the previous run's")
    (tmp_path / "videos").mkdir()
    argv = ["--mocap", str(old["mocap.h5"]), "--cameras", str(old["cameras.json"]), "--videos",
            str(tmp_path / "videos"), "--metrics", str(old["studio.json"]), "--params", str(params)]
    args = {"--mocap-path": dict(default=None), "--mocap": dict(output=True, required=True),
            "--cameras": dict(output=True, required=True), "--videos": dict(output=True, required=True),
            "--metrics": dict(output=True, required=True)}
    assert cli.run_stage("doc", "studio", args, data.run_studio_stage, argv=argv, device=False) == 1
    assert all(f.read_text() == "the previous run's" for f in old.values()) and (tmp_path / "videos").is_dir()


def test_timings_stay_out_of_the_metrics_dvc_compares(tmp_path):
    from pose3d.data.io import write_metrics

    write_metrics(tmp_path / "metrics" / "x.json", tmp_path / "timings" / "x.json",
                  {"mpjpe_mm": 31.5, "seconds": 4.2, "joints_per_s": 9e4, "render_fps": 120.0, "n_frames": 900})
    import json

    assert json.loads((tmp_path / "metrics" / "x.json").read_text()) == {"mpjpe_mm": 31.5, "n_frames": 900}
    assert json.loads((tmp_path / "timings" / "x.json").read_text()) == {"seconds": 4.2, "joints_per_s": 9e4,
                                                                         "render_fps": 120.0}
