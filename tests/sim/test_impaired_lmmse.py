"""The impairment-aware second-order yardsticks (sim/impaired_lmmse.py).

- With every impairment off they are ``lmmse-genie`` and ``mmse-bayes``, bit for bit, and the MSE formula is
  ``genie_mse``'s.
- ``lmmse-genie-impaired``'s empirical MSE on frames of the time-domain generator equals its trace formula
  ``tr(R_hh - R_hy R_yy^-1 R_yh) / (F T)`` within 3 standard errors: a linear estimator's MSE depends on the
  second-order statistics alone, so this holds every moment (``E[c]``, ``E[c c^H]``, the ICI power) at once.
- On a one-point prior (fixed delay spread, Doppler and SNR) the posterior has one hypothesis, so
  ``mmse-bayes-impaired`` is ``lmmse-genie-impaired`` (to the bank's single-precision weights).
"""
from __future__ import annotations

import math

import pytest
import torch

from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import get_classical, meta_for
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.impaired_lmmse import impaired_genie_mse
from wavefront.sim.lmmse import genie_mse

RANGES = {"snr_db": [0.0, 25.0], "delay_spread_s": [25e-9, 300e-9], "doppler_hz": [50.0, 1000.0]}
MIX = {"cfo_hz": [-100.0, 100.0], "phase_noise_linewidth_hz": [0.0, 100.0], "timing_offset_samples": [0.0, 2.0]}


def _config(**channel) -> SystemConfig:
    return SystemConfig.from_dict({"channel": {"profile": "A", **channel}})


def _mse(est, frames) -> torch.Tensor:
    """Returns each frame's MSE [B] float64 of ``est`` on ``frames``."""
    d = est.estimate(frames.pilots_ls, meta_for(est.needs, frames.meta, None)) - frames.h
    return (d.real.square() + d.imag.square()).mean((1, 2)).double()


@pytest.mark.parametrize("channel", [RANGES, {**RANGES, "ici": True}])
def test_without_impairments_they_are_the_genie_and_mmse_bayes_bit_for_bit(channel):
    cfg = _config(**channel)
    frames = FrameGenerator(cfg).generate(40, seed=3, with_data=False)
    for plain, aware in (("lmmse-genie", "lmmse-genie-impaired"), ("mmse-bayes", "mmse-bayes-impaired")):
        a, b = get_classical(plain, cfg), get_classical(aware, cfg)
        assert b.given == a.given
        meta = meta_for(a.needs, frames.meta, None)
        assert torch.equal(a.estimate(frames.pilots_ls, meta), b.estimate(frames.pilots_ls, meta)), aware
    snr, ds, fd = torch.tensor([0.0, 20.0]), torch.tensor([5e-8, 3e-7]), torch.tensor([100.0, 900.0])
    assert torch.equal(impaired_genie_mse(cfg, snr, ds, fd), genie_mse(cfg, snr, ds, fd))


@pytest.mark.parametrize("impairment", [{"timing_offset_samples": [0.0, 4.0]}, {"phase_noise_linewidth_hz": [0.0, 200.0]},
                                        {"cfo_hz": [-200.0, 200.0]}, MIX, {"cfo_hz": [0.0, 300.0]}])
def test_genie_impaired_empirical_mse_is_its_trace_formula(impairment):
    snr, ds, fd = 20.0, 200e-9, 500.0
    cfg = _config(snr_db=snr, delay_spread_s=ds, doppler_hz=fd, **impairment)
    frames = FrameGenerator(cfg).generate(600, seed=21, with_data=False)
    e = _mse(get_classical("lmmse-genie-impaired", cfg), frames)
    closed = float(impaired_genie_mse(cfg, snr, ds, fd))
    m, se = float(e.mean()), float(e.std()) / math.sqrt(len(e))
    plain = float(_mse(get_classical("lmmse-genie", cfg), frames).mean())
    print(f"{impairment}: empirical {10 * math.log10(m):.3f} dB +- {se / m * 4.34:.3f}, trace formula "
          f"{10 * math.log10(closed):.3f} dB; lmmse-genie {10 * math.log10(plain):.3f} dB")
    assert abs(m - closed) <= 3 * se, (m, se, closed)
    assert m < plain  # knowing the distribution helps, on the same frames


def test_mmse_bayes_impaired_on_a_one_point_prior_is_the_impaired_genie():
    cfg = _config(snr_db=15.0, delay_spread_s=150e-9, doppler_hz=600.0, **MIX)
    frames = FrameGenerator(cfg).generate(50, seed=4, with_data=False)
    genie = get_classical("lmmse-genie-impaired", cfg).estimate(frames.pilots_ls, frames.meta)
    bayes = get_classical("mmse-bayes-impaired", cfg).estimate(frames.pilots_ls, {})
    rel = float((bayes - genie).abs().square().mean() / genie.abs().square().mean())
    assert rel < 1e-9, rel
    plain = get_classical("mmse-bayes", cfg).estimate(frames.pilots_ls, {})
    assert float((plain - genie).abs().square().mean() / genie.abs().square().mean()) > 1e-3  # the hook changed the bank


def test_the_aware_estimators_say_what_they_know():
    cfg = _config(**RANGES, **MIX)
    for name in ("lmmse-genie-impaired", "mmse-bayes-impaired"):
        given = get_classical(name, cfg).given
        assert "true impairment distribution (CFO -100 to 100 Hz uniform" in given and "per-frame values unknown" in given


def test_the_model_pilot_power_is_the_received_pilot_power():
    # diag(R_yy) = E|c|^2 (1 - P_dop) + P_ici + sigma^2 = 1 + sigma^2 only if the ICI is counted: a strong phase
    # noise (P_imp = 0.13) makes the ICI term 7 standard errors of the received power
    snr, ds, fd = 20.0, 200e-9, 800.0
    cfg = _config(snr_db=snr, delay_spread_s=ds, doppler_hz=fd, phase_noise_linewidth_hz=[1500.0, 2500.0])
    frames = FrameGenerator(cfg).generate(1500, seed=8, with_data=False)
    power = frames.pilots_ls.abs().square().reshape(len(frames.h), -1).mean(1).double()  # [B]
    est = get_classical("lmmse-genie-impaired", cfg)
    stats, noise = est.second_order(torch.tensor([ds], dtype=torch.float64), torch.tensor([fd], dtype=torch.float64),
                                    cfg.noise_variance(torch.tensor([snr], dtype=torch.float64)))
    model = float(torch.diagonal(stats.r_pp[0]).real.mean() + noise[0])
    m, se = float(power.mean()), float(power.std()) / math.sqrt(len(power))
    print(f"received {m:.4f} +- {se:.4f}, model {model:.4f}, of which ICI {est.moments.ici_power:.4f}")
    assert abs(m - model) <= 3 * se and est.moments.ici_power > 4 * se


@pytest.mark.parametrize("channel", [{"phase_noise_linewidth_hz": [1500.0, 2500.0]},
                                     {"cfo_hz": [0.0, 300.0], "timing_offset_samples": [0.0, 4.0]}])
def test_the_model_pilot_power_is_one_plus_the_noise_exactly(channel):
    # the impairments are unitary in time and |c_f| = 1, so E|c|^2 (1 - P_dop) + P_ici = 1 at every pilot exactly
    # when P_ici = 1 - (1 - P_imp)(1 - P_dop): P_imp + P_dop alone overshoots by P_imp P_dop (1e-3 here)
    ds, fd, sigma2 = 200e-9, 800.0, 0.01
    est = get_classical("lmmse-genie-impaired", _config(snr_db=20.0, delay_spread_s=ds, doppler_hz=fd, **channel))
    stats, noise = est.second_order(torch.tensor([ds], dtype=torch.float64), torch.tensor([fd], dtype=torch.float64),
                                    torch.tensor([sigma2], dtype=torch.float64))
    power = torch.diagonal(stats.r_pp[0]).real + noise[0]  # [P]
    assert est.moments.ici_power > 1e-3 or "cfo_hz" in channel
    torch.testing.assert_close(power, torch.full_like(power, 1.0 + sigma2), rtol=0, atol=1e-12)


def test_the_mse_formula_reads_snr_in_the_configs_convention():
    # pilot-grid SNR is the per-RE SNR less 10 log10(F T / P)
    cfg = _config(snr_convention="pilot-grid", **MIX)
    F, T = cfg.ofdm.grid_shape
    offset = 10 * math.log10(F * T / cfg.ofdm.num_pilots)
    per_re = _config(**MIX)
    snr = torch.tensor([0.0, 15.0], dtype=torch.float64)
    ds, fd = torch.tensor([5e-8, 3e-7]), torch.tensor([100.0, 900.0])
    torch.testing.assert_close(impaired_genie_mse(cfg, snr, ds, fd), impaired_genie_mse(per_re, snr + offset, ds, fd),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("profile", ["A", "CDL-C"])
def test_each_bank_hypothesis_has_the_impaired_genies_pilot_covariance(profile):
    # hypothesis k = d N_fd + f of mmse-bayes-impaired's bank is the Gaussian of the impaired pilots at (ds_d, fd_f, sigma_s):
    # its log-determinant is log det(R_yy) of lmmse-genie-impaired's second-order model there, ICI of fd_f included
    from wavefront.sim.conditions import ConditionPrior

    azimuth = 60.0 if profile.startswith("CDL") else 0.0  # a travel direction is CDL's alone
    cfg = _config(profile=profile, travel_azimuth_deg=azimuth, snr_db=[0.0, 20.0], delay_spread_s=[5e-8, 3e-7],
                  doppler_hz=[100.0, 1200.0], **MIX)
    prior = ConditionPrior((5e-8, 3e-7), (100.0, 600.0, 1200.0), (0.0, 20.0))
    bank = get_classical("mmse-bayes-impaired", cfg, prior=prior).bank(torch.device("cpu"))
    genie = get_classical("lmmse-genie-impaired", cfg)
    for d, ds in enumerate(prior.delay_spreads_s):
        for f, fd in enumerate(prior.dopplers_hz):
            for s, snr in enumerate(prior.snrs_db):
                one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
                stats, noise = genie.second_order(one(ds), one(fd), cfg.noise_variance(one(snr)))
                r_yy = stats.r_pp[0] + noise[0] * torch.eye(stats.r_pp.shape[-1], dtype=torch.complex128)
                expected = float(torch.linalg.slogdet(r_yy)[1])
                k = d * len(prior.dopplers_hz) + f
                assert abs(float(bank.logdet[k, s]) - expected) < 1e-8, (ds, fd, snr, float(bank.logdet[k, s]), expected)


def test_a_sweep_with_a_timing_range_beyond_the_cp_refuses_the_aware_rows_in_one_line(tmp_path, capsys):
    from wavefront.cli import main

    yaml = tmp_path / "late.yaml"
    yaml.write_text("channel:\n  profile: A\n  snr_db: 10.0\n  timing_offset_samples: [0.0, 12.0]\n")
    rc = main(["sweep", "--no-progress", "--frames", "10", "--estimators", "mmse-bayes-impaired", "--config", str(yaml),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "channel.timing_offset_samples" in err and "N_cp = 9" in err, err
