"""Learned estimators under MIMO: a SISO model per (antenna, user), shipped checkpoints per setting, antenna attention."""
import math

import pytest
import torch

from wavefront.errors import ConfigError
from wavefront.estimators import checkpoint as ckpt
from wavefront.estimators.estimator import PRETRAINED_DIR, pretrained_path, shipped_for
from wavefront.estimators.registry import create
from wavefront.sim.config import SystemConfig, preset
from wavefront.sim.mimo import MimoFrameGenerator, user_configs

SMALL_BANK = {"delay_spread_bins": 2, "doppler_bins": 2}


def small_mimo(R=3, U=2, rho=0.7) -> SystemConfig:
    """48 x 14, every 2nd subcarrier a pilot, dealt to U users: user u on subcarriers 2u, 2u + 2U, ... (12 x 2 each at U = 2)."""
    return SystemConfig().updated(ofdm={"num_subcarriers": 48, "pilot_subcarrier_spacing": 2},
                                  mimo={"num_rx_antennas": R, "num_users": U, "rx_correlation": rho})


def perturbed(model, seed=0, scale=0.3):
    """Returns ``model`` with every learned parameter moved off its initial value (as training would)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture
def user0_checkpoint(tmp_path):
    """A gated-lmmse trained (perturbed) for user 0's layout of :func:`small_mimo`, saved as a checkpoint."""
    u0 = user_configs(small_mimo())[0]
    model = perturbed(create("gated-lmmse", u0, **SMALL_BANK))
    return ckpt.save(tmp_path / "user0.safetensors", model, u0, rng=False), model


def test_gated_lmmse_on_a_shifted_layout_is_the_same_estimate_shifted(user0_checkpoint):
    """Wide-sense stationarity in frequency: user 1's pilots sit 2 subcarriers above user 0's, so the model
    rebuilt for user 1 with user 0's weights returns user 0's estimate moved up by 2 subcarriers (exactly,
    away from the band edge), and its gate reads the same eigen-coordinates."""
    path, m0 = user0_checkpoint
    u1 = user_configs(small_mimo())[1]
    m1 = ckpt.Checkpoint(path).build_model(u1).eval()
    p = torch.randn(5, *m0.pilot_shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = m0(p), m1(p)
        torch.testing.assert_close(m1.gate(p.reshape(5, -1))[0], m0.gate(p.reshape(5, -1))[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(b[:, 2:], a[:, :-2], rtol=0, atol=1e-5)
    assert (b[:, :2] - a[:, -2:]).abs().max() > 1e-3  # the edges differ: the bank was rebuilt for user 1


def test_per_antenna_and_user_wrapping_equals_the_siso_model_on_each_pairs_pilots(user0_checkpoint):
    """A learned checkpoint for user 0's layout, given by path, runs on every (antenna, user) pair of a 3-antenna,
    2-user frame: each output is the SISO model (built for that user's layout) on that pair's pilots."""
    from wavefront.resolve import resolve_estimators

    path, _ = user0_checkpoint
    cfg = small_mimo()
    (wrapped,) = resolve_estimators([str(path)], cfg)
    fr = MimoFrameGenerator(cfg).generate(2, seed=3, with_data=False)
    got = wrapped.estimate(fr.pilots_ls, {})
    assert got.shape == fr.h.shape and "per antenna and user" in wrapped.given
    for u, user in enumerate(user_configs(cfg)):
        siso = ckpt.Checkpoint(path).build_model(user).eval()
        for r in range(3):
            with torch.no_grad():
                want = siso(fr.pilots_ls[:, r, u])
            torch.testing.assert_close(got[:, r, u], want, rtol=0, atol=1e-6)


def test_a_layout_that_is_not_a_shift_is_still_refused(user0_checkpoint):
    path, _ = user0_checkpoint
    other = user_configs(small_mimo())[0].updated(ofdm={"pilot_subcarrier_spacing": 6})  # 8 x 2, not 12 x 2 moved
    with pytest.raises(ConfigError, match="pilot"):
        ckpt.Checkpoint(path).build_model(other)
    moved_in_time = user_configs(small_mimo())[0].updated(ofdm={"pilot_symbols": [3, 12]})  # 12 x 2 moved in time, not frequency
    with pytest.raises(ConfigError, match="pilot_symbols"):
        ckpt.Checkpoint(path).build_model(moved_in_time)
    siso_shift = user_configs(small_mimo())[1]
    lin = create("linear", user_configs(small_mimo())[0])  # a dense map has no reason to be shift-invariant
    lin_path = ckpt.save(path.parent / "linear.safetensors", lin, user_configs(small_mimo())[0], rng=False)
    with pytest.raises(ConfigError, match="pilot_subcarriers"):
        ckpt.Checkpoint(lin_path).build_model(siso_shift)


def test_shipped_mimo_chest_checkpoint_serves_every_user_and_the_default_grid_keeps_its_own():
    """At mimo-chest all four users find gated-lmmse-mimo-chest (user u's pilots: user 0's moved by u); the
    default grid still loads gated-lmmse-default; two users on the default grid find none (refused later)."""
    chest = PRETRAINED_DIR / "gated-lmmse-mimo-chest.safetensors"
    users = user_configs(preset("mimo-chest"))
    assert [u.ofdm.pilot_subcarriers[0] for u in users] == [0, 1, 2, 3]
    assert all(shipped_for("gated-lmmse", u) == chest for u in users)
    assert shipped_for("gated-lmmse", SystemConfig()) == pretrained_path("gated-lmmse")
    assert shipped_for("gated-lmmse", user_configs(SystemConfig().updated(mimo={"num_users": 2}))[1]) == \
        pretrained_path("gated-lmmse")
    assert shipped_for("adafortitran", users[0]) == pretrained_path("adafortitran")  # none fits: the default's path
    from wavefront.estimators.estimator import load_estimator

    with pytest.raises(ConfigError, match=r"no shipped checkpoint of this model fits .*120x14.*antenna-attention-mimo-8x2"):
        load_estimator("antenna-attention", SystemConfig())  # shipped for another grid only: named, one line
    card = ckpt.Checkpoint(chest)
    assert card.model_name == "gated-lmmse" and card.conditions == "none" and chest.stat().st_size < 2e6


def small_attention(u_config, **options):
    return create("antenna-attention", u_config, **SMALL_BANK, **options)


def test_antenna_attention_maps_each_users_antennas_to_their_grids():
    u0 = user_configs(small_mimo())[0]
    model = small_attention(u0).eval()
    p = torch.randn(2, 5, *u0.ofdm.pilot_shape, dtype=torch.complex64)
    with torch.no_grad():
        out, flat, siso = model(p), model(p.reshape(2, 5, -1)), model(p[:, 0])
    assert out.shape == (2, 5, 48, 14) and out.dtype == torch.complex64 and siso.shape == (2, 48, 14)
    torch.testing.assert_close(flat, out, rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"expected \[B, R, 12, 2\]"):
        model(torch.zeros(2, 5, 7, dtype=torch.complex64))


def test_antenna_attention_at_initialisation_is_the_per_pair_model_on_one_antenna():
    """R = 1: the attention has one antenna to mix and the gain starts at 1, so the output is the gated stage's."""
    u0 = user_configs(small_mimo())[0]
    model = small_attention(u0).eval()
    perturbed(model.per_pair)
    p = torch.randn(3, 1, *u0.ofdm.pilot_shape, dtype=torch.complex64)
    with torch.no_grad():
        torch.testing.assert_close(model(p)[:, 0], model.per_pair(p[:, 0]), rtol=0, atol=1e-6)


def test_antenna_attention_without_positions_is_permutation_equivariant_and_with_them_reversal_equivariant():
    u0 = user_configs(small_mimo())[0]
    free = perturbed(small_attention(u0, position_bias=False), seed=1)
    ula = perturbed(small_attention(u0), seed=2)
    p = torch.randn(2, 6, *u0.ofdm.pilot_shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(5))
    perm, rev = torch.tensor([3, 0, 5, 1, 4, 2]), torch.arange(5, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(free(p[:, perm]), free(p)[:, perm], rtol=0, atol=1e-5)
        torch.testing.assert_close(ula(p[:, rev]), ula(p)[:, rev], rtol=0, atol=1e-5)
        assert (ula(p[:, perm]) - ula(p)[:, perm]).abs().max() > 1e-4  # the distance bias knows the array
        mixed = free(p)
        per_pair = free.per_pair(p.reshape(12, *u0.ofdm.pilot_shape)).reshape(2, 6, 48, 14)
        A, share, gain = free.mixing(p.reshape(2, 6, -1), per_pair.reshape(2, 6, -1))
    assert (mixed - per_pair).abs().max() > 1e-3  # it does mix
    # each antenna's output is a convex mix of the antennas' estimates, scaled by a gain in (0, 2)
    torch.testing.assert_close(A.sum(-1), torch.ones(2, 6), rtol=0, atol=1e-6)
    assert (A >= 0).all() and ((share > 0) & (share < 1)).all() and ((gain > 0) & (gain < 2)).all()


def test_a_few_training_steps_on_mimo_frames_lower_the_loss():
    from wavefront.estimators.mimo_train import mimo_forward, user_batch

    cfg = small_mimo(R=4)
    torch.manual_seed(0)
    model = small_attention(user_configs(cfg)[0])
    pilots, h = user_batch(MimoFrameGenerator(cfg), 8, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.0)
    losses = []
    for _ in range(6):
        loss = (mimo_forward(model, pilots) - h).abs().square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert pilots.shape == (8, 4, 12, 2) and h.shape == (8, 4, 48, 14)
    assert losses[-1] < 0.97 * losses[0], losses


def test_antenna_attention_runs_across_each_users_antennas_in_a_mimo_sweep(tmp_path):
    """From a checkpoint path: user u's [B, R, P] at once through the model rebuilt for user u's layout."""
    from wavefront.resolve import resolve_estimators

    cfg = small_mimo()
    users = user_configs(cfg)
    model = perturbed(small_attention(users[0]), seed=3)
    path = ckpt.save(tmp_path / "aa.safetensors", model, users[0], rng=False)
    (wrapped,) = resolve_estimators([str(path)], cfg)
    fr = MimoFrameGenerator(cfg).generate(2, seed=9, with_data=False)
    got = wrapped.estimate(fr.pilots_ls, fr.meta)
    assert got.shape == fr.h.shape and "across its antennas" in wrapped.given
    for u, user in enumerate(users):
        with torch.no_grad():
            want = ckpt.Checkpoint(path).build_model(user).eval()(fr.pilots_ls[:, :, u])
        torch.testing.assert_close(got[:, :, u], want, rtol=0, atol=1e-6)


def test_train_with_mimo_flags_trains_on_user_0s_pilots_and_the_checkpoint_serves_every_user(tmp_path, capsys):
    """``wavefront train --rx-antennas R --users U``: a per-pair model on user 0's layout (the pair's SISO law), whose
    checkpoint the MIMO sweep then runs for every (antenna, user) pair, each user on its own (shifted) pilots."""
    from wavefront.cli import main
    from wavefront.resolve import resolve_estimators

    cfg = small_mimo()
    (tmp_path / "sys.yaml").write_text("ofdm:\n  num_subcarriers: 48\n  pilot_subcarrier_spacing: 2\n"
                                       "channel:\n  snr_db: [0, 20]\n")
    run = tmp_path / "run"
    rc = main(["train", "--model", "gated-lmmse", "--on-the-fly", str(tmp_path / "sys.yaml"), "--rx-antennas", "3",
               "--users", "2", "--rx-correlation", "0.7", "--set", "delay_spread_bins=2", "--set", "doppler_bins=2",
               "--steps", "2", "--batch-size", "4", "--eval-every", "2", "--val-frames", "8", "--device", "cpu",
               "--out", str(run), "--no-progress"])
    assert rc == 0 and "per-(antenna, user) model on user 0's pilots (12x2: subcarriers 0::4, symbols 2,11)" in capsys.readouterr().err
    stored = ckpt.Checkpoint(run / "last.safetensors").system_config
    assert list(stored.ofdm.pilot_subcarriers) == list(user_configs(cfg)[0].ofdm.pilot_subcarriers) == list(range(0, 48, 4))
    assert not stored.mimo.is_mimo
    (est,) = resolve_estimators([str(run / "last.safetensors")], cfg)
    fr = MimoFrameGenerator(cfg).generate(2, seed=4, with_data=False)
    got = est.estimate(fr.pilots_ls, fr.meta)
    for u, user in enumerate(user_configs(cfg)):
        model = ckpt.Checkpoint(run / "last.safetensors").build_model(user).eval()
        with torch.no_grad():
            want = model(fr.pilots_ls[:, 1, u])
        torch.testing.assert_close(got[:, 1, u], want, rtol=0, atol=1e-6)


def test_train_on_mimo_shards_reads_user_0s_pairs_and_refuses_what_it_cannot_train(tmp_path, capsys):
    from wavefront.cli import main

    (tmp_path / "sys.yaml").write_text("ofdm:\n  num_subcarriers: 48\n  pilot_subcarrier_spacing: 2\n")
    gen = ["--config", str(tmp_path / "sys.yaml"), "--rx-antennas", "2", "--users", "2", "--batch-size", "4",
           "--device", "cpu", "--no-progress"]
    assert main(["generate", "--frames", "8", "--out", str(tmp_path / "train"), *gen]) == 0
    assert main(["generate", "--frames", "4", "--seed", "1", "--out", str(tmp_path / "val"), *gen]) == 0
    run = tmp_path / "run"
    assert main(["train", "--model", "linear", "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"),
                 "--epochs", "1", "--batch-size", "8", "--eval-every", "2", "--device", "cpu", "--out", str(run),
                 "--no-progress"]) == 0  # 8 frames x 2 antennas of user 0: 16 pairs, two steps of 8
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[-1].split(",")[0] == "2"
    assert ckpt.Checkpoint(run / "last.safetensors").system_config.ofdm.pilot_shape == (12, 2)
    from wavefront.datasets import H5FrameDataset
    from wavefront.estimators.data import open_frame_folder, pair_training_config, recorded_config

    pairs0 = open_frame_folder(str(tmp_path / "train"), pair_training_config(recorded_config(str(tmp_path / "train"))))
    frame1 = H5FrameDataset(tmp_path / "train")[1]
    assert len(pairs0) == 16 and torch.equal(pairs0[3]["pilots"], frame1["pilots"][1, 0])  # frame 1, antenna 1, user 0
    assert torch.equal(pairs0[3]["h"], frame1["h"][1, 0])
    capsys.readouterr()
    for argv, want in ((["--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"), "--users", "2"],
                        "--train shards carry their own antennas and users"),
                       (["--on-the-fly", "default", "--rx-antennas", "2", "--users", "2", "--mimo-pilots", "dmrs-type1"],
                        "mimo.pilots='dmrs-type1': training per (antenna, user) pair takes the Kronecker pattern only")):
        assert main(["train", "--model", "linear", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "x"),
                     *argv]) == 2
        err = capsys.readouterr().err
        assert want in err and err.count("\n") == 1 and "Traceback" not in err


def test_evaluate_with_mimo_flags_runs_the_per_pair_checkpoint_for_every_user_against_the_mimo_bound(tmp_path, capsys):
    """``wavefront evaluate --rx-antennas R --users U``: the paper points on the MIMO system, the checkpoint run per
    (antenna, user) on each user's own pilots, the bound the genie over space (below the 2-D one at rho = 0.7)."""
    import json
    import math

    from wavefront.cli import main
    from wavefront.sim.lmmse import genie_mse
    from wavefront.sim.mimo import mimo_genie_mse

    (tmp_path / "sys.yaml").write_text("ofdm:\n  num_subcarriers: 48\n  pilot_subcarrier_spacing: 2\n"
                                       "channel:\n  snr_db: [0, 20]\n")
    run, out = tmp_path / "run", tmp_path / "eval"
    mimo = ["--rx-antennas", "3", "--users", "2", "--rx-correlation", "0.7"]
    assert main(["train", "--model", "gated-lmmse", "--on-the-fly", str(tmp_path / "sys.yaml"), *mimo,
                 "--set", "delay_spread_bins=2", "--set", "doppler_bins=2", "--steps", "2", "--batch-size", "4",
                 "--eval-every", "2", "--val-frames", "8", "--device", "cpu", "--out", str(run), "--no-progress"]) == 0
    rc = main(["evaluate", "--checkpoint", str(run / "last.safetensors"), "--config", str(tmp_path / "sys.yaml"), *mimo,
               "--frames-per-point", "2", "--conditions", "true", "--baselines", "ls-linear,lmmse-genie",
               "--out", str(out), "--no-plots"])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())["rows"]
    model = [r for r in rows if r["estimator"] == "gated-lmmse"]
    assert len(model) == 21 and all(r["frames"] == 2 and "per antenna and user" in r["given"] for r in model)
    cfg = small_mimo()
    for r in model:
        args = (r["snr_db"], r["delay_spread_ns"] * 1e-9, r["doppler_hz"])
        want = float(mimo_genie_mse(cfg, *(torch.tensor([v], dtype=torch.float64) for v in args)).mean())
        assert abs(r["bound_db"] - 10 * math.log10(want)) < 1e-6, (r, want)
    siso = float(genie_mse(user_configs(cfg)[0], torch.tensor([10.0], dtype=torch.float64),
                           torch.tensor([1e-7], dtype=torch.float64), torch.tensor([200.0], dtype=torch.float64)).mean())
    at = next(r for r in model if r["sweep"] == "doppler" and r["doppler_hz"] == 200.0)
    assert at["bound_db"] < 10 * math.log10(siso) - 0.1  # the space genie, not the 2-D bound
    # a suite's shards carry their own antennas and users: MIMO flags beside --suite are refused in one line
    rc = main(["evaluate", "--checkpoint", str(run / "last.safetensors"), "--suite", str(tmp_path), *mimo,
               "--out", str(tmp_path / "e2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "rx_antennas/users" in err[-1], err


def test_train_user_u_and_sweep_one_checkpoint_per_user(tmp_path, capsys):
    """A model that is not frequency-shift invariant (``linear``): ``train --user u`` fits user u's pilots, and sweep takes
    ``U0+U1`` as one row, each checkpoint on its own user's pilots; one checkpoint for both users, or the two swapped, is
    refused in one line that names the '+' form."""
    import json

    from wavefront.cli import main

    (tmp_path / "sys.yaml").write_text("ofdm:\n  num_subcarriers: 48\n  pilot_subcarrier_spacing: 2\n"
                                       "channel:\n  snr_db: [0, 20]\n")
    mimo = ["--rx-antennas", "3", "--users", "2", "--rx-correlation", "0.7"]
    runs = []
    for u in (0, 1):
        run = tmp_path / f"u{u}"
        assert main(["train", "--model", "linear", "--on-the-fly", str(tmp_path / "sys.yaml"), *mimo, "--user", str(u),
                     "--steps", "2", "--batch-size", "4", "--eval-every", "2", "--val-frames", "8", "--device", "cpu",
                     "--out", str(run), "--no-progress"]) == 0
        stored = ckpt.Checkpoint(run / "last.safetensors").system_config
        assert list(stored.ofdm.pilot_subcarriers) == list(user_configs(small_mimo())[u].ofdm.pilot_subcarriers)
        runs.append(str(run / "last.safetensors"))
    capsys.readouterr()
    sweep = ["sweep", "--config", str(tmp_path / "sys.yaml"), *mimo, "--snr-db", "10", "--frames", "4",
             "--conditions", "true", "--no-progress"]
    assert main(sweep + ["--estimators", f"ls-linear,{runs[0]}+{runs[1]}", "--out", str(tmp_path / "ok")]) == 0
    rows = json.loads((tmp_path / "ok" / "results.json").read_text())["rows"]
    assert [r["estimator"] for r in rows] == ["ls-linear", "linear"] and math.isfinite(rows[1]["mse_db"])
    # evaluate takes the same list, over the paper's 21 points
    assert main(["evaluate", "--checkpoint", f"{runs[0]}+{runs[1]}", "--config", str(tmp_path / "sys.yaml"), *mimo,
                 "--frames-per-point", "2", "--conditions", "true", "--baselines", "ls-linear",
                 "--out", str(tmp_path / "ev"), "--no-plots"]) == 0
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())["rows"]
    assert len([r for r in ev if r["estimator"] == "linear"]) == 21
    for bad in (runs[0], f"{runs[1]}+{runs[0]}"):
        rc = main(sweep + ["--estimators", bad, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and "pilot" in err[-1] and "+" in err[-1], err
    rc = main(sweep + ["--estimators", f"{runs[0]}+{runs[1]}+{runs[0]}", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "2 users" in err[-1], err
    rc = main(["train", "--model", "linear", "--on-the-fly", str(tmp_path / "sys.yaml"), *mimo, "--user", "2",
               "--steps", "1", "--out", str(tmp_path / "u2"), "--no-progress"])
    assert rc == 2 and "user=2" in capsys.readouterr().err


def _attention_run(model, p):
    """Returns (out, h [B, R, F*T] the per-pair stage, token input [B, R, 2], tokens [B, R, d]) of one forward."""
    seen = {}
    hook = model.token.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0], tok=out))
    try:
        with torch.no_grad():
            out = model(p)
            h = model.per_pair(p.reshape(-1, *p.shape[2:])).reshape(p.shape[0], p.shape[1], -1)
    finally:
        hook.remove()
    return out, h, seen["x"], seen["tok"]


def test_antenna_attention_output_is_the_documented_mix_of_its_inputs():
    """``out_r = g_r ((1 - a_r) h_r + a_r sum_s A_rs h_s)``; A's logits ``q_r . k_s / sqrt(d)`` (PyTorch's own attention
    gives them back) plus the biases; the tokens read log pilot energy and log residual at the layout's positions."""
    import torch.nn.functional as F

    u0 = user_configs(small_mimo())[0]
    model = perturbed(small_attention(u0, position_bias=False), seed=3)
    p = torch.randn(2, 4, 12, 2, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    out, h, x, tok = _attention_run(model, p)
    with torch.no_grad():
        A, share, gain = model.mixing(p.reshape(2, 4, -1), h)
    want = gain[..., None] * ((1 - share[..., None]) * h + share[..., None] * torch.einsum("brs,bsn->brn", A.to(h.dtype), h))
    torch.testing.assert_close(out.reshape(2, 4, -1), want, rtol=0, atol=1e-5)
    # the token input: log energy and log residual of each antenna's pilots against its estimate there
    pos = torch.tensor(u0.ofdm.pilot_layout.positions)
    at_pilots = h.reshape(2, 4, 48, 14)[:, :, pos[:, 0], pos[:, 1]]
    flat = p.reshape(2, 4, -1)
    torch.testing.assert_close(x[..., 0], torch.log(flat.abs().square().mean(-1) + 1e-6), rtol=0, atol=1e-5)
    torch.testing.assert_close(x[..., 1], torch.log((flat - at_pilots).abs().square().mean(-1) + 1e-6), rtol=0, atol=1e-5)
    # with the pair bias silenced, A is scaled dot-product attention of the tokens' queries and keys
    with torch.no_grad():
        torch.nn.init.zeros_(model.pair[-1].weight), torch.nn.init.zeros_(model.pair[-1].bias)
        A0, _, _ = model.mixing(p.reshape(2, 4, -1), h)
        ref = F.scaled_dot_product_attention(model.query(tok), model.key(tok), torch.eye(4).expand(2, 4, 4))
    torch.testing.assert_close(A0, ref, rtol=0, atol=1e-6)


def test_antenna_attention_is_equivariant_to_a_common_phase():
    # the absolute phase of the received signal carries no information: rotating every antenna's pilots rotates the output
    u0 = user_configs(small_mimo())[0]
    model = perturbed(small_attention(u0), seed=4)
    p = torch.randn(2, 4, 12, 2, dtype=torch.complex64, generator=torch.Generator().manual_seed(2))
    rot = torch.polar(torch.tensor(1.0), torch.tensor(2.1))
    with torch.no_grad():
        a, b = model(rot * p), rot * model(p)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * float(b.abs().max()))


def test_antenna_attention_biases_distance_and_pair_correlation_and_starts_at_its_initial_share():
    u0 = user_configs(small_mimo())[0]
    fresh = small_attention(u0, initial_share=0.3)
    p = torch.randn(2, 4, 12, 2, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    _, h, _, _ = _attention_run(fresh, p)
    with torch.no_grad():
        _, share, gain = fresh.mixing(p.reshape(2, 4, -1), h)
    torch.testing.assert_close(share, torch.full((2, 4), 0.3), rtol=0, atol=1e-6)
    assert torch.equal(gain, torch.ones(2, 4))
    # queries, keys and the pair bias silenced, distances clamped at 1: A_rr = 1 / (1 + 3 e^b), A_rs = e^b / (1 + 3 e^b)
    model = perturbed(small_attention(u0, max_antenna_distance=2), seed=5)
    with torch.no_grad():
        for layer in (model.query, model.key, model.pair[-1]):
            torch.nn.init.zeros_(layer.weight), torch.nn.init.zeros_(layer.bias)
        model.distance_bias.copy_(torch.tensor([0.0, 0.7]))
        A, _, _ = model.mixing(p.reshape(2, 4, -1), h)
    e = math.exp(0.7)
    want = torch.where(torch.eye(4, dtype=torch.bool), 1 / (1 + 3 * e), e / (1 + 3 * e)).expand(2, 4, 4)
    torch.testing.assert_close(A, want, rtol=0, atol=1e-6)
    # the pair bias sees the sample correlation: blind to each antenna's scale, not to whether a pair is (r, r)
    free = perturbed(small_attention(u0, position_bias=False), seed=6)
    with torch.no_grad():
        torch.nn.init.zeros_(free.query.weight), torch.nn.init.zeros_(free.query.bias)
        scale = torch.tensor([0.5, 1.0, 3.0, 7.0])[None, :, None]
        flat = p.reshape(2, 4, -1)
        A1, _, _ = free.mixing(flat, h)
        A2, _, _ = free.mixing(flat * scale, h * scale)
        twins, _, _ = free.mixing(flat[:, :1].expand(2, 2, -1), h[:, :1].expand(2, 2, -1))
    torch.testing.assert_close(A1, A2, rtol=0, atol=1e-6)
    assert float((twins[:, 0, 0] - twins[:, 0, 1]).abs().min()) > 1e-3  # identical estimates, yet (0, 0) is not (0, 1)


def _tiny_mimo():
    return SystemConfig().updated(
        ofdm={"num_subcarriers": 12, "num_symbols": 4, "pilot_subcarrier_spacing": 2, "pilot_symbols": [0, 3]},
        channel={"snr_db": [0.0, 20.0]}, mimo={"num_rx_antennas": 2, "num_users": 2, "rx_correlation": 0.5})


def test_user_batch_is_user_0_of_the_seeds_frames_and_mimo_forward_runs_each_antenna_as_its_own_pair():
    from wavefront.estimators.mimo_train import mimo_forward, user_batch

    cfg = _tiny_mimo()
    pilots, h = user_batch(MimoFrameGenerator(cfg), 3, seed=4)
    fr = MimoFrameGenerator(cfg).generate(3, seed=4, with_data=False)
    assert torch.equal(pilots, fr.pilots_ls[:, :, 0]) and torch.equal(h, fr.h[:, :, 0])
    model = perturbed(create("linear", user_configs(cfg)[0]))
    with torch.no_grad():
        joint = mimo_forward(model, pilots)
        alone = torch.stack([model(pilots[:, r]) for r in range(2)], dim=1)  # antenna r of every frame, by itself
    assert joint.shape == (3, 2, 12, 4)
    torch.testing.assert_close(joint, alone, rtol=1e-6, atol=1e-6)


def test_train_on_mimo_frames_logs_the_mean_loss_of_each_window_of_seeds_and_refuses_no_steps():
    from wavefront.estimators.mimo_train import mimo_forward, train_on_mimo_frames, user_batch

    cfg = _tiny_mimo()
    model = perturbed(create("linear", user_configs(cfg)[0]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    log = train_on_mimo_frames(model, cfg, steps=3, batch_size=2, lr=0.0, seed=10, log_every=2)  # lr 0: a fixed model
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()) and not model.training
    gen = MimoFrameGenerator(cfg)
    with torch.no_grad():  # step i draws seed 10 + i; the log averages steps 1-2, then step 3 alone
        mse = [float((mimo_forward(model, p) - h).abs().square().mean()) for p, h in
               (user_batch(gen, 2, 10 + i) for i in range(3))]
    assert [r["step"] for r in log] == [2, 3]
    assert log[0]["train_mse_db"] == pytest.approx(10 * math.log10((mse[0] + mse[1]) / 2), abs=2e-3)
    assert log[1]["train_mse_db"] == pytest.approx(10 * math.log10(mse[2]), abs=2e-3)
    with pytest.raises(ConfigError, match="steps=0"):
        train_on_mimo_frames(model, cfg, steps=0)


def test_antenna_attention_trained_on_a_mimo_folder_sees_each_users_antennas_together(tmp_path):
    # From a folder the trainer took the per-pair view, one antenna a sample: antenna-attention then ran at
    # R = 1, where every cross-antenna weight (query, key, pair MLP, distance bias, share) gets zero gradient,
    # and the run quietly trained a per-pair model. It now takes one user's antennas as one sample, as on the fly.
    from wavefront.datasets.generate import DatasetSpec, generate_dataset
    from wavefront.estimators.data import DatasetSource, antenna_samples, open_frame_folder, pair_training_config
    from wavefront.estimators.train import TrainConfig, train
    from wavefront.datasets import H5FrameDataset

    cfg = small_mimo(R=3, U=2).updated(channel={"snr_db": [0.0, 20.0]})
    generate_dataset(DatasetSpec(cfg, 1, 16, 16, 8), tmp_path / "train")
    generate_dataset(DatasetSpec(cfg, 2, 8, 8, 8), tmp_path / "val")
    user_cfg = pair_training_config(cfg, 1)
    data = antenna_samples(open_frame_folder(str(tmp_path / "train"), user_cfg, user=1))
    frames = H5FrameDataset(tmp_path / "train")
    assert len(data) == 16  # one sample a frame, not 16 x 3 pairs
    b = DatasetSource(data, 4, 0).batch(0)
    assert b["pilots"].shape == (4, 3, 12, 2) and b["h"].shape == (4, 3, 48, 14) and b["snr_db"].shape == (4,)
    s = data[5]
    assert torch.equal(s["pilots"], frames[5]["pilots"][:, 1]) and torch.equal(s["h"], frames[5]["h"][:, 1])
    assert float(s["snr_db"]) == float(frames[5]["snr_db"])

    run = TrainConfig(model="antenna-attention", model_overrides=dict(SMALL_BANK), epochs=1, batch_size=4, lr=1e-2,
                      warmup_steps=1, eval_every=4, device="cpu", out_dir=str(tmp_path / "run"), progress=False,
                      patience=0, user=1)
    result = train(run, user_cfg, train_data=open_frame_folder(str(tmp_path / "train"), user_cfg, user=1),
                   val_data=open_frame_folder(str(tmp_path / "val"), user_cfg, user=1))
    assert result["step"] == 4  # 16 frames / batch 4
    learned = ckpt.Checkpoint(tmp_path / "run" / "last.safetensors").tensors
    assert float(learned["model.distance_bias"].abs().max()) > 1e-4  # zero at the start, and at R = 1 for ever
