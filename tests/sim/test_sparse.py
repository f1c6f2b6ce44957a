"""The sparse multipath profile against its closed forms: covariance, genie bound, oracle-support MSE; its bad input."""
import math

import numpy as np
import pytest
import torch

from wavefront.cli import main
from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import get_classical
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.lmmse import genie_mse
from wavefront.sim.oracle_support import oracle_support_mse
from wavefront.sim.profiles import channel_profile
from wavefront.sim.sparse import (SPARSE_PDP_DECAY, path_matrices, sparse_delay_scales, sparse_fourth_moment_ratio,
                                  sparse_freq_correlation, truncated_exponential_rms)
from wavefront.sim.statistics import covariance_terms


def _config(num_paths=4, snr_db=15.0, ds=300e-9, fd=800.0, **channel) -> SystemConfig:
    return SystemConfig.from_dict({"channel": {"profile": "sparse", "sparse_num_paths": num_paths, "snr_db": snr_db,
                                               "delay_spread_s": ds, "doppler_hz": fd, **channel}})


def test_closed_form_is_the_expectation_over_uniform_delays_of_the_exponential_pdp():
    # R_f(df) = N c E_u[exp(-kappa u) exp(-j 2 pi df tau_max u)], by a 200k-point midpoint rule on u
    ds = 300e-9
    tau_max = sparse_delay_scales(ds)[1]
    kappa = SPARSE_PDP_DECAY
    u = (np.arange(200_000) + 0.5) / 200_000
    df = np.array([0.0, 15e3, 150e3, 600e3, 1.7e6])
    weight = kappa / (1 - math.exp(-kappa)) * np.exp(-kappa * u)
    quad = (weight[None] * np.exp(-2j * np.pi * df[:, None] * tau_max * u[None])).mean(1)
    closed = sparse_freq_correlation(ds, torch.tensor(df)).numpy()
    assert np.abs(closed - quad).max() < 1e-9
    assert abs(closed[0] - 1) < 1e-12  # unit expected power


def test_expected_pdp_has_the_frames_rms_delay_spread():
    # the rule that ties tau_max to delay_spread_s: the expected PDP's RMS is the delay spread
    prof = channel_profile("sparse")
    mean = float((prof.nlos_powers * prof.norm_delays).sum())
    rms = math.sqrt(float((prof.nlos_powers * prof.norm_delays ** 2).sum()) - mean ** 2)
    assert abs(rms - 1.0) < 1e-4 and abs(prof.nlos_powers.sum() - 1.0) < 1e-12
    # and the closed-form RMS of the truncated exponential, by a fine quadrature
    x = (np.arange(1_000_000) + 0.5) / 1_000_000 * SPARSE_PDP_DECAY
    w = np.exp(-x) / np.exp(-x).sum()
    assert abs(math.sqrt((w * x * x).sum() - (w * x).sum() ** 2) - truncated_exponential_rms()) < 1e-9
    # the numbers the README and the module docstring state (they once said 0.8936, 336 ns, 1.55 us)
    gamma, tau_max = sparse_delay_scales(300e-9)
    assert round(truncated_exponential_rms(), 4) == 0.8852
    assert round(gamma * 1e9) == 339 and round(tau_max * 1e6, 2) == 1.56


@pytest.mark.parametrize("num_paths", [2, 8])
def test_empirical_covariance_of_20000_frames_equals_the_closed_form(num_paths):
    # E[H(f + k, t + m) H*(f, t)] at 9 (k, m) lags, averaged over every (f, t) pair per frame, over 20,000 frames;
    # each part (real, imaginary) within 3 standard errors of the per-frame averages. The closed form is
    # what covariance_terms gives the genie and the bound: one Kronecker term R_f (x) J0.
    config = _config(num_paths=num_paths, ds=300e-9, fd=800.0)
    h = FrameGenerator(config).generate(20_000, seed=11, with_data=False).h.to(torch.complex128)
    terms = covariance_terms(config.ofdm, channel_profile("sparse"), 300e-9, 800.0)
    assert len(terms) == 1
    r_f, r_t = terms[0][0][0], terms[0][1][0]  # [F, F], [T, T]
    # what second-order statistics cannot see: E|H|^4 / (E|H|^2)^2 at one resource element, vs 2 for a Gaussian
    m4 = h[:, 37, 5].abs().pow(4)
    assert abs(float(m4.mean()) - sparse_fourth_moment_ratio(num_paths)) < 3 * float(m4.std()) / math.sqrt(len(m4))
    assert sparse_fourth_moment_ratio(num_paths) > 2.3
    F, T = config.ofdm.grid_shape
    for k, m in [(0, 0), (1, 0), (4, 0), (20, 0), (60, 0), (0, 1), (0, 6), (0, 13), (5, 9)]:
        x = (h[:, k:, m:] * h[:, :F - k, :T - m].conj()).mean((1, 2))  # [B] per-frame lag averages
        emp = x.mean()
        se_re, se_im = x.real.std() / math.sqrt(len(x)), x.imag.std() / math.sqrt(len(x))
        theory = r_f[k, 0] * r_t[m, 0]
        assert abs(emp.real - theory.real) < 3 * se_re, (k, m, complex(emp), complex(theory), float(se_re))
        assert abs(emp.imag - theory.imag) < 3 * se_im + 1e-12, (k, m, complex(emp), complex(theory), float(se_im))


def test_genie_lmmse_equals_its_bound_and_oracle_support_lies_below():
    # A linear estimator's MSE depends on second-order statistics alone: over 20,000 frames the genie's
    # Monte-Carlo MSE equals genie_mse within 3 SE even though the channel is not Gaussian. The oracle
    # support LMMSE matches its per-frame closed form within 3 SE, and lies far below the genie.
    config = _config(num_paths=4, snr_db=15.0, ds=300e-9, fd=800.0)
    genie, oracle = get_classical("lmmse-genie", config), get_classical("lmmse-oracle-support", config)
    gen = FrameGenerator(config)
    err_g, err_o, cf_o = [], [], []
    for seed in range(4):
        fr = gen.generate(5000, seed=100 + seed, with_data=False)
        err_g.append((genie.estimate(fr.pilots_ls, fr.meta) - fr.h).abs().square().mean((1, 2)).double())
        err_o.append((oracle.estimate(fr.pilots_ls, fr.meta) - fr.h).abs().square().mean((1, 2)).double())
        cf_o.append(oracle_support_mse(config, fr.meta))
    err_g, err_o, cf_o = torch.cat(err_g), torch.cat(err_o), torch.cat(cf_o)
    n = len(err_g)
    bound = float(genie_mse(config, 15.0, 300e-9, 800.0))
    assert abs(float(err_g.mean()) - bound) < 3 * float(err_g.std()) / math.sqrt(n)
    d = err_o - cf_o
    assert abs(float(d.mean())) < 3 * float(d.std()) / math.sqrt(n)
    gap = err_g - err_o  # paired: the same frames
    assert float(gap.mean()) > 10 * float(gap.std()) / math.sqrt(n)
    assert 10 * math.log10(float(err_o.mean())) < 10 * math.log10(float(err_g.mean())) - 3.0


def test_sparse_frames_are_deterministic_and_carry_their_support():
    config = _config(num_paths=3, ds=(50e-9, 300e-9), fd=(0.0, 900.0))
    a = FrameGenerator(config).generate(64, seed=5)
    b = FrameGenerator(config).generate(64, seed=5)
    assert torch.equal(a.h, b.h) and torch.equal(a.y, b.y) and torch.equal(a.path_delays_s, b.path_delays_s)
    assert a.path_delays_s.shape == a.path_doppler_hz.shape == a.path_powers.shape == (64, 3)
    tau_max = sparse_delay_scales(a.delay_spread_s.double())[1]
    assert bool((a.path_delays_s.double() <= tau_max[:, None] * (1 + 1e-6)).all())
    assert bool((a.path_doppler_hz.abs() <= a.doppler_hz[:, None] * (1 + 1e-6)).all())
    assert set(a.meta) >= {"path_delays_s", "path_doppler_hz", "path_powers"}
    # the recorded support spans the channel: h = A g, A[(f, t), n] = e^{-j 2 pi f tau_n} e^{j 2 pi nu_n t}
    e_f, e_t = path_matrices(config.ofdm, a.path_delays_s, a.path_doppler_hz)
    A = (e_f.unsqueeze(2) * e_t.unsqueeze(1)).reshape(64, -1, 3)
    h = a.h.reshape(64, -1, 1).to(torch.complex128)
    g = torch.linalg.lstsq(A, h).solution
    assert float((A @ g - h).norm() / h.norm()) < 1e-5
    default = FrameGenerator(SystemConfig()).generate(4, seed=5)
    assert default.path_delays_s is None and "path_delays_s" not in default.meta
    assert "sparse_num_paths" not in SystemConfig().to_json()
    assert '"sparse_num_paths": 3' in config.to_json() and "sparse_num_paths" not in _config(num_paths=4).to_json()


@pytest.mark.parametrize("args, field", [(["--sparse-paths", "0"], "channel.sparse_num_paths=0"),
                                         (["--sparse-paths=-3"], "channel.sparse_num_paths=-3")])
def test_bad_path_count_is_one_line_and_exit_2(args, field, tmp_path, capsys):
    rc = main(["sweep", "--profile", "sparse", *args, "--frames", "10", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and field in err


@pytest.mark.parametrize("paths", ["3", "4"])  # 4 is the config's default: the CLI, not the config, sees it typed
def test_path_count_without_sparse_profile_and_oracle_without_support_are_refused(paths, tmp_path, capsys):
    rc = main(["sweep", "--sparse-paths", paths, "--frames", "10", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "applies to profile sparse only" in err
    assert f"channel.sparse_num_paths={paths}" in err and not (tmp_path / "r").exists()
    rc = main(["sweep", "--estimators", "lmmse-oracle-support", "--frames", "10", "--out", str(tmp_path / "s"),
               "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "needs profile sparse" in err


def test_sweep_prints_sparse_rows_with_what_each_estimator_was_given(tmp_path, capsys):
    rc = main(["sweep", "--profile", "sparse", "--sparse-paths", "4", "--estimators",
               "ls-linear,lmmse-genie,lmmse-oracle-support,perfect", "--snr-db", "20", "--doppler-hz", "500",
               "--frames", "200", "--batch-size", "100", "--out", str(tmp_path / "r"), "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith(("ls-", "lmmse-"))}
    assert float(rows["lmmse-oracle-support"][1]) < float(rows["lmmse-genie"][1]) < float(rows["ls-linear"][1])
    assert "lmmse-oracle-support: true paths" in out and "lmmse-genie: true profile" in out


def test_a_single_path_turns_by_its_recorded_delay_across_subcarriers_and_its_doppler_across_symbols():
    # One path per frame: H(f, t) = g exp(-j 2 pi f tau) exp(+j 2 pi nu t) (the sign conventions of the TDL fading).
    # Between neighbouring subcarriers the channel turns by -2 pi scs tau, between symbols by +2 pi nu T_sym,
    # with (tau, nu) the frame's recorded support, and |H|^2 = |g|^2, whose mean over frames is the recorded power.
    config = _config(num_paths=1, ds=300e-9, fd=800.0)
    fr = FrameGenerator(config).generate(4000, seed=3, with_data=False)
    h = fr.h.to(torch.complex128)
    tau, nu, p = fr.path_delays_s.double()[:, 0], fr.path_doppler_hz.double()[:, 0], fr.path_powers.double()[:, 0]
    o = config.ofdm
    step_f = (h[:, 1:, :] * h[:, :-1, :].conj()).sum((1, 2))  # [B]: sum of H(f+1, t) H*(f, t)
    step_t = (h[:, :, 1:] * h[:, :, :-1].conj()).sum((1, 2))
    want_f = torch.exp(-2j * math.pi * o.subcarrier_spacing_hz * tau)
    want_t = torch.exp(2j * math.pi * nu * o.symbol_duration_s)
    # |tau| error of the float32 record ~ 1e-13 s: phase error ~ 1e-8 rad; the grid itself is complex64 (~1e-7)
    assert float((step_f / step_f.abs() - want_f).abs().max()) < 1e-5
    assert float((step_t / step_t.abs() - want_t).abs().max()) < 1e-5
    # the delay and the Doppler turn the phase by amounts that the check above can tell apart from zero
    assert float((want_f - 1).abs().median()) > 0.05 and float((want_t - 1).abs().median()) > 0.05
    # |H| is flat over the grid, and E[|g|^2 / p] = 1 (|g|^2 / p is a unit exponential: SE 1 / sqrt(B))
    mag2 = h.abs().square()
    assert float((mag2.amax((1, 2)) / mag2.amin((1, 2)) - 1).max()) < 1e-4
    ratio = mag2.mean((1, 2)) / p
    assert abs(float(ratio.mean()) - 1) < 3 / math.sqrt(len(ratio))
    # the recorded power is the PDP at the recorded delay: c exp(-tau / gamma), c = kappa / (1 - e^-kappa) for N = 1
    gamma = sparse_delay_scales(fr.delay_spread_s.double())[0]
    kappa = SPARSE_PDP_DECAY
    torch.testing.assert_close(p, kappa / (1 - math.exp(-kappa)) * torch.exp(-tau / gamma), rtol=1e-6, atol=0)


def test_the_profiles_taps_discretise_the_expected_pdp_whose_correlation_is_the_closed_form():
    # The 256 taps of sparse_profile() are what code that reads taps sees: sum_l P_l exp(-j 2 pi df ds tau_l) must be
    # the closed form R_f(df) up to the midpoint rule's error: with the phase rate b = 2 pi df tau_max / kappa per unit
    # of x = tau / gamma and the bin width h = kappa / 256, each bin errs by (b h^2 / 12 + b^2 h^2 / 24) of its mass
    # (the exponential weight's tilt within the bin, and the phasor's curvature), so the sum by at most that.
    prof = channel_profile("sparse")
    ds = 300e-9
    df = torch.tensor([15e3, 150e3, 600e3, 1.7e6], dtype=torch.float64)
    tau = torch.as_tensor(prof.norm_delays, dtype=torch.float64) * ds
    taps = (torch.as_tensor(prof.nlos_powers, dtype=torch.float64) * torch.exp(-2j * math.pi * df[:, None] * tau)).sum(1)
    closed = sparse_freq_correlation(ds, df)
    b, h = 2 * math.pi * df * sparse_delay_scales(ds)[1] / SPARSE_PDP_DECAY, SPARSE_PDP_DECAY / 256
    err = (taps - closed).abs()
    assert bool((err < b * h * h / 12 + b * b * h * h / 24).all()), err


def test_oracle_support_is_the_dense_lmmse_given_the_paths_and_its_mse_the_dense_trace():
    # Independently of the Woodbury form: with the support known, h = A g, g ~ CN(0, diag p), so R_h = A P A^H and
    # h_hat = R_hp (R_p + sigma^2 I)^-1 y_p, R_hp = A P A_p^H, R_p = A_p P A_p^H; its MSE tr(R_h - R_hp (R_p + s I)^-1 R_ph)
    # / (F T). A is built here from the grid's frequencies and times, not by path_matrices.
    from wavefront.sim.profiles import subcarrier_offsets_hz, symbol_times_s

    config = SystemConfig.from_dict({"ofdm": {"num_subcarriers": 36, "num_symbols": 14},
                                     "channel": {"profile": "sparse", "sparse_num_paths": 3, "snr_db": [0.0, 20.0],
                                                 "delay_spread_s": [50e-9, 400e-9], "doppler_hz": [0.0, 900.0]}})
    fr = FrameGenerator(config).generate(4, seed=7, with_data=False)
    est = get_classical("lmmse-oracle-support", config).estimate(fr.pilots_ls, fr.meta).to(torch.complex128)
    mse = oracle_support_mse(config, fr.meta)
    f, t = subcarrier_offsets_hz(config.ofdm), symbol_times_s(config.ofdm)
    F, T = config.ofdm.grid_shape
    layout = config.ofdm.pilot_layout
    rows = torch.as_tensor(layout.subcarrier_indices * T + layout.symbol_indices)
    for b in range(4):
        tau, nu, p = fr.path_delays_s[b].double(), fr.path_doppler_hz[b].double(), fr.path_powers[b].double()
        A = (torch.exp(-2j * math.pi * f[:, None, None] * tau) * torch.exp(2j * math.pi * t[None, :, None] * nu)).reshape(F * T, -1)
        R_h = (A * p) @ A.mH
        R_hp, R_p = R_h[:, rows], R_h[rows][:, rows]
        s = float(fr.noise_var[b])
        W = R_hp @ torch.linalg.inv(R_p + s * torch.eye(len(rows), dtype=torch.complex128))
        want = (W @ fr.pilots_ls[b].reshape(-1).to(torch.complex128)).reshape(F, T)
        # the estimate is rounded to complex64 once: relative 1e-6 of the channel's scale
        assert float((est[b] - want).abs().max()) < 1e-5 * float(want.abs().max()), b
        trace = float((torch.diagonal(R_h) - torch.diagonal(W @ R_hp.mH)).real.sum()) / (F * T)
        assert abs(float(mse[b]) - trace) < 1e-9 * trace + 1e-12, (b, float(mse[b]), trace)
