"""Points outside the prior are flagged; train and evaluate take the system config recorded in a dataset."""
import json

import pytest

from wavefront.cli import main
from wavefront.sim.experiment import in_prior

pytestmark = pytest.mark.filterwarnings("ignore:inter-carrier interference")


@pytest.mark.parametrize("snr_db,ds_ns,fd_hz,inside", [
    (25.0, 300.0, 1000.0, True),  # the prior's corner is inside
    (0.0, 25.0, 50.0, True),
    (30.0, 200.0, 500.0, False),  # the paper's out-of-distribution points
    (10.0, 350.0, 600.0, False),
    (10.0, 100.0, 1200.0, False),
])
def test_in_prior_follows_the_papers_training_ranges(snr_db, ds_ns, fd_hz, inside):
    assert in_prior(snr_db, ds_ns * 1e-9, fd_hz) is inside


def test_in_prior_takes_the_users_ranges():
    assert in_prior(30.0, 200e-9, 500.0, {"snr_db": (0.0, 30.0)})
    assert not in_prior(10.0, 200e-9, 500.0, {"doppler_hz": (50.0, 400.0)})


def test_sweep_flags_points_outside_the_prior_in_rows_and_table(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["sweep", "--estimators", "ls-linear", "--snr-db", "20,30", "--doppler-hz", "500", "--frames", "8",
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["snr_db"], r["in_prior"]) for r in rows] == [(20.0, True), (30.0, False)]
    assert table.count("(outside the prior)") == 1
    assert [line for line in table.splitlines() if "outside the prior" in line][0].strip().startswith("30")


def test_train_takes_the_config_recorded_in_the_shards_and_refuses_only_a_conflicting_one(tmp_path, capsys):
    # the README's pair: generate with configs/adafortitran.yaml (40 x 2 pilots), then train without --config
    gen = ["--config", "configs/adafortitran.yaml", "--threads", "1", "--no-progress", "--device", "cpu"]
    assert main(["generate", "--frames", "16", "--out", str(tmp_path / "train"), *gen]) == 0
    assert main(["generate", "--frames", "8", "--seed", "1", "--out", str(tmp_path / "val"), *gen]) == 0
    data = ["--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"), "--epochs", "1", "--batch-size", "8",
            "--device", "cpu", "--no-progress"]
    assert main(["train", "--model", "linear", *data, "--out", str(tmp_path / "run")]) == 0
    from wavefront.estimators.checkpoint import Checkpoint

    assert Checkpoint(tmp_path / "run" / "last.safetensors").system_config.ofdm.pilot_shape == (40, 2)
    capsys.readouterr()
    assert main(["train", "--model", "linear", *data, "--config", "default", "--out", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dataset" in err
