import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from wavefront.cli import main
from wavefront.datasets.generate import DatasetSpec, generate_dataset, parse_shard_range, shard_counts
from wavefront.datasets.shards import read_attrs, read_shard, shard_name, verify_content
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig

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

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "wavefront", "generate", *args, "--out", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / shard_name(2)).exists():  # two shards done, the third under way
        assert proc.poll() is None, "generation finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = sorted(p.name for p in run.glob("shard-*"))
    assert len([n for n in left if n.endswith(".h5")]) < 6, left  # really interrupted
    for p in run.glob("shard-*.h5"):  # whatever looks complete is complete
        verify_content(p)

    assert main(["generate", *args, "--out", str(run)]) == 0
    assert not list(run.glob("*.partial"))
    assert _bytes(run) == _bytes(ref) and len(_bytes(ref)) == 6
    man_ref, man_run = (json.loads((d / "manifest.json").read_text()) for d in (ref, run))
    assert man_run["complete"] and man_run["shards"] == man_ref["shards"]
    assert sum(s["frames"] for s in man_run["shards"]) == 1500


def test_partial_shard_is_discarded_and_redone(tmp_path, small_config):
    spec = DatasetSpec(small_config, 3, 250, 100, 50)
    generate_dataset(spec, tmp_path / "a")
    generate_dataset(spec, tmp_path / "b", indices=[0])
    (tmp_path / "b" / (shard_name(1) + ".partial")).write_bytes(b"half a shard")
    rep = generate_dataset(spec, tmp_path / "b")
    assert rep.skipped == [0] and rep.written == [1, 2]
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    assert not list((tmp_path / "b").glob("*.partial"))


def test_folder_of_another_config_or_seed_is_refused(tmp_path, small_config):
    generate_dataset(DatasetSpec(small_config, 3, 100, 50, 50), tmp_path)
    with pytest.raises(ConfigError, match="different seed"):
        generate_dataset(DatasetSpec(small_config, 4, 100, 50, 50), tmp_path)
    other = SystemConfig.from_dict({"channel": {"snr_db": 5.0}})
    with pytest.raises(ConfigError, match="different config"):
        generate_dataset(DatasetSpec(other, 3, 100, 50, 50), tmp_path)
    with pytest.raises(ConfigError, match="different frames"):
        generate_dataset(DatasetSpec(small_config, 3, 120, 50, 50), tmp_path)


def test_truncated_shard_is_named_and_repair_regenerates_it_from_its_seed(tmp_path, small_config):
    spec = DatasetSpec(small_config, 5, 200, 100, 100)
    generate_dataset(spec, tmp_path)
    good = _bytes(tmp_path)
    p = tmp_path / shard_name(1)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"shard-00001\.h5.*--repair"):
        generate_dataset(spec, tmp_path)
    # A flipped byte inside the data passes the cheap resume check; --repair reads everything.
    q = tmp_path / shard_name(0)
    raw = bytearray(q.read_bytes())
    off = raw.find(np.asarray(read_shard(q).h_true[50]).tobytes()[:16])
    assert off > 0
    raw[off] ^= 0xFF
    q.write_bytes(bytes(raw))
    rep = generate_dataset(spec, tmp_path, repair=True)
    assert rep.repaired == [0, 1]
    assert _bytes(tmp_path) == good


def test_full_disk_leaves_no_shard_that_looks_complete(tmp_path, small_config, monkeypatch):
    import wavefront.datasets.shards as shards

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.os, "fsync", no_space)
    with pytest.raises(OSError):
        generate_dataset(DatasetSpec(small_config, 1, 100, 100, 100), tmp_path)
    assert not list(tmp_path.glob("shard-*"))


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
