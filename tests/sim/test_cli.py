"""``wavefront sweep`` through its command line: outputs, and bad input as one line with exit 2."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from wavefront.cli import main


def test_sweep_writes_table_json_csv_and_plots(tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["sweep", "--estimators", "ls-linear,lmmse-genie,perfect", "--snr-db", "0:20:10", "--doppler-hz", "600",
               "--frames", "40", "--batch-size", "20", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "MMSE bound" in table and "lmmse-genie" in table
    for name in ("results.json", "results.csv", "mse_vs_snr.png", "ber_vs_snr.png"):
        assert (out / name).stat().st_size > 0
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert len(rows) == 3 * 3 and res["spec"]["axis"] == "snr_db"
    perfect = [r for r in rows if r["estimator"] == "perfect"]
    ls = [r for r in rows if r["estimator"] == "ls-linear"]
    # BER falls with SNR, and perfect CSI beats LS at every point
    assert ls[0]["ber"] > ls[-1]["ber"]
    assert all(p["ber"] <= q["ber"] for p, q in zip(perfect, ls))


def test_sweep_along_doppler_axis_and_early_stop(tmp_path, capsys):
    out = tmp_path / "dop"
    rc = main(["sweep", "--estimators", "ls-linear", "--doppler-hz", "200:600:400", "--snr-db", "0",
               "--frames", "400", "--batch-size", "20", "--min-bit-errors", "100", "--out", str(out), "--no-progress"])
    assert rc == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["axis_value"] for r in rows] == [200.0, 600.0]
    # at 0 dB a 20-frame batch has thousands of bit errors: each point stops after one batch
    assert all(r["frames"] == 20 and r["bit_errors"] >= 100 for r in rows)
    assert (out / "mse_vs_doppler.png").exists()


BAD = [
    (["--snr-db", "0:30:-5"], "snr_db='0:30:-5'", "step must be > 0"),
    (["--delay-spread-ns", "-5"], "delay_spread_s", ">= 0"),
    (["--profile", "Z"], "channel.profile='Z'", "unknown profile"),
    (["--frames", "0"], "frames=0", "positive integer"),
    (["--estimators", "ls-cubic"], "ls-cubic", "unknown"),
    (["--snr-db", "0:30:5", "--doppler-hz", "100,200"], "axes", "one axis at a time"),
    # the SNR range the user never typed is named, with what to give instead
    (["--delay-spread-ns", "100:300:100"], "axes='snr_db,delay_spread_s'",
     "(--snr-db defaults to 0:30:5: give one SNR, e.g. --snr-db 20, to sweep delay_spread_s)"),
    (["--rx-antennas", "2", "--rx-correlation", "abc"], "rx_correlation=abc", "a number or a LOW:HIGH range in [0, 1)"),
    (["--rx-antennas", "2", "--rx-correlation", "0.1:0.2:0.3"], "rx_correlation=0.1:0.2:0.3", "LOW:HIGH range"),
    # a MIMO-only estimator on the SISO default is named as such, not as unknown
    (["--estimators", "sionna-ls"], "estimators='sionna-ls'", "is a MIMO estimator: give --rx-antennas R"),
    (["--estimators", "ls-linear,mmse-bayes-per-pair"], "estimators='mmse-bayes-per-pair'", "is a MIMO estimator"),
    # without --rx-antennas the link is SISO: a correlation would be dropped and single-antenna numbers come out
    (["--rx-correlation", "0.5"], "rx_correlation=0.5", "this config has one: give --rx-antennas R (R > 1) too"),
    (["--users", "2", "--rx-correlation", "0.2:0.6"], "rx_correlation=[0.2, 0.6]", "give --rx-antennas R (R > 1)"),
]


@pytest.mark.parametrize("argv,field,rule", BAD)
def test_bad_input_is_one_line_and_exit_2(argv, field, rule, tmp_path, capsys):
    rc = main(["sweep", "--no-progress", "--frames", "10", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and field in err and rule in err and "Traceback" not in err


PATH_BAD = [
    (["--config", "{dir}"], "config='{dir}'", "is a folder; give a YAML file"),
    (["--config", "{empty}"], "config='{empty}'", "is empty"),
    (["--out", "{file}"], "out='{file}'", "is a file, not a folder"),
    (["--out", "{file}/res"], "out='{file}/res'", "no folder can be made under it"),
]


@pytest.mark.parametrize("argv,field_value,rule", PATH_BAD)
def test_bad_paths_fail_before_the_sweep_runs(argv, field_value, rule, tmp_path, capsys, monkeypatch):
    import wavefront.sim.sweep as sweep

    def never(*a, **k):
        raise AssertionError("the sweep ran before its input was checked")

    monkeypatch.setattr(sweep, "run_sweep", never)
    names = {"dir": str(tmp_path), "file": str(tmp_path / "a_file"), "empty": str(tmp_path / "empty.yaml")}
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "empty.yaml").write_text("")
    rc = main(["sweep", "--no-progress", "--out", str(tmp_path / "res"), *[a.format(**names) for a in argv]])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert field_value.format(**names) in err and rule in err
    assert (tmp_path / "a_file").read_text() == "keep me"


def test_pilot_outside_grid_in_config_file(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("ofdm:\n  pilot_symbols: [2, 14]\n")
    rc = main(["sweep", "--config", str(cfg), "--frames", "10", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "ofdm.pilot_symbols=[2, 14]" in err and "outside the grid" in err


@pytest.mark.parametrize("yaml_text,says", [
    ("ofdm:\n  num_subcarriers: 1000000000\n", "ofdm.num_subcarriers=1000000000: num_subcarriers must be <= 8192"),
    ("ofdm:\n  num_symbols: 1000000000\n", "ofdm.num_symbols=1000000000: num_symbols must be <= 1048576"),
    ("channel:\n  num_sinusoids: 1000000000\n", "channel.num_sinusoids=1000000000: num_sinusoids must be <= 1024"),
    ("channel:\n  delay_spread_s: 300\n", "channel.delay_spread_s=300: delay_spread_s must be <= 1e-05 (seconds: "
                                            "300 ns is 300e-9)"),
    ("channel:\n  delay_spread_s: 300ns\n", "channel.delay_spread_s='300ns': delay_spread_s must be a number in "
                                              "seconds"),
    ("channel:\n  ici: true\n  doppler_hz: 1.0e+9\n", "channel.doppler_hz=1000000000.0: with channel.ici"),
])
def test_absurd_config_file_values_are_one_line_and_exit_2(yaml_text, says, tmp_path, capsys):
    # each was a hang, an allocator traceback or an OverflowError before its check in sim/config.py
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    rc = main(["sweep", "--config", str(cfg), "--frames", "2", "--out", str(tmp_path / "res"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("wavefront: error: " + says), err
    assert not (tmp_path / "res").exists()


def test_unmodelled_ici_above_the_noise_warns_and_ici_flag_silences_it(tmp_path, capsys):
    # 1000 Hz: ICI -21.4 dB per RE, above the noise at 25 dB; --ici models it and says so in the results
    with pytest.warns(UserWarning, match=r"inter-carrier interference is not modelled: at doppler_hz=1000 it would be "
                                         r"-21\.4 dB per RE, above the noise at snr_db=25"):
        rc = main(["sweep", "--estimators", "ls-linear", "--snr-db", "25", "--doppler-hz", "1000", "--frames", "10",
                   "--out", str(tmp_path / "a"), "--no-progress"])
    assert rc == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc = main(["sweep", "--estimators", "ls-linear,lmmse-genie", "--snr-db", "25", "--doppler-hz", "1000",
                   "--frames", "10", "--ici", "--out", str(tmp_path / "b"), "--no-progress"])
    assert rc == 0
    spec = json.loads((tmp_path / "b" / "results.json").read_text())["spec"]
    assert spec["config"]["channel"]["ici"] is True and spec["ici"].startswith("modelled")
    assert "ICI: modelled" in capsys.readouterr().out


def test_the_ici_warning_is_said_once_however_many_generators_a_command_builds(tmp_path):
    # train builds a generator for its frames and one for validation: the same warning once on stderr
    r = subprocess.run([sys.executable, "-m", "wavefront", "train", "--model", "linear", "--on-the-fly",
                        str(Path(__file__).parents[2] / "configs" / "prior-12x2.yaml"), "--steps", "2", "--batch-size",
                        "4", "--eval-every", "2", "--val-frames", "4", "--out", str(tmp_path / "run"), "--no-progress",
                        "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stderr.count("inter-carrier interference is not modelled") == 1, r.stderr


def test_console_script_exit_code_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "wavefront", "sweep", "--snr-db", "0:30:-5", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "wavefront: error: snr_db='0:30:-5': the step must be > 0"


def test_sweep_threads_sets_torchs_and_keeps_the_numbers(tmp_path, capsys):
    """--threads 1 runs the sweep on one torch thread, with the numbers of the default thread count (frames are
    thread-independent; the estimators' sums may round differently, so MSEs to 1e-5 dB)."""
    import torch

    before = torch.get_num_threads()
    argv = ["sweep", "--estimators", "ls-linear,lmmse-genie", "--snr-db", "10", "--frames", "20", "--batch-size", "10",
            "--no-progress", "--device", "cpu"]
    try:
        torch.set_num_threads(2)
        assert main(argv + ["--out", str(tmp_path / "a")]) == 0
        assert main(argv + ["--out", str(tmp_path / "b"), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    a, b = (json.loads((tmp_path / d / "results.json").read_text())["rows"] for d in ("a", "b"))
    assert [r["estimator"] for r in a] == [r["estimator"] for r in b]
    for ra, rb in zip(a, b):
        assert rb["mse_db"] == pytest.approx(ra["mse_db"], abs=1e-5) and rb["ber"] == ra["ber"]
