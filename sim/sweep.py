"""Monte-Carlo sweeps: MSE, NMSE and BER per estimator along one axis, beside the MMSE bound.

A sweep is a list of points along one channel field (SNR, Doppler or delay spread), run by the
one experiment engine (:mod:`wavefront.sim.experiment`): every estimator sees the same frames,
and each row reports ``mse_db`` with its Monte-Carlo standard error, ``nmse_db``, BER after
one-tap equalisation and hard demapping (``perfect`` uses the true channel), coded BER and BLER
with ``ldpc_rate``, the genie-LMMSE bound averaged over the point's frames and the gap to it,
and what the estimator was given. With ``channel.ici`` the frames carry inter-carrier
interference, the label is each symbol's average channel, and the genie LMMSE and the bound
treat the ICI as extra noise; the result's spec says which (``ici``).

What estimators may assume comes from :func:`wavefront.sim.experiment.prior_config`: the
paper's training ranges (the SNR range widened to the sweep's points), or ``prior_ranges``.
Robust LMMSE designs for their top end;
with ``conditions="estimated"`` (default) the SNR, delay spread and Doppler that condition-aware
estimators read are estimated from each frame's pilots within those ranges.

A point stops early once every estimator has ``min_bit_errors`` bit errors, never before
``min_frames`` frames, or at ``frames``. Where the config draws a condition per frame (a range it
holds), the point's MSE is a Bayes risk whose per-frame spread is wide, so ``min_frames`` defaults
to :data:`DRAWN_MIN_FRAMES` there (with ``min_bit_errors``); at fixed conditions to 0.

A sweep scales out over processes, GPUs or nodes with the same frames as one process:
``run_sweep(spec, rank=r, world=w)`` in each rank of a ``torch.distributed`` group (torchrun),
or :func:`run_sweep_partial` in each of ``w`` array jobs followed by :func:`merge_sweep_partials`.
Batch ``i`` of every point belongs to rank ``i % w``; the counts, and where a point stops,
are those of one process (see :mod:`wavefront.sim.experiment`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from wavefront import __version__
from wavefront.errors import ConfigError
from wavefront.sim.config import GRID_STEPS, SYSTEM_LEVEL_PROFILES, SystemConfig, profile_label
from wavefront.sim.estimators import classical_estimators
from wavefront.sim.impairments import IMPAIRMENT_FIELDS, IMPAIRMENT_LABELS
from wavefront.sim.mimo import frame_generator, pilots_per_user
from wavefront.sim.experiment import (
    CONDITION_MODES, ERROR_VARIANCES, Row, half_interval_db, mark_in_prior, merge_partials, prior_config, prior_ranges_record,
    run_experiment, run_partial, simulated_points,
)
from wavefront.sim.progress import first_difference, open_progress
from wavefront.utils import atomic_write_csv, atomic_write_json, check_memory, finish_figure, resolve_device

AXES = {"snr_db": ("SNR", "dB", 1.0), "doppler_hz": ("Doppler", "Hz", 1.0), "delay_spread_s": ("delay spread", "ns", 1e9)}
PLOT_NAMES = {"snr_db": "snr", "doppler_hz": "doppler", "delay_spread_s": "delay_spread"}
# min_frames where a point draws a condition per frame and min_bit_errors may stop it (capped at frames): over
# configs/prior-12x2.yaml (batch 32) the Monte-Carlo SE of the MSE is 0.56 dB (genie, 0 dB) and 0.82 dB (LS, SNR 0-25
# dB drawn, 500 Hz) after one batch of 32 frames, 0.22 and 0.31 dB after 256; the 32-frame MSE was 1.6 dB off
DRAWN_MIN_FRAMES = 256


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
    conditions: str = "estimated"  # what condition-aware estimators are given: estimated | true
    prior_ranges: dict = field(default_factory=dict)  # {field: (low, high)} replacing the paper's training ranges
    error_variance: str = "stated"  # what the MIMO detector takes per estimate: stated | model | calibrated (run_experiment)
    # frames a point runs before min_bit_errors may stop it; None: DRAWN_MIN_FRAMES (at most frames) where the config
    # draws a condition per frame and min_bit_errors is set, else 0. Resolved in __post_init__ (min_frames_floor says
    # whether the floor set it)
    min_frames: int | None = None

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
        if self.min_frames is not None:
            if not isinstance(self.min_frames, int) or self.min_frames < 0:
                raise ConfigError("min_frames", self.min_frames, "must be a non-negative integer")
            if self.min_frames > self.frames:
                raise ConfigError("min_frames", self.min_frames, f"must be at most frames={self.frames} (a point "
                                                                 "never runs more)")
            if self.min_frames and self.min_bit_errors is None:
                raise ConfigError("min_frames", self.min_frames, "holds back the early stop of min_bit_errors: give "
                                                                 "--min-bit-errors too")
        self.min_frames_floor = self.min_frames is None and self.min_bit_errors is not None and self.draws_per_frame
        if self.min_frames is None:
            self.min_frames = min(self.frames, DRAWN_MIN_FRAMES) if self.min_frames_floor else 0
        if not self.estimators:
            raise ConfigError("estimators", "", "name at least one estimator")
        if len(set(self.estimators)) != len(self.estimators):
            raise ConfigError("estimators", ",".join(self.estimators), "names must not repeat")
        if self.ldpc_rate is not None and not (0.0 < self.ldpc_rate < 1.0):
            raise ConfigError("ldpc_rate", self.ldpc_rate, "must be in (0, 1)")
        if self.conditions not in CONDITION_MODES:
            raise ConfigError("conditions", self.conditions, f"choose {' or '.join(CONDITION_MODES)}")
        if self.error_variance not in ERROR_VARIANCES:
            raise ConfigError("error_variance", self.error_variance, f"choose {' or '.join(ERROR_VARIANCES)}")
        if self.error_variance != "stated" and not self.config.mimo.is_mimo:
            raise ConfigError("error_variance", self.error_variance, "is for the MIMO detector (--rx-antennas, "
                                                                     "--users): the SISO equalizer takes no error variance")
        if self.equalizer != "zf" and self.config.mimo.is_mimo:  # it would be recorded and do nothing
            raise ConfigError("equalizer", self.equalizer, "is the SISO one-tap equaliser: with several antennas or "
                                                           "users the receiver detects with LMMSE (--error-variance "
                                                           "sets the error variance it takes)")
        self.point_configs = [_point_config(self.config, self.axis, v) for v in self.values]  # validates every point

    @property
    def draws_per_frame(self) -> bool:
        """Whether every point draws a condition per frame: the config holds a range on an axis the sweep does not
        sweep, on a receiver impairment (``cfo_hz: [-200, 200]``) or on the antennas' correlation."""
        ch, mimo = self.config.channel, self.config.mimo
        drawn = [getattr(ch, k) for k in AXES if k != self.axis] + [getattr(ch, k) for k in IMPAIRMENT_FIELDS]
        drawn.append(mimo.rx_correlation)
        return any(isinstance(v, (list, tuple)) for v in drawn)

    def conditions_list(self) -> list[dict]:
        """One condition dict per swept value; a field the sweep does not sweep keeps the config's value, and a
        range there (``doppler_hz: [50, 1000]``) is drawn per frame at every point (see ``simulated_points``)."""
        ch = self.config.channel
        fixed = {k: getattr(ch, k) for k in AXES if k != self.axis}
        return [{**fixed, self.axis: float(v)} for v in self.values]

    @property
    def prior(self) -> SystemConfig:
        """The config whose channel ranges bound what estimators may assume (see :func:`prior_config`)."""
        return prior_config(self.config, self.conditions_list(), self.prior_ranges)


@dataclass
class SweepResult:
    spec: dict
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0


def _point_config(base: SystemConfig, axis: str, value) -> SystemConfig:
    return base.updated(channel={axis: value})


def sweep_fingerprint(spec_dict: dict) -> dict:
    """Returns what a sweep's progress store is keyed by: the recorded spec (every field that changes a batch's counts)."""
    import torch


    return {"command": "sweep", "spec": spec_dict, "versions": {"wavefront": __version__, "torch": torch.__version__}}


def run_sweep(spec: SweepSpec, estimators: list | None = None, progress: bool = True, rank: int = 0,
              world: int = 1, progress_folder: Path | None = None, overwrite: bool = False) -> SweepResult:
    """Runs the sweep and returns its rows (see the module docstring for the metrics).

    ``estimators``: estimator objects (learned ones resolved by the caller, e.g.
    :func:`wavefront.resolve.resolve_estimators`); default: ``spec.estimators`` resolved as
    classical estimators and ``perfect``. ``rank``, ``world``: this process's place in a
    running ``torch.distributed`` group; every rank returns the same result, that of one
    process, with ``spec["world_size"] = world``. ``progress_folder``: where rank 0 keeps every
    batch's counts (:mod:`wavefront.sim.progress`); a rerun with the same spec resumes there and
    gives the same result, another spec is refused unless ``overwrite``.
    """
    t0 = time.time()
    points, estimators, kwargs, spec_dict = _setup(spec, estimators)
    store = None
    if progress_folder is not None and rank == 0:
        store = open_progress(progress_folder, sweep_fingerprint(spec_dict), overwrite)
    rows = mark_in_prior(run_experiment(points, estimators, progress=progress, rank=rank, world=world, store=store,
                                        **kwargs), spec.prior_ranges)
    return SweepResult(spec={**spec_dict, "world_size": world}, rows=rows, seconds=time.time() - t0)


def run_sweep_partial(spec: SweepSpec, estimators: list | None = None, progress: bool = True, rank: int = 0,
                      world: int = 1, progress_folder: Path | None = None, overwrite: bool = False) -> dict:
    """Returns array job ``rank`` of ``world``'s share of the sweep: per-batch counts for :func:`merge_sweep_partials`.

    No process group is needed. A job cannot see the others' bit errors, so it runs every
    batch it owns up to ``spec.frames``; the merge stops each point where one process would.
    The record (JSON-ready) is :func:`wavefront.sim.experiment.run_partial`'s plus
    ``command: "sweep"``, ``spec`` and ``seconds``. ``progress_folder``, ``overwrite``: as
    :func:`run_sweep` (the jobs may share one folder: each stores its own batches).
    """
    t0 = time.time()
    points, estimators, kwargs, spec_dict = _setup(spec, estimators)
    store = None
    if progress_folder is not None:
        store = open_progress(progress_folder, sweep_fingerprint(spec_dict), overwrite)
    part = run_partial(points, estimators, progress=progress, rank=rank, world=world, store=store, **kwargs)
    return {**part, "command": "sweep", "spec": spec_dict, "prior_ranges": prior_ranges_record(spec.prior_ranges),
            "seconds": time.time() - t0}


def merge_sweep_partials(partials: list[dict]) -> SweepResult:
    """Returns the one-process result of a sweep from its array jobs' records (see :func:`run_sweep_partial`).

    ``seconds`` is the jobs' summed compute time. Raises ConfigError when the records come from
    different sweeps, or a rank is missing or repeated.
    """
    for q in partials:
        if q.get("command") != "sweep":
            raise ConfigError("partials", q.get("command"), "not a sweep's partial file (merge a sweep's files together)")
        if not isinstance(q.get("spec"), dict):  # a KeyError below otherwise
            raise ConfigError("partials", f"rank {q.get('rank')}", "is a damaged partial file (spec is missing); rerun "
                                                                  "its job (the same command, with its --rank)")
    first = partials[0]
    for q in partials[1:]:
        diff = first_difference(q["spec"], first["spec"])  # the value that differs, not the whole config around it
        if diff:
            key, mine, theirs = diff
            raise ConfigError(f"spec.{key}", mine, f"differs between partial files (rank {q['rank']}: {mine!r}, rank "
                              f"{first['rank']}: {theirs!r}): they come from different sweeps")
    rows = merge_partials(partials)
    return SweepResult(spec={**first["spec"], "world_size": first["world"]}, rows=rows,
                       seconds=sum(q["seconds"] for q in partials))


def _setup(spec: SweepSpec, estimators: list | None):
    """Returns the sweep's points, estimators, the engine's keywords and the spec as recorded in results."""
    dev = resolve_device(spec.device)
    check_sweep_memory(spec, dev)
    prior = spec.prior
    if estimators is None:
        estimators = classical_estimators(spec.estimators, prior, spec.robust_options)
    points = simulated_points(spec.config, spec.conditions_list(), spec.frames, spec.batch_size, spec.seed, dev,
                              with_data=True, ldpc_rate=spec.ldpc_rate, sweep=PLOT_NAMES[spec.axis], axis=spec.axis)
    decoder = None
    if spec.ldpc_rate is not None:
        decoder = frame_generator(spec.point_configs[0], dev, ldpc_rate=spec.ldpc_rate).decoder
    kwargs = dict(frames=spec.frames, conditions=spec.conditions, condition_prior=prior, equalizer=spec.equalizer,
                  min_bit_errors=spec.min_bit_errors, decoder=decoder, error_variance=spec.error_variance,
                  min_frames=spec.min_frames)
    pr = prior.channel
    spec_dict = {"axis": spec.axis, "values": spec.values, "estimators": [e.name for e in estimators],
                 "frames": spec.frames, "batch_size": spec.batch_size, "seed": spec.seed,
                 "min_bit_errors": spec.min_bit_errors, "equalizer": spec.equalizer, "ldpc_rate": spec.ldpc_rate,
                 "robust_options": spec.robust_options, "conditions": spec.conditions,
                 "prior": {"snr_db": pr.snr_db, "delay_spread_s": pr.delay_spread_s, "doppler_hz": pr.doppler_hz},
                 "device": str(dev.type), "snr_convention": spec.config.snr_convention_text,
                 "ici": spec.config.ici_text, "channel_realization": spec.config.realization_text,
                 "config": json.loads(spec.config.to_json())}
    if spec.min_frames:  # 0 (every fixed-condition sweep by default) leaves specs and progress fingerprints as they were
        spec_dict["min_frames"] = spec.min_frames
        if spec.min_frames_floor:
            spec_dict["min_frames_floor"] = (f"the floor where conditions are drawn per frame, min(frames, "
                                             f"{DRAWN_MIN_FRAMES}); --min-frames sets another")
    if spec.config.mimo.is_mimo:  # SISO specs (and their progress fingerprints) stay as they were
        m = spec.config.mimo
        spec_dict.update({"mimo": {"rx_antennas": m.num_rx_antennas, "users": m.num_users,
                                   "rx_correlation": m.rx_correlation, "array": m.array,
                                   "pilots": ("Kronecker pattern: the pilot subcarriers dealt to the users in turn"
                                              if m.pilots == "kronecker" else
                                              f"NR DM-RS {m.pilots}: user u on port u, CDM groups with orthogonal "
                                              "cover codes, no data on DM-RS symbols"),
                                   "detector": "LMMSE per resource element with each estimate's error variance "
                                               "(Sionna LinearDetector 'lmmse' semantics); --equalizer is unused",
                                   "conditions": "delay spread, Doppler and SNR drawn per frame, shared by every user",
                                   **({"spatial": f"rays: each user's CDL rays on the base station's ULA at their "
                                                  f"departure angles, {m.antenna_spacing_wavelengths:g} wavelengths "
                                                  f"apart (rx_correlation unused)"}
                                      if m.spatial == "rays" else {})},
                          "pilots_per_user": pilots_per_user(spec.config)})
    if spec.error_variance == "calibrated":  # the default leaves specs (and progress fingerprints) as they were
        spec_dict["error_variance"] = ("calibrated: perfect CSI 0; every other estimate detected with its own MSE per "
                                       "element on a held-out batch at the point (true conditions where read), "
                                       "one value per point")
    elif spec.error_variance == "model":
        spec_dict["error_variance"] = ("model: perfect CSI 0; lmmse-genie its closed-form MSE; lmmse-estimated the "
                                       "genie's closed-form MSE at its ML conditions; mmse-bayes its posterior variance "
                                       "(sum_k w_k (mse_k + |h_k - h_bar|^2) per RE); lmmse-robust its LMMSE MSE under "
                                       "its assumed covariance; the others sigma^2 (Sionna's LS convention); per frame")
    return points, estimators, kwargs, spec_dict


# Grid-sized complex64 tensors alive per frame while a batch is measured (frames, pilots,
# received grid, each estimate and its error, LMMSE and equaliser temporaries): an upper
# estimate, so a batch refused here would surely not have fit.
_GRID_TENSORS_PER_FRAME = 16


def batch_bytes(config: SystemConfig, batch_frames: int) -> int:
    """Returns about the memory [bytes] one batch of ``batch_frames`` frames of ``config`` takes while measured."""
    f, t = config.ofdm.grid_shape
    per_frame = 8 * f * t * _GRID_TENSORS_PER_FRAME
    if config.channel.time_domain:  # the time-domain path holds every sample of every symbol, per tap
        per_frame *= 4
    m = config.mimo
    per_frame *= m.num_rx_antennas * m.num_users  # h and every estimate hold R U grids
    return int(batch_frames) * per_frame


def check_sweep_memory(spec: SweepSpec, device) -> None:
    """Refuses, before anything is allocated, a batch whose tensors would not fit ``device``'s free memory."""
    frames = min(spec.batch_size, spec.frames)
    check_memory("batch_size", spec.batch_size, batch_bytes(spec.config, frames), device,
                 f"a batch of {frames} frames of {'x'.join(map(str, spec.config.ofdm.grid_shape))}; lower --batch-size")


def format_table(result: SweepResult) -> str:
    """Returns the sweep as a text table, one block per point with the bound on top, and what each estimator was given."""
    axis = result.spec["axis"]
    name, unit, scale = AXES[axis]
    coded = result.spec.get("ldpc_rate") is not None
    # 16 columns for the names, wider only when one needs it (lmmse-oracle-support), so other tables keep their layout
    w = max([16] + [len(r.estimator) + 1 for r in result.rows])
    head = f"{name + ' ' + unit:>16}  {'estimator':<{w}}{'MSE dB':>9}{'+-SE':>6}{'NMSE dB':>9}{'BER':>11}"
    head += f"{'coded BER':>11}{'BLER':>9}" if coded else ""
    head += f"{'gap dB':>8}"
    lines = [head, "-" * len(head)]
    last = None
    for r in result.rows:
        if r.axis_value != last:
            outside = "   (outside the prior)" if r.in_prior is False else ""
            bound = f"{r.bound_db:>9.2f}" if not math.isnan(r.bound_db) else f"{'n/a':>9}"  # no closed form (UMi, UMa)
            lines.append(f"{r.axis_value * scale:>16g}  {'MMSE bound':<{w}}{bound}{outside}")
            last = r.axis_value
        mse = "     -inf" if math.isinf(r.mse_db) else f"{r.mse_db:>9.2f}"
        nmse = "     -inf" if math.isinf(r.nmse_db) else f"{r.nmse_db:>9.2f}"
        ber = f"{r.ber:>11.3e}" if r.ber is not None else f"{'-':>11}"
        line = f"{'':>16}  {r.estimator:<{w}}{mse}{r.mse_se_db:>6.2f}{nmse}{ber}"
        line += f"{r.coded_ber:>11.3e}{r.bler:>9.3f}" if coded else ""
        line += "" if math.isinf(r.gap_db) or math.isnan(r.gap_db) else f"{r.gap_db:>8.2f}"
        lines.append(line)
    lines.append("given:")
    for est, given in dict.fromkeys((r.estimator, r.given) for r in result.rows):
        trained = next((r.trained_on for r in result.rows if r.estimator == est and r.trained_on), None)
        lines.append(f"  {est}: {given}" + (f"; trained on {trained}" if trained else ""))
    if result.rows:
        lines.append(f"pilots: {result.rows[0].pilots}; SNR convention: {result.spec.get('snr_convention', 'per-re')}")
        lines.append(f"ICI: {_ici_line(result.spec)}")
        lines.append(f"channel realization: {result.rows[0].realization}")
        held = _held_text(result.spec)
        if held:
            lines.append(held)
        if result.spec.get("min_frames"):  # absent where it is 0: those tables read as they did
            floor = result.spec.get("min_frames_floor")
            lines.append(f"early stop: at {result.spec['min_bit_errors']} bit errors per estimator, never before "
                         f"{result.spec['min_frames']} frames" + (f" ({floor})" if floor else ""))
    return "\n".join(lines)


def _ici_line(spec: dict) -> str:
    """Returns the spec's ``ici`` text for the table, its impairments as the command line gives them.

    ``results.json`` keeps ``ici`` as the config words it (``cfo_hz=(-200.0, 200.0)``); the table reads
    ``CFO -200…200 Hz (drawn per frame)`` from the recorded channel instead.
    """
    text = spec.get("ici", "not modelled")
    marker = "; receiver impairments "
    ch = (spec.get("config") or {}).get("channel") or {}
    parts = []
    for k, (name, unit) in IMPAIRMENT_LABELS.items():
        v = ch.get(k)
        if v is None:
            continue
        drawn = isinstance(v, (list, tuple))
        parts.append(f"{name} {f'{v[0]:g}…{v[1]:g}' if drawn else f'{v:g}'} {unit}" + (" (drawn per frame)" if drawn else ""))
    if marker not in text or not parts:
        return text
    head, rest = text.split(marker, 1)
    note = rest[rest.index(" (label without"):] if " (label without" in rest else ""
    return head + marker + ", ".join(parts) + note


def _held(ch: dict, axis: str, compact: bool = False) -> list[tuple[str, bool]]:
    """Returns ``(text, drawn per frame)`` for each condition a sweep along ``axis`` holds, from a recorded config's
    channel ``ch``: ``("Doppler 50-1000 Hz", True)``, or with a step grid (``doppler_step_hz: 50``, drawn from
    ``low:step:high``) ``("Doppler 50-1000 Hz on a 50 Hz grid", True)``, or where ``compact`` (a plot's title)
    ``("Doppler 50,100,…,1000 Hz", True)`` (not a colon range, which the CLI reads start:stop:step and the config
    low:step:high). A scenario's delay spread (drawn by the scenario) is left out."""
    system = ch.get("profile") in SYSTEM_LEVEL_PROFILES
    out = []
    for k, (name, unit, scale) in AXES.items():
        if k == axis or k not in ch or (system and k == "delay_spread_s"):
            continue
        drawn = isinstance(ch[k], (list, tuple))
        step = ch.get(GRID_STEPS[k]) if drawn else None  # a fixed value ignores its step
        if step and compact:
            text = f"{name} {ch[k][0] * scale:g},{(ch[k][0] + step) * scale:g},…,{ch[k][1] * scale:g} {unit}"
        else:
            text = f"{name} {_fmt(ch[k], scale)} {unit}" + (f" on a {step * scale:g} {unit} grid" if step else "")
        out.append((text, drawn))
    return out


def _held_text(spec: dict) -> str:
    """Returns the line naming the conditions a sweep holds (each point's), or draws per frame over a range."""
    ch = (spec.get("config") or {}).get("channel")
    if not ch:
        return ""
    held = _held(ch, spec["axis"])
    text = "held at each point: " + ", ".join(t + (" (drawn per frame)" if d else "") for t, d in held)
    return text + ("; MSE and bound are their averages over the frames (the Bayes risk over those ranges)"
                   if any(d for _, d in held) else "")


def save_result(result: SweepResult, out: Path) -> list[Path]:
    """Writes results.json, results.csv and the MSE and BER plots into ``out``; returns the paths."""
    # Each file whole or absent (temporary file, fsync, rename); plots and CSV first, results.json
    # last, so a results.json on disk means the whole result was saved.
    rows = [r.record() for r in result.rows]
    cs = atomic_write_csv(out / "results.csv", rows)
    plots = plot_result(result, out)
    from wavefront.sim.impairments import impairment_record

    imp = impairment_record(result.spec.get("config", {}).get("channel", {}))  # recorded only when on
    js = atomic_write_json(out / "results.json", {"spec": result.spec, **({"impairments": imp} if imp else {}),
                                                  "seconds": result.seconds, "rows": rows}, indent=2, default=lambda v: None)
    return [js, cs, *plots]


def _knows(given: str) -> str:
    """Returns a legend tag for what an estimator was given: ``" (est. cond.)"``, ``" (true cond.)"`` or nothing."""
    if given.startswith("SNR, delay spread and Doppler estimated"):
        return " (est. cond.)"
    if given.startswith("SNR, delay spread and Doppler true"):
        return " (true cond.)"
    if given.startswith("noise variance estimated"):
        return " (est. noise)"
    return ""


def _fmt(value, scale: float) -> str:
    if isinstance(value, (list, tuple)):
        return f"{value[0] * scale:g}-{value[1] * scale:g}"
    return f"{value * scale:g}"


def _wrap(parts: list[str], width: int) -> str:
    """Returns the comma lists ``parts`` joined by ", " in lines of at most ``width`` characters, broken at commas."""
    lines = [""]
    for item in ", ".join(parts).split(", "):
        if lines[-1] and len(lines[-1]) + 2 + len(item) > width:
            lines[-1] += ","
            lines.append(item)
        else:
            lines[-1] += (", " if lines[-1] else "") + item
    return "\n".join(lines)


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
    metrics = [("mse_db", "MSE (dB), bars: 95% Monte-Carlo interval", "mse"), ("ber", "BER", "ber")]
    if result.spec.get("ldpc_rate") is not None:
        metrics.append(("bler", f"BLER (LDPC rate {result.spec['ldpc_rate']:g})", "bler"))
    if not any(r.ber for r in result.rows):
        metrics = metrics[:1]
    for metric, ylabel, fname in metrics:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for e in ests:
            ys = [getattr(by[(e, x)], metric) for x in xs]
            if metric == "mse_db" and all(math.isinf(y) for y in ys):
                continue
            if metric != "mse_db":
                ys = [y if y else float("nan") for y in ys]
            label = e + _knows(by[(e, xs[0])].given)
            line, = ax.plot([x * scale for x in xs], ys, marker="o", label=label)
            if metric == "mse_db":  # each point's 95% Monte-Carlo interval: a genie a little below the bound is noise
                half = [half_interval_db(by[(e, x)].mse_se_db, by[(e, x)].frames) for x in xs]
                ax.errorbar([x * scale for x in xs], ys, yerr=half, fmt="none", ecolor=line.get_color(), capsize=2,
                            elinewidth=0.8, label=f"_{label} interval")  # "_": out of the legend, which keeps the lines
        if metric == "mse_db":
            if not all(math.isnan(by[(ests[0], x)].bound_db) for x in xs):  # no bound without a closed form (UMi)
                # one point: a dashed line of one point draws nothing, so the bound gets a marker (and the legend)
                ax.plot([x * scale for x in xs], [by[(ests[0], x)].bound_db for x in xs], "k--", label="MMSE bound",
                        **({"marker": "D", "markersize": 7} if len(xs) == 1 else {}))
        else:
            ax.set_yscale("log")
        # shaded only where a learned row is shown: classical rows assume no training prior
        learned = any(r.trained_on for r in result.rows)
        outside = [x for x in xs if learned and by[(ests[0], x)].in_prior is False]
        half = 0.5 * min((b - a for a, b in zip(xs, xs[1:])), default=1.0) * scale
        for x in outside:  # points a model trained on the prior never saw
            ax.axvspan(x * scale - half, x * scale + half, color="0.9", zorder=0)
        cfg = result.spec["config"]
        ax.set_xlabel(f"{name} ({unit})" + (" (shaded: outside the prior)" if outside else ""))
        ax.set_ylabel(ylabel)
        ch = cfg["channel"]
        system = ch["profile"] in SYSTEM_LEVEL_PROFILES  # the scenario draws its delay spread
        fixed = [t + (" per frame" if d else "") for t, d in _held(ch, axis, compact=True)]
        m = result.spec.get("mimo")
        rho = m and m["rx_correlation"]
        rho = f"{rho[0]:g}–{rho[1]:g}" if isinstance(rho, (list, tuple)) else f"{rho:g}" if m else ""
        rho = "CDL rays" if m and "spatial" in m else "scenario" if system else f"rho {rho}"
        antennas = f"\n{m['rx_antennas']} antennas ({rho}) x {m['users']} users, " if m else ""
        ev = result.spec.get("error_variance") or ""
        calibrated = f", {ev.split(':')[0]} error variance" if ev else ""
        head = f"{profile_label(ch['profile'])}{' (Sionna)' if system else ''}, {', '.join(fixed)}, "
        tail = (f"{cfg['ofdm']['num_subcarriers']}x{cfg['ofdm']['num_symbols']} grid, {result.spec['frames']} "
                f"frames/point{calibrated}")
        if not antennas and len(head + tail) > 80:  # ranges drawn per frame: one line would run past the figure
            antennas = "\n"
        title = head + antennas + tail
        if not m and len(head) > 80:  # grids drawn per frame: the held conditions alone run past it; wrap them all
            title = _wrap([head[:-2], tail], 70)
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(finish_figure(fig, out / f"{fname}_vs_{PLOT_NAMES[axis]}.png", dpi=110))
    return paths
