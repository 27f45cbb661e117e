"""Martinez et al. 2017 residual MLP."""

import torch

from pose3d.models.martinez import MartinezLifter


def test_shapes_root_and_normalisation_round_trip():
    m = MartinezLifter(hidden=64)
    x2d, y3d = torch.randn(50, 17, 2), torch.randn(50, 17, 3)
    y3d = y3d - y3d[:, :1]
    m.set_normalization(x2d, y3d)
    torch.testing.assert_close(m.denormalize(m.normalize_target(y3d)), y3d, atol=1e-5, rtol=1e-5)
    m.eval()
    y = m(torch.randn(2, 5, 17, 2))
    assert y.shape == (2, 5, 17, 3)
    assert torch.all(y[..., 0, :] == 0)


def test_max_norm_constraint():
    m = MartinezLifter(hidden=64, max_norm=1.0)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(10)
    m.apply_max_norm()
    for mod in m.modules():
        if isinstance(mod, torch.nn.Linear):
            assert mod.weight.norm(dim=1).max() <= 1.0 + 1e-5
