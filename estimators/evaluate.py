"""Evaluation of a trained estimator against LS, the LMMSE estimators and the MMSE bound, per test condition.

It runs the one experiment engine (:func:`wavefront.sim.experiment.run_experiment`), as
``wavefront sweep`` does: at a condition both share, with the same seed, they draw the same
frames and report the same numbers. Conditions come from a folder of HDF5 shards (a
``generate-suite`` folder, or ``import-mat`` of the reference data), or are simulated:
``paper`` holds the three AdaFortiTran test sweeps (2k frames per point in the paper):

- SNR 0:5:30 dB at delay spread 200 ns and Doppler 500 Hz;
- delay spread 50:50:350 ns at SNR 10 dB and Doppler 600 Hz;
- Doppler 200:200:1400 Hz at SNR 10 dB and delay spread 100 ns.

MSE is ``mean |H_hat - H|^2`` per resource element, in dB; the bound is the genie joint 2-D
LMMSE MSE in closed form, and the gap is model minus bound. With ``conditions="estimated"``
(default) the model reads SNR, delay spread and Doppler estimated from each frame's pilots;
``compare_true`` adds the same model given the true conditions as a second row.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from wavefront import paper
from wavefront.datasets.sources import folder_points
from wavefront.errors import ConfigError
from wavefront.sim.estimators import Estimator, classical_estimators
from wavefront.sim.experiment import (
    half_interval_db, mark_in_prior, merge_partials, prior_config, prior_ranges_record, run_experiment, run_partial,
    simulated_points,
)
from wavefront.utils import atomic_write_csv, atomic_write_json, finish_figure

AXIS_LABEL = {"snr_db": "SNR [dB]", "delay_spread_s": "delay spread [ns]", "doppler_hz": "Doppler [Hz]"}
SIMULATED_FRAMES_PER_POINT = 500  # frames per simulated point when none are asked for (a folder's points: all theirs)


class WithTrueConditions(Estimator):
    """``est`` given the true SNR, delay spread and Doppler, under the name ``"<name> (true cond.)"``."""

    needs = "truth"

    def __init__(self, est):
        self.est, self.name = est, f"{est.name} (true cond.)"
        self.given = "SNR, delay spread and Doppler true"
        self.trained_on = getattr(est, "trained_on", None)
        self.mimo = getattr(est, "mimo", False)  # a per-(antenna, user) model stays one

    def estimate(self, pilots, meta):
        return self.est.estimate(pilots, meta)


def evaluate(model_estimator, config, points: str = "paper", suite: str | None = None,
             frames_per_point: int | None = None, baselines=("ls-linear", "lmmse-robust", "lmmse-genie"), seed: int = 0,
             device="cpu", chunk: int = 500, progress: bool = False, conditions: str = "estimated",
             compare_true: bool = True, long_rows: list | None = None, rank: int = 0, world: int = 1,
             prior_ranges: dict | None = None, store=None) -> list[dict]:
    """Returns one row per test condition: the condition, frames, MSE [dB] of each estimator, the bound and the gap.

    ``model_estimator``: anything with ``name``, ``needs`` and ``estimate(pilots, meta)``, or None
    for the classical rows alone (no model row, no ``gap_to_bound_db`` column);
    ``config``: the SystemConfig (grid, pilots, profile). ``suite``: a folder of test shards,
    each point evaluated on its first ``frames_per_point`` frames (default None: all it holds);
    else ``points="paper"`` simulates the paper's sweeps with ``frames_per_point`` frames each
    (default None: 500).
    ``baselines``: classical estimator names, designed for ``prior_ranges`` (default: the paper's
    training ranges; see :func:`wavefront.sim.experiment.prior_config`). ``long_rows``: a list
    that receives the engine's per-estimator rows (with what each estimator was given).
    ``rank``, ``world``: this process's place in a running ``torch.distributed`` group; the
    ranks split each point's batches and all return the rows of one process. ``store``: a
    :class:`wavefront.sim.progress.ProgressStore` that keeps every batch's counts, so a rerun resumes,
    or a function of no arguments that opens one: it is called only once the points and baselines
    are valid, so a refused run leaves no progress behind that would refuse its corrected rerun.
    """
    pts, estimators, kwargs = _plan(model_estimator, config, points, suite, frames_per_point, baselines, seed, device,
                                    chunk, conditions, compare_true, prior_ranges)
    store = store() if callable(store) else store
    rows = mark_in_prior(run_experiment(pts, estimators, progress=progress, rank=rank, world=world, store=store,
                                        **kwargs), prior_ranges)
    if long_rows is not None:
        long_rows.extend(r.record() for r in rows)
    return wide_rows(rows, model_estimator.name if model_estimator is not None else None)


def evaluate_partial(model_estimator, config, points: str = "paper", suite: str | None = None,
                     frames_per_point: int | None = None, baselines=("ls-linear", "lmmse-robust", "lmmse-genie"),
                     seed: int = 0, device="cpu", chunk: int = 500, progress: bool = False, conditions: str = "estimated",
                     compare_true: bool = True, rank: int = 0, world: int = 1, prior_ranges: dict | None = None,
                     store=None) -> dict:
    """Returns array job ``rank`` of ``world``'s per-batch counts (:func:`wavefront.sim.experiment.run_partial`).

    Arguments as :func:`evaluate`; :func:`merge_evaluation_partials` turns all jobs' records
    into the rows of one process.
    """
    pts, estimators, kwargs = _plan(model_estimator, config, points, suite, frames_per_point, baselines, seed, device,
                                    chunk, conditions, compare_true, prior_ranges)
    store = store() if callable(store) else store
    return {**run_partial(pts, estimators, progress=progress, rank=rank, world=world, store=store, **kwargs),
            "command": "evaluate", "prior_ranges": prior_ranges_record(prior_ranges)}


def _plan(model_estimator, config, points, suite, frames_per_point, baselines, seed, device, chunk, conditions,
          compare_true, prior_ranges=None):
    """Returns the evaluation's points, estimators and the engine's keywords."""
    if frames_per_point is not None and frames_per_point < 1:
        raise ConfigError("frames_per_point", frames_per_point, "must be >= 1")
    if model_estimator is None and not list(baselines):
        raise ConfigError("baselines", ",".join(baselines), "the classical rows alone (no model) need at least one "
                                                            "classical estimator")
    if suite is not None:
        pts = folder_points(suite, config)
        frames = frames_per_point  # the first frames_per_point of each point; None: all of them
    else:
        if points != "paper":
            raise ConfigError("points", points, "only 'paper' (the three AdaFortiTran test sweeps) is defined")
        frames = frames_per_point or SIMULATED_FRAMES_PER_POINT
        pts = simulated_points(config, paper.points(), frames, chunk, seed, device, with_data=False)
    prior = prior_config(config, pts, prior_ranges)
    estimators = [model_estimator] if model_estimator is not None else []
    if (model_estimator is not None and compare_true and conditions == "estimated"
            and model_estimator.needs == "conditions"):
        estimators.append(WithTrueConditions(model_estimator))
    estimators += classical_estimators(list(baselines), prior)
    return pts, estimators, dict(frames=frames, conditions=conditions, condition_prior=prior)


def merge_evaluation_partials(partials: list[dict]) -> list:
    """Returns the engine rows (:class:`wavefront.sim.experiment.Row`) of one process from an evaluation's array jobs.

    Raises ConfigError when the records are not an evaluation's, come from different runs
    (checkpoint, conditions, points), or a rank is missing or repeated.
    """
    for q in partials:
        if q.get("command") != "evaluate":
            raise ConfigError("partials", q.get("command"), "not an evaluation's partial file (merge an evaluation's "
                                                           "files together)")
    first = partials[0]
    for q in partials[1:]:
        mine, theirs = q.get("output", {}), first.get("output", {})
        diff = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if diff:
            raise ConfigError(diff[0], mine.get(diff[0]), f"differs between partial files (rank {q['rank']}: "
                              f"{mine.get(diff[0])!r}, rank {first['rank']}: {theirs.get(diff[0])!r}): "
                              "they come from different evaluations")
    return merge_partials(partials)


def save_evaluation(rows: list, out: Path, model_name: str | None, checkpoint: str | None, conditions: str,
                    world_size: int = 1, plots: bool = True, impairments: dict | None = None) -> list[Path]:
    """Writes ``results.csv`` (one row per condition), ``results.json`` (engine rows) and the plots; returns the paths.

    ``rows``: the engine's :class:`wavefront.sim.experiment.Row` list; ``model_name`` and
    ``checkpoint``: the model's row name and checkpoint (both None for the classical rows
    alone: no gap column, ``checkpoint`` null); ``world_size``: the processes that computed
    them (recorded in ``results.json``); ``impairments``: the test frames' receiver impairments,
    ``{field: {"value", "units"}}`` (:func:`wavefront.sim.impairments.impairment_record`),
    recorded in ``results.json`` when set.
    """
    # Every file whole or absent; results.json last, so its presence means the whole result was saved.
    long_rows = [r.record() for r in rows]
    wide = wide_rows(rows, model_name)
    saved = [save_rows(wide, out)]
    if plots:
        saved += plot_rows(wide, out, model_name)
    record = {"checkpoint": checkpoint, "conditions": conditions, "world_size": world_size,
              **({"impairments": impairments} if impairments else {}), "rows": long_rows}
    saved.insert(1, atomic_write_json(out / "results.json", record, indent=1))
    return saved


def wide_rows(rows, model_name: str | None) -> list[dict]:
    """Returns one dict per point (columns ``<estimator>_db``, ``mmse_bound_db``, ``gap_to_bound_db``, ``gap_se_db``)
    from engine rows.

    ``model_name``: the row whose gap to the bound is ``gap_to_bound_db`` [dB], with its Monte-Carlo standard error
    ``gap_se_db`` [dB] (that of the model's MSE: the bound is exact); None (the classical rows alone): no such columns."""
    out, index = [], {}
    for r in rows:
        key = (r.sweep, r.snr_db, r.delay_spread_ns, r.doppler_hz)
        if key not in index:
            index[key] = {"sweep": r.sweep, "axis": r.axis, "snr_db": r.snr_db, "delay_spread_ns": round(r.delay_spread_ns, 3),
                          "doppler_hz": r.doppler_hz, "frames": r.frames, "realization": r.realization.split(":")[0],
                          "in_prior": r.in_prior}
            out.append(index[key])
        index[key][f"{r.estimator}_db"] = round(r.mse_db, 3)
        index[key]["mmse_bound_db"] = round(r.bound_db, 3)
        if r.estimator == model_name:  # the bound is a closed form: the gap's SE is the model's MSE's
            index[key]["gap_to_bound_db"] = round(r.gap_db, 3)
            index[key]["gap_se_db"] = round(r.mse_se_db, 3)
    for row in out:  # the bound and gap last, as the tables read
        row["mmse_bound_db"] = row.pop("mmse_bound_db")
        if model_name is not None:
            row["gap_to_bound_db"] = row.pop("gap_to_bound_db", float("nan"))
            row["gap_se_db"] = row.pop("gap_se_db", float("nan"))
    return out


def format_table(rows: list[dict]) -> str:
    """Returns the rows as an aligned text table."""
    if not rows:
        return "(no conditions)"
    cols = list(rows[0])
    width = {c: max(len(c), *(len(f"{r[c]:g}" if isinstance(r[c], float) else str(r[c])) for r in rows)) for c in cols}
    fmt = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["  ".join(c.rjust(width[c]) for c in cols)]
    lines += ["  ".join(fmt(r[c]).rjust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def save_rows(rows: list[dict], out: Path) -> Path:
    """Writes ``results.csv`` in ``out`` and returns its path."""
    return atomic_write_csv(out / "results.csv", rows)


def plot_rows(rows: list[dict], out: Path, model_name: str | None) -> list[Path]:
    """Draws MSE against SNR, Doppler and delay spread (one PNG per paper sweep present) and returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for sweep, axis in ((sw.name, sw.axis) for sw in paper.TEST_SWEEPS):
        sel = [r for r in rows if r["sweep"] == sweep]
        if not sel:
            continue
        key = "delay_spread_ns" if axis == "delay_spread_s" else axis
        x = np.array([r[key] for r in sel])
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for col in [c for c in sel[0] if c.endswith("_db") and c not in ("snr_db", "gap_to_bound_db", "gap_se_db")]:
            style = "k--" if col == "mmse_bound_db" else ("o-" if col == f"{model_name}_db" else "s-")
            line, = ax.plot(x, [r[col] for r in sel], style,
                            label=col.removesuffix("_db").replace("mmse_bound", "MMSE bound"))
            if col == f"{model_name}_db":
                # its 95% Monte-Carlo interval (how far from the bound is noise; "_": out of the legend), and its
                # points outside the prior, a white fill
                ax.errorbar(x, [r[col] for r in sel], yerr=[half_interval_db(r["gap_se_db"], r["frames"]) for r in sel],
                            fmt="none", ecolor=line.get_color(), capsize=2, elinewidth=0.8, label=f"_{col} interval")
                outside = [i for i, r in enumerate(sel) if r.get("in_prior") is False]
                ax.plot(x[outside], [sel[i][col] for i in outside], "o", mfc="white", color=line.get_color(),
                        zorder=3)  # over every line: the classical ones drawn after it hid them
        marked = model_name is not None and any(r.get("in_prior") is False for r in sel)  # on the model's line only
        ax.set_xlabel(AXIS_LABEL[axis] + (" (white: outside the prior)" if marked else ""))
        ax.set_ylabel("MSE [dB]" + (" (bars: the model's 95% interval)" if model_name is not None else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(finish_figure(fig, out / f"mse_vs_{sweep}.png"))
    return paths
