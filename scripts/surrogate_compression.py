"""Full vs a-priori compressed wave surrogate: test error at equal training budget.

Trains :class:`wavefront.imaging.compressed.WaveSurrogate` networks, one with full k x k
convolutions and one with compressed ones (``--rank``), on the same deepwave data: random
layered models with an inclusion, one Ricker shot each, snapshots every ``--stride`` steps.
Each predicts the next snapshot from the two previous ones. The error is the relative L2
error ``||u_pred - u_true|| / ||u_true||`` over a split of models neither saw.

Protocol (each model gets the same treatment):

1. ``--tune-lr`` rates (optional): each model trains on the first seed at every rate; its
   rate is the one with the lowest *validation* error. Without it, ``--lr-full`` and
   ``--lr-compressed`` are used as given.
2. Each model trains on every seed at its rate and is scored on the *test* split, which
   played no part in choosing anything.

Prints a table and the verdict against the target: compressed test error within 10 % of the
full one, with at least 5x fewer conv parameters. Writes ``surrogate.json`` under ``--out``.

    python scripts/surrogate_compression.py --out runs/surrogate --jobs 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm import tqdm

from wavefront.imaging.compressed import WaveSurrogate, conv_param_count
from wavefront.imaging.wave import Region, flush_denormals, random_layered_model, record_region, ricker

V_SCALE = 3000.0  # m/s; velocities enter the network as v / V_SCALE
DX_M, DT_S, FREQ_HZ = 10.0, 0.001, 15.0
TARGET_ERROR_RATIO, TARGET_PARAM_RATIO = 1.10, 5.0
SPLIT_SEEDS = {"train": 1000, "val": 2000, "test": 3000}


def make_data(num_models: int, seed: int, size: int, nt: int, stride: int, dx_m: float, dt_s: float, freq_hz: float):
    """Returns (u_prev, u_now, u_next, v) triplets, each [N, size, size] float32 (field in solver units)."""
    g = torch.Generator().manual_seed(seed)
    wavelet = ricker(freq_hz, nt, dt_s).reshape(1, 1, -1)
    triplets = []
    for _ in range(num_models):
        v = random_layered_model((size, size), g, num_layers=3, v_range=(1500.0, 3500.0))
        loc = torch.randint(4, size - 4, (1, 1, 2), generator=g)
        field = record_region(v, dx_m, dt_s, wavelet, loc, Region(0, size, 0, size), pml_width=10, freq_hz=freq_hz)[0]
        snaps = field[stride - 1::stride]  # [T, size, size]
        # Skip the first snapshots, where the source is still injecting (not a free wave).
        start = int(2 * 1.5 / freq_hz / dt_s / stride)
        snaps = snaps[start:]
        vv = (v / V_SCALE).expand(len(snaps) - 2, -1, -1)
        triplets.append((snaps[:-2], snaps[1:-1], snaps[2:], vv))
    return [torch.cat(parts) for parts in zip(*triplets)]


def rel_l2(model, data, scale) -> float:
    """Returns ||pred - u_next|| / ||u_next|| over ``data``; ``model=None`` is linear extrapolation."""
    u0, u1, u2, v = data
    with torch.no_grad():
        pred = model(u0 / scale, u1 / scale, v) * scale if model is not None else 2 * u1 - u0
    return float((pred - u2).norm() / u2.norm())


def train(model, train_data, scale, steps, batch, lr, seed):
    """Adam with a one-cycle schedule peaking at ``lr``; mean squared error on scaled fields."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    u0, u1, u2, v = (t / scale if i < 3 else t for i, t in enumerate(train_data))
    for _ in range(steps):
        idx = torch.randint(0, len(u0), (batch,), generator=g)
        loss = ((model(u0[idx], u1[idx], v[idx]) - u2[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model


_DATA: dict = {}  # set in the parent before the pool forks, read by the workers


def _run(job: dict) -> dict:
    """Trains one (model, rate, seed) job on ``_DATA`` and returns its errors."""
    torch.set_num_threads(_DATA["threads"])
    with flush_denormals():
        torch.manual_seed(job["seed"])
        a = _DATA["args"]
        model = WaveSurrogate(a["channels"], a["layers"], a["kernel"], job["rank"])
        t0 = time.time()
        train(model, _DATA["train"], _DATA["scale"], a["steps"], a["batch"], job["lr"], job["seed"])
        return job | {"val_rel_l2": rel_l2(model, _DATA["val"], _DATA["scale"]),
                      "test_rel_l2": rel_l2(model, _DATA["test"], _DATA["scale"]),
                      "conv_params": conv_param_count(model), "train_s": round(time.time() - t0, 1)}


def _run_all(jobs: list[dict], workers: int, desc: str) -> list[dict]:
    if workers <= 1:
        return [_run(j) for j in tqdm(jobs, desc=desc)]
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        return list(tqdm(pool.map(_run, jobs), total=len(jobs), desc=desc))


def main(argv=None) -> int:
    # Subnormal floats (wave fronts, PML) are ~100x slower on x86: flush them for the whole run.
    with flush_denormals():
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
    args = p.parse_args(argv)
    if len(args.rank) not in (1, args.layers):
        p.error(f"--rank takes one value or one per layer ({args.layers}), got {len(args.rank)}")
    rank = args.rank[0] if len(args.rank) == 1 else tuple(args.rank)
    torch.set_num_threads(args.threads)

    t0 = time.time()
    data = {name: make_data(args.train_models if name == "train" else args.val_models, seed, args.size, args.nt,
                            args.stride, DX_M, DT_S, FREQ_HZ) for name, seed in SPLIT_SEEDS.items()}
    scale = float(data["train"][1].std())
    print(f"data: {len(data['train'][0])} train / {len(data['val'][0])} val / {len(data['test'][0])} test "
          f"triplets in {time.time() - t0:.1f} s")
    _DATA.update(data, scale=scale, threads=args.threads, args=vars(args))

    models = {"full": None, "compressed": rank}
    lrs = {"full": args.lr_full, "compressed": args.lr_compressed}
    results = {"config": vars(args) | {"out": str(args.out)},
               "linear_extrapolation_test_rel_l2": rel_l2(None, data["test"], scale)}
    if args.tune_lr:
        jobs = [{"model": m, "rank": r, "lr": lr, "seed": args.seeds[0]} for m, r in models.items() for lr in args.tune_lr]
        tuning = _run_all(jobs, args.jobs, "tune lr")
        for m in models:
            rows = [t for t in tuning if t["model"] == m]
            lrs[m] = min(rows, key=lambda t: t["val_rel_l2"])["lr"]
            print(f"{m:10s} val error by lr: " + ", ".join(f"{t['lr']:g}: {t['val_rel_l2']:.4f}" for t in rows)
                  + f" -> lr {lrs[m]:g}")
        results["tuning"] = tuning
    jobs = [{"model": m, "rank": r, "lr": lrs[m], "seed": s} for s in args.seeds for m, r in models.items()]
    runs = _run_all(jobs, args.jobs, "train")
    results["runs"] = runs

    test = {m: [r["test_rel_l2"] for r in runs if r["model"] == m] for m in models}
    params = {m: next(r["conv_params"] for r in runs if r["model"] == m) for m in models}
    print(f"\n{'seed':>6} {'full':>10} {'compressed':>11} {'ratio':>7}   (test relative L2 error)")
    for s, f, c in zip(args.seeds, test["full"], test["compressed"]):
        print(f"{s:>6} {f:>10.4f} {c:>11.4f} {c / f:>7.3f}")
    mean = {m: statistics.fmean(v) for m, v in test.items()}
    spread = {m: statistics.stdev(v) if len(v) > 1 else 0.0 for m, v in test.items()}
    error_ratio, param_ratio = mean["compressed"] / mean["full"], params["full"] / params["compressed"]
    print(f"{'mean':>6} {mean['full']:>10.4f} {mean['compressed']:>11.4f} {error_ratio:>7.3f}"
          f"   (std {spread['full']:.4f} / {spread['compressed']:.4f}; "
          f"linear extrapolation {results['linear_extrapolation_test_rel_l2']:.4f})")
    holds = error_ratio <= TARGET_ERROR_RATIO and param_ratio >= TARGET_PARAM_RATIO
    print(f"conv parameters: full {params['full']}, compressed {params['compressed']} ({param_ratio:.2f}x fewer); "
          f"lr full {lrs['full']:g}, compressed {lrs['compressed']:g}")
    print(f"target (error <= {TARGET_ERROR_RATIO:.2f}x at >= {TARGET_PARAM_RATIO:g}x fewer): "
          f"{'holds' if holds else 'does NOT hold'}")
    results["summary"] = {"full_mean": mean["full"], "compressed_mean": mean["compressed"],
                          "full_std": spread["full"], "compressed_std": spread["compressed"],
                          "error_ratio_of_means": error_ratio, "param_ratio": param_ratio,
                          "lr": lrs, "target_holds": holds}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "surrogate.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'surrogate.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
