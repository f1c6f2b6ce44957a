"""Inter-carrier interference (``channel.ici``): the time-domain path against its closed forms and Sionna's."""
import json
import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import OFDMConfig, SystemConfig
from wavefront.sim.fading import TimeVaryingChannel, evaluate_tap_gains, ofdm_channel
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.lmmse import GenieLMMSE, genie_mse
from wavefront.sim.profiles import ChannelProfile, channel_profile, tdl_profile
from wavefront.sim.statistics import covariance_terms, ici_power
from wavefront.utils import make_generator

SCS = 15e3
OFDM = OFDMConfig()


def _jakes_ici_db(doppler_hz):
    """The small-Doppler closed form of the ICI power of Jakes fading over the 1/scs useful symbol, in dB."""
    return 10 * math.log10((2 * math.pi * doppler_hz / SCS) ** 2 / 24)


def _qpsk(shape, seed):
    q = torch.randint(0, 4, shape, generator=make_generator(seed))
    return torch.polar(torch.ones(shape), (2 * q + 1) * math.pi / 4).to(torch.complex64)


def _quiet(cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FrameGenerator(cfg)


# ---- ici: false is today's simulator, to float rounding ---------------------------------------
# Numbers of generate(n, seed=5) recorded at commit 851e570 (before the ICI path), re-recorded on
# another CPU after checking that 851e570 and this code give bit-identical frames there
# (`tests/sim/ici_off_golden.json`, written by `python tests/sim/test_ici.py --record`). Bit
# identity is a claim about one machine: another CPU's SIMD sin/cos/exp differ in the last bits,
# so the values are compared with tolerances. The channel has unit average power; float32
# rounding moves a value by ~1e-6 relative (a few ulp through the 20-sinusoid tap sums), while a
# change of physics (another draw, tap, Doppler or noise) moves it by O(1): rtol 1e-4 with atol
# 1e-5 separates the two by two orders of magnitude either way. Integers (bits) are exact: they
# come from torch's integer RNG, which is the same on every CPU.
GOLDEN_ICI_OFF = Path(__file__).parent / "ici_off_golden.json"
CASES = {
    "tdl-a": ({"channel": {"profile": "A", "doppler_hz": [0, 1000], "snr_db": [0, 30],
                           "delay_spread_s": [50e-9, 300e-9]}}, 37, True),
    "tdl-d-16qam": ({"ofdm": {"modulation": "16qam"}, "channel": {"profile": "D", "doppler_hz": 700, "snr_db": 20}}, 37, True),
    "cdl-c": ({"channel": {"profile": "CDL-C", "doppler_hz": 400, "travel_azimuth_deg": 30}}, 37, True),
    "tdl-a-300": ({"channel": {"profile": "A", "doppler_hz": [0, 1000], "snr_db": 25}}, 300, True),
    "tdl-a-pilots": ({"channel": {"profile": "A", "doppler_hz": [0, 1000]}}, 37, False),
}


def _ici_off_numbers(name: str) -> dict:
    """Returns the recorded numbers of one case: a strided sample of every tensor, its energy, and the bits."""
    d, n, with_data = CASES[name]
    fr = _quiet(SystemConfig.from_dict(d)).generate(n, seed=5, with_data=with_data)

    def c(t):
        return [float(f"{v:.8g}") for v in torch.view_as_real(t.contiguous()).reshape(-1).tolist()]

    out = {"h": c(fr.h[::6, ::17, ::3]), "h_energy": [float(fr.h.abs().square().double().sum())],
           "pilots_rx": c(fr.pilots_rx[::5].reshape(-1)[::3]),
           "noise_var": fr.noise_var.tolist(), "doppler_hz": fr.doppler_hz.tolist()}
    if fr.y is not None:
        out.update(y=c(fr.y[::6, ::17, ::3]), y_energy=[float(fr.y.abs().square().double().sum())],
                   bits=[int(fr.bits.sum()), *fr.bits.reshape(-1)[::997].tolist()])
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_ici_off_frames_equal_the_numbers_of_before_the_ici_path(name):
    want = json.loads(GOLDEN_ICI_OFF.read_text())[name]
    got = _ici_off_numbers(name)
    assert set(got) == set(want)
    assert got.pop("bits", None) == want.pop("bits", None)
    for key, ref in want.items():
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(ref), rtol=1e-4, atol=1e-5, err_msg=key)


# ---- the time-domain path --------------------------------------------------------------------
@pytest.mark.parametrize("with_data", [True, False])
@pytest.mark.parametrize("profile", ["A", "D", "CDL-C"])
def test_time_domain_path_equals_frequency_path_at_0_hz(profile, with_data):
    base = {"profile": profile, "doppler_hz": 0.0, "snr_db": [0, 30], "delay_spread_s": [50e-9, 300e-9]}
    off = FrameGenerator(SystemConfig.from_dict({"channel": base})).generate(70, seed=3, with_data=with_data)
    on = FrameGenerator(SystemConfig.from_dict({"channel": {**base, "ici": True}})).generate(70, seed=3, with_data=with_data)
    assert torch.equal(on.noise_var, off.noise_var) and torch.equal(on.delay_spread_s, off.delay_spread_s)
    assert (torch.equal(on.bits, off.bits) and torch.equal(on.codewords, off.codewords)) if with_data else on.bits is None
    assert (on.h - off.h).abs().max() < 2e-6  # float32 round-off on |H| ~ 1
    assert (on.pilots_rx - off.pilots_rx).abs().max() < 2e-6
    if with_data:
        assert (on.y - off.y).abs().max() < 2e-6


@pytest.mark.parametrize("doppler_hz", [1000.0, 5000.0])
@pytest.mark.parametrize("profile", ["D", "CDL-B"])
def test_series_gains_equal_the_sum_of_sinusoids_at_every_sample(profile, doppler_hz):
    prof = channel_profile(profile)
    fd = torch.full((6,), doppler_hz)
    tv = TimeVaryingChannel.draw(OFDM, prof, torch.full((6,), 300e-9), fd, 20, make_generator(2))
    direct = evaluate_tap_gains(prof, tv.draws, tv.sample_times_s().reshape(-1)).reshape(6, -1, *tv.sample_times_s().shape)
    assert (tv.gains_at_samples() - direct).abs().max() < 2e-5  # float32 phases of w t up to 40 rad
    # the same draws as the frequency-domain path: at the symbol starts its gains are those of tap_gains
    h = ofdm_channel(OFDM, prof, torch.full((6,), 300e-9), fd, 20, make_generator(2))
    t0 = torch.arange(OFDM.num_symbols, dtype=torch.float64) * OFDM.symbol_duration_s
    e = torch.exp(-2j * math.pi * tv.tau_s.unsqueeze(-1).double() * torch.arange(-60, 60) * SCS).to(torch.complex64)
    assert (torch.einsum("blf,blt->bft", e, evaluate_tap_gains(prof, tv.draws, t0)) - h).abs().max() < 2e-5


@pytest.mark.parametrize("impaired", [False, True])
def test_propagate_writes_y_over_x_with_the_numbers_of_a_new_buffer(impaired):
    # generate passes out=x (y over the transmitted grid, as the frequency path does): every block must read
    # its rows of x before it writes them. 150 frames: three runs of 50 (the slot's series), blocks of 13 within each.
    from wavefront.sim.impairments import draw_impairments

    B = 150
    tv = TimeVaryingChannel.draw(OFDM, tdl_profile("A"), torch.full((B,), 300e-9), torch.linspace(0.0, 1400.0, B), 20,
                                 make_generator(3))
    imp = None
    if impaired:
        ch = SystemConfig.from_dict({"channel": {"ici": True, "cfo_hz": [-300.0, 300.0],
                                                 "timing_offset_samples": [-3.0, 3.0]}}).channel
        uniform = lambda v, n, g, d: torch.rand(n, generator=g) * (v[1] - v[0]) + v[0]  # noqa: E731
        imp = draw_impairments(ch, B, 4, torch.device("cpu"), uniform)
    x = _qpsk((B, *OFDM.grid_shape), 9)
    h, y = tv.propagate(x, impairments=imp)
    grid = x.clone()
    h2, y2 = tv.propagate(grid, impairments=imp, out=grid)
    assert y2 is grid and torch.equal(h2, h) and torch.equal(y2, y)


def test_time_domain_path_equals_sionna_modulator_time_channel_and_demodulator():
    # At whole-sample delays Sionna's sinc taps are exact, so its time-domain chain (IFFT + CP,
    # ApplyTimeChannel with cir_to_time_channel taps from the gains at every sample, CP removal + FFT)
    # must give our y to round-off, ICI included. A LoS tap covers the specular branch.
    from sionna.phy.channel import ApplyTimeChannel, cir_to_time_channel
    from sionna.phy.ofdm import OFDMDemodulator, OFDMModulator

    n_fft, n_cp = OFDM.time_sampling()
    assert (n_fft, n_cp) == (128, 9)
    prof = ChannelProfile("test", np.array([0.0, 1.0, 3.0, 8.0]), np.array([0.3, 0.25, 0.15, 0.05]), 0.25, 0.7)
    B, (F, T), ts = 5, OFDM.grid_shape, 1 / (n_fft * SCS)
    tv = TimeVaryingChannel.draw(OFDM, prof, torch.full((B,), ts), torch.full((B,), 1200.0), 20, make_generator(4))
    x = _qpsk((B, F, T), 5)
    h, y = tv.propagate(x)

    grid = torch.zeros(B, 1, 1, T, n_fft, dtype=torch.complex64)
    grid[..., (n_fft - F) // 2:(n_fft + F) // 2] = x.transpose(1, 2)[:, None, None]  # Sionna: DC in the middle
    x_time = OFDMModulator(n_cp, device="cpu")(grid)  # [B, 1, 1, T (N + CP)]
    n_t = x_time.shape[-1]
    l_max = 8
    a = evaluate_tap_gains(prof, tv.draws, torch.arange(n_t + l_max, dtype=torch.float64) * ts)  # gains at receive times
    taps = cir_to_time_channel(1 / ts, a[:, None, None, None, None], tv.tau_s[:, None, None], 0, l_max)
    y_time = ApplyTimeChannel(n_t, l_max + 1, device="cpu")(x_time, taps)
    y_sionna = OFDMDemodulator(n_fft, 0, n_cp, device="cpu")(y_time)[:, 0, 0, :, (n_fft - F) // 2:(n_fft + F) // 2]
    assert (y - y_sionna.transpose(1, 2)).abs().max() < 2e-5
    assert (y - h * x).abs().square().mean() > 1e-3  # there is ICI to agree on


# ---- closed forms ----------------------------------------------------------------------------
@pytest.mark.parametrize("doppler_hz", [500.0, 1000.0, 1400.0])
def test_measured_ici_power_matches_jakes_closed_form(doppler_hz):
    # TDL-A, 300 ns, unit-power QPSK on every RE, noise-free: ICI = y - H_avg x, relative to the
    # received power (which removes the Monte-Carlo spread of the frames' channel power)
    B = 400
    tv = TimeVaryingChannel.draw(OFDM, tdl_profile("A"), torch.full((B,), 300e-9), torch.full((B,), doppler_hz), 20,
                                 make_generator(int(doppler_hz)))
    x = _qpsk((B, *OFDM.grid_shape), 1)
    h, y = tv.propagate(x)
    measured = 10 * math.log10(float((y - h * x).abs().square().sum() / y.abs().square().sum()))
    assert abs(measured - _jakes_ici_db(doppler_hz)) < 0.5
    # and against the exact discrete-time form (guard bins lower the measurement by about 0.08 dB)
    assert abs(measured - 10 * math.log10(float(ici_power(OFDM, tdl_profile("A"), doppler_hz)))) < 0.25


def test_ici_power_closed_form_values():
    # Russell & Stueber's sum for Jakes fading, 128 samples over 1/scs: the table within 0.05 dB
    got = 10 * torch.log10(ici_power(OFDM, tdl_profile("A"), torch.tensor([500.0, 1000.0, 1400.0, 1500.0])))
    assert torch.allclose(got, torch.tensor([-27.4, -21.4, -18.5, -17.9], dtype=torch.float64), atol=0.05)
    assert float(ici_power(OFDM, tdl_profile("A"), 0.0)) == 0.0
    # small-Doppler limit (2 pi f_d / scs)^2 / 24
    assert abs(10 * math.log10(float(ici_power(OFDM, tdl_profile("A"), 100.0))) - _jakes_ici_db(100.0)) < 0.01


def test_measured_ici_power_matches_closed_form_for_a_cdl_profile():
    # CDL-C's clusters do not have Jakes spectra: the profile's own ici_power is the level
    prof = channel_profile("CDL-C")
    B = 300
    tv = TimeVaryingChannel.draw(OFDM, prof, torch.full((B,), 300e-9), torch.full((B,), 1000.0), 20, make_generator(8))
    x = _qpsk((B, *OFDM.grid_shape), 2)
    h, y = tv.propagate(x)
    measured = 10 * math.log10(float((y - h * x).abs().square().sum() / y.abs().square().sum()))
    assert abs(measured - 10 * math.log10(float(ici_power(OFDM, prof, 1000.0)))) < 0.25


def test_label_is_the_coefficient_the_fft_sees_on_each_resource_element():
    # A grid with one symbol at (k, m) and nothing else receives exactly h[k, m] there (no ICI without
    # neighbours): the label is the one-tap channel of the demodulated grid, the symbol's average.
    from wavefront.sim.fading import SinusoidDraws

    prof, (F, T) = tdl_profile("D"), OFDM.grid_shape
    tv = TimeVaryingChannel.draw(OFDM, prof, torch.full((3,), 300e-9), torch.full((3,), 1400.0), 20, make_generator(6))
    g = make_generator(7)
    k, m = torch.randint(0, F, (60,), generator=g), torch.randint(0, T, (60,), generator=g)
    rep = lambda v: None if v is None else v.repeat_interleave(60, 0)  # noqa: E731
    d = tv.draws
    one = TimeVaryingChannel(OFDM, prof, SinusoidDraws(rep(d.doppler_hz), rep(d.cosines), rep(d.phases_rad),
                                                       rep(d.los_phase_rad)), rep(tv.tau_s))
    x = torch.zeros(180, F, T, dtype=torch.complex64)
    rows = torch.arange(180)
    x[rows, k.repeat(3), m.repeat(3)] = 1
    h, y = one.propagate(x)
    at = (rows, k.repeat(3), m.repeat(3))
    assert (y[at] - h[at]).abs().max() < 1e-6
    # ... which is not the value at the symbol's centre (nor at its start)
    t_c = tv.sample_times_s().mean(1)
    e = torch.exp(-2j * math.pi * one.tau_s.unsqueeze(-1).double() * torch.arange(-60, 60) * SCS).to(torch.complex64)
    centre = torch.einsum("blf,blt->bft", e, evaluate_tap_gains(prof, one.draws, t_c))
    assert (centre[at] - h[at]).abs().max() > 1e-3


def test_label_is_the_per_symbol_average_with_its_closed_form_covariance():
    # E[H_avg(t + k T) H_avg*(t)] = sum_d w_d J0(2 pi f_d (k T + d Ts)); at k = 0 it is 1 - ICI power
    ofdm = OFDMConfig(num_subcarriers=12)
    cfg = SystemConfig(ofdm=ofdm, channel={"doppler_hz": 1400.0, "ici": True, "snr_db": 100})
    fr = FrameGenerator(cfg).generate(6000, seed=9, with_data=False)
    h = fr.h.to(torch.complex128)
    emp = torch.stack([(h[:, :, k:] * h[:, :, :h.shape[2] - k].conj()).mean() for k in range(5)])
    (_, r_t), = covariance_terms(ofdm, tdl_profile("A"), 300e-9, 1400.0, rows_t=range(5), cols_t=[0],
                                 symbol_average=True)
    assert (emp - r_t[0, :, 0]).abs().max() < 0.02
    assert abs(float(r_t[0, 0, 0].real) - (1 - float(ici_power(ofdm, tdl_profile("A"), 1400.0)))) < 1e-12


# ---- the genie LMMSE and the bound treat ICI as noise ----------------------------------------
def test_genie_lmmse_with_ici_as_noise_reaches_its_bound_and_beats_the_ici_blind_one():
    # dense pilots, 1000 Hz, 30 dB: ICI (-21.4 dB) dominates the noise (-30 dB)
    cfg = SystemConfig.from_dict({"ofdm": {"pilot_symbols": (0, 3, 6, 9, 12), "pilot_subcarrier_spacing": 4},
                                  "channel": {"doppler_hz": 1000.0, "snr_db": 30.0, "ici": True}})
    blind = cfg.updated(channel={"ici": False})
    fr = FrameGenerator(cfg).generate(500, seed=12, with_data=False)
    mse = lambda est: 10 * math.log10(float((est.estimate(fr.pilots_ls, fr.meta) - fr.h).abs().square().mean()))  # noqa: E731
    aware, unaware = mse(GenieLMMSE(cfg)), mse(GenieLMMSE(blind))
    bound = 10 * math.log10(float(genie_mse(cfg, 30.0, 300e-9, 1000.0)))
    assert abs(aware - bound) < 0.5
    assert aware < unaware - 0.4
    assert bound > 10 * math.log10(float(genie_mse(blind, 30.0, 300e-9, 1000.0))) + 5  # the ICI-blind bound is far off
    assert "ICI as extra noise" in GenieLMMSE(cfg).given


def test_ici_on_a_scattered_layout_genie_reaches_its_dense_bound():
    # the ICI path (time domain, per-symbol average label, ICI power added to the noise) and the
    # scattered path (pilots [B, P], dense filter) together: 1000 Hz, 30 dB, ICI above the noise
    from wavefront.sim.pilots import apply_pilots

    cfg = apply_pilots(SystemConfig.from_dict({"channel": {"doppler_hz": 1000.0, "snr_db": 30.0, "ici": True}}),
                       "lattice-4x6")
    fr = FrameGenerator(cfg).generate(500, seed=13, with_data=False)
    assert fr.pilots_ls.shape == (500, 24)
    per_frame = (GenieLMMSE(cfg).estimate(fr.pilots_ls, fr.meta) - fr.h).abs().square().mean((1, 2)).double()
    se_db = 10 / math.log(10) * float(per_frame.std() / per_frame.mean()) / math.sqrt(len(per_frame))
    mc, bound = 10 * math.log10(float(per_frame.mean())), 10 * math.log10(float(genie_mse(cfg, 30.0, 300e-9, 1000.0)))
    assert abs(mc - bound) < max(3 * se_db, 0.1), (mc, bound, se_db)
    blind = 10 * math.log10(float(genie_mse(cfg.updated(channel={"ici": False}), 30.0, 300e-9, 1000.0)))
    assert bound > blind + 3  # the ICI, not the noise, sets the error here (4.5 dB apart)


def test_bound_with_ici_equals_the_bound_without_at_0_hz():
    cfg = SystemConfig.from_dict({"channel": {"doppler_hz": 0.0, "ici": True}})
    with_ici = genie_mse(cfg, [10.0, 30.0], 300e-9, 0.0)
    without = genie_mse(cfg.updated(channel={"ici": False}), [10.0, 30.0], 300e-9, 0.0)
    assert torch.allclose(with_ici, without, rtol=1e-9)


# ---- the warning, the config field and the command line --------------------------------------
def test_warning_fires_when_unmodelled_ici_exceeds_the_noise():
    # ICI at 1000 Hz is -21.4 dB per RE: above the noise at 25 dB, below it at 20 dB
    with pytest.warns(UserWarning, match=r"doppler_hz=1000 it would be -21\.4 dB per RE, above the noise at "
                                         r"snr_db=25 \(-25\.0 dB per RE\); set channel\.ici"):
        FrameGenerator(SystemConfig.from_dict({"channel": {"doppler_hz": 1000.0, "snr_db": [0, 25]}}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FrameGenerator(SystemConfig.from_dict({"channel": {"doppler_hz": 1000.0, "snr_db": 20}}))
        FrameGenerator(SystemConfig.from_dict({"channel": {"doppler_hz": 1000.0, "snr_db": 30, "ici": True}}))
        # the pilot-grid convention's noise is 13.2 dB lower than its nominal SNR says
    with pytest.warns(UserWarning, match=r"snr_db=10 \(-23\.2 dB per RE\)"):
        FrameGenerator(SystemConfig.from_dict({"ofdm": {"pilot_subcarrier_spacing": 3},
                                               "channel": {"doppler_hz": 1000.0, "snr_db": 10,
                                                           "snr_convention": "pilot-grid"}}))


def test_ici_needs_a_cyclic_prefix_of_whole_samples():
    with pytest.raises(ConfigError, match=r"ofdm\.cyclic_prefix_ratio=0\.07: channel\.ici needs"):
        SystemConfig.from_dict({"ofdm": {"cyclic_prefix_ratio": 0.07}, "channel": {"ici": True}})
    SystemConfig.from_dict({"ofdm": {"cyclic_prefix_ratio": 0.07}})  # fine without ICI
    assert OFDMConfig(num_subcarriers=72, cyclic_prefix_ratio=0.25).time_sampling() == (128, 32)
    with pytest.raises(ConfigError, match=r"channel\.ici="):
        SystemConfig.from_dict({"channel": {"ici": "maybe"}})


@pytest.mark.parametrize("channel,ofdm,value", [
    ({"ici": True, "doppler_hz": 1e9}, {}, "1000000000.0"),  # was an OverflowError from the series' term count
    ({"ici": True, "doppler_hz": 40e3}, {}, "40000.0"),  # was NaN gains and an MSE of -inf, silently
    ({"ici": True, "doppler_hz": [0.0, 15001.0]}, {}, "[0.0, 15001.0]"),  # a range: its top
    ({"cfo_hz": 100.0, "doppler_hz": 20e3}, {}, "20000.0"),  # an impairment takes the same path
    ({"ici": True, "doppler_hz": 30001.0}, {"subcarrier_spacing_hz": 30e3}, "30001.0"),
])
def test_time_domain_path_refuses_a_doppler_above_the_subcarrier_spacing(channel, ofdm, value):
    with pytest.raises(ConfigError, match=rf"^channel\.doppler_hz={re.escape(value)}: with channel\.\w+ \(the "
                                          r"time-domain path\) the Doppler must be <= the subcarrier spacing"):
        SystemConfig.from_dict({"ofdm": ofdm, "channel": channel})


def test_time_domain_path_takes_a_doppler_up_to_the_subcarrier_spacing_and_the_frequency_path_any():
    # the edge itself, and 30 kHz subcarriers at 30 kHz: the series is within 1e-5 of the sum of sinusoids there
    SystemConfig.from_dict({"channel": {"ici": True, "doppler_hz": 15e3}})
    SystemConfig.from_dict({"ofdm": {"subcarrier_spacing_hz": 30e3}, "channel": {"ici": True, "doppler_hz": [0, 30e3]}})
    SystemConfig.from_dict({"channel": {"doppler_hz": 1e9}})  # no series without ICI: J0 and sinusoids at any Doppler


def test_series_gains_stay_within_1e5_of_the_sum_of_sinusoids_at_the_allowed_edge():
    # the bound's reason: at f_d = scs the float32 series still matches the direct sum (8e-6 measured)
    prof = tdl_profile("A")
    fd = torch.full((2,), SCS)
    tv = TimeVaryingChannel.draw(OFDM, prof, torch.full((2,), 300e-9), fd, 20, make_generator(2))
    direct = evaluate_tap_gains(prof, tv.draws, tv.sample_times_s().reshape(-1)).reshape(2, -1, *tv.sample_times_s().shape)
    assert (tv.gains_at_samples() - direct).abs().max() < 2e-5


def test_config_json_names_ici_only_when_on():
    # folders and checkpoints written before the field keep their identity
    assert '"ici"' not in SystemConfig().to_json()
    on = SystemConfig.from_dict({"channel": {"ici": True}})
    assert '"ici": true' in on.to_json()
    import json
    assert SystemConfig.from_dict(json.loads(on.to_json())) == on


def test_ici_flag_on_sweep_and_generate(tmp_path):
    from wavefront.cli import build_parser, main
    from wavefront.datasets.cli import _base_config
    from wavefront.sim.cli import build_spec

    parser = build_parser()
    spec = build_spec(parser.parse_args(["sweep", "--ici", "--snr-db", "30", "--out", str(tmp_path / "s")]))
    assert spec.config.channel.ici and spec.prior.channel.ici
    assert not build_spec(parser.parse_args(["sweep", "--snr-db", "30", "--out", str(tmp_path / "s")])).config.channel.ici
    args = parser.parse_args(["generate", "--ici", "--frames", "4", "--out", str(tmp_path / "g")])
    assert _base_config(args).channel.ici
    rc = main(["generate", "--ici", "--frames", "4", "--shard-frames", "4", "--batch-size", "4", "--out",
               str(tmp_path / "g"), "--no-progress", "--device", "cpu"])
    assert rc == 0
    manifest = (tmp_path / "g" / "manifest.json").read_text()
    assert '"ici": true' in manifest and "modelled: the channel varies within each symbol" in manifest


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    GOLDEN_ICI_OFF.write_text(json.dumps({k: _ici_off_numbers(k) for k in CASES}) + "\n")


def test_symbol_average_without_a_whole_sample_cp_takes_the_fft_size_of_the_same_grid():
    """Where time_sampling refuses the CP (0.07 of 128 is no whole sample) the average still runs over N = 128
    samples, the smallest power of two >= 120 subcarriers: the lags and weights of the NR CP's 128, not of 120."""
    from wavefront.sim.statistics import symbol_average_lags

    odd = OFDMConfig(cyclic_prefix_ratio=0.07)
    with pytest.raises(ConfigError):
        odd.time_sampling()
    lags, weights = symbol_average_lags(odd)
    ref_lags, ref_weights = symbol_average_lags(OFDMConfig())
    assert OFDMConfig().time_sampling()[0] == 128 and len(lags) == 2 * 128 - 1
    torch.testing.assert_close(lags, ref_lags, rtol=0, atol=0)
    torch.testing.assert_close(weights, ref_weights, rtol=0, atol=0)
    assert float(weights.sum()) == pytest.approx(1.0, rel=1e-12)  # (N - |d|) / N^2 over |d| < N
    assert float(lags[1] - lags[0]) == pytest.approx(1 / (128 * 15e3), rel=1e-12)


def test_lmmse_estimated_does_not_add_the_ici_again_to_an_snr_estimate_that_holds_it():
    """Its ML conditions are scored without an ICI model, so the SNR estimate takes the ICI as noise; a filter that
    added the ICI power on top counted it twice (0.20 dB behind the genie at 1000 Hz, 30 dB, dense pilots; now 0.02)."""
    from wavefront.sim.prior_lmmse import EstimatedLMMSE

    prior = SystemConfig.from_dict({"ofdm": {"pilot_symbols": [0, 3, 6, 9, 12], "pilot_subcarrier_spacing": 4},
                                    "channel": {"delay_spread_s": [25e-9, 300e-9], "doppler_hz": [50.0, 1000.0],
                                                "snr_db": [0.0, 30.0], "ici": True}})
    point = prior.updated(channel={"delay_spread_s": 300e-9, "doppler_hz": 1000.0, "snr_db": 30.0})
    fr = FrameGenerator(point).generate(200, seed=4, with_data=False)
    twice = EstimatedLMMSE(prior)
    twice.genie = GenieLMMSE(prior)  # the filter at the estimated conditions adding the ICI power to their noise
    mse = {name: float((est.estimate(fr.pilots_ls, fr.meta) - fr.h).abs().square().mean())
           for name, est in (("estimated", EstimatedLMMSE(prior)), ("twice", twice), ("genie", GenieLMMSE(point)))}
    assert 10 * math.log10(mse["estimated"] / mse["genie"]) < 0.06  # the same frames: a paired ratio
    assert 10 * math.log10(mse["twice"] / mse["estimated"]) > 0.1
    assert "SNR estimate holds the ICI" in EstimatedLMMSE(prior).given
