import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from wavefront.cli import main
from wavefront.datasets.generate import DatasetSpec, generate_dataset, parse_shard_range, shard_counts
from wavefront.datasets.shards import partial_name, read_attrs, read_shard, shard_name
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from kill_helpers import kill_generate_midway

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "adafortitran.yaml")


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.h5"))}


def test_frame_counts_that_do_not_divide_make_an_exact_last_shard():
    assert shard_counts(1_000_003, 10_000) == [10_000] * 100 + [3]
    assert shard_counts(7, 10) == [7]
    with pytest.raises(ConfigError):
        shard_counts(0, 10)
    with pytest.raises(ConfigError):
        parse_shard_range("5:2", 10)


def test_killed_generate_resumes_to_the_bytes_of_an_uninterrupted_run(tmp_path):
    # Byte equality of the whole HDF5 files: shards carry no timestamps (track_times=False)
    # and no run-dependent attribute. The manifest's content checksums are compared too.
    args = ["--config", CONFIG, "--frames", "1500", "--shard-frames", "250", "--batch-size", "125",
            "--seed", "7", "--device", "cpu", "--no-progress"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(["generate", *args, "--out", str(ref)]) == 0

    done = kill_generate_midway(["generate", *args], run, once_shard=2)  # two shards done, the third under way
    assert len(done) < 6, done  # really interrupted

    assert main(["generate", *args, "--out", str(run)]) == 0
    assert not list(run.glob("*.partial"))
    assert _bytes(run) == _bytes(ref) and len(_bytes(ref)) == 6
    man_ref, man_run = (json.loads((d / "manifest.json").read_text()) for d in (ref, run))
    assert man_run["complete"] and man_run["shards"] == man_ref["shards"]
    assert sum(s["frames"] for s in man_run["shards"]) == 1500


def test_stale_partials_are_removed_and_a_live_writers_partial_is_left_alone(tmp_path, small_config):
    spec = DatasetSpec(small_config, 3, 300, 100, 50)
    generate_dataset(spec, tmp_path / "ref")
    out = tmp_path / "run"
    out.mkdir()
    stale, live = out / partial_name(2), out / partial_name(1)
    stale.write_bytes(b"left by a killed run")
    live.write_bytes(b"being written")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a live writer holds on its .partial
    try:
        rep = generate_dataset(spec, out, indices=[0])  # a stale file of any shard goes, not only of ours
        assert rep.stale_removed == [stale.name] and not stale.exists()
        rep = generate_dataset(spec, out)
        assert rep.busy == [1] and rep.written == [2] and not rep.manifest["complete"]
        assert live.read_bytes() == b"being written"
    finally:
        os.close(fd)  # the writer dies: its .partial is stale now
    rep = generate_dataset(spec, out)
    assert rep.written == [1] and rep.manifest["complete"]
    assert _bytes(out) == _bytes(tmp_path / "ref") and not list(out.glob("*.partial"))


def test_folder_of_another_config_or_seed_is_refused(tmp_path, small_config):
    generate_dataset(DatasetSpec(small_config, 3, 100, 50, 50), tmp_path)
    with pytest.raises(ConfigError, match="different seed"):
        generate_dataset(DatasetSpec(small_config, 4, 100, 50, 50), tmp_path)
    other = SystemConfig.from_dict({"channel": {"snr_db": 5.0}})
    with pytest.raises(ConfigError, match="different config"):
        generate_dataset(DatasetSpec(other, 3, 100, 50, 50), tmp_path)
    # the message names the field that differs, with both values, however deep and wherever in the config
    ici = small_config.updated(channel={"ici": True})
    with pytest.raises(ConfigError, match=r"different config\.channel\.ici \(null there, true now\)"):
        generate_dataset(DatasetSpec(ici, 3, 100, 50, 50), tmp_path)
    snr = small_config.updated(channel={"snr_db": 5.0})
    with pytest.raises(ConfigError, match=r"different config\.channel\.snr_db \(\[0\.0, 25\.0\] there, 5\.0 now\)"):
        generate_dataset(DatasetSpec(snr, 3, 100, 50, 50), tmp_path)
    with pytest.raises(ConfigError, match="different frames"):
        generate_dataset(DatasetSpec(small_config, 3, 120, 50, 50), tmp_path)
    with pytest.raises(ConfigError, match="different compression"):  # one compression per folder
        generate_dataset(DatasetSpec(small_config, 3, 100, 50, 50, compression="gzip"), tmp_path)


@pytest.mark.parametrize("other", [dict(frames=200), dict(frames=400), dict(seed=4), dict(batch_size=25),
                                   dict(compression="gzip")])
def test_without_a_manifest_the_shards_identify_the_run(tmp_path, small_config, other, capsys):
    spec = dict(config=small_config, seed=3, frames=300, shard_frames=100, batch_size=50)
    generate_dataset(DatasetSpec(**spec), tmp_path)
    before = _bytes(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ConfigError, match="use a new --out folder"):  # even --repair must not overwrite them
        generate_dataset(DatasetSpec(**{**spec, **other}), tmp_path, repair=True)
    assert not (tmp_path / "manifest.json").exists() and _bytes(tmp_path) == before  # nothing written
    rep = generate_dataset(DatasetSpec(**spec), tmp_path)  # the original command still resumes
    assert rep.skipped == [0, 1, 2] and rep.manifest["complete"] and _bytes(tmp_path) == before


def test_a_shard_copied_over_another_is_named_and_repaired(tmp_path, small_config):
    spec = DatasetSpec(small_config, 5, 200, 100, 100)
    generate_dataset(spec, tmp_path)
    good = _bytes(tmp_path)
    (tmp_path / "manifest.json").unlink()  # no file checksum to compare: the attributes must tell
    (tmp_path / shard_name(1)).write_bytes(good[shard_name(0)])
    with pytest.raises(ConfigError, match=r"shard-00001\.h5.*shard_index"):
        generate_dataset(spec, tmp_path)
    assert generate_dataset(spec, tmp_path, repair=True).repaired == [1]
    assert _bytes(tmp_path) == good


def test_manifest_lists_a_shard_another_rank_renamed_while_this_rank_wrote_the_list(tmp_path, small_config,
                                                                                     monkeypatch):
    import wavefront.datasets.generate as gen

    spec = DatasetSpec(small_config, 3, 200, 100, 100)
    generate_dataset(spec, tmp_path / "rank1", indices=[1])
    out = tmp_path / "run"
    real = gen.write_json_atomic

    def racing(path, obj):
        real(path, obj)
        if obj["shards"] and not (out / shard_name(1)).exists():
            # Rank 1 renames its shard into place (and wrote its manifest) just before our write.
            shutil.copy(tmp_path / "rank1" / shard_name(1), out / shard_name(1))

    monkeypatch.setattr(gen, "write_json_atomic", racing)
    generate_dataset(spec, out, indices=[0])
    man = json.loads((out / "manifest.json").read_text())
    assert [s["index"] for s in man["shards"]] == [0, 1] and man["complete"]


def test_truncated_shard_is_named_and_repair_regenerates_it_from_its_seed(tmp_path, small_config):
    spec = DatasetSpec(small_config, 5, 200, 100, 100)
    generate_dataset(spec, tmp_path)
    good = _bytes(tmp_path)
    p = tmp_path / shard_name(1)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"shard-00001\.h5.*--repair"):
        generate_dataset(spec, tmp_path)
    # A flipped byte inside the data: the file's SHA-256 no longer matches the manifest's.
    q = tmp_path / shard_name(0)
    raw = bytearray(q.read_bytes())
    off = raw.find(np.asarray(read_shard(q).h_true[50]).tobytes()[:16])
    assert off > 0
    raw[off] ^= 0xFF
    q.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match=r"shard-00000\.h5.*--repair"):  # the resume check reads every byte
        generate_dataset(spec, tmp_path)
    rep = generate_dataset(spec, tmp_path, repair=True)
    assert rep.repaired == [0, 1]
    assert _bytes(tmp_path) == good


def test_shard_ranges_and_torchrun_ranks_write_the_same_shards_as_one_run(tmp_path, monkeypatch):
    args = ["--config", CONFIG, "--frames", "500", "--shard-frames", "100", "--batch-size", "100",
            "--seed", "9", "--device", "cpu", "--no-progress"]
    assert main(["generate", *args, "--out", str(tmp_path / "one")]) == 0
    assert main(["generate", *args, "--out", str(tmp_path / "jobs"), "--shard-range", "0:2"]) == 0
    man = json.loads((tmp_path / "jobs" / "manifest.json").read_text())
    assert not man["complete"] and [s["index"] for s in man["shards"]] == [0, 1]
    for rank in (1, 0):  # the ranks of `torchrun --nproc_per_node 2`, over the rest of the shards
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(["generate", *args, "--out", str(tmp_path / "jobs"), "--shard-range", "2:"]) == 0
    assert _bytes(tmp_path / "jobs") == _bytes(tmp_path / "one")
    assert json.loads((tmp_path / "jobs" / "manifest.json").read_text())["complete"]


def test_bad_shard_range_is_one_line_and_exit_2(tmp_path, capsys):
    rc = main(["generate", "--frames", "10", "--out", str(tmp_path), "--shard-range", "3:1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "shard_range" in err[0]


def test_drawn_metadata_is_uniform_over_the_requested_ranges(tmp_path):
    cfg = SystemConfig.from_yaml(CONFIG)
    generate_dataset(DatasetSpec(cfg, 11, 3000, 1000, 1000), tmp_path)
    a = [read_shard(tmp_path / shard_name(i)) for i in range(3)]
    pvals = {}
    for name in ("snr_db", "delay_spread_s", "doppler_hz"):
        x = np.concatenate([s.__dict__[name] for s in a]).astype(np.float64)
        lo, hi = getattr(cfg.channel, name)
        assert lo <= x.min() and x.max() <= hi * (1 + 1e-6)
        pvals[name] = stats.kstest(x, stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue
    print("KS p-values", pvals)
    assert all(p > 0.01 for p in pvals.values()), pvals
    assert read_attrs(tmp_path / shard_name(0))["config"] == cfg.to_json()


def test_a_shard_another_process_finishes_during_the_run_is_left_to_it(tmp_path, small_config, monkeypatch):
    import wavefront.datasets.generate as gen

    spec = DatasetSpec(small_config, 3, 200, 100, 100)
    generate_dataset(spec, tmp_path / "ref")
    real = gen.draw_shard

    def draw(generator, spec_, index, progress=None):
        if index == 0:  # meanwhile, another process renames shard 1 into place
            shutil.copy(tmp_path / "ref" / shard_name(1), tmp_path / "run" / shard_name(1))
        return real(generator, spec_, index, progress)

    monkeypatch.setattr(gen, "draw_shard", draw)
    rep = generate_dataset(spec, tmp_path / "run")
    assert rep.written == [0] and rep.busy == [1] and rep.manifest["complete"]
    assert _bytes(tmp_path / "run") == _bytes(tmp_path / "ref")


class _CtrlCInACallback:
    """A progress bar whose first update delivers SIGINT inside a weakref callback, where Python drops the
    KeyboardInterrupt its own handler raises ("Exception ignored"): as happens when a Ctrl-C lands while h5py's
    object registry cleans up between batches."""

    def __init__(self):
        self.updates = 0

    def update(self, n):
        self.updates += 1
        if self.updates == 1:
            import signal
            import weakref

            class Handle:
                pass

            h = Handle()
            ref = weakref.ref(h, lambda _: signal.raise_signal(signal.SIGINT))  # noqa: F841 - fires on del
            del h


@pytest.mark.parametrize("mimo", [False, True])
def test_a_ctrl_c_that_lands_in_a_callback_still_stops_generation_and_the_rerun_finishes(tmp_path, small_config, mimo):
    import signal

    if mimo:  # the MIMO shard loop draws the run's batches in order: 2 antennas, 2 users on 48 x 14
        small_config = SystemConfig.from_dict({
            "ofdm": {"num_subcarriers": 48, "pilot_subcarrier_spacing": 4}, "channel": {"snr_db": [0.0, 25.0]},
            "mimo": {"num_rx_antennas": 2, "num_users": 2}})
    spec = DatasetSpec(small_config, 3, 300, 100, 50)  # 3 shards of 2 batches
    generate_dataset(spec, tmp_path / "ref")
    out, bar = tmp_path / "run", _CtrlCInACallback()
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(spec, out, progress=bar)
    # stopped after the batch it came in: no shard written, nothing half-written, Python's handler back
    assert bar.updates == 1 and not list(out.glob("shard-*")) and not list(out.glob("*.partial"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    report = generate_dataset(spec, out)
    assert report.written == [0, 1, 2] and _bytes(out) == _bytes(tmp_path / "ref")
