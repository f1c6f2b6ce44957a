"""The compressed-surrogate recipe end to end, at a tiny budget: both networks learn the wave step."""
import importlib.util
import json
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "surrogate_compression.py"
_spec = importlib.util.spec_from_file_location("surrogate_compression", _SCRIPT)
surrogate_compression = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(surrogate_compression)


def test_full_and_compressed_surrogates_both_beat_linear_extrapolation(tmp_path):
    out = tmp_path / "surrogate"
    assert surrogate_compression.main(["--out", str(out), "--steps", "100", "--seeds", "0", "--train-models", "6",
                                       "--val-models", "2"]) == 0
    res = json.loads((out / "surrogate.json").read_text())
    linear = res["linear_extrapolation_test_rel_l2"]
    runs = {r["model"]: r for r in res["runs"]}
    # 100 steps already take both well below the network's starting point (linear extrapolation)
    assert runs["full"]["test_rel_l2"] < 0.5 * linear
    assert runs["compressed"]["test_rel_l2"] < 0.5 * linear
    # ranks (9, 4, 4, 9) on 24 channels, k = 5: the closed-form counts and their ratio
    assert (runs["full"]["conv_params"], runs["compressed"]["conv_params"]) == (31_273, 5_805)
    assert res["summary"]["param_ratio"] == pytest.approx(31_273 / 5_805)


def test_rank_list_of_the_wrong_length_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        surrogate_compression.main(["--out", str(tmp_path), "--rank", "9", "4", "9"])
    assert exc.value.code == 2
    assert "one value or one per layer (4), got 3" in capsys.readouterr().err
