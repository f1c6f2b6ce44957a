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
