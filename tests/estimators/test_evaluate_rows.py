"""evaluate's numbers and rows: the paper's 21 test points, the true-conditions twin row, and the bad-input guard."""
import pytest
import torch

from wavefront import paper
from wavefront.errors import ConfigError
from wavefront.estimators.evaluate import evaluate
from wavefront.sim.config import preset
from wavefront.sim.estimators import Estimator, get_classical


class Spy(Estimator):
    """LS-linear that reads the conditions and records every ``meta`` it is handed."""

    def __init__(self, cfg):
        self.name, self.needs, self.seen = "spy", "conditions", []
        self.ls = get_classical("ls-linear", cfg)

    def estimate(self, pilots, meta):
        self.seen.append({k: v.clone() for k, v in meta.items()})
        return self.ls.estimate(pilots, meta)


def test_the_paper_points_are_the_three_sweeps_of_the_paper():
    pts = paper.points()
    by = lambda sweep: [p for p in pts if p["sweep"] == sweep]  # noqa: E731
    assert len(pts) == 21
    assert [p["snr_db"] for p in by("snr")] == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
    assert all(p["delay_spread_s"] == 200e-9 and p["doppler_hz"] == 500.0 for p in by("snr"))
    assert [p["delay_spread_s"] for p in by("delay_spread")] == pytest.approx([k * 50e-9 for k in range(1, 8)], rel=1e-12)
    assert all(p["snr_db"] == 10.0 and p["doppler_hz"] == 600.0 for p in by("delay_spread"))
    assert [p["doppler_hz"] for p in by("doppler")] == [200.0, 400.0, 600.0, 800.0, 1000.0, 1200.0, 1400.0]
    assert all(p["snr_db"] == 10.0 and p["delay_spread_s"] == 100e-9 for p in by("doppler"))
    # the training prior: SNR 0-25 dB, 25-300 ns, 50-1000 Hz
    assert paper.TRAIN_RANGES["snr_db"] == (0.0, 25.0) and paper.TRAIN_RANGES["doppler_hz"] == (50.0, 1000.0)
    assert paper.TRAIN_RANGES["delay_spread_s"] == pytest.approx((25e-9, 300e-9), rel=1e-12)


def test_zero_frames_per_point_is_refused_naming_the_field():
    cfg = preset("default")
    with pytest.raises(ConfigError, match="frames_per_point"):
        evaluate(get_classical("ls-linear", cfg), cfg, frames_per_point=0, baselines=())


def test_the_true_conditions_row_is_told_the_truth_and_only_when_the_model_estimates():
    cfg = preset("default")
    spy = Spy(cfg)
    long_rows = []
    rows = evaluate(spy, cfg, frames_per_point=3, chunk=3, baselines=(), seed=2, conditions="estimated",
                    long_rows=long_rows)
    assert len(rows) == 21 and all({"spy_db", "spy (true cond.)_db"} <= set(r) for r in rows)
    # the table's condition columns in its units (dB, ns, Hz), one row per paper point in order
    assert [(r["sweep"], r["snr_db"], r["delay_spread_ns"], r["doppler_hz"]) for r in rows] == [
        (p["sweep"], p["snr_db"], pytest.approx(p["delay_spread_s"] * 1e9, abs=1e-3), p["doppler_hz"])
        for p in paper.points()]
    assert all(r["frames"] == 3 and r["realization"] == "independent" for r in rows)
    # every point: one batch of the model on estimated conditions and one of its twin on the exact truth
    assert len(spy.seen) == 2 * 21
    truth = [m for m in spy.seen if any(all(bool((m[k] == float(p[k])).all()) for k in ("snr_db", "doppler_hz"))
                                        and bool(((m["delay_spread_s"] - p["delay_spread_s"]).abs() < 1e-12).all())
                                        for p in paper.points())]
    assert len(truth) >= 21
    given = {r["estimator"]: r["given"] for r in long_rows}
    assert given["spy (true cond.)"] == "SNR, delay spread and Doppler true"
    assert given["spy"] == "SNR, delay spread and Doppler estimated from the pilots"
    # the model already told the truth gets no twin: one row per point, the model's alone
    spy = Spy(cfg)
    rows = evaluate(spy, cfg, frames_per_point=3, chunk=3, baselines=(), seed=2, conditions="true")
    assert len(spy.seen) == 21 and not any("spy (true cond.)_db" in r for r in rows)


def test_partials_of_two_evaluations_are_refused_and_those_of_one_merge():
    from wavefront.estimators.evaluate import evaluate_partial, merge_evaluation_partials

    cfg = preset("default")
    model = get_classical("ls-nearest", cfg)
    kw = dict(frames_per_point=2, chunk=1, baselines=(), world=2)
    parts = [evaluate_partial(model, cfg, rank=r, **kw) for r in (0, 1)]
    for p in parts:
        p["output"] = {"checkpoint": "a.safetensors", "conditions": "estimated"}
    merged = merge_evaluation_partials(parts)
    assert len(merged) == 21 and all(r.frames == 2 for r in merged)
    parts[1]["output"] = {"checkpoint": "b.safetensors", "conditions": "estimated"}
    with pytest.raises(ConfigError, match="checkpoint.*differs between partial files"):
        merge_evaluation_partials(parts)


def test_the_true_conditions_twin_of_a_mimo_model_runs_on_the_mimo_points():
    import warnings

    from wavefront.sim.config import SystemConfig

    class MimoSpy(Estimator):
        mimo = True  # a per-(antenna, user) model: its twin must stay one, or the engine refuses it on MIMO points

        def __init__(self):
            self.name, self.needs, self.calls = "spy", "conditions", 0

        def estimate(self, pilots, meta):
            self.calls += 1
            return torch.zeros(*pilots.shape[:3], 12, 4, dtype=torch.complex64)

    cfg = SystemConfig().updated(
        ofdm={"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2, "pilot_symbols": [0, 3]},
        mimo={"num_rx_antennas": 2, "num_users": 2, "rx_correlation": 0.5})
    spy = MimoSpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unmodelled ICI at the paper's high Dopplers on this grid
        rows = evaluate(spy, cfg, frames_per_point=1, chunk=1, baselines=(), seed=1)
    assert len(rows) == 21 and all("spy (true cond.)_db" in r for r in rows) and spy.calls == 2 * 21
    # a zero estimate's MSE is the channel's mean power: the same for the model and its twin on the same frames
    assert all(r["spy_db"] == r["spy (true cond.)_db"] for r in rows)


def test_the_models_line_carries_its_95_percent_student_interval_and_the_table_its_se(tmp_path, monkeypatch):
    # 8 frames a point: a model 0.7 dB below the bound at one point is noise, and the plot and table must say how much
    import wavefront.estimators.evaluate as ev
    from wavefront.estimators.evaluate import format_table, plot_rows
    from wavefront.utils import finish_figure

    rows = [{"sweep": "snr", "axis": "snr_db", "snr_db": s, "delay_spread_ns": 200.0, "doppler_hz": 500.0, "frames": 8,
             "realization": "independent", "in_prior": s == 0.0, "m_db": -10.0 - s / 10, "ls-linear_db": -8.0 - s / 10,
             "mmse_bound_db": -10.2 - s / 10, "gap_to_bound_db": 0.2, "gap_se_db": 0.1 + s / 100} for s in (0.0, 10.0)]
    seen = {}

    def kept(fig, path, dpi=120):
        ax = fig.axes[0]
        seen["bars"] = {c.get_label(): [v for seg in c.lines[2][0].get_segments() for v in (seg[0][1], seg[1][1])]
                        for c in ax.containers}
        seen["ylabel"] = ax.get_ylabel()
        white = [ln for ln in ax.get_lines() if ln.get_markerfacecolor() == "white"]
        top = max(ln.get_zorder() for ln in ax.get_lines() if ln not in white)
        seen["white"] = [(list(ln.get_ydata()), ln.get_zorder() > top) for ln in white]
        return finish_figure(fig, path, dpi)

    monkeypatch.setattr(ev, "finish_figure", kept)
    plot_rows(rows, tmp_path, "m")
    t = 2.3646  # Student's t_{0.975} at 8 - 1 degrees of freedom
    assert list(seen["bars"]) == ["_m_db interval"]  # the model's line alone: the classical rows and bound carry none
    assert seen["bars"]["_m_db interval"] == pytest.approx([r["m_db"] + sign * t * r["gap_se_db"] for r in rows for sign in (-1, 1)],
                                              rel=1e-4)
    assert "95%" in seen["ylabel"]
    assert seen["white"] == [([rows[1]["m_db"]], True)]  # the point outside the prior: white, over every line
    assert format_table(rows).splitlines()[0].split()[-2:] == ["gap_to_bound_db", "gap_se_db"]
