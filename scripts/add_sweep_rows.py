"""Adds the rows of one sweep to another swept on the same frames, and rewrites the tables and plots.

A sweep's frames are named by its seed, each point's conditions and the batch index, never by
the estimators (``simulated_points``), so a sweep that reruns the same command with other
``--estimators`` sees the same frames. This script checks that the two specs agree on everything
but the estimators (and the prior's bookkeeping, which does not change a frame), appends the new
rows after the base's at each point, marks each point ``in_prior`` as the sweeps did (the newer
run's mark where its ``--prior-*`` differ; the spec's ``prior`` cannot tell, its SNR range being
widened to the points), and writes ``results.json``,
``results.csv`` and the plots into ``--out`` with ``save_result``; ``seconds`` is the sum.

    python scripts/add_sweep_rows.py docs/mimo-chest/results.json RUN/results.json --out docs/mimo-chest
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FREE = {"estimators", "prior", "prior_ranges", "device"}  # differences that do not change a frame


def main() -> None:
    from wavefront.sim.experiment import Row
    from wavefront.sim.sweep import SweepResult, save_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", help="results.json of the sweep to extend")
    p.add_argument("new", help="results.json of the same sweep with other estimators")
    p.add_argument("--out", required=True, help="folder for the merged results.json, results.csv and plots")
    args = p.parse_args()
    base, new = json.loads(Path(args.base).read_text()), json.loads(Path(args.new).read_text())
    differ = sorted(k for k in set(base["spec"]) | set(new["spec"]) if k not in FREE
                    and base["spec"].get(k) != new["spec"].get(k))
    if differ:
        sys.exit(f"add_sweep_rows: the sweeps differ in {', '.join(differ)}; their frames are not the same")
    clash = set(base["spec"]["estimators"]) & set(new["spec"]["estimators"])
    if clash:
        sys.exit(f"add_sweep_rows: both sweeps have {', '.join(sorted(clash))}")
    spec = dict(base["spec"])
    spec["estimators"] = base["spec"]["estimators"] + new["spec"]["estimators"]
    spec["prior"] = new["spec"]["prior"]
    # each point's in_prior as the runs marked it, the newer run's winning; not from spec["prior"], whose SNR
    # range is widened to the sweep's points (a 30 dB point would read as inside the 0-25 dB prior)
    marks = {r["axis_value"]: r.get("in_prior") for r in base["rows"]}
    marks.update({r["axis_value"]: r.get("in_prior") for r in new["rows"]})
    rows = []
    for value in dict.fromkeys(r["axis_value"] for r in base["rows"]):
        rows += [r for r in base["rows"] if r["axis_value"] == value] + [r for r in new["rows"] if r["axis_value"] == value]
    fields = Row.__dataclass_fields__
    out_rows = []
    for r in rows:
        r = {k: v for k, v in r.items() if k in fields}
        r["in_prior"] = marks[r["axis_value"]]
        out_rows.append(Row(**{k: (float("-inf") if v is None and k.endswith("_db") else v) for k, v in r.items()}))
    paths = save_result(SweepResult(spec=spec, rows=out_rows, seconds=base["seconds"] + new["seconds"]), Path(args.out))
    print("wrote " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
