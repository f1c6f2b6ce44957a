import json
import re

import numpy as np
import pytest
import scipy.io

from wavefront.cli import main
from wavefront.datasets import H5FrameDataset
from wavefront.datasets.generate import DatasetSpec, generate_dataset, update_manifest
from wavefront.datasets.matfiles import NAME_RE, export_mat, import_mat
from wavefront.datasets.shards import read_attrs, read_shard, shard_name, write_shard
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig, preset


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    assert main(["generate-suite", "adafortitran", "--frames-per-point", "12", "--shard-frames", "5",
                 "--seed", "11", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    return out


def test_suite_folders_hold_exactly_their_point_and_state_the_fixed_values(suite):
    folders = {p.parent.relative_to(suite).as_posix() for p in suite.rglob("manifest.json")}
    assert folders == ({f"SNR_test_set/SNR_{v}" for v in range(0, 31, 5)}
                       | {f"DS_test_set/DS_{v}" for v in range(50, 351, 50)}
                       | {f"MDS_test_set/DOP_{v}" for v in range(200, 1401, 200)})
    expected = {"SNR_test_set": {"delay_spread_s": 200e-9, "doppler_hz": 500.0},
                "DS_test_set": {"snr_db": 10.0, "doppler_hz": 600.0},
                "MDS_test_set": {"snr_db": 10.0, "delay_spread_s": 100e-9}}
    for f in sorted(folders):
        man = json.loads((suite / f / "manifest.json").read_text())
        s = man["suite"]
        assert man["complete"] and man["frames"] == 12 and len(man["shards"]) == 3  # 5 + 5 + 2
        assert s["fixed"] == expected[s["sweep"]]
        want = {**s["fixed"], s["axis"]: s["value"]}
        arrays = [read_shard(suite / f / shard_name(i)) for i in range(3)]
        for name, v in want.items():
            got = np.concatenate([getattr(a, name) for a in arrays])
            assert np.all(got == np.float32(v)), (f, name)
        assert man["config"]["ofdm"]["pilot_subcarrier_spacing"] == 3  # the paper's N-3 grid
    index = json.loads((suite / "suite.json").read_text())
    assert [s["folder"] for s in index["sweeps"]] == ["SNR_test_set", "DS_test_set", "MDS_test_set"]


def test_rerunning_a_finished_suite_rewrites_nothing_and_another_seed_is_refused(suite, capsys):
    before = {p: p.read_bytes() for p in suite.rglob("shard-*.h5")}
    args = ["generate-suite", "adafortitran", "--frames-per-point", "12", "--shard-frames", "5",
            "--device", "cpu", "--out", str(suite), "--no-progress"]
    assert main([*args, "--seed", "11"]) == 0
    assert "0 frames written now" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in suite.rglob("shard-*.h5")} == before
    assert main([*args, "--seed", "12"]) == 2
    assert "different seed" in capsys.readouterr().err


def test_export_then_import_gives_back_the_same_arrays(suite, tmp_path):
    mat = tmp_path / "mat"
    assert main(["export-mat", "--data", str(suite), "--out", str(mat), "--no-progress"]) == 0
    files = sorted(mat.rglob("*.mat"))
    assert len(files) == 21 * 12 and all(NAME_RE.fullmatch(f.name) for f in files)
    assert (mat / "DS_test_set" / "DS_150" / "3_SNR-10_DS-150_DOP-600_N-3_TDL-A.mat").exists()
    back = tmp_path / "back"
    assert main(["import-mat", "--mat", str(mat), "--out", str(back), "--shard-frames", "5", "--snr-convention", "per-re",
                 "--no-progress"]) == 0
    for man in suite.rglob("manifest.json"):
        rel = man.parent.relative_to(suite)
        for i in range(3):
            a, b = read_shard(suite / rel / shard_name(i)), read_shard(back / rel / shard_name(i))
            for name in ("h_true", "pilots_ls", "snr_db", "delay_spread_s", "doppler_hz", "noise_var", "profile",
                         "pilot_subcarriers", "pilot_symbol_indices"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{rel} {name}")
    assert len(H5FrameDataset(back)) == 21 * 12
    # By default the names' SNR is the reference generator's: noise over a pilots-only grid,
    # 80 of 1680 REs on this grid, so the stored per-RE noise variance is 80/1680 of it.
    ref = tmp_path / "ref"
    assert main(["import-mat", "--mat", str(mat / "SNR_test_set" / "SNR_20"), "--out", str(ref), "--no-progress"]) == 0
    a, b = read_shard(suite / "SNR_test_set" / "SNR_20" / shard_name(0)), read_shard(ref / shard_name(0))
    np.testing.assert_allclose(b.noise_var[:5], a.noise_var[:5] * 80 / 1680, rtol=1e-6)


def test_mat_file_read_with_plain_scipy_has_ls_only_at_the_pilots(suite, tmp_path):
    export_mat(suite / "SNR_test_set" / "SNR_20", tmp_path)
    f = next(tmp_path.glob("4_*.mat"))
    H = scipy.io.loadmat(f)["H"]
    assert H.shape == (120, 14, 2) and np.iscomplexobj(H)
    cfg = preset("adafortitran-paper").ofdm
    mask = np.zeros((120, 14), bool)
    mask[np.ix_(cfg.pilot_subcarriers, cfg.pilot_symbols)] = True
    assert np.array_equal(H[:, :, 1] != 0, mask)
    n = int(re.match(r"(\d+)_", f.name).group(1))
    a = read_shard(suite / "SNR_test_set" / "SNR_20" / shard_name(0))
    # the reference reader: non-zero entries, row-major (subcarrier-major), reshaped to [P_f, P_t]
    np.testing.assert_array_equal(H[:, :, 1][H[:, :, 1] != 0].reshape(40, 2), a.pilots_ls[n - 1])


def test_unnameable_values_are_refused_or_rounded_by_the_documented_rule(tmp_path):
    cfg = SystemConfig.from_dict({"channel": {"snr_db": 7.4, "doppler_hz": 100.5}})
    generate_dataset(DatasetSpec(cfg, 1, 3, 3, 3), tmp_path / "d")
    with pytest.raises(ConfigError, match="--round"):
        export_mat(tmp_path / "d", tmp_path / "m")
    export_mat(tmp_path / "d", tmp_path / "m", round_values=True)
    assert sorted(p.name for p in (tmp_path / "m").glob("*.mat"))[0] == "1_SNR-7_DS-300_DOP-101_N-10_TDL-A.mat"
    neg = SystemConfig.from_dict({"channel": {"snr_db": -5.0}})
    generate_dataset(DatasetSpec(neg, 1, 2, 2, 2), tmp_path / "n")
    with pytest.raises(ConfigError, match="negative"):
        export_mat(tmp_path / "n", tmp_path / "mn", round_values=True)


def test_an_unnameable_frame_anywhere_stops_the_export_before_its_first_file(tmp_path):
    # a tree of two folders, the second holding 7.4 dB: nothing of the first is written either
    good = SystemConfig.from_dict({"channel": {"snr_db": 7.0, "doppler_hz": 100.0}})
    bad = SystemConfig.from_dict({"channel": {"snr_db": 7.4, "doppler_hz": 100.0}})
    generate_dataset(DatasetSpec(good, 1, 3, 3, 3), tmp_path / "tree" / "a")
    generate_dataset(DatasetSpec(bad, 1, 3, 3, 3), tmp_path / "tree" / "b")
    with pytest.raises(ConfigError, match=r"snr_db=7\.4.*frame 0 of .*b/.*--round"):
        export_mat(tmp_path / "tree", tmp_path / "m")
    assert not list((tmp_path / "m").rglob("*.mat"))


def test_zero_ls_pilot_is_refused(tmp_path):
    spec = DatasetSpec(preset("default"), 1, 2, 2, 2)
    generate_dataset(spec, tmp_path / "d")
    p = tmp_path / "d" / shard_name(0)
    a = read_shard(p)
    a.pilots_ls[1, 3, 0] = 0  # a valid shard (checksums and all) that holds a zero pilot
    write_shard(p, a, {k: v for k, v in read_attrs(p).items()
                       if k not in ("format", "format_version", "num_frames", "content_sha256")})
    update_manifest(tmp_path / "d", spec)
    with pytest.raises(ConfigError, match="exactly 0"):
        export_mat(tmp_path / "d", tmp_path / "m")


def test_malformed_mat_name_or_shape_names_the_file(tmp_path, capsys):
    d = tmp_path / "mat"
    d.mkdir()
    H = np.ones((120, 14, 2), np.complex64)
    scipy.io.savemat(d / "1_SNR--5_DS-100_DOP-600_N-3_TDL-A.mat", {"H": H})
    assert main(["import-mat", "--mat", str(d), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "1_SNR--5_DS-100" in capsys.readouterr().err
    (d / "1_SNR--5_DS-100_DOP-600_N-3_TDL-A.mat").unlink()
    scipy.io.savemat(d / "1_SNR-5_DS-100_DOP-600_N-3_TDL-A.mat", {"H": H[:, :13]})
    with pytest.raises(ConfigError, match=r"1_SNR-5_DS-100_DOP-600_N-3_TDL-A\.mat.*shape"):
        import_mat(d, tmp_path / "o", preset("default"))


def test_each_point_seed_is_distinct_and_the_derivation_its_manifest_states(suite):
    """Every point draws its own frames: seed ``derive_seed(suite_seed, sweep, point)``, as the manifest says,
    so no two points (of one sweep or of two) share channel realizations; ``suite.json`` lists each sweep's own
    point folders, in value order."""
    from wavefront.utils import derive_seed

    index = json.loads((suite / "suite.json").read_text())
    seeds = {}
    for si, sw in enumerate(index["sweeps"]):
        assert [p.split("/")[0] for p in sw["points"]] == [sw["folder"]] * len(sw["values"])
        for pi, point in enumerate(sw["points"]):
            man = json.loads((suite / point / "manifest.json").read_text())
            assert man["suite"]["value"] == sw["values"][pi]
            assert man["suite"]["point_seed"] == f"derive_seed(suite_seed, {si}, {pi})"
            assert man["seed"] == derive_seed(11, si, pi), point
            seeds[point] = man["seed"]
    assert len(seeds) == 21 and len(set(seeds.values())) == 21
