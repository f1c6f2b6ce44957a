"""MIMO datasets: shards with antenna and user axes, the generator's frames row for row, independence of
the shard size, resume, the torch datasets and their per-(antenna, user) pairs, and bad input."""
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from wavefront.cli import main
from wavefront.datasets import H5FrameDataset, OnTheFlyDataset, pairs
from wavefront.datasets.audit import audit
from wavefront.datasets.generate import MIMO_STREAM, DatasetSpec, generate_dataset
from wavefront.datasets.shards import partial_name, read_shard, shard_name
from wavefront.datasets.torch_datasets import PAIR_KEYS, PairDataset
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.mimo import MimoFrameGenerator, pilots_per_user, user_configs
from wavefront.utils import derive_seed

R, U = 4, 2
# 48 x 14, pilots on every 4th subcarrier (12) and symbols 2, 11: each of the 2 users gets 6 x 2
SMALL = {"ofdm": {"num_subcarriers": 48, "pilot_subcarrier_spacing": 4},
         "channel": {"snr_db": [0.0, 25.0], "delay_spread_s": [25e-9, 300e-9], "doppler_hz": [50.0, 1000.0]}}
FLAGS = ["--rx-antennas", str(R), "--users", str(U), "--rx-correlation", "0.7"]


def mimo_config(**channel) -> SystemConfig:
    d = {**SMALL, "channel": {**SMALL["channel"], **channel},
         "mimo": {"num_rx_antennas": R, "num_users": U, "rx_correlation": 0.7}}
    return SystemConfig.from_dict(d)


def _frames(folder: Path) -> dict[str, np.ndarray]:
    """Every frame array of a folder, shards in order."""
    parts = [read_shard(p) for p in sorted(folder.glob("shard-*.h5"))]
    keys = ("h_true", "y", "pilots_ls", "pilots_rx", "bits", "snr_db", "delay_spread_s", "doppler_hz", "noise_var")
    return {k: np.concatenate([getattr(a, k) for a in parts]) for k in keys}


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.h5"))}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """10 frames in shards of 4 (4, 4, 2), generator batches of 3, through the command line."""
    tmp = tmp_path_factory.mktemp("mimo")
    (tmp / "small.yaml").write_text(json.dumps({"ofdm": SMALL["ofdm"], "channel": SMALL["channel"]}))
    out = tmp / "d"
    rc = main(["generate", "--config", str(tmp / "small.yaml"), *FLAGS, "--frames", "10", "--shard-frames", "4",
               "--batch-size", "3", "--seed", "11", "--device", "cpu", "--no-progress", "--out", str(out)])
    assert rc == 0
    return out


def test_shards_carry_antenna_and_user_axes_and_the_manifest_every_users_pilots(folder):
    cfg = mimo_config()
    a = read_shard(folder / shard_name(0))
    F, T = 48, 14
    data_re = F * T - 12 * 2  # the SISO layout's data positions: every RE but the 12 x 2 pilots
    assert a.h_true.shape == (4, R, U, F, T) and a.y.shape == (4, R, F, T)
    assert a.pilots_ls.shape == a.pilots_rx.shape == (4, R, U, 6, 2) and a.pilot_symbols.shape == (U, 6, 2)
    assert a.bits.shape == (4, U, data_re * 2) and a.bits.dtype == np.uint8 and set(np.unique(a.bits)) <= {0, 1}
    assert a.pilots_dmrs is None and a.h_true.dtype == a.y.dtype == np.complex64
    # each user's pilot subcarriers: its turn of the SISO layout's 0, 4, ..., 44; disjoint, together all of them
    assert a.pilot_subcarriers.tolist() == [[0, 8, 16, 24, 32, 40], [4, 12, 20, 28, 36, 44]]
    assert a.pilot_symbol_indices.tolist() == [2, 11]
    # the received pilots are y at each user's own positions, and LS is them over the known symbols
    for u in range(U):
        at = a.y[:, :, a.pilot_subcarriers[u]][..., a.pilot_symbol_indices]
        assert np.array_equal(a.pilots_rx[:, :, u], at)
    assert np.array_equal(a.pilots_ls, a.pilots_rx / a.pilot_symbols)
    man = json.loads((folder / "manifest.json").read_text())
    assert man["complete"] and man["mimo"]["rx_antennas"] == R and man["mimo"]["users"] == U
    assert man["mimo"]["rx_correlation"] == 0.7 and man["config"]["mimo"]["num_users"] == U
    assert man["pilots_per_user"] == pilots_per_user(cfg)
    assert [len(p["positions"]) for p in man["pilots_per_user"]] == [12, 12]
    assert "independent of shard_frames" in man["seeding"]
    with h5py.File(folder / shard_name(0), "r") as f:
        assert f.attrs["first_frame"] == 0 and "shard_seed" not in f.attrs
    with h5py.File(folder / shard_name(2), "r") as f:
        assert f.attrs["first_frame"] == 8


def test_stored_frames_are_the_generators_rows_for_the_same_seed(folder):
    """Frame n is row n - 3k of batch k = n // 3, drawn with data from derive_seed(11, MIMO_STREAM, k); exact."""
    got = _frames(folder)
    gen = MimoFrameGenerator(mimo_config())
    for k, size in enumerate([3, 3, 3, 1]):
        fr = gen.generate(size, derive_seed(11, MIMO_STREAM, k), with_data=True)
        rows = slice(3 * k, 3 * k + size)
        for key, want in (("h_true", fr.h), ("y", fr.y), ("pilots_ls", fr.pilots_ls), ("pilots_rx", fr.pilots_rx),
                          ("bits", fr.bits), ("snr_db", fr.snr_db), ("delay_spread_s", fr.delay_spread_s),
                          ("doppler_hz", fr.doppler_hz), ("noise_var", fr.noise_var)):
            assert np.array_equal(got[key][rows], want.numpy().astype(got[key].dtype)), (key, k)


def test_frames_do_not_depend_on_the_shard_size_and_ranges_write_the_bytes_of_one_run(folder, tmp_path):
    cfg, ref = mimo_config(), _frames(folder)
    for shard_frames in (3, 10):
        out = tmp_path / f"s{shard_frames}"
        generate_dataset(DatasetSpec(cfg, 11, 10, shard_frames, 3), out)
        again = _frames(out)
        assert all(np.array_equal(again[k], ref[k]) for k in ref), shard_frames
    split = tmp_path / "split"  # two array jobs over the shards of the fixture's run
    spec = DatasetSpec(cfg, 11, 10, 4, 3)
    generate_dataset(spec, split, indices=[2])
    generate_dataset(spec, split, indices=[0, 1])
    assert _bytes(split) == _bytes(folder)


def test_a_killed_run_resumes_to_the_bytes_of_an_uninterrupted_one(folder, tmp_path):
    """What a kill leaves: complete shards, the killed shard's .partial (no writer holds its lock), a stale manifest."""
    run = tmp_path / "run"
    spec = DatasetSpec(mimo_config(), 11, 10, 4, 3)
    generate_dataset(spec, run, indices=[0])
    (run / partial_name(1)).write_bytes((folder / shard_name(1)).read_bytes()[:5000])
    rep = generate_dataset(spec, run)
    assert rep.stale_removed == [partial_name(1)] and rep.skipped == [0] and rep.written == [1, 2]
    assert _bytes(run) == _bytes(folder)
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (run, folder))
    assert a["shards"] == b["shards"] and a["complete"]


def test_h5_and_on_the_fly_samples_carry_the_axes_with_the_same_structure(folder):
    ds = H5FrameDataset(folder)
    assert (len(ds), ds.num_rx_antennas, ds.num_users) == (10, R, U)
    a = ds[5]
    b = next(iter(OnTheFlyDataset(mimo_config(), seed=1, frames_per_epoch=2, batch_size=2)))
    assert list(a) == list(b) == ["pilots", "h", "snr_db", "delay_spread_s", "doppler_hz", "noise_var", "y", "bits"]
    for k in a:
        assert (a[k].dtype, a[k].shape) == (b[k].dtype, b[k].shape), k
    assert a["h"].shape == (R, U, 48, 14) and a["pilots"].shape == (R, U, 6, 2) and a["y"].shape == (R, 48, 14)
    assert a["bits"].dtype == torch.float32 and a["bits"].shape == (U, 1296)
    ref = _frames(folder)
    for key, arr in (("h", "h_true"), ("y", "y"), ("pilots", "pilots_ls"), ("bits", "bits")):
        assert np.array_equal(a[key].numpy(), ref[arr][5].astype(a[key].numpy().dtype)), key
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["h"].shape == (4, R, U, 48, 14)


def test_pairs_view_gives_each_pairs_pilots_and_channel(folder):
    ds = H5FrameDataset(folder)
    view = pairs(ds)
    assert len(view) == 10 * R * U
    ref = _frames(folder)
    for n in (0, 7, 41, 79):
        frame, rest = divmod(n, R * U)
        r, u = divmod(rest, U)
        s = view[n]
        assert tuple(s) == PAIR_KEYS and (int(s["antenna"]), int(s["user"])) == (r, u)
        assert np.array_equal(s["h"].numpy(), ref["h_true"][frame, r, u])
        assert np.array_equal(s["pilots"].numpy(), ref["pilots_ls"][frame, r, u])
        assert float(s["snr_db"]) == float(ref["snr_db"][frame])
    one = pairs(ds, users=[1])
    assert len(one) == 10 * R and {int(one[i]["user"]) for i in range(len(one))} == {1}
    alone = pairs(ds, users=1)  # one int is that user (it raised TypeError: 'int' object is not iterable)
    assert len(alone) == len(one) and all(torch.equal(alone[i]["h"], one[i]["h"]) for i in (0, len(one) - 1))
    with pytest.raises(ConfigError, match="users"):
        pairs(ds, users=[2])
    with pytest.raises(ConfigError, match=r"users=\[2\]"):
        pairs(ds, users=2)


def test_noiseless_pair_pilots_are_that_pairs_channel_at_that_users_pilots(tmp_path):
    """At 100 dB every pair's LS pilots equal its own channel at its user's positions: no other user leaks in."""
    cfg = mimo_config(snr_db=100.0)
    generate_dataset(DatasetSpec(cfg, 3, 3, 3, 3), tmp_path)
    view = pairs(H5FrameDataset(tmp_path))
    subs = [torch.tensor(c.ofdm.pilot_subcarriers) for c in user_configs(cfg)]
    sym = torch.tensor(cfg.ofdm.pilot_symbol_indices)
    for n in range(len(view)):
        s = view[n]
        at = s["h"][subs[int(s["user"])][:, None], sym[None, :]]
        # noise std at 100 dB is 1e-5 per element: 1e-4 is 10 sigma; another user's pilots would be O(1)
        torch.testing.assert_close(s["pilots"], at, rtol=0, atol=1e-4)
    fly = list(pairs(OnTheFlyDataset(cfg, seed=2, frames_per_epoch=2, batch_size=2)))
    assert len(fly) == 2 * R * U and [(int(s["antenna"]), int(s["user"])) for s in fly[:3]] == [(0, 0), (0, 1), (1, 0)]
    for s in fly:
        at = s["h"][subs[int(s["user"])][:, None], sym[None, :]]
        torch.testing.assert_close(s["pilots"], at, rtol=0, atol=1e-4)


def test_siso_datasets_refuse_the_pairs_view(tmp_path):
    with pytest.raises(ConfigError, match="single-antenna"):
        pairs(OnTheFlyDataset(SystemConfig(), seed=1, frames_per_epoch=2, batch_size=2))
    generate_dataset(DatasetSpec(SystemConfig(), 1, 2, 2, 2), tmp_path)
    with pytest.raises(ConfigError, match="single-antenna"):
        PairDataset(H5FrameDataset(tmp_path))


def test_dmrs_shards_carry_the_group_observations(tmp_path):
    cfg = mimo_config().updated(mimo={"pilots": "dmrs-type1"})
    generate_dataset(DatasetSpec(cfg, 4, 2, 2, 2), tmp_path)
    a = read_shard(tmp_path / shard_name(0))
    fr = MimoFrameGenerator(cfg).generate(2, derive_seed(4, MIMO_STREAM, 0), with_data=True)
    assert np.array_equal(a.pilots_dmrs, fr.pilots_dmrs.numpy()) and np.array_equal(a.pilots_ls, fr.pilots_ls.numpy())
    s = H5FrameDataset(tmp_path)[1]
    assert torch.equal(s["dmrs_rx"], fr.pilots_dmrs[1])
    assert json.loads((tmp_path / "manifest.json").read_text())["pilots_per_user"] == pilots_per_user(cfg)


def test_audit_works_per_pair_and_finds_a_copied_mimo_folder(folder, tmp_path):
    rep = audit([folder])
    assert rep.frames == rep.realizations == 10 * R * U  # correlated antennas are not copies
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    rep = audit([folder, copy])
    assert rep.realizations == 10 * R * U
    (o,) = rep.overlaps
    assert o.shared_realizations == o.frames_a == o.frames_b == 10 * R * U
    assert "antenna" in rep.groups[0].examples[0] and "user" in rep.groups[0].examples[0]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flags,want", [
    (["--rx-antennas", "0"], "rx_antennas=0: must be a positive integer"),
    (["--rx-correlation", "1.0"], "mimo.rx_correlation=1.0: rx_correlation must be in [0, 1)"),
    (["--rx-correlation", "-0.1"], "mimo.rx_correlation=-0.1"),
    (["--users", "24"], "mimo.num_users=24: must divide the 12 pilot subcarriers"),
    (["--users", "5", "--mimo-pilots", "dmrs-type1"], "mimo.num_users=5: dmrs-type1 has 4 DM-RS ports"),
    (["--rx-correlation", "0.5"], "rx_correlation=0.5: correlates the base station's antennas, and this config has one"),
])
def test_bad_mimo_input_to_generate_is_one_line_exit_2_and_writes_nothing(flags, want, tmp_path, capsys):
    (tmp_path / "small.yaml").write_text(json.dumps({"ofdm": SMALL["ofdm"]}))
    try:
        rc = main(["generate", "--config", str(tmp_path / "small.yaml"), "--frames", "4", "--out", str(tmp_path / "o"),
                   "--no-progress", *flags])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2 and want in _one_line(capsys)
    assert not (tmp_path / "o").exists()


def test_mat_export_and_import_refuse_mimo_in_one_line(folder, tmp_path, capsys):
    assert main(["export-mat", "--data", str(folder), "--out", str(tmp_path / "mat"), "--no-progress"]) == 2
    err = _one_line(capsys)
    assert f"data='{folder}': holds MIMO frames (4 antennas x 2 users)" in err and "SISO only" in err
    assert not (tmp_path / "mat").exists() or not any((tmp_path / "mat").rglob("*.mat"))
    (tmp_path / "in").mkdir()
    assert main(["import-mat", "--mat", str(tmp_path / "in"), "--out", str(tmp_path / "imp"), "--preset", "mimo-chest",
                 "--no-progress"]) == 2
    assert "mimo='16 antennas x 4 users'" in _one_line(capsys)
    assert not (tmp_path / "imp").exists()


def test_siso_shards_keep_their_format(tmp_path):
    """R = U = 1: no MIMO arrays, the shard seed attribute and the SISO manifest (the bytes: the other dataset tests)."""
    generate_dataset(DatasetSpec(SystemConfig(), 1, 2, 2, 2), tmp_path)
    with h5py.File(tmp_path / shard_name(0), "r") as f:
        assert set(f) == {"h_true", "pilots_ls", "pilots_rx", "pilot_symbols", "pilot_subcarriers",
                          "pilot_symbol_indices", "snr_db", "delay_spread_s", "doppler_hz", "noise_var", "profile"}
        assert f["h_true"].shape == (2, 120, 14) and "shard_seed" in f.attrs and "first_frame" not in f.attrs
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert "mimo" not in man and "pilots_per_user" not in man and man["seeding"].startswith("shard i uses")
    assert list(H5FrameDataset(tmp_path)[0]) == ["pilots", "h", "snr_db", "delay_spread_s", "doppler_hz", "noise_var"]


@pytest.mark.slow
def test_a_sigkilled_mimo_generate_resumes_to_the_bytes_of_an_uninterrupted_run(tmp_path):
    """The real thing (about 30 s): SIGKILL while shards are being written, rerun the same command."""
    from kill_helpers import kill_generate_midway

    args = ["generate", "--rx-antennas", "4", "--users", "2", "--rx-correlation", "0.7", "--frames", "400",
            "--shard-frames", "50", "--batch-size", "25", "--seed", "5", "--device", "cpu", "--threads", "1",
            "--no-progress"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main([*args, "--out", str(ref)]) == 0
    done = kill_generate_midway(args, run, once_shard=2)  # two shards done, the third under way
    assert len(done) < 8, done  # really interrupted
    assert main([*args, "--out", str(run)]) == 0
    assert not list(run.glob("*.partial")) and _bytes(run) == _bytes(ref) and len(_bytes(ref)) == 8
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (run, ref))
    assert a["complete"] and a["shards"] == b["shards"]


def test_a_rho_range_stores_each_frames_rho_and_the_datasets_serve_it(folder, tmp_path):
    """With ``mimo.rx_correlation`` a range, rho is drawn per frame: the shard keeps each frame's value
    (the generator's draw, bit for bit), in range, and both torch datasets and their pairs serve it."""
    d = {**SMALL, "mimo": {"num_rx_antennas": R, "num_users": U, "rx_correlation": [0.2, 0.9]}}
    cfg = SystemConfig.from_dict(d)
    generate_dataset(DatasetSpec(cfg, 5, 7, 4, 3), tmp_path)
    rho = np.concatenate([read_shard(p).rx_correlation for p in sorted(tmp_path.glob("shard-*.h5"))])
    gen = MimoFrameGenerator(cfg)
    drawn = np.concatenate([gen.generate(min(3, 7 - 3 * k), derive_seed(5, MIMO_STREAM, k), with_data=True)
                            .rx_correlation.numpy() for k in range(3)])
    assert rho.dtype == np.float32 and np.array_equal(rho, drawn)
    assert 0.2 <= rho.min() and rho.max() <= 0.9 and len(np.unique(rho)) == 7
    with h5py.File(tmp_path / shard_name(0)) as f:
        assert f["rx_correlation"].attrs["units"].startswith("1 ")
    ds = H5FrameDataset(tmp_path)
    assert [float(ds[i]["rx_correlation"]) for i in range(7)] == rho.tolist()
    assert float(pairs(ds)[R * U * 5 + 3]["rx_correlation"]) == rho[5]
    fly = next(iter(OnTheFlyDataset(cfg, seed=1, frames_per_epoch=2, batch_size=2)))
    assert 0.2 <= float(fly["rx_correlation"]) <= 0.9
    assert read_shard(folder / shard_name(0)).rx_correlation is None  # a fixed rho: the config's, nothing per frame


def test_pairs_views_state_the_length_they_yield_and_refuse_a_repeated_user(folder):
    fly = OnTheFlyDataset(mimo_config(), seed=2, frames_per_epoch=2, batch_size=2)
    for users, n in ((None, 2 * R * U), ([1], 2 * R)):
        view = pairs(fly, users=users)
        assert len(view) == len(list(view)) == n, users
    for frames in (fly, H5FrameDataset(folder)):  # a repeated user would serve every pair of that user twice
        with pytest.raises(ConfigError, match=r"users=\[1, 1\]: must be distinct"):
            pairs(frames, users=[1, 1])


def test_on_the_fly_pairs_carry_their_frames_rho(tmp_path):
    """A per-frame rho (``mimo.rx_correlation`` a range) reaches every pair of the on-the-fly view, as it does
    the stored view's (the rho-range test above)."""
    d = {**SMALL, "mimo": {"num_rx_antennas": R, "num_users": U, "rx_correlation": [0.2, 0.9]}}
    fly = OnTheFlyDataset(SystemConfig.from_dict(d), seed=1, frames_per_epoch=2, batch_size=2)
    rho = [float(s["rx_correlation"]) for s in fly]
    got = [float(s["rx_correlation"]) for s in pairs(fly)]
    assert rho[0] != rho[1] and got == [rho[0]] * (R * U) + [rho[1]] * (R * U)
