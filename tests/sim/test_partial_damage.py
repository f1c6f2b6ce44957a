"""merge-results names a partial file whose JSON is whole but whose structure is damaged, in one line.

A file of the right format with a missing or mistyped field (a hand edit, a tool that rewrote it)
died in the merge on KeyError 'points' or TypeError (a rank compared with a string).
"""
import json

import pytest

from wavefront.cli import main

SWEEP = ["sweep", "--estimators", "ls-linear", "--snr-db", "10", "--frames", "4", "--batch-size", "2", "--device", "cpu",
         "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def partials(tmp_path_factory):
    folder = tmp_path_factory.mktemp("partials")
    for rank in (0, 1):
        assert main([*SWEEP, "--rank", str(rank), "--world", "2", "--out", str(folder)]) == 0
    return folder


def _drop(key):
    return lambda rec: rec.pop(key)


def _set(key, value):
    return lambda rec: rec.__setitem__(key, value)


def _batch(value):
    def damage(rec):
        rec["points"][0]["batches"][0][1][0] = value
    return damage


@pytest.mark.parametrize("damage,says", [
    (_drop("points"), "points is missing"),
    (_set("rank", "1"), "rank='1' is not an integer in 0..world-1"),
    (_set("rank", 5), "rank=5 is not an integer in 0..world-1"),
    (_set("world", 0), "world=0 is not a positive integer"),
    (_set("estimators", "ls-linear"), "estimators is not a list of records"),
    (_batch("x"), "points[0].batches holds a malformed batch"),
    (lambda rec: rec["points"][0]["batches"][0][2].pop(), "points[0].batches holds a malformed batch"),
    (lambda rec: rec["points"][0]["batches"][0][1].pop(), "points[0].batches holds a malformed batch"),
    (lambda rec: rec["points"][0].pop("want"), "points[0] lacks its meta or want"),
], ids=["no points", "rank a string", "rank beyond world", "world 0", "estimators a string", "a float a word",
        "an int short", "a float short", "no want"])
def test_a_damaged_partial_file_is_named_in_one_line(partials, tmp_path, capsys, damage, says):
    rec = json.loads((partials / "partial-1-of-2.json").read_text())
    damage(rec)
    bad = tmp_path / "partial-1-of-2.json"
    bad.write_text(json.dumps(rec))
    capsys.readouterr()
    assert main(["merge-results", str(tmp_path / "out"), str(partials / "partial-0-of-2.json"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"partials='{bad}': is a damaged partial file ({says}" in err, err
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_sweep_partial_without_its_spec_is_named_by_rank(partials, tmp_path, capsys):
    rec = json.loads((partials / "partial-1-of-2.json").read_text())
    del rec["spec"]
    bad = tmp_path / "partial-1-of-2.json"
    bad.write_text(json.dumps(rec))
    capsys.readouterr()
    assert main(["merge-results", str(tmp_path / "out"), str(partials / "partial-0-of-2.json"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "partials='rank 1': is a damaged partial file (spec is missing)" in err, err


def test_an_evaluation_partial_without_its_output_is_named(tmp_path, capsys):
    argv = ["evaluate", "--baselines-only", "--baselines", "ls-linear", "--frames-per-point", "2", "--device", "cpu",
            "--no-plots"]
    assert main([*argv, "--rank", "0", "--world", "1", "--out", str(tmp_path / "p")]) == 0
    part = tmp_path / "p" / "partial-0-of-1.json"
    rec = json.loads(part.read_text())
    del rec["output"]
    part.write_text(json.dumps(rec))
    capsys.readouterr()
    assert main(["merge-results", str(tmp_path / "out"), str(part)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"partials='{part}': is a damaged partial file (output is missing)" in err, err


def test_the_undamaged_files_merge(partials, tmp_path):
    assert main(["merge-results", str(tmp_path / "out"), str(partials)]) == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["frames"] for r in rows] == [4]
