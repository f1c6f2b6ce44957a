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

**Estimators** are :class:`wavefront.sim.estimators.Estimator` objects with ``name`` and
``estimate(pilots [B, P_f, P_t] c64, meta) -> [B, F, T] c64``. Their required attribute
``needs`` says what they are handed in ``meta`` (:func:`wavefront.sim.estimators.meta_for`);
an estimator without a valid ``needs`` is refused before any frame is drawn:

- ``"none"``: the pilots only, ``meta`` is empty (LS, and estimators that infer the conditions themselves);
- ``"noise"``: the noise variance and SNR only (robust LMMSE: its covariance is assumed);
- ``"conditions"``: SNR, delay spread and Doppler (condition-aware learned models);
- ``"truth"``: the true statistics by definition (genie LMMSE, perfect CSI).

With ``conditions="estimated"`` (the default), whatever an estimator reads besides the truth
comes from :func:`wavefront.sim.conditions.estimate_conditions` on the same pilots (with several
antennas or users, :func:`wavefront.sim.mimo_bayes.estimate_mimo_conditions`: one ML hypothesis a
frame from all its antennas and users, rho included when it is a range); with ``"true"`` it is the
frames' recorded conditions. Every row states what its estimator was given.

**Metrics** per point and estimator: ``mse_db`` (``10 log10 mean |H_hat - H|^2``), its
Monte-Carlo standard error ``mse_se_db`` (from the per-frame spread), ``nmse_db``, BER after
one-tap equalisation and hard demapping where the frames carry data (coded BER and BLER with
an LDPC decoder), ``bound_db`` (the genie LMMSE closed form averaged over the point's frames)
and ``gap_db = mse_db - bound_db``.

**Ranks.** One point's frames split across processes by batch index: batch ``i`` belongs to
rank ``i % world``. A batch's seed does not depend on the rank, so the union of the ranks'
batches is exactly the one-process set. Every point is counted in rounds of ``world``
batches (round ``r`` holds batches ``r*world ... r*world + world - 1``): each rank computes
its batch's counts, the counts are summed across ranks (``torch.distributed.all_reduce``,
each rank filling its own row), and every rank then adds the round's batches to the
point's totals *in batch order*, checking ``min_bit_errors`` after each batch, exactly as one
process does. So the totals, and the batch at which a point stops, are those of one process
(the sums are even added in the same order); a rank may compute up to ``world - 1`` batches
past the stop that are not counted. With one process (``world=1``) a round is one batch.
Array jobs without a process group use :func:`run_partial` (each job's per-batch counts) and
:func:`merge_partials`, which replays the batches in order under the same rule.
"""
from __future__ import annotations

import itertools
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from wavefront import paper
from wavefront.errors import ConfigError
from wavefront.sim.conditions import estimate_conditions
from wavefront.sim.config import GRID_STEPS, SYSTEM_LEVEL_PROFILES, SystemConfig
from wavefront.sim.estimators import check_estimator, meta_for
from wavefront.sim.frames import Frames
from wavefront.sim.link import bit_errors, demap, equalize
from wavefront.sim.lmmse import genie_mse
from wavefront.sim.dmrs import reserved_ofdm
from wavefront.sim.mimo import describe_pilots, error_variance, frame_generator, lmmse_detect, mimo_genie_mse
from wavefront.utils import atomic_write_json, derive_seed, parse_range, resolve_device

CONDITION_MODES = ("estimated", "true")
COND_FIELDS = ("snr_db", "delay_spread_s", "doppler_hz")


def condition_key(snr_db: float, delay_spread_s: float, doppler_hz: float) -> int:
    """Returns an integer naming a condition (mdB, ps, mHz), the part of a batch's seed that picks the point."""
    return derive_seed(round(snr_db * 1000), round(delay_spread_s * 1e12), round(doppler_hz * 1000))


@dataclass
class Point:
    """One test condition and its frames.

    ``batches()`` yields the point's :class:`Frames` in batch order until the source's all (a
    simulated point: its ``frames``). When ``batch_size`` is set (simulated points), every batch
    but the last holds ``batch_size`` frames and ``batches(start, step)`` draws only the
    batches ``start, start + step, ...``, each alone from its seed; otherwise a rank walks
    every batch and keeps its own.
    """

    sweep: str                      # which sweep it belongs to ("snr", "delay_spread", "doppler", or a folder name)
    axis: str                       # the channel field that varies along the sweep ("" if none)
    snr_db: float
    delay_spread_s: float
    doppler_hz: float
    config: SystemConfig            # the point's system config (generator, bound, profile)
    batches: Callable[[], Iterator[Frames]]
    available: int | None = None    # frames a folder holds; None: as many as asked
    batch_size: int | None = None   # frames per batch (the last may hold fewer) when batches(start, step) is supported
    realization: str | None = None  # how the frames' fading realizations were drawn; None: from ``config``
    calibration: Callable[[], Frames] | None = None  # a held-out batch at this point (simulated points; MIMO calibration)

    @property
    def axis_value(self) -> float:
        return getattr(self, self.axis) if self.axis else 0.0


def simulated_points(config: SystemConfig, conditions: list[dict], frames: int, batch_size: int, seed: int,
                     device="cpu", with_data: bool = True, ldpc_rate: float | None = None, sweep: str = "",
                     axis: str = "") -> list[Point]:
    """Returns points simulated from ``config`` at each of ``conditions`` (dicts of ``snr_db``, ``delay_spread_s``, ``doppler_hz``).

    A condition given as ``(low, high)`` is drawn per frame over that range (with the config's step
    grid, if any): the point's MSE is then the Bayes risk over it, its bound the mean of the frames'
    bounds, and the point's scalar (its row's label) the range's midpoint.
    """
    if not isinstance(frames, int) or frames < 1:
        raise ConfigError("frames", frames, "must be a positive integer")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("batch_size", batch_size, "must be a positive integer")
    dev = resolve_device(device)
    points = []
    for c in conditions:
        cfg = config.updated(channel={k: list(c[k]) if _is_range(c[k]) else c[k] for k in COND_FIELDS})
        mid = {k: (c[k][0] + c[k][1]) / 2 if _is_range(c[k]) else c[k] for k in COND_FIELDS}
        key = condition_key(mid["snr_db"], mid["delay_spread_s"], mid["doppler_hz"])
        ranges = [round(v * scale) for k, scale in zip(COND_FIELDS, (1e3, 1e12, 1e3)) if _is_range(c[k]) for v in c[k]]
        key = derive_seed(key, *ranges) if ranges else key  # a range is its own point, never its midpoint's

        def batches(start=0, step=1, cfg=cfg, key=key):
            gen = frame_generator(cfg, dev, ldpc_rate=ldpc_rate)
            for ib in itertools.count(start, step):
                b = min(batch_size, frames - ib * batch_size)
                if b <= 0:
                    return
                # The seed names the point and the batch, never the process that draws it.
                yield gen.generate(b, seed=derive_seed(seed, key, ib), with_data=with_data)

        def calibration(cfg=cfg, key=key):  # its own seed stream: never one of the point's measured batches
            return frame_generator(cfg, dev).generate(batch_size, seed=derive_seed(seed, key, CALIBRATION_STREAM),
                                                      with_data=False)

        points.append(Point(c.get("sweep", sweep), c.get("axis", axis), float(mid["snr_db"]), float(mid["delay_spread_s"]),
                            float(mid["doppler_hz"]), cfg, batches, batch_size=batch_size, calibration=calibration))
    return points


def _is_range(v) -> bool:
    return isinstance(v, (tuple, list))


CALIBRATION_STREAM = 0xCA1B  # derive_seed(seed, point key, CALIBRATION_STREAM): a point's held-out calibration batch
ERROR_VARIANCES = ("stated", "calibrated", "model")


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
    # inside the prior's ranges (see mark_in_prior); None: not checked. A label of the point, not a
    # measurement: rows of one experiment compare equal whether or not a caller has marked them.
    in_prior: bool | None = field(default=None, compare=False)
    # the conditions its frames drew per frame, {field: [low, high]} (SI units; the scalars above are then the ranges'
    # midpoints); None for a point of fixed conditions, whose records leave the key out
    drawn: dict | None = field(default=None, compare=False)

    def record(self) -> dict:
        """Returns the row as results.json and the CSV keep it (``drawn`` only where set)."""
        from dataclasses import asdict

        d = asdict(self)
        if d["drawn"] is None:
            del d["drawn"]
        return d


def given_text(est, conditions: str) -> str:
    """Returns what ``est`` was told: the truth, estimated or true conditions, or the pilots alone."""
    needs = est.needs
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
    """Returns the pilot layout in words, e.g. ``12x2: subcarriers 0::10, symbols 2,11`` (and how users share it)."""
    if config.mimo.is_mimo:
        return describe_pilots(config)
    return config.ofdm.pilot_layout.describe()


# The counts one batch adds to its point. floats [1 + 3 E] float64: the bound summed over the
# batch's frames, then per estimator the sum of |H_hat - H|^2, the sum of squared per-frame
# MSEs and the sum of |H|^2. ints [1 + 6 E] int64: frames, then per estimator resource
# elements, bit errors, bits, coded bit errors, coded bits and block errors.
_FLOATS = ("se", "se2", "sh")
_INTS = ("n", "err", "bits", "cerr", "cbits", "blk")


class _Tally:
    """A point's totals, added batch by batch in batch order (the order one process adds them in)."""

    def __init__(self, num_estimators: int):
        self.floats = [0.0] * (1 + len(_FLOATS) * num_estimators)
        self.ints = [0] * (1 + len(_INTS) * num_estimators)

    def add(self, floats: list[float], ints: list[int]) -> None:
        self.floats = [a + b for a, b in zip(self.floats, floats)]
        self.ints = [a + int(b) for a, b in zip(self.ints, ints)]

    @property
    def frames(self) -> int:
        return self.ints[0]

    def estimator(self, k: int) -> dict:
        """Returns estimator ``k``'s totals by name (``se``, ``se2``, ``sh``, ``n``, ``err``, ...)."""
        f, i = 1 + len(_FLOATS) * k, 1 + len(_INTS) * k
        return {**dict(zip(_FLOATS, self.floats[f:f + len(_FLOATS)])), **dict(zip(_INTS, self.ints[i:i + len(_INTS)]))}

    def enough_bit_errors(self, min_bit_errors: int | None) -> bool:
        """Returns whether every estimator has ``min_bit_errors`` bit errors (never without data or a threshold)."""
        if not min_bit_errors:
            return False
        n = (len(self.ints) - 1) // len(_INTS)
        return all(self.ints[1 + len(_INTS) * k + 1] >= min_bit_errors for k in range(n))

    def stops_early(self, min_bit_errors: int | None, min_frames: int = 0) -> bool:
        """Returns whether the point may stop before its frames: ``min_bit_errors`` reached, and ``min_frames`` frames counted."""
        return self.frames >= min_frames and self.enough_bit_errors(min_bit_errors)


@dataclass
class _Plan:
    """What every batch of an experiment is measured with (checked once, at the start)."""

    estimators: list
    conditions: str
    condition_prior: SystemConfig | None
    equalizer: str
    decoder: object
    wants_estimates: bool
    error_variance: str = "stated"
    _calibrated: dict = field(default_factory=dict)  # (point id, estimator name) -> its calibrated MSE
    _calibration: dict = field(default_factory=dict)  # point id -> the point's held-out Frames (drawn once)

    def detector_error_variance(self, p: Point, est, noise_var: torch.Tensor, bound: torch.Tensor,
                                model: torch.Tensor | None = None) -> torch.Tensor:
        """Returns the error variance [B] float64 that ``est``'s estimates are detected with at point ``p``.

        ``"stated"``: :func:`~wavefront.sim.mimo.error_variance` (perfect 0, the genie its closed-form MSE,
        the others sigma^2, Sionna's LS convention). ``"model"``: the same, except that an estimator whose model
        states its error (``model`` [B], from ``estimate_with_error_variance``: ``lmmse-estimated`` the genie's
        closed form at its ML conditions, ``mmse-bayes`` its posterior variance, ``lmmse-robust`` its MSE under
        its assumed covariance) is detected with that. ``"calibrated"``: perfect 0, every other estimator its own
        MSE per element on the point's held-out calibration batch (``Point.calibration``, true conditions for
        those that read them), one value per point, as a receiver calibrated offline at that SNR would state.
        """
        if self.error_variance in ("stated", "model") or getattr(est, "is_perfect", False):
            return error_variance(est, noise_var, bound, model if self.error_variance == "model" else None)
        key = (id(p), est.name)
        if key not in self._calibrated:
            if id(p) not in self._calibration:
                self._calibration[id(p)] = p.calibration()
            cal = self._calibration[id(p)]
            h_hat = est.estimate(cal.pilots_ls, meta_for(est.needs, cal.meta, None))
            self._calibrated[key] = float((h_hat - cal.h).abs().square().mean())
        return torch.full_like(noise_var, self._calibrated[key], dtype=torch.float64)


def _plan(estimators, conditions, condition_prior, equalizer, decoder, error_variance="stated") -> _Plan:
    if error_variance not in ERROR_VARIANCES:
        raise ConfigError("error_variance", error_variance, f"choose {' or '.join(ERROR_VARIANCES)}")
    if conditions not in CONDITION_MODES:
        raise ConfigError("conditions", conditions, f"choose {' or '.join(CONDITION_MODES)}")
    if not estimators:
        raise ConfigError("estimators", "", "name at least one estimator")
    for e in estimators:
        check_estimator(e)  # the engine never guesses what an estimator reads
    names = [e.name for e in estimators]
    if len(set(names)) != len(names):
        raise ConfigError("estimators", ",".join(names), "names must not repeat")
    wants_estimates = conditions == "estimated" and any(e.needs in ("noise", "conditions") for e in estimators)
    if wants_estimates and condition_prior is None:
        raise ConfigError("condition_prior", None, "estimated conditions need a prior (the config's ranges)")
    return _Plan(list(estimators), conditions, condition_prior, equalizer, decoder, wants_estimates, error_variance)


def _batch_counts(p: Point, fr: Frames, plan: _Plan) -> tuple[list[float], list[int]]:
    """Returns one batch's counts (see ``_FLOATS``/``_INTS``): every estimator on the batch's frames."""
    true_meta = fr.meta
    mimo = p.config.mimo.is_mimo
    est_meta = None
    if plan.wants_estimates and mimo:  # one ML hypothesis per frame from all its antennas and users
        from wavefront.sim.mimo_bayes import estimate_mimo_conditions  # it builds on wavefront.sim.mimo

        est_meta = estimate_mimo_conditions(fr.pilots_ls, plan.condition_prior)
    elif plan.wants_estimates:
        est_meta = estimate_conditions(fr.pilots_ls, plan.condition_prior)
    nv = fr.noise_var.double().cpu()
    snr_cfg = -10 * torch.log10(nv) - p.config.snr_offset_db  # the bound in the config's SNR convention
    if mimo and p.config.channel.profile in SYSTEM_LEVEL_PROFILES:  # no closed-form covariance: no bound
        bound = torch.full_like(nv, math.nan)
    elif mimo:
        bound = mimo_genie_mse(p.config, snr_cfg, fr.delay_spread_s.double().cpu(), fr.doppler_hz.double().cpu(),
                               rx_correlation=None if fr.rx_correlation is None else fr.rx_correlation.double().cpu())
    else:
        bound = genie_mse(p.config, snr_cfg, fr.delay_spread_s.double().cpu(), fr.doppler_hz.double().cpu(),
                          profile=fr.profile)
    bound_sum = float(bound.sum())
    h_energy = float(fr.h.abs().square().sum())
    data = None
    if fr.y is not None:
        data = ~_data_mask(p.config, fr.h.device)
        y_d, cw = fr.y[..., data], fr.codewords
        bps = p.config.ofdm.bits_per_symbol
        if mimo:  # every user's codewords, one row each
            cw = cw.reshape(-1, cw.shape[-1])
    floats, ints = [bound_sum], [len(fr)]
    for est in plan.estimators:
        model_ev = None
        if getattr(est, "is_perfect", False):
            h_hat = fr.h
        elif mimo and plan.error_variance == "model" and hasattr(est, "estimate_with_error_variance"):
            h_hat, model_ev = est.estimate_with_error_variance(fr.pilots_ls, meta_for(est.needs, true_meta, est_meta))
        else:
            h_hat = est.estimate(fr.pilots_ls, meta_for(est.needs, true_meta, est_meta))
        err = (h_hat - fr.h).abs().square()
        per_frame = err.mean(tuple(range(1, err.dim()))).double()
        n_err = n_bits = c_err = c_bits = blocks = 0
        if data is not None and mimo:
            x_hat, no = lmmse_detect(y_d, h_hat[..., data], fr.noise_var,
                                     plan.detector_error_variance(p, est, fr.noise_var, bound.to(fr.noise_var.device),
                                                                  model_ev))
            x_hat, no = x_hat.reshape(-1, x_hat.shape[-1]), no.reshape(-1, no.shape[-1])
            n_err, n_bits = bit_errors(cw, demap(x_hat, no, bps, hard=True)), cw.numel()
            if plan.decoder is not None:  # one codeword per user: blocks count codewords
                wrong = plan.decoder(demap(x_hat, no, bps, hard=False)) != fr.bits.reshape(x_hat.shape[0], -1)
                c_err, c_bits, blocks = int(wrong.sum()), wrong.numel(), int(wrong.any(1).sum())
        elif data is not None:
            x_hat, no = equalize(y_d, h_hat[:, data], fr.noise_var, plan.equalizer)
            n_err, n_bits = bit_errors(cw, demap(x_hat, no, bps, hard=True)), cw.numel()
            if plan.decoder is not None:
                wrong = plan.decoder(demap(x_hat, no, bps, hard=False)) != fr.bits
                c_err, c_bits, blocks = int(wrong.sum()), wrong.numel(), int(wrong.any(1).sum())
        floats += [float(err.sum()), float(per_frame.square().sum()), h_energy]
        ints += [err.numel(), int(n_err), n_bits, c_err, c_bits, blocks]
    return floats, ints


def _check_mimo(points: list[Point], plan: _Plan) -> None:
    """Refuses SISO-only estimators and estimated conditions on points with several antennas or users, and a
    calibrated error variance where there is no MIMO detector or no calibration batch."""
    if plan.error_variance != "stated":
        for p in points:
            if not p.config.mimo.is_mimo:
                raise ConfigError("error_variance", plan.error_variance, "is for the MIMO detector: the SISO "
                                                                         "equalizer takes no error variance")
            if plan.error_variance == "calibrated" and p.calibration is None:
                raise ConfigError("error_variance", "calibrated", f"needs simulated points ({p.sweep} has no "
                                                                  "held-out calibration frames)")
    if not any(p.config.mimo.is_mimo for p in points):
        return
    for e in plan.estimators:
        if not (getattr(e, "mimo", False) or getattr(e, "is_perfect", False)):
            raise ConfigError("estimators", e.name, "is a SISO estimator; with several antennas or users build it for "
                                                    "the MIMO config (wavefront.sim.mimo.mimo_estimators)")
    if not plan.wants_estimates:
        return
    names = [e.name for e in plan.estimators if e.needs in ("noise", "conditions")]
    system = [p.config.channel.profile for p in points if p.config.channel.profile in SYSTEM_LEVEL_PROFILES]
    if system:
        raise ConfigError("conditions", plan.conditions, f"the condition estimate searches a tap profile's statistics, "
                                                         f"which profile {system[0]} does not have ({', '.join(names)} "
                                                         "read them): use --conditions true")
    dmrs = [p.config.mimo.pilots for p in points if p.config.mimo.pilots != "kronecker"]
    if dmrs:
        raise ConfigError("conditions", plan.conditions, f"estimated conditions with NR DM-RS pilots ({dmrs[0]}) are not "
                                                         f"built yet ({', '.join(names)} read them): use --conditions true, "
                                                         "or the Kronecker pattern")


def _owned_batches(p: Point, want: int, rank: int, world: int, start: int = 0) -> Iterator[tuple[int, Frames]]:
    """Yields ``(batch index, frames)`` for the batches of ``p`` that ``rank`` owns (index % world), cut at ``want`` frames.

    ``start``: the first batch index wanted (those below are stored already): a simulated point
    draws nothing before it.
    """
    if p.batch_size is not None:  # each batch drawn alone from its seed
        first = start + (rank - start) % world
        pairs = ((i, i * p.batch_size, fr) for i, fr in zip(itertools.count(first, world), p.batches(first, world)))
    else:  # any other source: walk every batch, keep ours
        pairs = ((i, b, fr) for i, b, fr in _walk(p.batches(), rank, world) if i >= start)
    for i, before, fr in pairs:
        if before >= want:
            return
        yield i, (_head(fr, want - before) if before + len(fr) > want else fr)


def _walk(batches: Iterator[Frames], rank: int, world: int) -> Iterator[tuple[int, int, Frames]]:
    before = 0
    for i, fr in enumerate(batches):
        if i % world == rank:
            yield i, before, fr
        before += len(fr)


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    """Returns ``t`` summed over the ranks of the running process group (on the GPU under nccl)."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        on_gpu = t.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(on_gpu)
        return on_gpu.cpu()
    dist.all_reduce(t)
    return t


def _check_ranks(rank: int, world: int, group: bool) -> None:
    if not isinstance(world, int) or world < 1:
        raise ConfigError("world", world, "must be a positive integer")
    if not isinstance(rank, int) or not 0 <= rank < world:
        raise ConfigError("rank", rank, f"must satisfy 0 <= rank < world={world}")
    if group and world > 1:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or (dist.get_rank(), dist.get_world_size()) != (rank, world):
            raise ConfigError("world", world, f"rank {rank} of {world} needs a running torch.distributed process group "
                                              "of that size (torchrun); array jobs use run_partial and merge_partials")


def _stored_prefix(store, k: int) -> tuple[int, dict]:
    """Returns ``(n, batches)``: point ``k``'s stored batches and how many of them run unbroken from batch 0."""
    stored = store.batches(k) if store is not None else {}
    n = 0
    while n in stored:
        n += 1
    return n, stored


def run_experiment(points: list[Point], estimators: list, frames: int | None = None, conditions: str = "estimated",
                   condition_prior: SystemConfig | None = None, equalizer: str = "zf", min_bit_errors: int | None = None,
                   decoder=None, progress: bool = True, rank: int = 0, world: int = 1, store=None,
                   error_variance: str = "stated", min_frames: int = 0) -> list[Row]:
    """Runs every estimator on every point's frames and returns one :class:`Row` per (point, estimator).

    ``frames``: frames per point (default: all a folder holds; required for simulated points).
    ``conditions``: ``"estimated"`` or ``"true"``, what estimators that read conditions get.
    ``condition_prior``: the config whose channel ranges bound the condition estimates
    (required with ``"estimated"``). ``decoder``: an LDPC decoder (bits from soft LLRs) for coded BER.
    A point stops early once every estimator has ``min_bit_errors`` bit errors, and never before ``min_frames``
    frames (checked after each batch, so it stops at the first batch that ends at or past them).
    ``rank``, ``world``: this process's place in a running ``torch.distributed`` group (torchrun);
    the ranks split each point's batches (see the module docstring) and all return the same rows,
    those of one process. Only rank 0 shows progress.
    ``error_variance``: what the MIMO detector takes as each estimate's error variance, ``"stated"``,
    ``"model"`` or ``"calibrated"`` (:meth:`_Plan.detector_error_variance`).
    ``store``: a :class:`wavefront.sim.progress.ProgressStore` (read and written by rank 0 only):
    each point's stored batches are replayed instead of drawn and computed, and every batch
    counted is stored as it finishes, so a killed run resumes where it stopped with the same result.
    """
    from tqdm.auto import tqdm

    _check_ranks(rank, world, group=True)
    plan = _plan(estimators, conditions, condition_prior, equalizer, decoder, error_variance)
    _check_mimo(points, plan)
    total = sum(frames if frames is not None else (p.available or 0) for p in points)
    bar = tqdm(total=total, unit="frame", disable=not progress or rank != 0, file=sys.stderr, desc="frames",
               dynamic_ncols=True)
    n_f, n_i = 1 + len(_FLOATS) * len(estimators), 1 + len(_INTS) * len(estimators)
    rows = []
    for k, p in enumerate(points):
        want = _wanted(p, frames)
        tally = _Tally(len(estimators))
        bar.set_postfix_str(f"{p.sweep} {p.axis} {p.axis_value:g}".strip())
        # Batches 0 .. stored_n - 1 are on disk (rank 0 reads them; the others learn how many).
        stored_n, stored = _stored_prefix(store if rank == 0 else None, k)
        if world > 1:
            stored_n = int(_all_sum(torch.tensor([stored_n], dtype=torch.int64))[0])
        mine = _owned_batches(p, want, rank, world, start=stored_n)
        for rnd in itertools.count():
            floats = torch.zeros(world, n_f, dtype=torch.float64)
            ints = torch.zeros(world, n_i, dtype=torch.int64)
            for row in range(world):  # stored batches of this round: rank 0 fills them in, nobody computes them
                if rnd * world + row < stored_n and rank == 0:
                    f, i = stored[rnd * world + row]
                    floats[row], ints[row] = torch.tensor(f, dtype=torch.float64), torch.tensor(i, dtype=torch.int64)
            item = next(mine, None) if rnd * world + rank >= stored_n else None
            if item is not None:
                index, fr = item
                assert index == rnd * world + rank, (index, rnd, rank)
                f, i = _batch_counts(p, fr, plan)
                floats[rank], ints[rank] = torch.tensor(f, dtype=torch.float64), torch.tensor(i, dtype=torch.int64)
            if world > 1:
                floats, ints = _all_sum(floats), _all_sum(ints)
            before, stop = tally.frames, False
            for row in range(world):  # the round's batches in batch order, as one process meets them
                if int(ints[row, 0]) == 0:  # no such batch: the source holds no more
                    stop = True
                    break
                tally.add(floats[row].tolist(), ints[row].tolist())
                index = rnd * world + row
                if store is not None and rank == 0 and index >= stored_n:
                    store.put(k, index, floats[row].tolist(), ints[row].tolist())
                if tally.frames >= want or tally.stops_early(min_bit_errors, min_frames):
                    stop = True
                    break
            bar.update(tally.frames - before)
            if stop:
                break
        if frames is not None:
            bar.update(max(0, want - tally.frames))
        rows += _rows(point_meta(p), [estimator_meta(e, conditions) for e in estimators], tally)
    bar.close()
    return rows


def _wanted(p: Point, frames: int | None) -> int:
    want = frames if frames is not None else p.available
    if want is None:
        raise ConfigError("frames", None, "give the number of frames per simulated point")
    return want


def point_meta(p: Point) -> dict:
    """Returns what a :class:`Row` records of point ``p`` (JSON-ready)."""
    return {"sweep": p.sweep, "axis": p.axis, "axis_value": p.axis_value, "snr_db": p.snr_db,
            "delay_spread_ns": round(p.delay_spread_s * 1e9, 6), "doppler_hz": p.doppler_hz, "pilots": pilot_text(p.config),
            "realization": p.realization or p.config.realization_text,
            **({"users": p.config.mimo.num_users} if p.config.mimo.is_mimo else {}),
            **({"drawn": drawn} if (drawn := drawn_ranges(p.config)) else {})}


def drawn_ranges(config: SystemConfig | None) -> dict:
    """Returns ``{field: [low, high]}`` (SI units) of the conditions ``config`` draws per frame; empty when none is."""
    if config is None:
        return {}
    ch = config.channel
    return {k: [float(v) for v in getattr(ch, k)] for k in COND_FIELDS if _is_range(getattr(ch, k))}


def estimator_meta(est, conditions: str) -> dict:
    """Returns what a :class:`Row` records of estimator ``est`` (JSON-ready)."""
    return {"estimator": est.name, "given": given_text(est, conditions), "trained_on": getattr(est, "trained_on", None)}


def _where(meta: dict) -> str:
    """Returns a point in words from its meta: ``SNR 10 dB, delay spread 300 ns, Doppler 1000 Hz``."""
    return (f"SNR {meta['snr_db']:g} dB, delay spread {meta['delay_spread_ns']:g} ns, "
            f"Doppler {meta['doppler_hz']:g} Hz")


def half_interval_db(se_db: float, frames: int) -> float:
    """Returns the half width [dB] of a 95% Monte-Carlo interval of an MSE whose standard error is ``se_db`` over
    ``frames`` frames: ``t_{0.975, n-1}`` times the SE (Student's t: 2.36 at 8 frames, 1.97 at 300), NaN for one frame."""
    from scipy import stats

    return float(stats.t.ppf(0.975, frames - 1)) * se_db if frames > 1 else math.nan


def _rows(meta: dict, ests: list[dict], tally: _Tally) -> list[Row]:
    """Returns one Row per estimator from a point's totals (none when the point has no frames)."""
    done = tally.frames
    if done == 0:
        return []
    bound_db = 10 * math.log10(tally.floats[0] / done)
    rows = []
    for k, e in enumerate(ests):
        a = tally.estimator(k)
        mean = a["se"] / a["n"]
        if not math.isfinite(mean):  # NaN or inf in its estimates (a diverged model): a row of NaN, never -inf dB,
            # which read as a perfect estimator (the `mean > 0` below is False for NaN)
            warnings.warn(f"{e['estimator']} returned non-finite channel estimates at {_where(meta)}: its MSE "
                          "is NaN", RuntimeWarning, stacklevel=2)
            mse_db = nmse_db = se_db = math.nan
        else:
            mse_db = 10 * math.log10(mean) if mean > 0 else -math.inf
            nmse_db = 10 * math.log10(a["se"] / a["sh"]) if a["se"] > 0 else -math.inf
            if done > 1:  # the frames' sample variance (n - 1, as the leaderboard's paired SE), by the delta method
                var = max(a["se2"] - done * mean * mean, 0.0) / (done - 1)
                se_db = 10 / math.log(10) * math.sqrt(var / done) / mean if mean > 0 else 0.0
            else:  # one frame has no spread to measure: no SE, where 0 claimed the MSE exact
                se_db = math.nan
        has_bits = a["bits"] > 0
        rows.append(Row(meta["sweep"], meta["axis"], meta["axis_value"], meta["snr_db"], meta["delay_spread_ns"],
                        meta["doppler_hz"], e["estimator"], e["given"], done, mse_db, se_db, nmse_db, bound_db,
                        mse_db - bound_db, a["err"] / a["bits"] if has_bits else None, a["err"] if has_bits else None,
                        a["bits"] if has_bits else None, a["cerr"] / a["cbits"] if a["cbits"] else None,
                        a["blk"] / (done * meta.get("users", 1)) if a["cbits"] else None, meta["pilots"], e["trained_on"],
                        meta.get("realization", ""), drawn=meta.get("drawn")))
    return rows


PARTIAL_FORMAT = "wavefront-partial-counts/1"


def run_partial(points: list[Point], estimators: list, frames: int | None = None, conditions: str = "estimated",
                condition_prior: SystemConfig | None = None, equalizer: str = "zf", min_bit_errors: int | None = None,
                decoder=None, progress: bool = True, rank: int = 0, world: int = 1, store=None,
                error_variance: str = "stated", min_frames: int = 0) -> dict:
    """Returns the per-batch counts of the batches ``rank`` owns (batch ``i`` with ``i % world == rank``), JSON-ready.

    For array jobs without a process group: nothing is exchanged, so a job cannot know when a
    point has ``min_bit_errors`` globally and computes every batch it owns up to ``frames``;
    :func:`merge_partials` replays all jobs' batches in order and stops each point where one
    process would (``min_bit_errors`` and ``min_frames`` travel in the record). Arguments as :func:`run_experiment`. The record holds, per point, its
    ``meta``, ``want`` (frames asked) and ``batches``: ``[index, floats, ints]`` per batch (see
    ``_FLOATS``/``_INTS``; floats are float64 and JSON keeps them exactly).
    ``store``: a :class:`wavefront.sim.progress.ProgressStore` the jobs may share: a job takes
    its batches found there and stores each batch it computes, so a killed job resumes.
    """
    from tqdm.auto import tqdm

    _check_ranks(rank, world, group=False)
    plan = _plan(estimators, conditions, condition_prior, equalizer, decoder, error_variance)
    _check_mimo(points, plan)
    out_points = []
    total = sum(_wanted(p, frames) for p in points)
    with tqdm(total=total, unit="frame", disable=not progress, file=sys.stderr, desc=f"frames (rank {rank}/{world})",
              dynamic_ncols=True) as bar:
        for k, p in enumerate(points):
            want = _wanted(p, frames)
            stored = store.batches(k) if store is not None else {}
            batches, start = [], rank
            while start in stored:  # this job's stored batches, unbroken from its first
                batches.append([start, *stored[start]])
                bar.update(stored[start][1][0])
                start += world
            for index, fr in _owned_batches(p, want, rank, world, start=start):
                f, i = _batch_counts(p, fr, plan)
                if store is not None:
                    store.put(k, index, f, i)
                batches.append([index, f, i])
                bar.update(len(fr))
            bar.update(max(0, want - sum(b[2][0] for b in batches)))  # the other jobs' share of the point
            out_points.append({"meta": point_meta(p), "want": want, "batches": batches})
    return {"format": PARTIAL_FORMAT, "rank": rank, "world": world, "min_bit_errors": min_bit_errors,
            **({"min_frames": min_frames} if min_frames else {}),  # 0 (the default) leaves the record as it was
            "estimators": [estimator_meta(e, conditions) for e in estimators], "points": out_points}


def merge_partials(partials: list[dict]) -> list[Row]:
    """Returns the rows one process would give, from the :func:`run_partial` records of ranks ``0 .. world-1``.

    Raises ConfigError when a rank is missing or repeated, or when the records disagree on the
    points, estimators, frames, ``min_bit_errors`` or ``min_frames`` (they come from different runs; a record
    without ``min_frames``, from before it existed, has 0).
    """
    if not partials:
        raise ConfigError("partials", [], "give at least one partial results file")
    for q in partials:
        if not isinstance(q, dict) or q.get("format") != PARTIAL_FORMAT:
            raise ConfigError("partials", q.get("format") if isinstance(q, dict) else type(q).__name__,
                              f"not a partial results record (format {PARTIAL_FORMAT})")
    world = partials[0]["world"]
    ranks = sorted(q["rank"] for q in partials)
    if any(q["world"] != world for q in partials):
        raise ConfigError("world", sorted({q["world"] for q in partials}), "partial files come from runs of different --world")
    if ranks != list(range(world)):
        missing = sorted(set(range(world)) - set(ranks))
        repeated = sorted({r for r in ranks if ranks.count(r) > 1})
        raise ConfigError("rank", ranks, f"need each rank 0..{world - 1} once"
                          + (f"; missing {missing}" if missing else "") + (f"; repeated {repeated}" if repeated else ""))
    first = partials[0]
    for key in ("min_bit_errors", "min_frames", "estimators", "prior_ranges"):  # the last two absent from older files
        default = 0 if key == "min_frames" else None  # min_frames: absent from older files and where it is 0
        for q in partials[1:]:
            if q.get(key, default) != first.get(key, default):
                raise ConfigError(key, q.get(key, default), f"differs between partial files (rank {q['rank']} against "
                                                            f"rank {first['rank']}): they come from different runs")
    for q in partials[1:]:
        if [(pt["meta"], pt["want"]) for pt in q["points"]] != [(pt["meta"], pt["want"]) for pt in first["points"]]:
            raise ConfigError("points", f"rank {q['rank']}", f"differ from rank {first['rank']}'s: the files come from "
                                                            "different runs")
    rows = []
    for k, pt in enumerate(first["points"]):
        batches = sorted((b for q in partials for b in q["points"][k]["batches"]), key=lambda b: b[0])
        if [b[0] for b in batches] != list(range(len(batches))):
            raise ConfigError("batches", pt["meta"]["axis_value"], "a partial file lacks batches of this point "
                                                                   "(a job stopped early?)")
        tally = _Tally(len(first["estimators"]))
        for _, f, i in batches:
            tally.add(f, i)
            if tally.frames >= pt["want"] or tally.stops_early(first["min_bit_errors"], first.get("min_frames", 0)):
                break
        rows += _rows(pt["meta"], first["estimators"], tally)
    if "prior_ranges" in first:  # each row's in_prior, as one process marks it (older files: left unchecked, None)
        mark_in_prior(rows, {k: tuple(v) for k, v in first["prior_ranges"].items()})
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
    """Returns the pilot mask [F, T] bool of ``config`` on ``device`` (cached): with DM-RS, every RE of its symbols."""
    layout = (reserved_ofdm(config) if config.mimo.pilots != "kronecker" else config.ofdm).pilot_layout
    key = (layout, str(device))
    if key not in _MASKS:
        _MASKS[key] = torch.from_numpy(layout.mask()).to(device)
    return _MASKS[key]


def prior_config(config: SystemConfig, points: list | None = None, ranges: dict | None = None) -> SystemConfig:
    """Returns ``config`` with the channel ranges a receiver designer may assume: the operating ranges, not each frame's truth.

    ``ranges``: ``{field: (low, high)}`` for any of ``snr_db``, ``delay_spread_s``,
    ``doppler_hz``; the others default to the paper's training ranges (:data:`wavefront.paper.TRAIN_RANGES`). The SNR range widens to
    cover every point (``points``: objects or dicts with ``snr_db``; a point whose config draws its SNR over a range,
    a folder generated over a prior, widens it to that range), which costs nothing; delay
    spread and Doppler do not, because a wider Doppler prior makes the Doppler ambiguous: with
    the pilots 9 symbols apart only ``J0(2 pi f_d 9 T)`` is observed, and it turns back above
    about 950 Hz at 15 kHz. Measured (TDL-A, 200 ns, 500 Hz, 20 dB): ``lmmse-estimated`` gives
    -14.8 dB with a 50-1000 Hz prior and -10.0 dB with 50-1400 Hz (1000 frames). Robust LMMSE designs for the
    top of these ranges; condition estimates are searched within them.
    """
    out = {k: tuple(v) for k, v in paper.TRAIN_RANGES.items()}
    out.update({k: tuple(v) for k, v in (ranges or {}).items()})
    lo, hi = out["snr_db"]
    for p in points or []:
        v = p["snr_db"] if isinstance(p, dict) else p.snr_db
        drawn = p.config.channel.snr_db if isinstance(p, Point) else v  # an SNR drawn per frame: its range
        low, high = drawn if _is_range(drawn) else (v, v)
        lo, hi = min(lo, low), max(hi, high)
    out["snr_db"] = (lo, hi)
    try:  # a prior is a continuous range: a step grid the config draws its frames on (doppler_step_hz: 100 over
        # 0-1000 Hz) need not divide the prior's 50-1000 Hz, and no estimator reads the prior's steps
        return config.updated(channel={**{k: list(v) for k, v in out.items()}, **{GRID_STEPS[k]: None for k in out}})
    except ConfigError as exc:  # a bad --prior-* range: named as the prior's, not as the channel's own field
        name = exc.field.removeprefix("channel.")
        if name in (ranges or {}):
            raise ConfigError(f"prior.{name}", exc.value, exc.rule) from None
        raise


def in_prior(snr_db: float, delay_spread_s: float, doppler_hz: float, ranges: dict | None = None) -> bool:
    """Returns whether a point (dB, s, Hz) lies inside the prior: the paper's training ranges, or ``ranges`` where given.

    Unlike :func:`prior_config` the SNR range does not widen to the points: a model trained on
    the prior has never seen an SNR above it (the paper's out-of-distribution points: 30 dB,
    350 ns, 1200 and 1400 Hz).
    """
    r = {**paper.TRAIN_RANGES, **(ranges or {})}
    value = {"snr_db": snr_db, "delay_spread_s": delay_spread_s, "doppler_hz": doppler_hz}
    # relative slack: table values in ns or rounded dB must not fall out at the range's ends
    return all(lo - 1e-6 * max(abs(lo), 1e-9) <= value[k] <= hi + 1e-6 * max(abs(hi), 1e-9) for k, (lo, hi) in r.items())


def mark_in_prior(rows: list, ranges: dict | None = None) -> list:
    """Sets ``in_prior`` on each :class:`Row` (see :func:`in_prior`) and returns the rows.

    A row whose frames drew conditions over ranges (``Row.drawn``) is inside only when both ends of every range are:
    its midpoint inside a prior that half its frames leave is not.
    """
    for r in rows:
        value = {"snr_db": r.snr_db, "delay_spread_s": r.delay_spread_ns * 1e-9, "doppler_hz": r.doppler_hz}
        ends = [value]
        for k, (lo, hi) in (getattr(r, "drawn", None) or {}).items():
            ends = [{**e, k: x} for e in ends for x in (lo, hi)]
        r.in_prior = all(in_prior(e["snr_db"], e["delay_spread_s"], e["doppler_hz"], ranges) for e in ends)
    return rows


def parse_prior_ranges(snr_db: str | None = None, delay_spread_ns: str | None = None,
                       doppler_hz: str | None = None) -> dict:
    """Returns ``{field: (low, high)}`` (SI units) from command-line ranges ``"low:high"``; None keeps the default."""
    out = {}
    for field_name, text, scale in (("snr_db", snr_db, 1.0), ("delay_spread_s", delay_spread_ns, 1e-9),
                                     ("doppler_hz", doppler_hz, 1.0)):
        if text is not None:
            lo, hi, _ = parse_range(f"prior.{field_name}", text, "a:b", scale, None if field_name == "snr_db" else 0.0)
            out[field_name] = (lo, hi)
    return out


def prior_ranges_record(ranges: dict | None) -> dict:
    """Returns ``ranges`` (``{field: (low, high)}``, SI units, as :func:`parse_prior_ranges`) as a partial record keeps them.

    A partial file carries them so that :func:`merge_partials` marks each row's ``in_prior`` as one process does.
    """
    return {k: [float(lo), float(hi)] for k, (lo, hi) in (ranges or {}).items()}


def write_partial(record: dict, folder) -> "Path":
    """Writes a partial record (:func:`run_partial` and its command's keys) to ``folder/partial-R-of-W.json``; returns the path."""
    from pathlib import Path


    # Atomic: a job killed mid-write leaves no half file under the real name.
    return atomic_write_json(Path(folder) / f"partial-{record['rank']}-of-{record['world']}.json", record)


def read_partials(paths: list) -> list[dict]:
    """Returns the partial records in ``paths`` (files, or folders holding ``partial-*.json``).

    Raises ConfigError naming a path that is missing, not JSON or not a partial record.
    """
    import json
    from pathlib import Path

    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("partial-*-of-*.json"))
            if not found:
                raise ConfigError("partials", str(p), "folder holds no partial-R-of-W.json file")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError("partials", str(p), "no such file or folder")
    out = []
    for f in files:
        try:
            rec = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError("partials", str(f), f"cannot be read as JSON ({type(exc).__name__})") from None
        if not isinstance(rec, dict) or rec.get("format") != PARTIAL_FORMAT:
            raise ConfigError("partials", str(f), f"is not a partial results file (format {PARTIAL_FORMAT})")
        problem = _partial_problem(rec)
        if problem:  # the right format with a missing or mistyped field: a traceback in the merge otherwise
            raise ConfigError("partials", str(f), f"is a damaged partial file ({problem}); rerun its job (the same "
                                                  "command, with its --rank) to write it again")
        out.append((f, rec))
    if all(rec["command"] == "evaluate" for _, rec in out):  # merge-results writes an evaluation's results from it
        for f, rec in out:
            if not isinstance(rec.get("output"), dict):
                raise ConfigError("partials", str(f), "is a damaged partial file (output is missing); rerun its job "
                                                      "(the same command, with its --rank) to write it again")
    return [rec for _, rec in out]


def _partial_problem(rec: dict) -> str | None:
    """Returns what is wrong with the structure of a partial record (:func:`run_partial`'s), or None."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(rec.get("world")) or rec["world"] < 1:
        return f"world={rec.get('world')!r} is not a positive integer"
    if not is_int(rec.get("rank")) or not 0 <= rec["rank"] < rec["world"]:
        return f"rank={rec.get('rank')!r} is not an integer in 0..world-1"
    if not isinstance(rec.get("command"), str):
        return "command is missing"
    if not isinstance(rec.get("estimators"), list) or not all(isinstance(e, dict) for e in rec["estimators"]):
        return "estimators is not a list of records"
    if not isinstance(rec.get("seconds", 0.0), (int, float)):
        return f"seconds={rec.get('seconds')!r} is not a number"
    points = rec.get("points")
    if not isinstance(points, list):
        return "points is missing"
    n = len(rec["estimators"])
    for k, pt in enumerate(points):
        if not isinstance(pt, dict) or not isinstance(pt.get("meta"), dict) or not is_int(pt.get("want")):
            return f"points[{k}] lacks its meta or want"
        batches = pt.get("batches")
        if not isinstance(batches, list):
            return f"points[{k}].batches is missing"
        for b in batches:
            if not (isinstance(b, list) and len(b) == 3 and is_int(b[0]) and isinstance(b[1], list)
                    and isinstance(b[2], list) and len(b[1]) == 1 + n * len(_FLOATS) and len(b[2]) == 1 + n * len(_INTS)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b[1])
                    and all(is_int(v) for v in b[2])):
                return f"points[{k}].batches holds a malformed batch {str(b)[:40]}"
    return None
