"""The engine's arithmetic: each Row's numbers against an independent computation from the same frames or counts."""
import math

import pytest
import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import Estimator, get_classical
from wavefront.sim.experiment import PARTIAL_FORMAT, merge_partials, prior_config, run_experiment, simulated_points

COND = {"snr_db": 15.0, "delay_spread_s": 200e-9, "doppler_hz": 300.0}


class Zero(Estimator):
    """Estimates H = 0: its error is |H|^2 per resource element, so its NMSE is exactly 0 dB."""

    def __init__(self, name="zero"):
        self.name, self.needs = name, "none"

    def estimate(self, pilots, meta):
        cfg = SystemConfig.from_dict({})
        return torch.zeros(pilots.shape[0], *cfg.ofdm.grid_shape, dtype=torch.complex64)


def test_mse_its_standard_error_and_nmse_are_those_of_the_frames():
    # frames=24 in batches of 10 (10 + 10 + 4); two zero estimators so that a count mixed
    # between estimators shows. Independent: the same frames drawn again from the point.
    cfg = SystemConfig.from_dict({"channel": COND})
    (p,) = simulated_points(cfg, [COND], frames=24, batch_size=10, seed=5, with_data=False)
    rows = run_experiment([p], [Zero("z1"), Zero("z2")], frames=24, conditions="true", progress=False)
    h = torch.cat([fr.h for fr in p.batches()])
    assert h.shape[0] == 24
    e = h.abs().double().square()                      # |0 - H|^2 per RE
    per_frame = e.mean((1, 2))
    mean = float(e.mean())
    se_db = 10 / math.log(10) * float(per_frame.std(unbiased=True)) / math.sqrt(24) / mean  # the sample std (n - 1)
    for r in rows:
        assert r.frames == 24
        # the engine sums float32 errors: relative 1e-6 at most over 24 frames is 4e-6 dB
        assert r.mse_db == pytest.approx(10 * math.log10(mean), abs=1e-5)
        assert r.nmse_db == pytest.approx(0.0, abs=1e-5)
        # delta method on the per-frame MSEs; ~0.3 dB here, so 1e-6 dB is far below any dropped term
        assert r.mse_se_db == pytest.approx(se_db, rel=1e-4) and r.mse_se_db > 0.05


def test_one_frame_has_no_standard_error_and_two_have_the_sample_one():
    # one frame: no spread to measure, so no SE (0 read as an exact MSE, and a plot drew no interval around it)
    cfg = SystemConfig.from_dict({"channel": COND})
    for frames in (1, 2):
        (p,) = simulated_points(cfg, [COND], frames=frames, batch_size=2, seed=5, with_data=False)
        (r,) = run_experiment([p], [Zero("z")], frames=frames, conditions="true", progress=False)
        per_frame = torch.cat([fr.h for fr in p.batches()]).abs().double().square().mean((1, 2))
        if frames == 1:
            assert math.isnan(r.mse_se_db)
        else:  # |a - b| / 2 is the two frames' sample std over sqrt(2), relative to their mean
            want = 10 / math.log(10) * float((per_frame[0] - per_frame[1]).abs() / 2 / per_frame.mean())
            assert r.mse_se_db == pytest.approx(want, rel=1e-4) and r.mse_se_db > 0


def test_genie_lmmse_meets_its_bound_under_the_pilot_grid_snr_convention():
    # The bound is the genie's closed-form MSE: the genie's measured MSE must sit on it within
    # its Monte-Carlo error (measured: gap -0.06 dB, SE 0.42 dB). Under "pilot-grid" the per-RE SNR
    # is the configured SNR + 10 log10(FT/P) = +18.5 dB; a slow, short channel at -10 dB keeps the
    # genie noise-limited, so the bound at the offset's wrong sign (26.9 dB) sits 31 dB lower.
    c = {"snr_db": -10.0, "delay_spread_s": 50e-9, "doppler_hz": 50.0}
    cfg = SystemConfig.from_dict({"channel": {**c, "snr_convention": "pilot-grid"}})
    assert cfg.snr_offset_db > 10
    (p,) = simulated_points(cfg, [c], frames=32, batch_size=32, seed=2, with_data=False)
    (r,) = run_experiment([p], [get_classical("lmmse-genie", cfg)], frames=32, conditions="true", progress=False)
    assert abs(r.gap_db) < 4 * r.mse_se_db + 0.1


def _partial(rank, world, batches, users=1, min_bit_errors=None, want=None):
    meta = {"sweep": "snr", "axis": "snr_db", "axis_value": 10.0, "snr_db": 10.0, "delay_spread_ns": 200.0,
            "doppler_hz": 500.0, "pilots": "p", "realization": "r", **({"users": users} if users > 1 else {})}
    return {"format": PARTIAL_FORMAT, "rank": rank, "world": world, "min_bit_errors": min_bit_errors,
            "estimators": [{"estimator": n, "given": "pilots only", "trained_on": None} for n in ("a", "b")],
            "points": [{"meta": meta, "want": want or 100, "batches": batches}]}


def _batch(i, frames, se, se2, sh, res, err, bits, cerr=0, cbits=0, blk=0, bound=1.0):
    """One batch's counts for two estimators: estimator b has twice a's squared error and errors."""
    floats = [bound, se, se2, sh, 2 * se, 4 * se2, sh]
    ints = [frames, res, err, bits, cerr, cbits, blk, res, 2 * err, bits, 2 * cerr, cbits, 2 * blk]
    return [i, floats, ints]


def test_merged_rows_from_hand_made_counts():
    # 3 batches of 4 frames, 2 users, 100 REs a frame; counts chosen by hand, rows computed by hand.
    b = [_batch(0, 4, 2.0, 1.1, 40.0, 400, 3, 1000, 5, 500, 1, bound=0.4),
         _batch(1, 4, 1.0, 0.3, 40.0, 400, 1, 1000, 0, 500, 0, bound=0.4),
         _batch(2, 4, 3.0, 2.4, 40.0, 400, 2, 1000, 7, 500, 2, bound=0.4)]
    rows = merge_partials([_partial(0, 2, [b[0], b[2]], users=2, want=12), _partial(1, 2, [b[1]], users=2, want=12)])
    a, bb = rows
    assert a.frames == bb.frames == 12
    assert a.bound_db == pytest.approx(10 * math.log10(1.2 / 12))
    mean = 6.0 / 1200                                   # sum se / sum REs
    assert a.mse_db == pytest.approx(10 * math.log10(mean))
    assert bb.mse_db == pytest.approx(10 * math.log10(2 * mean))
    assert a.nmse_db == pytest.approx(10 * math.log10(6.0 / 120.0))
    assert a.gap_db == pytest.approx(a.mse_db - a.bound_db)
    # per-frame MSE spread: the sample variance (sum m^2 - n mean^2) / (n - 1), SE of the mean = sqrt(var / frames)
    var = (3.8 - 12 * mean ** 2) / 11
    assert a.mse_se_db == pytest.approx(10 / math.log(10) * math.sqrt(var / 12) / mean)
    assert (a.bit_errors, a.bits, a.ber) == (6, 3000, pytest.approx(6 / 3000))
    assert a.coded_ber == pytest.approx(12 / 1500) and bb.coded_ber == pytest.approx(24 / 1500)
    assert a.bler == pytest.approx(3 / (12 * 2))        # one codeword per user and frame
    assert bb.bler == pytest.approx(6 / 24)


def test_merge_stops_when_every_estimator_has_min_bit_errors_not_the_first():
    # a has 3, 4, 5, 6 bit errors in batches 0..3, b twice as many; min_bit_errors 6: b has
    # enough after batch 0, a only after batch 1 (3 + 4): the point stops at the slowest estimator.
    b = [_batch(i, 2, 1.0, 0.5, 10.0, 100, 3 + i, 500) for i in range(4)]
    parts = [_partial(0, 2, [b[0], b[2]], min_bit_errors=6), _partial(1, 2, [b[1], b[3]], min_bit_errors=6)]
    a, bb = merge_partials(parts)
    assert a.frames == 4 and (a.bit_errors, bb.bit_errors) == (7, 14)


def test_merge_refuses_a_point_with_a_missing_batch():
    b = [_batch(i, 2, 1.0, 0.5, 10.0, 100, 1, 500) for i in range(4)]
    with pytest.raises(ConfigError, match="batches"):
        merge_partials([_partial(0, 2, [b[0], b[2]]), _partial(1, 2, [b[3]])])


def test_the_prior_snr_range_widens_down_to_a_point_below_it():
    cfg = SystemConfig.from_dict({"channel": COND})
    assert prior_config(cfg, [{"snr_db": -5.0}, {"snr_db": 10.0}]).channel.snr_db == (-5.0, 25.0)


def test_merge_refuses_partials_with_different_prior_ranges():
    b = [_batch(i, 2, 1.0, 0.5, 10.0, 100, 1, 500) for i in range(2)]
    p0, p1 = _partial(0, 2, [b[0]]), _partial(1, 2, [b[1]])
    p0["prior_ranges"], p1["prior_ranges"] = {"snr_db": [0.0, 25.0]}, {"snr_db": [0.0, 30.0]}
    with pytest.raises(ConfigError, match="prior_ranges"):
        merge_partials([p0, p1])


def test_a_conditions_seed_names_every_field_and_ignores_float_noise():
    from wavefront.sim.experiment import condition_key

    k = condition_key(10.0, 200e-9, 500.0)
    assert k == condition_key(10.0 + 1e-9, 2.0000000000000002e-07, 500.0 + 1e-9)  # the same point, as read from a table
    others = [condition_key(11.0, 200e-9, 500.0), condition_key(10.0, 201e-9, 500.0), condition_key(10.0, 200e-9, 501.0)]
    assert len({k, *others}) == 4  # points that differ in any field draw different frames


def test_two_estimators_of_one_name_are_refused_before_any_frame():
    cfg = SystemConfig.from_dict({"channel": COND})
    (p,) = simulated_points(cfg, [COND], frames=2, batch_size=2, seed=5, with_data=False)
    with pytest.raises(ConfigError, match="estimators"):
        run_experiment([p], [Zero("z"), Zero("z")], frames=2, conditions="true", progress=False)


def test_a_resumed_array_job_recomputes_none_of_its_stored_batches(tmp_path, monkeypatch):
    import wavefront.sim.experiment as experiment
    from wavefront.sim.experiment import run_partial
    from wavefront.sim.progress import open_progress

    cfg = SystemConfig.from_dict({"channel": COND})
    (p,) = simulated_points(cfg, [COND], frames=8, batch_size=2, seed=5, with_data=False)
    store = open_progress(tmp_path / "p", {"test": 1})
    first = run_partial([p], [Zero()], frames=8, conditions="true", progress=False, rank=1, world=2, store=store)
    assert [b[0] for b in first["points"][0]["batches"]] == [1, 3]
    calls = []
    real = experiment._batch_counts
    monkeypatch.setattr(experiment, "_batch_counts", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = run_partial([p], [Zero()], frames=8, conditions="true", progress=False, rank=1, world=2, store=store)
    assert calls == [] and again["points"] == first["points"]


def test_a_rank_must_be_below_the_world_size():
    from wavefront.sim.experiment import run_partial

    cfg = SystemConfig.from_dict({"channel": COND})
    (p,) = simulated_points(cfg, [COND], frames=4, batch_size=2, seed=5, with_data=False)
    with pytest.raises(ConfigError, match="rank"):  # rank 2 of 2 would repeat rank 0's batches
        run_partial([p], [Zero()], frames=4, conditions="true", progress=False, rank=2, world=2)


def test_a_genie_that_states_what_it_knows_is_quoted():
    from wavefront.sim.experiment import given_text

    class Told(Zero):
        given = "true channel (perfect CSI)"

    est = Told()
    est.needs = "truth"
    assert given_text(est, "estimated") == "true channel (perfect CSI)"
    est.needs = "noise"
    assert given_text(est, "true") == "noise variance true; true channel (perfect CSI)"
