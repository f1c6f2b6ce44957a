"""The leaderboard on a MIMO config: classical rows against an independent evaluation, per-user checkpoints, resume."""
import json
import math
import shutil

import pytest
import torch

from wavefront.cli import main
from wavefront.errors import ConfigError
from wavefront.estimators.checkpoint import Checkpoint
from wavefront.estimators.estimator import LearnedEstimator, load_estimator
from wavefront.estimators.leaderboard import (BOUND_ROW, MimoLearned, load_mimo_learned, make_spec, mimo_users_trained,
                                              paired_gap, run_leaderboard)
from wavefront.sim.conditions import estimate_conditions
from wavefront.sim.config import SystemConfig
from wavefront.sim.mimo import MimoFrameGenerator, mimo_estimators, mimo_genie_mse, user_configs

SMALL_ADA = {"model_dim": 8, "num_heads": 2, "num_layers": 1, "enhancer_channels": [2, 4, 2]}


def tiny_mimo() -> SystemConfig:
    """2 antennas (rho 0.5), 2 users, 12 x 4: pilots on every 2nd subcarrier of symbols 0 and 3, dealt to the users
    (3 x 2 each: user 0 on subcarriers 0, 4, 8, user 1 on 2, 6, 10); a narrow prior keeps mmse-bayes' grid small."""
    return SystemConfig().updated(
        ofdm={"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2, "pilot_symbols": [0, 3]},
        channel={"snr_db": [0.0, 20.0], "delay_spread_s": [50e-9, 150e-9], "doppler_hz": [100.0, 300.0]},
        mimo={"num_rx_antennas": 2, "num_users": 2, "rx_correlation": 0.5})


def tiny_spec(models=("adafortitran", "gated-lmmse"), frames=40):
    return make_spec(list(models), None, steps=3, batch_size=4, bayes_frames=frames, frames_per_point=frames // 5,
                     sizes={"adafortitran": SMALL_ADA, "gated-lmmse": {"delay_spread_bins": 2, "doppler_bins": 2}})


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A leaderboard of AdaFortiTran alone (one checkpoint per user) beside the classical rows, on 24 frames."""
    out = tmp_path_factory.mktemp("mimo-board")
    spec = tiny_spec(["adafortitran"], frames=24)
    table = run_leaderboard(spec, tiny_mimo(), out, progress=False)
    return out, spec, {r["name"]: r for r in table["rows"]}


def _frames(spec, n=None):
    """The Bayes-risk frames, drawn here again from the seed the leaderboard documents (spec.seed + 7)."""
    return MimoFrameGenerator(tiny_mimo()).generate(n or spec.bayes_frames, seed=spec.seed + 7, with_data=False)


def _per_frame(est_h, h):
    """Per-frame MSE over antennas, users, subcarriers and symbols, float64, summed then divided (not the board's mean)."""
    d = (est_h.to(torch.complex128) - h.to(torch.complex128)).abs().square()
    return d.reshape(d.shape[0], -1).sum(1) / d[0].numel()


def _delta_se_db(e, r):
    """The delta-method SE [dB] of 10 log10(mean e / mean r) over paired frames, written out."""
    n = len(e)
    x = e / e.mean() - r / r.mean()
    return 10 / math.log(10) * math.sqrt(float(((x - x.mean()) ** 2).sum()) / (n - 1) / n)


def test_classical_rows_equal_an_independent_evaluation_on_the_same_frames(board):
    out, spec, rows = board
    fr = _frames(spec)
    cfg = tiny_mimo()
    est = {n: mimo_estimators([n], cfg)[0] for n in ("ls-linear", "lmmse-genie", "mmse-bayes")}
    with torch.no_grad():
        mse = {n: _per_frame(e.estimate(fr.pilots_ls, fr.meta), fr.h) for n, e in est.items()}
    ref = mse["mmse-bayes"]
    for n in ("ls-linear", "lmmse-genie", "mmse-bayes"):
        r = rows[n]
        # float32 estimates, float64 sums: the two reductions agree to 1e-5 dB
        assert r["bayes_risk_db"] == pytest.approx(10 * math.log10(float(mse[n].mean())), abs=1e-5), n
        assert r["gap_to_mmse_bayes_db"] == pytest.approx(10 * math.log10(float(mse[n].mean() / ref.mean())), abs=1e-5)
        assert r["gap_se_db"] == pytest.approx(_delta_se_db(mse[n], ref), rel=1e-3, abs=1e-9), n
        energy = fr.h.abs().square().double().sum()
        nmse = 10 * math.log10(float(mse[n].sum() * fr.h[0].numel() / energy))
        assert r["nmse_db"] == pytest.approx(nmse, abs=1e-5), n
    assert rows["mmse-bayes"]["gap_to_mmse_bayes_db"] == 0.0 and rows["mmse-bayes"]["gap_se_db"] == 0.0
    # the bound row: the closed form averaged over the same frames' conditions
    b = mimo_genie_mse(cfg, fr.snr_db.double(), fr.delay_spread_s.double(), fr.doppler_hz.double())
    assert rows[BOUND_ROW]["bayes_risk_db"] == pytest.approx(10 * math.log10(float(b.mean())), abs=1e-9)
    assert rows[BOUND_ROW]["frames_per_s"] is None and rows[BOUND_ROW]["kind"] == "bound"
    # every row answers on the same per-SNR points, and the joint genie's throughput is the "x genie" unit
    assert all([p["snr_db"] for p in r["suites"]] == [0.0, 10.0, 20.0] for r in rows.values())
    assert rows["lmmse-genie"]["throughput_vs_genie"] == 1.0
    md = (out / "leaderboard.md").read_text()
    assert "joint mmse-bayes" in md and "one checkpoint per user, each on its own pilots" in md


def test_each_user_is_served_by_its_own_checkpoint_and_a_swap_is_refused_or_worse(board):
    out, spec, rows = board
    cfg, users = tiny_mimo(), user_configs(tiny_mimo())
    run = out / "runs" / "adafortitran-s0"
    assert rows["adafortitran"]["users_trained"] == [0, 1]
    one = sum(v.numel() for v in Checkpoint(run / "u0" / "last.safetensors").build_model(users[0]).parameters())
    assert rows["adafortitran"]["parameters"] == 2 * one  # two checkpoints stored
    # shift invariant: one checkpoint (user 0's) serves both users; AdaFortiTran and a dense map are not
    assert [mimo_users_trained(m, cfg) for m in ("gated-lmmse", "antenna-attention", "linear")] == [[0], [0], [0, 1]]
    # AdaFortiTran is not shift invariant: user 0's checkpoint on user 1's pilots is refused by name
    with pytest.raises(ConfigError, match="pilot"):
        load_estimator(str(run / "u0" / "last.safetensors"), users[1])
    fr = _frames(spec)
    # the row's number, rebuilt here: user u's own checkpoint on user u's R pairs, each pair's conditions estimated
    # from its own pilots in user u's config (as training gave them)
    B, R = fr.pilots_ls.shape[:2]
    with torch.no_grad():
        by_hand = torch.stack([load_estimator(str(run / f"u{u}" / "last.safetensors"), users[u]).estimate(
            fr.pilots_ls[:, :, u].flatten(0, 1), estimate_conditions(fr.pilots_ls[:, :, u].flatten(0, 1), users[u]))
            .view(B, R, 12, 4) for u in (0, 1)], 2)
    assert rows["adafortitran"]["bayes_risk_db"] == pytest.approx(10 * math.log10(float(_per_frame(by_hand, fr.h).mean())),
                                                                  abs=1e-5)
    own = load_mimo_learned("adafortitran", run, cfg, spec.conditions)
    # the same weights, swapped past the check: each user's model on the other user's pilots
    swapped_models = [Checkpoint(run / f"u{1 - u}" / "last.safetensors").build_model(users[1 - u]) for u in (0, 1)]
    swapped = MimoLearned([LearnedEstimator(m, name="adafortitran") for m in swapped_models], list(users), 2,
                          spec.conditions, "swapped")
    with torch.no_grad():
        e_own = _per_frame(own.estimate(fr.pilots_ls, fr.meta), fr.h)
        e_swap = _per_frame(swapped.estimate(fr.pilots_ls, fr.meta), fr.h)
    assert rows["adafortitran"]["bayes_risk_db"] == pytest.approx(10 * math.log10(float(e_own.mean())), abs=1e-5)
    gap, se = paired_gap(e_swap, e_own)
    assert abs(gap) > 1e-3, (gap, se)  # the swap changes the table's number


def _table(out):
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    clock = ("frames_per_s", "latency_ms", "throughput_vs_genie", "train_seconds_this_run")
    return [{k: v for k, v in r.items() if k not in clock} for r in rows]


@pytest.mark.slow
def test_interrupted_mimo_leaderboard_reruns_to_the_same_table(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_leaderboard(tiny_spec(), tiny_mimo(), straight, progress=False)
    run_leaderboard(tiny_spec(), tiny_mimo(), resumed, progress=False, stop_after_models=1)  # killed after a model
    assert (resumed / "runs" / "adafortitran-s0" / "eval.json").exists()
    assert not (resumed / "runs" / "gated-lmmse-s0").exists()
    run_leaderboard(tiny_spec(), tiny_mimo(), resumed, progress=False)
    assert {r["name"] for r in json.loads((resumed / "leaderboard.json").read_text())["rows"]} >= {
        "adafortitran", "gated-lmmse", "mmse-bayes", "mmse-bayes-per-pair", "lmmse-genie", BOUND_ROW}
    assert _table(straight) == _table(resumed)
    gated = {r["name"]: r for r in _table(resumed)}["gated-lmmse"]
    one = Checkpoint(resumed / "runs" / "gated-lmmse-s0" / "u0" / "last.safetensors").build_model(user_configs(tiny_mimo())[0])
    assert gated["parameters"] == sum(v.numel() for v in one.parameters())  # one checkpoint serves both users
    # killed between the users of a per-user model: user 1's run is gone, user 0's kept; the rerun redoes user 1 only
    shutil.rmtree(resumed / "runs" / "adafortitran-s0" / "u1")
    (resumed / "runs" / "adafortitran-s0" / "eval.json").unlink()
    u0 = (resumed / "runs" / "adafortitran-s0" / "u0" / "last.safetensors").read_bytes()
    run_leaderboard(tiny_spec(), tiny_mimo(), resumed, progress=False)
    assert (resumed / "runs" / "adafortitran-s0" / "u0" / "last.safetensors").read_bytes() == u0
    assert _table(straight) == _table(resumed)


def _dmrs_yaml(tmp_path):
    path = tmp_path / "dmrs.yaml"
    path.write_text("ofdm: {num_subcarriers: 24}\nchannel: {snr_db: [0, 20], delay_spread_s: [50.0e-9, 150.0e-9], "
                    "doppler_hz: [100, 300]}\nmimo: {num_rx_antennas: 2, num_users: 2, pilots: dmrs-type1}\n")
    return path


def _tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(json.loads(tiny_mimo().to_json())))
    return path


@pytest.mark.parametrize("what, needle", [
    ("dmrs", "mimo.pilots='dmrs-type1': the MIMO leaderboard takes the Kronecker pattern only"),
    ("unknown", "models='ls-linear': unknown model"),
])
def test_mimo_leaderboard_bad_input_is_one_line_and_exit_2(what, needle, capsys, tmp_path):
    out = tmp_path / "out"
    config = _dmrs_yaml(tmp_path) if what == "dmrs" else _tiny_yaml(tmp_path)
    models = "gated-lmmse" if what == "dmrs" else "ls-linear"  # a classical name is not a model to train per pair
    rc = main(["leaderboard", "--config", str(config), "--models", models, "--steps", "1", "--batch-size", "2",
               "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_mimo_training_batches_are_user_u_of_the_step_frames_and_ranks_split_them():
    from wavefront.estimators.data import MimoUserSource
    from wavefront.utils import derive_seed

    cfg = tiny_mimo()
    fr = MimoFrameGenerator(cfg).generate(4, seed=derive_seed(3, 5), with_data=False)
    pairs = MimoUserSource(cfg, 1, 4, seed=3, per_pair=True).batch(5)
    assert torch.equal(pairs["pilots"], fr.pilots_ls[:, :, 1].flatten(0, 1))  # [B R, 3, 2], antenna-major per frame
    assert torch.equal(pairs["h"], fr.h[:, :, 1].flatten(0, 1))
    assert torch.equal(pairs["snr_db"], fr.snr_db.repeat_interleave(2))
    whole = MimoUserSource(cfg, 1, 4, seed=3, per_pair=False).batch(5)
    assert whole["pilots"].shape == (4, 2, 3, 2) and torch.equal(whole["h"], fr.h[:, :, 1])
    halves = [MimoUserSource(cfg, 1, 4, seed=3, per_pair=True, rank=r, world=2).batch(5) for r in (0, 1)]
    assert torch.equal(torch.cat([h["pilots"] for h in halves]), pairs["pilots"])


def test_a_condition_aware_model_gets_each_frames_true_conditions_per_pair_when_told_them():
    from wavefront.estimators import create

    cfg, users = tiny_mimo(), user_configs(tiny_mimo())
    torch.manual_seed(0)
    models = [create("adafortitran", u, **SMALL_ADA).eval() for u in users]
    est = MimoLearned([LearnedEstimator(m) for m in models], list(users), 2, "true", "told")
    assert est.needs == "truth"  # the leaderboard then hands it the frames' recorded conditions
    fr = MimoFrameGenerator(cfg).generate(3, seed=4, with_data=False)
    with torch.no_grad():
        out = est.estimate(fr.pilots_ls, fr.meta)
        for u in (0, 1):
            meta = {k: fr.meta[k].repeat_interleave(2) for k in ("snr_db", "delay_spread_s", "doppler_hz")}
            want = models[u](fr.pilots_ls[:, :, u].flatten(0, 1), meta).view(3, 2, 12, 4)
            assert torch.allclose(out[:, :, u], want, atol=1e-6)
        # told other conditions, the output moves: the conditions reach the model
        other = {**fr.meta, "snr_db": fr.meta["snr_db"] + 10}
        assert not torch.allclose(est.estimate(fr.pilots_ls, other), out, atol=1e-4)


def test_the_per_pair_genie_row_is_the_siso_genie_on_each_pair_and_the_bound_row_has_no_sampling_se(board):
    from wavefront.sim.estimators import classical_estimators

    out, spec, rows = board
    fr, cfg = _frames(spec), tiny_mimo()
    users = user_configs(cfg)
    est_h = torch.empty_like(fr.h)
    with torch.no_grad():  # the SISO genie, pair by pair, with user u's own pilots and each frame's true conditions
        for u, c in enumerate(users):
            (genie,) = classical_estimators(["lmmse-genie"], c)
            for r in range(cfg.mimo.num_rx_antennas):
                est_h[:, r, u] = genie.estimate(fr.pilots_ls[:, r, u], fr.meta)
    mse = _per_frame(est_h, fr.h)
    row = rows["lmmse-genie-per-pair"]
    assert row["bayes_risk_db"] == pytest.approx(10 * math.log10(float(mse.mean())), abs=1e-4)
    assert row["bayes_risk_db"] >= rows["lmmse-genie"]["bayes_risk_db"] - 0.05  # rho ignored: never better than the joint
    # the bound's per-SNR points are expectations: no sampling SE, and their MSE is the bound itself
    for p in rows[BOUND_ROW]["suites"]:
        assert p["mse_se_db"] is None and p["mse_db"] == pytest.approx(p["bound_db"], abs=1e-12)
    assert rows[BOUND_ROW]["nmse_db"] == pytest.approx(rows[BOUND_ROW]["bayes_risk_db"], abs=1e-12)
