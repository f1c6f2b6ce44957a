import json
import re

import numpy as np
import pytest
import scipy.io

from wavefront.cli import main
from wavefront.datasets import H5FrameDataset
from wavefront.datasets.generate import DatasetSpec, generate_dataset, update_manifest
from wavefront.datasets.matfiles import NAME_RE, export_mat, frame_to_mat, import_mat
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


def test_an_imported_folder_of_several_snrs_keeps_a_point_per_snr(suite, tmp_path):
    """import-mat records the span of its files' SNRs as a range: that is not a prior drawn per frame."""
    from wavefront.datasets.sources import folder_points

    mat, one = tmp_path / "mat", tmp_path / "one"
    one.mkdir()
    for k, snr in enumerate((0, 5)):
        export_mat(suite / "SNR_test_set" / f"SNR_{snr}", mat / str(snr))
        for f in (mat / str(snr)).glob("*.mat"):  # one folder, frame numbers 1..24
            n, rest = f.name.split("_", 1)
            f.rename(one / f"{int(n) + 12 * k}_{rest}")
    import_mat(one, tmp_path / "back", preset("adafortitran-paper"), snr_convention="per-re")
    points = folder_points(tmp_path / "back", preset("adafortitran-paper"))
    assert [(p.snr_db, p.available, p.axis) for p in points] == [(0.0, 12, "snr_db"), (5.0, 12, "snr_db")]


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


def _write_mats(folder, frames, spacing=10, kind="TDL-A"):
    """Writes reference files ``{n}_SNR-{snr}_DS-100_DOP-{dop}_N-{spacing}_{kind}.mat`` on the default 120 x 14 grid;
    ``frames``: (n, snr, dop) each; frame n's channel is n everywhere and its LS pilots n + 1j."""
    o = preset("default").ofdm
    pf, pt = np.asarray(o.pilot_subcarriers), np.asarray(o.pilot_symbols)
    folder.mkdir(parents=True, exist_ok=True)
    for n, snr, dop in frames:
        H = frame_to_mat(np.full((120, 14), n, np.complex64), np.full((12, 2), n + 1j, np.complex64), pf, pt)
        scipy.io.savemat(folder / f"{n}_SNR-{snr}_DS-100_DOP-{dop}_N-{spacing}_{kind}.mat", {"H": H})


def test_import_takes_frames_in_number_order_and_records_the_names_ranges(tmp_path):
    # 10 frames: in file-name order "10_..." sorts before "2_...", in frame order it is last
    _write_mats(tmp_path / "mat", [(n, 2 * n, 100 * n) for n in range(1, 11)])
    assert import_mat(tmp_path / "mat", tmp_path / "o", preset("default"), shard_frames=4, audit=False) == 10
    arrays = [read_shard(tmp_path / "o" / shard_name(i)) for i in range(3)]
    h = np.concatenate([a.h_true for a in arrays])
    assert h[:, 0, 0].real.tolist() == list(range(1, 11))
    assert np.concatenate([a.snr_db for a in arrays]).tolist() == [2.0 * n for n in range(1, 11)]
    a = arrays[0]
    assert np.array_equal(a.pilots_rx, a.pilots_ls) and np.all(a.pilot_symbols == 1)  # only LS survives in .mat
    assert np.all(a.pilots_ls == (np.arange(1, 5) + 1j)[:, None, None])
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    # not audited: the manifest must not point at a realization_audit it does not hold
    assert "realization_audit" not in man and "not audited" in man["channel_realization"]
    channel = man["config"]["channel"]
    assert channel["snr_db"] == [2.0, 20.0] and channel["doppler_hz"] == [100.0, 1000.0]
    assert channel["delay_spread_s"] == pytest.approx(100e-9)  # one value: a fixed condition, not a range


@pytest.mark.parametrize("frames,kw,message", [
    ([(1, 5, 100), (1, 6, 100)], {}, r"1_SNR-6_DS-100_DOP-100_N-10_TDL-A\.mat.*frame number 1 appears twice"),
    ([(1, 5, 100)], {"kind": "A"}, r"channel type 'A' is not TDL-A\.\.TDL-E"),
    ([(1, 5, 100)], {"kind": "TDL-F"}, r"channel type 'TDL-F' is not TDL-A\.\.TDL-E"),
])
def test_malformed_mat_trees_are_refused_naming_the_file(frames, kw, message, tmp_path):
    _write_mats(tmp_path / "mat", frames, **kw)
    with pytest.raises(ConfigError, match=message):
        import_mat(tmp_path / "mat", tmp_path / "o", preset("default"), audit=False)
    assert not list((tmp_path / "o").rglob("*.h5")) if (tmp_path / "o").exists() else True


def test_one_spacing_per_folder_and_pilots_exactly_at_the_grids_pilot_positions(tmp_path):
    _write_mats(tmp_path / "a", [(1, 5, 100)])
    _write_mats(tmp_path / "a", [(2, 5, 100)], spacing=5)
    with pytest.raises(ConfigError, match=r"2_SNR-5_DS-100_DOP-100_N-5_TDL-A\.mat.*its spacing differs from that of 1_"):
        import_mat(tmp_path / "a", tmp_path / "o", preset("default"), audit=False)
    _write_mats(tmp_path / "b", [(1, 5, 100), (2, 5, 100)])
    f = tmp_path / "b" / "2_SNR-5_DS-100_DOP-100_N-10_TDL-A.mat"
    H = scipy.io.loadmat(f)["H"]
    H[1, 2, 1] = 0.5  # a non-zero off the pilot grid: the reader would take it as a pilot
    scipy.io.savemat(f, {"H": H})
    with pytest.raises(ConfigError, match=r"2_SNR.*H\[:,:,1\] is non-zero at 25 entries, expected the 24 pilots of N-10"):
        import_mat(tmp_path / "b", tmp_path / "o2", preset("default"), audit=False)


def test_export_names_an_explicit_kronecker_layouts_spacing_and_refuses_an_unequal_one(tmp_path):
    grid = lambda subs: SystemConfig.from_dict({"ofdm": {"pilot_positions": [[f, t] for f in subs for t in (2, 11)]}})
    generate_dataset(DatasetSpec(grid((0, 4, 8)), 1, 2, 2, 2), tmp_path / "even")
    export_mat(tmp_path / "even", tmp_path / "m")
    assert sorted(p.name.split("_")[4] for p in (tmp_path / "m").glob("*.mat")) == ["N-4", "N-4"]
    generate_dataset(DatasetSpec(grid((0, 4, 10)), 1, 2, 2, 2), tmp_path / "uneven")
    with pytest.raises(ConfigError, match=r"pilot subcarriers .* are not equally spaced"):
        export_mat(tmp_path / "uneven", tmp_path / "m2")


def test_mat_labels_take_values_within_1e_3_of_an_integer_and_round_halves_up_only_when_told():
    from wavefront.datasets.matfiles import mat_label

    assert mat_label(np.float32(150e-9) * 1e9, "ds", "w", False) == 150  # float32 storage: 150 to about 1e-5
    assert mat_label(7.0009, "snr_db", "w", False) == 7 and mat_label(6.9991, "snr_db", "w", False) == 7
    for v in (7.0011, 7.3, 7.5):
        with pytest.raises(ConfigError, match=rf"snr_db={v}: w: .*pass --round"):
            mat_label(v, "snr_db", "w", False)
    assert [mat_label(v, "x", "w", True) for v in (2.5, 3.5, 7.3, 0.49)] == [3, 4, 7, 0]


def test_export_refuses_a_shard_the_manifest_does_not_vouch_for(tmp_path):
    # a valid shard in the wrong place (shard 0's bytes as shard 1): HDF5 and the content checksum pass, the manifest's
    # SHA-256 does not, so its frames (shard 0's again) are never exported
    from wavefront.datasets import ShardError

    generate_dataset(DatasetSpec(preset("default"), 1, 4, 2, 2), tmp_path / "d")
    (tmp_path / "d" / shard_name(1)).write_bytes((tmp_path / "d" / shard_name(0)).read_bytes())
    with pytest.raises(ShardError, match=r"shard-00001\.h5.*nothing of it was exported"):
        export_mat(tmp_path / "d", tmp_path / "m")
    assert sorted(int(p.name.split("_")[0]) for p in (tmp_path / "m").glob("*.mat")) == [1, 2]  # shard 0's only


@pytest.mark.parametrize("where,value", [((3, 4, 0), np.nan), ((0, 13, 0), np.inf), ((10, 2, 1), np.nan + 1j)])
def test_a_non_finite_channel_or_pilot_in_a_mat_file_is_refused_naming_the_file_and_entry(tmp_path, where, value):
    # A NaN in the channel was imported as a frame (numpy warned "invalid value encountered in cast"); its
    # MSE then reads as a number downstream. (10, 2) is a pilot of N-10 on symbol 2: NaN there is refused too.
    _write_mats(tmp_path / "mat", [(1, 5, 100), (2, 5, 100)])
    f = tmp_path / "mat" / "2_SNR-5_DS-100_DOP-100_N-10_TDL-A.mat"
    H = scipy.io.loadmat(f)["H"]
    H[where] = value
    scipy.io.savemat(f, {"H": H})
    with pytest.raises(ConfigError, match=rf"2_SNR-5_DS-100_DOP-100_N-10_TDL-A\.mat'?: H holds 1 NaN or inf entries "
                                          rf"\(first at \[F, T, k\] = \[{where[0]}, {where[1]}, {where[2]}\]\)"):
        import_mat(tmp_path / "mat", tmp_path / "o", preset("default"), audit=False)
    assert not list((tmp_path / "o").rglob("*.h5"))
