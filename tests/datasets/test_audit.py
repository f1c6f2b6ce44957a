"""`wavefront audit`: repeated channel realizations within and across folders, and what import-mat warns."""
import json
import warnings

import numpy as np
import pytest
import scipy.io

from wavefront.cli import main
from wavefront.datasets.audit import aligned_residual, audit, signature, unit_energy
from wavefront.datasets.generate import DatasetSpec, generate_dataset
from wavefront.datasets.matfiles import export_mat, frame_to_mat, import_mat, mat_name
from wavefront.datasets.shards import read_shard, shard_name
from wavefront.sim.config import SystemConfig, preset

GRID = {"snr_db": [0.0, 20.0], "snr_step_db": 10.0, "delay_spread_s": [50e-9, 150e-9], "delay_spread_step_s": 50e-9,
        "doppler_hz": [100.0, 400.0], "doppler_step_hz": 100.0}  # 3 delay spreads x 4 Dopplers: 12 conditions


def _make(folder, realization: str, seed: int, frames: int = 240):
    cfg = SystemConfig.from_dict({"ofdm": {"pilot_subcarrier_spacing": 3},
                                  "channel": {**GRID, "realization": realization}})
    generate_dataset(DatasetSpec(cfg, seed, frames, shard_frames=100, batch_size=50), folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    return {"leaky_train": _make(root / "leaky_train", "per-condition", 1),
            "leaky_test": _make(root / "leaky_test", "per-condition", 2, 90),
            "indep_train": _make(root / "indep_train", "independent", 1),
            "indep_test": _make(root / "indep_test", "independent", 2, 90)}


def _conditions(folder) -> set:
    out = set()
    for p in sorted(folder.glob("shard-*.h5")):
        a = read_shard(p)
        out |= set(zip(np.round(a.delay_spread_s * 1e9, 3).tolist(), a.doppler_hz.tolist()))
    return out


def test_audit_flags_a_reference_protocol_folder_and_passes_an_independent_one(folders):
    leaky = audit([folders["leaky_train"]])
    n_cond = len(_conditions(folders["leaky_train"]))
    assert n_cond == 12
    s = leaky.sets[0]
    assert (s.frames, s.realizations, s.repeating_frames) == (240, 12, 240)  # one realization per condition
    assert leaky.groups[0].frames == s.largest_group and len(leaky.groups[0].conditions) == 1  # one condition each

    indep = audit([folders["indep_train"]])
    s = indep.sets[0]
    assert (s.frames, s.realizations, s.repeating_frames) == (240, 240, 0)
    assert indep.groups == [] and not indep.has_repeats
    assert indep.comparisons < 240  # hashed into buckets: nowhere near the 28,680 pairs


def test_audit_finds_the_overlap_between_leaky_train_and_test_and_strict_fails_on_it(folders, tmp_path, capsys):
    rep = audit([folders["leaky_train"], folders["leaky_test"], folders["indep_test"]])
    shared = _conditions(folders["leaky_train"]) & _conditions(folders["leaky_test"])
    assert len(rep.overlaps) == 1  # the independent folder shares nothing with either
    o = rep.overlaps[0]
    assert o.shared_realizations == len(shared) and (o.frames_b, o.fraction_b) == (90, 1.0)

    train, test = str(folders["leaky_train"]), str(folders["leaky_test"])
    out = tmp_path / "report.json"
    assert main(["audit", train, test, "--strict", "--no-progress", "--json", str(out)]) == 1
    text = capsys.readouterr()
    assert f"{len(shared)} shared realization(s)" in text.out and "--strict" in text.err
    assert json.loads(out.read_text())["overlaps"][0]["shared_realizations"] == len(shared)
    assert main(["audit", train, test, "--no-progress"]) == 0  # a report, not a failure, without --strict
    capsys.readouterr()
    assert main(["audit", str(folders["indep_train"]), str(folders["indep_test"]), "--strict", "--no-progress"]) == 0
    assert "overlap between folders: none" in capsys.readouterr().out


def _ramped(h: np.ndarray, rng) -> np.ndarray:
    """Returns ``h`` [N, F, T] with a random gain, common phase and timing offset (ramp across subcarriers)."""
    n, f = h.shape[:2]
    gain = rng.uniform(0.3, 3.0, (n, 1, 1))
    phase = rng.uniform(-np.pi, np.pi, (n, 1, 1))
    ramp = rng.uniform(-0.45, 0.45, (n, 1, 1)) * np.arange(f)[None, :, None]  # up to a CP-long offset
    return (h * gain * np.exp(1j * (phase + ramp))).astype(np.complex64)


def test_aligned_residual_removes_gain_common_phase_and_timing_ramp_and_nothing_more(folders):
    rng = np.random.default_rng(0)
    h = read_shard(folders["indep_train"] / shard_name(0)).h_true[:50]
    copy = _ramped(h, rng)
    res = np.array([aligned_residual(unit_energy(h[i]), unit_energy(copy[i:i + 1]))[0] for i in range(50)])
    assert res.max() < 1e-10  # float32 rounding only
    assert np.abs(signature(h) - signature(copy)).max() < 1e-6  # the hashed signature does not see them either
    # a copy with -40 dB of independent noise is not the same realization at -60 dB
    noise = (rng.standard_normal(h.shape) + 1j * rng.standard_normal(h.shape)) * np.sqrt(
        1e-4 / 2 * np.mean(np.abs(copy) ** 2, axis=(1, 2), keepdims=True))
    res_noisy = np.array([aligned_residual(unit_energy(h[i]), unit_energy((copy + noise)[i:i + 1]))[0] for i in range(50)])
    assert 10 * np.log10(res_noisy.min()) > -45
    # distinct realizations are far apart
    res_other = aligned_residual(unit_energy(h[0]), unit_energy(h[1:]))
    assert 10 * np.log10(res_other.min()) > -40


def test_audit_matches_rotated_and_ramped_copies_in_a_mat_folder(folders, tmp_path):
    # a .mat folder holding ramped copies of 40 frames of an HDF5 folder, plus 25 frames of its own
    rng = np.random.default_rng(1)
    src = read_shard(folders["indep_train"] / shard_name(0))
    other = read_shard(folders["indep_test"] / shard_name(0))
    h = np.concatenate([_ramped(src.h_true[:40], rng), other.h_true[:25]])
    pf, pt = src.pilot_subcarriers, src.pilot_symbol_indices
    mat = tmp_path / "mat"
    mat.mkdir()
    for n in range(len(h)):
        scipy.io.savemat(mat / mat_name(n + 1, 10, 100, 300, 3, "A"), {"H": frame_to_mat(h[n], h[n][pf[:, None], pt], pf, pt)})
    rep = audit([folders["indep_train"], mat])
    assert rep.sets[1].kind == "mat" and rep.sets[1].repeating_frames == 0
    o = rep.overlaps[0]
    assert (o.shared_realizations, o.frames_a, o.frames_b) == (40, 40, 40)
    assert rep.max_match_db < -100  # rounding-level matches: far inside the -60 dB tolerance


def test_tolerance_decides_what_counts_as_the_same_realization(folders, tmp_path):
    rng = np.random.default_rng(2)
    src = read_shard(folders["indep_train"] / shard_name(0))
    h = src.h_true[:30]
    noisy = h + (rng.standard_normal(h.shape) + 1j * rng.standard_normal(h.shape)).astype(np.complex64) * np.sqrt(
        1e-5 / 2 * np.mean(np.abs(h) ** 2, axis=(1, 2), keepdims=True)).astype(np.float32)  # -50 dB apart
    pf, pt = src.pilot_subcarriers, src.pilot_symbol_indices
    mat = tmp_path / "mat"
    mat.mkdir()
    for n in range(30):
        scipy.io.savemat(mat / mat_name(n + 1, 10, 100, 300, 3, "A"),
                         {"H": frame_to_mat(noisy[n], noisy[n][pf[:, None], pt], pf, pt)})
    assert audit([folders["indep_train"], mat]).overlaps == []  # -50 dB apart: distinct at -60 dB
    o = audit([folders["indep_train"], mat], tolerance_db=-40).overlaps[0]
    assert (o.shared_realizations, o.frames_b) == (30, 30)


def test_import_mat_warns_with_figures_when_the_data_repeat_realizations(folders, tmp_path):
    mat = tmp_path / "mat"
    export_mat(folders["leaky_test"], mat / "test")
    export_mat(folders["leaky_train"], mat / "train")
    export_mat(folders["indep_test"], tmp_path / "mat_indep")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import_mat(mat, tmp_path / "imported", preset("default"))
    text = " | ".join(str(w.message) for w in caught)
    n_test = len(_conditions(folders["leaky_test"]))
    assert f"test: 90 frames hold {n_test} distinct channel realization(s)" in text
    assert "train: 240 frames hold 12 distinct channel realization(s), 100.0% of frames repeat one" in text
    assert f"share {n_test} realization(s)" in text
    man = json.loads((tmp_path / "imported" / "train" / "manifest.json").read_text())
    assert man["realization_audit"]["realizations"] == 12
    assert man["realization_audit"]["shared_with_imported_folders"][0]["shared_realizations"] == n_test

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import_mat(tmp_path / "mat_indep", tmp_path / "imported_indep", preset("default"))
    assert not [w for w in caught if "realization" in str(w.message)]
    man = json.loads((tmp_path / "imported_indep" / "manifest.json").read_text())
    assert man["realization_audit"]["realizations"] == 90
    assert man["channel_realization"] == "unknown: imported frames; see realization_audit"


def test_bad_audit_input_is_one_line_and_exit_2(folders, tmp_path, capsys):
    d = str(folders["leaky_train"])
    for args, words in ((["audit", str(tmp_path / "nowhere")], "no such file or folder"),
                        (["audit", d, "--tolerance-db", "5"], "tolerance_db=5.0"),
                        (["audit", d, d], "give each folder once"),
                        (["audit", str(tmp_path)], "no dataset folder")):
        assert main([*args, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv", [["audit", "{d}"], ["verify", "--data", "{d}"], ["export-mat", "--data", "{d}", "--out", "{o}"]])
@pytest.mark.parametrize("manifest", ["{", '{"format": "something-else"}'])
def test_a_corrupt_manifest_of_a_folder_read_is_named_data_not_out(argv, manifest, tmp_path, capsys):
    # read_manifest named every folder "out", as if the reader had been asked to write it
    d = tmp_path / "ds"
    d.mkdir()
    (d / "manifest.json").write_text(manifest)
    rc = main([a.format(d=d, o=tmp_path / "mat") for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"wavefront: error: data='{d}': {d}/manifest.json is "), err
    assert (d / "manifest.json").read_text() == manifest and not (tmp_path / "mat").exists()
