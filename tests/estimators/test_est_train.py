"""Training loop: beats LS-linear, resumes exactly, trains from a Dataset, stops on NaN, refuses bad checkpoints."""
import csv
import math
import pickle
import warnings

import pytest
import torch
from est_helpers import TINY, SampleDataset, ctrl_c_at_step

from wavefront.errors import ConfigError
from wavefront.estimators import checkpoint as ckpt
from wavefront.estimators import load_estimator
from wavefront.estimators.train import TrainConfig, TrainingDiverged, TrainingInterrupted, train
from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import FrameGenerator

FIXED_SNR = SystemConfig.from_dict({"channel": {"snr_db": 5.0, "delay_spread_s": 100e-9, "doppler_hz": 100.0}})


def _cfg(tmp_path, name="fortitran", **kw):
    base = dict(model=name, model_overrides=dict(TINY), steps=6, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=3,
                val_frames=32, device="cpu", out_dir=str(tmp_path / name), progress=False, patience=0)
    return TrainConfig(**{**base, **kw})


def frame_dataset(n, seed, poison=False):
    """Returns a SampleDataset of ``n`` simulated frames (optionally with NaN pilots)."""
    ds = SampleDataset.from_frames(FrameGenerator(FIXED_SNR).generate(n, seed=seed, with_data=False))
    if poison:
        ds.cols["pilots"] = torch.full_like(ds.cols["pilots"], float("nan"))
    return ds


ZERO_DB = SystemConfig.from_dict({"channel": {"snr_db": 0.0, "delay_spread_s": 100e-9, "doppler_hz": 100.0}})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fortitran", "adafortitran"])
def test_a_short_cpu_run_beats_ls_linear_on_held_out_frames(name, tmp_path):
    # 150 steps x 16 on-the-fly frames at a fixed 0 dB SNR, tiny widths (the architecture is unchanged);
    # validation frames come from a seed stream that training never draws from.
    result = train(_cfg(tmp_path, name, steps=150, batch_size=16, lr=5e-3, warmup_steps=15, eval_every=50,
                        val_frames=256), ZERO_DB)
    print(f"{name}: {result['best_val_mse_db']:.2f} dB vs LS-linear {result['val_ls_linear_db']:.2f} dB")
    assert result["val_ls_linear_db"] == pytest.approx(-1.2, abs=0.5)
    assert result["best_val_mse_db"] < result["val_ls_linear_db"] - 2.0


def test_resume_continues_the_same_curve_as_a_straight_run(tmp_path):
    # Dropout on, so the restored RNG state matters as much as the optimiser state and the data.
    kw = dict(model_overrides={**TINY, "dropout": 0.1}, steps=8, eval_every=4)
    train(_cfg(tmp_path / "a", **kw), FIXED_SNR)  # the straight run the resumed one must equal
    paused = train(_cfg(tmp_path / "b", stop_after=5, **kw), FIXED_SNR)
    assert paused["stopped"] == "paused" and paused["step"] == 5
    resumed = train(_cfg(tmp_path / "b", **kw), FIXED_SNR, resume=True)
    assert resumed["step"] == 8
    a = ckpt.Checkpoint(tmp_path / "a" / "fortitran" / "last.safetensors")
    b = ckpt.Checkpoint(tmp_path / "b" / "fortitran" / "last.safetensors")
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        if not k.startswith("rng."):
            torch.testing.assert_close(a.tensors[k], b.tensors[k], rtol=0, atol=1e-6, msg=k)
    log_a = (tmp_path / "a" / "fortitran" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "b" / "fortitran" / "log.csv").read_text().splitlines()
    cols = lambda rows: [r.split(",")[:7] for r in rows]  # noqa: E731  (timings differ, losses must not)
    assert cols(log_a) == cols(log_b) and len(log_a) == 3


def test_a_resume_takes_the_saved_warmup_and_names_each_changed_option(tmp_path, recwarn, capsys):
    # the same options: silent, and the same curve (above); no warm-up named: the saved run's is taken, so the
    # curve is still the straight run's; a changed lr or batch is named; a run already past --steps trains nothing
    kw = dict(model_overrides={**TINY, "dropout": 0.1}, steps=8, eval_every=4)
    straight = train(_cfg(tmp_path / "a", **kw), FIXED_SNR)
    train(_cfg(tmp_path / "b", stop_after=5, **kw), FIXED_SNR)
    resumed = train(_cfg(tmp_path / "b", **{**kw, "warmup_steps": None}), FIXED_SNR, resume=True)
    assert not [w for w in recwarn if "resume" in str(w.message)]
    assert resumed["best_val_mse_db"] == straight["best_val_mse_db"]
    train(_cfg(tmp_path / "c", stop_after=5, **kw), FIXED_SNR)
    with pytest.warns(UserWarning, match=r"other options \(batch_size 8 -> 16, lr 0.003 -> 0.001\)"):
        train(_cfg(tmp_path / "c", **{**kw, "lr": 1e-3, "batch_size": 16}), FIXED_SNR, resume=True)
    capsys.readouterr()
    done = train(_cfg(tmp_path / "a", **{**kw, "steps": 4}), FIXED_SNR, resume=True)
    assert done["step"] == 8 and "nothing to train" in capsys.readouterr().out


def test_elapsed_time_in_the_log_runs_on_across_a_resume(tmp_path, monkeypatch):
    # a clock that moves 10 s a reading: the resumed run's rows must continue the paused run's time, not restart at 0
    import types

    from wavefront.estimators import train as train_module

    clock = [0.0]

    def perf_counter():
        clock[0] += 10.0
        return clock[0]

    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=perf_counter))
    kw = dict(steps=8, eval_every=4)
    train(_cfg(tmp_path, stop_after=5, **kw), FIXED_SNR)
    paused = ckpt.Checkpoint(tmp_path / "fortitran" / "last.safetensors").trainer["elapsed_s"]
    train(_cfg(tmp_path, **kw), FIXED_SNR, resume=True)
    rows = list(csv.DictReader(open(tmp_path / "fortitran" / "log.csv")))
    assert [r["step"] for r in rows] == ["4", "8"]
    assert float(rows[0]["elapsed_s"]) < paused < float(rows[1]["elapsed_s"])


def test_a_condition_aware_model_on_one_fixed_condition_is_warned_about(tmp_path):
    # FIXED_SNR fixes SNR, delay spread and Doppler: adafortitran's condition tokens then carry one value each
    with pytest.warns(UserWarning, match=r"adafortitran reads SNR, delay spread and Doppler, but this config fixes "
                                         r"all three \(5 dB, 100 ns, 100 Hz\)"):
        train(_cfg(tmp_path, "adafortitran", steps=1, eval_every=1), FIXED_SNR)
    ranged = SystemConfig.from_dict({"channel": {"snr_db": [0.0, 20.0], "delay_spread_s": 100e-9, "doppler_hz": 100.0}})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train(_cfg(tmp_path / "r", "adafortitran", steps=1, eval_every=1, conditions="true"), ranged)  # one range: no word
        train(_cfg(tmp_path / "f", "fortitran", steps=1, eval_every=1), FIXED_SNR)  # reads no conditions: no word


def test_trains_from_any_dataset_of_samples_by_epochs(tmp_path):
    train_set, val_set = frame_dataset(24, seed=1), frame_dataset(16, seed=2)
    result = train(_cfg(tmp_path, "linear", model_overrides={}, steps=None, epochs=2, eval_every=2), FIXED_SNR,
                   train_data=train_set, val_data=val_set)
    assert result["step"] == 6  # 24 samples / batch 8 = 3 steps per epoch
    rows = (tmp_path / "linear" / "log.csv").read_text().splitlines()
    assert rows[-1].startswith("6,2.000,")


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at step 0 .*lower --lr"):
        train(_cfg(tmp_path, "linear", model_overrides={}, steps=None, epochs=1), FIXED_SNR,
              train_data=frame_dataset(16, seed=1, poison=True), val_data=frame_dataset(8, seed=2))


@pytest.fixture(scope="module")
def linear_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("lin")
    train(_cfg(out, "linear", model_overrides={}, steps=2, eval_every=2), FIXED_SNR)
    return out / "linear" / "best.safetensors"


def test_checkpoints_load_without_unpickling(linear_checkpoint, monkeypatch, default_config):
    def refuse(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    est = load_estimator(str(linear_checkpoint), default_config)
    pilots = torch.randn(5, 12, 2, dtype=torch.complex64)
    assert est.estimate(pilots, {}).shape == (5, 120, 14)
    header_len = int.from_bytes(linear_checkpoint.read_bytes()[:8], "little")
    assert b'"format":"wavefront-estimator/1"' in linear_checkpoint.read_bytes()[8:8 + header_len]


def test_corrupt_and_foreign_files_give_clear_errors(linear_checkpoint, tmp_path, default_config):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match="not a readable safetensors checkpoint"):
        load_estimator(str(junk), default_config)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(linear_checkpoint.read_bytes()[:-100])
    with pytest.raises(ConfigError, match="not a readable safetensors checkpoint"):
        load_estimator(str(cut), default_config)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ConfigError, match="not a wavefront estimator checkpoint"):
        load_estimator(str(foreign), default_config)
    with pytest.raises(ConfigError, match="file not found"):
        load_estimator(str(tmp_path / "missing.safetensors"), default_config)


def test_mismatched_config_or_model_is_refused(linear_checkpoint, tmp_path, narrow_config):
    with pytest.raises(ConfigError, match=r"ofdm.grid_shape=\[120, 14\], but the config has \[72, 14\]"):
        load_estimator(str(linear_checkpoint), narrow_config)
    other_pilots = SystemConfig.from_dict({"ofdm": {"pilot_subcarrier_spacing": 3}})
    with pytest.raises(ConfigError, match="ofdm.pilot_subcarriers"):
        load_estimator(str(linear_checkpoint), other_pilots)
    run = tmp_path / "r"
    run.mkdir()
    with pytest.raises(ConfigError, match="holds linear .* this run builds fortitran"):
        train(_cfg(run), FIXED_SNR, resume=str(linear_checkpoint))
    model = ckpt.Checkpoint(linear_checkpoint)
    from wavefront.estimators import create

    with pytest.raises(ConfigError, match="holds a 'linear' model, not 'espcn'"):
        model.load_model_state(create("espcn", FIXED_SNR))


def test_unknown_estimator_name_is_refused(default_config):
    with pytest.raises(ConfigError, match="no pretrained checkpoint is shipped"):
        load_estimator("channelnet", default_config)
    with pytest.raises(ConfigError, match="neither a checkpoint file nor a learned model"):
        load_estimator("wiener", default_config)


def test_schedule_warms_up_then_decays_to_the_floor():
    from wavefront.estimators.train import lr_at

    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.01)
    lrs = [lr_at(s, cfg, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(1e-5, rel=0.05)
    # the cosine runs over the steps after the warm-up: its start is the peak, its middle (step 55) halfway to the floor
    assert lrs[10] == pytest.approx(1e-3) and lrs[55] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    # no warm-up named: a tenth of the run, at most 200, so a short run still decays to its floor
    short = [lr_at(s, TrainConfig(steps=100, lr=1e-3, min_lr_ratio=0.01), 100) for s in range(100)]
    assert short == pytest.approx(lrs, rel=1e-12)
    long = TrainConfig(steps=5000, lr=1e-3)
    assert lr_at(198, long, 5000) < 1e-3 and lr_at(199, long, 5000) == pytest.approx(1e-3)
    plateau = TrainConfig(steps=100, lr=1e-3, warmup_steps=0, schedule="plateau")
    assert lr_at(50, plateau, 100, plateau_scale=0.25) == pytest.approx(2.5e-4)


def test_early_stopping_when_validation_stops_improving(tmp_path):
    # lr so small that nothing improves after the first evaluation: patience 2 ends the run at the third.
    result = train(_cfg(tmp_path, "linear", model_overrides={}, steps=40, eval_every=2, lr=1e-12, warmup_steps=0,
                        patience=2), FIXED_SNR)
    # evaluations at steps 2 (the best), 4 and 6 (no progress): the second miss ends the run
    assert result["stopped"] == "early-stopped" and result["step"] == 6
    rows = (tmp_path / "linear" / "log.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["2", "4", "6"]


def test_bad_training_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="give exactly one of steps"):
        train(_cfg(tmp_path, steps=None), FIXED_SNR)
    with pytest.raises(ConfigError, match="schedule='linear'"):
        train(_cfg(tmp_path, schedule="linear"), FIXED_SNR)


def test_a_checkpoint_outlives_config_fields_that_were_renamed(linear_checkpoint, tmp_path, default_config):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(linear_checkpoint), framework="pt") as f:
        meta = dict(f.metadata())
    cfg = json.loads(meta["system_config"])
    cfg["ofdm"]["cyclic_prefix_length"] = 9  # a field of an older schema
    meta["system_config"] = json.dumps(cfg)
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(linear_checkpoint)), str(old), metadata=meta)
    with pytest.warns(UserWarning, match="ofdm.cyclic_prefix_length"):
        est = load_estimator(str(old), default_config)
    assert est.estimate(torch.zeros(1, 12, 2, dtype=torch.complex64), {}).shape == (1, 120, 14)


def test_time_limit_pauses_and_the_resumed_curve_equals_a_straight_run(tmp_path):
    cfg = _cfg(tmp_path / "a", "linear", model_overrides={}, steps=50, eval_every=25, time_limit_min=1e-9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg, FIXED_SNR)
    assert result["stopped"] == "time-limit" and result["step"] == 1
    assert not [w for w in caught if "learned nothing" in str(w.message)]  # paused before any evaluation: not an end
    cfg.time_limit_min = None
    assert train(cfg, FIXED_SNR, resume=True)["step"] == 50
    straight = _cfg(tmp_path / "b", "linear", model_overrides={}, steps=50, eval_every=25)
    train(straight, FIXED_SNR)
    cols = lambda p: [r.split(",")[:7] for r in p.read_text().splitlines()]  # noqa: E731  (timings differ)
    paused, whole = cols(tmp_path / "a" / "linear" / "log.csv"), cols(tmp_path / "b" / "linear" / "log.csv")
    assert paused == whole and [r[0] for r in whole[1:]] == ["25", "50"]


def test_channel_and_validation_mse_are_per_resource_element_over_unequal_batches():
    """MSE = mean |H_hat - H|^2 over every element of every batch (a batch of 3 frames weighs 3x one of 1),
    taken in eval mode (dropout off) and leaving the model in the mode it was in."""
    from wavefront.estimators.train import channel_mse, validation_mse

    assert float(channel_mse(torch.full((2, 3, 4), 1 + 2j), torch.zeros(2, 3, 4, dtype=torch.complex64))) == 5.0

    class Ones(torch.nn.Module):  # estimates 1 everywhere, through a dropout that would zero half of it in training
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, pilots, batch):
            return self.drop(torch.ones_like(batch["h"].real)).to(torch.complex64)

    def batch(n, value):
        return {"pilots": torch.zeros(n, 2, 2, dtype=torch.complex64), "h": torch.full((n, 4, 3), value, dtype=torch.complex64)}

    model = Ones().train()
    # |1 - 3|^2 on 3 frames and |1 - 1j|^2 on one: (3 * 4 + 1 * 2) / 4 elements' worth
    assert validation_mse(model, [batch(3, 3.0), batch(1, 1j)], "cpu") == pytest.approx((3 * 4 + 2) / 4, rel=1e-6)
    assert model.training


def test_the_optimiser_never_sees_a_gradient_longer_than_grad_clip(tmp_path):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads]))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        train(_cfg(tmp_path / "free", "linear", model_overrides={}, steps=4, eval_every=4, val_frames=8, grad_clip=0.0), FIXED_SNR)
        free, norms[:] = list(norms), []
        train(_cfg(tmp_path / "clip", "linear", model_overrides={}, steps=4, eval_every=4, val_frames=8, grad_clip=1e-3), FIXED_SNR)
    finally:
        handle.remove()
    assert len(free) == 4 and min(free) > 1e-2  # unclipped (grad_clip 0): the raw norms, well above the clip below
    assert len(norms) == 4 and max(norms) <= 1e-3 * (1 + 1e-5) and min(norms) >= 1e-3 * (1 - 1e-5)


def _scripted_run(tmp_path, monkeypatch, values, **kw):
    """Trains the linear model with validation MSEs taken in order from ``values``; records each step's loss."""
    from wavefront.estimators import train as train_module

    losses = []
    real_step = train_module.loss_and_backward

    def loss_and_backward(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        losses.append(float(loss))
        return loss

    monkeypatch.setattr(train_module, "validation_mse", lambda *args, **kwargs: values.pop(0))
    monkeypatch.setattr(train_module, "loss_and_backward", loss_and_backward)
    cfg = _cfg(tmp_path, "linear", model_overrides={}, steps=40, eval_every=2, warmup_steps=0, schedule="plateau",
               plateau_patience=2, plateau_factor=0.5, patience=4, lr=1e-3, **kw)
    return cfg, losses


# validation MSE at steps 2, 4, ...: best, miss, best, miss, a gain under 1e-4 (a miss), miss, miss
VALUES = [1.0, 1.1, 0.5, 0.7, 0.5 * (1 - 5e-5), 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]


def _log(tmp_path):
    return list(csv.DictReader(open(tmp_path / "linear" / "log.csv")))


def test_best_checkpoint_early_stop_plateau_and_train_window_follow_the_validation_history(tmp_path, monkeypatch):
    """Evaluations e1..e7 at steps 2..14: e3 (0.5) stays the best (e5 gains only 5e-5 of it), so the fourth
    miss in a row (e7, step 14) stops the run and best.safetensors is step 6. The plateau schedule halves
    the rate at the second miss in a row (e5) and counts afresh, so steps 11-14 run at lr / 2 (e7 halves it
    again, after the last step). Each row's train MSE is the mean of its window's step losses (steps 2k-1, 2k)."""
    cfg, losses = _scripted_run(tmp_path, monkeypatch, list(VALUES))
    result = train(cfg, FIXED_SNR)
    assert result["stopped"] == "early-stopped" and result["step"] == 14
    best = ckpt.Checkpoint(tmp_path / "linear" / "best.safetensors")
    assert best.step == 6 and best.trainer["metrics"]["val_mse_db"] == pytest.approx(10 * math.log10(0.5))
    rows = _log(tmp_path)
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10, 12, 14]
    assert [float(r["lr"]) for r in rows] == [1e-3] * 5 + [5e-4] * 2
    assert [float(r["best_val_mse_db"]) for r in rows] == pytest.approx(
        [0.0, 0.0] + [10 * math.log10(0.5)] * 5, abs=1e-3)
    windows = [10 * math.log10((a + b) / 2) for a, b in zip(losses[::2], losses[1::2])]
    assert [float(r["train_mse_db"]) for r in rows] == pytest.approx(windows, abs=1e-3)


def test_a_resume_carries_the_best_the_misses_and_the_log_of_the_paused_run(tmp_path, monkeypatch):
    """Paused at step 6 (just evaluated) and resumed: the same evaluations, stop, best checkpoint and log rows as the
    straight run above. Resumed from best.safetensors (step 6) of a finished run, the log is cut back to step 6."""
    values = list(VALUES)
    cfg, losses = _scripted_run(tmp_path, monkeypatch, values, stop_after=6)
    assert train(cfg, FIXED_SNR)["stopped"] == "paused"
    cfg.stop_after = None
    result = train(cfg, FIXED_SNR, resume=True)
    assert result["stopped"] == "early-stopped" and result["step"] == 14 and len(losses) == 14
    assert ckpt.Checkpoint(tmp_path / "linear" / "best.safetensors").step == 6
    rows = _log(tmp_path)
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10, 12, 14]
    assert [float(r["lr"]) for r in rows] == [1e-3] * 5 + [5e-4] * 2
    cfg.stop_after = 8  # evaluates once more (0.6, a miss)
    train(cfg, FIXED_SNR, resume=str(tmp_path / "linear" / "best.safetensors"))
    assert [int(r["step"]) for r in _log(tmp_path)] == [2, 4, 6, 8]


def test_the_ls_linear_reference_does_not_depend_on_how_validation_is_batched():
    """Per resource element: 10 frames as 7 + 3 give the MSE of the 10 as one batch (float32 sums: 1e-6)."""
    from wavefront.estimators.data import simulated_validation
    from wavefront.estimators.train import ls_linear_mse

    whole = simulated_validation(FIXED_SNR, 10, 0)
    split = [{k: v[:7] for k, v in whole[0].items()}, {k: v[7:] for k, v in whole[0].items()}]
    assert ls_linear_mse(FIXED_SNR, split) == pytest.approx(ls_linear_mse(FIXED_SNR, whole), rel=1e-6)


def test_a_non_finite_gradient_norm_with_a_finite_loss_stops_the_run_naming_it(tmp_path, monkeypatch):
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: real(*a, **k) * float("inf"))
    with pytest.raises(TrainingDiverged, match=r"the gradient norm became inf at step 0 .*lower --lr or --grad-clip"):
        train(_cfg(tmp_path, "linear", model_overrides={}, steps=2, eval_every=2), FIXED_SNR)


def test_export_keeps_the_weights_step_and_record_and_drops_the_optimiser_and_rng(linear_checkpoint, tmp_path):
    src = ckpt.Checkpoint(linear_checkpoint)
    assert src.step == 2 and src.optim is not None and "rng.torch" in src.tensors  # what export must leave out
    out = ckpt.Checkpoint(ckpt.export(linear_checkpoint, tmp_path / "weights.safetensors"))
    model_keys = sorted(k for k in src.tensors if k.startswith("model."))
    assert sorted(out.tensors) == model_keys and all(torch.equal(out.tensors[k], src.tensors[k]) for k in model_keys)
    assert out.step == 2 and out.conditions == src.conditions
    assert out.trainer == {"metrics": src.trainer["metrics"], "config": src.trainer["config"]}
    with pytest.raises(ConfigError, match="holds weights only, no optimiser state; it cannot be resumed"):
        out.load_optimizer_state(torch.optim.AdamW(out.build_model().parameters()))


def test_what_a_model_was_trained_on_survives_save_and_load_and_a_pilots_only_model_needs_no_conditions(tmp_path):
    from wavefront.estimators import create

    torch.manual_seed(0)
    model = create("adafortitran", FIXED_SNR, **TINY)
    pilots = torch.randn(2, 12, 2, dtype=torch.complex64)
    meta = {"snr_db": torch.tensor([0.0, 30.0]), "delay_spread_s": torch.tensor([50e-9, 300e-9]),
            "doppler_hz": torch.tensor([10.0, 900.0])}
    for conditions, reads in (("none", False), ("true", True)):
        model.trained_conditions = conditions
        path = ckpt.save(tmp_path / f"{conditions}.safetensors", model, FIXED_SNR, rng=False)  # no trainer state
        back = ckpt.Checkpoint(path)
        assert back.conditions == conditions
        built = back.build_model().eval()
        assert (built.trained_conditions, built.reads_conditions) == (conditions, reads)
    with torch.no_grad():  # the last one read "none": a constant zero condition input, whatever meta says
        none = ckpt.Checkpoint(tmp_path / "none.safetensors").build_model().eval()
        assert torch.equal(none(pilots), none(pilots, meta))
    model.trained_conditions = None  # a checkpoint of an older version names it only in the trainer's config
    old = ckpt.save(tmp_path / "old.safetensors", model, FIXED_SNR, rng=False, trainer_state={"config": {"conditions": "none"}})
    assert ckpt.Checkpoint(old).conditions == "none" and not ckpt.Checkpoint(old).build_model().reads_conditions


def test_weights_of_another_width_or_depth_are_refused_naming_the_tensor(tmp_path):
    from wavefront.estimators import create

    path = ckpt.save(tmp_path / "f.safetensors", create("fortitran", FIXED_SNR, **TINY), FIXED_SNR, rng=False)
    back = ckpt.Checkpoint(path)
    with pytest.raises(ConfigError, match=r"tensor \S+ has shape \(\d+(, \d+)*,?\), the model expects .*another configuration"):
        back.load_model_state(create("fortitran", FIXED_SNR, **{**TINY, "model_dim": 32}))
    with pytest.raises(ConfigError, match=r"does not fit the 'fortitran' model \(missing \['transformer\.encoder\.layers\.1\."):
        back.load_model_state(create("fortitran", FIXED_SNR, **{**TINY, "num_layers": 2}))


def test_frequency_shift_is_the_whole_layout_moved_along_subcarriers_only():
    from types import SimpleNamespace as L

    base = L(grid_shape=(48, 14), positions=[(0, 2), (0, 11), (4, 2), (4, 11)])
    moved = lambda df, dt=0, extra=(): L(grid_shape=(48, 14), positions=[(f + df, t + dt) for f, t in base.positions] + list(extra))
    assert ckpt.frequency_shift(base, base) == 0 and ckpt.frequency_shift(base, moved(3)) == 3
    assert ckpt.frequency_shift(base, moved(-1)) == -1
    assert ckpt.frequency_shift(base, moved(0, 1)) is None  # moved in time
    assert ckpt.frequency_shift(base, moved(1, extra=[(9, 2)])) is None  # one pilot more: not the same layout
    assert ckpt.frequency_shift(base, L(grid_shape=(72, 14), positions=moved(1).positions)) is None  # another grid


def test_non_finite_weights_are_refused_at_load_naming_the_tensor(tmp_path):
    # NaN weights make every estimate NaN; a sweep read that mean-square error as -inf dB, the best row
    from wavefront.estimators import create

    model = create("fortitran", FIXED_SNR, **TINY)
    good = ckpt.save(tmp_path / "good.safetensors", model, FIXED_SNR, rng=False)
    ckpt.Checkpoint(good).build_model()  # finite: loads
    names = sorted(k for k, v in model.state_dict().items() if v.is_floating_point())
    with torch.no_grad():
        model.state_dict()[names[-1]].view(-1)[:3] = torch.tensor([math.nan, math.inf, -math.inf])
    bad = ckpt.save(tmp_path / "bad.safetensors", model, FIXED_SNR, rng=False)
    with pytest.raises(ConfigError, match=rf"holds non-finite weights \(3 NaN/inf values in {names[-1]}\)"):
        ckpt.Checkpoint(bad).build_model()
    with pytest.raises(ConfigError, match="non-finite weights"):
        load_estimator(str(bad), FIXED_SNR)
    with torch.no_grad():  # an overflow alone (inf, no NaN) is refused too
        model.state_dict()[names[-1]].view(-1)[:3] = torch.tensor([1.0, math.inf, 1.0])
    inf = ckpt.save(tmp_path / "inf.safetensors", model, FIXED_SNR, rng=False)
    with pytest.raises(ConfigError, match=rf"\(1 NaN/inf values in {names[-1]}\)"):
        ckpt.Checkpoint(inf).build_model()


def test_a_run_no_better_than_estimating_zero_ends_with_a_warning_and_one_that_learned_does_not(tmp_path):
    """E|h|^2 = 1 per RE, so 0 dB is the all-zero estimate: above it a run diverged to finite values (lr 1e9 ended at
    +297 dB with exit 0) or learned nothing. Six steps of the tiny FortiTran end at +0.59 dB; of gated-lmmse, -14 dB."""
    with pytest.warns(RuntimeWarning, match=r"best validation MSE of \+0\.\d\d dB, no better than estimating 0"):
        stuck = train(_cfg(tmp_path), FIXED_SNR)
    assert stuck["best_val_mse_db"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        learned = train(_cfg(tmp_path, "gated-lmmse", model_overrides={}, lr=1e-2), FIXED_SNR)
    assert learned["best_val_mse_db"] < learned["val_ls_linear_db"]


@pytest.mark.parametrize("at", [5, 3], ids=["between-evaluations", "at-an-evaluation"])
def test_a_ctrl_c_pauses_at_the_end_of_its_step_and_the_resumed_curve_equals_a_straight_run(tmp_path, monkeypatch, at):
    import signal

    kw = dict(model_overrides={**TINY, "dropout": 0.1}, steps=8, eval_every=3)
    train(_cfg(tmp_path / "a", **kw), FIXED_SNR)
    ctrl_c_at_step(monkeypatch, at)
    with pytest.raises(TrainingInterrupted) as stop:  # a KeyboardInterrupt: a caller training several models stops
        train(_cfg(tmp_path / "b", **kw), FIXED_SNR)
    # the step the Ctrl-C landed in finished and was saved; Python's handler is back
    cut = stop.value.summary
    assert isinstance(stop.value, KeyboardInterrupt) and cut["stopped"] == "interrupted" and cut["step"] == at
    assert ckpt.Checkpoint(tmp_path / "b" / "fortitran" / "last.safetensors").step == at
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    assert train(_cfg(tmp_path / "b", **kw), FIXED_SNR, resume=True)["step"] == 8
    a = ckpt.Checkpoint(tmp_path / "a" / "fortitran" / "last.safetensors")
    b = ckpt.Checkpoint(tmp_path / "b" / "fortitran" / "last.safetensors")
    for k in a.tensors:
        if not k.startswith("rng."):
            torch.testing.assert_close(a.tensors[k], b.tensors[k], rtol=0, atol=1e-6, msg=k)
    cols = lambda p: [r.split(",")[:7] for r in p.read_text().splitlines()]  # noqa: E731  (timings differ)
    assert cols(tmp_path / "b" / "fortitran" / "log.csv") == cols(tmp_path / "a" / "fortitran" / "log.csv")


def test_train_from_the_command_line_says_how_to_continue_after_a_ctrl_c(tmp_path, monkeypatch, capsys):
    from wavefront.cli import main

    ctrl_c_at_step(monkeypatch, 3)
    argv = ["train", "--model", "linear", "--on-the-fly", "default", "--steps", "6", "--batch-size", "8",
            "--eval-every", "2", "--val-frames", "16", "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "interrupted at step 3 of 6" in err and "last.safetensors" in err and "--resume" in err, err
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    assert '"step": 6' in capsys.readouterr().out
