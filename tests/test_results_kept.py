"""No results.json is silently replaced by another run's: merge-results and a rerun into a merged folder.

sweep and evaluate know a rerun is the same run from their progress/ fingerprint; a folder that
merge-results wrote has none (nor one whose progress/ was removed). Into such a folder a sweep or an
evaluation is refused unless --overwrite, and merge-results refuses results.json of another run
(merging the same partial files again gives the same results and passes).
"""
import json

from wavefront.cli import main

SWEEP = ["sweep", "--estimators", "ls-linear", "--frames", "4", "--batch-size", "2", "--device", "cpu", "--threads", "1",
         "--no-progress"]
EVALUATE = ["evaluate", "--baselines-only", "--baselines", "ls-linear", "--frames-per-point", "2", "--device", "cpu",
            "--no-plots"]


def _partials(argv, folder):
    for rank in (0, 1):
        assert main([*argv, "--rank", str(rank), "--world", "2", "--out", str(folder)]) == 0


def _results(folder):
    return (folder / "results.json").read_bytes()


def test_merge_results_refuses_another_sweeps_results_and_takes_the_same_merge_again(tmp_path, capsys):
    _partials([*SWEEP, "--snr-db", "10"], tmp_path / "a")
    _partials([*SWEEP, "--snr-db", "20"], tmp_path / "b")
    out = tmp_path / "merged"
    assert main(["merge-results", str(out), str(tmp_path / "a")]) == 0
    kept = _results(out)
    assert main(["merge-results", str(out), str(tmp_path / "a")]) == 0  # the same partials: the same results
    assert json.loads(_results(out))["rows"] == json.loads(kept)["rows"]
    capsys.readouterr()
    assert main(["merge-results", str(out), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"out='{out}': holds results.json of another run than this sweep" in err, err
    assert _results(out) == kept
    assert json.loads(kept)["spec"]["values"] == [10.0]


def test_a_sweep_into_a_folder_with_results_and_no_progress_is_refused_unless_overwrite(tmp_path, capsys):
    _partials([*SWEEP, "--snr-db", "10"], tmp_path / "a")
    out = tmp_path / "merged"
    assert main(["merge-results", str(out), str(tmp_path / "a")]) == 0
    kept = _results(out)
    capsys.readouterr()
    assert main([*SWEEP, "--snr-db", "20", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds results.json of an earlier run but no progress/" in err, err
    assert _results(out) == kept and not (out / "progress").exists()  # refused before anything was written
    assert main([*SWEEP, "--snr-db", "20", "--out", str(out), "--overwrite"]) == 0
    assert json.loads(_results(out))["spec"]["values"] == [20.0]
    # a finished sweep with its progress/ reruns as before: the same command resumes and rewrites the same rows
    rows = json.loads(_results(out))["rows"]
    assert main([*SWEEP, "--snr-db", "20", "--out", str(out)]) == 0
    assert json.loads(_results(out))["rows"] == rows


def test_evaluate_and_its_merge_keep_another_evaluations_results(tmp_path, capsys):
    _partials(EVALUATE, tmp_path / "p")
    assert main([*EVALUATE, "--seed", "2", "--out", str(tmp_path / "other")]) == 0  # another evaluation, with progress/
    other = _results(tmp_path / "other")
    capsys.readouterr()
    assert main(["merge-results", str(tmp_path / "other"), str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds results.json of another run than this evaluation" in err, err
    assert _results(tmp_path / "other") == other
    out = tmp_path / "merged"
    assert main(["merge-results", str(out), str(tmp_path / "p")]) == 0
    assert main(["merge-results", str(out), str(tmp_path / "p")]) == 0  # the same partials again
    merged = _results(out)
    capsys.readouterr()
    assert main([*EVALUATE, "--seed", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds results.json of an earlier run but no progress/" in err, err
    assert _results(out) == merged
