"""The train / evaluate commands, and the shipped pretrained checkpoint behind load_estimator."""
import csv

import pytest
import torch

from wavefront.cli import main
from wavefront.estimators import load_estimator
from wavefront.estimators.estimator import pretrained_path


def test_train_then_evaluate_from_the_command_line(tmp_path, capsys):
    cfg = tmp_path / "sys.yaml"
    cfg.write_text("channel:\n  snr_db: [0, 20]\n  doppler_hz: [50, 800]\n")
    run = tmp_path / "run"
    rc = main(["train", "--model", "linear", "--on-the-fly", str(cfg), "--steps", "4", "--batch-size", "8",
               "--eval-every", "2", "--val-frames", "16", "--device", "cpu", "--out", str(run), "--no-progress"])
    assert rc == 0
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [r["step"] for r in rows] == ["2", "4"] and all(r["val_ls_linear_db"] for r in rows)

    out = tmp_path / "eval"
    rc = main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--frames-per-point", "8", "--device", "cpu",
               "--out", str(out)])
    assert rc == 0
    table = list(csv.DictReader(open(out / "results.csv")))
    assert len(table) == 7 + 7 + 7  # the three paper sweeps
    assert {"linear_db", "ls-linear_db", "lmmse-robust_db", "mmse_bound_db", "gap_to_bound_db"} <= set(table[0])
    snr0 = table[0]
    assert (snr0["sweep"], float(snr0["snr_db"])) == ("snr", 0.0)
    assert float(snr0["mmse_bound_db"]) == pytest.approx(-7.9, abs=0.2)  # REFERENCE.md, 12 x 2 pilots
    assert float(snr0["gap_to_bound_db"]) == pytest.approx(float(snr0["linear_db"]) - float(snr0["mmse_bound_db"]), abs=2e-3)
    assert {p.name for p in out.glob("*.png")} == {"mse_vs_snr.png", "mse_vs_delay_spread.png", "mse_vs_doppler.png"}
    assert "gap_to_bound_db" in capsys.readouterr().out


@pytest.mark.slow
def test_train_on_shards_and_evaluate_on_the_generated_test_suite(tmp_path):
    gen = ["--preset", "default", "--threads", "1", "--no-progress", "--device", "cpu"]
    assert main(["generate", "--frames", "32", "--out", str(tmp_path / "train"), *gen]) == 0
    assert main(["generate", "--frames", "16", "--seed", "1", "--out", str(tmp_path / "val"), *gen]) == 0
    assert main(["generate-suite", "adafortitran", "--frames-per-point", "4", "--out", str(tmp_path / "test"), *gen]) == 0
    run = tmp_path / "run"
    assert main(["train", "--model", "linear", "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"),
                 "--epochs", "2", "--batch-size", "16", "--eval-every", "2", "--device", "cpu", "--out", str(run),
                 "--no-progress"]) == 0
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [(r["step"], r["epoch"]) for r in rows] == [("2", "1.000"), ("4", "2.000")]
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--suite", str(tmp_path / "test"),
                 "--baselines", "ls-linear", "--device", "cpu", "--out", str(out), "--no-plots"]) == 0
    table = list(csv.DictReader(open(out / "results.csv")))
    assert [r["sweep"] for r in table] == ["snr"] * 7 + ["delay_spread"] * 7 + ["doppler"] * 7
    assert [float(r["doppler_hz"]) for r in table[14:]] == [200.0, 400.0, 600.0, 800.0, 1000.0, 1200.0, 1400.0]
    assert all(r["frames"] == "4" for r in table)


@pytest.mark.parametrize("argv,message", [
    (["train", "--model", "linear", "--steps", "3"], "give --train DIR"),
    (["train", "--model", "nope", "--on-the-fly", "default", "--steps", "3"], "model='nope': unknown"),
    (["train", "--model", "linear", "--on-the-fly", "default", "--steps", "3", "--set", "depth"], "key=value"),
    (["train", "--model", "linear", "--train", "data/none", "--val", "data/none", "--epochs", "1"], "no such file or folder"),
    (["train", "--model", "linear", "--train", "data/none", "--epochs", "1"], "--train needs --val"),
    (["evaluate", "--checkpoint", "reesnet"], "no pretrained checkpoint is shipped"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("argv,field_value,rule", [
    (["train", "--model", "adafortitran", "--on-the-fly", "default", "--steps", "1", "--set", "model_dim=abc"],
     "adafortitran.model_dim='abc'", "must be an integer"),
    (["train", "--model", "adafortitran", "--on-the-fly", "default", "--steps", "1", "--set", "patch_size=3"],
     "adafortitran.patch_size=3", "must be a list"),
    (["train", "--model", "adafortitran", "--on-the-fly", "default", "--steps", "1", "--set", "model_dim=-4"],
     "adafortitran.model_dim=-4", "the model cannot be built"),
    (["train", "--model", "linear", "--on-the-fly", "default", "--steps", "1", "--out", "{file}"],
     "out='{file}'", "is a file, not a folder"),
    (["train", "--model", "linear", "--on-the-fly", "{dir}", "--steps", "1"], "config='{dir}'", "is a folder"),
    (["train", "--model", "linear", "--on-the-fly", "{empty}", "--steps", "1"], "config='{empty}'", "is empty"),
    (["evaluate", "--checkpoint", "{dir}"], "checkpoint='{dir}'", "is a folder; give a .safetensors file"),
    (["evaluate", "--checkpoint", "adafortitran", "--out", "{file}"], "out='{file}'", "is a file, not a folder"),
    # a correlation of one antenna's array did nothing: the run was single-antenna with no word
    (["train", "--model", "linear", "--on-the-fly", "default", "--steps", "1", "--rx-correlation", "0.5"],
     "rx_correlation=0.5", "give --rx-antennas R (R > 1) too"),
    (["evaluate", "--checkpoint", "adafortitran", "--rx-correlation", "0.5", "--out", "{dir}/eval"],
     "rx_correlation=0.5", "give --rx-antennas R (R > 1) too"),
    (["leaderboard", "--rx-correlation", "0.3", "--out", "{dir}/lb"], "rx_correlation=0.3", "give --rx-antennas R"),
])
def test_bad_paths_and_hyper_parameters_are_one_line_and_exit_2(argv, field_value, rule, tmp_path, capsys):
    names = {"dir": str(tmp_path), "file": str(tmp_path / "a_file"), "empty": str(tmp_path / "empty.yaml")}
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "empty.yaml").write_text("")
    if "--out" not in argv and argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / "run")]
    assert main([a.format(**names) for a in argv] + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert field_value.format(**names) in err and rule in err
    assert (tmp_path / "a_file").read_text() == "keep me" and not (tmp_path / "run").exists()
    assert not (tmp_path / "eval").exists() and not (tmp_path / "lb").exists()


@pytest.mark.slow
def test_shipped_adafortitran_is_small_and_beats_ls_linear(default_config):
    from wavefront.sim.config import SystemConfig
    from wavefront.sim.estimators import get_classical
    from wavefront.sim.frames import FrameGenerator

    path = pretrained_path("adafortitran")
    assert path.stat().st_size <= 5 * 2**20 and path.with_suffix(".json").is_file()
    est = load_estimator("adafortitran", default_config)
    assert est.name == "adafortitran"
    # Inside its training ranges: 10 dB, 150 ns, 300 Hz.
    cfg = SystemConfig.from_dict({"channel": {"snr_db": 10.0, "delay_spread_s": 150e-9, "doppler_hz": 300.0}})
    f = FrameGenerator(cfg).generate(256, seed=11, with_data=False)

    def mse_db(h_hat):
        return 10 * torch.log10((h_hat - f.h).abs().square().mean()).item()

    model_db = mse_db(est.estimate(f.pilots_ls, f.meta))
    ls_db = mse_db(get_classical("ls-linear", cfg).estimate(f.pilots_ls, f.meta))
    print(f"shipped adafortitran {model_db:.2f} dB vs LS-linear {ls_db:.2f} dB")
    assert model_db < ls_db - 1.0


@pytest.mark.parametrize("typo", [["--baselines", "ls-linear,lmse-genie"], ["--points", "papr"],
                                  ["--baselines", "lmse-genie", "--rank", "0", "--world", "2"]])
def test_a_refused_evaluation_leaves_out_empty_so_the_corrected_command_runs(typo, tmp_path, capsys):
    # The progress store used to be opened before the points and baselines were checked: the refused
    # run left progress/fingerprint.json behind, and the corrected command was then refused as "differs
    # from the run whose progress ... holds" until the user found --overwrite.
    out = tmp_path / "eval"
    argv = ["evaluate", "--frames-per-point", "2", "--device", "cpu", "--no-plots", "--out", str(out)]
    assert main([*argv, *typo]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("lmse-genie" in err or "papr" in err) and "progress" not in err
    assert not out.exists() or not any(out.rglob("*"))
    assert main([*argv, "--baselines", "ls-linear"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 21 and all(r["frames"] == "2" for r in rows)


def test_train_into_a_folder_that_holds_a_run_needs_resume_or_overwrite(tmp_path, capsys):
    # The same command run twice without --resume used to start from step 0 and replace the first
    # run's best/last.safetensors and log.csv without a word.
    run = tmp_path / "run"
    argv = ["train", "--model", "linear", "--on-the-fly", "default", "--batch-size", "8", "--eval-every", "2",
            "--val-frames", "8", "--device", "cpu", "--out", str(run), "--no-progress"]
    assert main([*argv, "--steps", "2"]) == 0
    log = (run / "log.csv").read_text()
    weights = (run / "last.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*argv, "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"out='{run}'" in err and "--resume" in err and "--overwrite" in err
    assert (run / "log.csv").read_text() == log and (run / "last.safetensors").read_bytes() == weights
    assert main([*argv, "--steps", "4", "--resume"]) == 0  # continues: steps 2 -> 4
    assert [r["step"] for r in csv.DictReader(open(run / "log.csv"))] == ["2", "4"]
    assert main([*argv, "--steps", "2", "--overwrite"]) == 0  # afresh: one row again
    assert [r["step"] for r in csv.DictReader(open(run / "log.csv"))] == ["2"]
