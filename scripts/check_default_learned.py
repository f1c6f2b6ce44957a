"""Checks the default learned estimator against issue 22's targets, with paired standard errors.

    python scripts/check_default_learned.py [--frames-per-point 300] [--bayes-frames 2000] [--model gated-lmmse]

Prints, on the default 12 x 2 grid (TDL-A):

- the Bayes risk over frames drawn from the paper's prior (SNR 0-25 dB, 25-300 ns, 50-1000 Hz)
  against ``mmse-bayes`` on the same frames, gap +- the paired SE (target: within 0.2 dB);
- at every point of the three paper suites, the gap to ``mmse-bayes`` +- paired SE (target at
  in-prior points: at most 0.3 dB + 2 SE);
- along the README's first sweep (SNR 0-30 dB at ``--delay-spread-ns``/``--doppler-hz``) the gap
  to the best row that is not given the truth (target: within 0.1 dB + 2 SE);
- CPU throughput, one thread, batch 200 prior frames, against ``lmmse-genie`` measured in the
  same run (target: at least 0.5x).

Every estimator sees the same frames at a point; the receivers' prior is the paper's ranges
with the SNR widened to the point's, as in ``sweep`` and ``evaluate``.
"""
from __future__ import annotations

import argparse
import warnings

import torch


def main() -> None:
    from wavefront import paper
    from wavefront.estimators.leaderboard import paired_gap, per_frame_mse, throughput
    from wavefront.resolve import resolve_estimators
    from wavefront.sim.config import preset
    from wavefront.sim.conditions import estimate_conditions
    from wavefront.sim.estimators import meta_for
    from wavefront.sim.experiment import in_prior, prior_config
    from wavefront.sim.frames import FrameGenerator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gated-lmmse")
    ap.add_argument("--frames-per-point", type=int, default=300)
    ap.add_argument("--bayes-frames", type=int, default=2000)
    ap.add_argument("--delay-spread-ns", type=float, default=300.0)
    ap.add_argument("--doppler-hz", type=float, default=1000.0)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="inter-carrier interference")
    torch.set_num_threads(1)
    base = preset("default")
    names = ["ls-linear", "lmmse-robust", "lmmse-estimated", "mmse-bayes", args.model, "lmmse-genie"]

    def run(point_config, prior, n, seed):
        ests = resolve_estimators(names, prior)
        fr = FrameGenerator(point_config).generate(n, seed=seed, with_data=False)
        cond = estimate_conditions(fr.pilots_ls, prior)
        out = {}
        with torch.no_grad():
            for e in ests:
                out[e.name] = per_frame_mse(e.estimate(fr.pilots_ls, meta_for(e.needs, fr.meta, cond)), fr.h)
        return out, ests, fr

    prior = prior_config(base)
    mse, ests, fr = run(prior, prior, args.bayes_frames, 7)
    gap, se = paired_gap(mse[args.model], mse["mmse-bayes"])
    print(f"Bayes risk over {args.bayes_frames} prior frames: {args.model} {10 * torch.log10(mse[args.model].mean()):.3f} dB, "
          f"mmse-bayes {10 * torch.log10(mse['mmse-bayes'].mean()):.3f} dB, gap {gap:+.3f} +- {se:.3f} dB")
    fps = {e.name: throughput(e, fr, prior, "estimated")["frames_per_s"] for e in ests
           if e.name in (args.model, "lmmse-genie", "mmse-bayes")}
    print(f"throughput (1 thread, batch 200, prior frames): {args.model} {fps[args.model]:,.0f}/s, lmmse-genie "
          f"{fps['lmmse-genie']:,.0f}/s ({fps[args.model] / fps['lmmse-genie']:.2f}x), mmse-bayes {fps['mmse-bayes']:,.0f}/s")

    worst = -1e9
    print("paper suites: point, gap to mmse-bayes +- paired SE [dB]")
    for i, c in enumerate(paper.points()):
        cfg = base.updated(channel={k: c[k] for k in ("snr_db", "delay_spread_s", "doppler_hz")})
        mse, _, _ = run(cfg, prior_config(base, [c]), args.frames_per_point, 100 + i)
        gap, se = paired_gap(mse[args.model], mse["mmse-bayes"])
        inside = in_prior(c["snr_db"], c["delay_spread_s"], c["doppler_hz"])
        worst = max(worst, gap - 2 * se) if inside else worst
        print(f"  {c['sweep']:>12} {c['snr_db']:>4g} dB {c['delay_spread_s'] * 1e9:>4.0f} ns {c['doppler_hz']:>5g} Hz: "
              f"{gap:+.3f} +- {se:.3f}" + ("" if inside else "  (outside the prior)"))
    print(f"worst in-prior gap minus 2 SE: {worst:+.3f} dB (target <= 0.3)")

    print(f"first sweep ({args.delay_spread_ns:g} ns, {args.doppler_hz:g} Hz): gap to the best non-genie row +- paired SE")
    for snr in range(0, 31, 5):
        c = {"snr_db": float(snr), "delay_spread_s": args.delay_spread_ns * 1e-9, "doppler_hz": args.doppler_hz}
        mse, _, _ = run(base.updated(channel=c), prior_config(base, [c]), args.frames_per_point, 200 + snr)
        rivals = {k: v for k, v in mse.items() if k not in ("lmmse-genie", args.model)}
        best = min(rivals, key=lambda k: float(rivals[k].mean()))
        gap, se = paired_gap(mse[args.model], mse[best])
        print(f"  {snr:>2} dB: {gap:+.3f} +- {se:.3f} vs {best}" + ("  (fails 0.1 + 2 SE)" if gap > 0.1 + 2 * se else ""))


if __name__ == "__main__":
    main()
