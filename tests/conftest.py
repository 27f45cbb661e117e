"""Shared fixtures. Real reference data lives beside the repo (../shared/data) or where
POSE3D_SHARED_DATA points; tests that need it skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread is faster, and much faster on a shared, loaded CPU
    (``pytestmark = pytest.mark.usefixtures("one_thread")`` in a test module)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _shared_data() -> Path:
    return Path(os.environ.get("POSE3D_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the shared real data folder, or skip."""
    p = _shared_data()
    if not p.is_dir():
        pytest.skip(f"shared reference data not found at {p} (set POSE3D_SHARED_DATA)")
    return p


def _shared_file(shared_data: Path, rel: str) -> Path:
    p = shared_data / rel
    if not p.exists():
        pytest.skip(f"{p} not found")
    return p


@pytest.fixture(scope="session")
def real_mocap_npz(shared_data) -> Path:
    return _shared_file(shared_data, "real-mocap/real_mocap_h36m17.npz")


@pytest.fixture(scope="session")
def panoptic_npz(shared_data) -> Path:
    return _shared_file(shared_data, "panoptic/panoptic_band_multiview.npz")
