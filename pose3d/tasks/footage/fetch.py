"""``p3d fetch-models``: the BlazePose weights for ``p3d infer --detector blazepose`` (:func:`.blazepose.fetch_models`)."""

from __future__ import annotations

import argparse

from pose3d.tasks.footage.blazepose import MODELS, WHEEL, cache_dir, fetch_models


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fetch-models", help="download the BlazePose models (from the mediapipe 0.10.21 wheel) into the cache",
        description=f"pip download {WHEEL} (no dependencies; nothing is installed), extract "
                    f"{', '.join(MODELS)}, check their pinned sha256 and write them atomically to "
                    "$POSE3D_CACHE/blazepose (default ~/.cache/pose3d/blazepose). Licence: Apache-2.0.")
    p.add_argument("--cache", help="cache root instead of $POSE3D_CACHE or ~/.cache/pose3d")
    p.add_argument("--wheel", help="a mediapipe 0.10.21 wheel already downloaded (offline machines)")
    p.add_argument("--force", action="store_true", help="fetch even when the cache holds the right files")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    paths = fetch_models(args.cache, wheel=args.wheel, force=args.force)
    print(f"BlazePose models in {cache_dir(args.cache)}: " + ", ".join(sorted(p.name for p in paths.values())))
    return 0
