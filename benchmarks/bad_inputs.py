"""Bad input, stage by stage: each case damages one input file (or params.yaml), runs the stage
script and records its exit code, its error line and whether any output was written.

    python benchmarks/bad_inputs.py --data <clone with the DAG's outputs> --out reports/benchmarks/bad_inputs.md

A case passes when the stage exits 1 (2 for params), its error line names the damaged file (or
the params key) and no output appears. Inputs come from a clone that ran the DAG (data/studio,
data/detections_2d.parquet, data/crops, models/pose2d); nothing there is modified.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- damage
def _json(path, change):
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def _mocap(path, change):
    with h5py.File(path, "r+") as f:
        change(f)


def _parquet(path, change):
    t = pq.read_table(path)
    pq.write_table(change(t), path)


def _set_meta(t, **kw):
    meta = json.loads(t.schema.metadata[b"pose3d"])
    meta.update(kw)
    return t.replace_schema_metadata({b"pose3d": json.dumps(meta).encode()})


def _drop_meta(t, key):
    meta = {k: v for k, v in json.loads(t.schema.metadata[b"pose3d"]).items() if k != key}
    return t.replace_schema_metadata({b"pose3d": json.dumps(meta).encode()})


def _first_seq(f):
    s = next(iter(f))
    return f[s][next(iter(f[s]))]


def _nan_joint(f):
    g = _first_seq(f)
    x = g["positions_world"][()]
    x[2, 5] = np.nan
    g["positions_world"][...] = x


def _replace_dataset(f, x):
    g = _first_seq(f)
    del g["positions_world"]
    g["positions_world"] = x


def _kp_strings(t):
    i = t.column_names.index("keypoints_px")
    col = pa.array([[str(v) for v in r] for r in t.column(i).to_pylist()], type=pa.list_(pa.string()))
    return t.set_column(i, "keypoints_px", col)


def _kp_16(t):
    i = t.column_names.index("keypoints_px")
    col = pa.array([r[:32] for r in t.column(i).to_pylist()], type=pa.list_(pa.float32(), 32))
    return t.set_column(i, "keypoints_px", col)


def _truncate(path):
    b = path.read_bytes()
    path.write_bytes(b[: len(b) // 3])


def _evil_weights(path):
    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"x": Evil()}, path)


def _cams(change):
    return lambda p: _json(p, change)


def _first_cam(d):
    s = next(iter(d["subjects"]))
    return d["subjects"][s][next(iter(d["subjects"][s]))]


def _drop_camera(d):
    subjects = list(d["subjects"])
    d["subjects"][subjects[-1]].pop(next(iter(d["subjects"][subjects[-1]])))


def _params(change):
    def apply(path):
        p = yaml.safe_load(path.read_text())
        change(p)
        path.write_text(yaml.safe_dump(p, sort_keys=False))
    return apply


# (stage, damaged input, what is done to it, how it is damaged)
CASES = [
    ("lift", "mocap", "missing", lambda p: p.unlink()),
    ("lift", "mocap", "not HDF5 (text)", lambda p: p.write_text("hello")),
    ("lift", "mocap", "truncated", _truncate),
    ("lift", "mocap", "NaN joint", lambda p: _mocap(p, _nan_joint)),
    ("lift", "mocap", "16 joints", lambda p: _mocap(p, lambda f: _replace_dataset(f, np.zeros((5, 16, 3), np.float32)))),
    ("lift", "mocap", "positions as strings", lambda p: _mocap(p, lambda f: _replace_dataset(f, np.array([["a"] * 3] * 17, dtype="S1")[None]))),
    ("lift", "mocap", "joint names reordered", lambda p: _mocap(p, lambda f: f.attrs.__setitem__("joint_names", np.array(list(f.attrs["joint_names"])[::-1], dtype=h5py.string_dtype())))),
    ("lift", "cameras", "missing", lambda p: p.unlink()),
    ("lift", "cameras", "invalid JSON", lambda p: p.write_text("{")),
    ("lift", "cameras", "no 'subjects'", _cams(lambda d: d.pop("subjects"))),
    ("lift", "cameras", "fx = 0", _cams(lambda d: _first_cam(d)["K"][0].__setitem__(0, 0.0))),
    ("lift", "cameras", "NaN in K", _cams(lambda d: _first_cam(d)["K"][1].__setitem__(1, float("nan")))),
    ("lift", "cameras", "R not a rotation", _cams(lambda d: _first_cam(d)["R"][0].__setitem__(0, 3.0))),
    ("lift", "cameras", "dist of 4 values", _cams(lambda d: _first_cam(d).__setitem__("dist", [0, 0, 0, 0]))),
    ("lift", "cameras", "negative width", _cams(lambda d: _first_cam(d).__setitem__("width", -5))),
    ("lift", "cameras", "a camera missing for one subject", _cams(_drop_camera)),
    ("lift", "cameras", "a subject missing", _cams(lambda d: d["subjects"].pop(sorted(d["subjects"])[0]))),
    ("lift", "detections", "missing", lambda p: p.unlink()),
    ("lift", "detections", "not Parquet", lambda p: p.write_text("x,y\n1,2\n")),
    ("lift", "detections", "no pose3d metadata", lambda p: _parquet(p, lambda t: t.replace_schema_metadata(None))),
    ("lift", "detections", "no keypoints_px column", lambda p: _parquet(p, lambda t: t.drop(["keypoints_px"]))),
    ("lift", "detections", "keypoints as strings", lambda p: _parquet(p, _kp_strings)),
    ("lift", "detections", "16 joints per row", lambda p: _parquet(p, _kp_16)),
    ("lift", "detections", "joint_names lacks a joint", lambda p: _parquet(p, lambda t: _set_meta(t, joint_names=["pelvis"] * 17))),
    ("lift", "detections", "a sequence's rows missing", lambda p: _parquet(p, lambda t: t.slice(0, t.num_rows - 7))),
    ("triangulate", "detections", "keypoints as strings", lambda p: _parquet(p, _kp_strings)),
    ("triangulate", "mocap", "NaN joint", lambda p: _mocap(p, _nan_joint)),
    ("triangulate", "cameras", "fx = 0", _cams(lambda d: _first_cam(d)["K"][0].__setitem__(0, 0.0))),
    ("detect", "crops_index", "no gt_2d column", lambda p: _parquet(p, lambda t: t.drop(["gt_2d"]))),
    ("detect", "crops_index", "no crop_size metadata", lambda p: _parquet(p, lambda t: _drop_meta(t, "crop_size"))),
    ("detect", "crops_h5", "not HDF5", lambda p: p.write_text("no")),
    ("detect", "crops_h5", "no 'crops' dataset", lambda p: h5py.File(p, "w").close()),
    ("detect", "model_config", "missing", lambda p: p.unlink()),
    ("detect", "model_config", "another crop size", _cams(lambda d: d.__setitem__("input_size", 128))),
    ("detect", "model_config", "unknown architecture", _cams(lambda d: d.__setitem__("architecture", "hrnet"))),
    ("detect", "model_weights", "code inside (pickle)", _evil_weights),
    ("detect", "model_weights", "not a torch file", lambda p: p.write_text("junk")),
    ("detect", "model_weights", "missing", lambda p: p.unlink()),
    ("lift", "params", "YAML syntax error", lambda p: p.write_text("base: {seed: [0\n")),
    ("lift", "params", "unknown key", _params(lambda p: p["martinez"].__setitem__("hiden", 3))),
    ("lift", "params", "wrong type", _params(lambda p: p["martinez"].__setitem__("epochs", "ten"))),
    ("lift", "params", "out of range", _params(lambda p: p["martinez"].__setitem__("lr", -1.0))),
    ("lift", "params", "bad choice", _params(lambda p: p["martinez"].__setitem__("input_2d", "hrnet"))),
    ("triangulate", "params", "section missing", _params(lambda p: p.pop("triangulate"))),
]


# --------------------------------------------------------------------------- running
def _inputs(data: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """(the clone's inputs, where their copies go)."""
    src = {"mocap": data / "data/studio/mocap.h5", "cameras": data / "data/studio/cameras.json",
           "detections": data / "data/detections_2d.parquet", "crops_index": data / "data/crops/crops.parquet",
           "crops_h5": data / "data/crops/crops.h5", "model_config": data / "models/pose2d/config.json",
           "model_weights": data / "models/pose2d/model.pt"}
    out = {}
    (tmp / "model").mkdir()
    for k, p in src.items():
        dst = tmp / "model" / p.name if k.startswith("model") else tmp / f"{k}{p.suffix}"
        out[k] = dst
    return src, out


def _command(stage: str, f: dict[str, Path], out: Path, params: Path) -> list[str]:
    py = [sys.executable, str(REPO / f"stages/{stage if stage != 'detect' else 'detect_2d'}.py")]
    if stage == "lift":
        return py + ["--model", "martinez", "--mocap", str(f["mocap"]), "--cameras", str(f["cameras"]),
                     "--detections", str(f["detections"]), "--out", str(out / "pred.parquet"),
                     "--model-dir", str(out / "model"), "--checkpoint", str(out / "model" / "checkpoint.pt"),
                     "--curves", str(out / "c.csv"), "--params", str(params)]
    if stage == "triangulate":
        return py + ["--method", "algebraic", "--mocap", str(f["mocap"]), "--cameras", str(f["cameras"]),
                     "--detections", str(f["detections"]), "--out", str(out / "pred.parquet"),
                     "--metrics", str(out / "m.json"), "--timings", str(out / "t.json"), "--params", str(params)]
    return py + ["--crops-h5", str(f["crops_h5"]), "--crops-index", str(f["crops_index"]),
                 "--model-dir", str(f["model_config"].parent), "--out", str(out / "det.parquet"),
                 "--metrics", str(out / "m.json"), "--per-joint", str(out / "j.csv"), "--figure", str(out / "f.png"),
                 "--params", str(params)]


def run_case(data: Path, stage: str, target: str, damage) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src, f = _inputs(data, tmp)
        for k, p in f.items():
            if k != "crops_h5":
                shutil.copy(src[k], p)
            elif k == target:
                p.write_bytes(b"")  # every crops.h5 case replaces the whole file
            else:
                p.symlink_to(src[k])  # 170 MB: linked, read only
        params = tmp / "params.yaml"
        p = yaml.safe_load((REPO / "params.yaml").read_text())
        p["base"].update(mlflow=False, num_threads=1)
        p["martinez"].update(epochs=1, input_2d="detections", train_stride=20)
        p["triangulate"].update(input="detections")
        params.write_text(yaml.safe_dump(p, sort_keys=False))
        damaged = params if target == "params" else f[target]
        damage(damaged)
        out = tmp / "out"
        out.mkdir()
        t0 = time.time()
        r = subprocess.run(_command(stage, f, out, params), capture_output=True, text=True, cwd=REPO, timeout=600)
        text = r.stdout + r.stderr
        errors = [line for line in text.splitlines() if " ERROR " in line]
        line = errors[-1].split(" ERROR ", 1)[1] if errors else (text.strip().splitlines() or [""])[-1]
        written = sorted(str(q.relative_to(out)) for q in out.rglob("*") if q.is_file())
        return {"rc": r.returncode, "message": line[:220], "traceback": "Traceback" in text,
                "names_it": damaged.name in line or (target == "params" and "params" in line) or
                            (target == "params" and "." in line),
                "written": written, "code_ran": "code ran" in text, "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a clone that ran the DAG")
    ap.add_argument("--out", type=Path, default=REPO / "reports/benchmarks/bad_inputs.md")
    a = ap.parse_args(argv)
    rows = ["| # | stage | input | damage | exit | error line | names it | no traceback | nothing written |",
            "|---|---|---|---|---|---|---|---|---|"]
    ok = 0
    for i, (stage, target, what, damage) in enumerate(CASES, 1):
        r = run_case(a.data, stage, target, damage)
        want = 2 if target == "params" else 1
        good = r["rc"] == want and r["names_it"] and not r["traceback"] and not r["written"] and not r["code_ran"]
        ok += good
        msg = re.sub(r"\S*/tmp\w+/", "", r["message"]).replace("|", "\\|")  # the case's temp dir
        rows.append(f"| {i} | {stage} | {target} | {what} | {r['rc']} | {msg} | {'yes' if r['names_it'] else 'NO'} | "
                    f"{'yes' if not r['traceback'] else 'NO'} | {'yes' if not r['written'] else 'NO: ' + ', '.join(r['written'])} |")
        print(rows[-1], flush=True)
    head = [f"# Bad input, stage by stage: {ok} of {len(CASES)} cases pass", "",
            "    python benchmarks/bad_inputs.py --data <clone with the DAG's outputs>", "",
            "A case passes with exit 1 (2 for params), an error line naming the damaged file or the params key, "
            "no traceback and no output written.", ""]
    a.out.write_text("\n".join(head + rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
