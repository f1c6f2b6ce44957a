"""The leaderboard: every registered model trained under one budget, ranked beside the classical estimators.

For each model (and seed) :func:`run_leaderboard` trains on frames drawn on the fly from the
prior (the config's channel ranges; the same frames and seeds for every model), keeps the run
in ``<out>/runs/<model>-s<seed>/`` and its evaluation in ``<out>/runs/<model>-s<seed>/eval.json``,
so rerunning the same command continues where it stopped; ``<out>/config.json`` records the system
config the frames are drawn from, and a rerun under another (YAML or flags) is refused. Each row is evaluated on:

- (a) the **Bayes risk**: MSE over ``bayes_frames`` frames drawn from the prior, the same frames
  for every row, with the standard error of the *paired* per-frame differences to
  ``mmse-bayes`` (the MMSE estimator given the prior: the optimum averaged over it);
- (b) the three paper suites point by point (:func:`wavefront.estimators.evaluate.evaluate`);
- (c) parameters, FLOPs per frame (``torch.utils.flop_counter.FlopCounterMode``: the matmuls and
  convolutions torch counts, a complex matmul as one real one, so complex work is counted 4x low),
  CPU throughput at batch 200 on one thread on prior frames (with the
  per-frame condition estimate where a row reads conditions) beside ``lmmse-genie``'s measured in
  the same run, and batch-1 latency.

MSE is ``mean |H_hat - H|^2`` per resource element, in dB. Outputs: ``leaderboard.md``,
``.json``, ``.csv``, ``pareto.png`` (gap to the Bayes risk against CPU frames/s, log x) and
``suite_<sweep>.png``.

**MIMO** (a config with several antennas or users, Kronecker pilots): the same run on MIMO frames
``[B, R, U, F, T]``. The reference is the joint ``mmse-bayes`` over antennas and users
(:mod:`wavefront.sim.mimo_bayes`); the classical rows are ``ls-linear``, the genie over space and
its 2-D per-pair version, joint and per-pair ``lmmse-estimated`` and ``mmse-bayes``, and the
closed-form bound (:data:`MIMO_CLASSICAL_ROWS`, :data:`BOUND_ROW`); the MSE is over antennas,
users and the grid, with the NMSE beside it; per-SNR points (:data:`MIMO_POINTS_DB`, delay
spread and Doppler over the prior) replace the paper suites. A model trains on the same MIMO
frames (``steps`` x ``batch_size`` frames, seeds as in SISO; :class:`~wavefront.estimators.data.MimoUserSource`):
per (antenna, user) pair (user u's R antennas as R samples) or, with ``antenna_axis``, across a
user's antennas. A frequency-shift-invariant model trains once on user 0's pilots and serves every
user; any other trains one checkpoint per user on its own pilots (``runs/<model>-s<seed>/u<k>/``),
since under the Kronecker pattern each user's pilots sit on other subcarriers
(:func:`mimo_users_trained`, :class:`MimoLearned`). Throughput is MIMO frames per second.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from wavefront import paper
from wavefront.errors import ConfigError
from wavefront.estimators.estimator import load_estimator
from wavefront.estimators.evaluate import AXIS_LABEL, evaluate
from wavefront.estimators.registry import list_models, model_class
from wavefront.estimators.train import TrainConfig, default_warmup, train
from wavefront.sim.conditions import estimate_conditions
from wavefront.sim.estimators import CLASSICAL, classical_estimators, meta_for
from wavefront.sim.experiment import given_text, in_prior
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.prior_lmmse import BayesMMSE
from wavefront.utils import atomic_write_csv, atomic_write_json, atomic_write_text, finish_figure

# Budgets: steps x batch, and the model sizes that train in minutes on 2 CPU cores (full-size
# FortiTran runs at about 8 samples/s there, so cpu-small shrinks every model; gpu-full keeps
# the registry's defaults, the paper's sizes).
_SMALL_SIZES = {
    "adafortitran": {"model_dim": 16, "num_heads": 2, "num_layers": 1, "enhancer_channels": [4, 8, 4]},
    "fortitran": {"model_dim": 16, "num_heads": 2, "num_layers": 1, "enhancer_channels": [4, 8, 4]},
    "channelnet": {"srcnn_channels": [16, 8], "dncnn_depth": 4, "dncnn_channels": 16},
    "convnext": {"channels": 16, "depth": 2},
    "espcn": {"channels": [16, 8]},
    "interpolatenet": {"channels": 8, "num_blocks": 2},
    "reesnet": {"channels": 8, "num_blocks": 2},
}
_MEDIUM_SIZES = {
    "adafortitran": {"model_dim": 32, "num_heads": 4, "num_layers": 2},
    "fortitran": {"model_dim": 32, "num_heads": 4, "num_layers": 2},
    "channelnet": {"srcnn_channels": [32, 16], "dncnn_depth": 8, "dncnn_channels": 32},
}
BUDGETS = {
    "cpu-small": {"steps": 300, "batch_size": 32, "sizes": _SMALL_SIZES, "bayes_frames": 1000, "frames_per_point": 200},
    "cpu-medium": {"steps": 2000, "batch_size": 64, "sizes": _MEDIUM_SIZES, "bayes_frames": 2000, "frames_per_point": 500},
    "gpu-full": {"steps": 20000, "batch_size": 256, "sizes": {}, "bayes_frames": 4000, "frames_per_point": 2000},
}
CLASSICAL_ROWS = ("ls-linear", "lmmse-robust", "lmmse-estimated", "mmse-bayes", "lmmse-genie", "lmmse-bank")
# with receiver impairments on, the second-order yardsticks that know their distribution (sim/impaired_lmmse.py)
IMPAIRED_ROWS = ("mmse-bayes-impaired", "lmmse-genie-impaired")
THROUGHPUT_BATCH = 200
_GIVEN = {"estimated": "SNR, delay spread and Doppler estimated from the pilots", "true": "true SNR, delay spread and "
          "Doppler", "none": "pilots only"}


@dataclass
class LeaderboardSpec:
    """What one leaderboard trains and measures (everything that must match for a rerun to continue).

    ``steps`` x ``batch_size`` per model; ``sizes``: model -> hyper-parameter overrides;
    ``conditions``: estimated | true | none, given to condition-aware models in training and test;
    ``bayes_frames``: prior frames of the Bayes risk; ``frames_per_point``: per suite point.
    """

    models: list
    budget: str
    steps: int
    batch_size: int
    sizes: dict = field(default_factory=dict)
    seeds: int = 1
    conditions: str = "estimated"
    bayes_frames: int = 1000
    frames_per_point: int = 200
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"  # where models train (auto: the GPU when present); every measurement runs on the CPU

    def check(self) -> None:
        """Raises ConfigError for the first bad value."""
        known = list_models()
        for m in self.models:
            if m not in known:
                raise ConfigError("models", m, f"unknown model; choose from {', '.join(known)}")
        if not self.models:
            raise ConfigError("models", "", "name at least one model")
        for name in ("steps", "batch_size", "seeds", "bayes_frames", "frames_per_point"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be >= 1")
        if self.conditions not in _GIVEN:
            raise ConfigError("conditions", self.conditions, "choose estimated, true or none")


def make_spec(models: list | None = None, budget: str | None = "cpu-small", steps: int | None = None,
              batch_size: int | None = None, **kw) -> LeaderboardSpec:
    """Returns a checked spec: a named ``budget``, with ``steps``/``batch_size`` overriding it when given."""
    if budget is not None and budget not in BUDGETS:
        raise ConfigError("budget", budget, f"choose one of {', '.join(BUDGETS)}")
    base = dict(BUDGETS[budget or "cpu-small"])
    if steps is not None:
        base["steps"] = steps
    if batch_size is not None:
        base["batch_size"] = batch_size
    label = budget if steps is None and batch_size is None else (f"{budget} with overrides" if budget else "custom")
    sizes = {"sizes": base["sizes"], "bayes_frames": base["bayes_frames"], "frames_per_point": base["frames_per_point"]}
    # by default every SISO model; one that needs a user's antennas together (antenna_axis) is named explicitly
    default = [m for m in list_models() if not getattr(model_class(m), "antenna_axis", False)]
    spec = LeaderboardSpec(models=list(models) if models else default, budget=label, steps=base["steps"],
                           batch_size=base["batch_size"], **{**sizes, **kw})
    spec.check()
    return spec


# ---- measurements ------------------------------------------------------------------------
def bayes_risk_frames(config, n: int, seed: int = 7):
    """Returns ``n`` frames drawn over ``config``'s channel ranges (the prior), without data symbols (MIMO frames
    for a MIMO ``config``)."""
    if config.mimo.is_mimo:
        from wavefront.sim.mimo import MimoFrameGenerator

        return MimoFrameGenerator(config).generate(n, seed=seed, with_data=False)
    return FrameGenerator(config).generate(n, seed=seed, with_data=False)


def per_frame_mse(estimate: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Returns ``[B]`` float64: each frame's ``mean |estimate - h|^2`` over its ``[F, T]`` grid (MIMO ``[B, R, U, F, T]``:
    over antennas, users and the grid)."""
    d = (estimate.to(torch.complex64) - h)
    return (d.real.square() + d.imag.square()).mean(tuple(range(1, d.dim()))).double()


def paired_gap(e: torch.Tensor, r: torch.Tensor) -> tuple[float, float]:
    """Returns ``(10 log10(mean e / mean r), its standard error)`` in dB from per-frame MSEs ``[B]`` on the same frames.

    The SE is the delta method on the paired differences ``e_i / mean e - r_i / mean r``.
    """
    me, mr = float(e.mean()), float(r.mean())
    d = e / me - r / mr
    return 10 * math.log10(me / mr), 10 / math.log(10) * float(d.std()) / math.sqrt(len(d))


def paired_gap_db(estimate: torch.Tensor, reference: torch.Tensor, h: torch.Tensor) -> tuple[float, float]:
    """Returns the gap [dB] of ``estimate`` to ``reference`` (both ``[B, F, T]`` c64) against ``h``, and its paired SE."""
    return paired_gap(per_frame_mse(estimate, h), per_frame_mse(reference, h))


def _meta_for(est, frames, config, conditions: str):
    """Returns ``meta(p, sl)``: what a row gets for pilots ``p`` = frames ``sl`` under the engine's rule
    (:func:`wavefront.sim.estimators.meta_for`); an estimated condition is computed inside, so it is timed with the row.
    MIMO rows get the frames' recorded conditions as their ``needs`` allow (the genies; the others estimate what
    they use inside, timed too)."""
    if config.mimo.is_mimo:
        return lambda p, sl: meta_for(est.needs, {k: v[sl] for k, v in frames.meta.items()}, None)
    if est.needs in ("noise", "conditions") and conditions != "true":
        return lambda p, sl: meta_for(est.needs, {}, estimate_conditions(p, config))
    true_meta = frames.meta
    return lambda p, sl: meta_for(est.needs, {k: v[sl] for k, v in true_meta.items()}, None)


def throughput(est, frames, config, conditions: str, batch: int = THROUGHPUT_BATCH, repeats: int = 3) -> dict:
    """Returns ``{"frames_per_s", "latency_ms"}``: one thread, batch ``batch`` (the condition estimate included), and batch 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        meta = _meta_for(est, frames, config, conditions)
        p = frames.pilots_ls[:batch]

        def run(n):
            return est.estimate(p[:n], meta(p[:n], slice(0, n)))

        with torch.no_grad():
            run(len(p))  # warm-up: caches (filter banks, eigendecompositions) are built here
            best = math.inf
            for _ in range(repeats):  # the best of a few: the least disturbed by other processes
                t = time.perf_counter()
                run(len(p))
                best = min(best, time.perf_counter() - t)
            run(1)
            lat = math.inf
            for _ in range(5):
                t = time.perf_counter()
                run(1)
                lat = min(lat, time.perf_counter() - t)
        return {"frames_per_s": p.shape[0] / best, "latency_ms": 1e3 * lat}
    finally:
        torch.set_num_threads(threads)


def flops_per_frame(model, config) -> int | None:
    """Returns the FLOPs of one frame's forward pass as ``FlopCounterMode`` counts them (matmuls, convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    p = torch.zeros(1, *config.ofdm.pilot_shape, dtype=torch.complex64)
    meta = {"snr_db": torch.tensor([10.0]), "delay_spread_s": torch.tensor([1e-7]), "doppler_hz": torch.tensor([500.0])}
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(p, meta)
    except Exception:  # a model whose ops the counter cannot trace: report none rather than a wrong number
        return None
    return int(counter.get_total_flops())


# ---- one row ----------------------------------------------------------------------------
def classical_rows(config) -> tuple[str, ...]:
    """Returns the classical rows of a leaderboard on ``config``: :data:`CLASSICAL_ROWS`, and :data:`IMPAIRED_ROWS`
    when the config sets a receiver impairment."""
    return CLASSICAL_ROWS + (IMPAIRED_ROWS if config.channel.impaired else ())


def _classical(names, prior):
    """Returns the classical estimators of ``names`` that this version of ``wavefront.sim`` has (lmmse-bank may not)."""
    return classical_estimators([n for n in names if n in CLASSICAL], prior)


def _suite_rows(est, config, spec: LeaderboardSpec, conditions: str) -> list[dict]:
    long_rows: list = []
    evaluate(est, config, frames_per_point=spec.frames_per_point, baselines=(), seed=1, compare_true=False,
             conditions="estimated" if conditions == "none" else conditions, long_rows=long_rows)
    keep = ("sweep", "axis", "snr_db", "delay_spread_ns", "doppler_hz", "frames", "mse_db", "mse_se_db", "bound_db")
    return [{k: r[k] for k in keep} for r in long_rows]


def estimate_frames(est, config, frames, conditions: str, chunk: int = 500) -> torch.Tensor:
    """Returns ``est``'s estimates of every frame of ``frames`` (``[B, F, T]``, MIMO ``[B, R, U, F, T]``, complex64),
    in chunks of ``chunk`` frames, given what :func:`_meta_for` allows it."""
    meta = _meta_for(est, frames, config, conditions)
    with torch.no_grad():
        chunks = []
        for s in range(0, len(frames), chunk):
            p = frames.pilots_ls[s:s + chunk]
            chunks.append(est.estimate(p, meta(p, slice(s, s + chunk))))
    return torch.cat(chunks)


def evaluate_row(est, config, frames, reference_mse: torch.Tensor, spec: LeaderboardSpec, conditions: str,
                 model=None, points: list | None = None) -> dict:
    """Returns one leaderboard row for estimator ``est``: Bayes risk (paired to ``reference_mse``), suites, cost.

    ``points`` (MIMO): :func:`mimo_points`' per-SNR frames, which replace the paper suites; the row then also
    carries ``nmse_db`` (the error energy over the channel energy, over antennas, users, REs and frames).
    """
    estimate = estimate_frames(est, config, frames, conditions)
    e = per_frame_mse(estimate, frames.h)
    gap, se = paired_gap(e, reference_mse)
    cost = throughput(est, frames, config, conditions)
    mimo = config.mimo.is_mimo
    if mimo:
        flops = mimo_flops(est) if model is not None else None
    else:
        flops = flops_per_frame(model, config) if model is not None else None
    row = {"name": est.name, "given": given_text(est, "true" if conditions == "true" else "estimated"),
           "bayes_risk_db": 10 * math.log10(float(e.mean())), "gap_to_mmse_bayes_db": gap, "gap_se_db": se,
           "parameters": sum(p.numel() for p in model.parameters()) if model is not None else 0,
           "flops_per_frame": flops, **cost}
    if mimo:
        row["nmse_db"] = nmse_db(e, frames.h)
        row["suites"] = [point_row(p, per_frame_mse(estimate_frames(est, config, p["frames"], conditions),
                                                    p["frames"].h)) for p in points]
    else:
        row["suites"] = _suite_rows(est, config, spec, conditions)
    return row


# ---- MIMO -------------------------------------------------------------------------------
# A MIMO config (several antennas or users, Kronecker pilots) gets the same table: the Bayes risk over its
# prior's MIMO frames paired to the joint mmse-bayes (wavefront.sim.mimo_bayes), the classical rows joint
# and per (antenna, user) pair, the closed-form bound, and per-SNR points instead of the paper suites.
MIMO_CLASSICAL_ROWS = ("ls-linear", "lmmse-genie", "lmmse-genie-per-pair", "lmmse-estimated", "lmmse-estimated-per-pair",
                       "mmse-bayes", "mmse-bayes-per-pair")
MIMO_POINTS_DB = (0.0, 10.0, 20.0)
BOUND_ROW = "bound (genie over space)"


class MimoLearned:
    """A trained model on MIMO pilots: ``estimate(pilots [B, R, U, P_f', P_t] c64, meta) -> [B, R, U, F, T] c64``.

    ``per_user[u]``: the :class:`~wavefront.estimators.estimator.LearnedEstimator` that serves user u (built for
    user u's SISO config ``users[u]``, :func:`~wavefront.sim.mimo.user_configs`); a frequency-shift-invariant
    model may be one checkpoint for all. A per-pair model gets user u's ``[B R, P_f', P_t]`` pairs; a model with
    ``antenna_axis`` its ``[B, R, P_f', P_t]``. A condition-aware per-pair model gets each pair's SNR, delay
    spread and Doppler estimated from that pair's pilots (as it was trained), or the frames' true ones
    (``conditions="true"``: ``meta`` [B] tensors, repeated per antenna).
    """

    mimo = True

    def __init__(self, per_user: list, users: list, num_rx_antennas: int, conditions: str, given: str):
        self.per_user, self.users, self.R, self.conditions = per_user, users, num_rx_antennas, conditions
        first = per_user[0]
        self.name, self.trained_on = first.name, first.trained_on
        self.across_antennas = first.across_antennas
        self.reads = first.needs == "conditions"
        self.needs = "truth" if self.reads and conditions == "true" else "none"
        self.given = given
        # what the receiver stores (its parameters): each distinct model once (load_mimo_learned: each checkpoint once)
        distinct = {id(e.model): e.model for e in per_user}
        self.model = torch.nn.ModuleList(list(distinct.values()))

    def estimate(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        B, R = pilots.shape[:2]
        out = []
        for u, (est, user) in enumerate(zip(self.per_user, self.users)):
            p = pilots[:, :, u]
            if self.across_antennas:
                out.append(est.estimate(p, None))
                continue
            p = p.flatten(0, 1)
            m = None
            if self.reads and self.conditions == "true":
                m = {k: v.repeat_interleave(R) for k, v in (meta or {}).items() if torch.is_tensor(v) and v.dim() == 1}
            elif self.reads:
                m = estimate_conditions(p, user)
            h = est.estimate(p, m)
            out.append(h.view(B, R, *h.shape[1:]))
        return torch.stack(out, 2)


def mimo_flops(est: MimoLearned) -> int | None:
    """Returns the FLOPs of one MIMO frame's forward passes (every user's antennas) as ``FlopCounterMode`` counts
    them: the models only, not the per-pair condition estimate."""
    from torch.utils.flop_counter import FlopCounterMode

    total = 0
    for e, user in zip(est.per_user, est.users):
        p = torch.zeros(est.R, *user.ofdm.pilot_shape, dtype=torch.complex64)
        p = p.unsqueeze(0) if est.across_antennas else p
        meta = {k: torch.full((p.shape[0],), v) for k, v in (("snr_db", 10.0), ("delay_spread_s", 1e-7),
                                                               ("doppler_hz", 500.0))}
        counter = FlopCounterMode(display=False)
        try:
            with counter, torch.no_grad():
                e.model(p, meta)
        except Exception:  # a model whose ops the counter cannot trace: report none rather than a wrong number
            return None
        total += int(counter.get_total_flops())
    return total


def nmse_db(mse: torch.Tensor, h: torch.Tensor) -> float:
    """Returns the NMSE [dB] of per-frame MSEs ``mse`` [B] on channels ``h``: the error energy of all frames over
    their channel energy (the benchmark's NMSE over antennas, users, subcarriers and symbols)."""
    energy = (h.real.square() + h.imag.square()).mean(tuple(range(1, h.dim()))).double()
    return 10 * math.log10(float(mse.sum() / energy.sum()))


def mimo_setting(config) -> str:
    """Returns a MIMO config's setting in words (the table's first sentence)."""
    from wavefront.sim.config import profile_label
    from wavefront.sim.mimo import describe_pilots

    m, ch = config.mimo, config.channel
    rho = m.rx_correlation if not isinstance(m.rx_correlation, tuple) else "-".join(map(str, m.rx_correlation))
    F, T = config.ofdm.grid_shape
    span = lambda v, k=1.0: f"{v[0] * k:g}-{v[1] * k:g}" if isinstance(v, tuple) else f"{v * k:g}"  # noqa: E731
    return (f"MIMO uplink: {m.num_rx_antennas} receive antennas (exponential correlation rho {rho}), {m.num_users} users, "
            f"{F} x {T} grid, pilots {describe_pilots(config)}; prior {profile_label(ch.profile)}, SNR {span(ch.snr_db)} dB, "
            f"delay spread {span(ch.delay_spread_s, 1e9)} ns, Doppler {span(ch.doppler_hz)} Hz, drawn per frame. ")


def check_run(spec: LeaderboardSpec, config) -> None:
    """Raises ConfigError for a spec or config :func:`run_leaderboard` would refuse, before anything is read or
    written (``leaderboard --overwrite`` calls it before it removes the earlier board)."""
    spec.check()
    if config.mimo.is_mimo:
        check_mimo(spec, config)


def check_mimo(spec: LeaderboardSpec, config) -> None:
    """Raises ConfigError unless ``config``'s users can be ranked: the Kronecker pattern, and every model of
    ``spec`` built for the pilots of each user it trains on (:func:`mimo_users_trained`), before any work."""
    from wavefront.estimators.registry import create
    from wavefront.sim.mimo import user_configs

    if config.mimo.pilots != "kronecker":
        raise ConfigError("mimo.pilots", config.mimo.pilots, "the MIMO leaderboard takes the Kronecker pattern only "
                                                             "(its joint mmse-bayes and per-user training read each user's "
                                                             "own pilots; NR DM-RS pilots are despread over CDM pairs)")
    users = user_configs(config)
    for m in spec.models:
        for u in mimo_users_trained(m, config):  # the pilots each checkpoint is built for
            user = users[u]
            try:
                create(m, user, **spec.sizes.get(m, {}))
            except (ConfigError, ValueError, RuntimeError, TypeError) as exc:
                raise ConfigError("models", m, f"cannot run on user {u}'s pilots {'x'.join(map(str, user.ofdm.pilot_shape))} "
                                               f"per (antenna, user) pair: {exc}") from None


def mimo_points(config, spec: LeaderboardSpec, reference) -> list[dict]:
    """Returns the per-SNR points of a MIMO table: at each of :data:`MIMO_POINTS_DB`, ``spec.frames_per_point``
    frames (seed ``spec.seed + 101 + i``) with delay spread, Doppler (and rho) drawn over the prior, the joint
    ``reference`` (mmse-bayes built on the prior) per-frame MSE and the bound per frame, both [n] float64."""
    from wavefront.sim.mimo import mimo_genie_mse

    lo, hi = config.channel.snr_db
    out = []
    for i, snr in enumerate(MIMO_POINTS_DB):
        fr = bayes_risk_frames(config.updated(channel={"snr_db": snr}), spec.frames_per_point, seed=spec.seed + 101 + i)
        with torch.no_grad():
            ref = per_frame_mse(reference.estimate(fr.pilots_ls, {}), fr.h)
        bound = mimo_genie_mse(config, fr.snr_db.double(), fr.delay_spread_s.double(), fr.doppler_hz.double(),
                               rx_correlation=fr.rx_correlation)
        out.append({"snr_db": snr, "frames": fr, "reference": ref, "bound": bound, "in_prior": lo <= snr <= hi})
    return out


def point_row(point: dict, mse: torch.Tensor) -> dict:
    """Returns one per-SNR point of a MIMO row from its per-frame MSEs ``mse`` [n]: MSE [dB] and its SE, the bound,
    and the gap to the joint mmse-bayes with its paired SE (keys as the paper suites' rows, ``sweep`` "snr")."""
    m = float(mse.mean())
    gap, se = paired_gap(mse, point["reference"])
    return {"sweep": "snr", "axis": "snr_db", "snr_db": point["snr_db"], "delay_spread_ns": None, "doppler_hz": None,
            "frames": len(mse), "mse_db": 10 * math.log10(m),
            "mse_se_db": 10 / math.log(10) * float(mse.std()) / math.sqrt(len(mse)) / m,
            "bound_db": 10 * math.log10(float(point["bound"].mean())), "gap_to_mmse_bayes_db": gap, "gap_se_db": se,
            "in_prior": point["in_prior"]}


def mimo_classical(names, config) -> list:
    """Returns the MIMO classical rows of ``names``: :func:`~wavefront.sim.mimo.mimo_estimators`, and
    ``lmmse-genie-per-pair`` (the 2-D genie on each (antenna, user) pair, receive correlation ignored)."""
    from wavefront.sim.mimo import PerUser, mimo_estimators

    out = []
    for n in names:
        if n == "lmmse-genie-per-pair":
            est = PerUser("lmmse-genie", config)
            est.name = n
            est.given = est.given.replace("; per antenna and user", "; each (antenna, user) pair alone, its true "
                                          "conditions, receive correlation ignored")
            out.append(est)
        else:
            out += mimo_estimators([n], config)
    return out


def bound_row(config, frames, reference_mse: torch.Tensor, points: list) -> dict:
    """Returns the closed-form bound's row: the genie over space's MSE per frame (``mimo_genie_mse`` at each frame's
    conditions and rho), averaged over the Bayes-risk frames, paired to mmse-bayes like the estimators."""
    from wavefront.sim.mimo import mimo_genie_mse

    b = mimo_genie_mse(config, frames.snr_db.double(), frames.delay_spread_s.double(), frames.doppler_hz.double(),
                       rx_correlation=frames.rx_correlation)
    gap, se = paired_gap(b, reference_mse)
    suites = []
    for p in points:
        row = point_row(p, p["bound"])
        row["mse_se_db"] = None
        suites.append(row)
    return {"name": BOUND_ROW, "given": "closed form: the genie over space, time and frequency at each frame's true "
                                       "conditions and rho (an expectation, not an estimator)",
            "bayes_risk_db": 10 * math.log10(float(b.mean())), "gap_to_mmse_bayes_db": gap, "gap_se_db": se,
            "nmse_db": 10 * math.log10(float(b.mean())), "parameters": 0, "flops_per_frame": None,
            "frames_per_s": None, "latency_ms": None, "suites": suites}


def mimo_users_trained(model_name: str, config) -> list[int]:
    """Returns the users whose pilots train ``model_name`` on MIMO ``config``: user 0 only for a
    frequency-shift-invariant model (its checkpoint serves every user's pilots, user 0's moved along the
    subcarriers), else every user (one checkpoint each, on its own pilots)."""
    if getattr(model_class(model_name), "frequency_shift_invariant", False):
        return [0]
    return list(range(config.mimo.num_users))


def load_mimo_learned(model_name: str, run_dir: Path, config, conditions: str) -> MimoLearned:
    """Returns :class:`MimoLearned` from ``run_dir/u<k>/last.safetensors``: user u served by its own checkpoint, or
    by user 0's for a frequency-shift-invariant model. Each is checked against the pilots it serves
    (:func:`~wavefront.estimators.estimator.load_estimator`: another user's layout is refused by name)."""
    from wavefront.sim.mimo import describe_pilots, user_configs

    users = user_configs(config)
    trained = mimo_users_trained(model_name, config)
    per_user = [load_estimator(str(run_dir / f"u{u if len(trained) > 1 else 0}" / "last.safetensors"), c,
                               conditions=conditions) for u, c in enumerate(users)]
    first = per_user[0]
    R = config.mimo.num_rx_antennas
    if first.needs == "conditions":
        told = "true SNR, delay spread and Doppler" if conditions == "true" else \
            "SNR, delay spread and Doppler estimated from each pair's own pilots"
    else:
        told = "pilots only"
    scope = (f"per user across its {R} antennas" if first.across_antennas else "each (antenna, user) pair alone")
    ckpts = ("one checkpoint per user, each on its own pilots" if len(trained) > 1 else
             "one checkpoint (user 0's pilots) for every user, frequency-shift invariant")
    given = (f"{told}; {scope}, receive correlation {'learned' if first.across_antennas else 'ignored'}; "
             f"{ckpts} (pilots {describe_pilots(config)})")
    est = MimoLearned(per_user, list(users), R, conditions, given)
    est.model = torch.nn.ModuleList([per_user[u].model for u in trained])  # one per checkpoint the receiver stores
    return est


def _mimo_trained_on(config, spec: LeaderboardSpec, model_name: str, seed: int, steps: int, users: list) -> str:
    m = config.mimo
    sample = (f"user's {m.num_rx_antennas} antennas as one sample" if getattr(model_class(model_name), "antenna_axis", False)
              else f"user's {m.num_rx_antennas} antennas as {m.num_rx_antennas} pairs")
    rho = m.rx_correlation if not isinstance(m.rx_correlation, tuple) else "-".join(map(str, m.rx_correlation))
    who = f"users {', '.join(map(str, users))} (a run each)" if len(users) > 1 else "user 0"
    return (f"{steps * spec.batch_size:,} MIMO frames on the fly per run ({steps} steps x {spec.batch_size}; "
            f"{m.num_rx_antennas} antennas, rho {rho}), {who}, each {sample}; seed {spec.seed + seed}, "
            f"{spec.budget} budget")


# ---- the run ----------------------------------------------------------------------------
def _fingerprint(spec: LeaderboardSpec, model: str, seed: int, config=None) -> dict:
    fp = {"model": model, "seed": seed, "steps": spec.steps, "batch_size": spec.batch_size, "lr": spec.lr,
          "sizes": spec.sizes.get(model, {}), "conditions": spec.conditions, "bayes_frames": spec.bayes_frames,
          "frames_per_point": spec.frames_per_point}
    if config is not None and config.mimo.is_mimo:  # the frames' antennas, users and rho (and the points' SNRs)
        fp["mimo"] = {**json.loads(config.to_json())["mimo"], "points_db": list(MIMO_POINTS_DB)}
    return fp


def _check_same_run(run_dir: Path, fp: dict) -> None:
    """Records the run's spec in ``run_dir/spec.json``, or raises ConfigError if the folder holds another spec's run.

    Continuing a checkpoint under other settings would mix two runs in one row: a model trained
    with estimated conditions is not a pilots-only model after a few more steps without them.
    """
    path = run_dir / "spec.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != fp:
            key = next(k for k in sorted(set(old) | set(fp)) if old.get(k) != fp.get(k))
            what = (f"was trained with {old.get(key)} conditions and cannot continue with {fp.get(key)}"
                    if key == "conditions" else f"holds a run with {key}={old.get(key)!r}, this one has {fp.get(key)!r}")
            raise ConfigError("out", str(run_dir.parent.parent), f"{run_dir.name} {what}; use a fresh --out")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(path, fp)


PRIOR_FILE = "config.json"  # in --out: the system config every frame of the run is drawn from


def _check_same_prior(out: Path, config) -> None:
    """Records ``config`` (the prior: grid, channel ranges, ICI, impairments, MIMO) in ``out/config.json``, or raises
    ConfigError naming the first field that differs from the one recorded there.

    Every cache in ``out`` (``classical.json``, each run's checkpoint and ``eval.json``) holds frames of the recorded
    config, so a rerun under another config (a changed YAML or flag) would rank rows measured on two kinds of frames.
    A folder from before this record (results, no ``config.json``) is taken as this config's, with a warning.
    """
    import warnings

    path = out / PRIOR_FILE
    want = json.loads(config.to_json())
    if path.exists():
        have = json.loads(path.read_text())
        fields = sorted({(s, f) for d in (have, want) for s, sec in d.items() for f in sec})  # section.field, e.g. channel.ici
        for s, f in fields:
            old, new = have.get(s, {}).get(f), want.get(s, {}).get(f)
            if old != new:
                there = "unset (its default)" if old is None else json.dumps(old)
                raise ConfigError(f"config.{s}.{f}", new, f"{out} holds a leaderboard on frames drawn with {s}.{f} "
                                                          f"{there}; rerun with that config and flags to continue it, "
                                                          "use a fresh --out, or --overwrite to discard it")
        return
    if (out / "classical.json").exists() or (out / "runs").exists():
        warnings.warn(f"{out} holds a leaderboard that recorded no config (an earlier version): continuing it on this "
                      f"one and recording it in {PRIOR_FILE}; use a fresh --out if it was run on another")
    _write_json(path, want)


def clear_leaderboard(out: Path) -> list[Path]:
    """Removes what a leaderboard wrote into ``out`` (its config record, caches, runs, tables and plots) and returns
    the removed paths; anything else in ``out`` stays. For ``leaderboard --overwrite``: start afresh in that folder."""
    import shutil

    out = Path(out)
    names = [PRIOR_FILE, "classical.json", "leaderboard.json", "leaderboard.csv", "leaderboard.md", "pareto.png"]
    if (out / "runs").is_dir() and not any((out / n).exists() for n in (PRIOR_FILE, "classical.json", "leaderboard.json")):
        # every leaderboard writes config.json first (one from before the record, classical.json): a runs/ without
        # them is someone else's, e.g. `wavefront train`'s default runs/<model> under an --out of '.'
        raise ConfigError("out", str(out), "holds a runs/ folder but no leaderboard (no config.json, classical.json or "
                                           "leaderboard.json); --overwrite removes only a leaderboard's files: give a "
                                           "fresh --out")
    paths = [out / n for n in names if (out / n).exists()] + sorted(out.glob("suite_*.png"))
    for p in paths:
        p.unlink()
    if (out / "runs").is_dir():
        shutil.rmtree(out / "runs")
        paths.append(out / "runs")
    return paths


def frames_record(config) -> dict:
    """Returns what the leaderboard's frames carried, for ``leaderboard.json`` (as ``sweep`` records it): ``config``
    (the system config, canonical JSON as a dict), ``ici`` (in words) and, only when set, ``impairments``
    (:func:`~wavefront.sim.impairments.impairment_record`)."""
    from wavefront.sim.impairments import impairment_record

    imp = impairment_record(config.channel)
    return {"config": json.loads(config.to_json()), "ici": config.ici_text, **({"impairments": imp} if imp else {})}


def frames_note(table: dict) -> str:
    """Returns the Markdown header's sentence on the frames' inter-carrier interference and receiver impairments when
    the recorded config (``table["config"]``) takes the time-domain path, else an empty string (the header as before)."""
    from wavefront.sim.config import SystemConfig

    if "config" not in table or not SystemConfig.from_dict(table["config"]).channel.time_domain:
        return ""
    return f"Frames (training and test): inter-carrier interference {table['ici']}. "


def _write_json(path: Path, data) -> None:
    atomic_write_json(path, data, indent=1)  # an interrupted run never leaves half a file behind


def run_leaderboard(spec: LeaderboardSpec, config, out: str | Path, progress: bool = True, stop_after_models:
                    int | None = None) -> dict:
    """Trains and evaluates every model of ``spec`` on ``config``'s prior; writes the outputs into ``out``; returns the table.

    ``config``: a SystemConfig whose channel ranges are the prior (e.g. ``configs/prior-12x2.yaml``).
    Resumable: a model whose ``eval.json`` matches the spec is not trained or evaluated again; a
    run with ``last.safetensors`` continues from it. ``stop_after_models``: return after that many
    newly finished (model, seed) runs (for tests of the resume path).
    """
    from tqdm import tqdm

    from wavefront.sim.mimo import mimo_estimators

    check_run(spec, config)
    mimo = config.mimo.is_mimo  # several antennas or users: the joint mmse-bayes is the reference, per-SNR points the suites
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_prior(out, config)  # before any cache in out is read: they all hold frames of one config
    threads = torch.get_num_threads()
    frames = bayes_risk_frames(config, spec.bayes_frames, seed=spec.seed + 7)
    bayes = mimo_estimators(["mmse-bayes"], config)[0] if mimo else BayesMMSE(config)
    with torch.no_grad():
        ref = per_frame_mse(bayes.estimate(frames.pilots_ls), frames.h)
    points = mimo_points(config, spec, bayes) if mimo else None

    classical_path = out / "classical.json"
    classical = json.loads(classical_path.read_text()) if classical_path.exists() else None
    wanted = list(MIMO_CLASSICAL_ROWS) if mimo else [n for n in classical_rows(config) if n in CLASSICAL]
    classical_fp = _fingerprint(spec, "classical", 0, config)
    if (classical is None or classical.get("spec") != classical_fp
            or [r["name"] for r in classical["rows"]] != wanted + ([BOUND_ROW] if mimo else [])):  # a cache from before the impaired rows
        rows = []
        ests = mimo_classical(wanted, config) if mimo else _classical(wanted, config)
        for est in tqdm(ests, desc="classical rows", disable=not progress, leave=False):
            rows.append(evaluate_row(est, config, frames, ref, spec, spec.conditions, points=points))
        if mimo:
            rows.append(bound_row(config, frames, ref, points))
        classical = {"spec": classical_fp, "rows": rows}
        _write_json(classical_path, classical)
    genie_fps = next(r["frames_per_s"] for r in classical["rows"] if r["name"] == "lmmse-genie")

    learned, finished = [], 0
    jobs = [(m, s) for m in spec.models for s in range(spec.seeds)]
    for model_name, s in tqdm(jobs, desc="models", disable=not progress):
        run_dir = out / "runs" / f"{model_name}-s{s}"
        eval_path = run_dir / "eval.json"
        fp = _fingerprint(spec, model_name, s, config)
        if eval_path.exists() and json.loads(eval_path.read_text()).get("spec") == fp:
            learned.append(json.loads(eval_path.read_text()))
            continue
        if stop_after_models is not None and finished >= stop_after_models:
            break
        # what training depends on; the evaluation settings may change without retraining
        _check_same_run(run_dir, {k: fp[k] for k in ("model", "seed", "steps", "batch_size", "lr", "sizes", "conditions",
                                                     "mimo") if k in fp})
        if mimo:
            learned.append(_mimo_learned_row(spec, config, model_name, s, run_dir, frames, ref, points, fp, progress,
                                             threads))
            _write_json(eval_path, learned[-1])
            finished += 1
            continue
        cfg = train_config(spec, model_name, s, run_dir, progress)
        resume = (run_dir / "last.safetensors").exists()
        t0 = time.perf_counter()
        summary = train(cfg, config, resume=resume or None)
        torch.set_num_threads(threads)
        est = load_estimator(str(run_dir / "last.safetensors"), config, conditions=spec.conditions)
        est.name = model_name if spec.seeds == 1 else f"{model_name} (seed {s})"
        row = evaluate_row(est, config, frames, ref, spec, spec.conditions, model=est.model)
        row.update({"model": model_name, "seed": s, "train_steps": summary["step"],
                    "trained_on": f"{est.trained_on}, {summary['step'] * spec.batch_size:,} frames on the fly, seed "
                                  f"{spec.seed + s}, {spec.budget} budget",
                    "train_seconds_this_run": round(time.perf_counter() - t0, 1),
                    "hparams": est.model.hparams, "spec": fp})
        _write_json(eval_path, row)
        learned.append(row)
        finished += 1
    table = build_table(classical["rows"], learned, genie_fps, spec)
    table.update(frames_record(config))
    if mimo:
        table["mimo"] = mimo_setting(config)
    write_outputs(table, out, spec)
    return table


def _mimo_learned_row(spec: LeaderboardSpec, config, model_name: str, s: int, run_dir: Path, frames, ref, points,
                      fp: dict, progress: bool, threads: int) -> dict:
    """Trains ``model_name``'s run ``s`` on MIMO ``config`` (one run per user in :func:`mimo_users_trained`, each in
    ``run_dir/u<k>``, resumable) and returns its evaluated row."""
    users = mimo_users_trained(model_name, config)
    t0, steps = time.perf_counter(), []
    for u in users:
        cfg = mimo_train_config(spec, config, model_name, s, run_dir, u, progress)
        resume = (run_dir / f"u{u}" / "last.safetensors").exists()
        steps.append(train(cfg, config, resume=resume or None)["step"])
    torch.set_num_threads(threads)
    est = load_mimo_learned(model_name, run_dir, config, spec.conditions)
    est.name = model_name if spec.seeds == 1 else f"{model_name} (seed {s})"
    row = evaluate_row(est, config, frames, ref, spec, spec.conditions, model=est.model, points=points)
    row.update({"model": model_name, "seed": s, "train_steps": min(steps), "users_trained": users,
                "trained_on": _mimo_trained_on(config, spec, model_name, s, min(steps), users),
                "train_seconds_this_run": round(time.perf_counter() - t0, 1),
                "hparams": est.per_user[0].model.hparams, "spec": fp})
    return row


def mimo_train_config(spec: LeaderboardSpec, config, model_name: str, seed: int, run_dir: Path, user: int,
                      progress: bool = True) -> TrainConfig:
    """Returns the :class:`TrainConfig` of user ``user``'s run of ``model_name`` (seed ``seed``) on MIMO ``config``, in
    ``run_dir/u<user>``: :func:`train_config`'s, on that user's samples of the MIMO frames, with ``val_frames`` cut
    so that the held-out pairs number the SISO leaderboard's (one user's R antennas a frame)."""
    cfg = train_config(spec, model_name, seed, run_dir / f"u{user}", progress)
    cfg.user, cfg.val_frames = user, max(16, cfg.val_frames // config.mimo.num_rx_antennas)
    return cfg


def train_config(spec: LeaderboardSpec, model_name: str, seed: int, run_dir: Path, progress: bool = True) -> TrainConfig:
    """Returns the :class:`TrainConfig` of ``model_name``'s run ``seed`` under ``spec`` (what a rerun must repeat exactly)."""
    return TrainConfig(model=model_name, model_overrides=dict(spec.sizes.get(model_name, {})), steps=spec.steps,
                       batch_size=spec.batch_size, lr=spec.lr, warmup_steps=default_warmup(spec.steps),
                       eval_every=max(1, spec.steps // 4), val_frames=512, patience=0, seed=spec.seed + seed,
                       device=spec.device, out_dir=str(run_dir), progress=progress, conditions=spec.conditions)


def build_table(classical: list[dict], learned: list[dict], genie_fps: float, spec: LeaderboardSpec) -> dict:
    """Returns ``{"spec", "rows"}``: every row with its throughput ratio to lmmse-genie, ranked by Bayes risk."""
    rows = []
    for r in classical:
        closed = r["name"] == BOUND_ROW
        rows.append({**r, "kind": "bound" if closed else "classical",
                     "trained_on": "not an estimator" if closed else "not trained (closed form over the prior)"})
    for r in learned:
        rows.append({**r, "kind": "learned"})
    for r in rows:
        r["throughput_vs_genie"] = None if r["frames_per_s"] is None else r["frames_per_s"] / genie_fps
    rows.sort(key=lambda r: (math.isnan(r["bayes_risk_db"]), r["bayes_risk_db"]))  # a diverged model's NaN last
    return {"spec": {k: v for k, v in vars(spec).items()}, "rows": rows}


def write_outputs(table: dict, out: Path, spec: LeaderboardSpec) -> list[Path]:
    """Writes ``leaderboard.md``, ``.json``, ``.csv``, ``pareto.png`` and ``suite_<sweep>.png``; returns the paths."""
    rows = table["rows"]
    cols = ["rank", "name", "kind", "bayes_risk_db", "gap_to_mmse_bayes_db", "gap_se_db", "worst_in_prior_suite_gap_db",
            "parameters", "flops_per_frame", "frames_per_s", "throughput_vs_genie", "latency_ms", "given", "trained_on"]
    suite_ref = {(r["sweep"], r["snr_db"], r["delay_spread_ns"], r["doppler_hz"]): r["mse_db"]
                 for x in rows if x["name"] == "mmse-bayes" for r in x["suites"]}
    flat = []
    for i, r in enumerate(rows, 1):
        gaps = [s["mse_db"] - suite_ref[(s["sweep"], s["snr_db"], s["delay_spread_ns"], s["doppler_hz"])]
                for s in r["suites"] if in_paper_prior(s) and (s["sweep"], s["snr_db"], s["delay_spread_ns"],
                                                               s["doppler_hz"]) in suite_ref]
        r["worst_in_prior_suite_gap_db"] = max(gaps) if gaps else None
        flat.append({"rank": i, **{c: r.get(c) for c in cols[1:]}})
    mimo = any("in_prior" in x for r in rows for x in r["suites"])  # MIMO rows: per-SNR points, NMSE
    if mimo:
        for r, f in zip(rows, flat):
            f["nmse_db"] = r.get("nmse_db")
            for x in r["suites"]:
                f[f"mse_db_at_{x['snr_db']:g}db"] = x["mse_db"]
                f[f"gap_db_at_{x['snr_db']:g}db"] = x["gap_to_mmse_bayes_db"]
                f[f"gap_se_db_at_{x['snr_db']:g}db"] = x["gap_se_db"]
    _write_json(out / "leaderboard.json", table)
    atomic_write_csv(out / "leaderboard.csv", flat)
    atomic_write_text(out / "leaderboard.md", format_markdown_mimo(flat, rows, spec, table.get("mimo", ""))
                      if mimo else format_markdown(flat, spec, frames_note(table)))
    return [out / "leaderboard.json", out / "leaderboard.csv", out / "leaderboard.md"] + plot_leaderboard(rows, out)


def in_paper_prior(point: dict) -> bool:
    """Returns whether a suite point lies inside the paper's training prior (:func:`wavefront.sim.experiment.in_prior`);
    a MIMO point (conditions drawn over the config's prior) says so itself (``in_prior``)."""
    if "in_prior" in point:
        return point["in_prior"]
    return in_prior(point["snr_db"], point["delay_spread_ns"] * 1e-9, point["doppler_hz"])


def format_markdown(flat: list[dict], spec: LeaderboardSpec, frames: str = "") -> str:
    """Returns the leaderboard as a Markdown table with a header saying what was trained and measured (led by
    ``frames``, :func:`frames_note`'s sentence, when set)."""
    f = lambda v, d=2: "–" if v is None else (f"{v:,.{d}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))  # noqa: E731
    lines = [f"{frames}Budget {spec.budget}: {spec.steps} steps x batch {spec.batch_size} per model, {spec.seeds} seed(s), "
             f"conditions {spec.conditions}; Bayes risk over {spec.bayes_frames} prior frames (the same for every "
             f"row), gap to mmse-bayes ± paired SE; worst gap at the in-prior points of the paper suites "
             f"({spec.frames_per_point} frames each); CPU throughput one thread, batch {THROUGHPUT_BATCH}.", "",
             "| # | estimator | Bayes risk [dB] | gap to mmse-bayes [dB] | worst in-prior suite gap [dB] | parameters "
             "| FLOPs/frame | frames/s (1 thread) | × genie | latency b=1 [ms] | given | trained on |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in flat:
        lines.append(f"| {r['rank']} | {r['name']} | {f(r['bayes_risk_db'])} | {r['gap_to_mmse_bayes_db']:+.3f} ± "
                     f"{r['gap_se_db']:.3f} | {f(r['worst_in_prior_suite_gap_db'])} | {f(r['parameters'])} | "
                     f"{f(r['flops_per_frame'])} | {f(r['frames_per_s'], 0)} | {f(r['throughput_vs_genie'])} | "
                     f"{f(r['latency_ms'])} | {r['given']} | {r['trained_on']} |")
    return "\n".join(lines) + "\n"


def format_markdown_mimo(flat: list[dict], rows: list[dict], spec: LeaderboardSpec, setting: str) -> str:
    """Returns a MIMO leaderboard as Markdown: Bayes risk (MSE and NMSE), the paired gap to the joint mmse-bayes,
    per-SNR MSE with its paired gap, cost, what each row knew and what it was trained on."""
    f = lambda v, d=2: "–" if v is None else (f"{v:,.{d}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))  # noqa: E731
    snrs = [x["snr_db"] for x in rows[0]["suites"]] if rows else []
    n_pt = rows[0]["suites"][0]["frames"] if rows and rows[0]["suites"] else 0
    lines = [f"{setting}Budget {spec.budget}: {spec.steps} steps x batch {spec.batch_size} MIMO frames per training run, "
             f"{spec.seeds} seed(s), conditions {spec.conditions}. Bayes risk: MSE per resource element over antennas, users, "
             f"subcarriers and symbols of {spec.bayes_frames} prior frames (the same for every row; NMSE beside it), gap to "
             f"the joint mmse-bayes ± the SE of the paired per-frame difference; per SNR: {n_pt} frames each, delay spread "
             f"and Doppler over the prior, MSE [dB] (gap to mmse-bayes ± paired SE); CPU throughput one thread, batch "
             f"{THROUGHPUT_BATCH} MIMO frames.", "",
             "| # | estimator | Bayes risk [dB] | NMSE [dB] | gap to mmse-bayes [dB] | "
             + " | ".join(f"{x:g} dB" for x in snrs) + " | parameters | FLOPs/frame | frames/s (1 thread) | × genie "
             "| latency b=1 [ms] | given | trained on |",
             "|---|---|---|---|---|" + "---|" * len(snrs) + "---|---|---|---|---|---|---|"]
    for r, row in zip(flat, rows):
        pts = []
        for x in row["suites"]:
            gap = "" if row["name"] == "mmse-bayes" else f" ({x['gap_to_mmse_bayes_db']:+.2f} ± {x['gap_se_db']:.2f})"
            pts.append(f"{x['mse_db']:.2f}{gap}")
        lines.append(f"| {r['rank']} | {r['name']} | {f(r['bayes_risk_db'])} | {f(r.get('nmse_db'))} | "
                     f"{r['gap_to_mmse_bayes_db']:+.3f} ± {r['gap_se_db']:.3f} | " + " | ".join(pts) + f" | "
                     f"{f(r['parameters'])} | {f(r['flops_per_frame'])} | {f(r['frames_per_s'], 0)} | "
                     f"{f(r['throughput_vs_genie'])} | {f(r['latency_ms'])} | {r['given']} | {r['trained_on']} |")
    return "\n".join(lines) + "\n"


def plot_leaderboard(rows: list[dict], out: Path) -> list[Path]:
    """Draws the Pareto plot and one curve plot per paper suite (out-of-prior points hollow); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    paths = []
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r in rows:
        if r["frames_per_s"] is None:  # the bound: no estimator to time
            ax.axhline(r["gap_to_mmse_bayes_db"], color="0.5", lw=0.8, ls=":", label=r["name"])
            ax.legend(fontsize=7)
            continue
        ax.scatter(r["frames_per_s"], r["gap_to_mmse_bayes_db"], marker="o" if r["kind"] == "learned" else "s")
        ax.annotate(r["name"], (r["frames_per_s"], r["gap_to_mmse_bayes_db"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.axhline(0, color="k", lw=0.8, ls="--")
    ax.set_xlabel(f"CPU frames/s (1 thread, batch {THROUGHPUT_BATCH})")
    ax.set_ylabel("gap to mmse-bayes's Bayes risk [dB]")
    ax.grid(alpha=0.3, which="both")
    paths.append(finish_figure(fig, out / "pareto.png"))
    present = {x["sweep"] for r in rows for x in r["suites"]}  # MIMO: the per-SNR points only
    for sweep, axis in ((sw.name, sw.axis) for sw in paper.TEST_SWEEPS if sw.name in present):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        key = "delay_spread_ns" if axis == "delay_spread_s" else axis
        for r in rows:
            pts = [s for s in r["suites"] if s["sweep"] == sweep]
            if not pts:
                continue
            line, = ax.plot([s[key] for s in pts], [s["mse_db"] for s in pts], "-", lw=1, label=r["name"])
            out_pts = [s for s in pts if not in_paper_prior(s)]
            ax.plot([s[key] for s in out_pts], [s["mse_db"] for s in out_pts], "o", mfc="none", color=line.get_color())
        ax.set_xlabel(AXIS_LABEL[axis] + " (hollow: outside the prior)")
        ax.set_ylabel("MSE [dB]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        paths.append(finish_figure(fig, out / f"suite_{sweep}.png"))
    return paths
