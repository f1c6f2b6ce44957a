"""A folder generated over a prior (its conditions drawn per frame) is one point: its MSE the Bayes risk.

One row per distinct (SNR, delay spread, Doppler) gave such a folder one row per frame. As one point,
its totals must be exactly the frame-weighted sums of those per-frame points' totals.
"""
from __future__ import annotations

import math

import pytest

import wavefront.datasets.sources as sources
from wavefront.datasets.generate import DatasetSpec, generate_dataset
from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import classical_estimators
from wavefront.sim.experiment import run_experiment

PRIOR = {"ofdm": {"num_subcarriers": 24, "pilot_subcarrier_spacing": 4},
         "channel": {"snr_db": [0.0, 25.0], "delay_spread_s": [25e-9, 300e-9], "doppler_hz": [50.0, 1000.0]}}


@pytest.fixture(scope="module")
def prior_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("prior") / "d"
    cfg = SystemConfig.from_dict(PRIOR)
    generate_dataset(DatasetSpec(cfg, 3, 12, 12, 4), path)
    return path, cfg


def _rows(points, cfg):
    est = classical_estimators(["ls-linear", "lmmse-genie"], cfg)
    return run_experiment(points, est, conditions="true", progress=False)


def test_a_prior_folder_is_one_point_whose_mse_and_bound_average_its_frames(prior_folder, monkeypatch):
    path, cfg = prior_folder
    (p,) = sources.folder_points(path, cfg)
    assert p.available == 12 and p.axis == ""
    frames = next(p.batches())
    assert frames.snr_db.unique().numel() == 12  # every frame keeps its own conditions
    assert p.snr_db == pytest.approx(float(frames.snr_db.double().mean()), abs=1e-3)  # the row shows their mean
    assert p.config.channel.snr_db == (0.0, 25.0)  # and the point's config the ranges they were drawn over
    one = _rows([p], cfg)

    monkeypatch.setattr(sources, "drawn_ranges", lambda stored: {})  # as fixed-condition folders: a point per frame
    each = sources.folder_points(path, cfg)
    assert len(each) == 12 and all(q.available == 1 for q in each)
    many = _rows(each, cfg)
    for name in ("ls-linear", "lmmse-genie"):
        (r,) = [r for r in one if r.estimator == name]
        per = [q for q in many if q.estimator == name]
        mean_mse = sum(10 ** (q.mse_db / 10) * q.frames for q in per) / 12
        # float32 estimates summed in another order (one batch of 12 against 12 of one): 1e-6, not bits
        assert 10 ** (r.mse_db / 10) == pytest.approx(mean_mse, rel=1e-6)
        mean_bound = sum(10 ** (q.bound_db / 10) * q.frames for q in per) / 12
        assert 10 ** (r.bound_db / 10) == pytest.approx(mean_bound, rel=1e-9)
        assert r.frames == 12 and math.isfinite(r.mse_se_db) and r.mse_se_db > 0


def test_a_folder_of_fixed_conditions_keeps_one_point_per_condition(tmp_path):
    cfg = SystemConfig.from_dict({"ofdm": PRIOR["ofdm"], "channel": {"snr_db": 10.0}})
    generate_dataset(DatasetSpec(cfg, 3, 6, 6, 3), tmp_path / "fixed")
    (p,) = sources.folder_points(tmp_path / "fixed", cfg)
    assert p.available == 6 and p.snr_db == 10.0 and p.config.channel.snr_db == 10.0


def test_the_condition_prior_widens_to_a_prior_folders_snr_range_not_to_its_mean(tmp_path):
    from wavefront.sim.experiment import prior_config

    wide = {"ofdm": PRIOR["ofdm"], "channel": {**PRIOR["channel"], "snr_db": [-10.0, 25.0]}}
    cfg = SystemConfig.from_dict(wide)
    generate_dataset(DatasetSpec(cfg, 3, 8, 8, 4), tmp_path / "wide")
    (p,) = sources.folder_points(tmp_path / "wide", cfg)
    assert p.snr_db > 0  # the frames' mean lies inside the paper's 0-25 dB ...
    assert prior_config(cfg, [p]).channel.snr_db == (-10.0, 25.0)  # ... the frames reach down to -10 dB
