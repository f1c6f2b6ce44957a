"""Issue 27's acceptance scene, through the CLI: six receivers in a deviated borehole, sensitive to a small inclusion.

Builds a scene that is not in the repository and runs ``wavefront codesign receivers`` on it
twice (same seed and threads):

- an 80 x 100 model at dx = 10 m: 1500 m/s near the surface, a 3000 m/s layer between two
  interfaces that dip 1 cell in 5 to the right, 3400 m/s below it and 4000 m/s at the
  bottom (rows 70+);
- three surface shots (row 1, columns 20, 50, 80), a 15 Hz Ricker, dt = 2 ms (above the CFL
  limit at 4000 m/s: sub-stepped), nt = 600 (1.2 s);
- a borehole-shaped mask: a well down column 70 to row 30 that then deviates right (1 cell in
  3) to row 75, two cells wide over rows 40-49;
- K = 6, --min-spacing 3, --task sensitivity to a +400 m/s disc of radius 3 cells at (52, 58).

It checks the acceptance rules (exit 0, every position in the mask, no two closer than 3
cells, learned loss <= best baseline, identical receivers.json on rerun), prints the losses
and the time of each run, and writes ``summary.json`` beside the runs.

    python scripts/codesign_scene_demo.py --out runs/codesign_scene_demo --threads 1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from wavefront.cli import main as wavefront_main

NY, NX = 80, 100


def velocity_model() -> np.ndarray:
    """Returns the 80 x 100 model (m/s, float32): layers with a dipping 3000 m/s layer."""
    rows = np.arange(NY)[:, None].astype(float)
    cols = np.arange(NX)[None, :].astype(float)
    top = 25 + cols / 5  # dipping interfaces, 1 cell down per 5 to the right
    base = 40 + cols / 5
    v = np.full((NY, NX), 2200.0)
    v[np.broadcast_to(rows < 12, (NY, NX))] = 1500.0
    v[(rows >= top) & (rows < base)] = 3000.0
    v[rows >= base] = 3400.0
    v[np.broadcast_to(rows >= 70, (NY, NX))] = 4000.0
    return v.astype(np.float32)


def borehole_mask() -> np.ndarray:
    """Returns the candidate mask [80, 100] bool: a deviated well, two cells wide over rows 40-49."""
    m = np.zeros((NY, NX), bool)
    for r in range(2, 76):
        c = 70 if r < 30 else 70 + round((r - 30) / 3)
        m[r, c] = True
        if 40 <= r < 50:
            m[r, c + 1] = True
    return m


def inclusion(centre=(52, 58), radius=3.0, dv=400.0) -> np.ndarray:
    """Returns the perturbation [80, 100] float32 (m/s): ``dv`` inside a disc (centre, radius in cells)."""
    yy, xx = np.mgrid[0:NY, 0:NX]
    return np.where((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2, dv, 0.0).astype(np.float32)


def write_scene(folder: Path) -> dict[str, Path]:
    """Writes velocity.npy, perturbation.npy, mask.npy and sources.json into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"velocity": folder / "velocity.npy", "perturbation": folder / "perturbation.npy",
             "mask": folder / "mask.npy", "sources": folder / "sources.json"}
    np.save(files["velocity"], velocity_model())
    np.save(files["perturbation"], inclusion())
    np.save(files["mask"], borehole_mask())
    files["sources"].write_text(json.dumps({"positions": [[1, 20], [1, 50], [1, 80]], "frequency_hz": 15}))
    return files


def check_run(out: Path, mask: np.ndarray, min_spacing: float) -> dict:
    """Returns the run's results after asserting the acceptance rules on its files."""
    rec = json.loads((out / "receivers.json").read_text())
    res = json.loads((out / "results.json").read_text())
    pos = np.array(rec["positions"])
    assert len(pos) == 6 and all(mask[r, c] for r, c in pos), "a receiver outside the mask"
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 1e9
    assert d.min() >= min_spacing, f"two receivers {d.min():.2f} cells apart"
    best = min(b["loss"] for b in res["baselines"].values())
    assert res["learned"]["loss"] <= best, "learned loss above the best baseline"
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/codesign_scene_demo"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    files = write_scene(args.out / "scene")
    summary = {"runs": []}
    outs = [args.out / "run1", args.out / "run2"]
    for out in outs:
        cmd = ["codesign", "receivers", "--velocity", str(files["velocity"]), "--dx", "10", "--dt", "0.002",
               "--nt", "600", "--sources", str(files["sources"]), "--candidates", str(files["mask"]),
               "--num-receivers", "6", "--min-spacing", "3", "--task", "sensitivity",
               "--perturbation", str(files["perturbation"]), "--seed", str(args.seed),
               "--threads", str(args.threads), "--out", str(out)]
        print("wavefront " + " ".join(cmd))
        start = time.perf_counter()
        rc = wavefront_main(cmd)
        seconds = time.perf_counter() - start
        if rc != 0:
            print(f"exit code {rc}", file=sys.stderr)
            return rc
        res = check_run(out, borehole_mask(), 3)
        summary["runs"].append({"seconds": seconds, "learned": res["learned"]["loss"],
                                "baselines": {n: b["loss"] for n, b in res["baselines"].items()}})
    identical = (outs[0] / "receivers.json").read_bytes() == (outs[1] / "receivers.json").read_bytes()
    summary["identical_rerun"] = identical
    res = json.loads((outs[0] / "results.json").read_text())
    summary["learned"] = res["learned"]
    summary["baselines"] = res["baselines"]
    summary["candidates"], summary["substeps"] = res["candidates"], res["substeps"]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{res['candidates']} candidate cells, {res['substeps']} solver steps per 2 ms sample")
    print(f"learned {res['learned']['loss']:.5g} at {res['learned']['positions']} ({res['learned']['method']})")
    for name, b in res["baselines"].items():
        print(f"{name:8s} {b['loss']:.5g} at {b['positions']}")
    print("seconds per run: " + ", ".join(f"{r['seconds']:.1f}" for r in summary["runs"]))
    print(f"identical receivers.json on rerun: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
