"""The layout experiment compares a learned layout with the task's own hand-made layouts: on two-site-glyph a fovea
at each site besides the central one, which is near chance there."""
import json

import pytest

from wavefront.cli import main
from wavefront.imaging.codesign import HAND_LAYOUTS, train_layout

SMALL = dict(image_size=32, num_train=32, num_val=16, num_test=16)


@pytest.mark.parametrize("task", ["stripe-glyph", "two-site-glyph"])
def test_each_task_is_compared_with_its_own_hand_made_layouts_trained_as_they_would_be_alone(task, tmp_path):
    out = tmp_path / "run"
    assert main(["codesign", "layout", "--task", task, "--pixels", "16x16", "--image-size", "32", "--epochs", "1",
                 "--seeds", "0", "--train-images", "32", "--val-images", "16", "--test-images", "16", "--threads", "1",
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    hand = HAND_LAYOUTS[task]
    assert ("two-fovea" in hand) == (task == "two-site-glyph") and "foveated" in hand
    assert res["baselines"] == ["regular", *hand]
    assert {f"learned_minus_{b}" for b in res["baselines"]} <= set(res["summary"])
    row = res["per_seed"][0]
    assert set(row) == {"seed", "learned", "regular", *hand}
    for h in hand:  # each arm is that layout, not another under its name (after one epoch the two foveae's test loss
        # is 1.38364 against the central one's 1.38312: 4e-4 apart, 40 times the tolerance)
        alone = train_layout(task, (16, 16), h, False, 1, 0, **SMALL)
        assert row[h]["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-5)
