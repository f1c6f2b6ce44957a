"""What a sweep holds at each point besides its axis: the --config's own values, and ranges drawn per frame.

A --config that set ``doppler_hz: 200`` used to be swept at the CLI's 1000 Hz without a word; a config
over a prior (``doppler_hz: [50, 1000]``) now gives, at each swept SNR, the Bayes risk over that prior.
"""
import json

import pytest
import torch

from wavefront.cli import main
from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import classical_estimators
from wavefront.sim.experiment import run_experiment, simulated_points

SMALL = "ofdm:\n  num_subcarriers: 24\n  pilot_subcarrier_spacing: 4\n"


def _sweep(tmp_path, yaml_text, *flags):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(cfg), "--estimators", "ls-linear,lmmse-genie", "--snr-db", "10",
                 "--frames", "8", "--out", str(out), "--no-progress", "--device", "cpu", *flags]) == 0
    return json.loads((out / "results.json").read_text())["rows"]


def _held(tmp_path, yaml_text, *flags):
    """Returns (Doppler, delay spread in ns) that `sweep` holds for ``yaml_text`` and ``flags`` (parsed, not run)."""
    from wavefront.cli import build_parser
    from wavefront.sim.cli import build_spec

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    ch = build_spec(build_parser().parse_args(["sweep", "--config", str(cfg), "--out", str(tmp_path), *flags])).config.channel
    return ch.doppler_hz, round(ch.delay_spread_s * 1e9, 6)


def test_a_configs_own_doppler_and_delay_spread_are_swept_and_a_flag_overrides_them(tmp_path, capsys):
    text = SMALL + "channel:\n  doppler_hz: 200\n  delay_spread_s: 100.0e-9\n"
    assert _held(tmp_path, text) == (200.0, 100.0)
    assert _held(tmp_path, text, "--doppler-hz", "300") == (300.0, 100.0)
    assert _held(tmp_path, text, "--delay-spread-ns", "50") == (200.0, 50.0)
    assert _held(tmp_path, SMALL) == (1000.0, 300.0)  # a config that leaves them out: the sweep's own defaults
    # sweeping Doppler, a config's SNR range is held (drawn per frame) rather than refused as a second axis
    from wavefront.cli import build_parser
    from wavefront.sim.cli import build_spec

    (tmp_path / "p.yaml").write_text(SMALL + "channel:\n  snr_db: [0, 25]\n")
    spec = build_spec(build_parser().parse_args(["sweep", "--config", str(tmp_path / "p.yaml"), "--doppler-hz",
                                                 "100,500", "--out", str(tmp_path)]))
    assert spec.axis == "doppler_hz" and spec.config.channel.snr_db == (0.0, 25.0)
    assert spec.conditions_list()[0]["snr_db"] == (0.0, 25.0)
    (r, _) = _sweep(tmp_path, text)
    assert (r["doppler_hz"], r["delay_spread_ns"]) == (200.0, 100.0)
    assert "held at each point: Doppler 200 Hz, delay spread 100 ns" in capsys.readouterr().out


PRIOR = {"ofdm": {"num_subcarriers": 24, "pilot_subcarrier_spacing": 4},
         "channel": {"delay_spread_s": [25e-9, 300e-9], "doppler_hz": [50.0, 1000.0]}}


def test_a_range_the_sweep_holds_is_drawn_per_frame_and_the_genie_meets_the_mean_bound(tmp_path, capsys):
    cfg = SystemConfig.from_dict(PRIOR)
    cond = {"snr_db": 10.0, "delay_spread_s": (25e-9, 300e-9), "doppler_hz": (50.0, 1000.0)}
    (p,) = simulated_points(cfg, [cond], 400, 200, seed=5, with_data=False)
    fr = torch.cat([b.doppler_hz for b in p.batches()]), torch.cat([b.delay_spread_s for b in p.batches()])
    for v, (lo, hi) in zip(fr, ((50.0, 1000.0), (25e-9, 300e-9))):
        assert v.unique().numel() > 300 and lo <= float(v.min()) and float(v.max()) <= hi * (1 + 1e-6)
        assert float(v.double().mean()) == pytest.approx((lo + hi) / 2, rel=0.1)  # uniform: the midpoint, 400 draws
    assert (p.doppler_hz, p.delay_spread_s) == (525.0, pytest.approx(162.5e-9))  # the row's label: the midpoint
    (genie,) = run_experiment([p], classical_estimators(["lmmse-genie"], cfg), frames=400, conditions="true",
                              progress=False)
    # the genie is the MMSE of each frame: over the frames its MSE is the mean of their bounds, to Monte-Carlo noise
    assert abs(genie.mse_db - genie.bound_db) < 4 * genie.mse_se_db + 0.05
    (mid,) = simulated_points(cfg, [{"snr_db": 10.0, "delay_spread_s": 162.5e-9, "doppler_hz": 525.0}], 400, 200,
                              seed=5, with_data=False)
    assert not torch.equal(next(mid.batches()).h, next(p.batches()).h)  # a range is not its midpoint's point
    # nor another range about the same midpoint: its draws are independent, not the same uniforms rescaled
    (other,) = simulated_points(cfg, [{**cond, "doppler_hz": (100.0, 950.0)}], 400, 200, seed=5, with_data=False)
    a, b = fr[0].double(), torch.cat([q.doppler_hz for q in other.batches()]).double()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.3  # 400 independent pairs: |r| ~ 0.05

    (r, _) = _sweep(tmp_path, SMALL + "channel:\n  doppler_hz: [50, 1000]\n  delay_spread_s: [25.0e-9, 300.0e-9]\n")
    assert (r["doppler_hz"], r["delay_spread_ns"]) == (525.0, 162.5)
    out = capsys.readouterr().out
    assert "Doppler 50-1000 Hz (drawn per frame), delay spread 25-300 ns (drawn per frame)" in out
    assert "Bayes risk" in out


def test_the_default_sweep_on_a_system_the_shipped_model_does_not_fit_drops_it_with_a_warning(tmp_path, capsys):
    """--preset adafortitran-paper (40 x 2 pilots) or any other grid used to stop on the shipped model's refusal."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(SMALL)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="the shipped gated-lmmse does not fit this system .*sweeping the classical"):
        assert main(["sweep", "--config", str(cfg), "--snr-db", "10", "--frames", "8", "--out", str(out),
                     "--no-progress", "--device", "cpu"]) == 0
    names = [r["estimator"] for r in json.loads((out / "results.json").read_text())["rows"]]
    assert names == ["ls-linear", "lmmse-robust", "lmmse-estimated", "mmse-bayes", "lmmse-genie"]


def test_a_plot_title_naming_ranges_fits_its_figure(tmp_path, sweep_titles):
    """Two ranges drawn per frame made the one-line SISO title wider than the figure ('... 64 frames/po')."""
    spans, titles = sweep_titles
    cfg = tmp_path / "c.yaml"
    cfg.write_text(SMALL + "channel:\n  snr_db: [0, 25]\n  delay_spread_s: [25.0e-9, 300.0e-9]\n")
    assert main(["sweep", "--config", str(cfg), "--estimators", "ls-linear", "--doppler-hz", "100,500", "--frames", "8",
                 "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"]) == 0
    assert len(spans) == 2 and all(0 <= x0 and x1 <= width for x0, x1, width in spans), spans
    # and the title says which conditions each frame draws: "SNR 0-25 dB per frame, delay spread 25-300 ns per frame"
    assert all("SNR 0-25 dB per frame, delay spread 25-300 ns per frame" in t for t in titles), titles


def test_partials_of_sweeps_over_different_ranges_are_refused_naming_the_value():
    """merge-results named only spec.config and printed both whole configs (1,500 characters) for one range's end."""
    from wavefront.errors import ConfigError
    from wavefront.sim.sweep import merge_sweep_partials

    config, other = (json.loads(SystemConfig.from_dict(PRIOR).to_json()) for _ in range(2))
    other["channel"]["doppler_hz"][1] = 500.0
    partials = [{"command": "sweep", "rank": r, "spec": {"axis": "snr_db", "config": c}}
                for r, c in enumerate((config, other))]
    with pytest.raises(ConfigError) as exc:
        merge_sweep_partials(partials)
    text = str(exc.value)
    assert text.startswith("spec.config.channel.doppler_hz[1]=500.0: differs between partial files (rank 1: 500.0, "
                           "rank 0: 1000.0)") and len(text) < 200, text


def test_a_range_point_is_inside_the_prior_only_when_its_whole_range_is():
    """Its midpoint is not enough: 500-1500 Hz has its midpoint (1000 Hz) inside 50-1000 Hz, half its frames outside."""
    from wavefront.sim.experiment import merge_partials, mark_in_prior, run_partial

    cfg = SystemConfig.from_dict(PRIOR)
    conds = [{"snr_db": 10.0, "delay_spread_s": (25e-9, 300e-9), "doppler_hz": d} for d in ((50.0, 1000.0),
                                                                                              (500.0, 1500.0))]
    pts = simulated_points(cfg, conds, 4, 4, seed=5, with_data=False)
    est = classical_estimators(["ls-linear"], cfg)
    rows = mark_in_prior(run_experiment(pts, est, frames=4, conditions="true", progress=False))
    assert [r.doppler_hz for r in rows] == [525.0, 1000.0]  # both midpoints inside 50-1000 Hz ...
    assert [r.in_prior for r in rows] == [True, False]  # ... the second range is not
    assert rows[1].record()["drawn"] == {"delay_spread_s": [25e-9, 300e-9], "doppler_hz": [500.0, 1500.0]}
    merged = merge_partials([{**run_partial(pts, est, frames=4, conditions="true", progress=False), "prior_ranges": {}}])
    assert [r.in_prior for r in merged] == [True, False]  # array jobs merged mark as one process does
    fixed = simulated_points(cfg, [{"snr_db": 10.0, "delay_spread_s": 1e-7, "doppler_hz": 500.0}], 4, 4, seed=5,
                             with_data=False)
    (r,) = run_experiment(fixed, est, frames=4, conditions="true", progress=False)
    assert "drawn" not in r.record()  # a fixed point's record is as it was
