"""Temporal convolution lifter: receptive field, output lengths, strided == dilated, causality."""

import pytest
import torch

from pose3d.models.temporal import TemporalConvNet, TemporalDiscriminator, TemporalLifter


def _randomize_bn(net):
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("widths, rf", [((3, 3, 3), 27), ((3, 3, 3, 3, 3), 243), ((5, 3), 15), ((3,), 3)])
def test_receptive_field_and_output_length(widths, rf):
    net = TemporalConvNet(4, 5, widths, channels=8).eval()
    assert net.receptive_field == rf
    # dilations are the running products of the previous widths
    expect, d = [], widths[0]
    for w in widths[1:]:
        expect.append(d)
        d *= w
    assert net.dilations == expect
    for t in (rf, rf + 1, rf + 13):
        y = net(torch.randn(2, 4, t))
        assert y.shape == (2, 5, t - rf + 1) == (2, 5, net.output_length(t))
    assert net.output_length(rf - 1) == 0
    with pytest.raises(ValueError, match="receptive field"):
        net(torch.randn(1, 4, rf - 1))


@pytest.mark.parametrize("causal", [False, True])
def test_padded_forward_keeps_length(causal):
    m = TemporalLifter(filter_widths=(3, 3), channels=16, causal=causal).eval()
    x = torch.randn(2, 20, 17, 2)
    assert m(x).shape == (2, 20, 17, 3)
    assert m.forward_root(x).shape == (2, 20, 3)
    assert m(x, pad=False).shape == (2, 20 - 9 + 1, 17, 3)
    assert torch.all(m(x)[..., 0, :] == 0)  # root-relative: root joint is the origin


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("widths", [(3, 3, 3), (3, 5)])
def test_strided_equals_dilated_on_shared_weights(causal, widths):
    torch.manual_seed(0)
    m = TemporalLifter(filter_widths=widths, channels=32, causal=causal, dropout=0.0).eval()
    _randomize_bn(m)
    R = m.receptive_field
    x = torch.randn(3, 4 * R, 17, 2)
    dil = m(x, pad=False)              # every window
    strd = m(x, pad=False, strided=True)  # non-overlapping windows only
    assert strd.shape[1] == 4
    torch.testing.assert_close(strd, dil[:, ::R], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m.forward_root(x, pad=False, strided=True),
                               m.forward_root(x, pad=False)[:, ::R], rtol=1e-5, atol=1e-5)


def test_causal_output_ignores_the_future():
    torch.manual_seed(0)
    m = TemporalLifter(filter_widths=(3, 3), channels=16, causal=True).eval()
    x = torch.randn(1, 30, 17, 2)
    y = m(x)
    x2 = x.clone()
    x2[:, 20:] += 1.0
    y2 = m(x2)
    torch.testing.assert_close(y[:, :20], y2[:, :20])
    assert not torch.allclose(y[:, 20:], y2[:, 20:])
    # a symmetric model does look ahead (R - 1) / 2 = 4 frames
    s = TemporalLifter(filter_widths=(3, 3), channels=16, causal=False).eval()
    assert not torch.allclose(s(x)[:, 16:20], s(x2)[:, 16:20])
    torch.testing.assert_close(s(x)[:, :16], s(x2)[:, :16])


def test_discriminator_scores_sequences():
    d = TemporalDiscriminator(hidden=16)
    assert d(torch.randn(5, 9, 17, 3)).shape == (5,)
    with pytest.raises(ValueError):
        d(torch.randn(5, 17, 3))
