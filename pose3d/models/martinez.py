"""Martinez et al. 2017, "A simple yet effective baseline for 3d human pose estimation".

A residual MLP: Linear(2J -> H), then ``num_blocks`` blocks of
[Linear, BN, ReLU, Dropout] x 2 with a skip connection, then Linear(H -> 3(J-1)).
Max-norm constraint on every Linear's weight rows (``apply_max_norm``, called after each
optimiser step). Trained with MSE in the standardised space, Adam and exponential decay.

Normalisation (explicit, stored as buffers so ``model.pt`` is self-contained):
inputs are screen-normalised 2D (``normalize_screen``: x in [-1, 1]) standardised per
coordinate with the training mean/std; outputs are the root-relative 3D of the non-root
joints, in metres, standardised per coordinate (Martinez's z-scoring). The root joint is
inserted as zeros.

Shapes: (B, T, J, 2) screen coords -> (B, T, J, 3) metres, root-relative, camera frame.
T is 1 for training, any T at test time (frames are independent).
"""

from __future__ import annotations

import torch
from torch import nn

from pose3d.geometry.shapes import check_shape
from pose3d.skeleton import NUM_JOINTS, ROOT


class _Block(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
        )

    def forward(self, x):
        return x + self.net(x)


class MartinezLifter(nn.Module):
    """Residual MLP lifter. ``hidden=1024, num_blocks=2, dropout=0.5`` are the paper's values."""

    def __init__(self, num_joints: int = NUM_JOINTS, hidden: int = 1024, num_blocks: int = 2,
                 dropout: float = 0.5, max_norm: float = 1.0):
        super().__init__()
        self.num_joints = num_joints
        self.max_norm = max_norm
        j_out = num_joints - 1
        self.inp = nn.Sequential(nn.Linear(num_joints * 2, hidden), nn.BatchNorm1d(hidden),
                                 nn.ReLU(), nn.Dropout(dropout))
        self.blocks = nn.Sequential(*[_Block(hidden, dropout) for _ in range(num_blocks)])
        self.out = nn.Linear(hidden, j_out * 3)
        # standardisation statistics (set from the training set by ``set_normalization``)
        self.register_buffer("in_mean", torch.zeros(num_joints * 2))
        self.register_buffer("in_std", torch.ones(num_joints * 2))
        self.register_buffer("out_mean", torch.zeros(j_out * 3))
        self.register_buffer("out_std", torch.ones(j_out * 3))

    @torch.no_grad()
    def set_normalization(self, x2d: torch.Tensor, y3d: torch.Tensor) -> None:
        """x2d (N, J, 2) screen coords, y3d (N, J, 3) root-relative metres."""
        x = x2d.reshape(len(x2d), -1).float()
        y = _drop_root(y3d).reshape(len(y3d), -1).float()
        self.in_mean.copy_(x.mean(0)); self.in_std.copy_(x.std(0).clamp_min(1e-6))
        self.out_mean.copy_(y.mean(0)); self.out_std.copy_(y.std(0).clamp_min(1e-6))

    def forward_normalized(self, x2d: torch.Tensor) -> torch.Tensor:
        """(N, J, 2) screen -> (N, 3(J-1)) standardised 3D (the space the loss lives in)."""
        x = (x2d.reshape(len(x2d), -1) - self.in_mean) / self.in_std
        return self.out(self.blocks(self.inp(x)))

    def normalize_target(self, y3d: torch.Tensor) -> torch.Tensor:
        """(N, J, 3) metres -> (N, 3(J-1)) standardised."""
        return (_drop_root(y3d).reshape(len(y3d), -1) - self.out_mean) / self.out_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """(N, 3(J-1)) standardised -> (N, J, 3) metres with a zero root."""
        y = (z * self.out_std + self.out_mean).reshape(len(z), self.num_joints - 1, 3)
        return _insert_root(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, J, 2) screen coords -> (B, T, J, 3) root-relative metres."""
        check_shape(x, f"B T {self.num_joints} 2", "MartinezLifter input")
        B, T = x.shape[:2]
        y = self.denormalize(self.forward_normalized(x.reshape(B * T, self.num_joints, 2)))
        return y.reshape(B, T, self.num_joints, 3)

    @torch.no_grad()
    def apply_max_norm(self) -> None:
        """Renormalise each Linear's weight rows to norm <= max_norm (paper: max-norm 1)."""
        if not self.max_norm:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.renorm(m.weight, p=2, dim=0, maxnorm=self.max_norm))


def _drop_root(y: torch.Tensor) -> torch.Tensor:
    keep = [j for j in range(y.shape[-2]) if j != ROOT]
    return y[..., keep, :]


def _insert_root(y: torch.Tensor) -> torch.Tensor:
    z = torch.zeros(y.shape[:-2] + (1, 3), dtype=y.dtype, device=y.device)
    return torch.cat([y[..., :ROOT, :], z, y[..., ROOT:, :]], dim=-2)
