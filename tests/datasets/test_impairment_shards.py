"""Receiver impairments on generate, train and evaluate: what the shards record, and the flags' bad input.

Each frame's drawn impairment is an [N] float32 dataset of its shard (units in its attributes), the
setting is in the manifest, the torch dataset returns the values, resume and determinism hold, and
every command refuses bad values in one line with exit 2.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy import stats

from wavefront.cli import main
from wavefront.datasets import H5FrameDataset
from wavefront.datasets.generate import DatasetSpec, generate_dataset
from wavefront.datasets.shards import read_shard, shard_name
from wavefront.datasets.sources import folder_points
from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.impairments import IMPAIRMENT_FIELDS
from wavefront.utils import derive_seed
from kill_helpers import kill_generate_midway

# A range for two of them, a fixed value for the third: both kinds of draw reach the shard.
IMPAIRED = {"timing_offset_samples": [0.0, 2.0], "cfo_hz": [-100.0, 100.0], "phase_noise_linewidth_hz": 50.0}
FLAGS = ["--timing-offset", "0:2", "--cfo-hz=-100:100", "--phase-noise-hz", "50"]
# The datasets of a shard written before impairments existed (default Kronecker layout).
PLAIN_DATASETS = {"h_true", "pilots_ls", "pilots_rx", "pilot_symbols", "pilot_subcarriers", "pilot_symbol_indices",
                  "snr_db", "delay_spread_s", "doppler_hz", "noise_var", "profile"}


def _config(**channel) -> SystemConfig:
    return SystemConfig.from_dict({"channel": {**IMPAIRED, **channel}})


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.h5"))}


def test_the_values_in_a_shard_are_those_the_frame_generator_draws_for_the_same_seed_and_rows(tmp_path):
    cfg = _config()
    spec = DatasetSpec(cfg, 5, 30, 15, 5)  # two shards of three generator batches of 5
    generate_dataset(spec, tmp_path)
    gen = FrameGenerator(cfg)
    ds = H5FrameDataset(tmp_path)
    assert ds.impairments == IMPAIRMENT_FIELDS
    for i in range(2):
        a = read_shard(tmp_path / shard_name(i))
        with h5py.File(tmp_path / shard_name(i)) as f:
            assert set(f) == PLAIN_DATASETS | set(IMPAIRMENT_FIELDS)
            for k in IMPAIRMENT_FIELDS:
                assert f[k].dtype == np.float32 and f[k].shape == (15,)
            assert f["cfo_hz"].attrs["units"].startswith("Hz") and f["timing_offset_samples"].attrs["units"].startswith("samples")
        for j in range(3):
            fr = gen.generate(5, derive_seed(5, i, j), with_data=False)
            rows = slice(5 * j, 5 * j + 5)
            for k in IMPAIRMENT_FIELDS:  # bit for bit: the same stream, the same rows
                assert torch.equal(torch.from_numpy(getattr(a, k)[rows]), getattr(fr, k)), (i, j, k)
            assert torch.equal(torch.from_numpy(a.pilots_rx[rows]), fr.pilots_rx)  # and the frames they impaired
        for r in (0, 7, 14):  # the torch dataset serves them as 0-d float32 meta
            sample = ds[15 * i + r]
            for k in IMPAIRMENT_FIELDS:
                assert sample[k].dtype == torch.float32 and sample[k].shape == ()
                assert float(sample[k]) == float(getattr(a, k)[r])
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["impairments"]["timing_offset_samples"]["value"] == [0.0, 2.0]
    assert man["impairments"]["phase_noise_linewidth_hz"]["value"] == 50.0
    assert man["impairments"]["phase_noise_linewidth_hz"]["units"].startswith("Hz")
    assert man["config"]["channel"]["cfo_hz"] == [-100.0, 100.0]
    # A folder read as test points hands the same values to estimators, in meta
    (p,) = folder_points(tmp_path, SystemConfig())
    meta = torch.cat([b.meta["timing_offset_samples"] for b in p.batches()])
    stored = np.concatenate([read_shard(tmp_path / shard_name(i)).timing_offset_samples for i in range(2)])
    assert torch.equal(meta, torch.from_numpy(stored)) and p.config.channel.cfo_hz == (-100.0, 100.0)


def test_the_content_checksum_covers_the_impairment_values(tmp_path):
    from dataclasses import replace

    from wavefront.datasets.shards import content_checksum

    generate_dataset(DatasetSpec(_config(), 5, 4, 4, 4), tmp_path)
    a = read_shard(tmp_path / shard_name(0))
    shifted = a.cfo_hz.copy()
    shifted[2] = np.nextafter(shifted[2], np.float32(np.inf))  # one ulp of one frame's CFO
    assert content_checksum(replace(a, cfo_hz=shifted)) != content_checksum(a)
    assert content_checksum(replace(a, timing_offset_samples=None)) != content_checksum(a)


def test_drawn_values_respect_their_ranges_and_fill_them_uniformly(tmp_path):
    generate_dataset(DatasetSpec(_config(), 8, 200, 200, 100), tmp_path)
    a = read_shard(tmp_path / shard_name(0))
    assert np.all(a.phase_noise_linewidth_hz == 50.0)  # a fixed value is every frame's
    pvals = {}
    for k in ("timing_offset_samples", "cfo_hz"):
        lo, hi = IMPAIRED[k]
        x = getattr(a, k).astype(np.float64)
        assert lo <= x.min() and x.max() <= hi and np.unique(x).size == 200
        pvals[k] = stats.kstest(x, stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue
    assert all(p > 1e-3 for p in pvals.values()), pvals  # a wrong range or a constant fails at p < 1e-20


def test_with_every_impairment_off_a_shard_holds_the_datasets_it_always_held(tmp_path):
    generate_dataset(DatasetSpec(SystemConfig(), 5, 10, 10, 10), tmp_path)
    with h5py.File(tmp_path / shard_name(0)) as f:
        assert set(f) == PLAIN_DATASETS
    assert "impairments" not in json.loads((tmp_path / "manifest.json").read_text())
    assert set(H5FrameDataset(tmp_path)[0]) == {"pilots", "h", "snr_db", "delay_spread_s", "doppler_hz", "noise_var"}


def test_a_tree_of_impaired_and_plain_folders_gives_every_sample_the_same_keys(tmp_path):
    generate_dataset(DatasetSpec(SystemConfig.from_dict({"channel": {"cfo_hz": 30.0}}), 5, 4, 4, 4), tmp_path / "a")
    generate_dataset(DatasetSpec(SystemConfig(), 5, 4, 4, 4), tmp_path / "b")
    ds = H5FrameDataset(tmp_path)
    assert ds.impairments == ("cfo_hz",)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))  # collates: one key set
    assert batch["cfo_hz"].tolist() == [30.0] * 4 + [0.0] * 4  # off reads as 0 Hz


def test_resumed_generation_with_impairments_writes_the_bytes_of_an_uninterrupted_run(tmp_path):
    args = ["generate", "--frames", "40", "--shard-frames", "10", "--batch-size", "5", "--seed", "3",
            "--device", "cpu", "--no-progress", *FLAGS]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "run"), "--shard-range", "0:2"]) == 0  # stopped after two shards
    (tmp_path / "run" / (shard_name(2) + ".partial")).write_bytes(b"killed mid-write")  # a dead writer's leftover
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert _bytes(tmp_path / "run") == _bytes(tmp_path / "one") and len(_bytes(tmp_path / "one")) == 4
    assert not list((tmp_path / "run").glob("*.partial"))
    one, run = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "run"))
    assert run["complete"] and run["shards"] == one["shards"] and run["impairments"] == one["impairments"]
    # another setting is another dataset: refused, not mixed in
    assert main([*args, "--phase-noise-hz", "60", "--out", str(tmp_path / "run")]) == 2


@pytest.mark.slow
def test_killed_generation_with_impairments_resumes_to_the_same_shards(tmp_path):
    args = ["--frames", "600", "--shard-frames", "100", "--batch-size", "50", "--seed", "7", "--device", "cpu",
            "--no-progress", "--threads", "1", *FLAGS]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(["generate", *args, "--out", str(ref)]) == 0
    assert len(kill_generate_midway(["generate", *args], run, once_shard=1)) < 6
    assert main(["generate", *args, "--out", str(run)]) == 0
    assert _bytes(run) == _bytes(ref) and len(_bytes(ref)) == 6


def test_export_mat_refuses_an_impaired_dataset_in_one_line_naming_the_field(tmp_path, capsys):
    generate_dataset(DatasetSpec(SystemConfig.from_dict({"channel": {"timing_offset_samples": [0.0, 2.0]}}), 5, 4, 4, 4),
                     tmp_path / "d")
    rc = main(["export-mat", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "mat"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "channel.timing_offset_samples" in err[0] and "refuses" in err[0], err
    assert not list(tmp_path.rglob("*.mat"))


_COMMANDS = {
    "generate": ["generate", "--frames", "10", "--no-progress"],
    "train": ["train", "--model", "linear", "--steps", "2", "--no-progress"],
    "evaluate": ["evaluate", "--frames-per-point", "5", "--no-plots"],
}
_CONFIG_FLAG = {"generate": "--config", "train": "--on-the-fly", "evaluate": "--config"}


@pytest.mark.parametrize("command", list(_COMMANDS))
@pytest.mark.parametrize("flags, field, rule", [
    (["--phase-noise-hz=-5"], "channel.phase_noise_linewidth_hz", "must be >= 0"),
    (["--timing-offset", "0:200"], "channel.timing_offset_samples", "within the symbol: |offset| <= 137 samples"),
    (["--cfo-hz", "100", "SPARSE"], "channel.cfo_hz", "leave it (and cfo_hz"),
    (["--timing-offset", "1:2:3"], "--timing-offset", "LOW:HIGH"),
])
def test_bad_impairments_are_one_line_and_exit_2_on_every_command(command, flags, field, rule, tmp_path, capsys):
    argv = [*_COMMANDS[command], "--out", str(tmp_path / "out")]
    if "SPARSE" in flags:
        (tmp_path / "sparse.yaml").write_text("channel:\n  profile: sparse\n")
        flags = [f for f in flags if f != "SPARSE"] + [_CONFIG_FLAG[command], str(tmp_path / "sparse.yaml")]
    elif command == "train":
        argv += ["--on-the-fly", "default"]
    rc = main([*argv, *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and field in err[0] and rule in err[0], err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def _shards(folder: Path, seed: int, frames: int) -> None:
    assert main(["generate", "--frames", str(frames), "--shard-frames", str(frames), "--batch-size", "16", "--seed",
                 str(seed), "--device", "cpu", "--no-progress", *FLAGS, "--out", str(folder)]) == 0


def test_train_on_impaired_shards_and_evaluate_them_records_and_says_what_was_ignored(tmp_path, capsys):
    _shards(tmp_path / "train", 1, 32)
    _shards(tmp_path / "val", 2, 16)
    run = tmp_path / "run"
    assert main(["train", "--model", "linear", "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"),
                 "--epochs", "1", "--batch-size", "16", "--warmup-steps", "1", "--device", "cpu", "--no-progress",
                 "--out", str(run)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 2 and np.isfinite(result["val_mse_db"])
    # a flag that is not the shards' own is refused: their frames are drawn already
    rc = main(["train", "--model", "linear", "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"),
               "--epochs", "1", "--out", str(tmp_path / "run2"), "--no-progress", "--timing-offset", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "channel.timing_offset_samples=1.0" in err[0] and "(0.0, 2.0)" in err[0], err

    ev = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--suite", str(tmp_path / "val"),
                 "--baselines", "ls-linear,lmmse-genie", "--device", "cpu", "--no-plots", "--out", str(ev),
                 *FLAGS]) == 0  # the suite's own setting: accepted
    saved = json.loads((ev / "results.json").read_text())
    assert saved["impairments"]["cfo_hz"]["value"] == [-100.0, 100.0]
    assert saved["impairments"]["timing_offset_samples"]["units"].startswith("samples")
    given = {r["estimator"]: r for r in saved["rows"]}
    assert "receiver impairments ignored" in given["lmmse-genie"]["given"]
    assert "timing_offset_samples=[0.0, 2.0]" in given["linear"]["trained_on"]
    assert {r["frames"] for r in saved["rows"]} == {16}


def test_train_on_the_fly_with_impairments_then_evaluate_simulated_points_with_the_flags(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "linear", "--on-the-fly", "default", *FLAGS, "--steps", "3", "--batch-size", "8",
                 "--eval-every", "3", "--val-frames", "16", "--warmup-steps", "1", "--device", "cpu", "--no-progress",
                 "--out", str(run)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
    ev = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--frames-per-point", "4",
                 "--baselines", "lmmse-genie", "--device", "cpu", "--no-plots", "--out", str(ev), *FLAGS]) == 0
    saved = json.loads((ev / "results.json").read_text())
    assert set(saved["impairments"]) == set(IMPAIRMENT_FIELDS)
    genie = [r for r in saved["rows"] if r["estimator"] == "lmmse-genie"]
    assert len(genie) == 21 and all("receiver impairments ignored" in r["given"] for r in genie)
