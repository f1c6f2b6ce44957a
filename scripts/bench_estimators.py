"""Benchmark: CPU frames/s and Bayes risk of the classical estimators, before and after issue 24.3 / 22.3.

Side by side in one run, on one thread (``torch.set_num_threads(1)``), TDL-A, the default
120 x 14 grid with 12 x 2 pilots, the paper prior (SNR 0-25 dB, 25-300 ns, 50-1000 Hz; the
estimators' grid 25 ns x 50 Hz x 0.5 dB):

- frames/s at batch ``--batch`` (200) on frames drawn over the prior (each frame its own
  conditions) and on frames of one condition (``--one``: 200 ns, 500 Hz, 20 dB), for
  ``estimate_conditions``, ``lmmse-estimated``, ``mmse-bayes``, ``lmmse-bank``, ``lmmse-genie``,
  ``lmmse-robust`` and ``ls-linear``;
- "before": the same estimators from ``sim/conditions.py`` (and ``sim/prior_lmmse.py``, once
  they moved there) as they were at ``--base`` (default 9778769, the commit before the fast
  paths; ``--base 8f237c3`` times this round's ``mmse-bayes`` changes alone), loaded from git
  into this process, so both run on the same frames, interleaved, in one run. ``lmmse-genie``, ``lmmse-robust`` and
  ``ls-linear`` did not change; their "before" is the same code (a check on the timing noise);
- timing: the best of ``--repeats`` calls of each, interleaved before/after, measured in the
  thread's CPU time (``time.thread_time``), which a loaded machine disturbs far less than the
  wall clock (not wholly: other jobs still share the caches and the memory bus, so the load
  average at the start and the end is printed with the rates);
- Bayes risk: the MSE (dB) of each estimator over ``--frames`` (1000) frames drawn over the
  prior, the same frames for every row, with the paired difference to ``mmse-bayes`` and its
  standard error; before and after for the three that changed.

Usage: ``python scripts/bench_estimators.py [--frames 1000] [--batch 200] [--repeats 7] [--base REV]``.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import torch

from wavefront.estimators import load_estimator
from wavefront.estimators.registry import DEFAULT_LEARNED
from wavefront.sim import conditions as after
from wavefront.sim import fading, profiles, statistics
from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import get_classical, meta_for
from wavefront.sim.frames import FrameGenerator

PAPER = {"snr_db": [0.0, 25.0], "delay_spread_s": [25e-9, 300e-9], "doppler_hz": [50.0, 1000.0]}
ROOT = Path(__file__).resolve().parents[1]


def _git_show(rev: str, path: str) -> str | None:
    """Returns ``path`` at git revision ``rev``, or None where the revision has no such file."""
    res = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else None


def _exec_module(src: str, name: str, origin: str, swap: dict) -> types.ModuleType:
    """Returns ``src`` run as module ``name``, with ``swap``'s modules standing in for those names while it imports."""
    mod = types.ModuleType(name)
    mod.__package__ = "wavefront.sim"
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    saved = {k: sys.modules.get(k) for k in swap}
    sys.modules.update(swap)
    try:
        exec(compile(src, origin, "exec"), mod.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k)
            else:
                sys.modules[k] = v
    return mod


def load_before(rev: str) -> types.SimpleNamespace:
    """Returns ``estimate_conditions``, ``EstimatedLMMSE`` and ``BayesMMSE`` as they were at git revision ``rev``.

    They come from ``sim/conditions.py`` and, from the revision that moved the estimators out of
    it on, ``sim/prior_lmmse.py`` (made to import the old ``conditions``); everything else they
    import is today's. Revisions before the split of ``sim/channel.py`` import it: they get its
    old names from the new modules.
    """
    old_channel = types.ModuleType("wavefront.sim.channel")
    for new in (profiles, statistics, fading):
        old_channel.__dict__.update({k: v for k, v in vars(new).items() if not k.startswith("__")})
    cond = _exec_module(_git_show(rev, "sim/conditions.py"), "wavefront.sim._conditions_before",
                        f"{rev}:sim/conditions.py", {"wavefront.sim.channel": old_channel})
    src = _git_show(rev, "sim/prior_lmmse.py")
    est = cond if src is None else _exec_module(src, "wavefront.sim._prior_lmmse_before", f"{rev}:sim/prior_lmmse.py",
                                                {"wavefront.sim.conditions": cond})
    return types.SimpleNamespace(estimate_conditions=cond.estimate_conditions, EstimatedLMMSE=est.EstimatedLMMSE,
                                 BayesMMSE=est.BayesMMSE)


class _Conditions:
    """``estimate_conditions`` behind the estimator interface, for timing."""

    name, needs = "estimate_conditions", "none"

    def __init__(self, module, config):
        self.module, self.config = module, config

    def estimate(self, pilots, meta):
        return self.module.estimate_conditions(pilots, self.config)


def told(est, meta: dict) -> dict:
    """What ``est`` may read of the true ``meta`` (the engine's rule, :func:`wavefront.sim.estimators.meta_for`)."""
    return meta_for(est.needs, meta, None)


def fps(fn, batch: int, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return batch / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000, help="prior frames for the Bayes risk")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per estimator and side (best taken)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --repeats calls")
    ap.add_argument("--base", default="9778769", help="git revision of 'before'")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="inter-carrier interference")
    cfg = SystemConfig.from_dict({"channel": PAPER})
    one = cfg.updated(channel={"snr_db": 20.0, "delay_spread_s": 200e-9, "doppler_hz": 500.0})
    before = load_before(args.base)
    names = ["estimate_conditions", "lmmse-estimated", "mmse-bayes", "lmmse-bank", "lmmse-genie", "lmmse-robust",
             "ls-linear", DEFAULT_LEARNED]
    new = {n: (_Conditions(after, cfg) if n == "estimate_conditions" else
               load_estimator(n, cfg) if n == DEFAULT_LEARNED else get_classical(n, cfg)) for n in names}
    old = {"estimate_conditions": _Conditions(before, cfg), "lmmse-estimated": before.EstimatedLMMSE(cfg),
           "mmse-bayes": before.BayesMMSE(cfg)}
    sets = {"prior": FrameGenerator(cfg).generate(args.batch, seed=1, with_data=False),
            "one condition": FrameGenerator(one).generate(args.batch, seed=1, with_data=False)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, batch {args.batch}, TDL-A, "
          f"{cfg.ofdm.num_subcarriers}x{cfg.ofdm.num_symbols}, 12x2 pilots; before = {args.base}; "
          f"frames/s from thread CPU time, best of {args.rounds} x {args.repeats}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for label, fr in sets.items():
        for est in list(new.values()) + list(old.values()):  # warm the caches (banks, cluster fit)
            est.estimate(fr.pilots_ls, told(est, fr.meta))
        rate = {}
        for _ in range(args.rounds):
            for n in names:
                for side, table in (("after", new), ("before", old)):
                    est = table.get(n) or (new[n] if side == "before" else None)
                    m = told(est, fr.meta)
                    r = fps(lambda: est.estimate(fr.pilots_ls, m), args.batch, args.repeats)
                    rate[n, side] = max(rate.get((n, side), 0.0), r)
        genie = rate["lmmse-genie", "after"]
        print(f"\n{label} frames: {'estimator':<20} {'before':>10} {'after':>10} {'ratio':>7} {'/ genie':>8}")
        for n in names:
            b, a = rate[n, "before"], rate[n, "after"]
            print(f"{'':<{len(label) + 8}} {n:<20} {b:>10,.0f} {a:>10,.0f} {a / b:>6.2f}x {a / genie:>7.2f}x")
        # the README sweep's rows: the learned row's cost against all classical rows together
        classical = ("ls-linear", "lmmse-robust", "lmmse-estimated", "mmse-bayes", "lmmse-genie")
        cost = sum(1 / rate[c, "after"] for c in classical)
        print(f"{'':<{len(label) + 8}} {DEFAULT_LEARNED} costs {(1 / rate[DEFAULT_LEARNED, 'after']) / cost:.2f}x "
              f"the classical rows of the README sweep together ({', '.join(classical)})")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end of the timing")
    # Bayes risk over the prior, the same frames for every row
    fr = FrameGenerator(cfg).generate(args.frames, seed=11, with_data=False)
    mse = {}
    for n in names[1:]:
        h = new[n].estimate(fr.pilots_ls, told(new[n], fr.meta))
        mse[n] = (h - fr.h).abs().square().mean((1, 2)).double()
    for n in ("lmmse-estimated", "mmse-bayes"):
        h = old[n].estimate(fr.pilots_ls, {})
        mse[n + " (before)"] = (h - fr.h).abs().square().mean((1, 2)).double()
    ref = mse["mmse-bayes"]
    print(f"\nBayes risk over {args.frames} prior frames (seed 11): MSE dB, and the paired difference to mmse-bayes")
    for n, m in mse.items():
        d = m - ref
        se = 10 / math.log(10) * float(d.std() / ref.mean()) / math.sqrt(len(d))
        print(f"  {n:<26} {10 * math.log10(float(m.mean())):>8.3f} dB   {10 * math.log10(float(m.mean() / ref.mean())):+.4f}"
              f" +- {se:.4f} dB")


if __name__ == "__main__":
    main()
