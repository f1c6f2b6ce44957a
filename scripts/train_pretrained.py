"""Recipe of the shipped checkpoint ``estimators/pretrained/adafortitran-default.safetensors``.

Trains a small AdaFortiTran (the paper's architecture: 3x2 patches, conv enhancers, condition
tokens; narrower: d 32, 2 layers, 2 heads) on the ``default`` grid (120 x 14, 12 x 2 pilots)
on frames simulated on the fly over the paper's training ranges (SNR 0-25 dB, delay spread
25-300 ns, Doppler 50-1000 Hz, TDL-A), then writes the weights-only checkpoint and a JSON
sidecar with the budget, the device and the final validation MSE against LS-linear.

The number of steps is fitted to a wall-clock budget from a short timing run, so the cosine
schedule completes within it:

    python scripts/train_pretrained.py --budget-min 25 --device cpu
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from wavefront import paper
from wavefront.estimators.checkpoint import export
from wavefront.estimators.train import TrainConfig, default_warmup, train
from wavefront.sim.config import SystemConfig, preset

MODEL_OPTIONS = {"model_dim": 32, "num_layers": 2, "num_heads": 2}
CHANNEL = {**{k: list(v) for k, v in paper.TRAIN_RANGES.items()}, "profile": "A"}
REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-min", type=float, default=25.0, help="wall-clock training budget [min]")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--steps", type=int, help="schedule length (default: fitted to the budget by a timing run)")
    p.add_argument("--out", default="runs/pretrained-adafortitran")
    p.add_argument("--dest", default=str(REPO / "estimators" / "pretrained" / "adafortitran-default.safetensors"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    base = preset("default")
    config = SystemConfig.from_dict({"ofdm": base.ofdm.model_dump(), "channel": CHANNEL})
    common = dict(model="adafortitran", model_overrides=MODEL_OPTIONS, batch_size=args.batch_size, lr=args.lr,
                  device=args.device, val_frames=1024, progress=False, seed=0)

    # Timing runs of 2 and 8 steps: their difference is the cost of a step without the set-up,
    # which fits the schedule length to the budget (10% kept for validation passes).
    spent = []
    for n in (2, 8) if args.steps is None else ():
        t = time.perf_counter()
        train(TrainConfig(steps=n, eval_every=1000, warmup_steps=1, out_dir=f"{args.out}-timing{n}", **common), config)
        spent.append(time.perf_counter() - t)
    eval_every = 100
    if args.steps is None:
        sec_per_step = max((spent[1] - spent[0]) / 6, 1e-3)
        steps = max(100, int(args.budget_min * 60 * 0.9 / sec_per_step) // eval_every * eval_every)
        print(f"{sec_per_step:.2f} s/step -> {steps} steps")
    else:
        steps = args.steps

    t = time.perf_counter()
    # The machine is shared, so the step time drifts; the time limit keeps the budget either way.
    result = train(TrainConfig(steps=steps, eval_every=eval_every, warmup_steps=default_warmup(steps), patience=0,
                               time_limit_min=args.budget_min, out_dir=args.out, **common), config)
    minutes = (time.perf_counter() - t) / 60
    dest = export(Path(args.out) / "best.safetensors", args.dest)
    card = {
        "model": "adafortitran", "model_options": MODEL_OPTIONS, "system_config": json.loads(config.to_json()),
        "recipe": "scripts/train_pretrained.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                               if k not in ("out", "dest") and v is not None),
        "device": f"{args.device} ({platform.processor() or platform.machine()}, {args.threads} torch thread(s), shared 2-core machine)",
        "torch": torch.__version__, "steps": result["step"], "scheduled_steps": steps, "stopped": result["stopped"], "batch_size": args.batch_size,
        "frames_seen": result["step"] * args.batch_size, "train_minutes": round(minutes, 1),
        "val_frames": 1024, "val_conditions": CHANNEL,
        "val_mse_db": round(result["best_val_mse_db"], 2),
        "val_ls_linear_mse_db": round(result["val_ls_linear_db"], 2) if result["val_ls_linear_db"] else None,
        "parameters": result["parameters"], "file_bytes": dest.stat().st_size,
    }
    dest.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
