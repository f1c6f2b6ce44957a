"""System-level scenarios (UMi, UMa) drawn through Sionna, and the LMMSE with covariances from samples."""
import math
import re

import pytest
import torch

from wavefront.cli import main
from wavefront.sim.config import SystemConfig
from wavefront.sim.mimo import MimoFrameGenerator, MimoGenieLMMSE, mimo_estimators, user_configs
from wavefront.sim.system_level import SPEED_OF_LIGHT, SampleCovariances, SystemLevelChannel


def umi(R=4, U=2, **channel) -> SystemConfig:
    """128 x 14 at 15 kHz (the CP of 9 samples makes Sionna's symbol duration ours), pilots every 4th subcarrier."""
    return SystemConfig.from_dict({"ofdm": {"num_subcarriers": 128, "pilot_subcarrier_spacing": 4},
                                   "channel": {"profile": "UMi", "doppler_hz": [0.0, 200.0], "snr_db": 10.0, **channel},
                                   "mimo": {"num_rx_antennas": R, "num_users": U}})


def test_umi_channels_are_sionnas_own_scaled_to_unit_power_per_user():
    """The draw equals Sionna's GenerateOFDMChannel on the same seed and topology (layout, subcarriers, symbol
    times), each user scaled to unit mean power; the frame's Doppler is its fastest user's ``|v| f_c / c``."""
    from sionna.phy import config as sionna_config
    from sionna.phy.channel import GenerateOFDMChannel, gen_single_sector_topology
    from sionna.phy.ofdm import ResourceGrid

    cfg = umi()
    o = cfg.ofdm
    n, cp = o.time_sampling()
    assert n == 128 and cp == 9  # so Sionna's symbol (N + CP) / (N scs) is ours
    ch = SystemLevelChannel(cfg, torch.device("cpu"))
    h, fd, ds = ch.draw(3, seed=11)
    sionna_config.seed = 11
    topo = gen_single_sector_topology(3, 2, "umi", min_ut_velocity=ch.speeds[0], max_ut_velocity=ch.speeds[1])
    ch.model.reset_topology()
    ch.model.set_topology(*topo)
    rg = ResourceGrid(num_ofdm_symbols=14, fft_size=128, subcarrier_spacing=o.subcarrier_spacing_hz,
                      cyclic_prefix_length=cp)
    want = GenerateOFDMChannel(ch.model, rg, normalize_channel=False)(3)  # [B, 1, R, U, 1, T, F]
    want = want.reshape(3, 4, 2, 14, 128).transpose(3, 4)
    want = want / want.abs().square().mean(dim=(1, 3, 4), keepdim=True).sqrt()
    torch.testing.assert_close(h, want.to(torch.complex64), rtol=0, atol=2e-5)
    power = h.abs().square().double().mean(dim=(1, 3, 4))
    torch.testing.assert_close(power, torch.ones_like(power), rtol=0, atol=1e-5)
    v = topo[4].double().norm(dim=-1).max(dim=1).values
    torch.testing.assert_close(fd.double(), v * o.carrier_frequency_hz / SPEED_OF_LIGHT, rtol=1e-6, atol=0)
    assert bool((v <= ch.speeds[1] + 1e-9).all()) and bool((ds > 1e-9).all() and (ds < 5e-6).all())


def test_umi_frames_are_reproducible_and_each_users_pilots_hold_its_own_channel():
    cfg = umi(snr_db=100.0)
    g = MimoFrameGenerator(cfg)
    a, b, c = g.generate(2, seed=5), g.generate(2, seed=5), g.generate(2, seed=6)
    assert torch.equal(a.h, b.h) and torch.equal(a.y, b.y) and not torch.allclose(a.h, c.h)
    for u, user in enumerate(user_configs(cfg)):
        f, t = torch.tensor(user.ofdm.pilot_subcarriers), torch.tensor(user.ofdm.pilot_symbol_indices)
        # noise std 1e-5 at 100 dB; another user's leak would be O(1)
        torch.testing.assert_close(a.pilots_ls[:, :, u], a.h[:, :, u][:, :, f[:, None], t[None, :]], rtol=0, atol=1e-4)


def test_sample_covariance_lmmse_tends_to_the_genie_on_a_kronecker_channel():
    """TDL-A at fixed conditions with rho = 0.6 is exactly Kronecker: covariances from 384 frames recover rho^|i-j|
    (the sample error of ~2,700 space vectors a lag: a few 1e-2) and the filter sits within 0.15 dB of the genie
    on other frames, paired (it cannot beat it beyond noise)."""
    cfg = SystemConfig.from_dict({"ofdm": {"num_subcarriers": 48, "pilot_subcarrier_spacing": 2},
                                  "channel": {"delay_spread_s": 200e-9, "doppler_hz": 300.0, "snr_db": 10.0},
                                  "mimo": {"num_rx_antennas": 4, "num_users": 2, "rx_correlation": 0.6}})
    cov = SampleCovariances(cfg, frames=384, batch=64)
    i = torch.arange(4)
    rho = 0.6 ** (i[:, None] - i[None, :]).abs().double()
    assert float((cov.R_s - rho).abs().max()) < 0.08, cov.R_s
    (sample,) = mimo_estimators(["lmmse-sample"], cfg)
    sample.frames = 384
    fr = MimoFrameGenerator(cfg).generate(48, seed=99, with_data=False)
    err = lambda h: (h - fr.h).abs().square().double().mean(dim=(1, 2, 3, 4))  # noqa: E731
    e_s, e_g = err(sample.estimate(fr.pilots_ls, fr.meta)), err(MimoGenieLMMSE(cfg).estimate(fr.pilots_ls, fr.meta))
    gap = 10 * math.log10(float(e_s.mean() / e_g.mean()))
    assert -0.02 < gap < 0.15, gap
    ls = err(mimo_estimators(["ls-linear"], cfg)[0].estimate(fr.pilots_ls, fr.meta))
    assert float(e_s.mean()) < 0.5 * float(ls.mean())


def test_umi_sweep_through_the_cli(tmp_path, capsys):
    """LS, the sample-covariance LMMSE and perfect CSI on UMi: no closed-form bound (n/a), the LMMSE below LS."""
    import json

    rc = main(["sweep", "--profile", "UMi", "--rx-antennas", "4", "--users", "2", "--estimators",
               "ls-linear,lmmse-sample,perfect", "--snr-db", "0:20:20", "--frames", "8", "--doppler-hz", "100",
               "--conditions", "true", "--out", str(tmp_path / "o"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and re.search(r"MMSE bound +n/a", out) and "nan" not in out
    rows = json.loads((tmp_path / "o" / "results.json").read_text())["rows"]
    by = {(r["estimator"], r["snr_db"]): r for r in rows}
    for snr in (0.0, 20.0):
        assert by[("lmmse-sample", snr)]["mse_db"] < by[("ls-linear", snr)]["mse_db"] - 1.0
        assert math.isnan(by[("ls-linear", snr)]["bound_db"])
    assert by[("perfect", 20.0)]["ber"] <= by[("lmmse-sample", 20.0)]["ber"]


@pytest.mark.parametrize("args,field", [
    ([], "channel.profile"),  # one antenna, one user
    (["--rx-antennas", "4", "--users", "2", "--rx-correlation", "0.5"], "mimo.rx_correlation"),
    (["--rx-antennas", "4", "--users", "2", "--estimators", "lmmse-genie", "--conditions", "true"], "estimators"),
    (["--rx-antennas", "4", "--users", "2", "--estimators", "lmmse-sample"], "conditions"),
])
def test_bad_system_level_input_is_one_line(tmp_path, capsys, args, field):
    base = ["sweep", "--profile", "UMi", "--snr-db", "10", "--frames", "2", "--out", str(tmp_path / "o"), "--no-progress"]
    if "--estimators" not in args:
        base += ["--estimators", "ls-linear"]
    rc = main(base + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err and field in err[-1], err


def _small_tdl_mimo() -> SystemConfig:
    return SystemConfig.from_dict({"ofdm": {"num_subcarriers": 24, "pilot_subcarrier_spacing": 2},
                                   "channel": {"delay_spread_s": 300e-9, "doppler_hz": 400.0, "snr_db": 5.0},
                                   "mimo": {"num_rx_antennas": 2, "num_users": 2, "rx_correlation": 0.5}})


def test_sample_covariances_are_the_sample_averages_they_define():
    """R_s = mean h h^H over space vectors, scaled to unit mean diagonal; R_f, R_t Toeplitz with r[k] the mean of
    h[i + k] conj(h[i]) over every pair k apart, scaled to r[0] = 1: here by direct sums over the same frames (the
    class uses FFTs). A finite sample is complex even where the expectation is real, so a conjugate shows."""
    from wavefront.sim.system_level import _SAMPLE_SEED

    cfg = _small_tdl_mimo()
    cov = SampleCovariances(cfg, frames=6, batch=4)
    gen = MimoFrameGenerator(cfg)
    h = torch.cat([gen.generate(n, seed=_SAMPLE_SEED + i, with_data=False).h for i, n in enumerate((4, 2))])
    h = h.to(torch.complex128)  # [B, R, U, F, T]
    R, F, T = 2, 24, 14
    r_s = torch.einsum("brufT,bsufT->rs", h, h.conj())
    r_s = r_s / r_s.diagonal().real.mean()
    assert float(r_s.imag.abs().max()) > 1e-3  # the sample's imaginary part is there to be got wrong
    torch.testing.assert_close(cov.R_s, r_s, rtol=0, atol=1e-10)

    def lag_avg(x, n):  # x [..., n]
        r = torch.stack([(x[..., k:] * x[..., :n - k].conj()).mean() for k in range(n)])
        return r / r[0].real

    for got, r, n in ((cov.R_f, lag_avg(h.transpose(3, 4), F), F), (cov.R_t, lag_avg(h, T), T)):
        want = torch.empty(n, n, dtype=torch.complex128)
        for i in range(n):
            for j in range(n):
                want[i, j] = r[i - j] if i >= j else r[j - i].conj()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_lmmse_sample_is_the_dense_lmmse_of_its_kronecker_covariance():
    """Per user, with R = R_s (x) R_f (x) R_t, the estimate is R[:, p] (R[p, p] + sigma^2 I)^-1 y at that user's pilots."""
    cfg = _small_tdl_mimo()
    (est,) = mimo_estimators(["lmmse-sample"], cfg)
    est.frames = 6
    cov = SampleCovariances(cfg, frames=6)
    fr = MimoFrameGenerator(cfg).generate(3, seed=2, with_data=False)
    got = est.estimate(fr.pilots_ls, fr.meta).to(torch.complex128)
    nv = fr.meta["noise_var"].double()
    t = torch.tensor(cfg.ofdm.pilot_symbol_indices)
    for u, user in enumerate(user_configs(cfg)):
        f = torch.tensor(user.ofdm.pilot_subcarriers)
        r_hp = torch.kron(cov.R_s, torch.kron(cov.R_f[:, f], cov.R_t[:, t]))  # [R F T, R P_f P_t]
        r_pp = torch.kron(cov.R_s, torch.kron(cov.R_f[f][:, f], cov.R_t[t][:, t]))
        eye = torch.eye(r_pp.shape[0], dtype=torch.complex128)
        for b in range(3):
            y = fr.pilots_ls[b, :, u].reshape(-1).to(torch.complex128)
            want = (r_hp @ torch.linalg.solve(r_pp + nv[b] * eye, y)).reshape(2, 24, 14)
            torch.testing.assert_close(got[b, :, u], want, rtol=0, atol=2e-5)


def test_a_fixed_doppler_gives_every_frame_that_doppler_and_the_users_mean_delay_spread():
    cfg = umi(doppler_hz=150.0)
    ch = SystemLevelChannel(cfg, torch.device("cpu"))
    _, fd, ds = ch.draw(2, seed=3)
    torch.testing.assert_close(fd, torch.full((2,), 150.0), rtol=1e-5, atol=0)  # every user at v = f_d c / f_c
    per_user = ch.model._lsp.ds.reshape(2, -1).double()  # Sionna's large-scale RMS delay spread of each user [s]
    assert per_user.shape[1] == 2 and float((per_user[:, 0] - per_user[:, 1]).abs().min()) > 1e-9
    torch.testing.assert_close(ds.double(), per_user.mean(1), rtol=1e-6, atol=0)
