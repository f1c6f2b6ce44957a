"""A sweep (and an evaluation) keeps its progress in --out: killed, it resumes where it stopped with the same result.

Every finished batch's counts are stored atomically in ``--out/progress``; a rerun of the
same command computes only the missing batches, and its results.json equals an uninterrupted
run's exactly (frames, bit errors, bits, MSE). A different command on the folder is refused.
A failed save exits 2 with one line, leaves no results.json, and keeps the progress.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import wavefront.sim.experiment as experiment
import wavefront.utils as utils
from wavefront.cli import main

# 2 points x 4 batches of 10 frames.
SWEEP = ["sweep", "--estimators", "ls-linear,lmmse-genie", "--snr-db", "0,10", "--doppler-hz", "600", "--frames", "40",
         "--batch-size", "10", "--device", "cpu", "--no-progress"]
EXACT = ("estimator", "axis_value", "frames", "mse_db", "mse_se_db", "nmse_db", "bound_db", "ber", "bit_errors", "bits")


def _rows(folder) -> list[dict]:
    return [{k: r[k] for k in EXACT} for r in json.loads((folder / "results.json").read_text())["rows"]]


def _batch_files(folder) -> list:
    return sorted((folder / "progress").glob("point-*/batch-*.json"))


_REAL_BATCH_COUNTS = experiment._batch_counts


class _Counter:
    """Wraps the engine's per-batch computation: counts calls, and raises after ``fail_after`` of them."""

    def __init__(self, monkeypatch, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after

        def counted(*a, **k):
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt  # what a kill looks like from inside: the batch never finishes
            self.calls += 1
            return _REAL_BATCH_COUNTS(*a, **k)

        monkeypatch.setattr(experiment, "_batch_counts", counted)


@pytest.mark.parametrize("extra", [[], ["--min-bit-errors", "20000"]], ids=["all-frames", "min-bit-errors"])
def test_an_interrupted_sweep_computes_only_the_missing_batches_and_equals_an_uninterrupted_one(
        tmp_path, monkeypatch, capsys, extra):
    argv = [*SWEEP, *extra]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    whole = _rows(tmp_path / "whole")
    total = len(_batch_files(tmp_path / "whole"))

    cut = _Counter(monkeypatch, fail_after=2)
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "cut")]) == 130
    assert "keeps every finished batch: rerun the same command to continue" in capsys.readouterr().err  # the way on
    assert not (tmp_path / "cut" / "results.json").exists() and len(_batch_files(tmp_path / "cut")) == 2
    again = _Counter(monkeypatch)
    assert main([*argv, "--out", str(tmp_path / "cut")]) == 0
    assert cut.calls == 2 and again.calls == total - 2  # nothing computed twice
    assert _rows(tmp_path / "cut") == whole
    if extra:  # 0 dB stops at its 3rd batch (after the cut), 10 dB runs all 4: the resumed run stops there too
        assert [r["frames"] for r in whole] == [30, 30, 40, 40] and total == 7


def test_a_finished_sweep_rerun_computes_nothing(tmp_path, monkeypatch):
    assert main([*SWEEP, "--out", str(tmp_path)]) == 0
    before = _rows(tmp_path)
    calls = _Counter(monkeypatch)
    assert main([*SWEEP, "--out", str(tmp_path)]) == 0
    assert calls.calls == 0 and _rows(tmp_path) == before


@pytest.mark.parametrize("change,field", [(["--frames", "30"], "progress.spec.frames=30"),
                                          (["--seed", "3"], "progress.spec.seed=3"),
                                          (["--estimators", "ls-linear"], "progress.spec.estimators"),
                                          # 200 ns in seconds, shown as written, not as 2.0000000000000002e-07
                                          (["--delay-spread-ns", "200"],
                                           "progress.spec.config.channel.delay_spread_s=2e-07: differs from the run "
                                           "whose progress")])
def test_another_sweep_on_the_same_folder_is_refused_naming_what_differs_unless_overwrite(tmp_path, capsys, change,
                                                                                          field):
    assert main([*SWEEP, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    argv = [*SWEEP, *change, "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err and "--overwrite" in err and "Traceback" not in err
    assert main([*argv, "--overwrite"]) == 0


def test_array_jobs_and_one_process_share_a_progress_folder(tmp_path, monkeypatch):
    """A batch's counts do not depend on who computed it: two array jobs' progress resumes in one process."""
    assert main([*SWEEP, "--out", str(tmp_path / "one")]) == 0
    for rank in (0, 1):
        assert main([*SWEEP, "--rank", str(rank), "--world", "2", "--out", str(tmp_path / "jobs")]) == 0
    calls = _Counter(monkeypatch)
    assert main([*SWEEP, "--out", str(tmp_path / "jobs")]) == 0
    assert calls.calls == 0 and _rows(tmp_path / "jobs") == _rows(tmp_path / "one")


def test_a_failed_plot_save_is_one_line_leaves_no_results_json_and_a_rerun_saves_without_recomputing(
        tmp_path, monkeypatch, capsys):
    assert main([*SWEEP, "--out", str(tmp_path / "ref")]) == 0
    real = utils.atomic_write_bytes

    def full_disk_for_plots(path, data):
        if str(path).endswith(".png"):
            raise utils.SaveError(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return real(path, data)

    monkeypatch.setattr(utils, "atomic_write_bytes", full_disk_for_plots)
    out = tmp_path / "full"
    capsys.readouterr()
    assert main([*SWEEP, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "mse_vs_snr.png" in err and "ENOSPC" in err and "rerun the same command" in err
    assert not (out / "results.json").exists()  # results.json is written last: absent, never truncated
    assert len(_batch_files(out)) == 8
    monkeypatch.setattr(utils, "atomic_write_bytes", real)
    calls = _Counter(monkeypatch)
    assert main([*SWEEP, "--out", str(out)]) == 0
    assert calls.calls == 0 and _rows(out) == _rows(tmp_path / "ref")
    assert (out / "mse_vs_snr.png").stat().st_size > 0


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    utils.atomic_write_json(path, {"old": 1})

    def no_space(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(utils.os, "write", no_space)
    with pytest.raises(utils.SaveError, match="ENOSPC"):
        utils.atomic_write_json(path, {"new": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": 1} and [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.slow  # one real process start (about 10 s of imports on a busy 2-core machine)
def test_a_killed_sweep_process_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL of a real sweep process once some batches are on disk; the rerun equals an uninterrupted run."""
    argv = [*SWEEP, "--frames", "60"]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "wavefront", *argv, "--out", str(out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while len(_batch_files(out)) < 2 and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    kept = len(_batch_files(out))
    assert 2 <= kept < 12 and not (out / "results.json").exists(), kept
    assert main([*argv, "--out", str(out)]) == 0
    assert _rows(out) == _rows(tmp_path / "whole")
