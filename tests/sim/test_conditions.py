"""Conditions a receiver can estimate from its pilots, and the estimators built on them."""
import math

import pytest
import torch

from wavefront.errors import ConfigError
from wavefront.sim.conditions import ConditionPrior, estimate_conditions, log_likelihood, prior_average_stats
from wavefront.sim.config import SystemConfig, preset
from wavefront.sim.estimators import get_classical
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.lmmse import RobustLMMSE, _true_stats
from wavefront.sim.prior_lmmse import BayesMMSE, EstimatedLMMSE
from wavefront.sim.profiles import channel_profile

PAPER_RANGES = dict(snr_db=[0.0, 25.0], delay_spread_s=[25e-9, 300e-9], doppler_hz=[50.0, 1000.0])
# Issue 10's table: TDL-A, 200 ns, 20 dB, 300 frames (seed 2), prior 25-300 ns x 50-1000 Hz
ISSUE_TABLE = {  # Doppler: (genie, mmse-bayes, lmmse-estimated, prior-average LMMSE), dB
    100.0: (-25.39, -24.75, -24.93, -19.34),
    300.0: (-22.36, -20.52, -20.66, -19.71),
    500.0: (-15.87, -15.19, -14.73, -14.67),
}


def db(x):
    return 10 * math.log10(float(x))


def _cfg(**channel):
    return SystemConfig.from_dict({"channel": channel})


def _frame_mse(h_hat, h):
    return (h_hat - h).abs().square().mean((1, 2)).double()


@pytest.mark.parametrize("profile", ["A", "D"])
def test_log_likelihood_is_the_complex_gaussian_density(profile):
    # against the dense formula -log det(S) - p^H S^-1 p, S = R_p(ds, fd) + sigma^2 I from the
    # joint covariance: checks the eigenbasis, the separable blocks and the grid's axis order
    cfg = _cfg(profile=profile, snr_db=12.0, delay_spread_s=120e-9, doppler_hz=400.0)
    prior = ConditionPrior.from_ranges((50e-9, 300e-9), (100.0, 900.0), (5.0, 25.0), 50e-9, 200.0, 5.0)
    assert prior.shape == (6, 5, 5)
    p = FrameGenerator(cfg).generate(4, seed=3, with_data=False).pilots_ls
    ll = log_likelihood(p, cfg, prior)
    assert ll.shape == (4, 6, 5, 5) and ll.dtype == torch.float64
    prof = channel_profile(profile)
    pv = p.reshape(4, -1).to(torch.complex128)
    eye = torch.eye(pv.shape[1], dtype=torch.complex128)
    for d, f, s in [(0, 0, 0), (5, 4, 4), (1, 3, 2), (4, 1, 0)]:
        r_p = _true_stats(cfg.ofdm, prof, torch.tensor([prior.delay_spreads_s[d]], dtype=torch.float64),
                          torch.tensor([prior.dopplers_hz[f]], dtype=torch.float64)).r_pp[0]
        S = r_p + 10 ** (-prior.snrs_db[s] / 10) * eye
        quad = torch.einsum("bi,ij,bj->b", pv.conj(), torch.linalg.inv(S), pv).real
        dense = -torch.linalg.slogdet(S)[1] - quad
        assert torch.allclose(ll[:, d, f, s], dense, rtol=1e-10, atol=1e-9)


def _posterior_summary(p, cfg, prior, chunk=250):
    """Returns posterior means and variances [B, 3] (ds ns, fd Hz, SNR dB) on the prior's grid."""
    axes = [torch.tensor(v, dtype=torch.float64) * s for v, s in
            ((prior.delay_spreads_s, 1e9), (prior.dopplers_hz, 1.0), (prior.snrs_db, 1.0))]
    means, vars_ = [], []
    for i in range(0, p.shape[0], chunk):
        ll = log_likelihood(p[i:i + chunk], cfg, prior)
        w = torch.softmax(ll.flatten(1), 1).reshape(ll.shape)
        marg = [w.sum((2, 3)), w.sum((1, 3)), w.sum((1, 2))]
        m = torch.stack([mk @ a for mk, a in zip(marg, axes)], 1)
        means.append(m)
        vars_.append(torch.stack([mk @ (a * a) for mk, a in zip(marg, axes)], 1) - m * m)
    return torch.cat(means), torch.cat(vars_)


def test_condition_estimates_over_the_paper_ranges():
    # SNR 0-25 dB, 25-300 ns, 50-1000 Hz, drawn per frame; the default prior is that box on a
    # 25 ns x 50 Hz x 0.5 dB grid. Measured (2000 frames, seed 7):
    #   ML:             SNR bias +0.20 RMSE 1.09 dB | ds  -8 / 52 ns | fd -22 / 223 Hz
    #   posterior mean: SNR bias +0.02 RMSE 1.04 dB | ds  +1 / 40 ns | fd  +6 / 174 Hz
    # against prior spreads (uniform: range / sqrt 12) of 7.2 dB, 79 ns, 274 Hz.
    cfg = _cfg(**PAPER_RANGES)
    prior = ConditionPrior.from_config(cfg)
    assert prior.shape == (12, 20, 51)
    fr = FrameGenerator(cfg).generate(2000, seed=7, with_data=False)
    truth = torch.stack([fr.delay_spread_s.double() * 1e9, fr.doppler_hz.double(), fr.snr_db.double()], 1)

    def bias_rmse(est):
        e = torch.stack([est["delay_spread_s"].double() * 1e9, est["doppler_hz"].double(),
                         est["snr_db"].double()], 1) - truth
        return e.mean(0), e.square().mean(0).sqrt()

    ml = estimate_conditions(fr.pilots_ls, cfg)
    assert set(ml) == {"snr_db", "delay_spread_s", "doppler_hz", "noise_var"}
    assert all(v.dtype == torch.float32 and v.shape == (2000,) for v in ml.values())
    assert torch.allclose(ml["noise_var"], cfg.noise_variance(ml["snr_db"]))
    ml_bias, ml_rmse = bias_rmse(ml)
    pm = estimate_conditions(fr.pilots_ls, cfg, method="posterior-mean")
    pm_bias, pm_rmse = bias_rmse(pm)
    # 24 pilots on 2 symbols: Doppler is seen through one correlation between the two pilot
    # columns, so it stays coarse; SNR is seen through the noise-only eigen-directions
    assert (ml_bias.abs() < torch.tensor([20.0, 50.0, 0.4])).all(), ml_bias
    assert (pm_bias.abs() < torch.tensor([10.0, 30.0, 0.2])).all(), pm_bias
    assert (torch.tensor([40.0, 190.0, 0.9]) < ml_rmse).all() and (ml_rmse < torch.tensor([65.0, 250.0, 1.3])).all(), ml_rmse
    assert (torch.tensor([32.0, 155.0, 0.9]) < pm_rmse).all() and (pm_rmse < torch.tensor([48.0, 195.0, 1.2])).all(), pm_rmse
    # the posterior mean is the estimator of least MSE under the prior: ML cannot beat it
    assert (pm_rmse < ml_rmse).all()
    # and the likelihood predicts its own accuracy: the realised MSE of the posterior mean is
    # the average posterior variance (Bayesian calibration), to the grid's and MC's precision
    post_mean, post_var = _posterior_summary(fr.pilots_ls, cfg, prior)
    assert torch.allclose(post_mean.float()[:, 1], pm["doppler_hz"], atol=1e-2)
    ratio = pm_rmse / post_var.mean(0).sqrt()
    assert ((ratio > 0.9) & (ratio < 1.05)).all(), ratio


def test_snr_estimate_follows_the_config_snr_convention():
    # pilot-grid SNR on the paper grid (40 x 2 pilots): per-RE SNR is 13.2 dB above the
    # nominal one; the estimate must come back in the nominal convention, noise_var per RE
    cfg = preset("adafortitran-reference").updated(channel={"snr_db": [0.0, 10.0], "delay_spread_s": 200e-9,
                                                            "doppler_hz": 300.0})
    fr = FrameGenerator(cfg).generate(400, seed=5, with_data=False)
    est = estimate_conditions(fr.pilots_ls, cfg)
    assert est["delay_spread_s"].unique().tolist() == pytest.approx([200e-9])  # one-point axes
    err = est["snr_db"].double() - fr.snr_db.double()
    assert abs(err.mean()) < 0.2 and err.square().mean().sqrt() < 0.8
    assert torch.allclose(est["noise_var"], cfg.noise_variance(est["snr_db"]))


@pytest.mark.parametrize("doppler_hz", list(ISSUE_TABLE))
def test_issue_table_is_reproduced(doppler_hz):
    # the same frames as the table (seed 2, 300 frames), so the numbers agree to rounding;
    # across ten seeds the 300 Hz point averages -20.89 (bayes) and -21.11 (estimated): seed 2
    # is its most pessimistic draw
    cfg = _cfg(snr_db=20.0, delay_spread_s=200e-9, doppler_hz=doppler_hz)
    prior = ConditionPrior.from_ranges((25e-9, 300e-9), (50.0, 1000.0), 20.0)
    fr = FrameGenerator(cfg).generate(300, seed=2, with_data=False)
    secret = {k: torch.full_like(v, float("nan")) for k, v in fr.meta.items()}  # must not be read
    genie = _frame_mse(get_classical("lmmse-genie", cfg).estimate(fr.pilots_ls, fr.meta), fr.h)
    bayes = _frame_mse(BayesMMSE(cfg, prior).estimate(fr.pilots_ls, secret), fr.h)
    est = _frame_mse(EstimatedLMMSE(cfg, prior).estimate(fr.pilots_ls, secret), fr.h)
    avg = _frame_mse(RobustLMMSE(cfg, covariance="prior-average", prior=prior).estimate(fr.pilots_ls, fr.meta), fr.h)
    got = [db(x.mean()) for x in (genie, bayes, est, avg)]
    assert got == pytest.approx(ISSUE_TABLE[doppler_hz], abs=0.05)
    for x in (bayes, est):  # neither beats the genie beyond Monte-Carlo error (paired frames)
        d = x - genie
        assert d.mean() > -3 * d.std() / math.sqrt(len(d))


def test_bayes_is_the_least_mse_estimator_over_its_prior():
    # frames drawn from the prior itself: averaged over it, the posterior-weighted bank beats
    # the plug-in ML receiver and every fixed filter, and the prior-average LMMSE is the best
    # fixed filter (here against the flat-spectrum robust design for the same box)
    cfg = _cfg(snr_db=20.0, delay_spread_s=[25e-9, 300e-9], doppler_hz=[50.0, 1000.0])
    fr = FrameGenerator(cfg).generate(2000, seed=13, with_data=False)  # bayes vs estimated: 6 SE apart
    mse = {name: _frame_mse(get_classical(name, cfg, **kw).estimate(fr.pilots_ls, fr.meta), fr.h)
           for name, kw in [("lmmse-genie", {}), ("mmse-bayes", {}), ("lmmse-estimated", {}),
                            ("lmmse-robust", {"covariance": "prior-average"}), ("ls-linear", {})]}
    mse["robust-flat"] = _frame_mse(RobustLMMSE(cfg).estimate(fr.pilots_ls, fr.meta), fr.h)

    def better(a, b):  # a beats b by more than 3 paired standard errors
        d = mse[a] - mse[b]
        return d.mean() < -3 * d.std() / math.sqrt(len(d))

    assert better("lmmse-genie", "mmse-bayes")
    assert better("mmse-bayes", "lmmse-estimated")
    assert better("mmse-bayes", "lmmse-robust")
    assert better("lmmse-robust", "robust-flat")
    assert better("lmmse-estimated", "ls-linear")


@pytest.mark.parametrize("profile", ["A", "D", "CDL-C"])
def test_one_point_prior_at_the_truth_is_the_genie(profile):
    # one hypothesis, the true one: the posterior is 1 there, the bank is the genie's filter,
    # and the ML conditions are the truth (D: two Kronecker terms, CDL-C: 24)
    cfg = _cfg(profile=profile, snr_db=20.0, delay_spread_s=200e-9, doppler_hz=500.0)
    fr = FrameGenerator(cfg).generate(64, seed=1, with_data=False)
    genie = get_classical("lmmse-genie", cfg).estimate(fr.pilots_ls, fr.meta)
    bayes = get_classical("mmse-bayes", cfg).estimate(fr.pilots_ls, {})
    assert (bayes - genie).abs().max() < 1e-6 * genie.abs().max()
    # A (one Kronecker term): the filter applied in the bank's eigenbasis, not by the genie's solve, so equal to
    # the complex64 output's rounding; D and CDL-C: the genie's own solve on the cached blocks, bit for bit
    est = get_classical("lmmse-estimated", cfg).estimate(fr.pilots_ls, {})
    if profile == "A":
        assert (est - genie).abs().max() < 1e-6 * genie.abs().max()
    else:
        assert torch.equal(est, genie)


def test_prior_average_covariance_is_the_mean_of_the_grid_covariances():
    cfg = _cfg(profile="D", delay_spread_s=[50e-9, 250e-9], doppler_hz=[100.0, 900.0])
    prior = ConditionPrior.from_config(cfg, delay_spread_step_s=100e-9, doppler_step_hz=400.0)
    assert prior.delay_spreads_s == pytest.approx((50e-9, 150e-9, 250e-9)) and prior.dopplers_hz == (100.0, 500.0, 900.0)
    ds, fd = torch.meshgrid(torch.tensor(prior.delay_spreads_s, dtype=torch.float64),
                            torch.tensor(prior.dopplers_hz, dtype=torch.float64), indexing="ij")
    full = _true_stats(cfg.ofdm, channel_profile("D"), ds.reshape(-1), fd.reshape(-1))
    avg = prior_average_stats(cfg, prior)
    assert torch.allclose(avg.r_pp[0], full.r_pp.mean(0), atol=1e-12)
    # R_hp restricted to pilot symbol columns, compared through its action on a test matrix
    z = torch.randn(len(cfg.ofdm.pilot_subcarriers), 2, dtype=torch.complex128)
    apply = lambda st: sum(A @ z @ C.transpose(-1, -2) for A, C in zip(st.f_hp, st.t_hp))  # noqa: E731
    assert torch.allclose(apply(avg)[0], apply(full).mean(0), atol=1e-12)


def test_priors_describe_what_each_estimator_knew_and_bad_input_is_refused():
    cfg = _cfg(snr_db=20.0, **{k: v for k, v in PAPER_RANGES.items() if k != "snr_db"})
    prior = ConditionPrior.from_config(cfg)
    assert prior.shape == (12, 20, 1)
    assert prior.describe() == "25–300 ns x 50–1000 Hz (25 ns x 50 Hz grid), SNR 20 dB"
    assert "ML over 25–300 ns x 50–1000 Hz" in get_classical("lmmse-estimated", cfg).given
    assert "uniform prior over 25–300 ns" in get_classical("mmse-bayes", cfg).given
    assert get_classical("lmmse-robust", cfg).given == ("assumed covariance: uniform PDP at 300 ns RMS, flat Doppler "
                                                        "spectrum to 1000 Hz")
    assert "averaged over 25–300 ns x 50–1000 Hz" in RobustLMMSE(cfg, covariance="prior-average").given
    p = torch.zeros(2, 12, 2, dtype=torch.complex64)
    bad = [
        (lambda: ConditionPrior.from_ranges((1e-7, 2e-7), 100.0, 10.0, delay_spread_step_s=0.0),
         "prior.delay_spread_step_s"),
        (lambda: ConditionPrior.from_ranges((3e-7, 2e-7), 100.0, 10.0), "prior.delay_spread_s"),
        (lambda: ConditionPrior.from_ranges(1e-7, -5.0, 10.0), "prior.doppler_hz"),
        # built directly (as MIMO priors and the float32-rounded grids are), not through from_ranges
        (lambda: ConditionPrior((), (100.0,), (10.0,)), "prior.delay_spreads_s"),
        (lambda: ConditionPrior((-1e-9, 1e-7), (100.0,), (10.0,)), "prior.delay_spreads_s"),
        (lambda: ConditionPrior((1e-7,), (100.0, math.nan), (10.0,)), "prior.dopplers_hz"),
        (lambda: ConditionPrior((1e-7,), (100.0,), (math.inf,)), "prior.snrs_db"),
        (lambda: estimate_conditions(p[:, :10], cfg), "pilots"),
        (lambda: estimate_conditions(p.real, cfg), "pilots.dtype"),
        (lambda: estimate_conditions(p, cfg, method="map"), "method"),
        (lambda: RobustLMMSE(cfg, covariance="mean"), "lmmse-robust.covariance"),
    ]
    for call, field in bad:
        with pytest.raises(ConfigError) as exc:
            call()
        assert exc.value.field == field and "\n" not in str(exc.value)


@pytest.mark.parametrize("profile, layout", [("A", None), ("A", [2, 7, 11]), ("D", None), ("A", "lattice-4x6")])
def test_bayes_posterior_variance_is_the_dense_mixtures(profile, layout):
    """mmse-bayes states sum_k w_k (mse_k + |h_k - h_bar|^2) per RE: here from the dense Gaussian likelihood of every
    hypothesis (R_p + sigma^2 I, inverted), each hypothesis's genie estimate and its closed-form genie_mse. Profiles:
    one Kronecker term (the factored bank; 2 and 3 pilot symbols), two (dense); a scattered layout. Tolerance 1e-5 relative: the genie
    estimates and the mixture mean are complex64."""
    from wavefront.sim.lmmse import GenieLMMSE, genie_mse
    from wavefront.sim.pilots import apply_pilots

    cfg = _cfg(profile=profile, snr_db=12.0, delay_spread_s=120e-9, doppler_hz=400.0)
    if isinstance(layout, list):  # three pilot symbols: the time factor's eigenvectors are not symmetric
        cfg = cfg.updated(ofdm={"pilot_symbols": layout})
    elif layout:
        cfg = apply_pilots(cfg, layout)
    prior = ConditionPrior.from_ranges((50e-9, 300e-9), (100.0, 900.0), (5.0, 25.0), 125e-9, 400.0, 10.0)
    fr = FrameGenerator(cfg).generate(3, seed=3, with_data=False)
    pv = fr.pilots_ls.reshape(3, -1).to(torch.complex128)
    eye = torch.eye(pv.shape[1], dtype=torch.complex128)
    prof, genie = channel_profile(profile), GenieLMMSE(cfg)
    ll, hk, mse = [], [], []
    for ds in prior.delay_spreads_s:
        for fd in prior.dopplers_hz:
            r_p = _true_stats(cfg.ofdm, prof, torch.tensor([ds], dtype=torch.float64),
                              torch.tensor([fd], dtype=torch.float64)).r_pp[0]
            for snr in prior.snrs_db:
                S = r_p + 10 ** (-snr / 10) * eye
                ll.append(-torch.linalg.slogdet(S)[1] - torch.einsum("bi,ij,bj->b", pv.conj(), torch.linalg.inv(S), pv).real)
                ones = torch.ones(3)
                hk.append(genie.estimate(fr.pilots_ls, {"delay_spread_s": ds * ones, "doppler_hz": fd * ones,
                                                        "noise_var": 10 ** (-snr / 10) * ones}).to(torch.complex128))
                mse.append(float(genie_mse(cfg, snr, ds, fd)))
    w = torch.softmax(torch.stack(ll, 1), 1)  # [B, K]
    hk = torch.stack(hk, 1)  # [B, K, F, T]
    mean = torch.einsum("bk,bkft->bft", w.to(torch.complex128), hk)
    spread = (hk - mean[:, None]).abs().square().mean((2, 3))
    want = (w * (torch.tensor(mse, dtype=torch.float64) + spread)).sum(1)
    h, ev = BayesMMSE(cfg, prior).estimate_with_error_variance(fr.pilots_ls)
    assert torch.equal(h, BayesMMSE(cfg, prior).estimate(fr.pilots_ls))
    torch.testing.assert_close(ev, want, rtol=1e-5, atol=0)


def test_bayes_posterior_variance_is_calibrated_on_prior_frames():
    """Frames drawn on the prior's own grid: the posterior variance is E[|h - h_bar|^2 | p], so over 400 frames its
    mean matches the measured MSE per RE within 3 paired SE; with ICI the variance is not stated (None)."""
    ranges = dict(snr_db=[0.0, 20.0], snr_step_db=10.0, delay_spread_s=[50e-9, 300e-9], delay_spread_step_s=125e-9,
                  doppler_hz=[100.0, 900.0], doppler_step_hz=400.0)
    cfg = _cfg(**ranges)
    fr = FrameGenerator(cfg).generate(400, seed=17, with_data=False)
    prior = ConditionPrior.from_ranges((50e-9, 300e-9), (100.0, 900.0), (0.0, 20.0), 125e-9, 400.0, 10.0)
    assert set(fr.doppler_hz.tolist()) == set(prior.dopplers_hz)  # the frames' conditions are the prior's grid
    h, ev = BayesMMSE(cfg, prior).estimate_with_error_variance(fr.pilots_ls)
    d = _frame_mse(h, fr.h) - ev
    se = float(d.std() / math.sqrt(len(d)))
    assert abs(float(d.mean())) <= 3 * se, (float(d.mean()), float(ev.mean()), se)
    ici = _cfg(**ranges, ici=True)
    assert BayesMMSE(ici).estimate_with_error_variance(FrameGenerator(ici).generate(2, seed=1).pilots_ls)[1] is None
