"""Temporal convolutional lifting in the style of VideoPose3D (Pavllo et al., CVPR 2019),
re-implemented from the paper, with a root-trajectory branch and a temporal discriminator.

:class:`TemporalConvNet` is the dilated 1D-conv body. With filter widths ``(w0, w1, ...)``
the receptive field is ``R = prod(w_i)``; layer i > 0 has dilation ``w0 * ... * w_{i-1}``.
Block i: Conv(w_i, dilation d_i) -> BN -> ReLU -> Dropout -> Conv(1) -> BN -> ReLU -> Dropout,
plus a residual taken from the centre of its window (the last frame when ``causal``).

The same weights run two ways (``strided=``):
  * dilated (inference, sequence training): input (B, C, T) -> output (B, C', T - R + 1);
  * strided (efficient single-frame training): layer i uses stride w_i instead of dilation,
    so an input of length R costs one output column per layer instead of T - ... columns;
    an input of length k R gives the k outputs of the non-overlapping windows.
Both compute exactly the same function of a window (tests/test_temporal.py).

:class:`TemporalLifter` = a pose net (2D -> root-relative 3D, metres) + a trajectory net
(2D -> root position in camera coordinates, metres). Inputs are screen-normalised 2D
(``normalize_screen``) without further scaling, as in VideoPose3D. Outputs have a fixed scale
(buffers set once from the training set by ``set_normalization``, stored in ``model.pt``):
pose = ``pose_scale * net`` (the RMS of the root-relative training coordinates, metres) and
root = ``root_mean + root_scale * net`` (mean and RMS deviation of the training roots), so
that the freshly initialised nets (outputs of about unit size) start near the data instead
of metres away from it; it cut the first-epoch training error from ~590 to ~150 mm.

Shapes: forward (B, T, J, 2) -> (B, T, J, 3) with edge padding (``pad=True``: T frames out);
``pad=False`` gives the valid T - R + 1 frames. Output frame t looks at input frames
[t - (R-1)/2, t + (R-1)/2], or [t - R + 1, t] when causal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pose3d.geometry.shapes import check_shape
from pose3d.models.martinez import _insert_root
from pose3d.models.repnet import KCSLayer
from pose3d.skeleton import NUM_JOINTS


class TemporalConvNet(nn.Module):
    """Dilated temporal convolutions (B, d_in, T) -> (B, d_out, T - R + 1)."""

    def __init__(self, d_in: int, d_out: int, filter_widths=(3, 3, 3), causal: bool = False,
                 dropout: float = 0.25, channels: int = 1024):
        super().__init__()
        for w in filter_widths:
            if w % 2 == 0 or w < 1:
                raise ValueError(f"filter widths must be odd and positive, got {filter_widths}")
        self.filter_widths = tuple(int(w) for w in filter_widths)
        self.causal = causal
        self.drop = nn.Dropout(dropout)
        self.expand = nn.Conv1d(d_in, channels, self.filter_widths[0], bias=False)
        self.expand_bn = nn.BatchNorm1d(channels, momentum=0.1)
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        self.dilations: list[int] = []
        d = self.filter_widths[0]
        for w in self.filter_widths[1:]:
            self.dilations.append(d)
            self.convs.append(nn.Conv1d(channels, channels, w, bias=False))
            self.bns.append(nn.BatchNorm1d(channels, momentum=0.1))
            self.convs.append(nn.Conv1d(channels, channels, 1, bias=False))
            self.bns.append(nn.BatchNorm1d(channels, momentum=0.1))
            d *= w
        self.shrink = nn.Conv1d(channels, d_out, 1)

    @property
    def receptive_field(self) -> int:
        return math.prod(self.filter_widths)

    def output_length(self, t_in: int, strided: bool = False) -> int:
        """Frames out for ``t_in`` frames in (0 if the input is shorter than R)."""
        r = self.receptive_field
        if strided:
            return t_in // r
        return max(t_in - r + 1, 0)

    def forward(self, x: torch.Tensor, strided: bool = False) -> torch.Tensor:
        check_shape(x, "B C T", "TemporalConvNet input")
        if x.shape[-1] < self.receptive_field:
            raise ValueError(f"TemporalConvNet: {x.shape[-1]} frames < receptive field "
                             f"{self.receptive_field}")
        if strided:
            return self._forward_strided(x)
        x = self.drop(F.relu(self.expand_bn(self.expand(x))))
        for i, w in enumerate(self.filter_widths[1:]):
            conv, conv1 = self.convs[2 * i], self.convs[2 * i + 1]
            d = self.dilations[i]
            pad = (w - 1) * d // 2
            shift = pad if self.causal else 0
            res = x[:, :, pad + shift: x.shape[-1] - pad + shift]
            h = self.drop(F.relu(self.bns[2 * i](conv(x) if d == 1 else
                                                 F.conv1d(x, conv.weight, dilation=d))))
            h = self.drop(F.relu(self.bns[2 * i + 1](conv1(h))))
            x = res + h
        return self.shrink(x)

    def _forward_strided(self, x: torch.Tensor) -> torch.Tensor:
        """The strided variant, channels-last: a width-w conv with stride w over
        non-overlapping groups is one matrix product per group, (B, T/w, w C) @ (w C, C'),
        which the CPU runs several times faster than conv1d's forward + backward."""
        h = x.transpose(1, 2)  # (B, T, C_in)
        h = self.drop(F.relu(_bn_last(self.expand_bn, _group_linear(h, self.expand.weight))))
        for i, w in enumerate(self.filter_widths[1:]):
            conv, conv1 = self.convs[2 * i], self.convs[2 * i + 1]
            k = h.shape[1] // w
            start = (w - 1) if self.causal else w // 2  # residual: centre (causal: last) of a group
            res = h[:, start::w][:, :k]                         # (B, k, C)
            g = self.drop(F.relu(_bn_last(self.bns[2 * i], _group_linear(h, conv.weight))))
            g = self.drop(F.relu(_bn_last(self.bns[2 * i + 1], F.linear(g, conv1.weight[..., 0]))))
            h = res + g
        return F.linear(h, self.shrink.weight[..., 0], self.shrink.bias).transpose(1, 2)


def _group_linear(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Conv1d with stride = kernel width, channels-last: h (B, T, C), weight (C', C, w)
    -> (B, T // w, C'); frames past the last whole group are dropped (as conv1d does)."""
    B, T, C = h.shape
    w = weight.shape[-1]
    k = T // w
    groups = h[:, :k * w].reshape(B, k, w * C)                      # index t * C + c
    return F.linear(groups, weight.permute(0, 2, 1).reshape(len(weight), w * C))


def _bn_last(bn: nn.BatchNorm1d, h: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over the last axis of (B, T, C): same statistics as on (B, C, T)."""
    B, T, C = h.shape
    return bn(h.reshape(B * T, C)).reshape(B, T, C)


class TemporalLifter(nn.Module):
    """Pose net + trajectory net on the same 2D window."""

    def __init__(self, num_joints: int = NUM_JOINTS, filter_widths=(3, 3, 3), causal: bool = False,
                 dropout: float = 0.25, channels: int = 1024, traj_channels: int | None = None):
        super().__init__()
        self.num_joints = num_joints
        self.causal = causal
        self.pose_net = TemporalConvNet(num_joints * 2, (num_joints - 1) * 3, filter_widths,
                                        causal, dropout, channels)
        self.traj_net = TemporalConvNet(num_joints * 2, 3, filter_widths, causal, dropout,
                                        traj_channels or channels)
        self.register_buffer("pose_scale", torch.ones(()))
        self.register_buffer("root_mean", torch.zeros(3))
        self.register_buffer("root_scale", torch.ones(()))

    @torch.no_grad()
    def set_normalization(self, pose: torch.Tensor, root: torch.Tensor) -> None:
        """Output scales from training data: pose (N, J, 3) root-relative metres, root (N, 3)."""
        self.pose_scale.copy_(pose.float().pow(2).mean().sqrt().clamp_min(1e-6))
        self.root_mean.copy_(root.float().mean(0))
        self.root_scale.copy_((root.float() - self.root_mean).pow(2).mean().sqrt().clamp_min(1e-6))

    @property
    def receptive_field(self) -> int:
        return self.pose_net.receptive_field

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """Edge-pad (B, T, J, 2) in time so that the valid output has T frames."""
        r = self.receptive_field - 1
        left, right = (r, 0) if self.causal else (r // 2, r - r // 2)
        idx = torch.arange(-left, x.shape[1] + right, device=x.device).clamp(0, x.shape[1] - 1)
        return x[:, idx]

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        B, T, J, C = x.shape
        return x.reshape(B, T, J * C).transpose(1, 2)  # (B, J*2, T)

    def forward(self, x: torch.Tensor, pad: bool = True, strided: bool = False) -> torch.Tensor:
        """(B, T, J, 2) screen coords -> (B, T', J, 3) root-relative metres (T' = T if pad)."""
        check_shape(x, f"B T {self.num_joints} 2", "TemporalLifter input")
        if pad:
            x = self.pad_input(x)
        y = self.pose_net(self._frames(x), strided=strided).transpose(1, 2) * self.pose_scale  # (B, T', (J-1)*3)
        B, T = y.shape[:2]
        return _insert_root(y.reshape(B, T, self.num_joints - 1, 3))

    def forward_root(self, x: torch.Tensor, pad: bool = True, strided: bool = False) -> torch.Tensor:
        """(B, T, J, 2) -> (B, T', 3) root (pelvis) position in camera coordinates, metres."""
        check_shape(x, f"B T {self.num_joints} 2", "TemporalLifter input")
        if pad:
            x = self.pad_input(x)
        r = self.traj_net(self._frames(x), strided=strided).transpose(1, 2)  # (B, T', 3)
        return self.root_mean + self.root_scale * r


class TemporalDiscriminator(nn.Module):
    """WGAN critic on 3D pose sequences (B, L, J, 3), root-relative metres -> (B,) scores.

    Per frame: the pose and its KCS matrix (bone-vector dot products); then temporal convs
    over the L frames (so the critic judges motion, not only single poses); mean over time.
    No batch norm (it conflicts with the gradient penalty).
    """

    def __init__(self, num_joints: int = NUM_JOINTS, hidden: int = 256):
        super().__init__()
        nb = num_joints - 1
        self.kcs = KCSLayer()
        self.frame = nn.Sequential(nn.Linear(num_joints * 3 + nb * nb, hidden), nn.LeakyReLU(0.2))
        self.temporal = nn.Sequential(
            nn.Conv1d(hidden, hidden, 3), nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, hidden, 3, dilation=2), nn.LeakyReLU(0.2))
        self.head = nn.Linear(hidden, 1)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        check_shape(X, "B L J 3", "TemporalDiscriminator input")
        B, L, J, _ = X.shape
        flat = X.reshape(B * L, J, 3)
        feats = torch.cat([flat.reshape(B * L, -1), self.kcs(flat).reshape(B * L, -1)], dim=-1)
        h = self.frame(feats).reshape(B, L, -1).transpose(1, 2)  # (B, hidden, L)
        h = self.temporal(h).mean(-1)
        return self.head(h).squeeze(-1)
