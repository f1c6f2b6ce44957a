"""TDL-D/E's line-of-sight path: a deterministic Doppler, a phase drawn uniformly per frame, and how far from Gaussian it is."""
import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from wavefront.sim.config import SystemConfig
from wavefront.sim.fading import ofdm_channel
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.profiles import tdl_profile
from wavefront.sim.statistics import fourth_moment_ratio
from wavefront.utils import make_generator


@pytest.mark.parametrize("letter", ["D", "E"])
def test_los_path_has_deterministic_doppler_and_a_uniform_phase_per_frame(letter):
    # The LoS path alone (the profile's Rayleigh powers zeroed), through the production grid path:
    # H(f, t) = sqrt(P_los) exp(j (2 pi f_d c_los t + phi_0)), tau_0 = 0. Every frame's phase advances
    # by exactly 2 pi f_d c_los dt (c_los = 0.7, TR 38.901's LoS peak), its modulus is sqrt(P_los), and
    # phi_0 over 20,000 frames is uniform (KS test, and circular moments within 3 / sqrt(B)).
    prof = tdl_profile(letter)
    assert prof.norm_delays[0] == 0.0 and prof.los_cos_aoa == pytest.approx(0.7)
    los_only = dataclasses.replace(prof, nlos_powers=np.zeros_like(prof.nlos_powers))
    cfg = SystemConfig()
    B = 20_000
    fd = torch.rand(B, generator=make_generator(3), dtype=torch.float64).mul(1000).float()
    h = ofdm_channel(cfg.ofdm, los_only, torch.full((B,), 300e-9), fd, 20, make_generator(4))[:, 0].to(torch.complex128)
    t = torch.arange(cfg.ofdm.num_symbols, dtype=torch.float64) * cfg.ofdm.symbol_duration_s
    expected = torch.exp(2j * math.pi * 0.7 * fd.double()[:, None] * t)
    assert torch.allclose(h.abs(), torch.full_like(h.abs(), math.sqrt(prof.los_power)), atol=1e-5)
    assert (h / h[:, :1] - expected).abs().max() < 2e-5
    phi = torch.angle(h[:, 0]).numpy()
    assert kstest((phi + math.pi) / (2 * math.pi), "uniform").pvalue > 0.01
    for k in range(1, 5):
        assert abs(np.exp(1j * k * phi).mean()) < 3 / math.sqrt(B)


@pytest.mark.parametrize("letter", ["D", "E"])
def test_los_channel_fourth_moment_is_far_from_gaussian_and_matches_closed_form(letter):
    # E|H|^4 / (E|H|^2)^2 at one resource element of 20,000 frames, against fourth_moment_ratio
    # (2 for a Gaussian): the second-order model treats this channel as Gaussian; it is not.
    cfg = SystemConfig.from_dict({"channel": {"profile": letter, "delay_spread_s": 300e-9, "doppler_hz": 500.0}})
    h = FrameGenerator(cfg).generate(20_000, seed=7, with_data=False).h[:, 37, 5].to(torch.complex128)
    m2, m4 = h.abs().square(), h.abs().square().square()
    prof = tdl_profile(letter)
    closed = fourth_moment_ratio(prof)
    n = len(h)
    # E|H|^2 = 1 exactly in expectation; each moment against its closed form within 3 SE
    assert abs(float(m2.mean()) - 1.0) < 3 * float(m2.std()) / math.sqrt(n)
    assert abs(float(m4.mean()) - closed) < 3 * float(m4.std()) / math.sqrt(n)
    assert closed < 1.25  # against 2 for a complex Gaussian of the same covariance


def test_first_tap_fourth_moment_matches_rician_with_sum_of_sinusoids():
    # TDL-D tap 0 (LoS + a 20-sinusoid Rayleigh part, K = 21.4): (K^2 + 4K + 2 - 1/N) / (K + 1)^2 = 1.087;
    # a TDL-A tap without LoS: 2 - 1/N = 1.95, the sum of sinusoids' own (small) departure from Gaussian.
    prof = tdl_profile("D")
    K, N = prof.los_power / prof.nlos_powers[0], 20
    assert fourth_moment_ratio(prof, tap=0) == pytest.approx((K * K + 4 * K + 2 - 1 / N) / (K + 1) ** 2, rel=1e-12)
    assert fourth_moment_ratio(tdl_profile("A"), tap=0) == pytest.approx(2 - 1 / N, rel=1e-12)
    B = 20_000
    tap0 = dataclasses.replace(prof, nlos_powers=np.eye(len(prof.nlos_powers))[0] * prof.nlos_powers[0])
    h = ofdm_channel(SystemConfig().ofdm, tap0, torch.full((B,), 300e-9), torch.full((B,), 500.0), N,
                     make_generator(9))[:, 0, 0].to(torch.complex128)
    m2, m4 = h.abs().square(), h.abs().square().square()
    total = prof.los_power + prof.nlos_powers[0]
    assert abs(float(m2.mean()) - total) < 3 * float(m2.std()) / math.sqrt(B)
    assert abs(float(m4.mean()) / total ** 2 - fourth_moment_ratio(prof, tap=0)) < 3 * float(m4.std()) / math.sqrt(B) / total ** 2


def test_taps_without_the_los_path_and_cdl_clusters_have_the_sum_of_sinusoids_fourth_moment():
    """E|x|^4 / (E|x|^2)^2 = 2 - 1/N for a sum of N equal-amplitude, uniform-phase sinusoids: a TDL-D tap past
    tap 0 holds no LoS power (N = 20 sinusoids as asked), a CDL-A cluster has N = its 20 rays whatever is asked."""
    from wavefront.sim.profiles import channel_profile

    d = tdl_profile("D")
    for tap in (1, 5):
        assert fourth_moment_ratio(d, num_sinusoids=20, tap=tap) == pytest.approx(2 - 1 / 20, rel=1e-12)
    cdl = channel_profile("CDL-A")
    m = cdl.ray_aoa_rad.shape[1]
    assert m == 20 and fourth_moment_ratio(cdl, num_sinusoids=8, tap=3) == pytest.approx(2 - 1 / m, rel=1e-12)
