"""pose_resnet: shapes for every depth, the features/forward contract, a config round trip."""

from __future__ import annotations

import pytest
import torch


pytestmark = pytest.mark.usefixtures("one_thread")

from pose3d.models.pose_resnet import MODELS, PoseResNet, PoseResNetConfig


@pytest.mark.parametrize("depth", [18, 50])
def test_shapes(depth):
    net = PoseResNet(PoseResNetConfig(depth=depth, num_joints=17)).eval()
    x = torch.randn(2, 3, 32, 64)
    f = net.features(x)
    assert f.shape == (2, 256, 8, 16)
    hm = net(x)
    assert hm.shape == (2, 17, 8, 16)
    assert torch.allclose(net.final(f), hm)


def test_layouts_and_parameter_counts():
    # ResNet backbones: 11.2 M (18), 21.3 M (34), 23.5 M (50) parameters without the fc layer
    counts = {}
    for d in (18, 34, 50):
        net = PoseResNet(PoseResNetConfig(depth=d))
        counts[d] = sum(p.numel() for n, p in net.named_parameters() if n.startswith(("stem", "layers")))
    assert counts[18] == pytest.approx(11.18e6, rel=0.01)
    assert counts[34] == pytest.approx(21.28e6, rel=0.01)
    assert counts[50] == pytest.approx(23.51e6, rel=0.01)


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="depth"):
        PoseResNetConfig(depth=20)
    c = PoseResNetConfig(depth=34, num_joints=16, num_deconv=2)
    assert PoseResNetConfig.from_dict(c.to_dict()) == c
    assert c.stride == 8
    assert PoseResNet(c)(torch.zeros(1, 3, 64, 64)).shape == (1, 16, 8, 8)
    assert MODELS["pose_resnet"] is PoseResNet


def test_input_shape_checked():
    with pytest.raises(ValueError, match="PoseResNet input"):
        PoseResNet(PoseResNetConfig())(torch.zeros(1, 1, 64, 64))


def test_initial_heatmaps_are_small_and_channels_last_matches():
    torch.manual_seed(0)
    net = PoseResNet(PoseResNetConfig()).eval()
    x = torch.randn(2, 3, 32, 32)
    y = net(x)
    assert y.abs().max() < 0.1  # head initialised with std 0.001 (Xiao et al.)
    net_cl = net.to(memory_format=torch.channels_last)
    y2 = net_cl(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(y, y2, atol=1e-5)
