"""One picture of the scenario leaderboards: each row's gap to ``mmse-bayes`` in Bayes risk, per scenario.

Reads the ``leaderboard.json`` of each scenario folder (``wavefront leaderboard --config <scenario>.yaml
... --out docs/<scenario>``), plots the gap of every learned row and of the genie with its paired
standard error (negative: better than ``mmse-bayes``), and prints the same as a Markdown table.

    python scripts/scenario_summary.py docs/sparse2-cpu-small docs/tdlD-cpu-small docs/cfo-cpu-small \\
        docs/phase-noise-cpu-small docs/timing-cpu-small docs/mix-cpu-small --out docs/scenarios-cpu-small.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from wavefront.utils import finish_figure

ROWS = ("gated-lmmse", "reesnet", "adafortitran", "lmmse-genie")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", help="scenario folders holding leaderboard.json")
    p.add_argument("--out", default="docs/scenarios-cpu-small.png")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, table = [], {}
    for folder in args.folders:
        rows = {r["name"]: r for r in json.loads((Path(folder) / "leaderboard.json").read_text())["rows"]}
        name = Path(folder).name.removesuffix("-cpu-small")
        names.append(name)
        table[name] = {k: (rows[k]["gap_to_mmse_bayes_db"], rows[k]["gap_se_db"]) for k in ROWS if k in rows}
    print("| scenario | " + " | ".join(ROWS) + " |")
    print("|---" * (len(ROWS) + 1) + "|")
    for n in names:
        print(f"| {n} | " + " | ".join(f"{table[n][k][0]:+.3f} ± {table[n][k][1]:.3f}" if k in table[n] else "–"
                                       for k in ROWS) + " |")
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(ROWS)
    for i, k in enumerate(ROWS):
        xs = [j + (i - (len(ROWS) - 1) / 2) * width for j in range(len(names))]
        ys = [table[n].get(k, (float("nan"), 0.0))[0] for n in names]
        es = [table[n].get(k, (0.0, 0.0))[1] for n in names]
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=k)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axhline(-1.0, color="0.5", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("gap to mmse-bayes, Bayes risk (dB)\n(below 0: better; dashed: the 1 dB asked for)")
    ax.set_title("Learned models (pilots only, cpu-small budget) against the second-order Bayes estimator", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    print(f"wrote {finish_figure(fig, Path(args.out), dpi=110)}")


if __name__ == "__main__":
    main()
