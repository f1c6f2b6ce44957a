"""export-mat and import-mat never silently replace what an --out folder holds.

export-mat over another export wrote its frames 1..n over the other's and left the other's frames
n+1.. beside them (same names: frame number and conditions): a folder of valid-looking frames from
two datasets. import-mat into a generated dataset's folder replaced its shards and manifest.
Both are refused now, naming --overwrite; importing the same .mat folder again still passes.
"""
import json

import pytest

from wavefront.cli import main

GEN = ["generate", "--shard-frames", "10", "--threads", "1", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mat_kept")
    assert main([*GEN, "--frames", "6", "--batch-size", "6", "--seed", "0", "--out", str(root / "six")]) == 0
    assert main([*GEN, "--frames", "3", "--batch-size", "3", "--seed", "5", "--out", str(root / "three")]) == 0
    return root


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_export_over_another_export_is_refused_and_overwrite_leaves_only_its_own_frames(two_datasets, tmp_path, capsys):
    mat = tmp_path / "mat"
    assert main(["export-mat", "--data", str(two_datasets / "six"), "--out", str(mat), "--no-progress"]) == 0
    six = {p.name: p.read_bytes() for p in mat.glob("*.mat")}
    assert len(six) == 6
    capsys.readouterr()
    assert main(["export-mat", "--data", str(two_datasets / "three"), "--out", str(mat), "--no-progress"]) == 2
    assert f"out='{mat}': already holds 6 .mat file(s)" in _one_line(capsys)
    assert {p.name: p.read_bytes() for p in mat.glob("*.mat")} == six  # nothing written
    assert main(["export-mat", "--data", str(two_datasets / "three"), "--out", str(mat), "--no-progress",
                 "--overwrite"]) == 0
    three = sorted(mat.glob("*.mat"))
    assert [int(p.name.split("_")[0]) for p in three] == [1, 2, 3]  # not frames 4..6 of the other dataset beside them
    assert all(p.read_bytes() != six[p.name] for p in three)  # seed 5's frames, not seed 0's


def test_import_into_a_generated_dataset_is_refused_and_the_same_import_again_passes(two_datasets, tmp_path, capsys):
    mat = tmp_path / "mat"
    assert main(["export-mat", "--data", str(two_datasets / "three"), "--out", str(mat), "--no-progress"]) == 0
    gen = tmp_path / "gen"
    assert main([*GEN, "--frames", "6", "--batch-size", "6", "--out", str(gen)]) == 0
    manifest = (gen / "manifest.json").read_bytes()
    capsys.readouterr()
    assert main(["import-mat", "--mat", str(mat), "--out", str(gen), "--no-progress", "--no-audit"]) == 2
    assert f"{gen} already holds a dataset generated with seed 0; add --overwrite" in _one_line(capsys)
    assert (gen / "manifest.json").read_bytes() == manifest
    imported = tmp_path / "imported"
    for _ in range(2):  # a rerun of the same import is the same dataset: it passes, as before
        assert main(["import-mat", "--mat", str(mat), "--out", str(imported), "--no-progress", "--no-audit"]) == 0
    assert json.loads((imported / "manifest.json").read_text())["frames"] == 3
    other = tmp_path / "other"
    assert main(["export-mat", "--data", str(two_datasets / "six"), "--out", str(other), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["import-mat", "--mat", str(other), "--out", str(imported), "--no-progress", "--no-audit"]) == 2
    assert f"already holds a dataset imported from {mat}" in _one_line(capsys)
    assert main(["import-mat", "--mat", str(other), "--out", str(imported), "--no-progress", "--no-audit",
                 "--overwrite"]) == 0
    assert json.loads((imported / "manifest.json").read_text())["frames"] == 6
    assert main(["import-mat", "--mat", str(mat), "--out", str(gen), "--no-progress", "--no-audit", "--overwrite"]) == 0
    assert json.loads((gen / "manifest.json").read_text())["source"] == "import-mat"


def test_a_folder_whose_manifest_lists_no_shard_yet_is_one_line_for_every_reader(two_datasets, tmp_path, capsys):
    """generate rebuilds the manifest's shard list when it finishes: a killed run's folder lists none. Read as it
    was, evaluate died on a KeyError, audit on a TypeError, train said '0 samples' and export-mat wrote 0 files."""
    import shutil

    killed = tmp_path / "killed"
    shutil.copytree(two_datasets / "six", killed)
    man = json.loads((killed / "manifest.json").read_text())
    (killed / "manifest.json").write_text(json.dumps({**man, "shards": [], "complete": False}))  # as a kill leaves it
    says = f"{killed} lists no shards in its manifest (generation is not complete: 1 expected); rerun the command"
    for argv, field in ((["export-mat", "--data", str(killed), "--out", str(tmp_path / "mat"), "--no-progress"], "data"),
                        (["audit", str(killed), "--no-progress"], "dir"),
                        (["audit", str(tmp_path), "--no-progress"], "dir"),  # a tree holding it
                        (["train", "--model", "linear", "--train", str(killed), "--val", str(two_datasets / "three"),
                          "--epochs", "1", "--batch-size", "2", "--out", str(tmp_path / "run"), "--no-progress"],
                         "train"),
                        (["train", "--model", "linear", "--train", str(two_datasets / "three"), "--val", str(killed),
                          "--epochs", "1", "--batch-size", "2", "--out", str(tmp_path / "run"), "--no-progress"], "val"),
                        (["evaluate", "--baselines-only", "--suite", str(killed), "--device", "cpu", "--no-plots",
                          "--out", str(tmp_path / "ev")], "suite")):
        assert main(argv) == 2, argv
        err = _one_line(capsys)
        assert f"{field}='" in err and says in err, err
    assert not (tmp_path / "mat").exists() and not (tmp_path / "run" / "last.safetensors").exists()


def test_verify_of_a_folder_not_finished_says_so_beside_all_intact(two_datasets, tmp_path, capsys):
    """verify said 'verified 0 shard(s) ... all intact' of a killed generate's folder with exit 0; its words now say
    what was not there to verify, and it exits 1: the data are not there to use (a script's `verify && train`)."""
    import shutil

    killed = tmp_path / "killed"
    shutil.copytree(two_datasets / "six", killed)
    man = json.loads((killed / "manifest.json").read_text())
    (killed / "manifest.json").write_text(json.dumps({**man, "shards": [], "complete": False}))
    capsys.readouterr()
    assert main(["verify", "--data", str(killed), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert (f"0 frames, 0.0 MB under {killed} in " in err and f"all listed intact; {killed} is incomplete (0 of 1 "
            "shards listed): rerun the command that generated it to finish it" in err), err
    assert main(["verify", "--data", str(two_datasets / "six"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "6 frames" in err and err.rstrip().endswith(": all intact"), err
