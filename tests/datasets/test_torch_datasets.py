import hashlib
import shutil

import h5py
import pytest
import torch
from torch.utils.data import DataLoader

from wavefront.datasets import H5FrameDataset, OnTheFlyDataset, ShardError
from wavefront.datasets.generate import DatasetSpec, generate_dataset
from wavefront.datasets.shards import read_shard


def _key(h: torch.Tensor) -> str:
    return hashlib.sha1(h.numpy().tobytes()).hexdigest()


def _collect(loader) -> list[str]:
    keys = []
    for batch in loader:
        keys += [_key(h) for h in batch["h"]]
    return keys


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from wavefront.sim.config import SystemConfig

    cfg = SystemConfig.from_dict({"channel": {"snr_db": [0.0, 25.0], "doppler_hz": [50.0, 1000.0]}})
    out = tmp_path_factory.mktemp("h5")
    generate_dataset(DatasetSpec(cfg, 21, 230, 100, 100), out)  # 3 shards: 100, 100, 30
    return cfg, out


def test_h5_dataset_with_two_workers_yields_every_frame_exactly_once(shards):
    _, out = shards
    ds = H5FrameDataset(out)
    assert len(ds) == 230
    expected = [_key(torch.from_numpy(h)) for p in sorted(out.glob("shard-*.h5")) for h in read_shard(p).h_true]
    got = _collect(DataLoader(ds, batch_size=16, shuffle=True, num_workers=2,
                              generator=torch.Generator().manual_seed(0)))
    assert len(got) == 230 and sorted(got) == sorted(expected) and len(set(got)) == 230


def test_h5_dataset_sample_matches_the_shard_arrays(shards):
    _, out = shards
    ds = H5FrameDataset(out)
    a = read_shard(sorted(out.glob("shard-*.h5"))[2])
    s = ds[205]
    assert torch.equal(s["h"], torch.from_numpy(a.h_true[5]))
    assert torch.equal(s["pilots"], torch.from_numpy(a.pilots_ls[5]))
    assert s["snr_db"].item() == a.snr_db[5]
    with pytest.raises(IndexError):
        ds[230]


def test_loader_reads_the_shards_and_frame_counts_the_manifest_lists(shards, tmp_path):
    import json
    import shutil

    from wavefront.errors import ConfigError

    _, src = shards
    out = tmp_path / "d"
    shutil.copytree(src, out)
    shutil.copy(out / "shard-00000.h5", out / "shard-00003.h5")  # on disk, not in the manifest
    assert len(H5FrameDataset(out)) == 230
    man = json.loads((out / "manifest.json").read_text())
    man["shards"][1]["frames"] = 99
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ShardError, match=r"shard-00001\.h5.*100 frames, the manifest says 99"):
        H5FrameDataset(out)
    (out / "manifest.json").unlink()
    with pytest.raises(ConfigError, match="no manifest.json"):
        H5FrameDataset(out)


def test_workers_open_the_file_on_disk_not_the_parents_handles(shards, tmp_path):
    # A shard repaired (replaced on disk) while a training process holds the dataset: the next
    # epoch's workers must read the repaired file, not the corrupt one the parent still has open.
    cfg, src = shards
    out = tmp_path / "d"
    shutil.copytree(src, out)
    good = [_key(h) for p in sorted(out.glob("shard-*.h5")) for h in torch.from_numpy(read_shard(p).h_true)]
    victim = out / "shard-00001.h5"
    with h5py.File(victim, "r") as f:
        start = f["h_true"].id.get_chunk_info(5).byte_offset
    raw = bytearray(victim.read_bytes())
    raw[start + 40] ^= 0x10
    victim.write_bytes(bytes(raw))
    ds = H5FrameDataset(out)
    ds[100]  # the parent opens shard 1
    with pytest.raises(ShardError, match="shard-00001"):
        ds[105]
    assert generate_dataset(DatasetSpec(cfg, 21, 230, 100, 100), out, repair=True).repaired == [1]
    assert _collect(DataLoader(ds, batch_size=23, num_workers=2)) == good


def test_compressed_shards_read_the_same_samples(shards, tmp_path):
    cfg, out = shards
    generate_dataset(DatasetSpec(cfg, 21, 230, 100, 100, compression="lzf"), tmp_path)
    plain, lzf = H5FrameDataset(out), H5FrameDataset(tmp_path)
    for i in (0, 117, 229):
        a, b = plain[i], lzf[i]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_on_the_fly_workers_never_repeat_and_cover_the_epoch(shards):
    cfg, _ = shards
    ds = OnTheFlyDataset(cfg, seed=4, frames_per_epoch=250, batch_size=40)
    two = _collect(DataLoader(ds, batch_size=32, num_workers=2))
    one = _collect(DataLoader(ds, batch_size=32, num_workers=0))
    assert len(two) == 250 and len(set(two)) == 250
    assert sorted(two) == sorted(one)  # the same frames whatever the worker count
    ds.set_epoch(1)
    assert not set(_collect(DataLoader(ds, batch_size=50))) & set(one)


def test_set_epoch_reaches_persistent_workers(shards):
    cfg, _ = shards
    ds = OnTheFlyDataset(cfg, seed=4, frames_per_epoch=64, batch_size=16)
    loader = DataLoader(ds, batch_size=16, num_workers=2, persistent_workers=True)
    epoch0 = _collect(loader)
    ds.set_epoch(1)
    epoch1 = _collect(loader)  # the same two worker processes, told the new epoch
    assert sorted(epoch1) == sorted(_collect(DataLoader(ds, batch_size=16)))
    assert len(set(epoch1)) == 64 and not set(epoch0) & set(epoch1)


def test_both_datasets_yield_the_same_structure_and_dtypes(shards):
    cfg, out = shards
    a = H5FrameDataset(out)[0]
    b = next(iter(OnTheFlyDataset(cfg, seed=1, frames_per_epoch=3, batch_size=3)))
    assert list(a) == list(b) == ["pilots", "h", "snr_db", "delay_spread_s", "doppler_hz", "noise_var"]
    for k in a:
        assert (a[k].dtype, a[k].shape) == (b[k].dtype, b[k].shape), k
    assert a["pilots"].shape == (12, 2) and a["h"].dtype == torch.complex64 and a["snr_db"].dtype == torch.float32
    batch_a = next(iter(DataLoader(H5FrameDataset(out), batch_size=4)))
    batch_b = next(iter(DataLoader(OnTheFlyDataset(cfg, seed=1, frames_per_epoch=8, batch_size=8), batch_size=4)))
    assert {k: (v.dtype, v.shape) for k, v in batch_a.items()} == {k: (v.dtype, v.shape) for k, v in batch_b.items()}


def test_negative_indices_count_from_the_end_like_a_sequence(shards):
    _, out = shards
    ds = H5FrameDataset(out)
    for neg, pos in ((-1, 229), (-31, 199), (-230, 0)):  # -31: the last frame of shard 1, across the boundary
        assert torch.equal(ds[neg]["h"], ds[pos]["h"]), neg
    with pytest.raises(IndexError):
        ds[-231]


def test_on_the_fly_frames_are_none_of_a_generated_folders_with_the_same_seed_and_batches(shards):
    # the folder: seed 21, batches of 100; generated batch j of shard 0 uses derive_seed(21, 0, j). On-the-fly
    # epoch 0 batch k must come from a stream apart, or training on the fly and testing on the folder share frames
    cfg, out = shards
    fly = torch.stack([s["h"] for s in OnTheFlyDataset(cfg, seed=21, frames_per_epoch=100, batch_size=100)])
    stored = torch.from_numpy(read_shard(sorted(out.glob("shard-*.h5"))[0]).h_true)
    closest = (fly[:, None] - stored[None]).abs().flatten(2).amax(2).min()
    assert float(closest) > 1e-3  # unit-power channels: distinct draws differ by O(1) somewhere on the grid


def _small():
    from wavefront.sim.config import SystemConfig

    return SystemConfig().updated(ofdm={"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2,
                                        "pilot_symbols": [0, 3]})


def test_endless_ranks_take_alternate_batches_and_together_the_one_process_stream():
    import itertools

    cfg = _small()
    take = lambda ds, n: [_key(s["h"]) for s in itertools.islice(iter(ds), n)]
    ranks = [take(OnTheFlyDataset(cfg, seed=3, batch_size=4, rank=r, world_size=2), 8) for r in (0, 1)]
    one = take(OnTheFlyDataset(cfg, seed=3, batch_size=4), 16)  # batches 0, 1, 2, 3
    assert not set(ranks[0]) & set(ranks[1])
    assert ranks[0] == one[0:4] + one[8:12] and ranks[1] == one[4:8] + one[12:16]


def test_step_batches_are_fresh_per_step_exact_on_resume_and_split_contiguously_over_ranks():
    cfg = _small()
    whole = OnTheFlyDataset(cfg, seed=6, batch_size=4)
    steps = [[_key(h) for h in whole.batch(s)["h"]] for s in range(3)]
    assert len(set(sum(steps, []))) == 12  # every step draws new frames
    assert [_key(h) for h in OnTheFlyDataset(cfg, seed=6, batch_size=4).batch(2)["h"]] == steps[2]  # no history
    halves = [OnTheFlyDataset(cfg, seed=6, batch_size=4, rank=r, world_size=2).batch(1) for r in (0, 1)]
    assert [_key(h) for hs in halves for h in hs["h"]] == steps[1]
    assert all(len(hs[k]) == 2 for hs in halves for k in hs)


@pytest.mark.parametrize("kwargs,field", [
    ({"frames_per_epoch": 0}, "frames_per_epoch"), ({"frames_per_epoch": 2.5}, "frames_per_epoch"),
    ({"batch_size": 0}, "batch_size"), ({"rank": 2, "world_size": 2}, "rank"), ({"rank": -1}, "rank"),
])
def test_on_the_fly_arguments_out_of_range_are_refused_naming_the_field(kwargs, field):
    from wavefront.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        OnTheFlyDataset(_small(), seed=1, **kwargs)


def test_on_the_fly_takes_a_yaml_path_a_preset_name_or_a_dict_as_the_cli_does(tmp_path):
    # The CLI's --on-the-fly takes a YAML file or a preset; the dataset took only a SystemConfig and failed at
    # the first frame with "'str' object has no attribute 'mimo'" when given the same path.
    from pathlib import Path

    import yaml

    from wavefront.errors import ConfigError
    from wavefront.sim.config import SystemConfig, preset

    d = {"ofdm": {"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2, "pilot_symbols": [0, 3]},
         "channel": {"snr_db": [0.0, 20.0]}}
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(d))
    first = lambda config: next(iter(OnTheFlyDataset(config, seed=2, frames_per_epoch=4, batch_size=4)))["h"]  # noqa: E731
    want = first(SystemConfig.from_dict(d))
    for given in (str(tmp_path / "small.yaml"), tmp_path / "small.yaml", d):
        assert torch.equal(first(given), want)
    assert torch.equal(first("default"), first(preset("default")))
    assert OnTheFlyDataset(Path("default"), seed=0).config == preset("default")
    for bad, message in (("no-such-preset", "preset='no-such-preset': unknown"),
                         (str(tmp_path / "none.yaml"), "file not found"), (7, "config='int': must be a SystemConfig")):
        with pytest.raises(ConfigError, match=message):
            OnTheFlyDataset(bad, seed=0)
