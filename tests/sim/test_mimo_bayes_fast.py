"""The MIMO likelihood screen and sparse posterior (issue 25) against dense, independent computations, and the
error variance each model-based estimator states (``--error-variance model``)."""
import math

import pytest
import torch

from wavefront.cli import main
from wavefront.sim.conditions import ConditionPrior, estimate_conditions
from wavefront.sim.lmmse import assumed_freq_correlation, assumed_time_correlation, genie_mse
from wavefront.sim.mimo import MimoFrameGenerator, MimoGenieLMMSE, PerUser, mimo_genie_mse, rx_eigen, user_configs
from wavefront.sim.mimo_bayes import (MimoBayesMMSE, MimoEstimatedLMMSE, MimoPrior, _grid, estimate_mimo_conditions,
                                      mimo_log_likelihood)
from wavefront.sim.prior_lmmse import BayesMMSE
from wavefront.sim.profiles import subcarrier_offsets_hz, symbol_times_s

from test_mimo_bayes import STEPS, _dense_log_likelihood, config

# SNRs up to 30 dB: the pilots' weakest eigen-directions fall below 1e-3 sigma_min^2, so the series is used
PRIOR = MimoPrior(ConditionPrior((100e-9, 300e-9), (100.0, 900.0), (0.0, 15.0, 30.0)), (0.0, 0.5, 0.85))


def _dense_mixture(cfg, prior, fr):
    """(ML flat index [B], posterior mean [B, R, U, F, T] c128, posterior variance per RE [B]) from the dense (U R P)^2
    Gaussian likelihood of every hypothesis and each hypothesis's genie (MimoGenieLMMSE) and closed-form MSE."""
    c = prior.conditions
    hyps = [(ds, fd, rho, snr) for ds in c.delay_spreads_s for fd in c.dopplers_hz for rho in prior.rhos for snr in c.snrs_db]
    B = fr.pilots_ls.shape[0]
    ll = torch.tensor([[_dense_log_likelihood(cfg, fr.pilots_ls[b], *h)[0] for h in hyps] for b in range(B)],
                      dtype=torch.float64)
    w = torch.softmax(ll, 1)
    genie = MimoGenieLMMSE(cfg)
    ones = torch.ones(B, dtype=torch.float64)
    hk = torch.stack([genie.estimate(fr.pilots_ls, {"delay_spread_s": ds * ones, "doppler_hz": fd * ones,
                                                    "rx_correlation": rho * ones,
                                                    "noise_var": cfg.noise_variance(snr * ones)}).to(torch.complex128)
                      for ds, fd, rho, snr in hyps], 1)  # [B, K, R, U, F, T]
    mse = torch.tensor([float(mimo_genie_mse(cfg, snr, ds, fd, rx_correlation=rho)) for ds, fd, rho, snr in hyps],
                       dtype=torch.float64)
    mean = torch.einsum("bk,bk...->b...", w.to(torch.complex128), hk)
    spread = (hk - mean[:, None]).abs().square().flatten(2).mean(2)  # [B, K] per RE
    return ll.argmax(1), mean, (w * (mse + spread)).sum(1)


def test_screen_is_within_its_stated_bound():
    """The screened log-likelihood (strong terms exact, weak ones by their 3-term series) is within its stated error
    bound of the full float64 sum at every hypothesis; the series is in use (weak terms exist). Observed: errors of a
    few 1e-12 against bounds of about 1e-6."""
    cfg = config(R=3, U=2, rho=(0.0, 0.85), F=24, spacing=2)
    fr = MimoFrameGenerator(cfg).generate(2, seed=4, with_data=False)
    grid = _grid(cfg, PRIOR, torch.device("cpu"))
    assert all(m[0].shape[1] < grid.R * grid.P for m in grid.mid)  # fewer strong terms than terms
    p = fr.pilots_ls.reshape(2, 3, 2, -1).to(torch.complex128)
    ll, err, scale = grid.log_likelihood(p, bounds=True)
    for b in range(2):
        exact = grid.exact_log_likelihood(p[b], torch.arange(ll[b].numel()))
        assert float((ll[b].flatten() - exact).abs().max()) <= float(err[b] + 1e-10 * scale[b])


@pytest.mark.parametrize("profile, budget", [("A", None), ("D", None), ("A", 1)])
def test_ml_mean_and_variance_equal_the_dense_mixture(profile, budget, monkeypatch):
    """The ML hypothesis is the dense likelihood's argmax, the posterior mean the weighted sum of every hypothesis's
    genie, and the posterior variance sum_k w_k (mse_k + |h_k - h_bar|^2) per RE (dense reference: complex64 genies,
    so a few 1e-8 of |h| ~ 1; tolerances 1e-6 absolute on h_bar, 1e-6 relative on the variance). Profiles: one
    Kronecker term (factor by factor) and two (LOS: dense); ``budget`` 1 makes every temporary its smallest piece
    (one condition at a time in the posterior), which must not change the result."""
    if budget is not None:
        monkeypatch.setattr("wavefront.sim.mimo_bayes._BUDGET", budget)
    cfg = config(R=3, U=2, rho=(0.0, 0.85), F=24, spacing=2, profile=profile)
    fr = MimoFrameGenerator(cfg).generate(3, seed=6, with_data=False)
    ml, mean, var = _dense_mixture(cfg, PRIOR, fr)
    got = mimo_log_likelihood(fr.pilots_ls, cfg, PRIOR).flatten(1)
    assert torch.equal(got.argmax(1), ml)
    e = estimate_mimo_conditions(fr.pilots_ls, cfg, PRIOR)
    c = PRIOR.conditions
    want = [(c.delay_spreads_s[i // 18], c.dopplers_hz[i // 9 % 2], PRIOR.rhos[i // 3 % 3], c.snrs_db[i % 3])
            for i in ml.tolist()]
    got_ml = torch.stack([e["delay_spread_s"].double(), e["doppler_hz"].double(), e["rx_correlation"].double(),
                          e["snr_db"].double()], 1)
    torch.testing.assert_close(got_ml, torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)  # float32 fields
    h, ev = MimoBayesMMSE(cfg, PRIOR).estimate_with_error_variance(fr.pilots_ls)
    assert float((h.to(torch.complex128) - mean).abs().max()) <= 1e-6
    torch.testing.assert_close(ev, var, rtol=1e-6, atol=0)


def test_lmmse_estimated_states_the_genie_mse_at_its_ml_conditions():
    """Its stated error variance is (1 / U R) sum_u sum_k lambda_k mse_2D,u(sigma^2 / lambda_k) at the ML (delay spread,
    Doppler, SNR, rho), the 2-D MSEs from lmmse.genie_mse (an independent route) to 1e-10."""
    cfg = config(R=3, U=2, rho=(0.0, 0.85), F=24, spacing=2)
    fr = MimoFrameGenerator(cfg).generate(3, seed=7, with_data=False)
    h, ev = MimoEstimatedLMMSE(cfg, PRIOR).estimate_with_error_variance(fr.pilots_ls)
    e = estimate_mimo_conditions(fr.pilots_ls, cfg, PRIOR)
    torch.testing.assert_close(h, MimoEstimatedLMMSE(cfg, PRIOR).estimate(fr.pilots_ls), rtol=0, atol=0)
    for b in range(3):
        lam, _ = rx_eigen(float(e["rx_correlation"][b]), 3)
        want = 0.0
        for user in user_configs(cfg):
            for lk in lam.tolist():
                if lk > 1e-12:  # sigma^2 / lambda_k is SNR + 10 log10(lambda_k)
                    want += lk * float(genie_mse(user, float(e["snr_db"][b]) + 10 * math.log10(lk),
                                                 float(e["delay_spread_s"][b]), float(e["doppler_hz"][b])))
        assert abs(float(ev[b]) - want / 6) <= 1e-10, (b, float(ev[b]), want / 6)


def test_robust_states_its_mse_under_its_assumed_covariance():
    """lmmse-robust per (antenna, user) states 1 - tr(R_hp (R_pp + sigma^2 I)^-1 R_ph) / (F T) of its assumed covariance
    (uniform PDP at the top delay spread, flat Doppler spectrum at the top Doppler), averaged over users, built here
    densely on the full grid; to 1e-10."""
    cfg = config(R=2, U=2, rho=0.5, F=24, spacing=2)
    est = PerUser("lmmse-robust", cfg)
    fr = MimoFrameGenerator(cfg).generate(3, seed=2, with_data=False)
    meta = {"noise_var": fr.noise_var, "snr_db": fr.snr_db}
    h, ev = est.estimate_with_error_variance(fr.pilots_ls, meta)
    torch.testing.assert_close(h, est.estimate(fr.pilots_ls, meta), rtol=0, atol=0)
    o = cfg.ofdm
    f, t = subcarrier_offsets_hz(o).double(), symbol_times_s(o).double()
    rf = assumed_freq_correlation(f[:, None] - f[None, :], "uniform", 300e-9)
    rt = assumed_time_correlation(t[:, None] - t[None, :], "flat", 900.0).to(torch.complex128)
    R = torch.kron(rf, rt)  # [F T, F T], row-major (f, t)
    F, T = o.grid_shape
    for b in range(3):
        want = 0.0
        for user in user_configs(cfg):
            pos = torch.tensor([i * T + j for i in user.ofdm.pilot_subcarriers for j in user.ofdm.pilot_symbol_indices])
            r_hp, r_pp = R[:, pos], R[pos][:, pos]
            nv = float(fr.noise_var[b])
            W = r_hp @ torch.linalg.inv(r_pp + nv * torch.eye(len(pos), dtype=torch.complex128))
            want += float(1 - torch.trace(W @ r_hp.mH).real / (F * T)) / 2
        assert abs(float(ev[b]) - want) <= 1e-10, (b, float(ev[b]), want)


def test_per_pair_rows_state_their_own_models_error():
    """lmmse-genie-per-pair states the 2-D genie's closed-form MSE (lmmse.genie_mse) at each frame's true conditions,
    averaged over users; lmmse-estimated-per-pair states it at each (antenna, user) pair's own ML conditions
    (estimate_conditions on that pair's pilots), averaged over antennas and users; mmse-bayes-per-pair the mean of
    each pair's SISO posterior variance; their estimates are unchanged. Tolerance 1e-6 relative: the frames' noise
    variance is float32."""
    cfg = config(R=3, U=2, rho=0.5, F=24, spacing=2)
    fr = MimoFrameGenerator(cfg).generate(4, seed=9, with_data=False)
    truth = {"delay_spread_s": fr.delay_spread_s, "doppler_hz": fr.doppler_hz, "noise_var": fr.noise_var,
             "snr_db": fr.snr_db}
    users = user_configs(cfg)
    genie = PerUser("lmmse-genie", cfg)
    h, ev = genie.estimate_with_error_variance(fr.pilots_ls, truth)
    torch.testing.assert_close(h, genie.estimate(fr.pilots_ls, truth), rtol=0, atol=0)
    want = torch.stack([genie_mse(u, fr.snr_db.double(), fr.delay_spread_s.double(), fr.doppler_hz.double())
                        for u in users]).mean(0)
    torch.testing.assert_close(ev, want, rtol=1e-6, atol=0)

    est = PerUser("lmmse-estimated", cfg)
    h, ev = est.estimate_with_error_variance(fr.pilots_ls, {})
    torch.testing.assert_close(h, est.estimate(fr.pilots_ls, {}), rtol=0, atol=0)
    want = torch.zeros(4, dtype=torch.float64)
    for u, user in enumerate(users):
        c = estimate_conditions(fr.pilots_ls[:, :, u].reshape(12, *fr.pilots_ls.shape[3:]), user)
        mse = genie_mse(user, c["snr_db"].double(), c["delay_spread_s"].double(), c["doppler_hz"].double())
        want += mse.view(4, 3).mean(1) / 2
        assert bool((mse.view(4, 3).std(1) > 0).any())  # a frame's antennas land on different conditions
    torch.testing.assert_close(ev, want, rtol=1e-6, atol=0)

    # mmse-bayes-per-pair: each pair's SISO posterior variance (held to the dense mixture in test_conditions.py)
    h, ev = PerUser("mmse-bayes", cfg).estimate_with_error_variance(fr.pilots_ls, {})
    want = sum(BayesMMSE(user).estimate_with_error_variance(fr.pilots_ls[:, :, u].reshape(12, *fr.pilots_ls.shape[3:]))[1]
               .view(4, 3).mean(1) for u, user in enumerate(users)) / 2
    torch.testing.assert_close(ev, want, rtol=1e-12, atol=0)


def test_per_pair_genie_variance_is_calibrated():
    """At the true conditions the genie's stated MSE is its expected error: over 120 frames the measured MSE per RE
    matches the stated one within 3 paired SE (the per-pair genie ignores rho, which the closed form also does)."""
    cfg = config(R=2, U=2, rho=0.6, F=24, spacing=2)
    fr = MimoFrameGenerator(cfg).generate(120, seed=21, with_data=False)
    truth = {"delay_spread_s": fr.delay_spread_s, "doppler_hz": fr.doppler_hz, "noise_var": fr.noise_var}
    h, ev = PerUser("lmmse-genie", cfg).estimate_with_error_variance(fr.pilots_ls, truth)
    d = (h - fr.h).abs().square().mean((1, 2, 3, 4)).double() - ev
    se = float(d.std() / math.sqrt(len(d)))
    assert abs(float(d.mean())) <= 3 * se, (float(d.mean()), se)


def test_bayes_posterior_variance_is_calibrated_on_prior_frames():
    """Frames drawn from the prior itself (conditions on its grid, rho known): the posterior variance is E[|h - h_bar|^2
    | p], so its mean over frames matches the measured MSE within 3 paired SE."""
    cfg = config(R=4, U=2, rho=0.7)
    prior = MimoPrior.from_config(cfg, **STEPS)
    fr = MimoFrameGenerator(cfg).generate(150, seed=12, with_data=False)
    h, ev = MimoBayesMMSE(cfg, prior).estimate_with_error_variance(fr.pilots_ls)
    err = (h - fr.h).abs().square().mean((1, 2, 3, 4)).double()
    d = err - ev
    se = float(d.std() / math.sqrt(len(d)))
    assert abs(float(d.mean())) <= 3 * se, (float(err.mean()), float(ev.mean()), se)


def test_model_error_variance_on_the_command_line(tmp_path):
    """--error-variance model runs a MIMO sweep and names itself in the spec; on SISO it is one line, exit 2."""
    out = tmp_path / "o"
    rc = main(["sweep", "--snr-db", "10", "--frames", "2", "--batch-size", "2", "--out", str(out), "--no-progress",
               "--estimators", "ls-linear,lmmse-estimated", "--rx-antennas", "2", "--users", "2",
               "--error-variance", "model", "--delay-spread-ns", "100", "--doppler-hz", "100"])
    import json

    spec = json.loads((out / "results.json").read_text())["spec"]
    assert rc == 0 and spec["error_variance"].startswith("model:")


def test_model_error_variance_on_siso_is_one_line(tmp_path, capsys):
    rc = main(["sweep", "--snr-db", "10", "--frames", "2", "--out", str(tmp_path / "o"), "--no-progress",
               "--estimators", "ls-linear", "--error-variance", "model"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "error_variance" in err[0], err


def test_ml_is_re_decided_in_float64_where_the_screen_cannot_separate(monkeypatch):
    """With a deliberately poor series (terms up to 50 sigma_min^2 counted as weak) the screen alone picks another
    hypothesis on 10 of 40 frames (checked here); the ML is still the argmax of the full float64 log-likelihood on
    every frame, because every hypothesis the error bound cannot separate is re-decided."""
    import wavefront.sim.mimo_bayes as mb

    monkeypatch.setattr(mb, "_WEAK_REL", 50.0)
    cfg = config(R=3, U=2, rho=(0.0, 0.85), F=24, spacing=2)
    fr = MimoFrameGenerator(cfg).generate(40, seed=21, with_data=False)
    grid = mb._Grid(cfg, PRIOR, torch.device("cpu"))
    p = fr.pilots_ls.reshape(40, 3, 2, -1).to(torch.complex128)
    ll = grid.log_likelihood(p)
    d, f, r, s = grid.ml_index(p)
    got = ((d * grid.nf + f) * grid.nr + r) * grid.ns + s
    n = ll[0].numel()
    want = torch.stack([grid.exact_log_likelihood(p[b], torch.arange(n)).argmax() for b in range(40)])
    assert int((ll.flatten(1).argmax(1) != want).sum()) >= 5  # the screen alone is wrong here
    assert torch.equal(got, want)
