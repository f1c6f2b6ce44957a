"""``wavefront pilots optimise``: a pilot layout of P pilots designed against the MMSE bound.

Writes ``OUT/layout.json`` (``{"positions": [[subcarrier, symbol], ...], ...}`` plus the
objective, the search and the bound table, usable as ``--pilots OUT/layout.json``) and
``OUT/layout.png`` (the layout on the grid beside the presets with as many pilots), and prints
the bound table: the optimised layout against those presets at the same pilot count.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from wavefront import paper
from wavefront.errors import ConfigError
from wavefront.utils import DefaultsHelpFormatter, any_int, nonnegative_int, parse_range, thread_count

# Table rows: (delay spread [s], Doppler [Hz], SNR [dB]) where the acceptance of issue 11 looks.
TABLE_POINTS = ((300e-9, 1000.0, 20.0), (300e-9, 500.0, 20.0), (100e-9, 200.0, 20.0), (100e-9, 200.0, 10.0),
                (100e-9, 200.0, 30.0), (50e-9, 50.0, 10.0), (50e-9, 50.0, 20.0), (50e-9, 50.0, 30.0))


def add_commands(sub) -> None:
    p = sub.add_parser("pilots", help="pilot layouts: optimise one against the MMSE bound",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ps = p.add_subparsers(dest="pilots_command", metavar="SUBCOMMAND")
    o = ps.add_parser("optimise", help="minimise the bound averaged over condition ranges (local search)",
                      description="Minimises the genie-LMMSE bound in dB, averaged over a grid of delay spread x "
                                  "Doppler x SNR (per RE), by a local search from the best staggered lattice. "
                                  "Ranges: v (fixed), a:b (default steps 25 ns, 50 Hz, 5 dB) or a:b:step.",
                      formatter_class=DefaultsHelpFormatter)
    o.add_argument("--num-pilots", type=any_int, required=True, help="P, pilots per frame")
    o.add_argument("--doppler-hz", default="50:1000", help="maximum Doppler [Hz] (the paper's training range)")
    o.add_argument("--delay-spread-ns", default="25:300", help="RMS delay spread [ns] (the paper's training range)")
    o.add_argument("--snr-db", default="0:25", help="SNR per resource element [dB] (the paper's training range)")
    o.add_argument("--profile", default=None,
                   help="3GPP profile, TDL A..E or sparse (default: --config's channel profile, else A)")
    o.add_argument("--config", default=None,
                   help="YAML system config: its grid, channel profile and travel azimuth (default: 120 x 14, 15 kHz, "
                        "TDL-A); the condition ranges come from the flags above")
    o.add_argument("--radius-f", type=any_int, default=8, help="a move reaches this many subcarriers away")
    o.add_argument("--radius-t", type=any_int, default=3, help="a move reaches this many symbols away")
    o.add_argument("--max-passes", type=any_int, default=8, help="passes over the pilots at most")
    o.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the order the pilots are visited in")
    o.add_argument("--out", required=True, help="output folder")
    o.add_argument("--overwrite", action="store_true", help="replace the layout an earlier run left in --out")
    o.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    o.add_argument("--threads", type=thread_count, default=None,
                   help="torch CPU threads (default: torch's, one per core, at most the container's CPU quota)")
    o.set_defaults(func=run_optimise)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def parse_axis(field: str, text: str, step: float, scale: float = 1.0):
    """Returns a fixed value or ``(low, high)``, and a step, from ``v``, ``a:b`` or ``a:b:step``, times ``scale``."""
    lo, hi, given_step = parse_range(field, text, "v,a:b,a:b:step", scale)
    return (lo if len(str(text).split(":")) == 1 else (lo, hi)), (given_step or step)


def paper_suite_points() -> list[tuple[float, float, float]]:
    """Returns the 21 (delay spread [s], Doppler [Hz], SNR [dB]) points of the AdaFortiTran paper's three test sweeps."""
    return [(c["delay_spread_s"], c["doppler_hz"], c["snr_db"]) for c in paper.points()]


def bound_table(ofdm, profile: str, layouts: dict, points) -> dict:
    """Returns ``{layout name: [bound dB at each point]}`` for ``layouts`` (name -> PilotLayout)."""
    import torch

    from wavefront.sim.lmmse import genie_mse

    ds, fd, snr = (torch.tensor([p[k] for p in points], dtype=torch.float64) for k in range(3))
    out = {}
    for name, lay in layouts.items():
        o = ofdm.model_copy(update={"pilot_positions": lay.positions})
        out[name] = (10 * torch.log10(genie_mse(o, snr, ds, fd, profile=profile))).tolist()
    return out


def plot_layouts(layouts: dict, grid_shape, path: Path, title: str) -> Path:
    """Draws each layout (name -> PilotLayout) on the ``F x T`` grid, side by side; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wavefront.utils import atomic_savefig

    F, T = grid_shape
    fig, axes = plt.subplots(1, len(layouts), figsize=(2.3 * len(layouts) + 0.6, 6.2), squeeze=False)
    for ax, (name, lay) in zip(axes[0], layouts.items()):
        ax.scatter(lay.symbol_indices, lay.subcarrier_indices, marker="s", s=14, color="k")
        ax.set_xlim(-0.5, T - 0.5)
        ax.set_ylim(-0.5, F - 0.5)
        ax.set_xticks(range(0, T, 2))
        ax.set_xlabel("OFDM symbol")
        ax.set_title(name, fontsize=8)
        ax.grid(True, alpha=0.15)
    axes[0][0].set_ylabel("subcarrier")
    fig.suptitle(title, fontsize=8, wrap=True)
    fig.tight_layout()
    try:
        return atomic_savefig(fig, path, dpi=110)
    finally:
        plt.close(fig)


def run_optimise(args) -> int:
    from tqdm import tqdm

    from wavefront.sim.config import ChannelConfig, SystemConfig, preset, profile_label
    from wavefront.sim.pilot_design import DEFAULT_STEPS, BoundEvaluator, axis_values, optimise_layout
    from wavefront.sim.pilots import PILOT_PRESETS, preset_fields, write_layout_file
    from wavefront.utils import check_output_folder, refuse_to_replace

    out = check_output_folder("out", args.out)
    refuse_to_replace("out", out, ("layout.json",), args.overwrite, what="the layout")
    base = SystemConfig.from_yaml(args.config) if args.config else preset("default")
    # the config's channel profile unless --profile names one
    profile = base.channel.profile if args.profile is None else ChannelConfig.build("channel", profile=args.profile).profile
    if profile.startswith("CDL-"):  # one Kronecker term per cluster: K^2 full-grid Gram blocks would not fit
        raise ConfigError("profile", profile, "pilots optimise supports the TDL profiles A..E and sparse"
                          + ("" if args.profile is not None else f" (from --config {args.config})"))
    ofdm = base.ofdm
    F, T = ofdm.grid_shape
    if not (1 <= args.num_pilots <= F * T):
        raise ConfigError("num_pilots", args.num_pilots, f"must be in 1..{F * T} (the {F}x{T} grid)")
    for name in ("radius_f", "radius_t", "max_passes"):
        if getattr(args, name) < 1:
            raise ConfigError(name, getattr(args, name), "must be >= 1")
    # a move never reaches beyond the grid; 1e9 built a list of 1e9 x 7 candidate moves and was killed for memory
    for name, size, unit in (("radius_f", F, "subcarriers"), ("radius_t", T, "symbols")):
        if getattr(args, name) > max(size - 1, 1):
            raise ConfigError(name, getattr(args, name), f"must be <= {max(size - 1, 1)}: a move cannot reach beyond "
                                                         f"the grid's {size} {unit}")
    ds, ds_step = parse_axis("delay_spread_ns", args.delay_spread_ns, DEFAULT_STEPS["delay_spread_s"], 1e-9)
    fd, fd_step = parse_axis("doppler_hz", args.doppler_hz, DEFAULT_STEPS["doppler_hz"])
    snr, snr_step = parse_axis("snr_db", args.snr_db, DEFAULT_STEPS["snr_db"])
    axes = (axis_values("delay_spread_s", ds, ds_step), axis_values("doppler_hz", fd, fd_step),
            axis_values("snr_db", snr, snr_step))
    if math.prod(len(a) for a in axes) > 20000:
        raise ConfigError("conditions", "x".join(str(len(a)) for a in axes), "at most 20000 grid points; use coarser steps")
    t0 = time.time()
    evaluator = BoundEvaluator(ofdm, profile, *axes, travel_azimuth_deg=base.channel.travel_azimuth_deg)
    P = args.num_pilots
    with tqdm(total=args.max_passes * P, unit="pilot", desc="pilots optimise", file=sys.stderr,
              disable=args.no_progress, dynamic_ncols=True) as bar:
        res = optimise_layout(evaluator, P, args.radius_f, args.radius_t, args.max_passes, args.seed, progress=bar)
    layouts = {"optimised": res.layout}
    for name in PILOT_PRESETS:
        try:
            fields = preset_fields(name, (F, T))
        except ConfigError:
            continue
        lay = ofdm.model_copy(update={"pilot_positions": None, **fields}).pilot_layout
        if lay.num_pilots == P:
            layouts[name] = lay
    if res.start_name not in layouts:
        layouts[f"start: {res.start_name}"] = res.start_layout
    points = list(TABLE_POINTS)
    table = bound_table(ofdm, profile, layouts, points)
    suite = bound_table(ofdm, profile, layouts, paper_suite_points())
    objective = {n: float(evaluator.objective(_positions(lay)[None])[0]) for n, lay in layouts.items()}
    rows = [(f"{d * 1e9:g} ns, {f:g} Hz, {s:g} dB", [table[n][k] for n in layouts]) for k, (d, f, s) in enumerate(points)]
    rows.append(("paper suites, mean of 21 points", [sum(suite[n]) / len(suite[n]) for n in layouts]))
    rows.append(("objective (mean over ranges)", [objective[n] for n in layouts]))
    desc = (f"mean over {len(axes[0])} x {len(axes[1])} x {len(axes[2])} conditions of 10 log10(genie-LMMSE MSE): "
            f"delay spread {axes[0][0] * 1e9:g}-{axes[0][-1] * 1e9:g} ns, Doppler {axes[1][0]:g}-{axes[1][-1]:g} Hz, "
            f"SNR {axes[2][0]:g}-{axes[2][-1]:g} dB per RE, {profile_label(profile)}")
    out.mkdir(parents=True, exist_ok=True)
    bound_rows = [{"condition": label, **{n: round(v, 3) for n, v in zip(layouts, vals)}} for label, vals in rows]
    path = write_layout_file(out / "layout.json", res.layout, num_pilots=P, grid=[F, T], profile=profile_label(profile),
                             objective={"description": desc, "delay_spread_ns": [v * 1e9 for v in axes[0]],
                                        "doppler_hz": list(axes[1]), "snr_db": list(axes[2]),
                                        "value_db": round(res.objective_db, 4)},
                             search={"method": "local search: one pilot at a time to the best free position within "
                                               f"+-{args.radius_f} subcarriers and +-{args.radius_t} symbols",
                                     "start": res.start_name, "start_objective_db": round(res.start_objective_db, 4),
                                     "moves": res.moves, "passes": res.passes, "seed": args.seed,
                                     "seconds": round(time.time() - t0, 1)},
                             bound_db=bound_rows)
    png = plot_layouts(layouts, (F, T), out / "layout.png",
                       f"{P} pilots on {F}x{T}; objective (dB): "
                       + ", ".join(f"{n} {objective[n]:.2f}" for n in layouts))
    names = list(layouts)
    width = max(12, *(len(n) + 2 for n in names))
    print(f"genie-LMMSE bound (dB), {profile_label(profile)}, {F}x{T}, {P} pilots")
    print(f"{'condition':<34}" + "".join(f"{n:>{width}}" for n in names))
    for label, vals in rows:
        print(f"{label:<34}" + "".join(f"{v:>{width}.2f}" for v in vals))
    sys.stdout.flush()
    print(f"objective: {desc}", file=sys.stderr)
    print(f"search: from {res.start_name} ({res.start_objective_db:.3f} dB), {res.moves} moves in {res.passes} passes, "
          f"{time.time() - t0:.0f} s; wrote {path}, {png}", file=sys.stderr)
    return 0


def _positions(layout):
    import numpy as np

    return np.stack([layout.subcarrier_indices, layout.symbol_indices], 1)

