import json

import pytest
import torch

from wavefront.cli import main
from wavefront.imaging.layouts import regular_corners
from wavefront.imaging.tasks import stripe_glyph_scenes


@pytest.mark.parametrize("argv,message", [
    (["codesign", "layout", "--pixels", "16x99"], "pixels='16x99': the layout has more pixels than the 64x64 image"),
    (["codesign", "layout", "--pixels", "sixteen"], "pixels='sixteen': must look like HxW"),
    (["codesign", "layout", "--task", "mnist"], "task='mnist': must be one of stripe-glyph"),
    (["codesign", "receivers", "--receivers", "63"], "receivers=63: must be between 1 and the 62 cells"),
    (["codesign", "receivers", "--scene", "fwi"], "scene='fwi': must be one of source-localisation"),
    (["codesign", "layout", "--image-size", "-4"], "image_size=-4: must be a positive integer"),
    (["codesign", "layout", "--pixels", "0x16"], "pixels='0x16': both sides must be positive integers"),
    (["codesign", "receivers", "--noise", "nan"], "noise=nan: must be >= 0"),
    (["codesign", "receivers", "--train-shots", "0"], "train_shots=0: must be a positive integer"),
])
def test_bad_codesign_input_is_one_line_and_exit_code_2(argv, message, capsys, tmp_out):
    assert main([*argv, "--out", str(tmp_out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("what", ["layout", "receivers"])
def test_codesign_out_that_is_a_file_is_refused_before_training(what, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("keep me")
    assert main(["codesign", what, "--epochs", "1", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"out={str(f)!r}: is a file, not a folder" in err
    assert f.read_text() == "keep me"


def test_codesign_layout_writes_metrics_plot_and_checkpoint_and_moves_the_layout(tmp_out, capsys):
    rc = main(["codesign", "layout", "--pixels", "8x8", "--image-size", "32", "--epochs", "1", "--seeds", "0",
               "--train-images", "64", "--val-images", "32", "--out", str(tmp_out)])
    assert rc == 0
    result = json.loads((tmp_out / "results.json").read_text())
    acc = result["per_seed"][0]
    assert 0 <= acc["learned"]["val_accuracy"] <= 1 and 0 <= acc["regular"]["val_accuracy"] <= 1
    assert (tmp_out / "layout_seed0.png").stat().st_size > 0
    ckpt = torch.load(tmp_out / "checkpoint_seed0.pt")
    logits = ckpt["learned_sensor"]["layout.logits_y"]
    assert float(logits.abs().max()) > 0  # the layout was trained, not left regular
    assert "learned" in capsys.readouterr().out


def test_stripe_glyph_scenes_are_balanced_images_in_the_unit_range():
    images, labels = stripe_glyph_scenes(400, torch.Generator().manual_seed(0), size=64)
    assert images.shape == (400, 1, 64, 64) and images.min() >= 0 and images.max() <= 1
    counts = torch.bincount(labels, minlength=4)
    assert int(counts.min()) > 70  # 100 expected per class


def test_regular_sensor_cannot_see_period_four_stripes_inside_the_glyph():
    # Any 4 consecutive rows of a period-4 stripe hold 2 bright and 2 dark rows, so a cell of
    # 4x4 pixels lying inside the glyph averages to the grey of the 'flat' class.
    gen = torch.Generator().manual_seed(1)
    images, labels = stripe_glyph_scenes(64, gen, size=64, jitter=0, periods=(4,))
    cells = torch.nn.functional.avg_pool2d(images, 4)[:, 0, 6:10, 6:10]  # the glyph spans pixels 24..40
    spread = cells.amax((-2, -1)) - cells.amin((-2, -1))
    assert float(spread.max()) < 1e-6
    assert regular_corners((16, 16), (64, 64))[6, 6].tolist() == [24.0, 24.0]
