"""The phase recurrence and the geometric delay phasors against a float64 evaluation of the same draws.

``uniform_tap_gains`` builds ``exp(j(w c_n t_m + phi_n))`` on an equally spaced grid as
``q_n z_n^m``, with ``z^m`` a product of at most ``ceil(log2 T)`` anchors ``z^(2^i)``, each squared
in float64 and rounded to complex64 once (relative error <= 2^-24 per component). Each value is
therefore at most ``1 + 2 ceil(log2 T)`` float32 roundings (~1.2e-7 each, complex) from exact:
below 1.1e-6 for T <= 16 and 1.4e-6 for T <= 64. A tap sums N such sinusoids of amplitude
``sqrt(P_l / N)``, so its error is below ``1.4e-6 sqrt(N P_l)`` even if every error lines up;
the tolerance below is that bound. An off-by-one step, a wrong phase sign or a lost anchor moves
a gain by O(w c step) (0.6 rad at 1400 Hz), five orders of magnitude more.
"""
import math

import numpy as np
import pytest
import torch

from wavefront.sim.config import OFDMConfig
from wavefront.sim.fading import (
    TimeVaryingChannel, delay_phasors, draw_sinusoids, ofdm_channel, uniform_tap_gains,
)
from wavefront.sim.profiles import channel_profile, subcarrier_offsets_hz, symbol_times_s
from wavefront.utils import make_generator

OFDM = OFDMConfig()
DOPPLERS_HZ = [0.0, 7.0, 300.0, 1000.0, 1400.0]


def _gains_float64(profile, draws, times_s: torch.Tensor) -> torch.Tensor:
    """Returns the sum-of-sinusoids gains [B, L, T] complex128 of ``draws`` at ``times_s`` [T] float64, directly."""
    w = 2 * math.pi * draws.doppler_hz.double().reshape(-1, 1, 1, 1)
    arg = w * draws.cosines.double().unsqueeze(-1) * times_s + draws.phases_rad.double().unsqueeze(-1)
    amp = torch.as_tensor(np.sqrt(profile.nlos_powers / draws.cosines.shape[2])).reshape(1, -1, 1)
    a = torch.exp(1j * arg).sum(2) * amp
    if profile.is_los:
        a[:, 0] += math.sqrt(profile.los_power) * torch.exp(
            1j * (w.reshape(-1, 1) * profile.los_cos_aoa * times_s + draws.los_phase_rad.double()))
    return a


def _bound(profile, num_sinusoids: int) -> torch.Tensor:
    """Returns the per-tap error bound [1, L, 1] of the module docstring (T <= 64)."""
    p = torch.as_tensor(profile.nlos_powers).clone()
    p[0] += profile.los_power
    return 1.4e-6 * torch.sqrt(num_sinusoids * p).reshape(1, -1, 1) + 1e-7


@pytest.mark.parametrize("batch", [1, 70])
@pytest.mark.parametrize("profile_name", ["A", "D", "CDL-C"])
@pytest.mark.parametrize("num_times,start_s", [(14, 0.0), (64, 3.3e-5)])
def test_recurrence_tap_gains_equal_the_float64_sum_of_sinusoids(profile_name, batch, num_times, start_s):
    prof = channel_profile(profile_name)
    fd = torch.tensor(DOPPLERS_HZ * (batch // len(DOPPLERS_HZ) + 1))[:batch]  # 1400 Hz included at batch > 4
    if batch == 1:
        fd = torch.tensor([1400.0])
    draws = draw_sinusoids(prof, fd, 20, make_generator(11))
    step = OFDM.symbol_duration_s
    got = uniform_tap_gains(prof, draws, start_s, step, num_times)
    want = _gains_float64(prof, draws, start_s + step * torch.arange(num_times, dtype=torch.float64))
    assert got.shape == want.shape and got.dtype == torch.complex64
    N = draws.cosines.shape[2]
    assert ((got - want).abs() <= _bound(prof, N)).all(), float((got - want).abs().max())


@pytest.mark.parametrize("batch", [1, 40])
def test_delay_phasors_equal_the_float64_exponentials_on_the_subcarrier_grid(batch):
    tau = torch.rand(batch, 23, generator=make_generator(3)) * 3e-6  # up to 3 us: 18 rad at the band edge
    f = subcarrier_offsets_hz(OFDM)
    got = delay_phasors(tau, float(f[0]), OFDM.subcarrier_spacing_hz, OFDM.num_subcarriers)
    want = torch.exp(-2j * math.pi * f.reshape(1, -1, 1) * tau.double().unsqueeze(1))  # [B, F, L]
    # two factors, each rounded once from float64, and their product: three complex64 roundings
    assert ((got - want).abs() < 4e-7).all(), float((got - want).abs().max())



@pytest.mark.parametrize("num_freqs,taps", [(2000, 23), (120, 400)])
def test_delay_phasors_of_wide_grids_and_many_taps_equal_the_float64_exponentials(num_freqs, taps):
    # K = isqrt(F - 1) + 1 fine and I = ceil(F / K) coarse frequencies: with K L > 32768 / I the product runs per
    # frame in pieces of coarse rows (F = 2000 and 23 taps: 31 rows of I = 45; 400 taps on 120: 7 of 11); every
    # frame there takes its own fine factors
    tau = torch.rand(3, taps, generator=make_generator(4)) * 3e-6
    first = -(num_freqs // 2) * OFDM.subcarrier_spacing_hz
    got = delay_phasors(tau, first, OFDM.subcarrier_spacing_hz, num_freqs)
    f = first + OFDM.subcarrier_spacing_hz * torch.arange(num_freqs, dtype=torch.float64)
    want = torch.exp(-2j * math.pi * f.reshape(1, -1, 1) * tau.double().unsqueeze(1))
    assert ((got - want).abs() < 4e-7).all(), float((got - want).abs().max())


def test_delay_phasors_differentiate_to_minus_j_2_pi_f_times_the_phasor():
    # tau requiring a gradient takes the one-product branch: the same values, and d e / d tau = -j 2 pi f e
    tau = (torch.rand(2, 23, generator=make_generator(5)) * 3e-6).requires_grad_()
    f = subcarrier_offsets_hz(OFDM)
    got = delay_phasors(tau, float(f[0]), OFDM.subcarrier_spacing_hz, OFDM.num_subcarriers)
    want = torch.exp(-2j * math.pi * f.reshape(1, -1, 1) * tau.detach().double().unsqueeze(1))  # [B, F, L]
    assert got.requires_grad and ((got.detach() - want).abs() < 4e-7).all()
    w = torch.view_as_complex(torch.randn(2, len(f), 23, 2, generator=make_generator(6), dtype=torch.float64))
    (got * w.to(torch.complex64)).real.sum().backward()
    closed = (w * -2j * math.pi * f.reshape(1, -1, 1) * want).real.sum(1)  # [B, L]
    # float32 phasors and products: ~1e-6 relative to the sum of the terms' magnitudes
    scale = (w.abs() * 2 * math.pi * f.abs().reshape(1, -1, 1)).sum(1)
    assert ((tau.grad.double() - closed).abs() < 1e-5 * scale).all(), float(((tau.grad.double() - closed) / scale).abs().max())

@pytest.mark.parametrize("profile_name", ["A", "D", "CDL-B"])
def test_grid_channel_equals_the_float64_channel_of_the_same_draws_at_1400_hz(profile_name):
    prof = channel_profile(profile_name)
    fd, ds = torch.tensor([1400.0]), torch.tensor([300e-9])
    h = ofdm_channel(OFDM, prof, ds, fd, 20, make_generator(5))  # batch 1
    draws = draw_sinusoids(prof, fd, 20, make_generator(5))  # the same draws
    a = _gains_float64(prof, draws, symbol_times_s(OFDM))
    tau = ds.float().double().reshape(-1, 1) * torch.tensor(prof.norm_delays, dtype=torch.float32).double()
    e = torch.exp(-2j * math.pi * subcarrier_offsets_hz(OFDM).reshape(1, -1, 1) * tau.unsqueeze(1))
    want = torch.einsum("bfl,blt->bft", e, a)
    # each tap's gain error (bound above) plus |a_l| times its phasor's (4e-7), summed over taps
    bound = float(_bound(prof, draws.cosines.shape[2]).sum() + 4e-7 * a.abs().sum(1).max())
    assert (h - want).abs().max() < bound


@pytest.mark.parametrize("profile_name", ["D", "CDL-B"])
def test_ici_sample_gains_equal_the_float64_sum_of_sinusoids_at_every_sample(profile_name):
    # The time-domain path: the phasors at the span centres, then the series in time (error below 1e-8
    # per sinusoid, so below 1e-8 sqrt(N P_l) per tap) in float32.
    # 1550 Hz: CDL-B takes the slot as its span, its centre's angle reduced in float64 (w c > 8 - pi rad)
    prof = channel_profile(profile_name)
    for fd in ([1400.0], [1400.0, 300.0, 0.0], [1550.0]):  # batch 1, a batch of Dopplers, the reduced start
        tv = TimeVaryingChannel.draw(OFDM, prof, torch.full((len(fd),), 300e-9), torch.tensor(fd), 20, make_generator(2))
        plan = tv._plan(slice(0, len(fd)))
        assert plan.reduce_start == (profile_name == "CDL-B" and fd == [1550.0])
        times = tv.sample_times_s()  # [T, N] float64
        want = _gains_float64(prof, tv.draws, times.reshape(-1)).reshape(len(fd), -1, *times.shape)
        got = tv.gains_at_samples()
        bound = (_bound(prof, tv.draws.cosines.shape[2]) * 2).unsqueeze(-1)  # + the series: P more float32 terms
        assert ((got - want).abs() <= bound).all(), float((got - want).abs().max())


@pytest.mark.parametrize("doppler_hz,terms,span", [(0.0, 1, 1), (7.0, 3, 14), (300.0, 5, 14), (1000.0, 6, 14),
                                                    (1400.0, 7, 14), (5000.0, 10, 1), (15e3, 16, 1)])
def test_series_keeps_every_sinusoid_within_1e8_at_every_sample(doppler_hz, terms, span):
    # The ICI path's series in float64, as the plan computes it: a sinusoid exp(j w t), w = 2 pi f_ref v for v in
    # [-1, 1] (every Doppler up to the plan's, every arrival angle), through the J_p series in v, the phasor at its
    # span's centre and, for the slot, the re-expansion on each symbol, evaluated on the local basis at every useful
    # sample of every symbol: within 1e-8 of exp(j w t). P local terms (6 at 1000 Hz, where a Taylor series needs 7);
    # the slot as the span at 7-1400 Hz (TDL-A's 23 taps), single symbols at 5 and 15 kHz.
    tv = TimeVaryingChannel.draw(OFDM, channel_profile("A"), torch.full((1,), 300e-9), torch.tensor([doppler_hz]),
                                 20, make_generator(0))
    plan = tv._plan(slice(0, 1))
    assert (plan.terms, plan.span) == (terms, span)
    assert plan.doppler_ref_hz >= doppler_hz
    v = torch.linspace(-1.0, 1.0, 41, dtype=torch.float64)
    w = 2 * math.pi * plan.doppler_ref_hz * v  # rad/s [41]
    cheb = [torch.ones_like(v), v]
    while len(cheb) < plan.coefficients64.shape[1]:
        cheb.append(2 * v * cheb[-1] - cheb[-2])
    rows = plan.coefficients64 @ torch.stack(cheb[:plan.coefficients64.shape[1]])  # [P_c, 41]
    coef = rows * torch.tensor([1, 1j], dtype=torch.complex128)[torch.arange(rows.shape[0]) % 2].reshape(-1, 1)
    centres = plan.first_centre_s + plan.span_step_s * torch.arange(plan.spans, dtype=torch.float64)
    g = coef.unsqueeze(-1) * torch.exp(1j * w.reshape(1, -1, 1) * centres)  # [P_c, 41, K]
    if plan.span == 1:
        local = g  # [P, 41, T]
    else:
        r = plan.reexpansion64.reshape(plan.terms, plan.span, -1).to(torch.complex128)  # [P, T, P_s]
        local = torch.einsum("qmp,pv->qvm", r, g[..., 0])
    n = tv.fft_size
    u2 = 2 * (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / n
    basis = [torch.ones_like(u2), u2]
    while len(basis) < plan.terms:
        basis.append(2 * u2 * basis[-1] - basis[-2])
    basis = torch.stack(basis[:plan.terms])
    basis[1:] -= basis[1:].mean(1, keepdim=True)  # B_p = T_p(2 u) less its mean over the samples, B_0 = 1
    series = torch.einsum("qvm,qn->vmn", local, basis.to(torch.complex128))
    exact = torch.exp(1j * w.reshape(-1, 1, 1) * tv.sample_times_s())  # [41, T, N]
    assert (series - exact).abs().max() < 1e-8


def test_tap_gains_and_phasors_multiply_to_ofdm_channels_grid_from_the_same_draws():
    """MIMO mixes its antennas on the taps (``P @ (M a)``) instead of the grid (``M (P @ a)``): the factors
    must be ``ofdm_channel``'s, from the same random numbers, and leave the generator where it leaves it."""
    from wavefront.sim.config import SystemConfig
    from wavefront.sim.fading import ofdm_channel, tap_gains_and_phasors
    from wavefront.sim.profiles import channel_profile
    from wavefront.utils import make_generator

    cfg = SystemConfig().updated(ofdm={"num_subcarriers": 72})
    prof = channel_profile("C")
    ds = torch.tensor([50e-9, 300e-9, 300e-9, 120e-9])
    fd = torch.tensor([10.0, 900.0, 900.0, 400.0])
    g1, g2 = make_generator(11, "cpu"), make_generator(11, "cpu")
    h = ofdm_channel(cfg.ofdm, prof, ds, fd, 20, g1)
    a, P = tap_gains_and_phasors(cfg.ofdm, prof, ds, fd, 20, g2)
    L = a.shape[1]
    assert a.shape == (4, L, 14) and P.shape == (4, 72, L) and L > 1
    torch.testing.assert_close(torch.bmm(P, a), h, rtol=0, atol=2e-6 * float(h.abs().max()))
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    # phasor_rows: rows 1 and 2 share a delay spread, so one phasor block serves both
    _, P_rows = tap_gains_and_phasors(cfg.ofdm, prof, ds, fd, 20, make_generator(11, "cpu"), phasor_rows=slice(0, 4, 2))
    assert torch.equal(P_rows, P[0::2])
