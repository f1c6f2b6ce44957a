import json
import math

import pytest
import torch

from scipy import stats

from wavefront.cli import main
from wavefront.imaging.codesign import (accuracy, layout_splits, paired_difference, receiver_data,
                                        run_receiver_experiment, summarise)
from wavefront.imaging.layouts import SensorSimulator, make_layout, regular_corners
from wavefront.errors import ConfigError
from wavefront.imaging.tasks import GlyphNet, TraceNet, WaveScene, stripe_glyph_scenes, two_site_glyph_scenes
from wavefront.imaging.wave import LearnableReceivers, Region


@pytest.mark.parametrize("argv,message", [
    (["codesign", "layout", "--pixels", "16x99"], "pixels='16x99': the layout has more pixels than the 64x64 image"),
    (["codesign", "layout", "--pixels", "sixteen"], "pixels='sixteen': must look like HxW"),
    (["codesign", "layout", "--task", "mnist"], "task='mnist': must be one of stripe-glyph"),
    (["codesign", "receivers", "--receivers", "63"], "receivers=63: must be between 1 and the 62 cells"),
    (["codesign", "receivers", "--scene", "fwi"], "scene='fwi': must be one of source-localisation"),
    (["codesign", "layout", "--image-size", "-4"], "image_size=-4: must be a positive integer"),
    (["codesign", "layout", "--pixels", "0x16"], "pixels='0x16': both sides must be positive integers"),
    (["codesign", "receivers", "--noise", "nan"], "noise=nan: must be a finite number"),
    (["codesign", "receivers", "--train-shots", "0"], "train_shots=0: must be a positive integer"),
    # the glyphs follow --image-size, the one size the user sets: the message names it and what fits
    (["codesign", "layout", "--image-size", "20", "--pixels", "4x4"],
     "image_size=20: too small for stripe-glyph (glyph=16: with jitter 3 does not fit a 20x20 image); "
     "the smallest size that fits is 22"),
    (["codesign", "layout", "--task", "two-site-glyph", "--image-size", "13", "--pixels", "4x4"],
     "image_size=13: too small for two-site-glyph"),
])
def test_bad_codesign_input_is_one_line_and_exit_code_2(argv, message, capsys, tmp_out):
    assert main([*argv, "--out", str(tmp_out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("task,smallest", [("stripe-glyph", 22), ("two-site-glyph", 14)])
def test_the_smallest_image_size_a_refusal_names_fits_and_one_less_does_not(task, smallest):
    # stripe-glyph: a 16 px glyph moved up to 3 px either way from the centre needs 16 + 2 * 3 = 22 px
    splits = layout_splits(0, 1, 1, 1, image_size=smallest, task=task)
    assert splits["test"][0].shape == (1, 1, smallest, smallest)
    with pytest.raises(ConfigError, match=f"the smallest size that fits is {smallest}$"):
        layout_splits(0, 1, 1, 1, image_size=smallest - 1, task=task)


@pytest.mark.parametrize("what", ["layout", "receivers"])
def test_codesign_out_that_is_a_file_is_refused_before_training(what, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("keep me")
    assert main(["codesign", what, "--epochs", "1", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"out={str(f)!r}: is a file, not a folder" in err
    assert f.read_text() == "keep me"


@pytest.mark.parametrize("argv,kept,later", [
    (["codesign", "layout", "--epochs", "1", "--pixels", "128x128"], "results.json", "pixels='128x128'"),
    (["codesign", "receivers", "--epochs", "1", "--train-shots", "1e9"], "results.json", "train_shots"),
    (["pilots", "optimise", "--num-pilots", "24", "--profile", "CDL-A"], "layout.json", "profile='CDL-A'")])
def test_a_rerun_into_an_out_holding_results_is_refused_unless_overwrite(argv, kept, later, tmp_path, capsys):
    # these commands write afresh (no resume): rerun into the same --out they replaced minutes of results
    (tmp_path / kept).write_text("keep me")
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"({kept}); add --overwrite" in err, err
    assert (tmp_path / kept).read_text() == "keep me"
    # with --overwrite the command passes this check and stops at its next one (a bad value placed on purpose)
    assert main([*argv, "--out", str(tmp_path), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "add --overwrite" not in err and later in err, err


def test_codesign_layout_reports_the_test_accuracy_its_checkpoints_achieve(tmp_out, capsys):
    rc = main(["codesign", "layout", "--pixels", "8x8", "--image-size", "32", "--epochs", "1", "--seeds", "0",
               "--train-images", "64", "--val-images", "32", "--test-images", "48", "--out", str(tmp_out)])
    assert rc == 0
    result = json.loads((tmp_out / "results.json").read_text())
    row = result["per_seed"][0]
    ckpt = torch.load(tmp_out / "checkpoint_seed0.pt")
    assert float(ckpt["learned_sensor"]["layout.logits_y"].abs().max()) > 0  # the layout was trained, not left regular
    learned = SensorSimulator(make_layout("rectangular", (8, 8), (32, 32)))
    learned.load_state_dict(ckpt["learned_sensor"])
    sensors = {"learned": learned, "regular": SensorSimulator(make_layout("rectangular", (8, 8), (32, 32))),
               "foveated": SensorSimulator(make_layout("foveated", (8, 8), (32, 32)))}
    images, labels = layout_splits(0, 64, 32, 48, 32)["test"]
    for arm, sensor in sensors.items():
        net = GlyphNet()
        net.load_state_dict(ckpt[f"{arm}_net"])
        assert row[arm]["test_accuracy"] == accuracy(sensor, net, images, labels), arm
        with torch.no_grad():  # the loss tells apart networks that a 1-epoch accuracy may not
            loss = float(torch.nn.functional.cross_entropy(net(sensor(images)), labels))
        assert row[arm]["test_loss"] == pytest.approx(loss, rel=1e-6), arm
        # validation is its own split, not the test split under another name
        val_images, val_labels = layout_splits(0, 64, 32, 48, 32)["val"]
        assert row[arm]["val_accuracy"] == accuracy(sensor, net, val_images, val_labels), arm
    diff = result["summary"]["learned_minus_regular"]
    assert diff["mean"] == pytest.approx(row["learned"]["test_accuracy"] - row["regular"]["test_accuracy"])
    assert (tmp_out / "layout_seed0.png").stat().st_size > 0
    assert "learned - foveated" in capsys.readouterr().out


def test_paired_difference_is_the_paired_t_interval():
    a = [0.91, 0.95, 0.88, 0.97, 0.93, 0.90]
    b = [0.85, 0.96, 0.80, 0.90, 0.92, 0.84]
    d = paired_difference(a, b)
    ref = stats.ttest_rel(a, b)
    lo, hi = ref.confidence_interval(0.95)
    assert d["mean"] == pytest.approx(sum(a) / 6 - sum(b) / 6)
    assert d["ci95"] == pytest.approx([lo, hi]) and d["p_value"] == pytest.approx(ref.pvalue)
    assert paired_difference([1.0], [0.5])["ci95"] is None


def test_summary_calls_a_result_better_only_when_its_interval_excludes_zero():
    rows = [{"learned": {"m": x}, "base": {"m": y}} for x, y in [(10.0, 11.0), (10.5, 11.2), (9.8, 11.1), (10.1, 10.9)]]
    assert summarise(rows, "m", higher_is_better=False, baselines=("base",))["learned_minus_base"]["better"]
    assert not summarise(rows, "m", higher_is_better=True, baselines=("base",))["learned_minus_base"]["better"]
    # One bad seed: the mean stays on the good side (-0.26) but the interval now spans zero.
    noisy = rows + [{"learned": {"m": 12.5}, "base": {"m": 10.0}}]
    d = summarise(noisy, "m", higher_is_better=False, baselines=("base",))["learned_minus_base"]
    assert d["mean"] < 0 and d["ci95"][0] < 0 < d["ci95"][1] and not d["better"] and d["wins"] == "4/5"


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


def test_foveated_layout_resolves_period_four_stripes_at_every_glyph_offset():
    # The hand-made baseline: 1.71 px cells over the central 24 px see the stripes wherever
    # the jitter puts them; the regular 4 px cells see flat grey (test above).
    sensor = SensorSimulator(make_layout("foveated", (16, 16), (64, 64)))
    for seed in range(8):
        images, labels = stripe_glyph_scenes(64, torch.Generator().manual_seed(seed), size=64, periods=(4,))
        with torch.no_grad():
            rows = sensor(images[labels == 0])[:, 0, 5:11, 5:11]  # horizontal stripes; cells inside the glyph
        spread = rows.amax(-2) - rows.amin(-2)  # down each column of cells
        assert float(spread.min()) > 0.1


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("task", ["stripe-glyph", "two-site-glyph"])
def test_codesign_layout_rerun_with_the_same_seed_and_threads_is_identical(task, tmp_path, one_thread, capsys):
    argv = ["codesign", "layout", "--task", task, "--pixels", "8x8", "--image-size", "32", "--epochs", "2",
            "--seeds", "0", "--train-images", "64", "--val-images", "16", "--test-images", "32", "--threads", "1"]
    runs = []
    for name in ("a", "b"):
        assert main([*argv, "--out", str(tmp_path / name)]) == 0
        runs.append((json.loads((tmp_path / name / "results.json").read_text()),
                     torch.load(tmp_path / name / "checkpoint_seed0.pt")))
    (ra, ca), (rb, cb) = runs
    assert ra["threads"] == 1 and ra["task"] == task
    assert ra["per_seed"] == rb["per_seed"]  # accuracies and losses equal to the last bit
    for key in ("learned_sensor", "learned_net", "regular_net", "foveated_net"):
        for name, tensor in ca[key].items():
            assert torch.equal(tensor, cb[key][name]), (key, name)
    assert "1 torch thread(s)" in capsys.readouterr().out


def test_two_site_glyphs_vary_in_place_and_size_and_the_fovea_misses_most_of_them():
    images, labels, boxes = two_site_glyph_scenes(400, torch.Generator().manual_seed(0), size=64, return_boxes=True)
    assert images.shape == (400, 1, 64, 64) and images.min() >= 0 and images.max() <= 1
    assert int(torch.bincount(labels, minlength=4).min()) > 70
    sides = boxes[:, 2] - boxes[:, 0]
    assert set(sides.tolist()) == {10, 12, 14} and torch.equal(sides, boxes[:, 3] - boxes[:, 1])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    near_top_left = centres.amax(-1) < 32
    assert 0.35 < float(near_top_left.float().mean()) < 0.65  # both sites are used
    assert len(set(map(tuple, boxes[:, :2].tolist()))) > 40  # the position varies per sample
    # The glyph is where the images differ from the clutter: a flat-class glyph of grey 0.5 aside.
    # The foveated layout's fine cells (< 4 px on both axes) cover the central square [20, 44)^2
    # only; most glyphs lie wholly outside it, so the fovea sees them through its 20 px cells.
    fovea = make_layout("foveated", (16, 16), (64, 64))
    ey, ex = (e.detach() for e in fovea.edges())
    fine_y = [(float(ey[i]), float(ey[i + 1])) for i in range(16) if ey[i + 1] - ey[i] < 4]
    lo, hi = fine_y[0][0], fine_y[-1][1]
    assert (round(lo), round(hi)) == (20, 44) and float(ex[1] - ex[0]) == pytest.approx(20, abs=1e-4)
    overlap_y = (boxes[:, 2].clamp(max=hi) - boxes[:, 0].clamp(min=lo)).clamp(min=0)
    overlap_x = (boxes[:, 3].clamp(max=hi) - boxes[:, 1].clamp(min=lo)).clamp(min=0)
    missed = (overlap_y * overlap_x) == 0
    assert float(missed.float().mean()) > 0.8
    # ... and inside a glyph the image does carry the class: stripes have contrast there.
    n = int(torch.nonzero(labels == 0)[0])
    y0, x0, y1, x1 = boxes[n].tolist()
    glyph = images[n, 0, y0:y1, x0:x1]
    assert float(glyph.mean(1).std()) > 0.1 and float(glyph.mean(0).std()) < 1e-6  # horizontal stripes


def test_two_site_glyphs_that_do_not_fit_are_a_config_error():
    with pytest.raises(ConfigError, match="glyphs"):
        two_site_glyph_scenes(4, torch.Generator().manual_seed(0), size=32, glyphs=(14,))


def test_two_fovea_layout_puts_two_pixel_cells_over_the_core_of_every_two_site_glyph():
    # The hand-made baseline for two-site-glyph: 2 px cells over [6, 18] and [46, 58] on both
    # axes; every glyph (10-14 px, jitter 3 around 12 or 52) covers at least 8 px of its band.
    layout = make_layout("two-fovea", (16, 16), (64, 64))
    ey, ex = (e.detach() for e in layout.edges())
    assert torch.allclose(ey, ex) and torch.allclose(ey[1:8], torch.arange(6.0, 19.0, 2.0), atol=1e-4)
    assert torch.allclose(ey[9:16], torch.arange(46.0, 59.0, 2.0), atol=1e-4)
    _, _, boxes = two_site_glyph_scenes(400, torch.Generator().manual_seed(3), size=64, return_boxes=True)
    top = boxes[:, 0] < 32
    band_lo = torch.where(top, 6, 46)
    for lo_col, hi_col in ((0, 2), (1, 3)):
        cover = (boxes[:, hi_col].clamp(max=band_lo + 12) - boxes[:, lo_col].clamp(min=band_lo)).clamp(min=0)
        assert int(cover.min()) >= 8
    with pytest.raises(ConfigError, match="two foveae"):
        make_layout("two-fovea", (4, 16), (64, 64))


def test_arm_spread_is_the_sample_std_and_a_tied_seed_is_not_a_win():
    import statistics

    rows = [{"learned": {"m": x}, "base": {"m": y}} for x, y in [(0.9, 0.8), (0.7, 0.7), (0.95, 0.6), (0.6, 0.65)]]
    s = summarise(rows, "m", higher_is_better=True, baselines=("base",))
    assert s["learned"]["std"] == pytest.approx(statistics.stdev([0.9, 0.7, 0.95, 0.6]), rel=1e-12)
    assert s["base"]["mean"] == pytest.approx(0.6875, rel=1e-12)
    assert s["learned_minus_base"]["wins"] == "2/4"  # seed 1 ties: neither a win nor a loss
    assert summarise(rows, "m", higher_is_better=False, baselines=("base",))["learned_minus_base"]["wins"] == "1/4"


def test_paired_difference_refuses_lists_of_different_lengths():
    # zip would silently drop the unpaired seed and report an interval over the rest
    with pytest.raises(ConfigError, match=r"pairs=\(3, 2\): need two equally long"):
        paired_difference([0.9, 0.8, 0.7], [0.5, 0.6])
    with pytest.raises(ConfigError, match="non-empty"):
        paired_difference([], [])


def test_layout_splits_are_different_draws_per_split_and_per_seed():
    """Train, validation and test are three draws (no image shared); another seed draws other images."""
    a, b = layout_splits(0, 16, 16, 16, 32), layout_splits(1, 16, 16, 16, 32)
    flat = {name: x.reshape(16, -1) for name, (x, _) in a.items()}
    for one, two in (("train", "val"), ("train", "test"), ("val", "test")):
        assert float(torch.cdist(flat[one], flat[two]).min()) > 1.0, (one, two)  # no image repeated across splits
    for name in a:
        assert not torch.equal(a[name][0], b[name][0]), name
        assert torch.equal(a[name][0], layout_splits(0, 16, 16, 16, 32)[name][0])  # fixed by the seed


# A 30 x 30 model with a 24-cell surface line and 16 + 8 + 8 shots: about 2 s of simulation for the whole module.
SMALL_SCENE = WaveScene(shape=(30, 30), nt=120, source_region=Region(15, 25, 5, 25), candidate=Region(2, 3, 3, 27),
                        pml_width=10)


@pytest.fixture(scope="module")
def receiver_run(tmp_path_factory):
    """One seed of the built-in receiver experiment on the small scene, noise 0; returns (out, result, data)."""
    from wavefront.imaging import codesign

    seen = {}

    def keep(*args, **kwargs):
        seen["data"] = receiver_data(*args, **kwargs)
        return seen["data"]

    out = tmp_path_factory.mktemp("receivers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codesign, "receiver_data", keep)
        torch.set_num_threads(1)
        result = run_receiver_experiment("source-localisation", 4, 2, [0], out, log=lambda line: None,
                                         scene=SMALL_SCENE, num_train=16, num_val=8, num_test=8, noise=0.0, batch=8)
    return out, result, seen["data"]


def test_receiver_rmse_is_the_test_shots_euclidean_error_in_metres(receiver_run):
    """RMSE = dx * sqrt(mean over test shots of (row error^2 + col error^2)), recomputed from the checkpoint.

    With noise 0 the traces are the field sampled at the positions, scaled by the RMS of the
    training field; the networks' outputs are the source position over the model's (ny, nx).
    """
    out, result, data = receiver_run
    ckpt = torch.load(out / "checkpoint_seed0.pt")
    row = result["per_seed"][0]
    field, sources = data["test"]
    scale = float(data["train"][0].pow(2).mean().sqrt())
    ny, nx = SMALL_SCENE.shape
    for arm in ("learned", "regular", "patch"):
        rec = LearnableReceivers(4, SMALL_SCENE.candidate, SMALL_SCENE.shape, learnable=False,
                                 initial_positions=torch.tensor(row[arm]["positions"], dtype=torch.float64))
        if arm == "learned":
            rec.load_state_dict(ckpt["learned_receivers"])
        net = TraceNet(4)
        net.load_state_dict(ckpt[f"{arm}_net"])
        with torch.no_grad():
            pred = net(rec(field) / scale, rec.positions() / torch.tensor([ny, nx]))
        cells = pred * torch.tensor([ny, nx]) - sources
        expect = SMALL_SCENE.dx_m * math.sqrt(float((cells.double() ** 2).sum(-1).mean()))
        assert row[arm]["test_rmse_m"] == pytest.approx(expect, rel=1e-5), arm
        assert row[arm]["test_rmse_m"] != pytest.approx(row[arm]["val_rmse_m"], rel=1e-3), arm  # another split
    assert result["summary"]["learned_minus_patch"]["mean"] == pytest.approx(
        row["learned"]["test_rmse_m"] - row["patch"]["test_rmse_m"])
    assert result["config"] == {"num_train": 16, "num_val": 8, "num_test": 8, "noise": 0.0, "batch": 8}
    assert result["threads"] == torch.get_num_threads()  # the training path depends on it: a rerun needs it


def test_receiver_baselines_stay_put_and_the_patch_array_is_centred_over_the_sources(receiver_run):
    """The line array spans the candidate line, the patch array the source columns [x0, x1 - 1]: both centred."""
    out, result, _ = receiver_run
    row = result["per_seed"][0]
    line, patch, learned = (torch.tensor(row[a]["positions"]) for a in ("regular", "patch", "learned"))
    cand, sr = SMALL_SCENE.candidate, SMALL_SCENE.source_region
    assert torch.allclose(line[:, 0], torch.full((4,), 2.0)) and torch.allclose(patch[:, 0], torch.full((4,), 2.0))
    # centres of 4 equal segments: mean at the span's middle, steps of span / 4 (float32 sigmoid round trip: 1e-4)
    for pos, (a, b) in ((line, (cand.x0, cand.x1 - 1)), (patch, (sr.x0, sr.x1 - 1))):
        assert float(pos[:, 1].mean()) == pytest.approx((a + b) / 2, abs=1e-4)
        assert torch.allclose(pos[1:, 1] - pos[:-1, 1], torch.full((3,), (b - a) / 4), atol=1e-4)
    assert float((learned - line).abs().max()) > 1e-3  # the learned array moved from its line start
    assert (out / "receivers_seed0.png").stat().st_size > 0


def _fake_summary(arms: tuple[str, ...]) -> dict:
    """The summary fields the CLI prints, for an experiment replaced by a stub."""
    return {"baselines": list(arms[1:]), "summary": {a: {"mean": 0.5, "std": 0.0} for a in arms}
            | {f"learned_minus_{b}": {"mean": 0.0, "ci95": None} for b in arms[1:]}}


def test_codesign_layout_hands_its_options_and_thread_count_to_the_experiment(monkeypatch, tmp_out, capsys):
    """A layout as large as the image is allowed (the check is 'more pixels than the image'); HxW takes 'X' too."""
    from wavefront.imaging import codesign

    calls = []

    def stub(task, pixels, layout, epochs, seeds, out, **kwargs):
        calls.append((task, pixels, layout, epochs, seeds, out, kwargs, torch.get_num_threads()))
        return _fake_summary(("learned", "regular", "foveated"))

    monkeypatch.setattr(codesign, "run_layout_experiment", stub)
    assert main(["codesign", "layout", "--pixels", "32X32", "--image-size", "32", "--threads", "2", "--val-images", "7",
                 "--out", str(tmp_out)]) == 0, capsys.readouterr().err
    assert calls == [("stripe-glyph", (32, 32), "rectangular", 30, [0, 1, 2, 3, 4], tmp_out,
                      {"image_size": 32, "num_train": 2048, "num_val": 7, "num_test": 1024}, 2)]
    assert "2 torch thread(s)" in capsys.readouterr().out


@pytest.mark.parametrize("extra,noise", [([], 3.0), (["--noise", "0"], 0.0)])
def test_codesign_receivers_hands_its_documented_defaults_and_a_zero_noise_to_the_experiment(
        extra, noise, monkeypatch, tmp_out, capsys):
    from wavefront.imaging import codesign

    calls = []

    def stub(task, num_receivers, epochs, seeds, out, **kwargs):
        calls.append((task, num_receivers, epochs, seeds, kwargs, torch.get_num_threads()))
        return _fake_summary(("learned", "regular", "patch"))

    monkeypatch.setattr(codesign, "run_receiver_experiment", stub)
    assert main(["codesign", "receivers", *extra, "--threads", "2", "--out", str(tmp_out)]) == 0, capsys.readouterr().err
    assert calls == [("source-localisation", 8, 30, [0, 1, 2, 3, 4],
                      {"noise": noise, "num_train": 768, "num_val": 256, "num_test": 256}, 2)]


@pytest.mark.parametrize("option,value", [("--task", "sensitivity"), ("--num-receivers", "4"), ("--min-spacing", "2"),
                                          ("--restarts", "3")])
def test_user_scene_options_without_velocity_are_refused_not_ignored(option, value, tmp_out, capsys):
    assert main(["codesign", "receivers", option, value, "--epochs", "1", "--out", str(tmp_out)]) == 2
    err = capsys.readouterr().err
    name = option[2:].replace("-", "_")
    assert err.count("\n") == 1 and f"{name}=" in err and "needs --velocity (the user-scene path)" in err, err
    assert not tmp_out.exists()
