"""The Bayes risk of the MIMO receivers over a prior with rho unknown, paired on the same frames, and their speed.

    python scripts/mimo_bayes_table.py --rx-antennas 8 --frames 200

Frames: 48 x 14 grid (pilots every 4th subcarrier on symbols 2 and 11, dealt to 2 users: 6 x 2
each), TDL-A, delay spread 25-300 ns, Doppler 50-1000 Hz, SNR 0-20 dB and rho 0-0.9, each drawn
uniformly per frame. Rows: the genie over space (true conditions and rho) and its closed-form
bound, ``mmse-bayes`` and ``lmmse-estimated`` joint over antennas and users (rho in the prior),
their per-pair versions (each antenna and user alone, rho ignored), and LS with linear
interpolation. The Bayes risk is the mean MSE per resource element (the channel has unit power
per element, so it is also the NMSE); the paired column is each row's mean per-frame difference
to ``mmse-bayes`` with its standard error. Speed: frames per second of ``estimate`` on one CPU
thread (the second of two calls, so the caches are warm), and that as a multiple of the genie's.
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from wavefront.sim.config import SystemConfig
from wavefront.sim.mimo import MimoFrameGenerator, mimo_estimators, mimo_genie_mse


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rx-antennas", type=int, default=8)
    ap.add_argument("--users", type=int, default=2)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = SystemConfig.from_dict({
        "ofdm": {"num_subcarriers": 48, "num_symbols": 14, "pilot_subcarrier_spacing": 4},
        "channel": {"delay_spread_s": [25e-9, 300e-9], "doppler_hz": [50.0, 1000.0], "snr_db": [0.0, 20.0]},
        "mimo": {"num_rx_antennas": a.rx_antennas, "num_users": a.users, "rx_correlation": [0.0, 0.9]}})
    fr = MimoFrameGenerator(cfg).generate(a.frames, seed=a.seed, with_data=False)
    names = ["lmmse-genie", "mmse-bayes", "lmmse-estimated", "mmse-bayes-per-pair", "lmmse-estimated-per-pair", "ls-linear"]
    errs, speed = {}, {}
    for est in mimo_estimators(names, cfg):
        meta = fr.meta if est.needs == "truth" else {}
        for _ in range(2):
            t = time.perf_counter()
            h = est.estimate(fr.pilots_ls, meta)
            dt = time.perf_counter() - t
        errs[est.name] = (h - fr.h).abs().square().mean((1, 2, 3, 4)).double()
        speed[est.name] = a.frames / dt
    errs["bound"] = mimo_genie_mse(cfg, fr.snr_db.double(), fr.delay_spread_s.double(), fr.doppler_hz.double(),
                                   rx_correlation=fr.rx_correlation.double())
    se = lambda d: float(d.std() / math.sqrt(len(d)))  # noqa: E731
    ref = errs["mmse-bayes"]
    print(f"{a.rx_antennas} antennas x {a.users} users, 48x14, {a.frames} frames (seed {a.seed}), "
          f"rho 0-0.9, SNR 0-20 dB, 25-300 ns, 50-1000 Hz; {a.threads} thread(s)\n")
    print("| estimator | Bayes risk (MSE/RE) | dB | minus mmse-bayes, paired (x1e-3) | frames/s | x genie's speed |")
    print("|---|---|---|---|---|---|")
    for name in ["bound", *names]:
        e = errs[name]
        d = e - ref
        pair = "0" if name == "mmse-bayes" else f"{1e3 * float(d.mean()):+.2f} ± {1e3 * se(d):.2f}"
        sp = f"{speed[name]:.0f}" if name in speed else "–"
        ratio = f"{speed[name] / speed['lmmse-genie']:.2f}" if name in speed else "–"
        label = "genie bound (closed form)" if name == "bound" else name
        print(f"| {label} | {float(e.mean()):.4f} ± {se(e):.4f} | {10 * math.log10(float(e.mean())):.2f} | {pair} | "
              f"{sp} | {ratio} |")


if __name__ == "__main__":
    main()
