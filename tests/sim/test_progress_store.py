"""The progress store and the sweep's fingerprint: a stored batch is reused only by the run that drew it."""
import json

import pytest

import wavefront.utils as utils
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.progress import first_difference, open_progress
from wavefront.sim.sweep import SweepSpec, _setup, check_sweep_memory, merge_sweep_partials, sweep_fingerprint
from wavefront.sim.experiment import PARTIAL_FORMAT


def test_a_key_only_the_new_run_has_is_a_difference():
    # e.g. a run with --error-variance calibrated adds a spec key a stated run's progress lacks
    assert first_difference({"a": 1}, {"a": 1, "b": 2}) == ("b", None, 2)
    assert first_difference({"a": 1, "b": 2}, {"a": 1}) == ("b", 2, None)
    assert first_difference({"a": [1, {"c": 3}]}, {"a": [1, {"c": 3}]}) is None


def test_open_progress_refuses_a_run_with_an_extra_field(tmp_path):
    open_progress(tmp_path / "p", {"spec": {"seed": 1}})
    with pytest.raises(ConfigError, match=r"progress\.spec\.error_variance"):
        open_progress(tmp_path / "p", {"spec": {"seed": 1, "error_variance": "calibrated"}})


def test_a_damaged_batch_record_is_skipped_and_recomputed_not_a_traceback(tmp_path):
    store = open_progress(tmp_path / "p", {"spec": 1})
    store.put(0, 0, [1.5, 2.0], [3, 4])
    store.put(0, 1, [0.25], [7])
    (tmp_path / "p" / "point-0000" / "batch-000001.json").write_text('{"index": 1, "floats": [0.2')  # cut short
    (tmp_path / "p" / "point-0000" / "batch-000002.json").write_text('{"index": 2}')  # no counts
    (tmp_path / "p" / "point-0000" / "batch-000003.json").write_text('{"index": 3, "floats": [1], "ints": ["x"]}')
    assert store.batches(0) == {0: ([1.5, 2.0], [3, 4])}


def test_overwrite_empties_a_folder_that_holds_no_fingerprint(tmp_path):
    stray = tmp_path / "p" / "point-0000"
    stray.mkdir(parents=True)
    (stray / "batch-000000.json").write_text(json.dumps({"index": 0, "floats": [1.0], "ints": [1]}))
    store = open_progress(tmp_path / "p", {"spec": 1}, overwrite=True)
    assert store.num_batches() == 0 and store.batches(0) == {}


def _spec(**kw):
    cfg = SystemConfig.from_dict({"channel": {"snr_db": 10.0, "delay_spread_s": 100e-9, "doppler_hz": 100.0}})
    base = dict(config=cfg, axis="snr_db", values=[10.0], estimators=["ls-linear"], frames=8, batch_size=8,
                device="cpu")
    return SweepSpec(**{**base, **kw})


@pytest.mark.parametrize("change,key", [({"equalizer": "mmse"}, "spec.equalizer"),
                                        ({"min_bit_errors": 5}, "spec.min_bit_errors"),
                                        ({"batch_size": 4}, "spec.batch_size"),
                                        ({"conditions": "true"}, "spec.conditions"),
                                        ({"prior_ranges": {"doppler_hz": (0.0, 500.0)}}, "spec.prior.doppler_hz")])
def test_every_field_that_changes_a_batch_changes_the_fingerprint(change, key):
    # a mmse-equalised run must not resume from zf batches: their bit errors differ
    a = sweep_fingerprint(_setup(_spec(), None)[3])
    b = sweep_fingerprint(_setup(_spec(**change), None)[3])
    assert first_difference(a, b)[0].startswith(key)


def test_min_bit_errors_zero_is_refused_not_read_as_no_threshold():
    with pytest.raises(ConfigError, match="min_bit_errors"):
        _spec(min_bit_errors=0)


def test_the_memory_check_counts_the_frames_a_batch_can_hold_not_the_batch_size(monkeypatch):
    # 8 frames at most are ever drawn, however large --batch-size: 1 GB free is plenty for them
    monkeypatch.setattr(utils, "available_memory_bytes", lambda device="cpu": 10 ** 9)
    check_sweep_memory(_spec(batch_size=10 ** 6), "cpu")
    with pytest.raises(ConfigError, match="batch_size"):
        check_sweep_memory(_spec(frames=10 ** 6, batch_size=10 ** 6), "cpu")


def test_merged_sweep_seconds_are_the_jobs_summed_compute_time():
    def part(rank, seconds):
        return {"format": PARTIAL_FORMAT, "command": "sweep", "spec": {"axis": "snr_db"}, "rank": rank, "world": 2,
                "min_bit_errors": None, "estimators": [], "points": [], "seconds": seconds}

    assert merge_sweep_partials([part(0, 1.5), part(1, 2.25)]).seconds == pytest.approx(3.75)


@pytest.mark.parametrize("mimo", [{"num_rx_antennas": 2, "num_users": 2}, {"num_users": 3}])
def test_a_batchs_memory_estimate_grows_with_the_grids_its_channel_holds(mimo):
    # the estimate counts grid-sized tensors per frame; a MIMO frame's channel holds R x U grids,
    # so the estimate per byte of the generated channel tensor is the same as SISO's
    from wavefront.sim.mimo import frame_generator
    from wavefront.sim.sweep import batch_bytes

    def per_h_byte(cfg):
        h = frame_generator(cfg, "cpu").generate(1, seed=1, with_data=False).h
        return batch_bytes(cfg, 1) / (h.numel() * h.element_size())

    assert per_h_byte(SystemConfig.from_dict({"mimo": mimo})) == pytest.approx(per_h_byte(SystemConfig()))
