"""MIMO lmmse-estimated and mmse-bayes joint over antennas and users, with rho in the prior:
the joint likelihood against a dense Gaussian, ML recovery, the Bayes risk ordering (paired),
the R = U = 1 reduction to the SISO estimators, per-frame rho, and bad input."""
import math
from functools import lru_cache

import pytest
import torch

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.sim.conditions import ConditionPrior, estimate_conditions
from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.mimo import (MimoFrameGenerator, MimoGenieLMMSE, PerUser, mimo_estimators, mimo_genie_mse,
                                user_configs)
from wavefront.sim.mimo_bayes import (MimoBayesMMSE, MimoEstimatedLMMSE, MimoPrior, estimate_mimo_conditions,
                                      mimo_log_likelihood)
from wavefront.sim.prior_lmmse import BayesMMSE, EstimatedLMMSE
from wavefront.sim.profiles import channel_profile
from wavefront.sim.statistics import covariance_terms

# conditions on grid points (the channel's steps), so a coarse prior holds the truth
GRID = {"delay_spread_s": [100e-9, 300e-9], "delay_spread_step_s": 100e-9, "doppler_hz": [100.0, 900.0],
        "doppler_step_hz": 400.0, "snr_db": [0.0, 20.0], "snr_step_db": 5.0}
STEPS = {"delay_spread_step_s": 100e-9, "doppler_step_hz": 400.0, "snr_step_db": 5.0}


def config(R=4, U=2, rho=0.7, F=48, spacing=4, **channel) -> SystemConfig:
    return SystemConfig.from_dict({"ofdm": {"num_subcarriers": F, "num_symbols": 14, "pilot_subcarrier_spacing": spacing},
                                   "channel": {**GRID, **channel},
                                   "mimo": {"num_rx_antennas": R, "num_users": U, "rx_correlation": rho}})


@lru_cache(maxsize=32)
def _user_pilot_covariance(user: SystemConfig, ds: float, fd: float) -> torch.Tensor:
    """R_p [P, P] complex128: the full-grid covariance R_f (x) R_t at the user's pilot positions."""
    o = user.ofdm
    F, T = o.grid_shape
    r_ft = sum(torch.kron(a[0], b[0]) for a, b in covariance_terms(o, channel_profile(user.channel.profile),
                                                                   torch.tensor([ds]), torch.tensor([fd])))
    pos = torch.tensor([f * T + t for f in o.pilot_subcarriers for t in o.pilot_symbol_indices])
    return r_ft[pos][:, pos]


def _dense_log_likelihood(cfg: SystemConfig, p: torch.Tensor, ds, fd, rho, snr_db) -> tuple[float, float]:
    """(log CN(p; 0, C), its scale |log det(pi C)| + p^H C^-1 p) with C = blockdiag_u(R_rx (x) R_p,u) + sigma^2 I as one dense (U R P)^2 matrix, float64.

    ``p`` [R, U, P_f', P_t]; R_p,u from the full-grid covariance at user u's pilot positions."""
    R, U = p.shape[:2]
    i = torch.arange(R, dtype=torch.float64)
    rx = torch.tensor(rho, dtype=torch.float64).pow((i[:, None] - i[None, :]).abs()).to(torch.complex128)
    blocks = [torch.kron(rx, _user_pilot_covariance(c, ds, fd)) for c in user_configs(cfg)]
    C = torch.block_diag(*blocks) + float(cfg.noise_variance(torch.tensor(snr_db, dtype=torch.float64))) * torch.eye(
        sum(b.shape[0] for b in blocks), dtype=torch.complex128)
    x = p.permute(1, 0, 2, 3).reshape(-1).to(torch.complex128)  # user, then antenna, then pilot
    quad = (x.conj() @ torch.linalg.solve(C, x)).real
    logdet = float(torch.linalg.slogdet(math.pi * C)[1])
    return -logdet - float(quad), abs(logdet) + float(quad)


def test_joint_likelihood_equals_the_dense_gaussian():
    """Every hypothesis's rotated, eigen-factored likelihood equals the dense (U R P)^2 one to 1e-7 of its terms'
    size (|log det| + quadratic form; a log-likelihood itself may be near 0). Observed: a few 1e-9, the two routes
    to R_p rounding apart; a wrong eigenvalue weight or rotation is O(1)."""
    cfg = config(R=3, U=2, rho=(0.0, 0.85), F=24, spacing=2)
    prior = MimoPrior(ConditionPrior((100e-9, 300e-9), (100.0, 900.0), (0.0, 10.0)), (0.0, 0.5, 0.85))
    fr = MimoFrameGenerator(cfg).generate(2, seed=4, with_data=False)
    got = mimo_log_likelihood(fr.pilots_ls, cfg, prior)  # [B, 2, 2, 3, 2]
    assert got.shape == (2, 2, 2, 3, 2)
    for b in range(2):
        for d, ds in enumerate(prior.conditions.delay_spreads_s):
            for f, fd in enumerate(prior.conditions.dopplers_hz):
                for r, rho in enumerate(prior.rhos):
                    for s, snr in enumerate(prior.conditions.snrs_db):
                        want, scale = _dense_log_likelihood(cfg, fr.pilots_ls[b], ds, fd, rho, snr)
                        assert abs(float(got[b, d, f, r, s]) - want) <= 1e-7 * scale, (b, d, f, r, s)


def test_ml_recovers_grid_conditions_with_rho_known():
    """rho = 0.7 known, 8 antennas, true conditions on the prior's grid: the joint ML hits (ds, fd, SNR) exactly on
    most frames (about 0.89 over 400 frames; the delay spread at 0 dB is the hard part), the SNR on nearly all,
    and far more often than one antenna of one user does (about 0.3)."""
    cfg = config(R=8)
    prior = MimoPrior.from_config(cfg, **STEPS)
    assert prior.shape == (3, 3, 1, 5)
    fr = MimoFrameGenerator(cfg).generate(120, seed=11, with_data=False)
    est = estimate_mimo_conditions(fr.pilots_ls, cfg, prior)
    hits = lambda e: ((e["delay_spread_s"] == fr.delay_spread_s) & (e["doppler_hz"] == fr.doppler_hz)  # noqa: E731
                      & (e["snr_db"] == fr.snr_db)).double().mean()
    assert torch.all(est["rx_correlation"] == 0.7)
    # one antenna of user 0 alone, on the same grid
    siso = estimate_conditions(fr.pilots_ls[:, 0, 0], user_configs(cfg)[0], prior.conditions)
    # binomial: at p = 0.89 and n = 120 the standard deviation is 0.03, so 0.75 sits 4.5 of them below
    assert hits(est) >= 0.75 and hits(est) > hits(siso) + 0.3, (float(hits(est)), float(hits(siso)))
    assert float((est["snr_db"] == fr.snr_db).double().mean()) >= 0.95
    # where it hit, lmmse-estimated is the genie at the truth (the config's rho, not a grid's)
    hit = (est["delay_spread_s"] == fr.delay_spread_s) & (est["doppler_hz"] == fr.doppler_hz) & (est["snr_db"] == fr.snr_db)
    got = MimoEstimatedLMMSE(cfg, prior).estimate(fr.pilots_ls[hit])
    want = MimoGenieLMMSE(cfg).estimate(fr.pilots_ls[hit], {k: v[hit] for k, v in fr.meta.items()})
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_bayes_on_a_one_point_prior_is_the_genie():
    """A prior of one hypothesis, the frames' own conditions and rho: the mixture is that hypothesis's genie filter."""
    cfg = config(R=4, U=2, rho=0.6, delay_spread_s=200e-9, doppler_hz=500.0, snr_db=5.0)
    prior = MimoPrior.from_config(cfg)
    assert prior.shape == (1, 1, 1, 1)
    fr = MimoFrameGenerator(cfg).generate(4, seed=9, with_data=False)
    got = MimoBayesMMSE(cfg, prior).estimate(fr.pilots_ls)
    # float64 throughout, both rounded to complex64 at the end: a few 1e-7 of |h| ~ 1
    torch.testing.assert_close(got, MimoGenieLMMSE(cfg).estimate(fr.pilots_ls, fr.meta), rtol=0, atol=1e-6)


def test_bayes_risk_ordering_with_rho_in_the_prior():
    """Frames from the prior (conditions on its grid, rho uniform in [0, 0.9]): per frame, paired over the same
    frames, mmse-bayes <= per-pair mmse-bayes and <= lmmse-estimated within 3 SE, and >= the genie bound."""
    cfg = config(rho=(0.0, 0.9))
    prior = MimoPrior.from_config(cfg, **STEPS)
    assert prior.rhos == pytest.approx(tuple(k / 10 for k in range(10)))
    fr = MimoFrameGenerator(cfg).generate(160, seed=5, with_data=False)
    err = lambda h: (h - fr.h).abs().square().mean((1, 2, 3, 4)).double()  # noqa: E731  [B] per frame
    bayes = err(MimoBayesMMSE(cfg, prior).estimate(fr.pilots_ls))
    est = err(MimoEstimatedLMMSE(cfg, prior).estimate(fr.pilots_ls))
    pair = err(PerUser.wrapping([BayesMMSE(c, prior.conditions) for c in user_configs(cfg)]).estimate(fr.pilots_ls, {}))
    bound = mimo_genie_mse(cfg, fr.snr_db.double(), fr.delay_spread_s.double(), fr.doppler_hz.double(),
                           rx_correlation=fr.rx_correlation.double())
    se = lambda d: float(d.std() / math.sqrt(len(d)))  # noqa: E731
    for other in (pair, est):
        d = bayes - other
        assert float(d.mean()) <= 3 * se(d), (float(d.mean()), se(d))
    d = bayes - bound
    assert float(d.mean()) >= -3 * se(d), (float(d.mean()), se(d))
    # the joint use of the antennas pays: clearly below the per-pair mixture
    assert float((pair - bayes).mean()) > 3 * se(pair - bayes)


def test_one_antenna_one_user_is_the_siso_estimators():
    """R = U = 1: the same ML grid point as the SISO lmmse-estimated and the same outputs as both SISO estimators."""
    cfg = SystemConfig.from_dict({"ofdm": {"num_subcarriers": 48, "num_symbols": 14, "pilot_subcarrier_spacing": 4},
                                  "channel": GRID})
    cond = ConditionPrior.from_config(cfg, **STEPS)
    prior = MimoPrior(cond, (0.0,))
    fr = FrameGenerator(cfg).generate(40, seed=2, with_data=False)
    p = fr.pilots_ls[:, None, None]  # [B, 1, 1, P_f, P_t]
    a, b = estimate_mimo_conditions(p, cfg, prior), estimate_conditions(fr.pilots_ls, cfg, cond)
    for k in ("delay_spread_s", "doppler_hz", "snr_db", "noise_var"):
        assert torch.equal(a[k], b[k]), k
    scale = float(fr.h.abs().square().mean().sqrt())
    # observed: lmmse-estimated 0 (the same genie arithmetic), mmse-bayes 1.2e-6 (float64 here, the SISO fast
    # path's weights in float32: about 1e-7 relative each); 10x margins
    for mimo, siso, tol in ((MimoEstimatedLMMSE(cfg, prior), EstimatedLMMSE(cfg, cond), 1e-6),
                            (MimoBayesMMSE(cfg, prior), BayesMMSE(cfg, cond), 1e-5)):
        got, want = mimo.estimate(p)[:, 0, 0], siso.estimate(fr.pilots_ls)
        assert float((got - want).abs().max()) <= tol * scale, (mimo.name, float((got - want).abs().max()))


def test_rho_range_draws_per_frame_and_the_genie_and_bound_follow_it():
    """With a rho range each frame has its own rho: the genie and the bound at it equal those of a fixed-rho config."""
    cfg = config(R=3, U=2, rho=(0.2, 0.9), F=24, spacing=2)
    fr = MimoFrameGenerator(cfg).generate(3, seed=8, with_data=False)
    rho = fr.rx_correlation
    assert rho.shape == (3,) and bool(((rho >= 0.2) & (rho <= 0.9)).all()) and len(set(rho.tolist())) == 3
    got = MimoGenieLMMSE(cfg).estimate(fr.pilots_ls, fr.meta)
    bound = mimo_genie_mse(cfg, fr.snr_db.double(), fr.delay_spread_s.double(), fr.doppler_hz.double(),
                           rx_correlation=rho.double())
    for b in range(3):
        fixed = cfg.updated(mimo={"rx_correlation": float(rho[b])})
        meta = {k: v[b:b + 1] for k, v in fr.meta.items() if k != "rx_correlation"}
        torch.testing.assert_close(got[b:b + 1], MimoGenieLMMSE(fixed).estimate(fr.pilots_ls[b:b + 1], meta),
                                   rtol=0, atol=1e-6)
        want = mimo_genie_mse(fixed, fr.snr_db[b].double(), fr.delay_spread_s[b].double(), fr.doppler_hz[b].double())
        assert abs(float(bound[b]) - float(want)) <= 1e-12


def test_rho_range_spatial_covariance_is_the_average_over_rho():
    """E[h_r h_s^*] = E_rho[rho^k] = (hi^(k+1) - lo^(k+1)) / ((k + 1)(hi - lo)), k = |r - s| (Monte Carlo, 3 sigma)."""
    lo, hi, R = 0.2, 0.9, 3
    cfg = config(R=R, U=1, rho=(lo, hi), F=24, spacing=2)
    fr = MimoFrameGenerator(cfg).generate(1500, seed=3, with_data=False)
    x = fr.h[:, :, 0, ::6, ::7].permute(0, 2, 3, 1).reshape(-1, R).to(torch.complex128)
    cov = x.T @ x.conj() / x.shape[0]
    k = torch.arange(R, dtype=torch.float64)
    k = (k[:, None] - k[None, :]).abs()
    want = (hi ** (k + 1) - lo ** (k + 1)) / ((k + 1) * (hi - lo))
    tol = 3 / math.sqrt(1500)  # as in test_mimo: count frames only
    assert (cov.real - want).abs().max() < tol and cov.imag.abs().max() < tol


@pytest.mark.parametrize("rho", [[0.5, 1.0], [0.9, 0.1], [-0.1, 0.5], [0.1, 0.2, 0.3]])
def test_bad_rho_range_is_a_config_error(rho):
    with pytest.raises(ConfigError, match="mimo.rx_correlation"):
        config(rho=rho)


def test_bad_rho_range_on_the_command_line_is_one_line(tmp_path, capsys):
    rc = main(["sweep", "--snr-db", "10", "--frames", "10", "--out", str(tmp_path / "o"), "--no-progress",
               "--estimators", "ls-linear", "--users", "2", "--rx-correlation", "0.5:1.2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "mimo.rx_correlation" in err[0], err


def test_registry_rows_and_dmrs_fallback():
    """The joint rows under the Kronecker pattern, their per-pair baselines by name, per pair under DM-RS."""
    cfg = config(rho=(0.0, 0.9))
    est = mimo_estimators(["mmse-bayes", "lmmse-estimated", "mmse-bayes-per-pair", "lmmse-estimated-per-pair"], cfg)
    assert [type(e).__name__ for e in est] == ["MimoBayesMMSE", "MimoEstimatedLMMSE", "PerUser", "PerUser"]
    assert [e.name for e in est[2:]] == ["mmse-bayes-per-pair", "lmmse-estimated-per-pair"]
    assert "rho in the prior" in est[0].given and "receive correlation ignored" in est[2].given
    dmrs = cfg.updated(mimo={"pilots": "dmrs-type1", "rx_correlation": 0.5})
    assert type(mimo_estimators(["mmse-bayes"], dmrs)[0]) is PerUser


def test_bad_pilots_are_config_errors():
    cfg = config(R=2, U=2)
    with pytest.raises(ConfigError, match="pilots"):
        MimoBayesMMSE(cfg).estimate(torch.zeros(3, 2, 2, 6, 3, dtype=torch.complex64))  # 6 x 2 per user
    with pytest.raises(ConfigError, match="mimo.pilots"):
        MimoEstimatedLMMSE(cfg.updated(mimo={"pilots": "dmrs-type1"}))
