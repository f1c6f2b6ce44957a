"""Monte-Carlo sweeps: MSE, NMSE and BER per estimator along one axis, beside the MMSE bound.

All estimators see the same frames at each point. Per point and estimator:

- ``mse_db``: ``10 log10 mean |H - H_hat|^2`` over frames and resource elements;
- ``nmse_db``: ``10 log10 (sum |H - H_hat|^2 / sum |H|^2)``;
- ``ber``: bit error rate of the data after one-tap equalisation with ``H_hat`` and hard
  demapping (``perfect`` uses the true channel); with ``ldpc_rate`` this is the raw BER of the
  coded bits, and ``coded_ber`` / ``bler`` come from soft demapping and 5G LDPC decoding
  (one codeword per frame);
- ``mse_se_db``: the Monte-Carlo standard error of ``mse_db`` (from the per-frame spread);
- ``bound_db``: the genie LMMSE closed-form MSE averaged over the point's frames, and
  ``gap_db = mse_db - bound_db``.

A point stops early once every estimator has ``min_bit_errors`` bit errors, or at ``frames``.
"""
from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig, profile_label
from wavefront.sim.estimators import CLASSICAL, get_classical
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.link import bit_errors, demap, equalize
from wavefront.sim.lmmse import genie_mse
from wavefront.utils import derive_seed, resolve_device

AXES = {"snr_db": ("SNR", "dB", 1.0), "doppler_hz": ("Doppler", "Hz", 1.0), "delay_spread_s": ("delay spread", "ns", 1e9)}
PLOT_NAMES = {"snr_db": "snr", "doppler_hz": "doppler", "delay_spread_s": "delay_spread"}


@dataclass
class SweepSpec:
    """What to sweep. ``axis`` is a field of ``config.channel``; ``values`` its points (SI units)."""

    config: SystemConfig
    axis: str
    values: list[float]
    estimators: list[str]
    frames: int = 2000
    batch_size: int = 500
    seed: int = 0
    min_bit_errors: int | None = None
    equalizer: str = "zf"
    device: str = "auto"
    ldpc_rate: float | None = None
    robust_options: dict = field(default_factory=dict)  # RobustLMMSE keywords: pdp, doppler_spectrum, ...

    def __post_init__(self):
        if self.axis not in AXES:
            raise ConfigError("axis", self.axis, f"must be one of {', '.join(AXES)}")
        if not self.values:
            raise ConfigError(self.axis, self.values, "needs at least one point")
        if not isinstance(self.frames, int) or self.frames < 1:
            raise ConfigError("frames", self.frames, "must be a positive integer")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError("batch_size", self.batch_size, "must be a positive integer")
        if self.min_bit_errors is not None and self.min_bit_errors < 1:
            raise ConfigError("min_bit_errors", self.min_bit_errors, "must be a positive integer")
        if not self.estimators:
            raise ConfigError("estimators", "", "name at least one estimator")
        if len(set(self.estimators)) != len(self.estimators):
            raise ConfigError("estimators", ",".join(self.estimators), "names must not repeat")
        if self.ldpc_rate is not None and not (0.0 < self.ldpc_rate < 1.0):
            raise ConfigError("ldpc_rate", self.ldpc_rate, "must be in (0, 1)")
        self.point_configs = [_point_config(self.config, self.axis, v) for v in self.values]  # validates every point


@dataclass
class PointResult:
    axis_value: float
    estimator: str
    frames: int
    mse_db: float
    mse_se_db: float
    nmse_db: float
    ber: float
    bit_errors: int
    bits: int
    bound_db: float
    gap_db: float
    coded_ber: float | None = None
    bler: float | None = None


@dataclass
class SweepResult:
    spec: dict
    rows: list[PointResult] = field(default_factory=list)
    seconds: float = 0.0


class PerfectCSI:
    """The true channel as the estimate: the BER reference (its MSE is 0)."""

    name = "perfect"


def load_estimators(names: list[str], config: SystemConfig, device, robust_options: dict | None = None) -> list:
    """Returns estimator objects for ``names``: classical, ``perfect``, or learned (via :mod:`wavefront.estimators`)."""
    out = []
    for name in names:
        if name == "lmmse-robust":
            out.append(get_classical(name, config, **(robust_options or {})))
        elif name in CLASSICAL:
            out.append(get_classical(name, config))
        elif name == "perfect":
            out.append(PerfectCSI())
        else:
            try:
                from wavefront.estimators import load_estimator
                from wavefront.estimators.registry import list_models
            except ImportError:
                raise ConfigError("estimators", name, f"unknown estimator; choose from {', '.join(CLASSICAL)}, perfect") from None
            if name not in list_models() and not (name.endswith(".safetensors") or Path(name).exists()):
                raise ConfigError("estimators", name, f"unknown estimator; choose from {', '.join(CLASSICAL)}, perfect, "
                                  f"a learned model ({', '.join(list_models())}) or a checkpoint path")
            out.append(load_estimator(name, config, device=device))
    return out


def _point_config(base: SystemConfig, axis: str, value) -> SystemConfig:
    return base.updated(channel={axis: value})


def run_sweep(spec: SweepSpec, progress: bool = True) -> SweepResult:
    """Runs the sweep and returns its rows (see the module docstring for the metrics)."""
    from tqdm.auto import tqdm

    dev = resolve_device(spec.device)
    t0 = time.time()
    # Estimators see the sweep's whole range on its axis: a robust design assumes its top end.
    lo, hi = min(spec.values), max(spec.values)
    design = _point_config(spec.config, spec.axis, (lo, hi) if hi > lo else lo)
    estimators = load_estimators(spec.estimators, design, dev, spec.robust_options)
    result = SweepResult(spec={"axis": spec.axis, "values": spec.values, "estimators": spec.estimators,
                               "frames": spec.frames, "batch_size": spec.batch_size, "seed": spec.seed,
                               "min_bit_errors": spec.min_bit_errors, "equalizer": spec.equalizer, "ldpc_rate": spec.ldpc_rate,
                               "robust_options": spec.robust_options,
                               "device": str(dev), "snr_convention": spec.config.snr_convention_text,
                               "config": json.loads(spec.config.to_json())})
    bar = tqdm(total=spec.frames * len(spec.values), unit="frame", disable=not progress, file=sys.stderr,
               desc="sweep", dynamic_ncols=True)
    name, unit, scale = AXES[spec.axis]
    for ip, value in enumerate(spec.values):
        cfg = spec.point_configs[ip]
        gen = FrameGenerator(cfg, dev, ldpc_rate=spec.ldpc_rate)
        bpsym = cfg.ofdm.bits_per_symbol
        acc = {e.name: dict(se=0.0, se2=0.0, sh=0.0, n=0, err=0, bits=0, cerr=0, cbits=0, blk=0) for e in estimators}
        bound_sum, done, ib = 0.0, 0, 0
        data = ~gen.pilot_mask
        bar.set_postfix_str(f"{name} {value * scale:g} {unit}")
        while done < spec.frames:
            b = min(spec.batch_size, spec.frames - done)
            fr = gen.generate(b, seed=derive_seed(spec.seed, ip, ib))
            meta = fr.meta
            bound_sum += float(genie_mse(cfg, fr.snr_db.cpu(), fr.delay_spread_s.cpu(), fr.doppler_hz.cpu()).sum())
            h_energy = float(fr.h.abs().square().sum())
            y_d, cw = fr.y[:, data], fr.codewords
            for est in estimators:
                h_hat = fr.h if isinstance(est, PerfectCSI) else est.estimate(fr.pilots_ls, meta)
                a = acc[est.name]
                err = (h_hat - fr.h).abs().square()
                per_frame = err.mean((1, 2)).double()
                a["se"] += float(err.sum())
                a["se2"] += float(per_frame.square().sum())
                a["sh"] += h_energy
                a["n"] += err.numel()
                x_hat, no = equalize(y_d, h_hat[:, data], fr.noise_var, spec.equalizer)
                a["err"] += bit_errors(cw, demap(x_hat, no, bpsym, hard=True))
                a["bits"] += cw.numel()
                if spec.ldpc_rate is not None:
                    decided = gen.decoder(demap(x_hat, no, bpsym, hard=False))
                    wrong = decided != fr.bits
                    a["cerr"] += int(wrong.sum())
                    a["cbits"] += wrong.numel()
                    a["blk"] += int(wrong.any(1).sum())
            done += b
            ib += 1
            bar.update(b)
            if spec.min_bit_errors and all(a["err"] >= spec.min_bit_errors for a in acc.values()):
                bar.update(spec.frames - done)
                break
        bound_db = 10 * math.log10(bound_sum / done)
        for est in estimators:
            a = acc[est.name]
            mse_db = 10 * math.log10(a["se"] / a["n"]) if a["se"] > 0 else -math.inf
            nmse_db = 10 * math.log10(a["se"] / a["sh"]) if a["se"] > 0 else -math.inf
            mean = a["se"] / a["n"]
            var = max(a["se2"] / done - mean * mean, 0.0)
            se_db = 10 / math.log(10) * math.sqrt(var / done) / mean if mean > 0 else 0.0
            coded = spec.ldpc_rate is not None
            result.rows.append(PointResult(float(value), est.name, done, mse_db, se_db, nmse_db, a["err"] / a["bits"],
                                           a["err"], a["bits"], bound_db, mse_db - bound_db,
                                           a["cerr"] / a["cbits"] if coded else None, a["blk"] / done if coded else None))
    bar.close()
    result.seconds = time.time() - t0
    return result


def format_table(result: SweepResult) -> str:
    """Returns the sweep as a text table, one block per point with the bound on top."""
    axis = result.spec["axis"]
    name, unit, scale = AXES[axis]
    coded = result.spec.get("ldpc_rate") is not None
    head = f"{name + ' ' + unit:>16}  {'estimator':<16}{'MSE dB':>9}{'NMSE dB':>9}{'BER':>11}"
    head += f"{'coded BER':>11}{'BLER':>9}" if coded else ""
    head += f"{'gap dB':>8}"
    lines = [head, "-" * len(head)]
    last = None
    for r in result.rows:
        if r.axis_value != last:
            lines.append(f"{r.axis_value * scale:>16g}  {'MMSE bound':<16}{r.bound_db:>9.2f}")
            last = r.axis_value
        mse = "     -inf" if math.isinf(r.mse_db) else f"{r.mse_db:>9.2f}"
        nmse = "     -inf" if math.isinf(r.nmse_db) else f"{r.nmse_db:>9.2f}"
        line = f"{'':>16}  {r.estimator:<16}{mse}{nmse}{r.ber:>11.3e}"
        line += f"{r.coded_ber:>11.3e}{r.bler:>9.3f}" if coded else ""
        line += "" if math.isinf(r.gap_db) else f"{r.gap_db:>8.2f}"
        lines.append(line)
    lines.append(f"SNR convention: {result.spec.get('snr_convention', 'per-re')}")
    return "\n".join(lines)


def save_result(result: SweepResult, out: Path) -> list[Path]:
    """Writes results.json, results.csv and the MSE and BER plots into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [asdict(r) for r in result.rows]
    js = out / "results.json"
    js.write_text(json.dumps({"spec": result.spec, "seconds": result.seconds, "rows": rows}, indent=2,
                             default=lambda v: None))
    cs = out / "results.csv"
    with cs.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return [js, cs, *plot_result(result, out)]


def _fmt(value, scale: float) -> str:
    if isinstance(value, (list, tuple)):
        return f"{value[0] * scale:g}-{value[1] * scale:g}"
    return f"{value * scale:g}"


def plot_result(result: SweepResult, out: Path) -> list[Path]:
    """Draws MSE (with the bound), BER and, when coded, BLER against the swept axis; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = result.spec["axis"]
    name, unit, scale = AXES[axis]
    ests = list(dict.fromkeys(r.estimator for r in result.rows))
    xs = sorted({r.axis_value for r in result.rows})
    by = {(r.estimator, r.axis_value): r for r in result.rows}
    paths = []
    metrics = [("mse_db", "MSE (dB)", "mse"), ("ber", "BER", "ber")]
    if result.spec.get("ldpc_rate") is not None:
        metrics.append(("bler", f"BLER (LDPC rate {result.spec['ldpc_rate']:g})", "bler"))
    for metric, ylabel, fname in metrics:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for e in ests:
            ys = [getattr(by[(e, x)], metric) for x in xs]
            if metric == "mse_db" and all(math.isinf(y) for y in ys):
                continue
            if metric != "mse_db":
                ys = [y if y > 0 else float("nan") for y in ys]
            ax.plot([x * scale for x in xs], ys, marker="o", label=e)
        if metric == "mse_db":
            ax.plot([x * scale for x in xs], [by[(ests[0], x)].bound_db for x in xs], "k--", label="MMSE bound")
        else:
            ax.set_yscale("log")
        cfg = result.spec["config"]
        ax.set_xlabel(f"{name} ({unit})")
        ax.set_ylabel(ylabel)
        ch = cfg["channel"]
        fixed = [f"{AXES[k][0]} {_fmt(ch[k], AXES[k][2])} {AXES[k][1]}" for k in AXES if k != axis]
        ax.set_title(f"{profile_label(ch['profile'])}, {', '.join(fixed)}, {cfg['ofdm']['num_subcarriers']}x"
                     f"{cfg['ofdm']['num_symbols']} grid, {result.spec['frames']} frames/point", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out / f"{fname}_vs_{PLOT_NAMES[axis]}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
