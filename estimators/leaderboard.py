"""The leaderboard: every registered model trained under one budget, ranked beside the classical estimators.

For each model (and seed) :func:`run_leaderboard` trains on frames drawn on the fly from the
prior (the config's channel ranges; the same frames and seeds for every model), keeps the run
in ``<out>/runs/<model>-s<seed>/`` and its evaluation in ``<out>/runs/<model>-s<seed>/eval.json``,
so rerunning the same command continues where it stopped. Each row is evaluated on:

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
from wavefront.estimators.train import TrainConfig, train
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
    """Returns ``n`` frames drawn over ``config``'s channel ranges (the prior), without data symbols."""
    return FrameGenerator(config).generate(n, seed=seed, with_data=False)


def per_frame_mse(estimate: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Returns ``[B]`` float64: each frame's ``mean |estimate - h|^2`` over its ``[F, T]`` grid."""
    d = (estimate.to(torch.complex64) - h)
    return (d.real.square() + d.imag.square()).mean((1, 2)).double()


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
    (:func:`wavefront.sim.estimators.meta_for`); an estimated condition is computed inside, so it is timed with the row."""
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


def evaluate_row(est, config, frames, reference_mse: torch.Tensor, spec: LeaderboardSpec, conditions: str,
                 model=None) -> dict:
    """Returns one leaderboard row for estimator ``est``: Bayes risk (paired to ``reference_mse``), suites, cost."""
    meta = _meta_for(est, frames, config, conditions)
    with torch.no_grad():
        chunks = []
        for s in range(0, len(frames), 500):
            p = frames.pilots_ls[s:s + 500]
            chunks.append(est.estimate(p, meta(p, slice(s, s + 500))))
        e = per_frame_mse(torch.cat(chunks), frames.h)
    gap, se = paired_gap(e, reference_mse)
    cost = throughput(est, frames, config, conditions)

    return {"name": est.name, "given": given_text(est, "true" if conditions == "true" else "estimated"),
            "bayes_risk_db": 10 * math.log10(float(e.mean())), "gap_to_mmse_bayes_db": gap, "gap_se_db": se,
            "parameters": sum(p.numel() for p in model.parameters()) if model is not None else 0,
            "flops_per_frame": flops_per_frame(model, config) if model is not None else None,
            **cost, "suites": _suite_rows(est, config, spec, conditions)}


# ---- the run ----------------------------------------------------------------------------
def _fingerprint(spec: LeaderboardSpec, model: str, seed: int) -> dict:
    return {"model": model, "seed": seed, "steps": spec.steps, "batch_size": spec.batch_size, "lr": spec.lr,
            "sizes": spec.sizes.get(model, {}), "conditions": spec.conditions, "bayes_frames": spec.bayes_frames,
            "frames_per_point": spec.frames_per_point}


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


    spec.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    frames = bayes_risk_frames(config, spec.bayes_frames, seed=spec.seed + 7)
    bayes = BayesMMSE(config)
    with torch.no_grad():
        ref = per_frame_mse(bayes.estimate(frames.pilots_ls), frames.h)

    classical_path = out / "classical.json"
    classical = json.loads(classical_path.read_text()) if classical_path.exists() else None
    wanted = [n for n in classical_rows(config) if n in CLASSICAL]
    if (classical is None or classical.get("spec") != _fingerprint(spec, "classical", 0)
            or [r["name"] for r in classical["rows"]] != wanted):  # a cache from before the impaired rows
        rows = []
        for est in tqdm(_classical(wanted, config), desc="classical rows", disable=not progress, leave=False):
            rows.append(evaluate_row(est, config, frames, ref, spec, spec.conditions))
        classical = {"spec": _fingerprint(spec, "classical", 0), "rows": rows}
        _write_json(classical_path, classical)
    genie_fps = next(r["frames_per_s"] for r in classical["rows"] if r["name"] == "lmmse-genie")

    learned, finished = [], 0
    jobs = [(m, s) for m in spec.models for s in range(spec.seeds)]
    for model_name, s in tqdm(jobs, desc="models", disable=not progress):
        run_dir = out / "runs" / f"{model_name}-s{s}"
        eval_path = run_dir / "eval.json"
        fp = _fingerprint(spec, model_name, s)
        if eval_path.exists() and json.loads(eval_path.read_text()).get("spec") == fp:
            learned.append(json.loads(eval_path.read_text()))
            continue
        if stop_after_models is not None and finished >= stop_after_models:
            break
        # what training depends on; the evaluation settings may change without retraining
        _check_same_run(run_dir, {k: fp[k] for k in ("model", "seed", "steps", "batch_size", "lr", "sizes", "conditions")})
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
    write_outputs(table, out, spec)
    return table


def train_config(spec: LeaderboardSpec, model_name: str, seed: int, run_dir: Path, progress: bool = True) -> TrainConfig:
    """Returns the :class:`TrainConfig` of ``model_name``'s run ``seed`` under ``spec`` (what a rerun must repeat exactly)."""
    return TrainConfig(model=model_name, model_overrides=dict(spec.sizes.get(model_name, {})), steps=spec.steps,
                       batch_size=spec.batch_size, lr=spec.lr, warmup_steps=min(200, spec.steps // 10),
                       eval_every=max(1, spec.steps // 4), val_frames=512, patience=0, seed=spec.seed + seed,
                       device=spec.device, out_dir=str(run_dir), progress=progress, conditions=spec.conditions)


def build_table(classical: list[dict], learned: list[dict], genie_fps: float, spec: LeaderboardSpec) -> dict:
    """Returns ``{"spec", "rows"}``: every row with its throughput ratio to lmmse-genie, ranked by Bayes risk."""
    rows = []
    for r in classical:
        rows.append({**r, "kind": "classical", "trained_on": "not trained (closed form over the prior)"})
    for r in learned:
        rows.append({**r, "kind": "learned"})
    for r in rows:
        r["throughput_vs_genie"] = r["frames_per_s"] / genie_fps
    rows.sort(key=lambda r: r["bayes_risk_db"])
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
    _write_json(out / "leaderboard.json", table)
    atomic_write_csv(out / "leaderboard.csv", flat)
    atomic_write_text(out / "leaderboard.md", format_markdown(flat, spec))
    return [out / "leaderboard.json", out / "leaderboard.csv", out / "leaderboard.md"] + plot_leaderboard(rows, out)


def in_paper_prior(point: dict) -> bool:
    """Returns whether a suite point lies inside the paper's training prior (:func:`wavefront.sim.experiment.in_prior`)."""
    return in_prior(point["snr_db"], point["delay_spread_ns"] * 1e-9, point["doppler_hz"])


def format_markdown(flat: list[dict], spec: LeaderboardSpec) -> str:
    """Returns the leaderboard as a Markdown table with a header saying what was trained and measured."""
    f = lambda v, d=2: "–" if v is None else (f"{v:,.{d}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))  # noqa: E731
    lines = [f"Budget {spec.budget}: {spec.steps} steps x batch {spec.batch_size} per model, {spec.seeds} seed(s), "
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


def plot_leaderboard(rows: list[dict], out: Path) -> list[Path]:
    """Draws the Pareto plot and one curve plot per paper suite (out-of-prior points hollow); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    paths = []
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r in rows:
        ax.scatter(r["frames_per_s"], r["gap_to_mmse_bayes_db"], marker="o" if r["kind"] == "learned" else "s")
        ax.annotate(r["name"], (r["frames_per_s"], r["gap_to_mmse_bayes_db"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.axhline(0, color="k", lw=0.8, ls="--")
    ax.set_xlabel(f"CPU frames/s (1 thread, batch {THROUGHPUT_BATCH})")
    ax.set_ylabel("gap to mmse-bayes's Bayes risk [dB]")
    ax.grid(alpha=0.3, which="both")
    paths.append(finish_figure(fig, out / "pareto.png"))
    for sweep, axis in ((sw.name, sw.axis) for sw in paper.TEST_SWEEPS):
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
