"""Learned pilot positions: the command behind :mod:`wavefront.sim.pilot_learn` (see its docstring).

    python scripts/pilot_learn.py --init block-12x2,lattice-4x6 --steps 3000 --out runs/pilot-learn

(5.4 min with one thread on a 2-core CPU: 3000 joint + 500 fine-tune steps of 128 frames per init,
the same on the fixed init, 1000 test frames per point.)

Writes ``OUT/layout.json`` (the learned layout of the first init; ``OUT/layout-<init>.json`` for
each), ``OUT/layout.png``, ``OUT/pilot_learn.json`` and ``OUT/pilot_learn.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

from wavefront import paper
from wavefront.errors import ConfigError
from wavefront.sim.config import preset
from wavefront.sim.pilot_learn import (
    CHANNEL, HEADLINE, ComplexLinear, LinearEstimator, PilotPositions, closed_form_bounds, evaluate, fit_linear,
    markdown_table, plot_layouts, round_positions, train,
)
from wavefront.sim.pilots import PilotLayout, apply_pilots, write_layout_file


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", default="block-12x2",
                   help="comma list of layouts to start from (presets or layout files), e.g. block-12x2,lattice-4x6")
    p.add_argument("--steps", type=int, default=3000, help="joint steps (estimator and positions)")
    p.add_argument("--finetune-steps", type=int, default=500, help="estimator steps on the rounded layout")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-2, help="estimator peak learning rate (Adam, cosine decay)")
    p.add_argument("--pos-lr", type=float, default=1e-2, help="positions' peak learning rate, grid-normalised units")
    p.add_argument("--finetune-lr", type=float, default=2e-3)
    p.add_argument("--frames-per-point", type=int, default=1000)
    p.add_argument("--fit-frames", type=int, default=20000,
                   help="frames for the closed-form linear fit on each layout (0: skip it)")
    p.add_argument("--reference", default="docs/pilot-layout-24.json",
                   help="a layout file whose bound is reported beside the learned one ('' for none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/pilot-learn")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "frames_per_point", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    for name in ("finetune_steps", "fit_frames"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("lr", "pos_lr", "finetune_lr"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            p.error(f"--{name.replace('_', '-')} must be a positive number, got {v}")
    args.inits = [s.strip() for s in args.init.split(",") if s.strip()]
    if not args.inits:
        p.error("--init names no layout")
    base = preset("default").updated(channel=CHANNEL)
    for spec in args.inits + ([args.reference] if args.reference else []):
        try:
            apply_pilots(base, spec)
        except (ConfigError, OSError, ValueError) as exc:
            p.error(f"layout {spec!r}: {exc}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = preset("default").updated(channel=CHANNEL)
    grid = tuple(base.ofdm.grid_shape)
    conditions = paper.points() + [HEADLINE]
    rows, runs, panels = [], {}, []
    t_start = time.perf_counter()
    for spec in args.inits:
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(spec).stem if spec.endswith(".json") else spec)
        init_cfg = apply_pilots(base, spec)
        init_layout = init_cfg.ofdm.pilot_layout
        P = init_layout.num_pilots
        init_pos = np.asarray(init_layout.positions, dtype=np.float64)

        # 1. joint training, 2. rounding, 3. fine-tuning on the rounded layout
        t0 = time.perf_counter()
        model = ComplexLinear(P, grid)
        positions = PilotPositions(init_pos, grid)
        log = train(base, model, positions, args.steps, args.batch_size, args.lr, args.pos_lr, args.seed, True,
                    desc=f"{tag}: joint")
        learned = positions().detach().numpy()
        rounded = round_positions(learned, grid)
        layout = PilotLayout.from_positions(rounded, grid)
        order = [rounded.index(p) for p in layout.positions]  # model columns -> layout's position order
        model.permuted(order)
        fixed = PilotPositions(np.asarray(layout.positions, dtype=np.float64), grid)
        log_ft = train(base, model, fixed, args.finetune_steps, args.batch_size, args.finetune_lr, 0.0, args.seed + 1,
                       False, desc=f"{tag}: fine-tune") if args.finetune_steps else []
        train_s = time.perf_counter() - t0
        learned_cfg = base.updated(ofdm={"pilot_positions": layout.positions})
        write_layout_file(out / f"layout-{tag}.json", layout, num_pilots=P, grid=list(grid), init=spec,
                          continuous_positions=np.round(learned, 4).tolist(), steps=args.steps)
        if spec == args.inits[0]:
            write_layout_file(out / "layout.json", layout, num_pilots=P, grid=list(grid), init=spec,
                              continuous_positions=np.round(learned, 4).tolist(), steps=args.steps)

        # the same estimator, steps, frames and schedule on the fixed init layout
        t1 = time.perf_counter()
        base_model = ComplexLinear(P, grid)
        init_positions = PilotPositions(init_pos, grid)
        log_fixed = train(base, base_model, init_positions, args.steps, args.batch_size, args.lr, 0.0, args.seed, False,
                          desc=f"{tag}: fixed")
        log_fixed_ft = train(base, base_model, init_positions, args.finetune_steps, args.batch_size, args.finetune_lr,
                             0.0, args.seed + 1, False, desc=f"{tag}: fixed fine-tune") if args.finetune_steps else []
        fixed_s = time.perf_counter() - t1

        t2 = time.perf_counter()
        learned_name, init_name = f"learned from {spec}", f"{spec} (fixed)"
        mine = [LinearEstimator("linear (joint)", model, layout, learned_name)]
        theirs = [LinearEstimator("linear (fixed)", base_model, init_layout, init_name)]
        if args.fit_frames:
            mine.append(LinearEstimator("linear (closed-form fit)", fit_linear(base, layout, args.fit_frames, 500,
                                                                               args.seed + 2), layout, learned_name))
            theirs.append(LinearEstimator("linear (closed-form fit)", fit_linear(base, init_layout, args.fit_frames, 500,
                                                                                 args.seed + 2), init_layout, init_name))
        rows += evaluate(mine, learned_cfg, learned_name, args.frames_per_point)
        rows += evaluate(theirs, init_cfg, init_name, args.frames_per_point)
        eval_s = time.perf_counter() - t2
        moved = np.abs(learned - init_pos)
        runs[spec] = {
            "init": {"positions": [list(p) for p in init_layout.positions], "describe": init_layout.describe(),
                     **closed_form_bounds(init_cfg, conditions)},
            "learned": {"positions": [list(p) for p in layout.positions], "describe": layout.describe(),
                        "continuous_positions": np.round(learned, 4).tolist(),
                        "symbols_used": sorted(set(int(t) for _, t in layout.positions)),
                        "mean_move_subcarriers": round(float(moved[:, 0].mean()), 3),
                        "mean_move_symbols": round(float(moved[:, 1].mean()), 3),
                        "rounding_distance_mean": round(float(np.linalg.norm(learned - np.asarray(rounded), axis=1).mean()), 4),
                        **closed_form_bounds(learned_cfg, conditions)},
            "train_log": log, "finetune_log": log_ft, "fixed_train_log": log_fixed, "fixed_finetune_log": log_fixed_ft,
            "seconds": {"joint_and_finetune": round(train_s, 1), "fixed": round(fixed_s, 1), "evaluation": round(eval_s, 1)},
        }
        panels.append((f"init {spec} -> learned\n{layout.describe()}", init_pos, learned, rounded))
        print(f"{spec}: learned layout {layout.describe()}, symbols {runs[spec]['learned']['symbols_used']}; "
              f"train {train_s:.0f} s, fixed {fixed_s:.0f} s, evaluation {eval_s:.0f} s", flush=True)
    reference = None
    if args.reference:
        ref_cfg = apply_pilots(base, args.reference)
        reference = {"layout": args.reference, "describe": ref_cfg.ofdm.pilot_layout.describe(),
                     **closed_form_bounds(ref_cfg, conditions)}
    plot_layouts(out / "layout.png", grid, panels)
    wall = time.perf_counter() - t_start
    table = markdown_table(rows)
    ref_line = ""
    if reference:
        ref_line = (f"\nReference layout {reference['layout']} ({reference['describe']}): bound "
                    f"{reference['bound_db_300ns_1000hz_20db']:.2f} dB at 300 ns / 1000 Hz / 20 dB, "
                    f"{reference['bound_db_suite_mean']:.2f} dB suite mean.\n")
    (out / "pilot_learn.json").write_text(json.dumps({
        "args": {k: v for k, v in vars(args).items() if k != "inits"}, "channel": CHANNEL, "rows": rows, "runs": runs,
        "reference": reference, "wall_seconds": round(wall, 1)}, indent=1) + "\n")
    (out / "pilot_learn.md").write_text(table + "\n" + ref_line)
    print(table)
    print(ref_line, end="")
    print(f"wall time {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
