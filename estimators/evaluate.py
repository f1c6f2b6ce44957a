"""Evaluation of a trained estimator against LS-linear, robust LMMSE and the MMSE bound, per test condition.

Conditions come from a test-suite folder of HDF5 shards, or are simulated afresh: ``paper``
holds the three AdaFortiTran test sweeps (2k frames per point in the paper):

- SNR 0:5:30 dB at delay spread 200 ns and Doppler 500 Hz;
- delay spread 50:50:350 ns at SNR 10 dB and Doppler 600 Hz;
- Doppler 200:200:1400 Hz at SNR 10 dB and delay spread 100 ns.

MSE is ``mean |H_hat - H|^2`` per resource element, in dB; the bound is the genie joint 2-D
LMMSE MSE in closed form (``wavefront.sim.lmmse.genie_mse``), and the gap is model minus bound.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from wavefront.errors import ConfigError

PAPER_SWEEPS = {
    "snr": ("snr_db", [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0], {"delay_spread_s": 200e-9, "doppler_hz": 500.0}),
    "delay_spread": ("delay_spread_s", [v * 1e-9 for v in range(50, 351, 50)], {"snr_db": 10.0, "doppler_hz": 600.0}),
    "doppler": ("doppler_hz", [float(v) for v in range(200, 1401, 200)], {"snr_db": 10.0, "delay_spread_s": 100e-9}),
}
# Folder names of `wavefront generate-suite adafortitran` (the official test-set names) -> sweep names.
SUITE_FOLDERS = {"SNR_test_set": "snr", "DS_test_set": "delay_spread", "MDS_test_set": "doppler"}
AXIS_LABEL = {"snr_db": "SNR [dB]", "delay_spread_s": "delay spread [ns]", "doppler_hz": "Doppler [Hz]"}


def _mse_db(est: torch.Tensor, h: torch.Tensor) -> float:
    d = est.to(torch.complex64) - h
    return 10 * math.log10(float((d.real.square() + d.imag.square()).mean()))


def _point_config(base, snr_db, delay_spread_s, doppler_hz):
    return base.updated(channel={"snr_db": snr_db, "delay_spread_s": delay_spread_s, "doppler_hz": doppler_hz})


def _bound_db(config, snr_db, delay_spread_s, doppler_hz, noise_var: float | None = None) -> float:
    """The bound at the condition; ``noise_var`` (as stored with the frames) overrides the SNR's."""
    from wavefront.sim.lmmse import genie_mse

    if noise_var is not None:  # back to the config's convention from the per-RE SNR the frames carry
        snr_db = -10 * math.log10(noise_var) - config.snr_offset_db
    return 10 * math.log10(float(genie_mse(config, snr_db, delay_spread_s, doppler_hz)))


def paper_points():
    """Yields ``(sweep, axis, snr_db, delay_spread_s, doppler_hz)`` for the three paper sweeps."""
    for sweep, (axis, values, fixed) in PAPER_SWEEPS.items():
        for v in values:
            point = {**fixed, axis: v}
            yield sweep, axis, point["snr_db"], point["delay_spread_s"], point["doppler_hz"]


def evaluate_point(estimators: list, pilots, h, meta) -> dict[str, float]:
    """Returns ``{estimator name: MSE [dB]}`` on one batch of frames."""
    return {e.name: _mse_db(e.estimate(pilots, meta), h) for e in estimators}


def evaluate(model_estimator, config, conditions: str = "paper", suite: str | None = None, frames_per_point: int = 500,
             baselines=("ls-linear", "lmmse-robust"), seed: int = 0, device="cpu", chunk: int = 500,
             progress: bool = False) -> list[dict]:
    """Returns one row per test condition: the condition, frames, MSE [dB] of each estimator, the bound and the gap.

    ``model_estimator``: anything with ``name`` and ``estimate(pilots, meta)``; ``config``: the SystemConfig
    (grid, pilots, profile). ``suite``: a folder of test shards (one sub-folder per condition, or
    one folder whose frames are grouped by condition); else ``conditions="paper"`` simulates the
    paper's sweeps with ``frames_per_point`` frames each.
    """
    from wavefront.sim.estimators import get_classical
    from wavefront.utils import derive_seed

    if frames_per_point < 1:
        raise ConfigError("frames_per_point", frames_per_point, "must be >= 1")
    classical = [get_classical(b, config) for b in baselines]
    estimators = [model_estimator, *classical]
    rows = []
    if suite is not None:
        groups = _suite_groups(suite, config)
    else:
        if conditions != "paper":
            raise ConfigError("conditions", conditions, "only 'paper' (the three AdaFortiTran test sweeps) is defined")
        groups = None
    if groups is None:
        from wavefront.sim.frames import FrameGenerator

        points = list(paper_points())
        it = points
        if progress:
            from tqdm import tqdm

            it = tqdm(points, unit="point", leave=False)
        for i, (sweep, axis, snr, ds, fd) in enumerate(it):
            gen = FrameGenerator(_point_config(config, snr, ds, fd), device=device)
            sums: dict[str, float] = {}
            for j, start in enumerate(range(0, frames_per_point, chunk)):
                n = min(chunk, frames_per_point - start)
                f = gen.generate(n, seed=derive_seed(seed, i, j), with_data=False)
                for name, db in evaluate_point(estimators, f.pilots_ls, f.h, f.meta).items():
                    sums[name] = sums.get(name, 0.0) + 10 ** (db / 10) * n
            mse = {k: 10 * math.log10(v / frames_per_point) for k, v in sums.items()}
            rows.append(_row(sweep, axis, snr, ds, fd, frames_per_point, mse, config, model_estimator.name))
    else:
        for sweep, axis, (snr, ds, fd), batch in groups:
            # The stored noise variance is authoritative: the shards may use another SNR convention.
            meta = {k: batch[k] for k in ("snr_db", "delay_spread_s", "doppler_hz", "noise_var") if k in batch}
            mse = evaluate_point(estimators, batch["pilots"], batch["h"], meta)
            nv = float(batch["noise_var"].double().mean()) if "noise_var" in batch else None
            rows.append(_row(sweep, axis, snr, ds, fd, batch["h"].shape[0], mse, config, model_estimator.name, nv))
    return rows


def _row(sweep, axis, snr, ds, fd, frames, mse, config, model_name, noise_var: float | None = None) -> dict:
    bound = _bound_db(config, snr, ds, fd, noise_var)
    return {"sweep": sweep, "axis": axis, "snr_db": snr, "delay_spread_ns": round(ds * 1e9, 3), "doppler_hz": fd,
            "frames": frames, **{f"{k}_db": round(v, 3) for k, v in mse.items()}, "mmse_bound_db": round(bound, 3),
            "gap_to_bound_db": round(mse[model_name] - bound, 3)}


def _suite_groups(suite: str, config):
    """Returns ``[(sweep, axis, (snr, ds, fd), batch)]`` from a folder of test shards, grouped by condition."""
    from wavefront.estimators.data import dataset_validation, open_frame_folder

    root = Path(suite)
    if not root.is_dir():
        raise ConfigError("suite", suite, "is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir()) or [root]
    out = []
    for folder in folders:
        batches = dataset_validation(open_frame_folder(str(folder), config), batch_size=4096)
        cat = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
        keys = torch.stack([cat["snr_db"].double(), cat["delay_spread_s"].double() * 1e9, cat["doppler_hz"].double()], 1)
        keys = torch.round(keys * 1000) / 1000
        uniq, inv = torch.unique(keys, dim=0, return_inverse=True)
        varying = [a for a, col in zip(("snr_db", "delay_spread_s", "doppler_hz"), uniq.T) if col.unique().numel() > 1]
        axis = varying[0] if len(varying) == 1 else ""
        sweep = SUITE_FOLDERS.get(folder.name, {v[0]: k for k, v in PAPER_SWEEPS.items()}.get(axis, folder.name))
        for u in range(uniq.shape[0]):
            sel = inv == u
            snr, ds_ns, fd = (float(v) for v in uniq[u])
            out.append((sweep, axis, (snr, ds_ns * 1e-9, fd), {k: v[sel] for k, v in cat.items()}))
    return sorted(out, key=lambda g: (list(PAPER_SWEEPS).index(g[0]) if g[0] in PAPER_SWEEPS else 9, g[0],
                                      g[2][("snr_db", "delay_spread_s", "doppler_hz").index(g[1])] if g[1] else 0))


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
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def plot_rows(rows: list[dict], out: Path, model_name: str) -> list[Path]:
    """Draws MSE against SNR, Doppler and delay spread (one PNG per paper sweep present) and returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for sweep, (axis, _, _) in PAPER_SWEEPS.items():
        sel = [r for r in rows if r["sweep"] == sweep]
        if not sel:
            continue
        key = "delay_spread_ns" if axis == "delay_spread_s" else axis
        x = np.array([r[key] for r in sel])
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for col in [c for c in sel[0] if c.endswith("_db") and c not in ("snr_db", "gap_to_bound_db")]:
            style = "k--" if col == "mmse_bound_db" else ("o-" if col == f"{model_name}_db" else "s-")
            ax.plot(x, [r[col] for r in sel], style, label=col.removesuffix("_db").replace("mmse_bound", "MMSE bound"))
        ax.set_xlabel(AXIS_LABEL[axis])
        ax.set_ylabel("MSE [dB]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"mse_vs_{sweep}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
