"""MIMO ``lmmse-estimated`` and ``mmse-bayes`` before and after the likelihood screen, side by side in one run.

    python scripts/bench_mimo_bayes.py --preset mimo-chest --snr-db -12 -2 --frames 2

"Before" is ``sim/mimo_bayes.py`` as of ``--before`` (a git revision; default the commit before the
screen), loaded from git into its own module; "after" is the working tree's. Both run on the same
frames at the sweep's prior (``prior_config``: the paper's delay-spread and Doppler ranges, SNR
``--prior-snr-db``), on one CPU thread. Per SNR point it prints each side's seconds per frame
(the grid's one-off build apart), whether the ML conditions are identical on every frame, both
NMSEs and their difference in dB, and the largest difference of the estimates relative to the
channel's RMS.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_before(rev: str):
    """Returns ``sim/mimo_bayes.py`` at git revision ``rev`` as a module of its own."""
    src = subprocess.run(["git", "show", f"{rev}:sim/mimo_bayes.py"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    name = "wavefront.sim._mimo_bayes_before"
    spec = importlib.util.spec_from_loader(name, loader=None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    exec(compile(src, f"{rev}:sim/mimo_bayes.py", "exec"), mod.__dict__)
    return mod


def nmse_db(h_hat: torch.Tensor, h: torch.Tensor) -> float:
    return float(10 * torch.log10((h_hat - h).abs().square().sum() / h.abs().square().sum()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="mimo-chest")
    ap.add_argument("--snr-db", type=float, nargs="+", default=[-12.0, -2.0])
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prior-snr-db", type=float, nargs=2, default=[-12.0, 25.0])
    ap.add_argument("--before", default="9f0aed4")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from wavefront.sim import mimo_bayes as after
    from wavefront.sim.config import preset
    from wavefront.sim.experiment import prior_config
    from wavefront.sim.mimo import MimoFrameGenerator

    before = load_before(args.before)
    print("| SNR | estimator | before s/frame | after s/frame | ML identical | NMSE before | NMSE after | "
          "difference | max abs diff / RMS |\n|---|---|---|---|---|---|---|---|---|")
    builds = {}
    for snr in args.snr_db:
        cfg = preset(args.preset).updated(channel={"snr_db": snr})
        pc = prior_config(cfg, [{"snr_db": snr}], {"snr_db": tuple(args.prior_snr_db)})
        fr = MimoFrameGenerator(cfg).generate(args.frames, args.seed, with_data=False)
        rms = float(fr.h.abs().square().mean().sqrt())
        for side, mod in (("before", before), ("after", after)):
            if side not in builds:
                t = time.perf_counter()
                mod._grid(pc, mod.MimoPrior.from_config(pc), torch.device("cpu"))
                builds[side] = time.perf_counter() - t
        ml = {}
        for side, mod in (("before", before), ("after", after)):
            ml[side] = mod.estimate_mimo_conditions(fr.pilots_ls, pc, mod.MimoPrior.from_config(pc))
        same = all(torch.equal(ml["before"][k], ml["after"][k]) for k in ml["before"])
        for name in ("lmmse-estimated", "mmse-bayes"):
            out, secs = {}, {}
            for side, mod in (("before", before), ("after", after)):
                est = (mod.MimoEstimatedLMMSE if name == "lmmse-estimated" else mod.MimoBayesMMSE)(pc)
                t = time.perf_counter()
                out[side] = est.estimate(fr.pilots_ls)
                secs[side] = (time.perf_counter() - t) / args.frames
            a, b = nmse_db(out["before"], fr.h), nmse_db(out["after"], fr.h)
            diff = float((out["before"] - out["after"]).abs().max()) / rms
            print(f"| {snr:g} dB | `{name}` | {secs['before']:.2f} | {secs['after']:.2f} | "
                  f"{'yes' if same else 'NO'} | {a:.4f} dB | {b:.4f} dB | {b - a:+.5f} dB | {diff:.1e} |", flush=True)
    print(f"\ngrid build (once per config and prior): before {builds['before']:.1f} s, after {builds['after']:.1f} s; "
          f"{args.frames} frames a point, seed {args.seed}, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
