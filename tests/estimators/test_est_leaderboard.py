"""The default learned estimator (gated-lmmse), pilots-only training, and the leaderboard."""
import json
import math

import pytest
import torch

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.estimators import create
from wavefront.estimators.leaderboard import bayes_risk_frames, make_spec, paired_gap, per_frame_mse, run_leaderboard
from wavefront.estimators.train import TrainConfig, train
from wavefront.sim.config import preset
from wavefront.sim.experiment import prior_config

pytestmark = pytest.mark.filterwarnings("ignore:inter-carrier interference")


@pytest.fixture(scope="module")
def prior():
    """The default 12 x 2 grid over the paper's training prior (SNR 0-25 dB, 25-300 ns, 50-1000 Hz)."""
    return prior_config(preset("default"))


@pytest.fixture(scope="module")
def prior_frames(prior):
    return bayes_risk_frames(prior, 600, seed=11)


def _mse(model, frames):
    with torch.no_grad():
        return per_frame_mse(model.eval()(frames.pilots_ls), frames.h)


def test_gated_lmmse_starts_at_the_bayes_risk_of_the_prior(prior, prior_frames):
    from wavefront.sim.prior_lmmse import BayesMMSE

    init = _mse(create("gated-lmmse", prior), prior_frames)
    with torch.no_grad():
        bayes = per_frame_mse(BayesMMSE(prior).estimate(prior_frames.pilots_ls), prior_frames.h)
    gap, se = paired_gap(init, bayes)
    # 16 cell-averaged filters stand in for 240 x 51 hypotheses: within MC error plus 0.05 dB
    assert abs(gap) < 0.05 + 3 * se, (gap, se)


def test_gated_lmmse_training_improves_on_its_initialisation_and_stays_near_its_bank(prior, prior_frames, tmp_path):
    # A 2 x 2 bank starts 0.06 dB above the Bayes risk, which training can win back in a few
    # steps (about 0.01 dB in 60, 3-4 paired SE). The default 4 x 4 bank starts within 0.003 dB
    # of it, where a short run only adds noise (measured: +0.001 to +0.002 dB after 40-60 steps).
    coarse = {"delay_spread_bins": 2, "doppler_bins": 2}
    init = _mse(create("gated-lmmse", prior, **coarse), prior_frames)
    cfg = TrainConfig(model="gated-lmmse", model_overrides=coarse, steps=60, batch_size=64, lr=0.01, warmup_steps=5,
                      weight_decay=0.0,
                      eval_every=60, val_frames=64, patience=0, device="cpu", out_dir=str(tmp_path / "run"),
                      progress=False, conditions="none")
    train(cfg, prior)
    from wavefront.estimators.estimator import load_estimator

    est = load_estimator(str(tmp_path / "run" / "last.safetensors"), prior, conditions="none")
    assert est.needs == "none"
    with torch.no_grad():
        trained = per_frame_mse(est.estimate(prior_frames.pilots_ls), prior_frames.h)
    gap, se = paired_gap(trained, init)
    assert gap < -se, f"training did not lower the MSE on held-out prior frames ({gap:+.4f} +- {se:.4f} dB)"
    assert gap > -(0.1 + 3 * se), f"training moved far from the bank it starts at ({gap:+.4f} +- {se:.4f} dB)"


def test_pilots_only_training_of_a_conditioned_model_needs_no_conditions(prior, tmp_path):
    from wavefront.estimators.estimator import load_estimator

    small = {"model_dim": 8, "num_heads": 2, "num_layers": 1, "enhancer_channels": [2, 4, 2]}
    for mode in ("none", "estimated"):
        cfg = TrainConfig(model="adafortitran", model_overrides=small, steps=2, batch_size=4, eval_every=2,
                          val_frames=8, patience=0, device="cpu", out_dir=str(tmp_path / mode), progress=False,
                          conditions=mode)
        train(cfg, prior)
    est = load_estimator(str(tmp_path / "none" / "last.safetensors"), prior, conditions="none")
    assert est.needs == "none"
    out = est.estimate(torch.randn(3, 12, 2, dtype=torch.complex64), None)  # no meta at all
    assert out.shape == (3, 120, 14)
    assert load_estimator(str(tmp_path / "estimated" / "last.safetensors"), prior).needs == "conditions"
    with pytest.raises(ConfigError, match="trained with estimated conditions"):
        load_estimator(str(tmp_path / "estimated" / "last.safetensors"), prior, conditions="none")


def test_evaluate_refuses_pilots_only_for_a_model_trained_with_conditions(capsys, tmp_out):
    rc = main(["evaluate", "--checkpoint", "adafortitran", "--conditions", "none", "--frames-per-point", "2",
               "--device", "cpu", "--out", str(tmp_out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot run on pilots only" in err


@pytest.mark.parametrize("argv,needle", [
    (["--models", "resnet9000"], "unknown model"),
    (["--steps", "0"], "steps=0"),
    (["--budget", "tpu-huge"], "invalid choice"),
    (["--seeds", "0"], "seeds=0"),
])
def test_leaderboard_bad_input_is_one_line_and_exit_2(argv, needle, capsys, tmp_out):
    try:
        rc = main(["leaderboard", *argv, "--out", str(tmp_out), "--no-progress"])
    except SystemExit as exc:  # argparse's own refusals exit from the parser, also with 2
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not tmp_out.exists()  # refused before any work


def _table(out):
    """The leaderboard's rows without the wall-clock measurements (those differ run to run)."""
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    clock = ("frames_per_s", "latency_ms", "throughput_vs_genie", "train_seconds_this_run")
    return [{k: v for k, v in r.items() if k not in clock} for r in rows]


@pytest.mark.slow
def test_interrupted_leaderboard_reruns_to_the_same_table(prior, tmp_path):
    spec = lambda: make_spec(["linear", "gated-lmmse"], None, steps=3, batch_size=8, bayes_frames=48,  # noqa: E731
                             frames_per_point=4)
    s = spec()
    straight = tmp_path / "straight"
    run_leaderboard(s, prior, straight, progress=False)
    resumed = tmp_path / "resumed"
    s = spec()
    run_leaderboard(s, prior, resumed, progress=False, stop_after_models=1)  # interrupted after the first model
    assert (resumed / "runs" / "linear-s0" / "eval.json").exists()
    assert not (resumed / "runs" / "gated-lmmse-s0" / "eval.json").exists()
    run_leaderboard(s, prior, resumed, progress=False)
    a, b = _table(straight), _table(resumed)
    assert [r["name"] for r in a] == [r["name"] for r in b]
    assert {"linear", "gated-lmmse", "mmse-bayes", "lmmse-genie", "ls-linear"} <= {r["name"] for r in a}
    assert a == b
    for out in (straight, resumed):
        for name in ("leaderboard.md", "leaderboard.csv", "pareto.png", "suite_snr.png"):
            assert (out / name).is_file()
    md = (resumed / "leaderboard.md").read_text()
    assert "pilots only" in md and "frames on the fly" in md
    assert all(math.isfinite(r["bayes_risk_db"]) for r in a)


def test_leaderboard_refuses_to_continue_a_run_under_other_conditions(capsys, tmp_out):
    tiny = ["leaderboard", "--models", "linear", "--steps", "2", "--batch-size", "4", "--bayes-frames", "16",
            "--frames-per-point", "2", "--out", str(tmp_out), "--no-progress"]
    assert main(tiny) == 0
    capsys.readouterr()
    assert main(tiny + ["--conditions", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained with estimated conditions" in err and "fresh --out" in err


def test_an_impaired_config_adds_the_yardsticks_that_know_the_impairments():
    from wavefront.estimators.leaderboard import CLASSICAL_ROWS, classical_rows
    from wavefront.sim.config import SystemConfig

    plain = SystemConfig.from_dict({"channel": {"snr_db": [0.0, 25.0], "doppler_hz": [50.0, 1000.0]}})
    impaired = SystemConfig.from_dict({"channel": {"snr_db": [0.0, 25.0], "timing_offset_samples": [0.0, 4.0]}})
    assert classical_rows(plain) == CLASSICAL_ROWS
    assert classical_rows(impaired) == CLASSICAL_ROWS + ("mmse-bayes-impaired", "lmmse-genie-impaired")


def _small_gated(**kw):
    from wavefront.sim.config import SystemConfig

    cfg = SystemConfig().updated(ofdm={"num_subcarriers": 48, "pilot_subcarrier_spacing": 4})  # 12 x 2 pilots on 48 x 14
    opts = {"delay_spread_bins": 2, "doppler_bins": 3, "prior_snr_db": [0.0, 20.0], "snr_step_db": 5.0, **kw}
    return cfg, create("gated-lmmse", cfg, **opts).eval()


def test_gated_lmmse_gate_at_initialisation_is_the_dense_gaussian_posterior_over_its_cells():
    """Hypothesis (cell k, noise s): p ~ CN(0, R_pp,k + s^2 I) with prior mass = the cell's share of the 25 ns x 50 Hz
    grid over the box (Doppler 50..1000 Hz in 3 cells: 7, 7 and 6 of 20 points) times 1/S; the gate is that posterior,
    computed here with dense log-determinants and solves, not eigen-coordinates."""
    from wavefront.estimators.model_gated_lmmse import prior_bank

    cfg, model = _small_gated()
    _, r_pp, _ = prior_bank(cfg, (25e-9, 300e-9), (50.0, 1000.0), 2, 3)
    K, P = r_pp.shape[:2]
    noise = cfg.noise_variance(torch.linspace(0.0, 20.0, 5, dtype=torch.float64))
    mass = torch.tensor([7, 7, 6, 7, 7, 6], dtype=torch.float64) / 40 / 5  # 12 delay points in 2 cells of 6
    p = torch.randn(3, P, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    ll = torch.empty(3, K, 5, dtype=torch.float64)
    for k in range(K):
        for s, n in enumerate(noise):
            cov = r_pp[k] + n * torch.eye(P, dtype=torch.complex128)
            quad = (p.conj() * torch.linalg.solve(cov, p.T).T).sum(-1).real
            ll[:, k, s] = -torch.linalg.slogdet(cov).logabsdet - quad + torch.log(mass[k])
    want = torch.softmax(ll.flatten(1), 1).reshape(3, K, 5)
    with torch.no_grad():
        w, _, _ = model.gate(p.to(torch.complex64))
    # float32 eigen-path against float64 dense: measured 1.0e-6, so 2e-5 leaves a 20x margin
    torch.testing.assert_close(w.double(), want, rtol=0, atol=2e-5)
    assert float(want.max()) < 0.999  # not a one-hot posterior: the weights themselves are compared


def test_gated_lmmse_gate_features_are_relative_evidence_and_the_pilot_energy():
    # the MLP sees each cell's best log-likelihood minus the frame's best (so its best cell reads 0) and the log mean
    # pilot energy, which U_k^H (unitary) leaves as the pilots' own
    _, model = _small_gated()
    seen = {}
    model.mlp.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    p = 3.0 * torch.randn(4, 24, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.gate(p)
    x = seen["x"]
    assert x.shape == (4, 7) and torch.equal(x[:, :6].amax(1), torch.zeros(4)) and (x[:, :6] <= 0).all()
    torch.testing.assert_close(x[:, 6], torch.log(p.abs().square().mean(1) + 1e-6), rtol=0, atol=1e-5)


def test_gated_lmmse_gains_scale_each_eigen_coordinate_multiplicatively():
    _, model = _small_gated()
    p = torch.randn(2, 12, 2, dtype=torch.complex64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = model(p)
        model.gain_log.fill_(math.log(2.0))  # every gain 2: the estimate, linear in the shrinkage, doubles
        torch.testing.assert_close(model(p), 2 * base, rtol=1e-5, atol=1e-6)


def test_a_ctrl_c_while_a_model_trains_stops_the_leaderboard_and_the_rerun_resumes_that_run(tmp_out, monkeypatch, capsys):
    from est_helpers import ctrl_c_at_step

    from wavefront.estimators.checkpoint import Checkpoint

    tiny = ["leaderboard", "--models", "linear", "--steps", "4", "--batch-size", "4", "--bayes-frames", "16",
            "--frames-per-point", "2", "--out", str(tmp_out), "--no-progress"]
    ctrl_c_at_step(monkeypatch, 2)
    assert main(tiny) == 130  # not a row for a model trained 2 of 4 steps
    assert "the last checkpoint of the one training: rerun the same command" in capsys.readouterr().err
    run = tmp_out / "runs" / "linear-s0"
    assert Checkpoint(run / "last.safetensors").step == 2
    assert not (run / "eval.json").exists() and not (tmp_out / "leaderboard.md").exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert main(tiny) == 0
    row = json.loads((run / "eval.json").read_text())
    assert row["train_steps"] == 4 and (tmp_out / "leaderboard.md").is_file()
