"""Adds the impairment-aware second-order yardsticks to finished scenario leaderboards, on the same Bayes-risk frames.

For each scenario folder (``leaderboard.json`` and the scenario's YAML, as ``wavefront leaderboard --config
<scenario>.yaml ... --out <folder>`` left them) this redraws the Bayes-risk frames from the stored spec's seed,
checks that ``mmse-bayes`` reproduces its stored Bayes risk within 0.01 dB (else it stops: the frames would not
be the ones the learned rows were scored on), evaluates ``mmse-bayes-impaired`` and ``lmmse-genie-impaired``
(:mod:`wavefront.sim.impaired_lmmse`) with the leaderboard's own :func:`evaluate_row` (Bayes risk paired to
``mmse-bayes``, the paper suites, throughput), and rewrites the folder's ``leaderboard.md/json/csv`` and
``pareto.png`` with the leaderboard's own writer. The other rows are kept as stored (the writer reproduces them
byte for byte); rerunning replaces the added rows. New leaderboards of impaired configs get these rows directly
(:func:`wavefront.estimators.leaderboard.classical_rows`).

    python scripts/impairment_yardstick.py docs/cfo-cpu-small docs/phase-noise-cpu-small docs/timing-cpu-small \\
        docs/mix-cpu-small
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from wavefront.estimators.leaderboard import (IMPAIRED_ROWS, LeaderboardSpec, bayes_risk_frames, evaluate_row,
                                              per_frame_mse, write_outputs)
from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import get_classical

TOLERANCE_DB = 0.01


def add_rows(folder: Path) -> dict:
    """Evaluates :data:`IMPAIRED_ROWS` on ``folder``'s Bayes-risk frames and rewrites its leaderboard; returns a summary."""
    table = json.loads((folder / "leaderboard.json").read_text())
    spec = LeaderboardSpec(**table["spec"])
    yaml = [p for p in folder.glob("*.yaml")]
    if len(yaml) != 1:
        raise SystemExit(f"{folder}: expected one scenario YAML, found {[p.name for p in yaml]}")
    config = SystemConfig.from_yaml(str(yaml[0]))
    frames = bayes_risk_frames(config, spec.bayes_frames, seed=spec.seed + 7)  # as run_leaderboard draws them
    with torch.no_grad():
        ref = per_frame_mse(get_classical("mmse-bayes", config).estimate(frames.pilots_ls, {}), frames.h)
    stored = next(r["bayes_risk_db"] for r in table["rows"] if r["name"] == "mmse-bayes")
    again = 10 * math.log10(float(ref.mean()))
    if abs(again - stored) > TOLERANCE_DB:
        raise SystemExit(f"{folder}: mmse-bayes gives {again:.4f} dB on the redrawn frames, {stored:.4f} dB stored: "
                         "not the same frames")
    genie_fps = next(r["frames_per_s"] for r in table["rows"] if r["name"] == "lmmse-genie")
    rows = [r for r in table["rows"] if r["name"] not in IMPAIRED_ROWS]
    for name in IMPAIRED_ROWS:
        row = evaluate_row(get_classical(name, config), config, frames, ref, spec, spec.conditions)
        rows.append({**row, "kind": "classical", "trained_on": "not trained (closed form over the prior)",
                     "throughput_vs_genie": row["frames_per_s"] / genie_fps,
                     "added_by": "scripts/impairment_yardstick.py (same frames; throughput measured in a later run)"})
    rows.sort(key=lambda r: r["bayes_risk_db"])
    table["rows"] = rows
    before = {p.name for p in folder.iterdir()}
    for path in write_outputs(table, folder, spec):
        if path.name not in before and path.name.startswith("suite_"):
            path.unlink()  # the scenario folders keep the table and the Pareto plot only
    note = (f"\nRows {' and '.join(IMPAIRED_ROWS)} (second-order yardsticks that know the impairments' distribution) "
            f"were added by `scripts/impairment_yardstick.py` on the same {spec.bayes_frames} frames: mmse-bayes "
            f"reproduced its stored Bayes risk to {abs(again - stored):.1e} dB; their throughput comes from a later run "
            "than the other rows'.\n")
    with open(folder / "leaderboard.md", "a") as f:
        f.write(note)
    return {"folder": str(folder), "mmse_bayes_db": again, "stored_db": stored,
            **{r["name"]: (r["bayes_risk_db"], r["gap_to_mmse_bayes_db"], r["gap_se_db"]) for r in rows
               if r["name"] in IMPAIRED_ROWS}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", help="scenario folders holding leaderboard.json and one scenario YAML")
    args = p.parse_args()
    torch.set_num_threads(1)
    for folder in args.folders:
        print(json.dumps(add_rows(Path(folder))))


if __name__ == "__main__":
    main()
