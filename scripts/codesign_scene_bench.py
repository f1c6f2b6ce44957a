"""Receiver placement on procedurally generated scenes: learned (swap search) against regular, random and greedy.

Per seed, one 80 x 100 model at dx = 10 m (OpenFWI-like "layered + faulted" family): four
layers, 1500-4000 m/s increasing with depth, interfaces with a random dip (up to 1 cell in 4),
cut by one fault at a random column with a random throw of 3-10 cells; a candidate mask of a
surface line (row 0, every column, edge to edge) plus a deviated borehole at a random column;
K = 6, min spacing 3 cells; 15 Hz Ricker, dt = 2 ms (sub-stepped), nt = 600. Two tasks:

- ``sensitivity``: three surface shots at random columns; a +-400 m/s disc of radius 3 cells
  at a random place below row 20 (slow only where it stays >= 1500 m/s);
- ``localisation``: four sources at random cells of a patch at rows 40-70, to be told apart.

The loss is evaluated on the recording the layout was chosen on: this is experimental design
on a known model, not a learned estimator, so there is no held-out split. Every arm of a seed
sees the same recording. Paired differences learned - baseline are given with 95 % Student-t
intervals over the seeds (``codesign.paired_difference``).

    python scripts/codesign_scene_bench.py --seeds 0 1 2 3 4 --threads 1 --json runs/codesign_scene_bench.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from wavefront.imaging.codesign import paired_difference
from wavefront.imaging.placement import BASELINES, BUILTIN_LOSSES, LayoutLoss, mask_cells, select_receivers
from wavefront.imaging.scene import record_cells
from wavefront.imaging.wave import add_inclusion

NY, NX, DX, DT, NT, FREQ = 80, 100, 10.0, 0.002, 600, 15.0


def faulted_model(g: torch.Generator) -> torch.Tensor:
    """Returns a layered, dipping, faulted model [80, 100] float32 (m/s)."""
    u = torch.rand(12, generator=g).tolist()
    tops = sorted([12 + 50 * x for x in u[:3]])
    dip = (u[3] - 0.5) / 2  # cells per column, |dip| <= 0.25
    fault_col, throw = int(25 + 50 * u[4]), 3 + int(7 * u[5])
    vels = [1500.0] + sorted(1800 + 2200 * x for x in u[6:9])
    rows = torch.arange(NY, dtype=torch.float32)[:, None]
    cols = torch.arange(NX, dtype=torch.float32)[None, :]
    shift = dip * (cols - NX / 2) + throw * (cols >= fault_col + (rows - NY / 2) * 0.3).float()
    v = torch.full((NY, NX), vels[0])
    for top, vel in zip(tops, vels[1:]):
        v = torch.where(rows >= top + shift, torch.tensor(vel), v)
    return v


def borehole_mask(g: torch.Generator) -> torch.Tensor:
    """Returns a mask [80, 100] bool: the surface row plus a well that deviates after a random kick-off depth."""
    u = torch.rand(3, generator=g).tolist()
    m = torch.zeros(NY, NX, dtype=torch.bool)
    m[0] = True
    col0, kick, slope = int(10 + 80 * u[0]), int(15 + 30 * u[1]), (u[2] - 0.5) * 0.8
    for r in range(2, 76):
        c = col0 + (round((r - kick) * slope) if r > kick else 0)
        if 0 <= c < NX:
            m[r, c] = True
    return m


def run_seed(seed: int, task: str, restarts: int) -> dict:
    """Returns {arm: loss} and the recording/selection seconds for one seed of one task."""
    g = torch.Generator().manual_seed(1000 * seed + (0 if task == "sensitivity" else 1))
    v = faulted_model(g)
    mask = borehole_mask(g)
    cells = mask_cells(mask)
    perturbed = None
    t0 = time.perf_counter()
    if task == "sensitivity":
        sources = torch.stack([torch.zeros(3, dtype=torch.long) + 1, torch.randint(5, NX - 5, (3,), generator=g)], 1)
        u = torch.rand(3, generator=g).tolist()
        centre = (20 + 50 * u[0], 10 + 80 * u[1])
        disc = add_inclusion(torch.zeros_like(v), centre, 3.0, 1.0)
        # a slow disc only where it stays >= 1500 m/s (the grid's dispersion limit at dx 10 m, 15 Hz)
        slow_ok = float(v[int(centre[0]), int(centre[1])]) - 400.0 >= 1500.0
        v_pert = v + disc * (-400.0 if u[2] < 0.5 and slow_ok else 400.0)
        field, n_sub = record_cells(v, DX, DT, NT, FREQ, sources, cells)
        perturbed, _ = record_cells(v_pert, DX, DT, NT, FREQ, sources, cells)
    else:
        sources = torch.stack([torch.randint(40, 71, (4,), generator=g), torch.randint(10, NX - 10, (4,), generator=g)], 1)
        field, n_sub = record_cells(v, DX, DT, NT, FREQ, sources, cells)
    t1 = time.perf_counter()
    sel = select_receivers(LayoutLoss(field, cells, BUILTIN_LOSSES[task], perturbed, sources, DT, DX), 6, 3.0, seed,
                           restarts=restarts)
    t2 = time.perf_counter()
    return {"learned": sel["learned"]["loss"], **{n: sel["baselines"][n]["loss"] for n in BASELINES},
            "learned_start": sel["learned"]["start"], "candidates": len(cells), "substeps": n_sub,
            "record_s": t1 - t0, "select_s": t2 - t1}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--tasks", nargs="+", default=["sensitivity", "localisation"], choices=list(BUILTIN_LOSSES))
    ap.add_argument("--restarts", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = {}
    for task in args.tasks:
        rows = []
        for seed in args.seeds:
            r = run_seed(seed, task, args.restarts) | {"seed": seed}
            rows.append(r)
            print(f"{task} seed {seed}: learned {r['learned']:.5g} (from {r['learned_start']}), "
                  + ", ".join(f"{n} {r[n]:.5g}" for n in BASELINES)
                  + f"; {r['candidates']} cells, record {r['record_s']:.2f} s, select {r['select_s']:.2f} s")
        diffs = {}
        for base in BASELINES:
            # relative: (learned - base) / |base|, so seeds with different loss scales weigh alike
            rel = [(r["learned"] - r[base]) / abs(r[base]) for r in rows]
            diffs[base] = paired_difference(rel, [0.0] * len(rel)) | {
                "wins": f"{sum(r['learned'] < r[base] for r in rows)}/{len(rows)}"}
            d = diffs[base]
            ci = "n/a" if d["ci95"] is None else f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            print(f"  {task}: (learned - {base}) / |{base}|: mean {d['mean']:+.3f}, 95 % CI {ci}, "
                  f"strictly lower in {d['wins']}")
        out[task] = {"per_seed": rows, "relative_difference": diffs}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
