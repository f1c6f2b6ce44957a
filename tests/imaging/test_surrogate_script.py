"""wavefront.imaging.surrogate and its script end to end, at a tiny budget: both networks learn the wave step."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wavefront.imaging.surrogate import rel_l2, rollout_rel_l2, train, triplets

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "surrogate_compression.py"


def _script(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True)


@pytest.mark.slow
def test_full_and_compressed_surrogates_both_beat_linear_extrapolation(tmp_path):
    out = tmp_path / "surrogate"
    p = _script("--out", str(out), "--steps", "100", "--seeds", "0", "--train-models", "6", "--val-models", "2",
                "--horizons", "1", "5", "20")
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((out / "surrogate.json").read_text())
    split = res["splits"][0]
    linear = split["linear_extrapolation_test_rel_l2"]
    runs = {r["model"]: r for r in split["runs"]}
    # 100 steps already take both well below the network's starting point (linear extrapolation)
    assert runs["full"]["test_rel_l2"] < 0.5 * linear
    assert runs["compressed"]["test_rel_l2"] < 0.5 * linear
    # The separable path is the same network: the same test error
    assert runs["compressed"]["test_rel_l2_separable"] == pytest.approx(runs["compressed"]["test_rel_l2"], rel=1e-4)
    # Fed on its own predictions the error grows with the horizon
    for r in runs.values():
        roll = r["test_rollout_rel_l2"]
        assert roll["1"] < roll["5"] < roll["20"]
    # ranks (9, 4, 4, 9) on 24 channels, k = 5: the closed-form counts and their ratio
    assert (runs["full"]["conv_params"], runs["compressed"]["conv_params"]) == (31_273, 5_805)
    assert res["summary"]["param_ratio"] == pytest.approx(31_273 / 5_805)


def test_rollout_of_linear_extrapolation_on_a_quadratic_in_time_has_the_closed_form_error():
    # u_t = c t^2: extrapolating from (0, c) gives u_{h+1} = (h + 1) c against (h + 1)^2 c,
    # a relative error of h / (h + 1) after h steps.
    t = torch.arange(12, dtype=torch.float64)
    pattern = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    snaps = pattern * t.reshape(1, -1, 1, 1) ** 2
    errors = rollout_rel_l2(None, (snaps, torch.ones(2, 5, 5)), 1.0, [1, 2, 5, 10])
    assert errors == pytest.approx({"1": 1 / 2, "2": 2 / 3, "5": 5 / 6, "10": 10 / 11}, rel=1e-12)


def test_rank_list_of_the_wrong_length_is_refused(tmp_path):
    p = _script("--out", str(tmp_path), "--rank", "9", "4", "9")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "one value or one per layer (4), got 3" in p.stderr


def test_snapshots_kept_is_what_make_sequences_keeps():
    from wavefront.imaging.surrogate import DT_S, DX_M, FREQ_HZ, make_sequences, snapshots_kept

    # the source fires for 2 x 1.5 / 15 Hz = 0.2 s = 50 snapshots of 4 x 1 ms: 400 steps keep 100 - 50
    assert snapshots_kept(400, 4, DT_S, FREQ_HZ) == 50
    assert snapshots_kept(212, 4, DT_S, FREQ_HZ) == 3 and snapshots_kept(211, 4, DT_S, FREQ_HZ) == 2
    snaps, v = make_sequences(1, 0, 12, 212, 4, DX_M, DT_S, FREQ_HZ)
    assert snaps.shape == (1, 3, 12, 12) and v.shape == (1, 12, 12)
    # 215 steps hold 53 whole strides: a snapshot ends each stride, none is taken from the 3 steps left over
    assert snapshots_kept(215, 4, DT_S, FREQ_HZ) == 3
    assert make_sequences(1, 0, 12, 215, 4, DX_M, DT_S, FREQ_HZ)[0].shape == (1, 3, 12, 12)
    # velocities enter as v / 3000 m/s: the random models span 1500-3500 m/s
    assert 1500 / 3000 - 1e-6 <= float(v.min()) < float(v.max()) <= 3500 / 3000 + 1e-6


@pytest.mark.parametrize("argv,message", [
    (["--nt", "60"], "--nt=60: keeps 0 snapshots"),            # was a reshape traceback ("invalid shape dimension -16")
    (["--nt", "211"], "give --nt >= 212"),
    (["--horizons", "60"], "--horizons=[60]: must be >= 1, and one at most 48"),  # was max() of an empty list
    (["--size", "8"], "--size=8: must be >= 9"),
])
def test_sizes_with_no_data_are_refused_in_one_line(argv, message, tmp_path):
    p = _script("--out", str(tmp_path / "s"), "--seeds", "0", "--steps", "1", *argv)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert message in p.stderr.strip().splitlines()[-1] and not (tmp_path / "s").exists()


def _quadratic(n_t=10):
    """Snapshots u_t = P t^2 for two patterns P [2, T, 5, 5] (float64) and a velocity [2, 5, 5] of 0.5 and 0.9."""
    t = torch.arange(n_t, dtype=torch.float64)
    pattern = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return pattern * t.reshape(1, -1, 1, 1) ** 2, torch.tensor([0.5, 0.9], dtype=torch.float64).reshape(2, 1, 1).expand(2, 5, 5)


def test_triplets_are_each_sequences_consecutive_snapshots_with_its_velocity():
    snaps = torch.arange(2 * 5, dtype=torch.float64).reshape(2, 5, 1, 1).expand(2, 5, 3, 3) + 0  # value 5 n + t
    v = torch.tensor([7.0, 9.0], dtype=torch.float64).reshape(2, 1, 1).expand(2, 3, 3)
    u0, u1, u2, vv = triplets((snaps, v))
    assert u0.shape == (6, 3, 3) and vv.shape == (6, 3, 3)
    assert u0[:, 0, 0].tolist() == [0, 1, 2, 5, 6, 7]
    assert (u1 - u0).eq(1).all() and (u2 - u1).eq(1).all()
    assert vv[:, 0, 0].tolist() == [7, 7, 7, 9, 9, 9]


def test_teacher_forced_linear_extrapolation_of_a_quadratic_misses_by_the_second_difference():
    # u_t = P t^2: 2 u_{t+1} - u_t = (t^2 + 4t + 2) P misses (t + 2)^2 P by 2 P at every step, so the
    # relative error is sqrt(sum 4) / sqrt(sum (t + 2)^4) over t = 0 .. T - 3.
    snaps, v = _quadratic()
    t = torch.arange(8, dtype=torch.float64)
    expect = float((4 * len(t)) ** 0.5 / ((t + 2) ** 4).sum().sqrt())
    assert rel_l2(None, triplets((snaps, v)), 1.0) == pytest.approx(expect, rel=1e-12)


@pytest.mark.parametrize("scale", [1.0, 7.0])
def test_a_network_that_extrapolates_in_scaled_units_scores_as_linear_extrapolation(scale):
    """Fields enter the network divided by ``scale`` and its output is multiplied back: the errors are scale-free."""
    snaps, v = _quadratic()
    net = lambda prev, now, vel: 2 * now - prev  # noqa: E731
    assert rel_l2(net, triplets((snaps, v)), scale) == pytest.approx(rel_l2(None, triplets((snaps, v)), 1.0), rel=1e-12)
    assert rollout_rel_l2(net, (snaps, v), scale, [1, 3, 8]) == pytest.approx(
        rollout_rel_l2(None, (snaps, v), 1.0, [1, 3, 8]), rel=1e-12)


def test_rollout_keeps_only_the_horizons_the_sequences_hold():
    snaps, v = _quadratic(6)  # 6 snapshots: from the first two, at most 4 steps ahead
    assert set(rollout_rel_l2(None, (snaps, v), 1.0, [1, 4, 5, 9])) == {"1", "4"}


class _Bias(torch.nn.Module):
    """One bias ``w``, output below every target, so ``d loss / d w < 0`` throughout: Adam moves w up each step.

    ``path``: w before each forward; ``seen`` (when given): the inputs of each forward, keyed by whether grad was on.
    """

    def __init__(self, seen: dict | None = None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.path, self.seen = [], seen

    def forward(self, prev, now, vel):
        if self.seen is not None:
            self.seen.setdefault(torch.is_grad_enabled(), []).append((prev, now, vel))
        self.path.append(float(self.w.detach()))
        return self.w + 0 * now - 1e6


def test_training_feeds_the_network_what_evaluation_feeds_it_and_follows_one_cycle():
    """Scaled fields and unscaled velocities in both; the learning rate rises to ``lr`` and anneals.

    The network is one bias w with a constant-sign gradient, so each Adam step moves w by about the
    step's learning rate (exactly, but for the momentum the one-cycle schedule also cycles): the 40
    steps move it by about half of 40 lr (a constant rate would move it by all of it: ratio 1), and
    no single step exceeds lr.
    """
    snaps, v = _quadratic()
    data = triplets((snaps.float(), v.float()))
    seen = {}
    model = train(_Bias(seen), data, 7.0, steps=40, batch=4, lr=0.1, seed=0)
    path = torch.tensor(model.path + [float(model.w.detach())])
    prev, now, vel = seen[True][0]
    rows = [int(torch.nonzero((data[1] / 7.0 - now[i]).flatten(1).abs().amax(1) == 0)[0]) for i in range(4)]
    torch.testing.assert_close(prev, data[0][rows] / 7.0)
    torch.testing.assert_close(vel, data[3][rows])
    rel_l2(model, data, 7.0)
    e_prev, e_now, e_vel = seen[False][0]
    torch.testing.assert_close(e_prev, data[0] / 7.0)
    torch.testing.assert_close(e_vel, data[3])
    steps = path[1:] - path[:-1]
    assert float(steps.max()) <= 0.1 * (1 + 1e-5) and float(steps.min()) > 0
    assert 0.35 < float(steps.sum()) / (40 * 0.1) < 0.65


@pytest.mark.parametrize("steps", [1, 2, 5, 10, 11])
def test_a_short_training_runs_and_never_steps_beyond_lr(steps):
    """At 10 steps torch's one-cycle schedule at 10 % warm-up divided by zero (the script's --steps 10 crashed).

    The one-bias network of the test above, whose gradient keeps one sign: every step moves w up, by at most lr.
    """
    snaps, v = _quadratic()
    data = triplets((snaps.float(), v.float()))
    model = train(_Bias(), data, 7.0, steps=steps, batch=4, lr=0.1, seed=0)
    path = torch.tensor(model.path + [float(model.w.detach())])
    moves = path[1:] - path[:-1]
    assert len(moves) == steps and float(moves.min()) > 0 and float(moves.max()) <= 0.1 * (1 + 1e-5)
