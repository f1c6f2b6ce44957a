"""``wavefront merge-results OUT PARTIAL...``: the array jobs of a sweep or an evaluation, combined into one result.

Each job (``wavefront sweep|evaluate ... --rank R --world W --out DIR``) wrote
``partial-R-of-W.json``: the per-batch counts of the batches it owns. The merge replays every
point's batches in batch order, stopping where one process would (``--min-bit-errors``), and
writes into OUT what one process would have written (results, table, plots), with the world
size recorded. It lives above ``wavefront.sim`` and ``wavefront.estimators`` because it serves both.
"""
from __future__ import annotations

import argparse

from wavefront.errors import ConfigError
from wavefront.utils import check_output_folder


def add_commands(sub) -> None:
    p = sub.add_parser("merge-results", help="combine the partial results of array jobs (--rank/--world) into one result",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder for the merged results")
    p.add_argument("partials", nargs="+", help="partial-R-of-W.json files, or folders holding them")
    p.set_defaults(func=run)


def run(args) -> int:
    from wavefront.sim.experiment import read_partials

    out = check_output_folder("out", args.out)
    partials = read_partials(args.partials)
    commands = sorted({str(q.get("command")) for q in partials})
    if len(commands) != 1:
        raise ConfigError("partials", ",".join(commands), "mixes files of different commands; merge one run's files")
    if commands[0] == "sweep":
        from wavefront.sim.cli import report_sweep
        from wavefront.sim.sweep import merge_sweep_partials

        report_sweep(merge_sweep_partials(partials), out)
    elif commands[0] == "evaluate":
        from wavefront.estimators.cli import report_evaluation
        from wavefront.estimators.evaluate import merge_evaluation_partials

        rows = merge_evaluation_partials(partials)
        o = partials[0]["output"]
        report_evaluation(rows, out, o["model_name"], o["checkpoint"], o["conditions"], partials[0]["world"], o["plots"],
                          impairments=o.get("impairments"))
    else:
        raise ConfigError("partials", commands[0], "unknown command in a partial file (sweep or evaluate)")
    return 0
