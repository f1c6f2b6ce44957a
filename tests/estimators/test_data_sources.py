"""Where training batches come from: epochs as permutations, exact resumes, rank slices and held-out validation."""
import pytest
import torch

from wavefront.errors import ConfigError
from wavefront.estimators.data import (
    DatasetSource, OnTheFlySource, mimo_validation, pair_training_config, shard, simulated_validation,
)
from wavefront.sim.config import SystemConfig, preset


class Numbered(torch.utils.data.Dataset):
    """Sample i holds i in every field, so a batch says which samples it drew."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {k: torch.tensor(float(i)) for k in ("pilots", "h", "snr_db", "delay_spread_s", "doppler_hz")}


def _ids(batch):
    return [int(v) for v in batch["h"]]


def test_an_epoch_is_a_permutation_in_whole_batches_and_epochs_differ():
    src = DatasetSource(Numbered(10), batch_size=3, seed=4)  # 3 whole batches per epoch, one sample left out
    assert src.steps_per_epoch == 3
    epochs = [[_ids(src.batch(s)) for s in range(3 * e, 3 * e + 3)] for e in range(3)]  # straight across epochs
    for ep in epochs:
        drawn = sum(ep, [])
        assert len(drawn) == 9 and len(set(drawn)) == 9 and set(drawn) <= set(range(10))
    assert len({tuple(sum(ep, [])) for ep in epochs}) == 3  # a new permutation each epoch


def test_a_resumed_source_gives_the_batches_of_a_straight_run():
    straight = DatasetSource(Numbered(10), batch_size=3, seed=4)
    want = [_ids(straight.batch(s)) for s in range(7)]
    for s in (1, 2, 4, 6):  # mid-epoch and at an epoch's first step
        resumed = DatasetSource(Numbered(10), batch_size=3, seed=4)
        assert [_ids(resumed.batch(t)) for t in range(s, 7)] == want[s:]


def test_ranks_take_contiguous_slices_of_the_global_batch():
    whole = DatasetSource(Numbered(12), batch_size=4, seed=1)
    ranks = [DatasetSource(Numbered(12), batch_size=4, seed=1, rank=r, world=2) for r in (0, 1)]
    for s in range(4):
        assert _ids(ranks[0].batch(s)) + _ids(ranks[1].batch(s)) == _ids(whole.batch(s))
    batch = {"h": torch.arange(6.0), "snr_db": torch.arange(6.0) * 10}
    parts = [shard(batch, r, 3) for r in range(3)]
    assert [p["h"].tolist() for p in parts] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert [p["snr_db"].tolist() for p in parts] == [[0.0, 10.0], [20.0, 30.0], [40.0, 50.0]]


def test_validation_frames_are_none_of_the_training_frames():
    cfg = SystemConfig().updated(ofdm={"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2,
                                       "pilot_symbols": [0, 3]})
    val = simulated_validation(cfg, 8, seed=5, chunk=4)
    assert [len(v["h"]) for v in val] == [4, 4]
    assert [len(v["h"]) for v in simulated_validation(cfg, 6, seed=5, chunk=4)] == [4, 2]  # the frames asked, no more
    train = torch.cat([OnTheFlySource(cfg, 4, seed=5).batch(s)["h"] for s in range(4)])
    for v in val:
        for h in v["h"]:
            assert float((train - h).abs().flatten(1).amax(1).min()) > 1e-3


def test_mimo_validation_holds_the_asked_users_channels():
    from wavefront.estimators.data import _VAL_STREAM
    from wavefront.sim.mimo import MimoFrameGenerator
    from wavefront.utils import derive_seed

    cfg = SystemConfig().updated(
        ofdm={"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2, "pilot_symbols": [0, 3]},
        mimo={"num_rx_antennas": 2, "num_users": 2, "rx_correlation": 0.5})
    (v,) = mimo_validation(cfg, 1, 3, seed=2, per_pair=True)
    fr = MimoFrameGenerator(cfg).generate(3, seed=derive_seed(2, _VAL_STREAM, 0), with_data=False)
    assert torch.equal(v["h"], fr.h[:, :, 1].flatten(0, 1)) and torch.equal(v["pilots"], fr.pilots_ls[:, :, 1].flatten(0, 1))
    assert torch.equal(v["doppler_hz"], fr.doppler_hz.repeat_interleave(2))  # antenna-major within a frame
    assert pair_training_config(cfg, 1).ofdm.pilot_shape == v["pilots"].shape[1:]
    with pytest.raises(ConfigError, match="user=2"):
        pair_training_config(cfg, 2)


def test_a_batch_larger_than_the_dataset_is_refused():
    with pytest.raises(ConfigError, match="batch_size"):
        DatasetSource(Numbered(3), batch_size=4, seed=0)
    assert pair_training_config(preset("default")) == preset("default")


def test_a_frame_folder_of_another_grid_is_refused_when_opened(tmp_path):
    from wavefront.cli import main
    from wavefront.estimators.data import open_frame_folder, recorded_config

    assert main(["generate", "--frames", "4", "--out", str(tmp_path / "d"), "--config", "configs/adafortitran.yaml",
                 "--threads", "1", "--no-progress", "--device", "cpu"]) == 0
    stored = recorded_config(str(tmp_path / "d"))
    assert stored.ofdm.pilot_shape == (40, 2)
    assert len(open_frame_folder(str(tmp_path / "d"), stored)) == 4
    with pytest.raises(ConfigError, match="dataset"):
        open_frame_folder(str(tmp_path / "d"), preset("default"))  # 12 x 2 pilots on the same grid


def _mimo_cfg():
    # conditions drawn per frame (ranges), so a sample paired with another frame's conditions shows
    return SystemConfig().updated(
        ofdm={"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2, "pilot_symbols": [0, 3]},
        channel={"snr_db": [0.0, 20.0], "delay_spread_s": [50e-9, 150e-9], "doppler_hz": [100.0, 300.0]},
        mimo={"num_rx_antennas": 3, "num_users": 2, "rx_correlation": 0.5})


def test_each_per_pair_sample_carries_its_own_frames_conditions():
    from wavefront.estimators.data import mimo_user_samples
    from wavefront.sim.mimo import MimoFrameGenerator

    fr = MimoFrameGenerator(_mimo_cfg()).generate(4, seed=5, with_data=False)
    assert len(set(fr.snr_db.tolist())) == 4  # four frames, four SNRs
    s = mimo_user_samples(fr, 1, per_pair=True)
    for i in range(4 * 3):
        b, r = divmod(i, 3)  # sample i is frame b's antenna r
        assert torch.equal(s["h"][i], fr.h[b, r, 1]) and torch.equal(s["pilots"][i], fr.pilots_ls[b, r, 1])
        for k in ("snr_db", "delay_spread_s", "doppler_hz", "noise_var"):
            assert s[k][i] == getattr(fr, k)[b], (k, i)


def test_mimo_ranks_take_contiguous_slices_of_the_global_frames():
    from wavefront.estimators.data import MimoUserSource

    kw = dict(config=_mimo_cfg(), user=0, batch_size=4, seed=3, per_pair=True)
    whole = MimoUserSource(**kw).batch(2)
    parts = [MimoUserSource(**kw, rank=r, world=2).batch(2) for r in (0, 1)]
    assert [len(p["h"]) for p in parts] == [2 * 3, 2 * 3]  # 2 frames x 3 antennas each
    for k in ("h", "pilots", "snr_db"):
        assert torch.equal(torch.cat([p[k] for p in parts]), whole[k])


def test_a_dataset_whose_samples_lack_a_key_is_refused_naming_it():
    class NoDoppler(Numbered):
        def __getitem__(self, i):
            d = super().__getitem__(i)
            del d["doppler_hz"]
            return d

    with pytest.raises(ConfigError, match=r"dataset='NoDoppler': samples lack \['doppler_hz'\]"):
        DatasetSource(NoDoppler(6), batch_size=3, seed=0).batch(0)


def test_a_mimo_frame_folder_opens_as_the_asked_users_pairs_checked_against_that_users_pilots(tmp_path):
    from wavefront.cli import main
    from wavefront.datasets import H5FrameDataset
    from wavefront.estimators.data import open_frame_folder, recorded_config

    (tmp_path / "sys.yaml").write_text("ofdm:\n  num_subcarriers: 12\n  num_symbols: 4\n  pilot_subcarrier_spacing: 2\n"
                                       "  pilot_symbols: [0, 3]\n")
    folder = tmp_path / "suite" / "snr0"  # as a generate-suite tree: the shards one folder down
    assert main(["generate", "--frames", "3", "--out", str(folder), "--config", str(tmp_path / "sys.yaml"),
                 "--rx-antennas", "2", "--users", "2", "--batch-size", "3", "--device", "cpu", "--no-progress"]) == 0
    stored = recorded_config(str(tmp_path / "suite"))  # read from the first sub-folder with shards
    assert stored is not None and stored.mimo.num_users == 2 and stored.ofdm.grid_shape == (12, 4)
    u1 = pair_training_config(stored, 1)
    pairs1 = open_frame_folder(str(folder), u1, user=1)
    frame2 = H5FrameDataset(folder)[2]
    assert len(pairs1) == 3 * 2 and torch.equal(pairs1[5]["h"], frame2["h"][1, 1])  # frame 2, antenna 1, user 1
    assert torch.equal(pairs1[5]["pilots"], frame2["pilots"][1, 1])
    with pytest.raises(ConfigError, match="pilot_subcarriers"):  # user 0's pilots for user 1's pairs
        open_frame_folder(str(folder), pair_training_config(stored, 0), user=1)
