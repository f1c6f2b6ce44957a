"""The impairments' second-order statistics (sim/impairment_stats.py) against Monte Carlo of the frame generator's own functions.

Per frame the impairments are drawn by :func:`draw_impairments` (the frame generator's draw), the timing
factor ``c_f(k)`` is read off :func:`apply_impairments` on an all-ones spectrum (within the CP it is the
received bin itself) and the common factor ``c_t(s) = mean_n exp(j theta)`` off :func:`oscillator_phase`.
Each moment is compared at the default layout's pilots (12 subcarriers x symbols 2 and 11), where the
estimators use it: ``E[c]`` at every pilot, ``E[c c^H]`` at every distinct pilot lag (it is Toeplitz in the
subcarrier) and every symbol pair, and ``E|c|^2 = 1 - P_imp``; real and imaginary parts each within 3 standard
errors, Bonferroni-corrected for the ``m`` comparisons of a setting (up to 46): ``|z| <= z_m`` with a two-sided
tail of ``0.0027 / m`` (``z_46 = 4.0``), so the whole setting fails by chance no more often than one 3-SE check does.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import _draw
from wavefront.sim.impairment_stats import impairment_moments, phase_characteristic
from wavefront.sim.impairments import apply_impairments, draw_impairments, oscillator_phase

FRAMES = 3000  # phase factors: [B, 14, 128] float64 phases
TIMING_FRAMES = 20000  # timing factors: one symbol each, cheap


def _config(**channel) -> SystemConfig:
    return SystemConfig.from_dict({"channel": {"profile": "A", "snr_db": 20.0, "delay_spread_s": 1e-7, "doppler_hz": 100.0,
                                               **channel}})


def _bound(m: int) -> float:
    """Returns the per-comparison |z| bound of ``m`` comparisons at a family-wise two-sided 3-SE level (0.27%)."""
    return NormalDist().inv_cdf(1 - 0.0027 / (2 * m))


def _within(samples: torch.Tensor, closed: complex, label: str, comparisons: int) -> float:
    """Asserts the mean of complex ``samples`` [B] is ``closed`` within ``_bound(m)`` SE, real and imaginary; returns the larger |z|.

    1e-6 is added to the tolerance: the timing factor passes through complex64 FFTs, and at DC it is 1 in every frame.
    """
    z = 0.0
    for part, ref in ((samples.real, closed.real), (samples.imag, closed.imag)):
        m, se = float(part.mean()), float(part.std()) / math.sqrt(part.numel())
        zz = abs(m - ref) / (se + 1e-6 / 3)
        assert abs(m - ref) <= _bound(comparisons) * se + 1e-6, (label, m, ref, se)
        z = max(z, zz)
    return z


@pytest.mark.parametrize("delta", [(0.0, 4.0), (0.0, 2.0), (1.0, 9.0)])
def test_timing_ramp_mean_and_correlation_match_monte_carlo(delta):
    cfg = _config(timing_offset_samples=list(delta))
    o = cfg.ofdm
    n, cp = o.time_sampling()
    imp = draw_impairments(cfg.channel, TIMING_FRAMES, 11, torch.device("cpu"), _draw)
    spectrum = torch.ones(TIMING_FRAMES, 1, n, dtype=torch.complex64)
    c = apply_impairments(imp, slice(0, TIMING_FRAMES), spectrum, o, cp)[:, 0].to(torch.complex128)  # [B, F]
    mom = impairment_moments(cfg)
    pf = o.pilot_subcarriers
    m = 2 * (2 * len(pf) - 1)  # real and imaginary parts of 12 means and 11 lags
    zmax = max(_within(c[:, k], complex(mom.mean_f[k]), f"E c_f({k})", m) for k in pf)
    for lag in range(1, len(pf)):
        k, k2 = pf[lag], pf[0]
        zmax = max(zmax, _within(c[:, k] * c[:, k2].conj(), complex(mom.corr_f[k, k2]), f"E c_f c_f* lag {lag}", m))
    print(f"timing {delta}: max |z| {zmax:.2f}")
    assert mom.ici_power == 0.0 and torch.allclose(mom.mean_t, torch.ones(o.num_symbols, dtype=torch.complex128))


@pytest.mark.parametrize("channel", [{"cfo_hz": [-200.0, 200.0]}, {"cfo_hz": 150.0}, {"cfo_hz": [0.0, 300.0]},
                                     {"phase_noise_linewidth_hz": [0.0, 200.0]}, {"phase_noise_linewidth_hz": 100.0},
                                     {"phase_noise_linewidth_hz": [50.0, 400.0]},
                                     {"cfo_hz": [-100.0, 100.0], "phase_noise_linewidth_hz": [0.0, 100.0],
                                      "timing_offset_samples": [0.0, 2.0]}])
def test_common_phase_factor_mean_correlation_and_ici_power_match_monte_carlo(channel):
    cfg = _config(**channel)
    o = cfg.ofdm
    n, cp = o.time_sampling()
    T = o.num_symbols
    imp = draw_impairments(cfg.channel, FRAMES, 5, torch.device("cpu"), _draw)
    phase = oscillator_phase(imp, slice(0, FRAMES), FRAMES, T, n, cp, o.subcarrier_spacing_hz, torch.device("cpu"))
    c = torch.polar(torch.ones_like(phase), phase).mean(-1)  # [B, T] complex128
    mom = impairment_moments(cfg)
    pt = list(o.pilot_symbol_indices)
    m = 2 * (len(pt) + len(pt) * (len(pt) + 1) // 2 + 1)  # 2 means, 3 symbol pairs, E|c|^2
    zmax = max(_within(c[:, s], complex(mom.mean_t[s]), f"E c_t({s})", m) for s in pt)
    for i, s in enumerate(pt):
        for s2 in pt[i:]:
            zmax = max(zmax, _within(c[:, s] * c[:, s2].conj(), complex(mom.corr_t[s, s2]), f"E c_t({s}) c_t({s2})*", m))
    zmax = max(zmax, _within(c.abs().square()[:, 0].to(torch.complex128), complex(1.0 - mom.ici_power), "E|c|^2", m))
    print(f"{channel}: max |z| {zmax:.2f}, P_imp {mom.ici_power:.3g}")


def test_phase_characteristic_is_the_closed_form_at_fixed_values():
    cfg = _config(cfo_hz=150.0, phase_noise_linewidth_hz=100.0)
    ts = 1 / (128 * 15e3)
    lags = np.array([-300, -1, 0, 7, 1000])
    expected = np.exp(2j * np.pi * 150.0 * ts * lags) * np.exp(-np.pi * 100.0 * ts * np.abs(lags))
    np.testing.assert_allclose(phase_characteristic(cfg, lags), expected, rtol=1e-12)


def test_a_timing_range_beyond_the_cp_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="timing_offset_samples.*N_cp = 9"):
        impairment_moments(_config(timing_offset_samples=[0.0, 12.0]))


def test_a_timing_range_starting_before_the_symbol_is_refused_naming_the_field_value_and_rule():
    # a window opened early reads the previous symbol's tail: c_f is no ramp there, so the closed form is wrong
    with pytest.raises(ConfigError, match=r"^channel\.timing_offset_samples=\[-2\.0, 2\.0\]: .*0 <= delta <= N_cp = 9"):
        impairment_moments(_config(timing_offset_samples=[-2.0, 2.0]))
    with pytest.raises(ConfigError, match=r"timing_offset_samples=-1\.0: "):
        impairment_moments(_config(timing_offset_samples=-1.0))
    assert impairment_moments(_config(timing_offset_samples=[0.0, 9.0])).ici_power == 0.0  # the whole CP is allowed


def test_no_impairment_has_no_moments():
    assert impairment_moments(_config()) is None
