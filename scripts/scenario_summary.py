"""One picture of the scenario leaderboards: each row's gap in Bayes risk to ``mmse-bayes``, and to ``mmse-bayes-impaired``.

Reads the ``leaderboard.json`` of each scenario folder (``wavefront leaderboard --config <scenario>.yaml
... --out docs/<scenario>``; the impaired scenarios' ``mmse-bayes-impaired`` rows from
``scripts/impairment_yardstick.py``) and prints two Markdown tables and two bar charts (negative: better):

1. the gap of every learned row and of the genie to ``mmse-bayes`` with its paired standard error;
2. where the scenario has receiver impairments, the gap of every learned row and of ``lmmse-genie-impaired`` to
   ``mmse-bayes-impaired``, the best second-order estimator that knows the impairments' distribution, with the
   paired SE that ``scripts/impairment_yardstick.py --retrain`` stores (``gap_to_mmse_bayes_impaired_db``,
   ``gap_impaired_se_db``). A row without them (its model not retrained) gets ``gap_row - gap_yardstick`` (both
   paired to ``mmse-bayes`` on the same frames, so this is their Bayes risks' ratio exactly) with the two paired
   SEs combined as if independent, ``sqrt(se_1^2 + se_2^2)``, and is marked ``*``.

    python scripts/scenario_summary.py docs/sparse2-cpu-small docs/tdlD-cpu-small docs/cfo-cpu-small \\
        docs/phase-noise-cpu-small docs/timing-cpu-small docs/mix-cpu-small --out docs/scenarios-cpu-small.png
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from wavefront.utils import finish_figure

LEARNED = ("gated-lmmse", "reesnet", "adafortitran")
ROWS = LEARNED + ("lmmse-genie",)
AWARE = "mmse-bayes-impaired"
AWARE_ROWS = LEARNED + ("lmmse-genie-impaired",)


def gaps(folders: list[str]) -> tuple[list[str], dict, dict]:
    """Returns (scenario names, {scenario: {row: (gap to mmse-bayes, SE)}}, {scenario: {row: (gap to AWARE, SE)}}) in dB."""
    names, plain, aware = [], {}, {}
    for folder in folders:
        rows = {r["name"]: r for r in json.loads((Path(folder) / "leaderboard.json").read_text())["rows"]}
        name = Path(folder).name.removesuffix("-cpu-small")
        names.append(name)
        plain[name] = {k: (rows[k]["gap_to_mmse_bayes_db"], rows[k]["gap_se_db"]) for k in ROWS if k in rows}
        if AWARE in rows:
            ref = rows[AWARE]
            aware[name] = {}
            for k in (k for k in AWARE_ROWS if k in rows):
                r = rows[k]
                if "gap_to_mmse_bayes_impaired_db" in r:  # paired frame by frame
                    aware[name][k] = (r["gap_to_mmse_bayes_impaired_db"], r["gap_impaired_se_db"], True)
                else:
                    aware[name][k] = (r["gap_to_mmse_bayes_db"] - ref["gap_to_mmse_bayes_db"],
                                      math.hypot(r["gap_se_db"], ref["gap_se_db"]), False)
    return names, plain, aware


def _table(title: str, names: list[str], table: dict, rows: tuple) -> None:
    print(f"\n{title}\n")
    print("| scenario | " + " | ".join(rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for n in names:
        if n in table:
            print(f"| {n} | " + " | ".join(_cell(table[n][k]) if k in table[n] else "–" for k in rows) + " |")


def _cell(value: tuple) -> str:
    """Returns ``gap ± SE``, with ``*`` where the SE is not paired."""
    return f"{value[0]:+.2f} ± {value[1]:.2f}" + ("" if len(value) < 3 or value[2] else "*")


def _bars(ax, names: list[str], table: dict, rows: tuple) -> None:
    width = 0.8 / len(rows)
    for i, k in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(names))]
        ys = [table[n].get(k, (float("nan"), 0.0))[0] for n in names]
        es = [table[n].get(k, (0.0, 0.0))[1] for n in names]
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=k)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axhline(-1.0, color="0.5", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", help="scenario folders holding leaderboard.json")
    p.add_argument("--out", default="docs/scenarios-cpu-small.png")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, plain, aware = gaps(args.folders)
    _table("Gap to mmse-bayes [dB] ± paired SE", names, plain, ROWS)
    if aware:
        _table(f"Gap to {AWARE} [dB] ± paired SE (* unpaired: two paired SEs combined)", names, aware, AWARE_ROWS)
    fig, axes = plt.subplots(2 if aware else 1, 1, figsize=(8, 7.5 if aware else 4), squeeze=False)
    _bars(axes[0, 0], names, plain, ROWS)
    axes[0, 0].set_ylabel("gap to mmse-bayes (dB)\n(below 0: better; dashed: 1 dB)")
    axes[0, 0].set_title("Learned models (pilots only, cpu-small budget) against the second-order Bayes estimator",
                         fontsize=9)
    if aware:
        imp = [n for n in names if n in aware]
        _bars(axes[1, 0], imp, aware, AWARE_ROWS)
        axes[1, 0].set_ylabel(f"gap to {AWARE} (dB)\n(below 0: better; dashed: 1 dB)")
        axes[1, 0].set_title("The same rows against the second-order estimator that knows the impairments' "
                             "distribution", fontsize=9)
    print(f"wrote {finish_figure(fig, Path(args.out), dpi=110)}")


if __name__ == "__main__":
    main()
