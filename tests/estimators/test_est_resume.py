"""``wavefront evaluate`` keeps its progress in --out like ``sweep``: interrupted, it resumes to the same result."""
import json

import wavefront.sim.experiment as experiment
from wavefront.cli import main

_REAL_BATCH_COUNTS = experiment._batch_counts


def test_an_interrupted_evaluation_resumes_computing_only_the_missing_points(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "linear", "--on-the-fly", "default", "--steps", "2", "--batch-size", "8",
                 "--eval-every", "2", "--val-frames", "8", "--device", "cpu", "--out", str(run), "--no-progress"]) == 0
    argv = ["evaluate", "--checkpoint", str(run / "best.safetensors"), "--frames-per-point", "4", "--baselines",
            "ls-linear", "--device", "cpu", "--no-plots"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    calls = []

    def counted(*a, **k):
        if len(calls) == 5:
            raise KeyboardInterrupt  # killed while the sixth of the 21 points is measured
        calls.append(1)
        return _REAL_BATCH_COUNTS(*a, **k)

    monkeypatch.setattr(experiment, "_batch_counts", counted)
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "cut")]) == 130
    assert not (tmp_path / "cut" / "results.json").exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"wavefront: interrupted; {tmp_path / 'cut'} keeps every finished batch: rerun the same command to continue"
    calls.clear()
    monkeypatch.setattr(experiment, "_batch_counts", lambda *a, **k: (calls.append(1), _REAL_BATCH_COUNTS(*a, **k))[1])
    assert main([*argv, "--out", str(tmp_path / "cut")]) == 0
    assert len(calls) == 21 - 5
    rows = lambda d: json.loads((d / "results.json").read_text())["rows"]  # noqa: E731
    assert rows(tmp_path / "cut") == rows(tmp_path / "whole")
    capsys.readouterr()
    assert main([*argv, "--seed", "5", "--out", str(tmp_path / "cut")]) == 2
    assert "progress.output.seed=5" in capsys.readouterr().err
