"""One experiment engine: frames from a source, every estimator on the same frames, metrics beside the bound.

``wavefront sweep`` and ``wavefront evaluate`` both run :func:`run_experiment`; they differ only
in which points they ask for and how they print them.

**Sources.** A :class:`Point` is one test condition and a way to draw its frames:

- :func:`simulated_points`: frames simulated from a config at given (SNR, delay spread,
  Doppler) conditions. A batch's seed is ``derive_seed(seed, condition key, batch index)``:
  it depends on the condition, not on its position in a list, so a sweep and an evaluation
  that share a condition and a seed draw the same frames.
- ``wavefront.datasets.sources.folder_points``: frames read from a folder of HDF5 shards
  (``wavefront generate``, ``generate-suite``, or ``import-mat`` of the reference ``.mat``
  data), grouped by condition. Such frames carry no data symbols: MSE, no BER.

**Estimators** are objects with ``name`` and ``estimate(pilots [B, P_f, P_t] c64, meta) ->
[B, F, T] c64``. Their attribute ``needs`` says what they read from ``meta``:

- ``"none"``: the pilots only (LS, and estimators that infer the conditions themselves);
- ``"noise"``: the noise variance (robust LMMSE: its covariance is assumed);
- ``"conditions"``: SNR, delay spread and Doppler (condition-aware learned models);
- ``"truth"``: the true statistics by definition (genie LMMSE, perfect CSI).

With ``conditions="estimated"`` (the default), whatever an estimator reads besides the truth
comes from :func:`wavefront.sim.conditions.estimate_conditions` on the same pilots; with
``"true"`` it is the frames' recorded conditions. Every row states what its estimator was given.

**Metrics** per point and estimator: ``mse_db`` (``10 log10 mean |H_hat - H|^2``), its
Monte-Carlo standard error ``mse_se_db`` (from the per-frame spread), ``nmse_db``, BER after
one-tap equalisation and hard demapping where the frames carry data (coded BER and BLER with
an LDPC decoder), ``bound_db`` (the genie LMMSE closed form averaged over the point's frames)
and ``gap_db = mse_db - bound_db``.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import FrameGenerator, Frames
from wavefront.sim.link import bit_errors, demap, equalize
from wavefront.sim.lmmse import genie_mse
from wavefront.utils import derive_seed, resolve_device

CONDITION_MODES = ("estimated", "true")
COND_FIELDS = ("snr_db", "delay_spread_s", "doppler_hz")


def condition_key(snr_db: float, delay_spread_s: float, doppler_hz: float) -> int:
    """Returns an integer naming a condition (mdB, ps, mHz), the part of a batch's seed that picks the point."""
    return derive_seed(round(snr_db * 1000), round(delay_spread_s * 1e12), round(doppler_hz * 1000))


@dataclass
class Point:
    """One test condition. ``batches(frames_wanted)`` yields :class:`Frames` until that many (or the source's all)."""

    sweep: str                      # which sweep it belongs to ("snr", "delay_spread", "doppler", or a folder name)
    axis: str                       # the channel field that varies along the sweep ("" if none)
    snr_db: float
    delay_spread_s: float
    doppler_hz: float
    config: SystemConfig            # the point's system config (generator, bound, profile)
    batches: Callable[[], Iterator[Frames]]
    available: int | None = None    # frames a folder holds; None: as many as asked
    realization: str | None = None  # how the frames' fading realizations were drawn; None: from ``config``

    @property
    def axis_value(self) -> float:
        return getattr(self, self.axis) if self.axis else 0.0


def simulated_points(config: SystemConfig, conditions: list[dict], frames: int, batch_size: int, seed: int,
                     device="cpu", with_data: bool = True, ldpc_rate: float | None = None, sweep: str = "",
                     axis: str = "") -> list[Point]:
    """Returns points simulated from ``config`` at each of ``conditions`` (dicts of ``snr_db``, ``delay_spread_s``, ``doppler_hz``)."""
    if not isinstance(frames, int) or frames < 1:
        raise ConfigError("frames", frames, "must be a positive integer")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("batch_size", batch_size, "must be a positive integer")
    dev = resolve_device(device)
    points = []
    for c in conditions:
        cfg = config.updated(channel={k: c[k] for k in COND_FIELDS})
        key = condition_key(c["snr_db"], c["delay_spread_s"], c["doppler_hz"])

        def batches(cfg=cfg, key=key):
            gen = FrameGenerator(cfg, dev, ldpc_rate=ldpc_rate)
            done, ib = 0, 0
            while done < frames:
                b = min(batch_size, frames - done)
                yield gen.generate(b, seed=derive_seed(seed, key, ib), with_data=with_data)
                done, ib = done + b, ib + 1

        points.append(Point(c.get("sweep", sweep), c.get("axis", axis), float(c["snr_db"]), float(c["delay_spread_s"]),
                            float(c["doppler_hz"]), cfg, batches))
    return points


@dataclass
class Row:
    """One (point, estimator) result. Conditions in SI units plus ``delay_spread_ns`` for tables."""

    sweep: str
    axis: str
    axis_value: float
    snr_db: float
    delay_spread_ns: float
    doppler_hz: float
    estimator: str
    given: str
    frames: int
    mse_db: float
    mse_se_db: float
    nmse_db: float
    bound_db: float
    gap_db: float
    ber: float | None = None
    bit_errors: int | None = None
    bits: int | None = None
    coded_ber: float | None = None
    bler: float | None = None
    pilots: str = ""
    trained_on: str | None = None
    realization: str = ""  # how the test frames' fading realizations were drawn (per-condition ones leak)


def given_text(est, conditions: str) -> str:
    """Returns what ``est`` was told: the truth, estimated or true conditions, or the pilots alone."""
    needs = getattr(est, "needs", "conditions")
    told = "estimated from the pilots" if conditions == "estimated" else "true"
    own = getattr(est, "given", None)
    if needs == "truth":
        return own or "true channel statistics (genie)"
    if needs == "noise":
        return f"noise variance {told}; " + (own or "assumed covariance")
    if needs == "conditions":
        return f"SNR, delay spread and Doppler {told}"
    return own or "pilots only"


def pilot_text(config: SystemConfig) -> str:
    o = config.ofdm
    pf, pt = o.pilot_shape
    return (f"{pf}x{pt}: subcarriers {o.pilot_subcarrier_offset}::{o.pilot_subcarrier_spacing}, "
            f"symbols {','.join(str(s) for s in o.pilot_symbols)}")


class _Acc:
    __slots__ = ("se", "se2", "sh", "n", "frames", "err", "bits", "cerr", "cbits", "blk")

    def __init__(self):
        self.se = self.se2 = self.sh = 0.0
        self.n = self.frames = self.err = self.bits = self.cerr = self.cbits = self.blk = 0


def run_experiment(points: list[Point], estimators: list, frames: int | None = None, conditions: str = "estimated",
                   condition_prior: SystemConfig | None = None, equalizer: str = "zf", min_bit_errors: int | None = None,
                   decoder=None, progress: bool = True) -> list[Row]:
    """Runs every estimator on every point's frames and returns one :class:`Row` per (point, estimator).

    ``frames``: frames per point (default: all a folder holds; required for simulated points).
    ``conditions``: ``"estimated"`` or ``"true"``, what estimators that read conditions get.
    ``condition_prior``: the config whose channel ranges bound the condition estimates
    (required with ``"estimated"``). ``decoder``: an LDPC decoder (bits from soft LLRs) for coded BER.
    A point stops early once every estimator has ``min_bit_errors`` bit errors.
    """
    from tqdm.auto import tqdm

    if conditions not in CONDITION_MODES:
        raise ConfigError("conditions", conditions, f"choose {' or '.join(CONDITION_MODES)}")
    if not estimators:
        raise ConfigError("estimators", "", "name at least one estimator")
    names = [e.name for e in estimators]
    if len(set(names)) != len(names):
        raise ConfigError("estimators", ",".join(names), "names must not repeat")
    wants_estimates = conditions == "estimated" and any(getattr(e, "needs", "conditions") in ("noise", "conditions")
                                                         for e in estimators)
    if wants_estimates:
        if condition_prior is None:
            raise ConfigError("condition_prior", None, "estimated conditions need a prior (the config's ranges)")
        from wavefront.sim.conditions import estimate_conditions
    total = sum(frames if frames is not None else (p.available or 0) for p in points)
    bar = tqdm(total=total, unit="frame", disable=not progress, file=sys.stderr, desc="frames", dynamic_ncols=True)
    rows = []
    for p in points:
        want = frames if frames is not None else p.available
        if want is None:
            raise ConfigError("frames", None, "give the number of frames per simulated point")
        acc = {e.name: _Acc() for e in estimators}
        bound_sum, done = 0.0, 0
        bar.set_postfix_str(f"{p.sweep} {p.axis} {p.axis_value:g}".strip())
        for fr in p.batches():
            if done >= want:
                break
            if done + len(fr) > want:  # a folder batch larger than what is left
                fr = _head(fr, want - done)
            b = len(fr)
            true_meta = fr.meta
            meta_for = {"truth": true_meta, "none": true_meta}
            if wants_estimates:
                est_meta = estimate_conditions(fr.pilots_ls, condition_prior)
                meta_for.update(noise=est_meta, conditions=est_meta)
            else:
                meta_for.update(noise=true_meta, conditions=true_meta)
            nv = fr.noise_var.double().cpu()
            snr_cfg = -10 * torch.log10(nv) - p.config.snr_offset_db  # the bound in the config's SNR convention
            bound_sum += float(genie_mse(p.config, snr_cfg, fr.delay_spread_s.double().cpu(), fr.doppler_hz.double().cpu(),
                                         profile=fr.profile).sum())
            h_energy = float(fr.h.abs().square().sum())
            data = None
            if fr.y is not None:
                data = ~_data_mask(p.config, fr.h.device)
                y_d, cw = fr.y[:, data], fr.codewords
                bps = p.config.ofdm.bits_per_symbol
            for est in estimators:
                needs = getattr(est, "needs", "conditions")
                h_hat = fr.h if getattr(est, "is_perfect", False) else est.estimate(fr.pilots_ls, meta_for.get(needs, true_meta))
                a = acc[est.name]
                err = (h_hat - fr.h).abs().square()
                per_frame = err.mean((1, 2)).double()
                a.se += float(err.sum())
                a.se2 += float(per_frame.square().sum())
                a.sh += h_energy
                a.n += err.numel()
                if data is not None:
                    x_hat, no = equalize(y_d, h_hat[:, data], fr.noise_var, equalizer)
                    a.err += bit_errors(cw, demap(x_hat, no, bps, hard=True))
                    a.bits += cw.numel()
                    if decoder is not None:
                        wrong = decoder(demap(x_hat, no, bps, hard=False)) != fr.bits
                        a.cerr += int(wrong.sum())
                        a.cbits += wrong.numel()
                        a.blk += int(wrong.any(1).sum())
            done += b
            bar.update(b)
            if min_bit_errors and data is not None and all(a.err >= min_bit_errors for a in acc.values()):
                break
        if frames is not None:
            bar.update(max(0, want - done))
        if done == 0:
            continue
        bound_db = 10 * math.log10(bound_sum / done)
        for est in estimators:
            a = acc[est.name]
            mean = a.se / a.n
            mse_db = 10 * math.log10(mean) if mean > 0 else -math.inf
            nmse_db = 10 * math.log10(a.se / a.sh) if a.se > 0 else -math.inf
            var = max(a.se2 / done - mean * mean, 0.0)
            se_db = 10 / math.log(10) * math.sqrt(var / done) / mean if mean > 0 else 0.0
            has_bits = a.bits > 0
            rows.append(Row(p.sweep, p.axis, p.axis_value, p.snr_db, round(p.delay_spread_s * 1e9, 6), p.doppler_hz, est.name,
                            given_text(est, conditions), done, mse_db, se_db, nmse_db, bound_db, mse_db - bound_db,
                            a.err / a.bits if has_bits else None, a.err if has_bits else None, a.bits if has_bits else None,
                            a.cerr / a.cbits if a.cbits else None, a.blk / done if a.cbits else None,
                            pilot_text(p.config), getattr(est, "trained_on", None),
                            p.realization or p.config.realization_text))
    bar.close()
    return rows


def _head(fr: Frames, n: int) -> Frames:
    from dataclasses import fields

    kw = {}
    for f in fields(fr):
        v = getattr(fr, f.name)
        kw[f.name] = v[:n] if isinstance(v, torch.Tensor) and v.dim() and f.name != "pilot_symbols" else v
    return Frames(**kw)


_MASKS: dict = {}


def _data_mask(config: SystemConfig, device) -> torch.Tensor:
    """Returns the pilot mask [F, T] bool of ``config`` on ``device`` (cached)."""
    o = config.ofdm
    key = (tuple(o.pilot_subcarriers), tuple(o.pilot_symbols), o.grid_shape, str(device))
    if key not in _MASKS:
        m = torch.zeros(o.grid_shape, dtype=torch.bool)
        m[torch.tensor(o.pilot_subcarriers)[:, None], torch.tensor(o.pilot_symbols)[None, :]] = True
        _MASKS[key] = m.to(device)
    return _MASKS[key]


# The AdaFortiTran paper's training ranges: the default prior of what a receiver may meet.
PAPER_TRAIN_RANGES = {"snr_db": (0.0, 25.0), "delay_spread_s": (25e-9, 300e-9), "doppler_hz": (50.0, 1000.0)}


def prior_config(config: SystemConfig, points: list[Point] | None = None,
                 ranges: dict | None = None) -> SystemConfig:
    """Returns ``config`` with channel ranges spanning ``ranges`` (default: the paper's training ranges) and every point.

    This is what a receiver designer may assume: the operating ranges, not each frame's truth.
    Robust LMMSE designs for its top end; condition estimates are searched within it.
    """
    ranges = dict(PAPER_TRAIN_RANGES if ranges is None else ranges)
    out = {}
    for k in COND_FIELDS:
        lo, hi = ranges[k]
        for p in points or []:
            v = getattr(p, k)
            lo, hi = min(lo, v), max(hi, v)
        out[k] = [lo, hi]
    return config.updated(channel=out)
