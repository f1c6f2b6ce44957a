"""Frames' SNR convention and noise, measured on the frames: circular noise of variance 10^(-SNR/10) per resource
element (or the pilot-grid offset), the same pilots with and without data, conditions drawn over their ranges."""
import math

import pytest
import torch

from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import FrameGenerator

SMALL = {"num_subcarriers": 24, "num_symbols": 4, "pilot_subcarrier_spacing": 2, "pilot_symbols": [0, 3]}


def _pilot_noise(cfg, n=400, seed=11):
    gen = FrameGenerator(cfg)
    fr = gen.generate(n, seed=seed, with_data=False)
    pf, pt = gen.pilot_index
    return fr, gen, (fr.pilots_ls - fr.h[:, pf, pt]).reshape(-1)  # (noise / pilot): |pilot| = 1


def test_pilot_noise_is_circular_with_the_per_re_variance_of_the_snr():
    cfg = SystemConfig.from_dict({"ofdm": SMALL, "channel": {"snr_db": 10.0, "delay_spread_s": 100e-9,
                                                             "doppler_hz": 100.0}})
    fr, _, e = _pilot_noise(cfg)
    n = e.numel()  # 400 frames x 24 pilots
    sigma2 = 10 ** (-10.0 / 10)
    assert fr.noise_var == pytest.approx(torch.full((400,), sigma2), rel=1e-6)
    # |e|^2 is exponential: the mean's relative SE is 1/sqrt(n) (1.0 %); 5 SE
    assert float(e.abs().square().mean()) == pytest.approx(sigma2, rel=5 / math.sqrt(n))
    # circular: half the power in each of Re and Im (relative SE sqrt(2/n) each), no pseudo-variance
    assert float(e.real.square().mean()) == pytest.approx(sigma2 / 2, rel=5 * math.sqrt(2 / n))
    assert float(e.imag.square().mean()) == pytest.approx(sigma2 / 2, rel=5 * math.sqrt(2 / n))
    assert abs(complex(e.square().mean())) < 5 * sigma2 / math.sqrt(n)


def test_frames_with_data_carry_the_same_pilots_as_frames_without():
    cfg = SystemConfig.from_dict({"ofdm": SMALL, "channel": {"snr_db": [0.0, 20.0], "delay_spread_s": [50e-9, 300e-9],
                                                             "doppler_hz": [10.0, 900.0]}})
    gen = FrameGenerator(cfg)
    a, b = gen.generate(16, seed=5, with_data=False), gen.generate(16, seed=5, with_data=True)
    assert torch.equal(a.h, b.h) and torch.equal(a.snr_db, b.snr_db)
    assert torch.allclose(a.pilots_rx, b.pilots_rx, rtol=0, atol=1e-6)
    pf, pt = gen.pilot_index
    assert torch.allclose(b.y[:, pf, pt], b.pilots_rx, rtol=0, atol=0)


def test_the_pilot_grid_convention_raises_the_per_re_snr_by_the_grid_over_the_pilots():
    cfg = SystemConfig.from_dict({"ofdm": SMALL, "channel": {"snr_db": 10.0, "delay_spread_s": 100e-9,
                                                             "doppler_hz": 100.0, "snr_convention": "pilot-grid"}})
    fr, gen, e = _pilot_noise(cfg)
    f, t = fr.h.shape[1:]
    p = fr.pilots_ls[0].numel()
    assert (f, t, p) == (24, 4, 24)  # per-RE SNR = 10 + 10 log10(96 / 24) dB
    sigma2 = 10 ** (-(10.0 + 10 * math.log10(f * t / p)) / 10)
    assert float(fr.noise_var[0]) == pytest.approx(sigma2, rel=1e-6)
    assert float(e.abs().square().mean()) == pytest.approx(sigma2, rel=5 / math.sqrt(e.numel()))


def test_conditions_are_uniform_over_their_ranges_and_recorded_in_their_own_fields():
    cfg = SystemConfig.from_dict({"ofdm": SMALL, "channel": {"snr_db": [5.0, 15.0], "delay_spread_s": [100e-9, 300e-9],
                                                             "doppler_hz": [200.0, 400.0]}})
    fr = FrameGenerator(cfg).generate(2000, seed=9, with_data=False)
    for name, (lo, hi) in (("snr_db", (5.0, 15.0)), ("delay_spread_s", (100e-9, 300e-9)), ("doppler_hz", (200.0, 400.0))):
        v = getattr(fr, name).double()
        assert fr.meta[name] is getattr(fr, name)
        assert lo * (1 - 1e-6) <= float(v.min()) < lo + 0.01 * (hi - lo), name
        assert hi - 0.01 * (hi - lo) < float(v.max()) <= hi * (1 + 1e-6), name
        # the mean of a uniform draw: SE (hi - lo) / sqrt(12 n) = 0.65 % of the range; 5 SE
        assert float(v.mean()) == pytest.approx((lo + hi) / 2, abs=5 * (hi - lo) / math.sqrt(12 * 2000)), name
    assert torch.allclose(fr.meta["noise_var"], 10 ** (-fr.snr_db / 10), rtol=1e-5)
