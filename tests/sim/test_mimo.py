"""Multi-user MIMO: spatial statistics, orthogonal pilots, the genie over space against a dense
evaluation, the bound against Monte Carlo, LMMSE detection against Sionna's, and the command line."""
import json
import math

import pytest
import torch
from mimo_helpers import genie_on_bound_ls_above

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.lmmse import genie_mse
from wavefront.sim.mimo import (MimoFrameGenerator, MimoGenieLMMSE, frame_generator, lmmse_detect, mimo_estimators,
                                mimo_genie_mse, rx_eigen, user_configs)
from wavefront.sim.profiles import channel_profile
from wavefront.sim.statistics import covariance_terms

# A small grid keeps the dense (R P)^2 reference cheap: 24 subcarriers, pilots every 2nd (12), 2 symbols.
SMALL = {"ofdm": {"num_subcarriers": 24, "num_symbols": 14, "pilot_subcarrier_spacing": 2},
         "channel": {"delay_spread_s": 300e-9, "doppler_hz": 400.0, "snr_db": 10.0}}


def small(R=3, U=2, rho=0.6, **channel) -> SystemConfig:
    d = {**SMALL, "channel": {**SMALL["channel"], **channel},
         "mimo": {"num_rx_antennas": R, "num_users": U, "rx_correlation": rho}}
    return SystemConfig.from_dict(d)


def test_one_antenna_one_user_is_the_siso_system():
    siso = SystemConfig()
    same = siso.updated(mimo={"num_rx_antennas": 1, "num_users": 1, "rx_correlation": 0.7})
    assert same.to_json() == siso.to_json() and "mimo" not in json.loads(siso.to_json())
    assert type(frame_generator(same)) is FrameGenerator
    a, b = FrameGenerator(siso).generate(4, seed=3), frame_generator(same).generate(4, seed=3)
    assert torch.equal(a.h, b.h) and torch.equal(a.y, b.y)


@pytest.mark.parametrize("rho", [0.0, 0.6])
def test_large_frames_built_in_their_own_layout_equal_the_one_product(monkeypatch, rho):
    """Frames from _FRAME_LOOP_SIZE up build h frame by frame in [R U, F, T]; both ways give the same frames.

    Only the matmul's summation order may differ: 1e-6 absolute on unit-power channels is ~20 float32 ulps
    of a sum of 23 taps, and y adds the users in another order (1e-5 with noise at 10 dB).
    """
    import wavefront.sim.mimo as mimo

    cfg = small(R=3, U=2, rho=rho, delay_spread_s=[50e-9, 300e-9])  # each frame its own delay phasors
    monkeypatch.setattr(mimo, "_FRAME_LOOP_SIZE", 10 ** 12)
    product = MimoFrameGenerator(cfg).generate(5, seed=7)
    monkeypatch.setattr(mimo, "_FRAME_LOOP_SIZE", 0)
    per_frame = MimoFrameGenerator(cfg).generate(5, seed=7)
    torch.testing.assert_close(per_frame.h, product.h, rtol=0, atol=1e-6)
    torch.testing.assert_close(per_frame.y, product.y, rtol=0, atol=1e-5)
    torch.testing.assert_close(per_frame.pilots_ls, product.pilots_ls, rtol=0, atol=1e-5)
    assert float(product.h.abs().std()) > 0.1  # not a zero channel


def test_users_get_disjoint_pilots_that_cover_the_siso_layout():
    cfg = small(U=3)
    users = user_configs(cfg)
    sets = [set(c.ofdm.pilot_subcarriers) for c in users]
    assert all(len(s) == 4 for s in sets) and set().union(*sets) == set(cfg.ofdm.pilot_subcarriers)
    assert sum(len(s) for s in sets) == len(cfg.ofdm.pilot_subcarriers)


def test_noiseless_ls_pilots_are_each_users_own_channel():
    """The other users are silent on a user's pilots: at a very high SNR the LS pilots equal its channel there."""
    cfg = small(snr_db=100.0)
    fr = MimoFrameGenerator(cfg).generate(3, seed=1)
    for u, c in enumerate(user_configs(cfg)):
        pf = torch.tensor(c.ofdm.pilot_subcarriers)
        pt = torch.tensor(c.ofdm.pilot_symbol_indices)
        want = fr.h[:, :, u][:, :, pf[:, None], pt[None, :]]
        # noise std at 100 dB is 1e-5 per element: 1e-4 is 10 sigma; another user's leak would be O(1)
        torch.testing.assert_close(fr.pilots_ls[:, :, u], want, rtol=0, atol=1e-4)


def test_spatial_correlation_is_exponential_and_users_independent():
    """E[h_r h_s^*] = rho^|r-s| per user (unit power per element); users uncorrelated (Monte Carlo, 3 sigma)."""
    rho, R, U = 0.7, 4, 2
    cfg = small(R=R, U=U, rho=rho)
    fr = MimoFrameGenerator(cfg).generate(1500, seed=7, with_data=False)
    h = fr.h[..., ::6, ::7]  # [B, R, U, 4, 2]: elements far enough apart to add information
    x = h.permute(0, 3, 4, 2, 1).reshape(-1, U, R).to(torch.complex128)  # samples of the [U, R] matrix
    cov = torch.einsum("nur,nus->urs", x, x.conj()) / x.shape[0]  # [U, R, R]
    i = torch.arange(R, dtype=torch.float64)
    want = rho ** (i[:, None] - i[None, :]).abs()
    # each sample is a product of two unit-power complex Gaussians: std of a mean over n is <= 1/sqrt(n),
    # and the 8 grid samples of one frame are correlated, so count frames only
    tol = 3 / math.sqrt(1500)
    assert (cov.real - want).abs().max() < tol and cov.imag.abs().max() < tol
    cross = torch.einsum("nr,nr->", x[:, 0], x[:, 1].conj()) / x.numel() * U
    assert abs(cross) < tol


def _dense_user_mse_and_filter(cfg: SystemConfig, u: int, ds: float, fd: float, nv: float):
    """Returns (MSE per element, W [R F T, R P]) of the LMMSE of user u from a dense R_rx (x) R_ft, float64."""
    c = user_configs(cfg)[u]
    o = c.ofdm
    prof = channel_profile(cfg.channel.profile)
    terms = covariance_terms(o, prof, ds, fd)  # [(R_f [1, F, F], R_t [1, T, T])]
    F, T = o.grid_shape
    r_ft = sum(torch.kron(a[0], b[0]) for a, b in terms)  # [F T, F T], row-major (f, t)
    rx = torch.tensor(cfg.mimo.rx_correlation, dtype=torch.float64).pow(
        (torch.arange(cfg.mimo.num_rx_antennas)[:, None] - torch.arange(cfg.mimo.num_rx_antennas)[None, :]).abs().double())
    full = torch.kron(rx.to(torch.complex128), r_ft)  # [R F T, R F T]
    pos = torch.tensor([f * T + t for f in o.pilot_subcarriers for t in o.pilot_symbol_indices])
    R = rx.shape[0]
    cols = torch.cat([r * F * T + pos for r in range(R)])
    r_hp, r_pp = full[:, cols], full[cols][:, cols]
    W = r_hp @ torch.linalg.inv(r_pp + nv * torch.eye(len(cols), dtype=torch.complex128))
    mse = (torch.trace(full).real - torch.trace(W @ r_hp.mH).real) / full.shape[0]
    return float(mse), W


@pytest.mark.parametrize("rho,snr_db", [(0.0, 10.0), (0.6, 0.0), (0.9, 20.0)])
def test_bound_equals_dense_evaluation_over_space(rho, snr_db):
    """The eigenvalue-weighted sum of 2-D bounds equals tr(R - W R_ph) / (R F T) of the dense covariance."""
    cfg = small(R=3, U=2, rho=rho)
    ds, fd = 300e-9, 400.0
    nv = 10 ** (-snr_db / 10)
    got = mimo_genie_mse(cfg, snr_db, ds, fd, per_user=True)
    for u in range(2):
        want, _ = _dense_user_mse_and_filter(cfg, u, ds, fd, nv)
        assert abs(float(got[u]) - want) < 1e-9 * max(want, 1e-3)
    # and to the eigenvalue-weighted sum of 2-D bounds through the SISO closed form (lmmse.genie_mse)
    lam, _ = rx_eigen(rho, 3)
    for u, c in enumerate(user_configs(cfg)):
        via_2d = sum(float(lk * genie_mse(c, snr_db + 10 * math.log10(lk), ds, fd)) for lk in lam.tolist()) / 3
        assert abs(float(got[u]) - via_2d) < 1e-9 * max(via_2d, 1e-3)
    if rho == 0.0:  # uncorrelated antennas: each is the SISO problem of its user
        siso = [float(genie_mse(c, snr_db, ds, fd)) for c in user_configs(cfg)]
        assert abs(float(got.mean()) - sum(siso) / 2) < 1e-12


def test_receive_correlation_lowers_the_bound():
    """Correlated antennas share information: the bound falls as rho grows (fixed SNR and statistics)."""
    vals = [float(mimo_genie_mse(small(rho=r), 5.0, 300e-9, 400.0)) for r in (0.0, 0.5, 0.9)]
    assert vals[0] > vals[1] > vals[2]


def test_genie_applies_the_dense_filter():
    """The eigen-rotated 2-D genie gives the dense (R P)^2 LMMSE's estimate on the same pilots."""
    cfg = small(R=3, U=2, rho=0.8)
    fr = MimoFrameGenerator(cfg).generate(2, seed=5)
    est = MimoGenieLMMSE(cfg).estimate(fr.pilots_ls, fr.meta)  # [B, R, U, F, T]
    F, T = cfg.ofdm.grid_shape
    for u in range(2):
        _, W = _dense_user_mse_and_filter(cfg, u, 300e-9, 400.0, float(fr.noise_var[0]))
        p = fr.pilots_ls[:, :, u].reshape(2, -1).to(torch.complex128)  # [B, R P] (antenna, then pilot)
        want = (p @ W.T).reshape(2, 3, F, T)
        torch.testing.assert_close(est[:, :, u].to(torch.complex128), want, rtol=0, atol=2e-5)


def test_lmmse_detection_equals_sionnas_equalizer():
    from sionna.phy.mimo import lmmse_equalizer

    g = torch.Generator().manual_seed(0)
    B, R, U, N = 3, 4, 2, 5
    h = torch.randn(B, R, U, N, dtype=torch.complex64, generator=g)
    y = torch.randn(B, R, N, dtype=torch.complex64, generator=g)
    nv, ev = torch.tensor([0.1, 0.5, 1.0]), torch.tensor([0.0, 0.05, 0.2])
    x, no = lmmse_detect(y, h, nv, ev)
    s = (nv + U * ev).reshape(B, 1, 1, 1).to(torch.complex64) * torch.eye(R, dtype=torch.complex64)
    xs, nos = lmmse_equalizer(y.permute(0, 2, 1), h.permute(0, 3, 1, 2), s.expand(B, N, R, R), precision="double")
    torch.testing.assert_close(x, xs.permute(0, 2, 1).to(torch.complex64), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(no, nos.permute(0, 2, 1).float(), rtol=1e-4, atol=1e-6)


def test_genie_sweep_sits_on_the_bound_through_the_cli(tmp_path, capsys):
    """The issue's command (fewer frames): the genie within 3 standard errors of the bound, per-user pilots recorded."""
    out = tmp_path / "mimo"
    rc = main(["sweep", "--rx-antennas", "4", "--users", "2", "--rx-correlation", "0.7", "--estimators",
               "ls-linear,lmmse-genie,perfect", "--snr-db", "0:30:10", "--doppler-hz", "300", "--frames", "300",
               "--batch-size", "150", "--out", str(out), "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["spec"]["mimo"]["rx_antennas"] == 4 and len(res["spec"]["pilots_per_user"]) == 2
    assert len(res["spec"]["pilots_per_user"][0]["positions"]) == 12
    genie = genie_on_bound_ls_above(res, 4)
    perfect = [r for r in res["rows"] if r["estimator"] == "perfect"]
    assert perfect[-1]["ber"] < perfect[0]["ber"] and perfect[-1]["ber"] <= genie[-1]["ber"]


@pytest.mark.parametrize("args,field", [
    (["--rx-correlation", "1.0"], "mimo.rx_correlation"),
    (["--users", "5"], "mimo.num_users"),
    (["--users", "2", "--estimators", "gated-lmmse"], "estimators"),
    (["--users", "2", "--mimo-pilots", "dmrs-type1", "--estimators", "lmmse-robust"], "conditions"),
    (["--users", "2", "--ici"], "channel.ici"),
])
def test_bad_mimo_input_is_one_line(tmp_path, capsys, args, field):
    base = ["sweep", "--snr-db", "10", "--frames", "10", "--out", str(tmp_path / "o"), "--no-progress"]
    if "--estimators" not in args:
        base += ["--estimators", "ls-linear"]
    rc = main(base + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err and field in err[-1], err


def test_mimo_estimators_refuse_siso_only_names():
    with pytest.raises(ConfigError, match="SISO only"):
        mimo_estimators(["lmmse-bank"], small())


def test_rx_eigen_reconstructs_the_correlation():
    lam, V = rx_eigen(0.7, 5)
    i = torch.arange(5, dtype=torch.float64)
    torch.testing.assert_close((V * lam) @ V.T, 0.7 ** (i[:, None] - i[None, :]).abs(), rtol=0, atol=1e-12)


def test_siso_paths_refuse_a_mimo_config_instead_of_dropping_its_antennas(tmp_path, capsys):
    """A MIMO config given to dataset generation must not quietly make single-antenna frames: its shards
    carry the antenna and user axes (tests/datasets/test_mimo_datasets.py), and the SISO generator refuses it."""
    import h5py

    cfg = tmp_path / "mimo.yaml"
    cfg.write_text("mimo:\n  num_rx_antennas: 2\n  num_users: 2\n")
    rc = main(["generate", "--config", str(cfg), "--frames", "4", "--out", str(tmp_path / "d"), "--no-progress"])
    assert rc == 0
    with h5py.File(tmp_path / "d" / "shard-00000.h5", "r") as f:
        assert f["h_true"].shape == (4, 2, 2, 120, 14)
    with pytest.raises(ConfigError, match="single-antenna"):
        FrameGenerator(small())


def test_a_learned_siso_model_runs_per_antenna_when_each_users_layout_is_its_own(tmp_path, capsys):
    """One user, four antennas: the shipped pilots-only model on each antenna's pilots; two users: refused in one line."""
    from wavefront.resolve import resolve_estimators

    cfg = SystemConfig().updated(mimo={"num_rx_antennas": 4, "rx_correlation": 0.5})
    (wrapped,) = resolve_estimators(["gated-lmmse"], cfg)
    (siso,) = resolve_estimators(["gated-lmmse"], SystemConfig())
    fr = MimoFrameGenerator(cfg).generate(3, seed=4)
    got = wrapped.estimate(fr.pilots_ls, {})
    for r in range(4):
        torch.testing.assert_close(got[:, r, 0], siso.estimate(fr.pilots_ls[:, r, 0], {}), rtol=0, atol=1e-6)
    assert "per antenna and user" in wrapped.given and wrapped.trained_on.startswith("TDL-A")
    rc = main(["sweep", "--rx-antennas", "2", "--users", "2", "--estimators", "gated-lmmse", "--snr-db", "10",
               "--frames", "4", "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "pilot" in err[-1] and len(err) == 1


def test_estimated_conditions_on_mimo_points_are_the_joint_ml_hypothesis():
    """With estimated conditions a MIMO point hands each estimator the joint ML hypothesis over all antennas and users.

    lmmse-robust reads the noise variance: its row equals the same estimator run by hand on the point's frames
    with :func:`estimate_mimo_conditions`' noise variance (the same float32 errors summed in another order:
    ~1e-7 relative, 4e-7 dB; 1e-5 dB allowed), and differs from the row given the true noise variance.
    """
    from wavefront.sim.experiment import prior_config, run_experiment, simulated_points
    from wavefront.sim.mimo_bayes import estimate_mimo_conditions

    cfg = small(R=4, U=2, rho=0.6, snr_db=5.0)
    prior = prior_config(cfg, ranges={"snr_db": (0.0, 20.0), "delay_spread_s": (100e-9, 300e-9),
                                      "doppler_hz": (100.0, 500.0)})
    cond = [{"snr_db": 5.0, "delay_spread_s": 300e-9, "doppler_hz": 400.0}]

    def row(conditions):
        pts = simulated_points(cfg, cond, frames=6, batch_size=6, seed=3, with_data=False)
        ests = mimo_estimators(["lmmse-robust"], prior)
        return run_experiment(pts, ests, frames=6, conditions=conditions, condition_prior=prior, progress=False)[0]

    est_row, true_row = row("estimated"), row("true")
    fr = next(simulated_points(cfg, cond, frames=6, batch_size=6, seed=3, with_data=False)[0].batches())
    meta = estimate_mimo_conditions(fr.pilots_ls, prior)
    assert not torch.allclose(meta["noise_var"], fr.noise_var)  # a real estimate, not the truth
    h_hat = mimo_estimators(["lmmse-robust"], prior)[0].estimate(fr.pilots_ls, meta)
    want = 10 * math.log10(float((h_hat - fr.h).abs().square().double().mean()))
    assert abs(est_row.mse_db - want) < 1e-5, (est_row.mse_db, want)
    assert abs(true_row.mse_db - want) > 1e-3, (true_row.mse_db, want)
    assert "estimated" in est_row.given and "true" in true_row.given


def test_bound_and_genie_follow_the_pilot_grid_snr_convention():
    """Under snr_convention pilot-grid the per-RE noise is 10^(-(snr + offset)/10), offset = 10 log10(F T / P): the
    bound at SNR s is the per-RE bound at s + offset, and the genie's Monte-Carlo MSE on frames drawn at s sits on it."""
    grid, per_re = small(snr_convention="pilot-grid"), small()
    offset = grid.snr_offset_db
    assert offset == pytest.approx(10 * math.log10(24 * 14 / 24))  # 12 subcarriers x 2 symbols of pilots
    for snr in (0.0, 10.0):
        got = mimo_genie_mse(grid, snr, 300e-9, 400.0, per_user=True)
        want = mimo_genie_mse(per_re, snr + offset, 300e-9, 400.0, per_user=True)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
        assert float(want.mean()) < float(mimo_genie_mse(per_re, snr, 300e-9, 400.0)) / 2  # 11.5 dB apart: not close
    fr = MimoFrameGenerator(grid).generate(200, seed=4, with_data=False)
    err = (MimoGenieLMMSE(grid).estimate(fr.pilots_ls, fr.meta) - fr.h).abs().square().mean((1, 2, 3, 4)).double()
    bound = float(mimo_genie_mse(grid, 10.0, 300e-9, 400.0))
    assert abs(float(err.mean()) - bound) < 3 * float(err.std()) / math.sqrt(len(err)), (float(err.mean()), bound)


def test_per_user_error_variance_is_each_frames_mean_over_its_own_pairs():
    """``PerUser.estimate_with_error_variance`` states, per frame, the mean over that frame's (antenna, user) pairs of
    what each pair's SISO estimator states: computed here pair by pair, one frame at a time."""
    from wavefront.sim.mimo import PerUser

    cfg = small(R=2, U=2, snr_db=[0.0, 20.0], delay_spread_s=[50e-9, 300e-9], doppler_hz=[0.0, 900.0])
    fr = MimoFrameGenerator(cfg).generate(3, seed=8, with_data=False)
    est = PerUser("lmmse-estimated", cfg)
    _, ev = est.estimate_with_error_variance(fr.pilots_ls, fr.meta)
    want = torch.zeros(3, dtype=torch.float64)
    for b in range(3):
        meta = {k: fr.meta[k][b:b + 1] for k in ("snr_db", "delay_spread_s", "doppler_hz", "noise_var")}
        for r in range(2):
            for u, siso in enumerate(est.per_user):
                want[b] += float(siso.estimate_with_error_variance(fr.pilots_ls[b:b + 1, r, u], meta)[1][0]) / 4
    torch.testing.assert_close(ev.double(), want, rtol=1e-5, atol=0)
    assert float(want.max() / want.min()) > 1.5  # the frames' conditions differ: a mix-up of frames shows


def test_every_pair_of_a_frame_has_that_frames_doppler_and_delay_spread():
    """Frames pick Doppler 0 or 900 Hz and delay spread 0 or 300 ns: every (antenna, user) pair of a frame with
    Doppler 0 is constant over the symbols and of one with delay spread 0 flat over the subcarriers, and every pair of
    the others varies (pairs given another frame's conditions would break one or the other)."""
    cfg = small(R=2, U=2, rho=0.5, doppler_hz=[0.0, 900.0], doppler_step_hz=900.0,
                delay_spread_s=[0.0, 300e-9], delay_spread_step_s=300e-9)
    fr = MimoFrameGenerator(cfg).generate(12, seed=3, with_data=False)
    h = fr.h.to(torch.complex128)  # [B, R, U, F, T]
    scale = h.abs().amax((3, 4))  # [B, R, U]
    time_var = (h - h[..., :1]).abs().amax((3, 4)) / scale
    freq_var = (h - h[..., :1, :]).abs().amax((3, 4)) / scale
    still, flat = fr.doppler_hz == 0, fr.delay_spread_s == 0
    assert 0 < int(still.sum()) < 12 and 0 < int(flat.sum()) < 12
    assert float(time_var[still].max()) < 1e-5 and float(time_var[~still].min()) > 1e-2
    assert float(freq_var[flat].max()) < 1e-5 and float(freq_var[~flat].min()) > 1e-2
