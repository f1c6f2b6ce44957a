"""wavefront.imaging.surrogate and its script end to end, at a tiny budget: both networks learn the wave step."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wavefront.imaging.surrogate import rollout_rel_l2

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
