"""Full vs a-priori compressed wave surrogate: test error at equal training budget.

Trains :class:`wavefront.imaging.compressed.WaveSurrogate` networks, one with full k x k
convolutions and one with compressed ones (``--rank``), on the same deepwave data: random
layered models with an inclusion, one Ricker shot each, snapshots every ``--stride`` steps.
Each predicts the next snapshot from the two previous ones. The error is the relative L2
error ``||u_pred - u_true|| / ||u_true||`` over a split of models neither saw, reported two
ways: one-step (teacher forced: true inputs every step) and after h steps of rollout on the
network's own predictions (``--horizons``), which is how a surrogate is used.

Protocol (each model gets the same treatment):

1. ``--tune-lr`` rates (optional): each model trains on the first seed at every rate; its
   rate is the one with the lowest *validation* error. Without it, ``--lr-full`` and
   ``--lr-compressed`` are used as given.
2. Each model trains on every seed at its rate and is scored on the *test* split, which
   played no part in choosing anything.
3. ``--split-seeds``: the whole protocol (after tuning) repeats on fresh draws of the
   models; the test error moves more between draws than between seeds, so the comparison
   is paired per (draw, seed).

Prints per-split tables and the verdict against the target: the 95 % interval of the
paired compressed / full error ratio below 1.10, with at least 5x fewer conv parameters.
The compressed network is also scored on its separable path (same function, same error).
Writes ``surrogate.json`` under ``--out``.

    python scripts/surrogate_compression.py --out runs/surrogate --split-seeds 0 1 2 --seeds 0 1
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm import tqdm

from wavefront.imaging.codesign import paired_difference
from wavefront.imaging.compressed import WaveSurrogate, conv_param_count
from wavefront.imaging.surrogate import (
    DT_S, DX_M, FREQ_HZ, SPLIT_SEEDS, TARGET_ERROR_RATIO, TARGET_PARAM_RATIO, make_sequences, rel_l2, rollout_rel_l2,
    separable_path, snapshots_kept, train, triplets,
)
from wavefront.imaging.wave import cpu_flush_to_zero

_DATA: dict = {}  # set in the parent before the pool forks, read by the workers


def _run(job: dict) -> dict:
    """Trains one (model, rate, seed) job on ``_DATA`` and returns its errors."""
    torch.set_num_threads(_DATA["threads"])
    with cpu_flush_to_zero():
        torch.manual_seed(job["seed"])
        a = _DATA["args"]
        model = WaveSurrogate(a["channels"], a["layers"], a["kernel"], job["rank"])
        t0 = time.time()
        train(model, _DATA["train"], _DATA["scale"], a["steps"], a["batch"], job["lr"], job["seed"])
        res = job | {"val_rel_l2": rel_l2(model, _DATA["val"], _DATA["scale"]),
                     "test_rel_l2": rel_l2(model, _DATA["test"], _DATA["scale"]),
                     "test_rollout_rel_l2": rollout_rel_l2(model, _DATA["test_seqs"], _DATA["scale"], a["horizons"]),
                     "conv_params": conv_param_count(model), "train_s": round(time.time() - t0, 1)}
        if job["rank"] is not None:  # the same network run on k x 1, 1 x k, 1 x 1 convolutions
            res["test_rel_l2_separable"] = rel_l2(separable_path(model), _DATA["test"], _DATA["scale"])
        return res


def _run_all(jobs: list[dict], workers: int, desc: str) -> list[dict]:
    if workers <= 1:
        return [_run(j) for j in tqdm(jobs, desc=desc)]
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        return list(tqdm(pool.map(_run, jobs), total=len(jobs), desc=desc))


def main(argv=None) -> int:
    # A cheap guard: torch arithmetic on subnormal floats runs ~3x slower on x86 (wave.cpu_flush_to_zero).
    with cpu_flush_to_zero():
        return _main(argv)


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/surrogate"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--train-models", type=int, default=40)
    p.add_argument("--val-models", type=int, default=10, help="models in the validation split and in the test split")
    p.add_argument("--nt", type=int, default=400)
    p.add_argument("--stride", type=int, default=4)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--channels", type=int, default=24)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--kernel", type=int, default=5)
    p.add_argument("--rank", type=int, nargs="+", default=[9, 4, 4, 9],
                   help="rank of every compressed layer, or one per layer; the 3->C and C->1 layers are cheap, "
                        "so they get more")
    p.add_argument("--lr-full", type=float, default=3e-3, help="peak learning rate of the full model")
    p.add_argument("--lr-compressed", type=float, default=3e-2, help="peak learning rate of the compressed model")
    p.add_argument("--tune-lr", type=float, nargs="+", default=None, metavar="LR",
                   help="pick each model's rate from these on the first seed, by validation error")
    p.add_argument("--jobs", type=int, default=1, help="trainings run in parallel processes")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads per training; 1 is right for these small nets, and on a shared machine")
    p.add_argument("--split-seeds", type=int, nargs="+", default=[0],
                   help="data draws: each is a fresh set of train/val/test models, and every seed trains on each")
    p.add_argument("--horizons", type=int, nargs="+", default=[1, 5, 10, 20, 40],
                   help="rollout lengths (coarse steps) at which the test error is reported")
    args = p.parse_args(argv)
    if len(args.rank) not in (1, args.layers):
        p.error(f"--rank takes one value or one per layer ({args.layers}), got {len(args.rank)}")
    for name in ("size", "train_models", "val_models", "nt", "stride", "steps", "batch", "channels", "layers", "kernel",
                 "jobs", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)}: must be >= 1")
    if args.size < 9:  # the source sits at least 4 cells inside every edge
        p.error(f"--size={args.size}: must be >= 9 (the source sits 4 cells inside each edge)")
    kept = snapshots_kept(args.nt, args.stride, DT_S, FREQ_HZ)
    if kept < 3:  # one (previous, now, next) triplet at least; the first snapshots, while the source fires, are dropped
        need = args.stride * (args.nt // args.stride - kept + 3)
        p.error(f"--nt={args.nt}: keeps {max(kept, 0)} snapshots (every {args.stride}th step once the source has "
                f"stopped); a (previous, now, next) triplet needs 3: give --nt >= {need}")
    if min(args.horizons) < 1 or min(args.horizons) > kept - 2:
        p.error(f"--horizons={args.horizons}: must be >= 1, and one at most {kept - 2} (the snapshots after the "
                f"first two at --nt {args.nt}; larger ones are skipped)")
    rank = args.rank[0] if len(args.rank) == 1 else tuple(args.rank)
    torch.set_num_threads(args.threads)

    results = {"config": vars(args) | {"out": str(args.out)}, "splits": []}
    models = {"full": None, "compressed": rank}
    lrs = {"full": args.lr_full, "compressed": args.lr_compressed}
    for split in args.split_seeds:
        t0 = time.time()
        # Split 0 is the original draw; split s shifts every split's seed by 100 s: fresh models.
        seqs = {name: make_sequences(args.train_models if name == "train" else args.val_models, seed + 100 * split,
                                     args.size, args.nt, args.stride, DX_M, DT_S, FREQ_HZ)
                for name, seed in SPLIT_SEEDS.items()}
        data = {name: triplets(sq) for name, sq in seqs.items()}
        scale = float(data["train"][1].std())
        print(f"split {split}: {len(data['train'][0])} train / {len(data['val'][0])} val / {len(data['test'][0])} "
              f"test triplets in {time.time() - t0:.1f} s")
        _DATA.clear()
        _DATA.update(data, test_seqs=seqs["test"], scale=scale, threads=args.threads, args=vars(args))
        res = {"split_seed": split, "linear_extrapolation_test_rel_l2": rel_l2(None, data["test"], scale),
               "linear_extrapolation_test_rollout_rel_l2": rollout_rel_l2(None, seqs["test"], scale, args.horizons)}
        if args.tune_lr and split == args.split_seeds[0]:
            jobs = [{"model": m, "rank": r, "lr": lr, "seed": args.seeds[0]} for m, r in models.items()
                    for lr in args.tune_lr]
            tuning = _run_all(jobs, args.jobs, "tune lr")
            for m in models:
                rows = [t for t in tuning if t["model"] == m]
                lrs[m] = min(rows, key=lambda t: t["val_rel_l2"])["lr"]
                print(f"{m:10s} val error by lr: " + ", ".join(f"{t['lr']:g}: {t['val_rel_l2']:.4f}" for t in rows)
                      + f" -> lr {lrs[m]:g}")
            results["tuning"] = tuning
        jobs = [{"model": m, "rank": r, "lr": lrs[m], "seed": s, "split_seed": split}
                for s in args.seeds for m, r in models.items()]
        res["runs"] = _run_all(jobs, args.jobs, f"train (split {split})")
        results["splits"].append(res)
        _print_split(res, args.seeds)

    runs = [r for sp in results["splits"] for r in sp["runs"]]
    results["runs"] = runs
    params = {m: next(r["conv_params"] for r in runs if r["model"] == m) for m in models}
    test = {m: [r["test_rel_l2"] for r in runs if r["model"] == m] for m in models}
    mean = {m: statistics.fmean(v) for m, v in test.items()}
    spread = {m: statistics.stdev(v) if len(v) > 1 else 0.0 for m, v in test.items()}
    error_ratio, param_ratio = mean["compressed"] / mean["full"], params["full"] / params["compressed"]
    # Paired over (split, seed): both networks saw the same data and seed.
    ratios = [c / f for f, c in zip(test["full"], test["compressed"])]
    log_ratio = paired_difference([math.log(c) for c in test["compressed"]], [math.log(f) for f in test["full"]])
    ratio_ci = [math.exp(x) for x in log_ratio["ci95"]] if log_ratio["n"] > 1 else [ratios[0], ratios[0]]
    holds = ratio_ci[1] <= TARGET_ERROR_RATIO and param_ratio >= TARGET_PARAM_RATIO
    print(f"\nall splits and seeds (n = {len(ratios)}): full {mean['full']:.4f} +- {spread['full']:.4f}, compressed "
          f"{mean['compressed']:.4f} +- {spread['compressed']:.4f}; compressed / full per pair: geometric mean "
          f"{math.exp(log_ratio['mean']):.3f}, 95 % interval [{ratio_ci[0]:.3f}, {ratio_ci[1]:.3f}]")
    print(f"conv parameters: full {params['full']}, compressed {params['compressed']} ({param_ratio:.2f}x fewer); "
          f"lr full {lrs['full']:g}, compressed {lrs['compressed']:g}")
    print(f"target (error ratio <= {TARGET_ERROR_RATIO:.2f}x over the whole interval, >= {TARGET_PARAM_RATIO:g}x "
          f"fewer parameters): {'holds' if holds else 'does NOT hold'}")
    results["summary"] = {"full_mean": mean["full"], "compressed_mean": mean["compressed"],
                          "full_std": spread["full"], "compressed_std": spread["compressed"],
                          "error_ratio_of_means": error_ratio, "pair_ratio_geomean": math.exp(log_ratio["mean"]),
                          "pair_ratio_ci95": ratio_ci, "param_ratio": param_ratio, "lr": lrs, "target_holds": holds}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "surrogate.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'surrogate.json'}")
    return 0


def _print_split(res: dict, seeds: list[int]) -> None:
    runs = {(r["model"], r["seed"]): r for r in res["runs"]}
    horizons = list(res["linear_extrapolation_test_rollout_rel_l2"])
    print(f"\n{'seed':>6} {'model':>11} {'one-step':>9} " + " ".join(f"{'roll ' + h:>8}" for h in horizons)
          + "   (test relative L2 error; roll h: after h steps on its own predictions)")
    for s in seeds:
        for m in ("full", "compressed"):
            r = runs[(m, s)]
            extra = f"   separable path: {r['test_rel_l2_separable']:.4f}" if "test_rel_l2_separable" in r else ""
            print(f"{s:>6} {m:>11} {r['test_rel_l2']:>9.4f} "
                  + " ".join(f"{r['test_rollout_rel_l2'][h]:>8.4f}" for h in horizons) + extra)
    print(f"{'':>6} {'linear':>11} {res['linear_extrapolation_test_rel_l2']:>9.4f} "
          + " ".join(f"{res['linear_extrapolation_test_rollout_rel_l2'][h]:>8.4f}" for h in horizons))


if __name__ == "__main__":
    raise SystemExit(main())
