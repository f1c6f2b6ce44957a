import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wavefront.errors import ConfigError
from wavefront.imaging.compressed import (
    CompressedConv2d, WaveSurrogate, cheapest_path, compressed_kernel, compressed_param_count, conv_param_count,
    full_param_count, full_rank, path_macs,
)


@pytest.mark.parametrize("c_in,c_out,k,rank,count", [(3, 8, 3, 1, 38), (16, 16, 5, 4, 1080), (7, 2, 7, 49, 1374)])
def test_compressed_param_count_is_what_the_layer_holds(c_in, c_out, k, rank, count):
    # count worked by hand: R (C_in C_out + 2k) + C_out, e.g. 4 (256 + 10) + 16 = 1080
    layer = CompressedConv2d(c_in, c_out, k, rank)
    assert sum(p.numel() for p in layer.parameters()) == compressed_param_count(c_in, c_out, k, rank) == count
    assert conv_param_count(layer) == count
    full = nn.Conv2d(c_in, c_out, k)
    assert full_param_count(c_in, c_out, k) == sum(p.numel() for p in full.parameters()) == conv_param_count(full)


@pytest.mark.parametrize("c_in,c_out,rank", [(3, 24, 9), (24, 24, 4), (24, 1, 9), (6, 6, 1)])
@pytest.mark.parametrize("path", ["spatial-first", "mix-first"])
def test_separable_paths_compute_the_assembled_convolution_and_its_gradients(c_in, c_out, rank, path):
    torch.manual_seed(3)
    layer = CompressedConv2d(c_in, c_out, 5, rank, path="dense").double()
    x = torch.randn(2, c_in, 11, 9, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, c_out, 11, 9, dtype=torch.float64)
    ref = F.conv2d(x, layer.kernel(), layer.bias, padding=2)
    grads_ref = torch.autograd.grad((ref * probe).sum(), [x, *layer.parameters()])
    layer.path = path
    out = layer(x)
    grads = torch.autograd.grad((out * probe).sum(), [x, *layer.parameters()])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("c_in,c_out,rank", [(3, 24, 9), (24, 24, 4), (24, 1, 9)])
def test_path_macs_count_the_multiply_adds_the_paths_execute(c_in, c_out, rank, monkeypatch):
    # Every conv2d call costs C_out_call * (C_in_call / groups) * kh * kw multiply-adds per pixel.
    import wavefront.imaging.compressed as compressed

    calls, conv2d = [], F.conv2d

    def counting_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        calls.append(weight.shape[0] * weight.shape[1] * weight.shape[2] * weight.shape[3])
        return conv2d(x, weight, bias, stride, padding, dilation, groups)

    monkeypatch.setattr(compressed.F, "conv2d", counting_conv2d)
    layer = CompressedConv2d(c_in, c_out, 5, rank)
    x = torch.randn(1, c_in, 7, 7)
    macs = path_macs(c_in, c_out, 5, rank)
    for path in ("dense", "spatial-first", "mix-first"):
        calls.clear()
        layer.path = path
        layer(x)
        assert sum(calls) == macs[path], path


def test_auto_path_runs_the_surrogate_dense_and_a_wide_rank_one_layer_separably():
    # The measured break-even is 20x fewer multiply-adds (see SEPARABLE_MIN_MAC_RATIO).
    assert [cheapest_path(a, b, 5, r) for a, b, r in [(3, 24, 9), (24, 24, 4), (24, 24, 4), (24, 1, 9)]] == ["dense"] * 4
    assert cheapest_path(24, 24, 5, 1) == "dense"  # 17.6x fewer: measured 0.5-1.4x the dense time
    assert cheapest_path(64, 64, 5, 1) == "spatial-first"  # 1600 / 74: 21.6x fewer
    assert cheapest_path(64, 2, 5, 1) == "mix-first"


def test_full_rank_compressed_conv_represents_a_given_full_kernel_exactly():
    torch.manual_seed(0)
    full = nn.Conv2d(4, 6, 5, padding=2).double()
    layer = CompressedConv2d.from_full(full.weight.detach(), full.bias.detach())
    assert layer.rank == full_rank(5) == 25
    torch.testing.assert_close(layer.kernel(), full.weight.detach(), rtol=0, atol=0)
    x = torch.randn(2, 4, 11, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), full(x), rtol=1e-12, atol=1e-12)


def test_rank_one_kernel_is_separable_per_channel_pair():
    mix = torch.randn(1, 2, 3, dtype=torch.float64)
    col, row = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    w = compressed_kernel(mix, col, row)
    # Each k x k slice is the outer product col (x) row, scaled: matrix rank 1.
    assert int(torch.linalg.matrix_rank(w.reshape(6, 5, 5)).max()) == 1
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    # Applying 1x1 mixing, then the k x 1 and 1 x k filters, equals the assembled conv.
    y = F.conv2d(x, mix[0][:, :, None, None])
    y = F.conv2d(y, col[0].reshape(1, 1, 5, 1).expand(2, 1, 5, 1), padding=(2, 0), groups=2)
    y = F.conv2d(y, row[0].reshape(1, 1, 1, 5).expand(2, 1, 1, 5), padding=(0, 2), groups=2)
    torch.testing.assert_close(F.conv2d(x, w, padding=2), y)


def test_compressed_init_matches_the_variance_of_a_default_conv2d():
    torch.manual_seed(1)
    w = CompressedConv2d(64, 64, 5, 4).kernel().detach()
    expected = 1 / (3 * 64 * 25)
    assert float(w.var()) == pytest.approx(expected, rel=0.15)


def test_compressed_surrogate_has_five_times_fewer_conv_parameters_than_the_full_one():
    full = WaveSurrogate(channels=32, layers=4, kernel_size=5)
    small = WaveSurrogate(channels=32, layers=4, kernel_size=5, rank=4)
    widths = [3, 32, 32, 32, 1]
    pairs = list(zip(widths[:-1], widths[1:]))
    assert conv_param_count(full) == sum(full_param_count(a, b, 5) for a, b in pairs)
    assert conv_param_count(small) == sum(compressed_param_count(a, b, 5, 4) for a, b in pairs)
    assert conv_param_count(full) / conv_param_count(small) >= 5
    u = torch.randn(2, 16, 16)
    assert small(u, u, u).shape == (2, 16, 16)


def test_spatial_factor_scale_is_redundant_and_normalised_away():
    torch.manual_seed(2)
    layer = CompressedConv2d(3, 4, 5, 2).double()
    x = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    before = layer(x)
    with torch.no_grad():
        layer.col.mul_(torch.tensor([[3.0], [0.1]], dtype=torch.float64))
        layer.row.mul_(7.0)
    torch.testing.assert_close(layer(x), before, rtol=1e-12, atol=1e-12)
    # The kernel's scale lives in the mixing matrices alone: doubling them doubles the kernel.
    w = layer.kernel()
    with torch.no_grad():
        layer.mix.mul_(2.0)
    torch.testing.assert_close(layer.kernel(), 2 * w)


def test_surrogate_takes_one_rank_per_layer():
    small = WaveSurrogate(channels=24, layers=4, kernel_size=5, rank=(9, 4, 4, 9))
    widths, ranks = [3, 24, 24, 24, 1], [9, 4, 4, 9]
    expected = sum(compressed_param_count(a, b, 5, r) for a, b, r in zip(widths[:-1], widths[1:], ranks))
    assert conv_param_count(small) == expected == 5805
    assert conv_param_count(WaveSurrogate(channels=24, layers=4, kernel_size=5)) / expected >= 5
    with pytest.raises(ConfigError, match="one rank per layer"):
        WaveSurrogate(channels=24, layers=4, kernel_size=5, rank=(9, 4, 9))


def test_even_kernel_or_zero_rank_is_a_config_error():
    with pytest.raises(ConfigError, match="kernel_size"):
        CompressedConv2d(2, 2, 4, 1)
    with pytest.raises(ConfigError, match="rank"):
        CompressedConv2d(2, 2, 3, 0)
    with pytest.raises(ConfigError, match=r"path='fast': must be one of"):
        CompressedConv2d(2, 2, 3, 1, path="fast")
    with pytest.raises(ConfigError, match="in_channels=0: must be at least 1"):  # was a ZeroDivisionError
        CompressedConv2d(0, 2, 3, 1)
    with pytest.raises(ConfigError, match="out_channels=0: must be at least 1"):
        CompressedConv2d(2, 0, 3, 1)


@pytest.mark.parametrize("rank", [None, 3])
def test_surrogate_adds_its_last_layers_output_to_the_leapfrog_extrapolation(rank):
    """``u_next = 2 u_now - u_prev + net(...)`` with no activation after the last layer: with that layer's weights
    zeroed and its bias set to -1, the surrogate returns ``2 u_now - u_prev - 1`` exactly (a GELU there would give
    GELU(-1) = -0.159 instead, and a dropped extrapolation would lose the fields)."""
    torch.manual_seed(0)
    model = WaveSurrogate(channels=4, layers=3, kernel_size=3, rank=rank)
    last = model.net[-1]
    with torch.no_grad():
        for p in last.parameters():
            p.zero_()
        last.bias.fill_(-1.0)
    u_prev, u_now, v = torch.randn(3, 2, 9, 8)
    with torch.no_grad():
        out = model(u_prev, u_now, v)
    torch.testing.assert_close(out, 2 * u_now - u_prev - 1.0, rtol=0, atol=1e-6)


def test_compressed_bias_is_initialised_as_a_default_conv2ds():
    """nn.Conv2d draws its bias from U(-1/sqrt(C_in k^2), 1/sqrt(C_in k^2)); 4000 draws reach within 0.2% of the bound."""
    torch.manual_seed(2)
    bias = CompressedConv2d(6, 4000, 5, 2).bias.detach()
    bound = 1 / (6 * 25) ** 0.5
    assert float(bias.abs().max()) <= bound and float(bias.abs().max()) > 0.99 * bound
    assert float(bias.var()) == pytest.approx(bound ** 2 / 3, rel=0.1)  # SE of the variance ~ 2% at n = 4000
