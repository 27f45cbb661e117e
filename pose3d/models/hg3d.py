"""pose-hg-3d style network (Zhou et al., ICCV 2017): a 2D heatmap network plus a depth branch
that shares its features, written from the paper in plain torch.nn.

2D module: the SimpleBaseline ``PoseResNet`` of the 2D stage (ResNet + 3 deconvolutions + 1x1
heatmap layer) in place of the seed's stacked hourglass, so it can start from the 2D stage's
weights.

Depth module: the seed feeds the hourglass features *and* the predicted heatmaps into a
regression sub-network, so 2D and depth share features and the depth sees where the joints
are. Here the deconvolution features (B, C, H, W) and the heatmaps (B, J, H, W) are
concatenated and passed through a 3x3 convolution and ``depth_blocks`` residual blocks at the
heatmap resolution, then a 1x1 convolution gives one *depth map* per joint (B, J, H, W). A
joint's root-relative depth is the depth map read (bilinearly) at that joint's 2D location:
the ground-truth location during training (as the seed's PyTorch re-implementation does), the
decoded sub-pixel heatmap maximum at test time (:func:`read_depth`). This is equivalent to the
seed's fully-connected regression (each output sees the whole image through the ResNet's
stride-32 receptive field) while keeping a per-pixel, translation-equivariant layout.

Depth unit: see :mod:`pose3d.tasks.image3d` (heatmap pixels at the root's depth, divided by W).

Glossary: B batch, C channels, J joints, H/W heatmap size, S input size.

>>> net = HG3D(HG3DConfig(resnet_depth=18, depth_channels=32, depth_blocks=1))
>>> hm, dm = net(torch.zeros(2, 3, 64, 64))
>>> tuple(hm.shape), tuple(dm.shape)
((2, 17, 16, 16), (2, 17, 16, 16))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pose3d.geometry.shapes import check_shape
from pose3d.models.pose_resnet import PoseResNet, PoseResNetConfig


@dataclass(frozen=True)
class HG3DConfig:
    """Everything that builds an :class:`HG3D` (saved as ``config.json`` beside the weights)."""

    resnet_depth: int = 18
    num_joints: int = 17
    deconv_channels: int = 256
    num_deconv: int = 3
    depth_channels: int = 128
    depth_blocks: int = 1

    def __post_init__(self):
        if self.depth_channels < 1 or self.depth_blocks < 0:
            raise ValueError(f"HG3DConfig: bad depth branch sizes {self}")

    def pose_config(self) -> PoseResNetConfig:
        return PoseResNetConfig(depth=self.resnet_depth, num_joints=self.num_joints,
                                deconv_channels=self.deconv_channels, num_deconv=self.num_deconv)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HG3DConfig":
        return cls(**{k: int(v) for k, v in d.items()})

    @property
    def stride(self) -> int:
        return self.pose_config().stride


class _Residual(nn.Module):
    """3x3 conv - BN - ReLU - 3x3 conv - BN + identity, ReLU (He et al. 2016)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(x + self.body(x))


class DepthBranch(nn.Module):
    """(features (B, C, H, W), heatmaps (B, J, H, W)) -> depth maps (B, J, H, W)."""

    def __init__(self, in_channels: int, num_joints: int, channels: int, blocks: int):
        super().__init__()
        self.inp = nn.Sequential(
            nn.Conv2d(in_channels + num_joints, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[_Residual(channels) for _ in range(blocks)])
        self.out = nn.Conv2d(channels, num_joints, 1)
        # start at depth 0 (every joint at the root's depth): a flat pose is the neutral guess
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, heatmaps.to(features.dtype)], dim=1)  # (B, C + J, H, W)
        return self.out(self.blocks(self.inp(x)))


class HG3D(nn.Module):
    """PoseResNet 2D module + depth branch; ``forward`` -> (heatmaps, depth maps)."""

    def __init__(self, config: HG3DConfig):
        super().__init__()
        self.config = config
        self.pose = PoseResNet(config.pose_config())
        self.depth = DepthBranch(config.deconv_channels, config.num_joints,
                                 config.depth_channels, config.depth_blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, S, S), normalised -> (heatmaps (B, J, S/4, S/4), depth maps (same))."""
        check_shape(x, "B 3 H W", "HG3D input")
        feats = self.pose.features(x)  # (B, C, H, W)
        heatmaps = self.pose.final(feats)  # (B, J, H, W)
        return heatmaps, self.depth(feats, heatmaps)

    def load_pose2d(self, state_dict: dict) -> None:
        """Initialise the 2D module from a PoseResNet state_dict (the 2D stage's weights)."""
        missing, unexpected = self.pose.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ValueError(f"HG3D.load_pose2d: the 2D weights do not fit the 2D module "
                             f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)")


def read_depth(depth_maps: torch.Tensor, joints_hm: torch.Tensor) -> torch.Tensor:
    """Bilinear read of each joint's depth map at its own 2D location.

    depth_maps (B, J, H, W), joints_hm (B, J, 2) heatmap coords (x, y), pixel centres at
    integers -> (B, J). Locations outside the map read the border (a joint's depth is still
    defined when its 2D label is slightly outside the crop).
    """
    check_shape(depth_maps, "B J H W", "depth_maps")
    check_shape(joints_hm, "B J 2", "joints_hm")
    B, J, H, W = depth_maps.shape
    # align_corners=True: -1 and +1 are the centres of the corner pixels (0 and W-1)
    scale = torch.tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)], device=joints_hm.device)
    grid = (joints_hm.to(torch.float32) * scale - 1.0).view(B * J, 1, 1, 2)
    maps = depth_maps.reshape(B * J, 1, H, W)
    out = F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", padding_mode="border",
                        align_corners=True)  # (B*J, 1, 1, 1)
    return out.view(B, J)


MODELS: dict[str, type[nn.Module]] = {"hg3d": HG3D}
