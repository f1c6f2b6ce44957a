"""``wavefront train`` and ``wavefront evaluate``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from wavefront.errors import ConfigError
from wavefront.estimators.registry import DEFAULT_LEARNED
from wavefront.utils import (check_output_folder, nonnegative_float, nonnegative_int, positive_float, positive_int,
                             refuse_to_replace, seed_int, thread_count, worker_count)

# evaluate's classical rows: beside a model, and where they are the whole table (--baselines-only)
EVAL_BASELINES = "ls-linear,lmmse-robust,lmmse-genie"
EVAL_BASELINES_ONLY = "ls-linear,lmmse-robust,lmmse-estimated,mmse-bayes,lmmse-genie"
VAL_FRAMES = 2048  # train's simulated validation frames when there is no --val


def _threads_argument(p, note: str = "") -> None:
    """Adds ``--threads`` (torch CPU threads; wavefront's ``main`` applies it before the command runs)."""
    p.add_argument("--threads", type=thread_count, default=None,
                   help="torch CPU threads (default: torch's, one per core, at most the container's CPU quota"
                        + (f"; {note})" if note else ")"))


def _system_config(path: str | None):
    from wavefront.sim.config import preset, SystemConfig

    if path is None:
        return preset("default")
    if not Path(path).suffix and not Path(path).is_file():
        if Path(path).is_dir():
            raise ConfigError("config", path, "is a folder; give a YAML file or a preset name")
        return preset(path)
    return SystemConfig.from_yaml(path)


def _overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", item, "must look like key=value (e.g. model_dim=64 or patch_size=[3,2])")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:  # "patch_size=[3" was a YAML parser traceback
            raise ConfigError("--set", item, f"the value is not valid YAML ({exc.__class__.__name__}); e.g. "
                                             "model_dim=64 or patch_size=[3,2]") from None
    return out


def _pilots_help() -> str:
    from wavefront.sim.pilots import PILOTS_HELP

    return PILOTS_HELP


# The learned estimator `evaluate` (and the README's first sweep) uses unless told otherwise:
# pilots only, near the Bayes risk at several times the genie LMMSE's CPU throughput.


def add_commands(subparsers) -> None:
    """Adds ``train`` and ``evaluate`` to the ``wavefront`` command line."""
    p = subparsers.add_parser("train", help="train a learned channel estimator",
                              description="Train a learned estimator on HDF5 shards or on frames simulated on the fly.")
    p.add_argument("--model", default="adafortitran", help="registry name (default adafortitran)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model hyper-parameter, e.g. model_dim=64 (repeatable)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--on-the-fly", metavar="CONFIG", help="simulate training frames from this system config (YAML or preset name)")
    src.add_argument("--train", metavar="DIR", help="folder of HDF5 training shards")
    p.add_argument("--val", metavar="DIR", help="folder of HDF5 validation shards (needed with --train; on the fly, "
                                                "default: --val-frames simulated held-out frames)")
    p.add_argument("--config", metavar="CONFIG", help="system config for --train data (YAML or preset; default: the one "
                                                      "recorded in the shards, else default); refused if it conflicts "
                                                      "with the shards'")
    p.add_argument("--pilots", metavar="PRESET|FILE.json", help=_pilots_help())
    from wavefront.sim.cli import add_impairment_arguments

    add_impairment_arguments(p)  # on the fly: drawn per frame; with --train they must be the shards' own
    from wavefront.sim.cli import add_mimo_arguments

    add_mimo_arguments(p)  # a MIMO config trains a per-(antenna, user) model on one user's pilots (pair_training_config)
    p.add_argument("--user", type=nonnegative_int, default=0,
                   help="MIMO configs: the user whose pilots the per-(antenna, user) model trains on (default 0); a "
                        "model that is not frequency-shift invariant needs one checkpoint per user, which sweep takes "
                        "as U0.safetensors+U1.safetensors+...")
    p.add_argument("--steps", type=positive_int, help="optimiser steps (on-the-fly data)")
    p.add_argument("--epochs", type=positive_int, help="epochs over --train")
    p.add_argument("--batch-size", type=positive_int, default=64, help="global batch, split over DDP ranks (default 64)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate of AdamW (default 1e-3)")
    p.add_argument("--weight-decay", type=nonnegative_float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    p.add_argument("--warmup-steps", type=nonnegative_int, default=None,
                   help="linear warm-up steps, at most the run's steps - 1 (default: a tenth of the run, at most 200)")
    p.add_argument("--schedule", choices=["cosine", "plateau", "constant"], default="cosine",
                   help="after the warm-up: cosine decay, halved after 3 validations without improvement (plateau), or "
                        "constant (default cosine)")
    p.add_argument("--grad-clip", type=nonnegative_float, default=1.0, help="max gradient norm (0: off; default 1)")
    p.add_argument("--eval-every", type=positive_int, default=500,
                   help="steps between validations and checkpoints (default 500)")
    p.add_argument("--val-frames", type=positive_int, default=None,
                   help=f"simulated validation frames, without --val (default {VAL_FRAMES})")
    p.add_argument("--patience", type=nonnegative_int, default=10,
                   help="validations without improvement before stopping (0: never; default 10)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the initial weights and the frames (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--conditions", default="estimated", choices=["estimated", "true", "none"],
                   help="SNR, delay spread and Doppler a condition-aware model is trained on: estimated from each "
                        "frame's pilots within the config's ranges (default; what it gets at test time), true, or "
                        "none (pilots only: the model learns without them and needs none at test time)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on GPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--workers", type=worker_count, default=0, help="DataLoader workers for --train (default 0)")
    p.add_argument("--out", help="run folder (default runs/<model>)")
    p.add_argument("--resume", nargs="?", const=True, metavar="CHECKPOINT",
                   help="continue from <out>/last.safetensors, or from CHECKPOINT")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds a run (its checkpoints and log.csv are replaced), "
                        "or continue a --resume CHECKPOINT from another folder there, instead of refusing")
    p.add_argument("--stop-after", type=positive_int, metavar="STEP", help="pause at this step (continue later with --resume)")
    p.add_argument("--time-limit-min", type=positive_float, help="pause after this many minutes (continue later with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _threads_argument(p, "results depend on the count (reduction order): give it to reproduce a run")
    p.set_defaults(func=_train)

    e = subparsers.add_parser("evaluate", help="compare a trained estimator with LS, LMMSE and the MMSE bound",
                              description="Print and save MSE (dB) per test condition for a checkpoint, LS-linear, "
                                          "robust LMMSE and the MMSE bound, with plots against SNR, Doppler and delay "
                                          "spread; --baselines-only leaves the checkpoint out.")
    model = e.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", default=None,
                       help=f"checkpoint path, or a model name with a shipped checkpoint (default {DEFAULT_LEARNED}: "
                            "the shipped pilots-only gated LMMSE; adafortitran: the shipped full-size AdaFortiTran)")
    model.add_argument("--baselines-only", action="store_true",
                       help="no learned model: only the --baselines rows and the bound, with the same tables, plots "
                            "and results.json (e.g. on frames whose pilots no checkpoint fits, or before training one)")
    e.add_argument("--suite", metavar="DIR", help="folder of test shards (default: simulate --points)")
    e.add_argument("--points", default="paper", help="simulated test points when no --suite: paper (default), the "
                                                     "three AdaFortiTran test sweeps")
    e.add_argument("--conditions", default="estimated", choices=["estimated", "true", "none"],
                   help="SNR, delay spread and Doppler given to the model: estimated from each frame's pilots "
                        "(default; the model given the true ones is added as a second row), true, or none (pilots "
                        "only; refused for a checkpoint trained with conditions); with --baselines-only, the "
                        "SNR lmmse-robust is given (the genie always knows the truth)")
    from wavefront.sim.cli import add_prior_arguments, add_rank_arguments

    add_prior_arguments(e)
    add_impairment_arguments(e)  # simulated points draw them per frame; a --suite's frames carry their own
    from wavefront.sim.cli import add_mimo_arguments

    add_mimo_arguments(e)  # a MIMO config runs the per-(antenna, user) model for every user (its layout must fit each)
    e.add_argument("--frames-per-point", type=positive_int, default=None, metavar="N",
                   help="frames per test point: simulated ones draw this many (default 500); with --suite, each "
                        "point is evaluated on its first N frames (default: all it holds; a point holding fewer "
                        "uses all of them)")
    e.add_argument("--config", help="system config (YAML or preset; default: the --suite's, else the checkpoint's "
                                    "grid, pilots, profile and receiver impairments, TDL-A without any for the "
                                    "shipped models; with --baselines-only the default preset)")
    e.add_argument("--pilots", metavar="PRESET|FILE.json",
                   help=_pilots_help().replace("default: the config's", "default: the checkpoint's; must match it"))
    e.add_argument("--baselines", default=None,
                   help=f"comma-separated classical estimators (default {EVAL_BASELINES}; with --baselines-only, "
                        f"where they are the whole table, {EVAL_BASELINES_ONLY})")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    e.add_argument("--seed", type=seed_int, default=1, help="seed of the simulated test frames (default 1)")
    e.add_argument("--out", default="eval", help="output folder (default eval/); its progress/ keeps every finished "
                   "batch, so rerunning the same command after a kill resumes")
    e.add_argument("--overwrite", action="store_true",
                   help="discard the progress of a different evaluation in --out/progress, or replace a "
                        "results.json there has no progress of (a merge-results output), instead of refusing")
    e.add_argument("--no-plots", action="store_true", help="write results.csv/.json only, no PNG plots")
    e.add_argument("--no-progress", action="store_true", help="no progress bar (there is none when stderr is not a "
                                                              "terminal)")
    _threads_argument(e)

    add_rank_arguments(e)
    e.set_defaults(func=_evaluate, kept_on_interrupt="every finished batch")

    lb = subparsers.add_parser("leaderboard", help="train every registered model under one budget and rank them "
                                                   "beside the classical estimators",
                               description="Train each model on frames drawn on the fly from the prior (the same frames "
                                           "and seeds for every model), then rank all rows by the Bayes risk (MSE over "
                                           "frames drawn from the prior) with the paper suites and CPU cost beside. "
                                           "Rerunning the same command continues where it stopped.")
    lb.add_argument("--models", help="comma-separated registry names (default: every registered model)")
    lb.add_argument("--budget", default=None, choices=["cpu-small", "cpu-medium", "gpu-full"],
                    help="named budget (default cpu-small: 300 steps x batch 32, small model sizes)")
    lb.add_argument("--steps", type=positive_int, help="optimiser steps per model (overrides the budget's)")
    lb.add_argument("--batch-size", type=positive_int, help="batch per step (overrides the budget's)")
    lb.add_argument("--seeds", type=positive_int, default=1, help="training seeds per model (rows give each; default 1)")
    lb.add_argument("--conditions", default="estimated", choices=["estimated", "true", "none"],
                    help="SNR, delay spread and Doppler given to condition-aware models in training and test (default "
                         "estimated)")
    lb.add_argument("--config", help="system config whose channel ranges are the prior (YAML with ranges, e.g. "
                                     "configs/prior-12x2.yaml; default: the default grid over the paper's training "
                                     "ranges, SNR 0-25 dB, 25-300 ns, 50-1000 Hz); a MIMO config (e.g. "
                                     "configs/mimo-8x2.yaml) ranks the rows on MIMO frames against the joint mmse-bayes")
    lb.add_argument("--ici", action="store_true",
                    help="model inter-carrier interference (channel.ici: true) in the training and test frames: the "
                         "channel varies within each symbol, and h is each symbol's average channel")
    from wavefront.sim.cli import add_impairment_arguments, add_mimo_arguments

    add_impairment_arguments(lb)  # drawn per frame in training and test frames, as a YAML config's channel fields
    add_mimo_arguments(lb)  # on the prior config: ranks on MIMO frames, as a MIMO YAML does
    lb.add_argument("--bayes-frames", type=positive_int, help="prior frames of the Bayes risk (default: the budget's)")
    lb.add_argument("--frames-per-point", type=positive_int, help="frames per paper-suite point (default: the budget's)")
    lb.add_argument("--out", default="leaderboard", help="output folder; rerunning continues from it (default leaderboard/)")
    lb.add_argument("--overwrite", action="store_true", help="discard the leaderboard --out holds (its runs, caches, "
                                                             "tables and plots; nothing else there) and start afresh")
    lb.add_argument("--device", default="cpu", help="where the models train: cpu (default), auto or cuda; the "
                                                    "measurements run on the CPU")
    lb.add_argument("--no-progress", action="store_true", help="no progress bars")
    _threads_argument(lb, "training's; the throughput and latency are measured on one thread either way")
    lb.set_defaults(func=_leaderboard, kept_on_interrupt="every finished model and the last checkpoint of the one "
                                                       "training")


def _train(args) -> int:
    from wavefront.estimators.data import open_frame_folder
    from wavefront.estimators.train import TrainConfig, TrainingDiverged, TrainingInterrupted, train

    if args.train is None and args.on_the_fly is None:
        raise ConfigError("train", None, "give --train DIR (HDF5 shards) or --on-the-fly CONFIG")
    if args.train is not None and args.val is None:
        raise ConfigError("val", None, "--train needs --val DIR")
    # flags that would be recorded and do nothing
    if args.val is not None and args.val_frames is not None:
        raise ConfigError("val_frames", args.val_frames, "counts simulated validation frames, and --val DIR gives its "
                                                         "own: leave one out")
    if args.on_the_fly is not None and args.workers:
        raise ConfigError("workers", args.workers, "are DataLoader processes reading --train DIR; frames on the fly "
                                                   "are simulated in the training process: leave it out")
    out = check_output_folder("out", args.out or f"runs/{args.model}")
    # a forgotten --resume once replaced a finished run's weights
    if args.resume is True and args.overwrite:
        raise ConfigError("overwrite", True, "--resume continues the run in --out and --overwrite starts afresh "
                                             "there: give one of them")
    # --resume CHECKPOINT from another folder continues that run here: the run --out holds is replaced, as by a
    # fresh start, so it needs --overwrite as well (it once replaced a finished run's weights without a word)
    own = args.resume is True or (isinstance(args.resume, str) and Path(args.resume).resolve().parent == out.resolve())
    refuse_to_replace("out", out, ("last.safetensors", "best.safetensors"), own or args.overwrite,
                      what="the weights",
                      advice="add --resume to continue it, --overwrite to start afresh there (or to continue "
                             "another --resume CHECKPOINT there), or give another --out")
    from wavefront.sim.pilots import apply_pilots

    from wavefront.estimators.data import recorded_config

    if args.train is not None:  # a killed generate's folder lists no shard yet: say so, not "0 samples"
        from wavefront.datasets.sources import refuse_frameless

        refuse_frameless(args.train, "train")
        refuse_frameless(args.val, "val")
    # Shards record the system config they were generated with: train on it unless --config
    # names one explicitly (a conflicting explicit one is refused below, by open_frame_folder).
    recorded = recorded_config(args.train) if args.train and args.config is None else None
    config = apply_pilots(recorded or _system_config(args.on_the_fly or args.config), args.pilots)
    config = _impairments_of(config, args, args.train, "train")
    from wavefront.estimators.data import pair_training_config
    from wavefront.sim.cli import mimo_overrides, refuse_idle_rx_correlation

    mimo = mimo_overrides(args)
    if mimo and args.train:
        raise ConfigError("rx_antennas/users", mimo, "--train shards carry their own antennas and users; leave the MIMO "
                                                     "flags out (or regenerate the shards)")
    config = config.updated(mimo=mimo) if mimo else config
    refuse_idle_rx_correlation(args, config)
    user = args.user
    if config.mimo.is_mimo:
        config = pair_training_config(config, user)
        print(f"wavefront: MIMO config ({args.train or 'on the fly'}): training a per-(antenna, user) model on user "
              f"{user}'s pilots ({config.ofdm.pilot_layout.describe()}); sweep runs it for every user and antenna",
              file=sys.stderr)
    elif user != 0:
        raise ConfigError("user", user, "picks a user of a MIMO config; this config has one antenna and one user")
    cfg = TrainConfig(model=args.model, model_overrides=_overrides(args.set), steps=args.steps, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                      schedule=args.schedule, grad_clip=args.grad_clip, eval_every=args.eval_every,
                      val_frames=args.val_frames or VAL_FRAMES, patience=args.patience, seed=args.seed,
                      device=args.device, amp=args.amp,
                      compile=args.compile, num_workers=args.workers, out_dir=args.out or f"runs/{args.model}",
                      stop_after=args.stop_after, time_limit_min=args.time_limit_min, progress=not args.no_progress,
                      conditions=args.conditions)
    train_data = open_frame_folder(args.train, config, user) if args.train else None
    val_data = open_frame_folder(args.val, config, user) if args.val else None
    if args.train and args.val:  # validating on training frames picks best.safetensors by its fit, not by new frames
        from wavefront.datasets.folders import dataset_folders

        shared = sorted({d.resolve() for d in dataset_folders(args.train, "train")}
                        & {d.resolve() for d in dataset_folders(args.val, "val")})
        if shared:
            raise ConfigError("val", args.val, f"holds {len(shared)} dataset folder(s) that --train trains on too "
                                               f"(e.g. {shared[0]}); validate on frames the model does not train on")
    try:
        result = train(cfg, config, train_data, val_data, resume=args.resume)
    except TrainingDiverged as exc:
        print(f"wavefront: training stopped: {exc}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        print(json.dumps(exc.summary))
        print(f"wavefront: {exc}; {Path(cfg.out_dir) / 'last.safetensors'} holds it: rerun the same command with "
              f"--resume to continue", file=sys.stderr)
        return 130
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        print(json.dumps(result))
    return 0


def _leaderboard(args) -> int:
    import time

    from wavefront.estimators.leaderboard import check_run, make_spec, run_leaderboard

    config = leaderboard_config(args)
    if not all(isinstance(getattr(config.channel, k), tuple) for k in ("snr_db", "delay_spread_s", "doppler_hz")):
        raise ConfigError("config", args.config, "the prior needs ranges of SNR, delay spread and Doppler (e.g. "
                                                 "configs/prior-12x2.yaml), not fixed values")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models is not None else None
    if models == []:  # an empty list once ran every registered model, for an hour, instead of none
        raise ConfigError("models", args.models, "name at least one registered model, or leave out --models for all")
    extra = {k: getattr(args, k) for k in ("bayes_frames", "frames_per_point") if getattr(args, k) is not None}
    budget = args.budget or ("cpu-small" if args.steps is None and args.batch_size is None else None)
    spec = make_spec(models, budget, args.steps, args.batch_size, seeds=args.seeds, conditions=args.conditions,
                     device=args.device)
    for k, v in extra.items():
        setattr(spec, k, v)
    check_run(spec, config)  # run_leaderboard's own refusals, before --overwrite removes the earlier board
    out = check_output_folder("out", args.out)
    if args.overwrite:
        from wavefront.estimators.leaderboard import clear_leaderboard

        removed = clear_leaderboard(out)
        if removed:
            print(f"--overwrite: removed {len(removed)} item(s) of the earlier leaderboard in {out}", file=sys.stderr)
    t0 = time.perf_counter()
    run_leaderboard(spec, config, out, progress=not args.no_progress)
    print((out / "leaderboard.md").read_text())
    print(f"wrote {out}/leaderboard.md, .json, .csv, pareto.png, suite_*.png in {time.perf_counter() - t0:.0f} s")
    return 0


def leaderboard_config(args):
    """Returns the prior config of ``leaderboard``: ``--config`` (default: the default grid over the paper's training
    ranges) with ``--ici``, the impairment flags and the MIMO flags applied as ``generate``, ``train`` and ``evaluate``
    apply them; a bad value raises ConfigError naming the field."""
    from wavefront.sim.cli import mimo_overrides, refuse_idle_rx_correlation, with_impairments

    if args.config is None:
        from wavefront.sim.experiment import prior_config

        config = prior_config(_system_config(None))
    else:
        config = _system_config(args.config)
    config = config.updated(channel={"ici": True}) if args.ici else config
    config = with_impairments(config, args)
    mimo = mimo_overrides(args)
    config = config.updated(mimo=mimo) if mimo else config
    refuse_idle_rx_correlation(args, config)
    return config


def _evaluate(args) -> int:
    """Runs ``evaluate``: in one process, across torchrun's ranks (rank 0 writes), or as array job --rank of --world."""
    from wavefront.estimators.checkpoint import Checkpoint
    from wavefront.estimators.estimator import pretrained_path
    from wavefront.estimators.evaluate import SIMULATED_FRAMES_PER_POINT, evaluate, evaluate_partial
    from wavefront.sim.experiment import parse_prior_ranges, write_partial
    from wavefront.utils import job_ranks, process_group

    rank, world, array_job = job_ranks(args.rank, args.world)
    # A 4 kB block per stored batch (21 paper points; a suite may hold more), results and plots.
    sized = args.frames_per_point or SIMULATED_FRAMES_PER_POINT
    out = check_output_folder("out", args.out, 4096 * (21 * -(-sized // 500) + 8) + 300_000)
    if not array_job:  # an array job writes a partial file, never results.json
        from wavefront.sim.cli import PROGRESS_DIR
        from wavefront.utils import refuse_results_without_progress

        refuse_results_without_progress(out, out / PROGRESS_DIR, args.overwrite)
    # --baselines-only: no checkpoint at all; leaving --checkpoint out means the default learned model
    checkpoint = None if args.baselines_only else args.checkpoint or DEFAULT_LEARNED
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.is_dir():
        raise ConfigError("checkpoint", checkpoint, "is a folder; give a .safetensors file (e.g. "
                                                    "RUN/best.safetensors) or a shipped model name")
    if path is not None and not path.exists() and path.suffix != ".safetensors":
        path = pretrained_path(checkpoint)
    from wavefront.estimators.data import recorded_config

    if args.suite is not None and not Path(args.suite).is_dir():  # named as the option the user typed, not "data"
        raise ConfigError("suite", args.suite, "is not a folder; give a folder of test shards (wavefront generate-suite)"
                          if Path(args.suite).exists() else "no such folder; give a folder of test shards "
                                                            "(wavefront generate-suite)")
    if args.suite is not None:
        from wavefront.datasets.sources import refuse_frameless

        refuse_frameless(args.suite, "suite")  # a killed generate-suite's point: a KeyError otherwise
    recorded = recorded_config(args.suite) if args.suite and not args.config else None
    if args.config:
        config = _system_config(args.config)
    elif recorded is not None:  # the suite's recorded grid; a checkpoint built for another is refused at load
        config = recorded
    else:  # the checkpoint's grid and pilots; its channel ranges do not matter, every point sets them
        config = Checkpoint(path).system_config if path is not None and path.is_file() else _system_config(None)
    if args.pilots is not None:
        from wavefront.sim.pilots import apply_pilots

        config = apply_pilots(config, args.pilots)
    config = _impairments_of(config, args, args.suite, "suite")
    from wavefront.sim.cli import mimo_overrides, refuse_idle_rx_correlation

    mimo = mimo_overrides(args)
    if mimo and args.suite:
        raise ConfigError("rx_antennas/users", mimo, "--suite shards carry their own antennas and users; leave the MIMO "
                                                     "flags out (or regenerate the suite)")
    if mimo:
        config = config.updated(mimo=mimo)
    refuse_idle_rx_correlation(args, config)
    given = (args.baselines if args.baselines is not None
             else EVAL_BASELINES_ONLY if args.baselines_only else EVAL_BASELINES)
    baselines = [b.strip() for b in given.split(",") if b.strip()]
    name = None if checkpoint is None else checkpoint if not Path(checkpoint).exists() else str(path)
    if args.suite is None:
        frames_per_point = args.frames_per_point or SIMULATED_FRAMES_PER_POINT
    else:  # None: every frame of each point
        frames_per_point = args.frames_per_point
        if frames_per_point is not None and (rank == 0 or array_job):
            print(f"wavefront: --frames-per-point {frames_per_point} with --suite: each point is evaluated on its "
                  f"first {frames_per_point} frames (a point holding fewer uses all of them; the frames column says "
                  "how many)", file=sys.stderr)

    def run_on(device, **ranks):
        from wavefront.resolve import learned_estimator  # under MIMO: per (antenna, user), one checkpoint or one a user

        try:
            est = None if name is None else learned_estimator(name, config, device=device, conditions=args.conditions)
        except ConfigError as exc:  # a checkpoint that does not fit these frames (or none shipped): name the way out
            if exc.field not in ("checkpoint", "estimator"):
                raise
            raise ConfigError(exc.field, exc.value, f"{exc.rule}; for the classical rows alone, run evaluate with "
                                                    "--baselines-only instead of --checkpoint") from None
        # pilots only: the model reads nothing, and the baselines that read conditions get estimates
        engine_conditions = "estimated" if args.conditions == "none" else args.conditions
        kwargs = dict(points=args.points, suite=args.suite, frames_per_point=frames_per_point, baselines=baselines,
                      seed=args.seed, device=device, progress=sys.stderr.isatty() and not args.no_progress,
                      conditions=engine_conditions,
                      prior_ranges=parse_prior_ranges(args.prior_snr_db, args.prior_delay_spread_ns, args.prior_doppler_hz),
                      **ranks)
        return est, kwargs

    def output(est, device):
        from wavefront.sim.impairments import impairment_record
        from wavefront.utils import resolve_device

        impairments = impairment_record(config.channel)  # recorded only when on: other outputs stay as they were
        return {"model_name": est.name if est is not None else None, "checkpoint": checkpoint,
                "conditions": args.conditions,
                "plots": not args.no_plots, "points": args.points, "suite": args.suite,
                "frames_per_point": frames_per_point, "baselines": baselines, "seed": args.seed,
                "device": resolve_device(device).type, **({"impairments": impairments} if impairments else {})}

    def store_for(est, device):
        """The progress store in --out: keyed by everything that changes a batch's counts (not by --no-plots)."""
        import torch

        from wavefront import __version__
        from wavefront.sim.cli import PROGRESS_DIR
        from wavefront.sim.progress import open_progress

        key = {k: v for k, v in output(est, device).items() if k != "plots"}
        fingerprint = {"command": "evaluate", "output": key, "config": json.loads(config.to_json()),
                       "prior": [args.prior_snr_db, args.prior_delay_spread_ns, args.prior_doppler_hz],
                       "versions": {"wavefront": __version__, "torch": torch.__version__}}
        return open_progress(out / PROGRESS_DIR, fingerprint, args.overwrite)

    from wavefront.sim.cli import kept_progress

    if array_job:
        est, kwargs = run_on(args.device, rank=rank, world=world)
        # opened once evaluate has checked the points and baselines: a refused run leaves --out as it was
        part = evaluate_partial(est, config, store=lambda: store_for(est, args.device), **kwargs)
        part["output"] = output(est, args.device)
        saved = kept_progress(lambda: write_partial(part, out), out)
        print(f"rank {rank} of {world}: wrote {saved} (combine with `wavefront merge-results`)", file=sys.stderr)
        return 0
    long_rows: list = []
    with process_group(args.device) as (rank, world, device):
        est, kwargs = run_on(device, rank=rank, world=world)
        evaluate(est, config, long_rows=long_rows, store=(lambda: store_for(est, device)) if rank == 0 else None,
                 **kwargs)
    if rank == 0:
        from wavefront.sim.experiment import Row

        kept_progress(lambda: report_evaluation([Row(**r) for r in long_rows], out, est.name if est else None,
                                                checkpoint, args.conditions, world, plots=not args.no_plots,
                                                impairments=output(est, device).get("impairments"), replace=True),
                      out)
    return 0


def _impairments_of(config, args, folder: str | None, flag: str):
    """Returns ``config`` with the impairment flags applied, or, for frames read from ``folder`` (--train, --suite),
    with the impairments its shards record; flags that differ from those raise ConfigError naming the field."""
    from wavefront.estimators.data import recorded_config
    from wavefront.sim.cli import with_impairments
    from wavefront.sim.impairments import IMPAIRMENT_FIELDS

    if folder is None:
        return with_impairments(config, args)
    recorded = recorded_config(folder)
    stored = {k: getattr(recorded.channel, k) if recorded is not None else None for k in IMPAIRMENT_FIELDS}
    wanted = with_impairments(config, args).channel
    for k in IMPAIRMENT_FIELDS:
        if getattr(wanted, k) is not None and getattr(wanted, k) != stored[k]:
            drawn = f"with {k}={stored[k]}" if stored[k] is not None else f"without {k}"
            raise ConfigError(f"channel.{k}", getattr(wanted, k), f"the --{flag} shards were drawn {drawn}: their "
                                                                  "frames carry their own impairments; leave the flag "
                                                                  "(or the config's field) out, or regenerate them")
    return config.updated(channel=stored) if any(v is not None for v in stored.values()) else config


def report_evaluation(rows: list, out: Path, model_name: str | None, checkpoint: str | None, conditions: str,
                      world_size: int = 1, plots: bool = True, impairments: dict | None = None,
                      replace: bool = False) -> None:
    """Prints the evaluation's table and what each estimator was given; writes its results and plots into ``out``.

    ``model_name``, ``checkpoint``: None for the classical rows alone (``--baselines-only``).

    ``impairments``: the receiver impairments of the test frames (``impairment_record``), recorded in
    ``results.json`` when set.

    ``replace``: False (``merge-results``) refuses an ``out/results.json`` of another evaluation (other
    rows, checkpoint or conditions) with ConfigError before printing or writing anything; ``evaluate``
    itself passes True, its progress fingerprint having told it the run is the same."""
    from wavefront.estimators.evaluate import format_table, save_evaluation, wide_rows

    if not replace:
        from wavefront.utils import refuse_other_results

        # compared as JSON text: a NaN row (a diverged estimator) equals itself there
        record = {"checkpoint": checkpoint, "conditions": conditions, "rows": [r.record() for r in rows]}
        text = json.dumps(json.loads(json.dumps(record)), sort_keys=True)
        refuse_other_results(out, lambda held: json.dumps({k: held.get(k) for k in record}, sort_keys=True) == text,
                             "this evaluation")
    print(format_table(wide_rows(rows, model_name)))
    print("given:")
    for name, given, trained in dict.fromkeys((r.estimator, r.given, r.trained_on) for r in rows):
        print(f"  {name}: {given}" + (f"; trained on {trained}" if trained else ""))
    saved = save_evaluation(rows, out, model_name, checkpoint, conditions, world_size, plots, impairments)
    print("saved " + ", ".join(str(p) for p in saved))
