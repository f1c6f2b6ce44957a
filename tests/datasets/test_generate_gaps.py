"""Gaps a mutation hunt found in dataset generation: shard ranges at their ends, and distinct frames within a shard."""
import numpy as np
import pytest

from wavefront.datasets.generate import DatasetSpec, generate_dataset, parse_shard_range
from wavefront.datasets.shards import read_shard, shard_name
from wavefront.errors import ConfigError


@pytest.mark.parametrize("text,expected", [(None, range(0, 5)), (":", range(0, 5)), ("4:", range(4, 5)),
                                           (":1", range(0, 1)), ("0:5", range(0, 5))])
def test_a_shard_range_is_half_open_over_the_runs_shards(text, expected):
    assert parse_shard_range(text, 5) == expected


@pytest.mark.parametrize("text", ["2:2", "5:", "0:6", "-1:3", "3:1", "1", "a:b"])
def test_an_empty_or_out_of_bounds_shard_range_is_refused(text):
    # "2:2" would run nothing and report success
    with pytest.raises(ConfigError, match="shard_range"):
        parse_shard_range(text, 5)


def test_every_frame_of_a_shard_is_its_own_realization(tmp_path, small_config):
    # 2 shards x 20 frames in generator batches of 10: each batch has its own seed, so no two
    # frames anywhere hold the same channel or conditions
    spec = DatasetSpec(small_config, 11, 40, 20, 10)
    generate_dataset(spec, tmp_path)
    shards = [read_shard(tmp_path / shard_name(i)) for i in range(2)]
    h = np.concatenate([s.h_true for s in shards]).reshape(40, -1)
    assert len(np.unique(h, axis=0)) == 40
    doppler = np.concatenate([s.doppler_hz for s in shards])
    assert len(np.unique(doppler)) == 40


def test_a_shard_whose_content_is_not_the_one_the_manifest_lists_is_refused(tmp_path, small_config):
    # An entry without file_sha256 (or a shard of the same run drawn on another device): the
    # shard's own checksum is intact, but its content is not what the manifest recorded.
    from wavefront.datasets.generate import check_shard
    from wavefront.datasets.shards import ShardError

    spec = DatasetSpec(small_config, 3, 20, 20, 10)
    generate_dataset(spec, tmp_path)
    path = tmp_path / shard_name(0)
    rec = check_shard(path, spec, 0, None)
    assert check_shard(path, spec, 0, {"content_sha256": rec.content_sha256}) == rec
    with pytest.raises(ShardError, match="content checksum"):
        check_shard(path, spec, 0, {"content_sha256": "0" * 64})


@pytest.mark.parametrize("seed", [-1, 2 ** 63, 1.5])
def test_a_seed_outside_the_int64_attribute_range_is_refused(small_config, seed):
    with pytest.raises(ConfigError, match="seed"):
        DatasetSpec(small_config, seed, 10)
