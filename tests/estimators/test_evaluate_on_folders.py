"""``evaluate`` on a user's folder: --frames-per-point takes the first N frames of each point, and --baselines-only
gives the classical rows where no checkpoint fits (or none is trained yet)."""
import csv
import json

import h5py
import numpy as np
import pytest
import torch

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.estimators.evaluate import evaluate
from wavefront.sim.config import preset
from wavefront.sim.estimators import Estimator

FRAMES = 12  # per sub-folder, in shards of 5, 5 and 2: a first N of 7 spans two shards


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """A tree of two fixed-condition folders (default grid and pilots, SNR 5 and 15 dB), 12 frames each."""
    root = tmp_path_factory.mktemp("suite")
    for name, snr in (("a", 5.0), ("b", 15.0)):
        cfg = root.parent / f"{name}.yaml"
        cfg.write_text(f"channel:\n  snr_db: {snr}\n")
        assert main(["generate", "--config", str(cfg), "--frames", str(FRAMES), "--shard-frames", "5",
                     "--batch-size", "5", "--seed", "4", "--threads", "1", "--no-progress", "--device", "cpu",
                     "--out", str(root / name)]) == 0
    return root


def first_frames_power_db(folder, n: int) -> float:
    """10 log10 of the mean |h|^2 [dB] over the folder's first ``n`` frames, read from its shards in manifest order."""
    shards = [s["file"] for s in json.loads((folder / "manifest.json").read_text())["shards"]]
    h = np.concatenate([h5py.File(folder / s, "r")["h_true"][:] for s in shards])
    assert h.shape[0] == FRAMES
    return float(10 * np.log10(np.mean(np.abs(h[:n].astype(np.complex128)) ** 2)))


class Zero(Estimator):
    """H_hat = 0: its MSE is the mean channel power of the frames it is given, a closed form to read off the shards."""

    name, needs = "zero", "none"

    def __init__(self, cfg):
        self.shape = tuple(cfg.ofdm.grid_shape)

    def estimate(self, pilots, meta):
        return torch.zeros((pilots.shape[0], *self.shape), dtype=torch.complex64)


@pytest.fixture
def few_simulated(monkeypatch):
    """Simulated points' default of 5 frames, fewer than a folder point holds: a folder that fell back to it shows."""
    monkeypatch.setattr("wavefront.estimators.evaluate.SIMULATED_FRAMES_PER_POINT", 5)


@pytest.mark.parametrize("n,used", [(7, 7), (1, 1), (None, FRAMES), (50, FRAMES)])
def test_frames_per_point_on_a_folder_takes_the_first_n_frames_of_each_point(suite, few_simulated, n, used):
    cfg = preset("default")
    rows = evaluate(Zero(cfg), cfg, suite=str(suite), frames_per_point=n, baselines=())
    assert [(r["snr_db"], r["frames"]) for r in rows] == [(5.0, used), (15.0, used)]
    for r, name in zip(rows, ("a", "b")):  # rows round to 1e-3 dB
        assert r["zero_db"] == pytest.approx(first_frames_power_db(suite / name, used), abs=6e-4)


def test_evaluate_suite_honours_frames_per_point_and_says_so(suite, few_simulated, tmp_path, capsys):
    base = ["evaluate", "--suite", str(suite), "--baselines", "ls-linear", "--device", "cpu", "--no-plots"]
    assert main([*base, "--frames-per-point", "7", "--out", str(tmp_path / "seven")]) == 0
    err = capsys.readouterr().err
    assert "--frames-per-point 7 with --suite: each point is evaluated on its first 7 frames" in err
    assert main([*base, "--out", str(tmp_path / "all")]) == 0  # without the flag: every frame, and no such line
    assert "--frames-per-point" not in capsys.readouterr().err
    seven, every = (list(csv.DictReader(open(tmp_path / d / "results.csv"))) for d in ("seven", "all"))
    assert [r["frames"] for r in seven] == ["7", "7"] and [r["frames"] for r in every] == [str(FRAMES)] * 2
    assert seven[0]["ls-linear_db"] != every[0]["ls-linear_db"]  # other frames: another mean
    recorded = json.loads((tmp_path / "seven" / "results.json").read_text())["rows"]
    assert {r["frames"] for r in recorded} == {7}


CLASSICAL = "ls-linear,lmmse-robust,lmmse-estimated,mmse-bayes,lmmse-genie"


def test_baselines_only_rows_are_the_classical_rows_of_an_evaluation_with_a_checkpoint(suite, tmp_path):
    base = ["evaluate", "--suite", str(suite), "--baselines", CLASSICAL, "--frames-per-point", "6", "--device", "cpu",
            "--no-plots"]
    assert main([*base, "--out", str(tmp_path / "model")]) == 0  # the default learned model fits the default grid
    assert main([*base, "--baselines-only", "--out", str(tmp_path / "alone")]) == 0
    model, alone = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("model", "alone"))
    learned = {r["estimator"] for r in model["rows"]} - set(CLASSICAL.split(","))
    assert learned and model["checkpoint"] is not None and alone["checkpoint"] is None
    key = lambda r: (r["snr_db"], r["estimator"])  # noqa: E731
    kept = sorted((r for r in model["rows"] if r["estimator"] not in learned), key=key)
    assert [key(r) for r in sorted(alone["rows"], key=key)] == [key(r) for r in kept]  # 2 points x 5 estimators
    for a, m in zip(sorted(alone["rows"], key=key), kept):  # the same frames through the same code: equal to rounding
        for field in ("mse_db", "mse_se_db", "nmse_db", "bound_db", "gap_db"):
            assert a[field] == pytest.approx(m[field], abs=1e-9), (key(a), field)
        assert (a["frames"], a["given"], a["in_prior"]) == (m["frames"], m["given"], m["in_prior"])
    with_model, without = (list(csv.DictReader(open(tmp_path / d / "results.csv"))) for d in ("model", "alone"))
    # the table: the model's column and its gap to the bound (with its SE) gone, every other column as it was
    model_columns = {f"{n}_db" for n in learned} | {"gap_to_bound_db", "gap_se_db"}
    assert list(without[0]) == [c for c in with_model[0] if c not in model_columns]
    (name,) = learned  # the gap's SE is the model's MSE's, the bound being exact
    se = {r["snr_db"]: r["mse_se_db"] for r in model["rows"] if r["estimator"] == name}
    assert [float(r["gap_se_db"]) for r in with_model] == pytest.approx([se[float(r["snr_db"])] for r in with_model],
                                                                         abs=6e-4)
    assert all(float(r["gap_se_db"]) > 0 for r in with_model)
    assert [{c: r[c] for c in without[0]} for r in with_model] == without


@pytest.fixture(scope="module")
def lattice_folder(tmp_path_factory):
    """Frames with scattered pilots (lattice-4x6): no shipped checkpoint fits them."""
    out = tmp_path_factory.mktemp("lattice") / "frames"
    assert main(["generate", "--preset", "default", "--pilots", "lattice-4x6", "--frames", "4", "--seed", "2",
                 "--threads", "1", "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("checkpoint", [[], ["--checkpoint", "reesnet"]])
def test_a_checkpoint_that_does_not_fit_the_frames_names_baselines_only_which_then_runs(lattice_folder, tmp_path,
                                                                                       capsys, checkpoint):
    argv = ["evaluate", "--suite", str(lattice_folder), "--baselines", "ls-linear,lmmse-genie", "--device", "cpu",
            "--no-plots", "--out", str(tmp_path / "eval")]
    assert main([*argv, *checkpoint]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("wavefront: error: ")
    assert ("is for pilots" if not checkpoint else "no pretrained checkpoint is shipped") in err
    assert err.endswith("for the classical rows alone, run evaluate with --baselines-only instead of --checkpoint")
    assert not (tmp_path / "eval" / "results.json").exists()
    assert main([*argv, "--baselines-only"]) == 0  # the way out it names
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())["rows"]
    assert [(r["estimator"], r["frames"], r["pilots"]) for r in rows] == [
        ("ls-linear", 4, "24 scattered pilots on 4 symbols"), ("lmmse-genie", 4, "24 scattered pilots on 4 symbols")]
    assert rows[1]["mse_db"] < rows[0]["mse_db"]  # the genie LMMSE beats LS on the same frames


def test_baselines_only_refuses_a_checkpoint_and_an_empty_baseline_list(suite, tmp_path, capsys):
    argv = ["evaluate", "--suite", str(suite), "--baselines-only", "--device", "cpu", "--out", str(tmp_path / "e")]
    assert main([*argv, "--checkpoint", "adafortitran"]) == 2
    assert "argument --checkpoint: not allowed with argument --baselines-only" in capsys.readouterr().err
    assert main([*argv, "--baselines", ","]) == 2
    assert "baselines='': the classical rows alone (no model) need at least one classical estimator" in (
        capsys.readouterr().err)
    with pytest.raises(ConfigError, match="baselines"):
        evaluate(None, preset("default"), suite=str(suite), baselines=())


def test_baselines_only_defaults_to_every_classical_row_and_a_model_keeps_its_three(suite, lattice_folder, tmp_path):
    """Where the classical rows are the whole table they include the strong ones (``lmmse-estimated``, ``mmse-bayes``);
    beside a model the default stays the three it was."""
    assert main(["evaluate", "--suite", str(lattice_folder), "--baselines-only", "--device", "cpu", "--no-plots",
                 "--out", str(tmp_path / "alone")]) == 0
    assert main(["evaluate", "--suite", str(suite), "--frames-per-point", "2", "--device", "cpu", "--no-plots",
                 "--out", str(tmp_path / "model")]) == 0
    alone, model = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("alone", "model"))
    assert {r["estimator"] for r in alone["rows"]} == set(CLASSICAL.split(","))
    assert {r["estimator"] for r in model["rows"]} - {"ls-linear", "lmmse-robust", "lmmse-genie"} == {
        r["estimator"] for r in model["rows"] if r["estimator"] not in CLASSICAL.split(",")}
    assert {"lmmse-estimated", "mmse-bayes"}.isdisjoint(r["estimator"] for r in model["rows"])
