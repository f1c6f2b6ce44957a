"""``evaluate`` on a user's folder: --frames-per-point takes the first N frames of each point."""
import csv
import json

import h5py
import numpy as np
import pytest
import torch

from wavefront.cli import main
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
