"""The fading simulator against its closed forms: frequency correlation from the PDP, J0 in time."""
import numpy as np
import pytest
import torch

from wavefront.sim.channel import cdl_profile, freq_correlation, ofdm_channel, tdl_profile, time_correlation_jakes
from wavefront.sim.config import OFDMConfig, SystemConfig
from wavefront.sim.frames import FrameGenerator
from wavefront.utils import make_generator

SCS = 15e3


def _channel(ofdm, profile, ds, fd, n, seed):
    g = make_generator(seed)
    return ofdm_channel(ofdm, tdl_profile(profile), torch.full((n,), ds), torch.full((n,), fd), 20, g)


@pytest.mark.parametrize("profile", ["A", "D"])
def test_frequency_correlation_matches_power_delay_profile(profile):
    # E[H(f + k df) H*(f)] / E|H|^2 = sum_l P_l exp(-j 2 pi tau_l k df), over 20k frames of 300 ns
    ofdm = OFDMConfig(num_symbols=1, pilot_symbols=(0,))
    h = _channel(ofdm, profile, 300e-9, 0.0, 20_000, seed=1)[:, :, 0].to(torch.complex128)
    power = h.abs().square().mean()
    k = np.arange(1, 11)
    emp = np.array([complex((h[:, kk:] * h[:, :-kk].conj()).mean() / power) for kk in k])
    theory = freq_correlation(tdl_profile(profile), 300e-9, torch.tensor(k * SCS)).numpy()
    assert np.abs(emp - theory).max() < 0.02
    assert abs(float(power) - 1.0) < 0.03  # unit average power, no per-frame normalisation


@pytest.mark.parametrize("doppler_hz", [200.0, 1000.0])
def test_time_correlation_matches_jakes(doppler_hz):
    # E[H(t + n T) H*(t)] = J0(2 pi f_d n T_sym) for n = 1..13, T_sym = (1 + cp/F) / scs
    ofdm = OFDMConfig(num_subcarriers=12)
    h = _channel(ofdm, "A", 300e-9, doppler_hz, 20_000, seed=2).to(torch.complex128)
    n = np.arange(1, 14)
    emp = np.array([float((h[:, :, nn:] * h[:, :, :-nn].conj()).mean().real) for nn in n])
    theory = time_correlation_jakes(doppler_hz, torch.tensor(n * ofdm.symbol_duration_s)).numpy()
    assert np.abs(emp - theory).max() < 0.03


def test_los_profile_time_correlation_has_specular_line():
    # TDL-D: tap 0 adds P_los exp(j 2 pi f_d cos(theta) dt) to the Rayleigh part's J0
    ofdm = OFDMConfig(num_subcarriers=12)
    fd = 600.0
    h = _channel(ofdm, "D", 30e-9, fd, 20_000, seed=3).to(torch.complex128)
    prof = tdl_profile("D")
    n = np.arange(1, 14)
    dt = torch.tensor(n * ofdm.symbol_duration_s)
    theory = (freq_correlation(prof, 30e-9, 0.0, "nlos") * time_correlation_jakes(fd, dt)
              + prof.los_power * torch.exp(2j * np.pi * prof.los_cos_aoa * fd * dt)).numpy()
    emp = np.array([complex((h[:, :, nn:] * h[:, :, :-nn].conj()).mean()) for nn in n])
    assert np.abs(emp - theory).max() < 0.03
    # and the simulated channel carries the specular line: it is far from a pure J0
    assert np.abs(emp - time_correlation_jakes(fd, dt).numpy()).max() > 0.2


def test_per_frame_conditions_are_drawn_in_range_and_recorded():
    cfg = SystemConfig.from_dict({"channel": {"doppler_hz": [100, 900], "delay_spread_s": [50e-9, 300e-9],
                                              "snr_db": [0, 20]}})
    fr = FrameGenerator(cfg).generate(4000, seed=5, with_data=False)
    for x, lo, hi in ((fr.doppler_hz, 100, 900), (fr.delay_spread_s, 50e-9, 300e-9), (fr.snr_db, 0, 20)):
        assert float(x.min()) >= lo and float(x.max()) <= hi
        # uniform: mean and variance within 5 standard errors
        mean, var = (lo + hi) / 2, (hi - lo) ** 2 / 12
        assert abs(float(x.double().mean()) - mean) < 5 * np.sqrt(var / len(x))
    assert torch.allclose(fr.noise_var, 10 ** (-fr.snr_db / 10))


def test_each_frame_is_drawn_with_its_own_recorded_doppler_and_delay_spread():
    # Frames binned by their recorded Doppler (delay spread) must show the time (frequency)
    # correlation of that bin's conditions: J0(2 pi f_d 9 T) between the pilot symbols 2 and 11,
    # and the PDP's correlation 10 subcarriers apart. A generator that ignored the per-frame
    # draws (one condition for the batch, or the two swapped) fails this.
    cfg = SystemConfig.from_dict({"channel": {"profile": "A", "doppler_hz": [0, 1000], "delay_spread_s": [0, 500e-9],
                                              "snr_db": 10.0}})
    fr = FrameGenerator(cfg).generate(6000, seed=21, with_data=False)
    h = fr.h.to(torch.complex128)
    T = cfg.ofdm.symbol_duration_s
    t_corr = (h[:, :, 11] * h[:, :, 2].conj()).mean(1).real  # [B]
    f_corr = (h[:, 10:, :] * h[:, :-10, :].conj()).mean((1, 2))  # [B]
    prof = tdl_profile("A")
    edges = np.linspace(0, 1, 5)
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (fr.doppler_hz >= lo * 1000) & (fr.doppler_hz < hi * 1000)
        theory = float(time_correlation_jakes(fr.doppler_hz[sel].double(), 9 * T).mean())
        assert abs(float(t_corr[sel].mean()) - theory) < 0.06, (lo, hi, float(t_corr[sel].mean()), theory)
        sel = (fr.delay_spread_s >= lo * 500e-9) & (fr.delay_spread_s < hi * 500e-9)
        theory_f = complex(freq_correlation(prof, fr.delay_spread_s[sel].double(), 10 * SCS).mean())
        assert abs(complex(f_corr[sel].mean()) - theory_f) < 0.06, (lo, hi)


def test_same_seed_gives_bit_identical_frames():
    gen = FrameGenerator(SystemConfig.from_dict({"channel": {"doppler_hz": [0, 1000]}}))
    a, b, c = gen.generate(64, seed=7), gen.generate(64, seed=7), gen.generate(64, seed=8)
    for name in ("h", "y", "pilots_rx", "pilots_ls", "bits", "doppler_hz", "snr_db"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.h, c.h)
    # frames without data carry the same channel and pilots
    d = gen.generate(64, seed=7, with_data=False)
    assert torch.equal(a.h, d.h) and torch.equal(a.pilots_ls, d.pilots_ls)


def test_frequency_response_equals_sionna_cir_to_ofdm_channel():
    from sionna.phy.channel import cir_to_ofdm_channel

    from wavefront.sim.channel import frequency_response, subcarrier_offsets_hz

    g = make_generator(0)
    a = torch.view_as_complex(torch.randn(8, 23, 14, 2, generator=g))
    tau = torch.rand(8, 23, generator=g) * 3e-6
    freqs = subcarrier_offsets_hz(OFDMConfig()).float()
    ref = cir_to_ofdm_channel(freqs, a.reshape(8, 1, 1, 1, 1, 23, 14), tau.reshape(8, 1, 1, 23))
    ours = frequency_response(freqs, a, tau)
    assert torch.allclose(ours, ref.reshape(8, 14, -1).transpose(1, 2), atol=2e-5)


def test_data_bits_are_fair_in_every_bit_position():
    # bits are unpacked from 32-bit random words: each of the 32 positions must be fair
    from wavefront.sim.frames import _random_bits

    bits = _random_bits(4000, 64, make_generator(3), "cpu")
    assert bits.shape == (4000, 64) and set(bits.unique().tolist()) == {0.0, 1.0}
    per_position = bits.mean(0)
    assert (per_position - 0.5).abs().max() < 5 * 0.5 / np.sqrt(4000)
    # neighbouring positions uncorrelated
    c = ((bits[:, :-1] - 0.5) * (bits[:, 1:] - 0.5)).mean(0) * 4
    assert c.abs().max() < 5 / np.sqrt(4000)


def _lag_correlation(x: torch.Tensor) -> np.ndarray:
    """Returns E[x(t + n) x*(t)] for n = 0..T-1 over frames [B, ..., T]."""
    x = x.to(torch.complex128)
    return np.array([complex((x[..., n:] * x[..., :x.shape[-1] - n].conj()).mean()) for n in range(x.shape[-1])])


@pytest.mark.parametrize("letter,azimuth", [("C", 30.0), ("D", -45.0)])
def test_cdl_time_correlation_matches_sionna_cdl_and_the_ray_closed_form(letter, azimuth):
    # Sionna's CDL with SISO omni antennas and the UT moving horizontally at `azimuth`, against
    # sum_l P_l mean_m exp(j 2 pi f_d c_lm dt) (+ the LoS line) and against wavefront's draws.
    from sionna.phy.channel.tr38901 import CDL, Antenna

    ofdm, fd, fc, n = OFDMConfig(num_subcarriers=12), 500.0, 3.5e9, 10_000
    prof = cdl_profile(f"CDL-{letter}", azimuth)
    dt = torch.arange(14, dtype=torch.float64) * ofdm.symbol_duration_s
    theory = sum(P * torch.exp(2j * np.pi * fd * dt[:, None] * torch.as_tensor(c)).mean(-1)
                 for P, c in zip(prof.nlos_powers, prof.ray_doppler_cos))
    theory = (theory + prof.los_power * torch.exp(2j * np.pi * prof.los_cos_aoa * fd * dt)).numpy()

    torch.manual_seed(0)
    speed = fd * 299_792_458.0 / fc
    az = np.radians(azimuth)
    omni = Antenna("single", "V", "omni", carrier_frequency=fc, device="cpu", precision="double")
    cdl = CDL(letter, 300e-9, fc, ut_array=omni, bs_array=omni, device="cpu", precision="double",
              ut_velocity=torch.tensor([speed * np.cos(az), speed * np.sin(az), 0.0], dtype=torch.float64))
    a, _ = cdl(n, 14, 1 / ofdm.symbol_duration_s)
    sionna = _lag_correlation(a[:, 0, 0, 0, 0].sum(-2))  # sum of path gains: H at f = 0
    ours = _lag_correlation(ofdm_channel(ofdm, prof, torch.full((n,), 300e-9), torch.full((n,), fd), 20,
                                         make_generator(4)))
    assert np.abs(sionna - theory).max() < 0.03
    assert np.abs(ours - theory).max() < 0.03
    # a CDL cluster's Doppler spectrum is lopsided: the correlation is far from real J0
    assert np.abs(theory - time_correlation_jakes(fd, dt).numpy()).max() > 0.2


def test_cdl_frequency_correlation_matches_its_cluster_delays():
    ofdm = OFDMConfig(num_subcarriers=72)
    prof = cdl_profile("CDL-A")
    h = ofdm_channel(ofdm, prof, torch.full((20_000,), 300e-9), torch.zeros(20_000), 20, make_generator(6))[:, :, 0]
    h = h.to(torch.complex128)
    k = np.arange(1, 40, 3)
    emp = np.array([complex((h[:, kk:] * h[:, :-kk].conj()).mean()) for kk in k])
    theory = freq_correlation(prof, 300e-9, torch.tensor(k * SCS)).numpy()
    assert np.abs(emp - theory).max() < 0.03
