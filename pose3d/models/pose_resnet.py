"""SimpleBaseline 2D pose network ("pose_resnet"), written from the papers in plain torch.nn.

Backbone: ResNet (He et al. 2016, "Deep Residual Learning", Table 1): a 7x7/2 stem, a 3x3/2
max-pool, then four stages of BasicBlocks (depth 18, 34) or Bottlenecks (50, 101, 152) at
strides 4, 8, 16, 32. Head: Xiao et al. 2018 ("Simple Baselines for Human Pose Estimation and
Tracking", Sec. 2): ``num_deconv`` transposed convolutions (kernel 4, stride 2, 256 channels,
BN + ReLU) bring the stride-32 features back to stride 4, and a 1x1 convolution outputs one
heatmap per joint.

Glossary: B batch, J joints, H/W heatmap size (= input size / 4 with 3 deconvolutions).

>>> net = PoseResNet(PoseResNetConfig(depth=18, num_joints=17))
>>> net(torch.zeros(2, 3, 128, 128)).shape
torch.Size([2, 17, 32, 32])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from pose3d.geometry.shapes import check_shape

#: depth -> (block type, blocks per stage); He et al. 2016, Table 1.
RESNET_LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


@dataclass(frozen=True)
class PoseResNetConfig:
    """Everything that builds a :class:`PoseResNet` (saved as ``config.json`` beside the weights)."""

    depth: int = 18
    num_joints: int = 17
    deconv_channels: int = 256
    deconv_kernel: int = 4
    num_deconv: int = 3

    def __post_init__(self):
        if self.depth not in RESNET_LAYOUTS:
            raise ValueError(f"PoseResNetConfig.depth = {self.depth}: expected one of {sorted(RESNET_LAYOUTS)}")
        if self.deconv_kernel not in (2, 3, 4):
            raise ValueError(f"PoseResNetConfig.deconv_kernel = {self.deconv_kernel}: expected 2, 3 or 4")
        if self.num_joints < 1 or self.num_deconv < 1 or self.deconv_channels < 1:
            raise ValueError(f"PoseResNetConfig: bad sizes {self}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PoseResNetConfig":
        return cls(**{k: int(v) for k, v in d.items()})

    @property
    def stride(self) -> int:
        """Input pixels per heatmap pixel (32 / 2**num_deconv)."""
        return 32 // (2 ** self.num_deconv)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, c_in: int, c: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(c_in, c * self.expansion, stride)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as in the common "ResNet v1.5"), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, c_in: int, c: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(c_in, c * self.expansion, stride)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.shortcut(x))


def _projection(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class PoseResNet(nn.Module):
    """ResNet backbone + deconvolution head -> J heatmaps at 1/4 of the input size."""

    def __init__(self, config: PoseResNetConfig):
        super().__init__()
        self.config = config
        kind, blocks = RESNET_LAYOUTS[config.depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, c_in = [], 64
        for i, (n, c) in enumerate(zip(blocks, (64, 128, 256, 512))):
            layers = []
            for b in range(n):
                layers.append(block(c_in, c, stride=2 if (b == 0 and i > 0) else 1))
                c_in = c * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        # Deconvolution head (Xiao et al. 2018): kernel 4 -> padding 1, output_padding 0 doubles
        # the size exactly; kernel 3 -> padding 1, output_padding 1; kernel 2 -> padding 0.
        k = config.deconv_kernel
        pad, out_pad = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[k]
        head = []
        for _ in range(config.num_deconv):
            head += [nn.ConvTranspose2d(c_in, config.deconv_channels, k, 2, pad, out_pad, bias=False),
                     nn.BatchNorm2d(config.deconv_channels), nn.ReLU(inplace=True)]
            c_in = config.deconv_channels
        self.deconv = nn.Sequential(*head)
        self.final = nn.Conv2d(config.deconv_channels, config.num_joints, 1)
        self._init_weights()

    def _init_weights(self):
        # He init for the backbone; the head as in Xiao et al. (normal std 0.001, zero bias),
        # so the initial heatmaps are ~0 and the MSE starts at the target energy.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.deconv.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)
        # zero-init the last BN of each residual branch (Goyal et al. 2017): trains faster from scratch
        for m in self.layers.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
            elif isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> deconvolution features (B, C, S/4, S/4), C = deconv_channels."""
        check_shape(x, "B 3 H W", "PoseResNet input")
        return self.deconv(self.layers(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S), normalised -> heatmaps (B, J, S/4, S/4)."""
        return self.final(self.features(x))


MODELS: dict[str, type[nn.Module]] = {"pose_resnet": PoseResNet}
