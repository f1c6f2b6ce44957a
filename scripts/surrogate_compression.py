"""Full vs a-priori compressed wave surrogate: validation error and conv parameter counts.

Trains two :class:`wavefront.imaging.compressed.WaveSurrogate` networks on the same deepwave
data (random layered models with an inclusion, one Ricker shot each, snapshots every
``--stride`` steps) to predict the next snapshot from the two previous ones, and reports
the validation relative L2 error ``||u_pred - u_true|| / ||u_true||`` of each, plus that of
plain linear extrapolation in time (the network's starting point).

    python scripts/surrogate_compression.py --out runs/surrogate --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from wavefront.imaging.compressed import WaveSurrogate, conv_param_count
from wavefront.imaging.wave import Region, flush_denormals, random_layered_model, record_region, ricker

V_SCALE = 3000.0  # m/s; velocities enter the network as v / V_SCALE


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
    u0, u1, u2, v = data
    with torch.no_grad():
        pred = model(u0 / scale, u1 / scale, v) * scale if model is not None else 2 * u1 - u0
    return float((pred - u2).norm() / u2.norm())


def train(model, train_data, val_data, scale, steps, batch, lr, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    u0, u1, u2, v = (t / scale if i < 3 else t for i, t in enumerate(train_data))
    for step in range(steps):
        idx = torch.randint(0, len(u0), (batch,), generator=g)
        loss = ((model(u0[idx], u1[idx], v[idx]) - u2[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return rel_l2(model, val_data, scale)


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
    p.add_argument("--val-models", type=int, default=10)
    p.add_argument("--nt", type=int, default=400)
    p.add_argument("--stride", type=int, default=4)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lr-full", type=float, default=None, help="peak learning rate of the full model (default: --lr)")
    p.add_argument("--lr-compressed", type=float, default=None,
                   help="peak learning rate of the compressed model (default: --lr); the factorised layers "
                        "train best at a higher rate than full kernels, so each model gets its own")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--kernel", type=int, default=5)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads; use 1 on a shared machine, where OpenMP barriers stall when a core is taken")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dx, dt, f = 10.0, 0.001, 15.0
    t0 = time.time()
    train_data = make_data(args.train_models, 1000, args.size, args.nt, args.stride, dx, dt, f)
    val_data = make_data(args.val_models, 2000, args.size, args.nt, args.stride, dx, dt, f)
    scale = float(train_data[1].std())
    print(f"data: {len(train_data[0])} train / {len(val_data[0])} val triplets in {time.time() - t0:.1f} s")
    results = {"config": vars(args) | {"out": str(args.out)}, "linear_extrapolation_rel_l2": rel_l2(None, val_data, scale), "runs": []}
    for seed in args.seeds:
        row = {"seed": seed}
        lrs = {"full": args.lr_full or args.lr, "compressed": args.lr_compressed or args.lr}
        for name, rank in (("full", None), ("compressed", args.rank)):
            torch.manual_seed(seed)
            model = WaveSurrogate(args.channels, 4, args.kernel, rank)
            t1 = time.time()
            row[name] = {"val_rel_l2": train(model, train_data, val_data, scale, args.steps, args.batch, lrs[name], seed),
                         "lr": lrs[name],
                         "conv_params": conv_param_count(model), "train_s": round(time.time() - t1, 1)}
        row["error_ratio"] = row["compressed"]["val_rel_l2"] / row["full"]["val_rel_l2"]
        print(json.dumps(row))
        results["runs"].append(row)
    full = [r["full"]["val_rel_l2"] for r in results["runs"]]
    comp = [r["compressed"]["val_rel_l2"] for r in results["runs"]]
    results["summary"] = {
        "full_mean": sum(full) / len(full), "compressed_mean": sum(comp) / len(comp),
        "error_ratio_of_means": (sum(comp) / len(comp)) / (sum(full) / len(full)),
        "param_ratio": results["runs"][0]["full"]["conv_params"] / results["runs"][0]["compressed"]["conv_params"],
    }
    print(json.dumps(results["summary"]), f"linear extrapolation: {results['linear_extrapolation_rel_l2']:.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "surrogate.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
