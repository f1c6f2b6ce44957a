"""``scripts/add_sweep_rows.py``: a sweep's rows added to another swept on the same frames equal one joint sweep."""
import csv
import json
import runpy
import subprocess
import sys
from pathlib import Path

from wavefront.cli import main

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "add_sweep_rows.py"
COMMON = ["--snr-db", "0,30", "--frames", "24", "--batch-size", "8", "--seed", "5", "--conditions", "true",
          "--device", "cpu", "--no-progress"]


def _rows(folder: Path) -> list[dict]:
    return list(csv.DictReader(open(folder / "results.csv")))


def test_two_sweeps_merged_equal_the_joint_sweep_row_for_row(tmp_path, monkeypatch):
    assert main(["sweep", "--estimators", "ls-linear,lmmse-genie", *COMMON, "--out", str(tmp_path / "joint")]) == 0
    assert main(["sweep", "--estimators", "ls-linear", *COMMON, "--out", str(tmp_path / "a")]) == 0
    assert main(["sweep", "--estimators", "lmmse-genie", *COMMON, "--out", str(tmp_path / "b")]) == 0
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "a" / "results.json"),
                          str(tmp_path / "b" / "results.json"), "--out", str(tmp_path / "merged")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    joint, merged = _rows(tmp_path / "joint"), _rows(tmp_path / "merged")
    assert [(r["snr_db"], r["estimator"]) for r in merged] == [(r["snr_db"], r["estimator"]) for r in joint]
    for j, m in zip(joint, merged):  # the same frames: every count and figure equal
        assert {k: j[k] for k in ("mse_db", "ber", "bit_errors", "bound_db", "in_prior")} == \
               {k: m[k] for k in ("mse_db", "ber", "bit_errors", "bound_db", "in_prior")}
    # 30 dB lies outside the paper's 0-25 dB prior (the spec's prior is widened to 0-30 dB: not the yardstick)
    assert [m["in_prior"] for m in merged] == ["True", "True", "False", "False"]
    # a newer run with a wider --prior-snr-db (the same frames) marks every point, its mark wins
    assert main(["sweep", "--estimators", "lmmse-robust", *COMMON, "--prior-snr-db", "0:40", "--out", str(tmp_path / "w")]) == 0
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), str(tmp_path / "a" / "results.json"),
                                      str(tmp_path / "w" / "results.json"), "--out", str(tmp_path / "merged_w")])
    runpy.run_path(str(SCRIPT), run_name="__main__")  # in this process: no second interpreter start-up
    assert [m["in_prior"] for m in _rows(tmp_path / "merged_w")] == ["True"] * 4
    spec = json.loads((tmp_path / "merged" / "results.json").read_text())["spec"]
    assert spec["estimators"] == ["ls-linear", "lmmse-genie"]
    # sweeps of other frames are refused, naming what differs
    other_seed = [("6" if a == "5" and COMMON[i - 1] == "--seed" else a) for i, a in enumerate(COMMON)]
    assert main(["sweep", "--estimators", "lmmse-robust", *other_seed, "--out", str(tmp_path / "c")]) == 0
    bad = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "a" / "results.json"),
                          str(tmp_path / "c" / "results.json"), "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode != 0 and "differ in seed" in bad.stderr
