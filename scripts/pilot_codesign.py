"""Learned co-design of pilots: the same small AdaFortiTran trained on each pilot layout, each beside its own bound.

Trains a small AdaFortiTran (d 32, 2 layers, 2 heads; 151,554 parameters) with the true
SNR, delay spread and Doppler (``conditions="true"``) on frames simulated over the paper's
training ranges, once per pilot layout with the same steps, batch, learning rate and seed, then
evaluates each on the paper's three test sweeps (21 points) and at 300 ns / 1000 Hz / 20 dB,
beside LS-linear and the genie LMMSE on the same frames and the layout's own MMSE bound:

    python scripts/pilot_codesign.py --layouts block-12x2,lattice-4x6,docs/pilot-layout-24.json \
        --names block-12x2,lattice-4x6,optimised --steps 1500 --threads 2 --out runs/codesign

(42 min on a 2-core CPU; the README's table and ``docs/pilot-codesign-24.json`` come from it.)

Writes ``OUT/codesign.json`` and ``OUT/codesign.md`` (estimator, layout, MSE, bound, gap).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from wavefront.estimators import load_estimator
from wavefront.estimators.train import TrainConfig, train
from wavefront.sim.config import preset
from wavefront.sim.pilot_learn import CHANNEL, evaluate, markdown_table  # the same points and table
from wavefront.sim.pilots import apply_pilots

MODEL_OPTIONS = {"model_dim": 32, "num_layers": 2, "num_heads": 2}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layouts", default="block-12x2,lattice-4x6", help="comma list of presets or layout files")
    p.add_argument("--names", default=None, help="comma list of short names for the layouts (default: the specs)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--frames-per-point", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/codesign")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    specs = [s.strip() for s in args.layouts.split(",") if s.strip()]
    names = [n.strip() for n in args.names.split(",")] if args.names else specs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, runs = [], {}
    for spec, name in zip(specs, names):
        config = apply_pilots(preset("default").updated(channel=CHANNEL), spec)
        run_dir = out / f"run-{len(runs)}"
        t0 = time.perf_counter()
        summary = train(TrainConfig(model="adafortitran", model_overrides=MODEL_OPTIONS, steps=args.steps,
                                    batch_size=args.batch_size, lr=args.lr, eval_every=max(args.steps // 5, 1),
                                    val_frames=512, patience=0, seed=0, device="cpu", conditions="true",
                                    progress=False, out_dir=str(run_dir)), config)
        train_s = time.perf_counter() - t0
        est = load_estimator(str(run_dir / "best.safetensors"), config)
        rows += evaluate([est], config, name, args.frames_per_point, baselines=("ls-linear", "lmmse-genie"))
        runs[name] = {"layout": spec, "pilots": config.ofdm.pilot_layout.describe(), "train_seconds": round(train_s, 1),
                      "train": summary}
        print(f"{name}: trained {args.steps} steps in {train_s:.0f} s", flush=True)
    (out / "codesign.json").write_text(json.dumps({"runs": runs, "rows": rows, "steps": args.steps,
                                                   "batch_size": args.batch_size, "model": MODEL_OPTIONS,
                                                   "frames_per_point": args.frames_per_point}, indent=1))
    table = markdown_table(rows)
    (out / "codesign.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
