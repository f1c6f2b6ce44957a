"""train refuses a --val that holds any dataset folder --train trains on: best.safetensors would be chosen by the
model's fit to its own training frames, and the validation figures would say nothing about new frames."""
from wavefront.cli import main


def test_val_sharing_a_folder_with_train_is_refused_and_apart_it_trains(tmp_path, capsys):
    gen = ["generate", "--frames", "4", "--shard-frames", "4", "--batch-size", "4", "--threads", "1", "--device", "cpu",
           "--no-progress"]
    assert main([*gen, "--seed", "1", "--out", str(tmp_path / "data" / "train")]) == 0
    assert main([*gen, "--seed", "2", "--out", str(tmp_path / "val")]) == 0
    run = ["train", "--model", "linear", "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--no-progress"]
    capsys.readouterr()
    for train, val in ((tmp_path / "data" / "train", tmp_path / "data" / "train"),  # the same folder
                       (tmp_path / "data", tmp_path / "data" / "train")):  # a tree holding it
        assert main([*run, "--train", str(train), "--val", str(val), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"val='{val}': holds 1 dataset folder(s) that --train trains on too" in err, err
        assert not (tmp_path / "run" / "last.safetensors").exists()
    assert main([*run, "--train", str(tmp_path / "data"), "--val", str(tmp_path / "val"), "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "last.safetensors").exists()


def test_resume_from_another_folder_does_not_replace_the_run_out_holds_without_overwrite(tmp_path, capsys):
    """--resume CHECKPOINT from elsewhere passed the guard that --resume alone passes, and replaced a finished run's
    weights and log in --out; --resume with --overwrite said both 'continue' and 'start afresh' and continued."""
    argv = ["train", "--model", "linear", "--on-the-fly", "default", "--batch-size", "4", "--eval-every", "2",
            "--val-frames", "4", "--device", "cpu", "--no-progress"]
    for name in ("kept", "other"):
        assert main([*argv, "--steps", "2", "--out", str(tmp_path / name)]) == 0
    kept = {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()}
    capsys.readouterr()
    other = str(tmp_path / "other" / "last.safetensors")
    assert main([*argv, "--steps", "4", "--resume", other, "--out", str(tmp_path / "kept")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"out='{tmp_path / 'kept'}': holds the weights of an earlier run" in err, err
    assert main([*argv, "--steps", "4", "--resume", "--overwrite", "--out", str(tmp_path / "kept")]) == 2
    assert "overwrite=True: --resume continues the run in --out and --overwrite starts afresh" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()} == kept
    # its own checkpoint by path resumes as --resume does; another one with --overwrite replaces the run, as asked
    assert main([*argv, "--steps", "4", "--resume", str(tmp_path / "kept" / "last.safetensors"),
                 "--out", str(tmp_path / "kept")]) == 0
    assert main([*argv, "--steps", "4", "--resume", other, "--overwrite", "--out", str(tmp_path / "kept")]) == 0
