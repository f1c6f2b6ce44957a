"""Guards of reading dataset folders: a folder's grid and pilots against the estimators', mixed systems in one tree,
and a shard whose datasets disagree with its frame count. Each is a one-line error naming the rule."""
from __future__ import annotations

import h5py
import pytest

from wavefront.datasets.generate import DatasetSpec, generate_dataset
from wavefront.datasets.shards import ShardError, read_attrs, shard_name
from wavefront.datasets.sources import folder_points
from wavefront.datasets.torch_datasets import H5FrameDataset
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig

SMALL = {"ofdm": {"num_subcarriers": 24, "pilot_subcarrier_spacing": 4}}


def _folder(path, **parts):
    cfg = SystemConfig.from_dict({**SMALL, **parts})
    generate_dataset(DatasetSpec(cfg, 3, 4, 4, 4), path)
    return cfg


def test_evaluating_a_folder_with_estimators_built_for_another_grid_or_pilots_is_refused(tmp_path):
    cfg = _folder(tmp_path / "d")
    assert len(folder_points(tmp_path / "d", cfg)) >= 1  # its own config reads it
    other_pilots = cfg.updated(ofdm={"pilot_subcarrier_offset": 1})
    with pytest.raises(ConfigError, match="its frames have pilots .* the estimators were built for") as exc:
        folder_points(tmp_path / "d", other_pilots)
    assert exc.value.field == "data" and "\n" not in str(exc.value)
    other_grid = SystemConfig.from_dict({"ofdm": {"num_subcarriers": 48, "pilot_subcarrier_spacing": 4}})
    with pytest.raises(ConfigError, match=r"grid_shape \(24, 14\), the estimators were built for \(48, 14\)"):
        folder_points(tmp_path / "d", other_grid)


def test_a_tree_mixing_siso_and_mimo_folders_is_refused_by_the_dataset(tmp_path):
    _folder(tmp_path / "tree" / "siso")
    _folder(tmp_path / "tree" / "mimo", mimo={"num_rx_antennas": 2, "num_users": 1})
    assert H5FrameDataset(tmp_path / "tree" / "mimo").num_rx_antennas == 2
    with pytest.raises(ConfigError, match=r"mixes frames of \[\(1, 1\), \(2, 1\)\]"):
        H5FrameDataset(tmp_path / "tree")


def test_a_shard_whose_dataset_lacks_frames_is_named_with_both_counts(tmp_path):
    _folder(tmp_path / "d")
    path = tmp_path / "d" / shard_name(0)
    assert read_attrs(path)["num_frames"] == 4
    with h5py.File(path, "r+") as f:  # one frame short: what a writer stopped midway could leave
        snr = f["snr_db"][()]
        del f["snr_db"]
        f.create_dataset("snr_db", data=snr[:3])
    with pytest.raises(ShardError, match="dataset 'snr_db' has 3 frames, attribute num_frames says 4"):
        read_attrs(path)
