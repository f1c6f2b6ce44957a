"""The training loop: one readable function, :func:`train`.

AdamW; linear warm-up then cosine decay (or a plateau schedule); gradient clipping; early
stopping on validation MSE; a NaN/inf guard; checkpoints (safetensors) that resume the same
loss curve; DDP through ``torchrun`` (NCCL on GPU, gloo on CPU); bf16 autocast on GPU and
optional ``torch.compile``. Logs train and validation MSE in dB to ``<out_dir>/log.csv``.

**MSE** everywhere is ``mean |H_hat - H|^2`` per resource element. With the simulator's
``E|H|^2 = 1`` it equals the NMSE. (The official loss, ``MSELoss`` over ``cat(real, imag)``,
is half of it; the gradients differ by that constant only.)
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from wavefront.errors import ConfigError
from wavefront.estimators import checkpoint as ckpt
from wavefront.estimators.data import (DatasetSource, MimoUserSource, OnTheFlySource, antenna_samples, dataset_validation,
                                       mimo_validation, simulated_validation)
from wavefront.estimators.registry import count_parameters, create, model_class
from wavefront.sim.conditions import estimate_conditions
from wavefront.utils import deferred_interrupt, interrupt_pending, process_group, resolve_device


# What a condition-aware model is trained on: SNR, delay spread and Doppler estimated from each
# frame's pilots, the true ones, or none (pilots only: a constant condition input).
CONDITIONS = ("estimated", "true", "none")


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; training stopped."""


class TrainingInterrupted(KeyboardInterrupt):
    """A Ctrl-C paused training at the end of a step, saved in ``last.safetensors`` there (``summary``: what
    :func:`train` returns, ``stopped: "interrupted"``). A KeyboardInterrupt, so that a caller that trains
    several models (the leaderboard) stops too; its rerun resumes from the checkpoint."""

    def __init__(self, summary: dict):
        super().__init__(f"interrupted at step {summary['step']} of {summary['total_steps']}")
        self.summary = summary


@dataclass
class TrainConfig:
    """Everything a training run needs besides the system config and the data.

    ``batch_size`` is global: DDP ranks split it evenly. ``steps`` (on-the-fly data) or
    ``epochs`` (a dataset) sets the length; ``stop_after`` ends this run early at that step,
    and ``time_limit_min`` after that many minutes of wall-clock time; either way the run can be
    continued with ``resume`` (the schedule still spans ``steps``).
    ``patience``: evaluations without a new best validation MSE before early stopping (0: never).
    """

    model: str = "adafortitran"
    model_overrides: dict = field(default_factory=dict)
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int | None = None  # None: default_warmup(the run's steps), a tenth of the run and at most 200
    schedule: str = "cosine"  # cosine | plateau | constant
    min_lr_ratio: float = 0.01
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    grad_clip: float = 1.0
    eval_every: int = 500
    val_frames: int = 2048
    patience: int = 10
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "bf16"  # bf16 | fp16 (fp16 adds a GradScaler)
    compile: bool = False
    num_workers: int = 0
    out_dir: str = "runs/run"
    stop_after: int | None = None
    time_limit_min: float | None = None
    progress: bool = True
    conditions: str = "estimated"  # what a condition-aware model reads: estimated from the pilots | true | none
    # a MIMO system config: the user whose pilots and channels train the model (its R antennas as R pairs, or
    # as one sample for a model with ``antenna_axis``); the model serves that user's SISO config
    user: int | None = None

    def check(self) -> None:
        """Raises ConfigError for the first bad value."""
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError("steps", self.steps, "give exactly one of steps (on-the-fly data) or epochs (a dataset)")
        for name in ("steps", "epochs"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(name, v, "must be >= 1")
        for name, lo in (("batch_size", 1), ("eval_every", 1), ("val_frames", 1), ("warmup_steps", 0), ("patience", 0),
                         ("num_workers", 0), ("plateau_patience", 1)):
            if getattr(self, name) is not None and getattr(self, name) < lo:
                raise ConfigError(name, getattr(self, name), f"must be >= {lo}")
        for name in ("lr", "min_lr_ratio", "plateau_factor"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(name, v, "must be a positive number")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay" if self.weight_decay < 0 else "grad_clip",
                              min(self.weight_decay, self.grad_clip), "must be >= 0")
        if self.schedule not in ("cosine", "plateau", "constant"):
            raise ConfigError("schedule", self.schedule, "choose cosine, plateau or constant")
        if self.amp_dtype not in ("bf16", "fp16"):
            raise ConfigError("amp_dtype", self.amp_dtype, "choose bf16 or fp16")
        if self.conditions not in CONDITIONS:
            raise ConfigError("conditions", self.conditions, "choose " + ", ".join(CONDITIONS))
        if self.user is not None and (not isinstance(self.user, int) or self.user < 0):
            raise ConfigError("user", self.user, "must be a user index >= 0")


# ---- small pieces the loop is made of ---------------------------------------------------
def channel_mse(estimate: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Returns ``mean |estimate - h|^2`` (a real scalar) for complex ``[B, F, T]`` tensors."""
    d = estimate - h
    return (d.real.square() + d.imag.square()).mean()


def to_db(mse: float) -> float:
    return 10.0 * math.log10(mse) if mse > 0 else -math.inf


# the options that shape a run's trajectory: a resume that changes one is warned about (out_dir, stop_after,
# time_limit_min, device, workers and progress may change freely)
RESUME_OPTIONS = ("steps", "epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "schedule", "min_lr_ratio",
                  "plateau_factor", "plateau_patience", "grad_clip", "eval_every", "val_frames", "patience", "seed",
                  "amp", "amp_dtype", "conditions", "user")


def default_warmup(total_steps: int) -> int:
    """Returns the warm-up steps of a run of ``total_steps`` that names none: a tenth of it, at most 200.

    A fixed 200 would leave a run of 200 steps or fewer at its peak rate to the end, never decayed."""
    return min(200, total_steps // 10)


def lr_at(step: int, cfg: TrainConfig, total_steps: int, plateau_scale: float = 1.0) -> float:
    """Returns the learning rate of optimiser step ``step`` (0-based): linear warm-up, then the schedule.

    ``cfg.warmup_steps`` (``None``: :func:`default_warmup`) is capped at ``total_steps - 1``."""
    want = default_warmup(total_steps) if cfg.warmup_steps is None else cfg.warmup_steps
    warmup = min(want, max(total_steps - 1, 0))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    return cfg.lr * plateau_scale


def wrap_ddp(model, device):
    """Returns ``model`` wrapped in DistributedDataParallel when a process group runs, else ``model``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def loss_and_backward(model, batch: dict, amp_ctx=None, scaler=None) -> torch.Tensor:
    """Runs forward and backward on one (per-rank) batch and returns the detached loss.

    Under DDP the backward pass averages the gradients over ranks.
    """
    with amp_ctx or contextlib.nullcontext():
        loss = channel_mse(model(batch["pilots"], batch), batch["h"])
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss.detach()


def _all_mean(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        x /= world
    return x


@torch.no_grad()
def validation_mse(model, batches: list[dict], device, amp_ctx=None) -> float:
    """Returns the mean MSE (linear) of ``model`` over validation batches (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        with amp_ctx or contextlib.nullcontext():
            est = model(b["pilots"], b)
        total += float(channel_mse(est.to(torch.complex64), b["h"])) * b["h"].numel()
        count += b["h"].numel()
    model.train(was_training)
    return total / count


def ls_linear_mse(system_config, batches: list[dict]) -> float | None:
    """Returns the LS-linear MSE on the validation batches (a reference line in the log), or None without the simulator."""
    try:
        from wavefront.sim.estimators import get_classical
    except ImportError:
        return None
    est = get_classical("ls-linear", system_config)
    total, count = 0.0, 0
    for b in batches:
        meta = {k: b[k] for k in ("snr_db", "delay_spread_s", "doppler_hz")}
        pilots, h = b["pilots"], b["h"]
        if h.dim() == 4:  # one user's antennas as one sample ([B, R, F, T]): LS-linear pair by pair
            meta = {k: v.repeat_interleave(h.shape[1]) for k, v in meta.items()}
            pilots, h = pilots.flatten(0, 1), h.flatten(0, 1)
        total += float(channel_mse(est.estimate(pilots, meta), h)) * h.numel()
        count += h.numel()
    return total / count


def _truncate_log(path: Path, step: int) -> None:
    """Drops log rows after ``step`` so a resumed run continues the curve instead of repeating it."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)


LOG_COLUMNS = ["step", "epoch", "lr", "train_mse_db", "val_mse_db", "best_val_mse_db", "val_ls_linear_db", "samples_per_s",
               "elapsed_s"]


def with_estimated_conditions(batch: dict, system_config) -> dict:
    """Returns ``batch`` with ``snr_db``, ``delay_spread_s`` and ``doppler_hz`` replaced by estimates from its pilots."""
    est = estimate_conditions(batch["pilots"], system_config)
    return {**batch, **{k: est[k].to(batch["pilots"].device) for k in ("snr_db", "delay_spread_s", "doppler_hz")}}


# ---- the loop ---------------------------------------------------------------------------
def train(cfg: TrainConfig, system_config, train_data=None, val_data=None, resume: str | bool | None = None) -> dict:
    """Trains ``cfg.model`` and returns a summary dict (steps, best and last validation MSE in dB, why it stopped).

    ``train_data``: a Dataset of samples (see :mod:`wavefront.estimators.data`) or None to
    simulate frames on the fly from ``system_config``. ``val_data``: a Dataset, or None for
    ``cfg.val_frames`` simulated held-out frames. ``resume``: True (``<out_dir>/last.safetensors``)
    or a checkpoint path. Raises :class:`TrainingDiverged` on a NaN/inf loss or gradient, and
    :class:`TrainingInterrupted` after a Ctrl-C paused the run (see :meth:`_Run.loop`).

    Under ``torchrun`` the process group runs for the length of the call
    (:class:`wavefront.utils.process_group`). The steps: :func:`_prepare` (device, data, model,
    optimiser), :meth:`_Run.restore` (resume), then the loop of :meth:`_Run.step` with
    :meth:`_Run.evaluate` every ``eval_every`` steps, which logs and checkpoints.
    """
    cfg.check()
    with process_group(cfg.device) as (rank, world, device):
        run = _prepare(cfg, system_config, train_data, val_data, rank, world, resolve_device(device))
        if resume:
            run.restore(Path(cfg.out_dir) / "last.safetensors" if resume is True else Path(resume))
        summary = run.loop()
    if summary["stopped"] == "interrupted":
        raise TrainingInterrupted(summary)
    return summary


def _check_batch_memory(cfg: TrainConfig, system_config, world: int, device, simulated_val: bool = True) -> None:
    """Refuses, before any frame is drawn, a batch whose frames alone would not fit ``device``'s free memory.

    Counts the frames' grids as a sweep does (:func:`~wavefront.sim.sweep.batch_bytes`), not the model's
    activations: a lower estimate, so what it refuses would surely not have fit (1e9 frames asked for 1.8 TB).
    """
    from wavefront.sim.sweep import batch_bytes
    from wavefront.utils import check_memory

    grid = "x".join(map(str, system_config.ofdm.grid_shape))
    check_memory("batch_size", cfg.batch_size, batch_bytes(system_config, cfg.batch_size // world), device,
                 f"a batch of {cfg.batch_size // world} frames of {grid} per process; lower --batch-size")
    # the validation frames are held for the whole run: at least their labels, one complex64 grid per antenna and user
    f, t = system_config.ofdm.grid_shape
    label = 8 * f * t * system_config.mimo.num_rx_antennas * system_config.mimo.num_users
    if simulated_val:
        check_memory("val_frames", cfg.val_frames, cfg.val_frames * label, device,
                     f"{cfg.val_frames} validation frames of {grid} are held for the whole run; lower --val-frames")


def _prepare(cfg: TrainConfig, system_config, train_data, val_data, rank: int, world: int, device) -> "_Run":
    """Returns a run ready to start: data sources, the model (and its condition flags), optimiser, AMP."""
    if cfg.batch_size % world:
        raise ConfigError("batch_size", cfg.batch_size, f"must split evenly over {world} ranks")
    _check_batch_memory(cfg, system_config, world, device, simulated_val=val_data is None)
    if train_data is None and cfg.epochs is not None:
        raise ConfigError("epochs", cfg.epochs, "on-the-fly data has no epochs; give steps")
    # Data: indexed by global step so that resume and DDP see the batches a straight run would.
    if system_config.mimo.is_mimo:  # one user's samples of MIMO frames; the model serves that user's SISO config
        frames_config, system_config = system_config, _mimo_user_config(cfg, system_config, train_data)
        per_pair = not getattr(model_class(cfg.model), "antenna_axis", False)
        source = MimoUserSource(frames_config, cfg.user or 0, cfg.batch_size, cfg.seed, per_pair, device, rank, world)
        val = mimo_validation(frames_config, cfg.user or 0, cfg.val_frames, cfg.seed, per_pair, device)
    elif train_data is None:
        source = OnTheFlySource(system_config, cfg.batch_size, cfg.seed, device, rank, world)
        val = simulated_validation(system_config, cfg.val_frames, cfg.seed, device)
    else:
        if getattr(model_class(cfg.model), "antenna_axis", False):  # a user's antennas together, as on the fly:
            train_data, val_data = antenna_samples(train_data), antenna_samples(val_data)  # pair by pair, R = 1
        source = DatasetSource(train_data, cfg.batch_size, cfg.seed, device, rank, world, cfg.num_workers)
        val = dataset_validation(val_data) if val_data is not None else \
            simulated_validation(system_config, cfg.val_frames, cfg.seed, device)
    torch.manual_seed(cfg.seed)
    model = create(cfg.model, system_config, **cfg.model_overrides).to(device)
    # A receiver knows the pilots, not the conditions: by default a condition-aware model trains
    # (and validates) on SNR, delay spread and Doppler estimated from each frame's pilots, within
    # the ranges of the training config, so it learns what it will be given at test time.
    estimated = cfg.conditions == "estimated" and model.uses_conditions
    model.pilots_only = model.uses_conditions and cfg.conditions == "none"
    model.trained_conditions = cfg.conditions if model.uses_conditions else "none"
    ch = system_config.channel
    if (model.uses_conditions and cfg.conditions != "none" and train_data is None and rank == 0
            and not any(isinstance(v, tuple) for v in (ch.snr_db, ch.delay_spread_s, ch.doppler_hz))):
        warnings.warn(f"{cfg.model} reads SNR, delay spread and Doppler, but this config fixes all three "
                      f"({ch.snr_db:g} dB, {ch.delay_spread_s * 1e9:g} ns, {ch.doppler_hz:g} Hz): it learns nothing from "
                      "them; give ranges to train over a prior (e.g. configs/prior-12x2.yaml)", stacklevel=3)
    if estimated:
        val = [with_estimated_conditions(b, system_config) for b in val]
    # fused AdamW: one kernel for the whole update on a GPU instead of a dozen per parameter
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=device.type == "cuda")
    use_amp = cfg.amp and device.type == "cuda"
    if cfg.amp and not use_amp:
        warnings.warn("--amp needs a GPU; training in float32 on CPU", stacklevel=3)
    amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    return _Run(cfg, system_config, rank, world, device, source, val, model, estimated, optimizer, scaler,
                lambda: torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp))


def _mimo_user_config(cfg: TrainConfig, config, train_data):
    """Returns the SISO config of user ``cfg.user`` (default 0) of MIMO ``config``, or raises ConfigError."""
    from wavefront.sim.mimo import user_configs

    if train_data is not None:
        raise ConfigError("train", type(train_data).__name__, "a MIMO system config trains on frames drawn on the fly; "
                                                              "give shards as pairs with the SISO config of one user")
    if config.mimo.pilots != "kronecker":
        raise ConfigError("mimo.pilots", config.mimo.pilots, "training on MIMO frames takes the Kronecker pattern only: "
                                                             "NR DM-RS pilots are despread over CDM pairs")
    users = user_configs(config)
    if (cfg.user or 0) >= len(users):
        raise ConfigError("user", cfg.user, f"the config has {len(users)} users (0..{len(users) - 1})")
    return users[cfg.user or 0]


class _Run:
    """One training run's state between steps: model, optimiser, schedule state, the logged window."""

    def __init__(self, cfg, system_config, rank, world, device, source, val, model, estimated, optimizer, scaler,
                 amp_ctx):
        self.cfg, self.system_config, self.rank, self.world, self.device = cfg, system_config, rank, world, device
        self.source, self.val, self.model, self.estimated = source, val, model, estimated
        self.optimizer, self.scaler, self.amp_ctx = optimizer, scaler, amp_ctx
        self.out, self.is_main = Path(cfg.out_dir), rank == 0
        self.total = cfg.steps if cfg.steps is not None else cfg.epochs * source.steps_per_epoch
        self.state = {"plateau_scale": 1.0, "plateau_bad": 0, "best_val": math.inf, "evals_since_best": 0}
        self.start = self.step_count = 0
        self.resumed = False
        self.elapsed_before = 0.0  # seconds of training before this process (a resumed run's), for log.csv
        self.t0 = time.perf_counter()
        self.window_loss, self.window_n = 0.0, 0  # the logged train MSE's running sum since the last evaluation

    def restore(self, path: Path) -> None:
        """Continues from checkpoint ``path``: weights, optimiser, schedule state, RNG and the log's window."""
        ck = ckpt.Checkpoint(path)
        if ck.model_name != self.cfg.model or ck.hparams != self.model.hparams:
            raise ConfigError("resume", str(path), f"holds {ck.model_name} {ck.hparams}, this run builds {self.cfg.model} "
                                                   f"{self.model.hparams}; resume with the same model options")
        ckpt.check_grid_matches(ck.system_config, self.system_config, path)
        self._check_resumed_options(((ck.trainer or {}).get("config") or {}), path)
        ck.load_model_state(self.model)
        ck.load_optimizer_state(self.optimizer)
        if ck.trainer:
            self.state.update(ck.trainer.get("state", {}))
            if ck.trainer.get("scaler"):
                self.scaler.load_state_dict(ck.trainer["scaler"])
        self.start = self.step_count = ck.step
        self.window_loss, self.window_n = tuple((ck.trainer or {}).get("window") or (0.0, 0))
        self.elapsed_before = float((ck.trainer or {}).get("elapsed_s", 0.0))
        self.resumed = True
        ck.restore_rng()
        if self.is_main:
            _truncate_log(self.out / "log.csv", self.start)

    def _check_resumed_options(self, saved: dict, path: Path) -> None:
        """Takes the saved run's warm-up where this one names none, and warns once, naming each training option
        (``RESUME_OPTIONS``) that differs from the saved run's: the run continues with the new values."""
        if self.cfg.warmup_steps is None and saved.get("warmup_steps") is not None:
            self.cfg.warmup_steps = saved["warmup_steps"]
        changed = [f"{k} {saved[k]!r} -> {getattr(self.cfg, k)!r}" for k in RESUME_OPTIONS
                   if k in saved and saved[k] != getattr(self.cfg, k)]
        if changed and self.is_main:
            warnings.warn(f"resume: {path} was trained with other options ({', '.join(changed)}); continuing with the "
                          "new ones, so the run is not the one an uninterrupted command would give", stacklevel=2)

    def save(self, name: str, metrics: dict) -> None:
        """Writes checkpoint ``out_dir/name`` (rank 0 only) with everything a resume needs."""
        if self.is_main:
            ckpt.save(self.out / name, self.model, self.system_config, step=self.step_count, optimizer=self.optimizer,
                      trainer_state={"state": self.state, "window": [self.window_loss, self.window_n],
                                     "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                                     "config": dataclasses.asdict(self.cfg), "metrics": metrics,
                                     "elapsed_s": self.elapsed_before + time.perf_counter() - self.t0})

    def _start_log(self) -> None:
        self.log_path = self.out / "log.csv"
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.resumed or not self.log_path.exists():  # a fresh run starts a fresh log
            with open(self.log_path, "w", newline="") as f:
                csv.writer(f).writerow(LOG_COLUMNS)
        if self.resumed and self.start >= self.total:
            print(f"nothing to train: {self.out} is at step {self.start} and this run has {self.total} steps "
                  f"(give more --steps or --epochs to continue it)")
            return
        print(f"training {self.cfg.model} ({count_parameters(self.model):,} parameters) on {self.device}"
              f"{f' x{self.world} ranks' if self.world > 1 else ''}, steps {self.start} -> {self.total}, "
              f"batch {self.cfg.batch_size}")

    def _check_finite(self, lr: float, loss=None, grad_norm=None, every: int = 1) -> None:
        """Raises TrainingDiverged naming the non-finite quantity and the last good checkpoint."""
        if loss is None:
            raise TrainingDiverged(f"the loss or the gradient norm became non-finite before step {self.step_count} "
                                   f"(lr {lr:.3g}); the last good checkpoint is {self.out / 'last.safetensors'}; "
                                   f"lower --lr or --grad-clip")
        bad_loss = not bool(torch.isfinite(loss))
        what, value = ("loss", float(loss)) if bad_loss else ("gradient norm", float(grad_norm))
        when = f"at step {self.step_count}" if every == 1 else f"by step {self.step_count} (checked every {every} steps)"
        raise TrainingDiverged(f"the {what} became {value} {when} (lr {lr:.3g}); the last good checkpoint is "
                               f"{self.out / 'last.safetensors'}; lower --lr or --grad-clip")

    def evaluate(self, fwd, val_ls, lr: float, t_window: float) -> tuple[dict, bool]:
        """Returns (metrics, improved) after validating, updating the schedule state and logging a row."""
        cfg, state = self.cfg, self.state
        with self.model.eager():  # a few batches: not worth a second compilation for eval mode
            val_mse = validation_mse(fwd, self.val, self.device, self.amp_ctx())
        self.last_val = val_mse
        improved = val_mse < state["best_val"] * (1 - 1e-4)  # at least 0.0004 dB better counts as progress
        if improved:
            state["best_val"], state["evals_since_best"], state["plateau_bad"] = val_mse, 0, 0
        else:
            state["evals_since_best"] += 1
            state["plateau_bad"] += 1
            if cfg.schedule == "plateau" and state["plateau_bad"] >= cfg.plateau_patience:
                state["plateau_scale"] *= cfg.plateau_factor
                state["plateau_bad"] = 0
        now = time.perf_counter()
        metrics = {"step": self.step_count, "train_mse_db": to_db(self.window_loss / self.window_n),
                   "val_mse_db": to_db(val_mse), "best_val_mse_db": to_db(state["best_val"]),
                   "val_ls_linear_db": to_db(val_ls) if val_ls else None}
        if self.is_main:
            spe = self.source.steps_per_epoch
            epoch = self.step_count / spe if spe else ""
            with open(self.log_path, "a", newline="") as f:
                csv.writer(f).writerow([self.step_count, f"{epoch:.3f}" if epoch != "" else "", f"{lr:.4g}",
                                        f"{metrics['train_mse_db']:.3f}", f"{metrics['val_mse_db']:.3f}",
                                        f"{metrics['best_val_mse_db']:.3f}",
                                        f"{metrics['val_ls_linear_db']:.3f}" if val_ls else "",
                                        f"{self.window_n * cfg.batch_size / (now - t_window):.1f}",
                                        f"{self.elapsed_before + now - self.t0:.1f}"])
            if self.bar is not None:
                self.bar.write(f"step {self.step_count}: train {metrics['train_mse_db']:.2f} dB, val "
                               f"{metrics['val_mse_db']:.2f} dB"
                               + (f" (LS-linear {metrics['val_ls_linear_db']:.2f} dB)" if val_ls else ""))
        return metrics, improved

    def _pause(self, step: int, window_sum: torch.Tensor, why: str) -> str:
        """Saves ``last.safetensors`` at ``step`` between evaluations (the window's loss carried, so a resume logs
        the curve of an uninterrupted run) and returns ``why``, the run's ``stopped``."""
        self.window_loss += float(window_sum)
        window_sum.zero_()
        self.save("last.safetensors", {"step": step})
        return why

    def loop(self) -> dict:
        """Runs the steps from the start (or the resumed step) to the end; returns the summary.

        In one process a Ctrl-C is deferred to the end of the step it lands in, where the run pauses as
        ``time_limit_min`` pauses it (``last.safetensors`` at that step, ``stopped: "interrupted"``), so
        ``--resume`` continues the curve of an uninterrupted run; a second Ctrl-C stops at once. Under
        DDP the ranks could stop at different steps, so there a Ctrl-C stops as it always did: the last
        evaluation's checkpoint is where a resume starts.
        """
        with deferred_interrupt() if self.world == 1 else contextlib.nullcontext():
            return self._loop()

    def _loop(self) -> dict:
        cfg, model, optimizer, scaler, device = self.cfg, self.model, self.optimizer, self.scaler, self.device
        if cfg.compile:
            model.compile_real(dynamic=False)  # the real-valued network only: Inductor has no complex kernels
        fwd = wrap_ddp(model, device)
        val_ls = ls_linear_mse(self.system_config, self.val) if self.is_main else None
        self._start_log()
        self.bar = None
        if self.is_main and cfg.progress:
            self.bar = tqdm(total=self.total, initial=self.start, unit="step", dynamic_ncols=True, leave=False)
        total = self.total
        end = min(total, cfg.stop_after) if cfg.stop_after is not None else total
        stopped = "finished"
        # On a GPU the loop never waits for the device between steps: the loss sum and the
        # finiteness flag stay on the device and are read every `check_every` steps (and at each
        # evaluation). On CPU reading them costs nothing, so every step is checked.
        check_every = 1 if device.type == "cpu" else 50
        window_sum = torch.zeros((), device=device, dtype=torch.float64)
        finite = torch.ones((), device=device, dtype=torch.bool)
        self.last_val, t0, t_window = None, time.perf_counter(), time.perf_counter()
        self.t0 = t0  # this process's training time counts from here (log.csv's elapsed_s adds the saved run's)
        model.train()
        while self.step_count < end:
            lr = lr_at(self.step_count, cfg, total, self.state["plateau_scale"])
            for g in optimizer.param_groups:
                g["lr"] = lr
            try:
                batch = self.source.batch(self.step_count)
            except Exception:
                if self.world == 1 and interrupt_pending():  # the Ctrl-C also reached the DataLoader's workers
                    stopped = self._pause(self.step_count, window_sum, "interrupted")
                    break
                raise
            if self.estimated:
                batch = with_estimated_conditions(batch, self.system_config)
            loss = loss_and_backward(fwd, batch, self.amp_ctx(), scaler if scaler.is_enabled() else None)
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            loss = _all_mean(loss.float(), self.world)
            if not scaler.is_enabled():  # a GradScaler skips non-finite steps itself
                finite &= torch.isfinite(loss) & torch.isfinite(grad_norm)
                if self.step_count % check_every == 0 and not bool(finite):
                    self._check_finite(lr, loss, grad_norm, check_every)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            self.step_count += 1
            step = self.step_count
            out_of_time = cfg.time_limit_min is not None and time.perf_counter() - t0 > 60 * cfg.time_limit_min
            interrupted = self.world == 1 and step < total and interrupt_pending()
            window_sum += loss.detach()
            self.window_n += 1
            if self.bar is not None:
                self.bar.update(1)
                if step % check_every == 0 and step % 10 == 0:
                    self.bar.set_postfix(train_db=f"{to_db((self.window_loss + float(window_sum)) / self.window_n):.2f}")

            if (out_of_time or interrupted) and step % cfg.eval_every and step != total:
                # pause where a straight run would not evaluate: save and stop, so that the resumed
                # run logs exactly the curve of an uninterrupted one
                stopped = self._pause(step, window_sum, "interrupted" if interrupted else "time-limit")
                break
            if step % cfg.eval_every == 0 or step == total:
                if not scaler.is_enabled() and not bool(finite):
                    self._check_finite(lr)
                self.window_loss += float(window_sum)
                window_sum.zero_()
                metrics, improved = self.evaluate(fwd, val_ls, lr, t_window)
                self.window_loss, self.window_n, t_window = 0.0, 0, time.perf_counter()
                self.save("last.safetensors", metrics)
                if improved:
                    self.save("best.safetensors", metrics)
                if cfg.patience and self.state["evals_since_best"] >= cfg.patience:
                    stopped = "early-stopped"
                    break
                if (out_of_time or interrupted) and step < total:
                    stopped = "interrupted" if interrupted else "time-limit"  # evaluated and saved above: resumable
                    break
        self.window_loss += float(window_sum)
        if self.step_count < total and stopped == "finished":
            stopped = "paused"  # stop_after: keep the state for --resume; no extra evaluation, so the curve is unchanged
            self.save("last.safetensors", {"step": self.step_count})
        if self.bar is not None:
            self.bar.close()
        if self.is_main and stopped in ("finished", "early-stopped") and self.state["best_val"] >= 1.0:
            # E|h|^2 = 1 per RE: a model no better than estimating 0 learned nothing, or diverged to finite values
            # (the NaN guard does not see those: lr 1e9 ended at +297 dB, exit 0)
            warnings.warn(f"training ended with a best validation MSE of {to_db(self.state['best_val']):+.2f} dB, no "
                          f"better than estimating 0 (0 dB"
                          + (f"; LS-linear here {to_db(val_ls):.2f} dB" if val_ls else "") + "): it diverged or "
                          f"learned nothing; lower --lr (now {cfg.lr:g}) or train longer", RuntimeWarning,
                          stacklevel=2)
        return {"step": self.step_count, "total_steps": total, "stopped": stopped,
                "best_val_mse_db": to_db(self.state["best_val"]),
                "val_mse_db": to_db(self.last_val) if self.last_val else None,
                "val_ls_linear_db": to_db(val_ls) if val_ls else None, "checkpoint": str(self.out / "best.safetensors"),
                "parameters": count_parameters(model)}
