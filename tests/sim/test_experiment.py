"""The one experiment engine: sweep and evaluate share frames and numbers; what each estimator knew is stated."""
import math

import pytest

from wavefront.estimators.evaluate import evaluate
from wavefront.sim.config import SystemConfig
from wavefront.errors import ConfigError
from wavefront.sim.estimators import NEEDS, Estimator, get_classical
from wavefront.sim.experiment import prior_config
from wavefront.sim.sweep import SweepSpec, run_sweep


def test_sweep_and_evaluate_draw_the_same_frames_and_report_the_same_numbers():
    # A batch's seed depends on the condition, not on its place in a list: the paper's point
    # SNR 10 dB / 200 ns / 500 Hz is the third of evaluate's points and the only one of this sweep.
    cfg = SystemConfig.from_dict({"channel": {"snr_db": 10.0, "delay_spread_s": 200e-9, "doppler_hz": 500.0}})
    spec = SweepSpec(config=cfg, axis="snr_db", values=[10.0], estimators=["ls-linear", "lmmse-genie"], frames=64,
                     batch_size=32, seed=3, device="cpu", conditions="true")
    sweep = {r.estimator: r for r in run_sweep(spec, progress=False).rows}
    long_rows = []
    rows = evaluate(get_classical("ls-spline", cfg), cfg, frames_per_point=64, baselines=("ls-linear", "lmmse-genie"),
                    seed=3, chunk=32, conditions="true", long_rows=long_rows)
    point = next(r for r in rows if r["sweep"] == "snr" and r["snr_db"] == 10.0)
    for name in ("ls-linear", "lmmse-genie"):
        assert point[f"{name}_db"] == pytest.approx(sweep[name].mse_db, abs=1e-3)  # evaluate rounds to 1e-3
    assert point["mmse_bound_db"] == pytest.approx(sweep["ls-linear"].bound_db, abs=1e-3)
    given = {r["estimator"]: r["given"] for r in long_rows}
    assert given["ls-linear"] == "pilots only" and "genie" in given["lmmse-genie"]


def test_the_prior_is_the_operating_range_not_the_test_point():
    cfg = SystemConfig.from_dict({"channel": {"snr_db": 30.0, "delay_spread_s": 350e-9, "doppler_hz": 1400.0}})
    ch = prior_config(cfg, [{"snr_db": 30.0}]).channel
    # SNR widens to the points; delay spread and Doppler keep the paper's ranges
    assert ch.snr_db == (0.0, 30.0) and ch.doppler_hz == (50.0, 1000.0)
    assert ch.delay_spread_s == pytest.approx((25e-9, 300e-9))
    rob = get_classical("lmmse-robust", prior_config(cfg, [], {"doppler_hz": (0.0, 1400.0)}))
    assert rob.max_doppler_hz == 1400.0 and "1400 Hz" in rob.given


class Spy(Estimator):
    """LS-linear that records the ``meta`` the engine hands it."""

    def __init__(self, cfg, needs="conditions", name="spy"):
        self.name, self.needs, self.seen = name, needs, []
        self.ls = get_classical("ls-linear", cfg)

    def estimate(self, pilots, meta):
        self.seen.append({k: v.clone() for k, v in meta.items()})
        return self.ls.estimate(pilots, meta)


@pytest.mark.parametrize("mode", ["estimated", "true"])
def test_each_estimator_sees_only_what_its_needs_allow(mode):
    cfg = SystemConfig.from_dict({"channel": {"snr_db": 20.0, "delay_spread_s": 200e-9, "doppler_hz": 300.0}})
    spies = [Spy(cfg, needs, f"spy-{needs}") for needs in NEEDS]
    spec = SweepSpec(config=cfg, axis="snr_db", values=[20.0], estimators=["ls-linear"], frames=20, batch_size=20,
                     seed=1, device="cpu", conditions=mode)
    rows = run_sweep(spec, spies, progress=False).rows
    seen = {s.needs: s.seen[0] for s in spies}
    assert seen["none"] == {}  # a pilots-only estimator is told nothing, not even the truth
    assert set(seen["noise"]) == {"snr_db", "noise_var"}
    assert {"snr_db", "delay_spread_s", "doppler_hz"} <= set(seen["conditions"])
    assert bool((seen["truth"]["doppler_hz"] == 300.0).all())  # the genie's side is always the truth
    told = seen["conditions"]["doppler_hz"]
    assert bool((told == 300.0).all()) == (mode == "true")
    assert [r.given for r in rows][0] == "pilots only"


def test_an_estimator_without_a_valid_needs_is_refused_before_any_frame():
    cfg = SystemConfig.from_dict({"channel": {"snr_db": 20.0}})
    spec = SweepSpec(config=cfg, axis="snr_db", values=[20.0], estimators=["ls-linear"], frames=20, batch_size=20,
                     seed=1, device="cpu")
    with pytest.raises(ConfigError, match="spy.needs"):
        run_sweep(spec, [Spy(cfg, needs="everything")], progress=False)

    class Duck:  # the estimate interface without the base class: the engine does not guess
        name, needs = "duck", "none"

        def estimate(self, pilots, meta):
            return pilots

    with pytest.raises(ConfigError, match="duck"):
        run_sweep(spec, [Duck()], progress=False)


def test_estimated_conditions_reach_condition_aware_estimators_and_rows_say_so():

    cfg = SystemConfig.from_dict({"channel": {"snr_db": 20.0, "delay_spread_s": 200e-9, "doppler_hz": 300.0}})
    for mode in ("estimated", "true"):
        spy = Spy(cfg)
        spec = SweepSpec(config=cfg, axis="snr_db", values=[20.0], estimators=["ls-linear"], frames=40, batch_size=40,
                         seed=1, device="cpu", conditions=mode)
        (row,) = run_sweep(spec, [spy], progress=False).rows
        dop = spy.seen[0]["doppler_hz"]
        if mode == "true":
            assert bool((dop == 300.0).all()) and row.given == "SNR, delay spread and Doppler true"
        else:  # per-frame estimates on the 50 Hz grid of the prior: they vary, and they are not the truth
            assert dop.unique().numel() > 1 and bool(((dop % 50) == 0).all())
            assert row.given == "SNR, delay spread and Doppler estimated from the pilots"


class Poisoned(Estimator):
    """LS with one entry of every frame's estimate replaced by ``value`` (NaN or inf): a diverged model."""

    needs = "none"

    def __init__(self, cfg, value):
        self.ls, self.value, self.name = get_classical("ls-linear", cfg), value, f"poisoned-{value}"

    def estimate(self, pilots, meta):
        h = self.ls.estimate(pilots, meta).clone()
        h[:, 0, 0] = self.value
        return h


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_an_estimator_returning_non_finite_values_gets_a_nan_row_and_a_warning_not_a_perfect_score(value):
    """NaN estimates gave mse_db = -inf with SE 0, the best row of the table; a row of NaN is what it earned."""
    cfg = SystemConfig.from_dict({"channel": {"snr_db": 20.0, "delay_spread_s": 200e-9, "doppler_hz": 300.0}})
    spec = SweepSpec(config=cfg, axis="snr_db", values=[20.0], estimators=["ls-linear"], frames=8, batch_size=8,
                     seed=1, device="cpu")
    with pytest.warns(RuntimeWarning, match=rf"poisoned-{value} returned non-finite channel estimates at SNR 20 dB"):
        ests = [get_classical("ls-linear", cfg), Poisoned(cfg, value)]
        rows = {r.estimator: r for r in run_sweep(spec, ests, progress=False).rows}
    bad, ls = rows[f"poisoned-{value}"], rows["ls-linear"]
    assert math.isnan(bad.mse_db) and math.isnan(bad.mse_se_db) and math.isnan(bad.nmse_db)
    assert math.isfinite(ls.mse_db) and ls.mse_db < 0  # the other rows of the point are untouched
