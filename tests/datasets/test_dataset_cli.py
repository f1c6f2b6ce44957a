"""Bad input to the dataset commands: exit 2, one line naming field, value and rule, nothing written."""
import pytest

from wavefront.cli import main

# (argv with {file} = an existing file, {dir} = an existing folder, {empty} = an empty YAML;
#  substrings the one line must hold: field and value, rule)
BAD = [
    (["generate", "--frames", "10", "--out", "{file}"], "out='{file}'", "is a file, not a folder"),
    (["generate", "--frames", "10", "--out", "{file}/sub"], "out='{file}/sub'", "no folder can be made under it"),
    (["generate", "--frames", "10", "--seed", "1e23", "--out", "{dir}/o"], f"seed={10**23}", "[0, 2**63)"),
    (["generate", "--frames", "10", "--seed", str(2**70), "--out", "{dir}/o"], f"seed={2**70}", "[0, 2**63)"),
    (["generate", "--frames", "10", "--seed", "-1", "--out", "{dir}/o"], "seed=-1", "[0, 2**63)"),
    (["generate", "--frames", "0", "--out", "{dir}/o"], "frames=0", "positive integer"),
    (["generate", "--frames", "10", "--batch-size", "0", "--out", "{dir}/o"], "batch_size=0", "positive integer"),
    (["generate", "--frames", "10", "--config", "{dir}", "--out", "{dir}/o"], "config='{dir}'", "is a folder"),
    (["generate", "--frames", "10", "--config", "{empty}", "--out", "{dir}/o"], "config='{empty}'", "is empty"),
    (["generate", "--frames", "10", "--shard-range", "3:1", "--out", "{dir}/o"], "shard_range='3:1'", "0 <= a < b"),
    (["generate-suite", "adafortitran", "--out", "{file}"], "out='{file}'", "is a file"),
    (["generate-suite", "nope", "--out", "{dir}/o"], "suite='nope'", "unknown"),
    (["export-mat", "--data", "{dir}", "--out", "{file}"], "out='{file}'", "is a file"),
    (["export-mat", "--data", "{dir}/none", "--out", "{dir}/o"], "data='{dir}/none'", "no such folder"),
    (["export-mat", "--data", "{dir}", "--out", "{dir}/o"], "data='{dir}'", "no dataset folder"),
    (["import-mat", "--mat", "{dir}", "--out", "{file}"], "out='{file}'", "is a file"),
    (["verify", "--data", "{dir}/none"], "data='{dir}/none'", "no such file or folder"),
]


@pytest.mark.parametrize("argv,field_value,rule", BAD)
def test_bad_dataset_input_is_one_line_exit_2_and_writes_nothing(argv, field_value, rule, tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    names = {"file": str(tmp_path / "a_file"), "dir": str(d), "empty": str(tmp_path / "empty.yaml")}
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "empty.yaml").write_text("")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    fill = lambda s: s.format(**names)  # noqa: E731
    try:
        rc = main([fill(a) for a in argv] + ["--no-progress"])
    except SystemExit as exc:  # argparse's own type errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert fill(field_value) in err and rule in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert (tmp_path / "a_file").read_text() == "keep me"
