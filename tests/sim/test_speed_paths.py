"""The faster forms of issue 24 against the expressions they replace: the same bits, or the closed form.

Frames must stay bit-identical, so each rewrite of the generation path is held to the bits of
the expression it replaced (an exact identity of IEEE arithmetic, stated at each test). LS
interpolation changed its order of summation, so it is held to the float64 separable product.
"""
import gc
import math
import weakref

import pytest
import torch

from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import get_classical
from wavefront.sim.fading import _Scratch, _uniform_angles
from wavefront.sim.interpolation import interpolation_matrix
from wavefront.utils import constant, make_generator


@pytest.mark.parametrize("kind", ["linear", "nearest", "spline"])
@pytest.mark.parametrize("batch", [1, 3])
def test_ls_on_real_pairs_equals_the_float64_separable_product(kind, batch):
    # H = A_f P A_t^T with real weights. The float32 GEMMs sum at most P_f = 12 and then 2 P_t = 4
    # products of weights |w| <= 1.2 (the spline's) and pilots |p| <= ~5: each entry within
    # (12 + 4) * 2^-24 * 1.2 * 5 * 12 of exact, about 7e-5 absolute at worst and ~1e-6 in practice;
    # 2e-6 relative to the largest entry holds that with room, while a transposed time factor
    # (kron(I_2, A_t^T) for kron(A_t^T, I_2)) or a frame's columns read from another frame moves
    # entries by O(1).
    cfg = SystemConfig.from_dict({})
    o = cfg.ofdm
    g = make_generator(3)
    pilots = torch.complex(torch.randn(batch, *o.pilot_shape, generator=g), torch.randn(batch, *o.pilot_shape, generator=g))
    A_f = torch.as_tensor(interpolation_matrix(o.pilot_subcarriers, o.num_subcarriers, kind))
    A_t = torch.as_tensor(interpolation_matrix(o.pilot_symbol_indices, o.num_symbols, kind))
    want = A_f.to(torch.complex128) @ pilots.to(torch.complex128) @ A_t.T.to(torch.complex128)
    est = get_classical(f"ls-{kind}", cfg)
    for p in (pilots, pilots.reshape(batch, -1)):  # [B, P_f, P_t] and the flat [B, P]
        got = est.estimate(p, None)
        assert got.shape == (batch, *o.grid_shape) and got.dtype == torch.complex64
        assert (got.to(torch.complex128) - want).abs().max() <= 2e-6 * want.abs().max()
    conj = est.estimate(pilots.conj(), None)  # a conjugate view: the pairs are read after resolving it
    assert (conj.to(torch.complex128) - want.conj()).abs().max() <= 2e-6 * want.abs().max()


@pytest.mark.parametrize("scale", [math.pi, math.pi / 20, math.pi / 7])
def test_uniform_angles_are_the_bits_of_two_r_minus_one_times_the_scale(scale):
    # torch's float32 r is k 2^-24: r - 1/2 is exact, doubling is exact, so (r - 1/2)(2 s) rounds
    # once, as (2 r - 1) s does: the same bits (a rewrite as 2 s r - s rounds twice and differs).
    shape = (64, 23, 20)
    got = _uniform_angles(shape, scale, make_generator(9), "cpu")
    r = torch.rand(shape, generator=make_generator(9))
    assert torch.equal(got, r.mul(2).sub(1).mul(scale))
    assert got.abs().max() <= scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_operands_give_the_bits_of_python_numbers(dtype):
    # A Python number meets a tensor of dtype rounded to dtype; utils.constant holds that rounding.
    g = make_generator(4)
    x = torch.randn(4099, generator=g, dtype=torch.float64).mul(torch.logspace(-30, 30, 4099, dtype=torch.float64))
    x = x.to(dtype)
    for c in (2.0, -10.0, 0.5, math.pi, 2 * math.pi / 20, 1 / 3, 7.1e-5, 1e-30):
        k = constant(c, dtype, x.device)
        assert k.dim() == 0 and k.dtype == dtype
        assert torch.equal(x * k, x * c) and torch.equal(x / k, x / c) and torch.equal(x - k, x - c)
        assert torch.equal(torch.pow(constant(10.0, dtype, "cpu"), x.clamp(-30, 30) / k),
                          torch.pow(10.0, x.clamp(-30, 30) / c))
    assert constant(2.0, dtype, "cpu") is constant(2.0, dtype, torch.device("cpu"))  # cached


@pytest.mark.parametrize("convention", ["per-re", "pilot-grid"])
def test_noise_variance_has_the_bits_of_its_expression_and_the_closed_form(convention):
    # (x + off).div(-10) is -(x + off) / 10 exactly (IEEE division is sign-symmetric); without an
    # offset x + 0.0 is x except at -0.0, where 10^(+-0) = 1 either way.
    cfg = SystemConfig.from_dict({"channel": {"snr_convention": convention}})
    off = cfg.snr_offset_db
    for dtype in (torch.float32, torch.float64):
        snr = torch.cat([torch.tensor([0.0, -0.0, 25.0, -5.5]), torch.linspace(-10, 40, 1001)]).to(dtype)
        got = cfg.noise_variance(snr)
        assert torch.equal(got, torch.pow(10.0, -(snr + off) / 10))
        want = 10.0 ** (-(snr.double() + off) / 10)
        # the exponent carries ~2 roundings of size eps (|x| + |off|), which move 10^(-x/10) by a relative
        # ln(10)/10 of that; pow itself a few eps
        eps = float(torch.finfo(dtype).eps)
        rtol = math.log(10) / 10 * 2 * eps * (float(snr.abs().max()) + abs(off)) + 4 * eps
        assert torch.allclose(got.double(), want, rtol=rtol, atol=0)
    assert torch.equal(cfg.noise_variance(torch.tensor([10, 20])), torch.pow(10.0, -(torch.tensor([10, 20]) + off) / 10))


def test_scratch_views_follow_a_grown_buffer_and_release_the_old_one():
    scratch = _Scratch()
    small = scratch.take("x", (2, 3), torch.float32, "cpu")
    assert scratch.take("x", (2, 3), torch.float32, "cpu") is small  # the view of the last call, kept
    halves = scratch.views("x", (2, 3), lambda t: (t[:1], t[1:]))
    small.copy_(torch.arange(6.0).reshape(2, 3))
    assert torch.equal(halves[1], torch.tensor([[3.0, 4.0, 5.0]]))
    old = weakref.ref(scratch._buffers["x"])
    big = scratch.take("x", (4, 5), torch.float32, "cpu")  # grows: a new buffer
    again = scratch.take("x", (2, 3), torch.float32, "cpu")
    assert again.untyped_storage().data_ptr() == big.untyped_storage().data_ptr()
    new_halves = scratch.views("x", (2, 3), lambda t: (t[:1], t[1:]))
    assert new_halves[0].untyped_storage().data_ptr() == big.untyped_storage().data_ptr()
    del small, halves
    gc.collect()
    assert old() is None  # no cached view holds the old buffer


@pytest.mark.parametrize("ofdm", [{}, {"modulation": "16qam"}, {"pilot_subcarrier_spacing": 4, "pilot_subcarrier_offset": 2},
                                  {"pilot_subcarrier_spacing": 6, "pilot_subcarrier_offset": 5, "pilot_symbols": [0, 4, 13]},
                                  {"pilot_subcarrier_spacing": 120, "pilot_symbols": [13]}])
def test_grid_placed_by_groups_has_the_bits_of_the_per_position_gather(ofdm):
    # Both copy symbol bit patterns (no arithmetic): every position must hold the same symbol.
    from wavefront.sim.frames import FrameGenerator, _random_bytes

    gen = FrameGenerator(SystemConfig.from_dict({"ofdm": ofdm}))
    assert gen._grid_groups is not None
    column, scale, offset, table = gen._byte_grid
    for batch in (8, 37):
        byte_values = _random_bytes(batch, gen.info_bits, make_generator(batch), "cpu")
        want = table.index_select(0, torch.gather(byte_values, 1, column.expand(batch, -1)).mul(scale).add(offset).view(-1))
        assert torch.equal(gen._grid_by_groups(byte_values).view(torch.int64).reshape(-1), want)


def test_irregular_layouts_keep_the_per_position_gather():
    from wavefront.sim.frames import FrameGenerator

    for ofdm in ({"pilot_subcarrier_spacing": 7}, {"modulation": "64qam"}):
        assert FrameGenerator(SystemConfig.from_dict({"ofdm": ofdm}))._grid_groups is None
