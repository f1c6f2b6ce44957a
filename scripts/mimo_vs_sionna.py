"""wavefront's MIMO estimators against Sionna's on identical frames, and MIMO generation against Sionna's.

For each SNR, the same frames (``MimoFrameGenerator``, one delay spread and Doppler) go to

- ours: ``ls-linear`` (per antenna and user) and ``lmmse-genie`` (joint over space, time and
  frequency, through R_rx's eigendecomposition), and the closed-form bound;
- Sionna 2.2: ``LSChannelEstimator("lin")`` and ``LMMSEChannelEstimator`` with the true
  covariances, ``order="t-f"`` and ``"t-f-s"`` (``R_rx`` as ``cov_mat_space``).

It prints NMSE (energy of h - h_hat over antennas, users, subcarriers and symbols over that of
h), the largest |LS ours - LS Sionna|, and the genie's paired NMSE difference to Sionna's t-f-s
with its standard error over frames. ``--generation`` times MIMO frame generation against
Sionna's TDL with ``num_rx_ant = R`` and the same exponential receive correlation, then
``GenerateOFDMChannel``, for the same frames (users as Sionna's batch), one thread, side by side.

    python scripts/mimo_vs_sionna.py                           # a small 4 x 2 configuration
    python scripts/mimo_vs_sionna.py --preset mimo-chest --frames 2 --snr-db 0,10 --generation

At ``mimo-chest`` Sionna's LMMSE takes about 40 s and 8-10 GB a frame on a CPU (it builds F x F
filters per antenna, user and symbol); ours takes a fraction of a second.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from wavefront.bench import best_seconds_per_call
from wavefront.sim.config import SystemConfig, preset
from wavefront.sim.mimo import MimoFrameGenerator, mimo_estimators, mimo_genie_mse
from wavefront.sim.sionna_ref import sionna_estimates

SMALL = {"ofdm": {"num_subcarriers": 48, "pilot_subcarrier_spacing": 2},
         "channel": {"delay_spread_s": 100e-9, "doppler_hz": 200.0},
         "mimo": {"num_rx_antennas": 4, "num_users": 2, "rx_correlation": 0.7}}


def per_frame_nmse(h_hat: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Returns [B] float64: each frame's error energy over its channel energy (linear)."""
    d = (h_hat - h).abs().square().flatten(1).sum(1).double()
    return d / h.abs().square().flatten(1).sum(1).double()


def compare(cfg: SystemConfig, snrs: list[float], frames: int, seed: int) -> None:
    print(f"{'SNR dB':>6} {'bound':>8} {'ls ours':>8} {'ls sionna':>9} {'|ls diff|':>9} {'genie':>8} "
          f"{'sionna t-f':>10} {'t-f-s':>8} {'genie - t-f-s (dB, +-SE)':>26} {'ours s':>7} {'sionna s':>8}")
    for snr in snrs:
        c = cfg.updated(channel={"snr_db": snr})
        fr = MimoFrameGenerator(c).generate(frames, seed=seed)
        t0 = time.perf_counter()
        ours = {e.name: e.estimate(fr.pilots_ls, fr.meta) for e in mimo_estimators(["ls-linear", "lmmse-genie"], c)}
        t1 = time.perf_counter()
        theirs = sionna_estimates(c, fr)
        t2 = time.perf_counter()
        nm = {k: per_frame_nmse(v, fr.h) for k, v in {**ours, **theirs}.items()}
        db = {k: 10 * math.log10(float(v.mean())) for k, v in nm.items()}
        bound = 10 * math.log10(float(mimo_genie_mse(c, snr, fr.delay_spread_s[0].double(), fr.doppler_hz[0].double())))
        diff = 10 * torch.log10(nm["lmmse-genie"] / nm["lmmse-tfs"])
        se = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        ls_diff = float((ours["ls-linear"] - theirs["ls"]).abs().max())
        print(f"{snr:>6g} {bound:>8.2f} {db['ls-linear']:>8.2f} {db['ls']:>9.2f} {ls_diff:>9.1e} {db['lmmse-genie']:>8.2f} "
              f"{db['lmmse-tf']:>10.2f} {db['lmmse-tfs']:>8.2f} {float(diff.mean()):>18.3f} +- {se:.3f} "
              f"{t1 - t0:>7.2f} {t2 - t1:>8.2f}")


class SionnaMimoChannel:
    """Sionna's TDL with R receive antennas and exponential receive correlation, then ``GenerateOFDMChannel``."""

    def __init__(self, cfg: SystemConfig):
        from sionna.phy import SPEED_OF_LIGHT
        from sionna.phy.channel import GenerateOFDMChannel, exp_corr_mat
        from sionna.phy.channel.tr38901 import TDL
        from sionna.phy.ofdm import ResourceGrid

        o, ch, m = cfg.ofdm, cfg.channel, cfg.mimo
        F, T = o.grid_shape
        rg = ResourceGrid(num_ofdm_symbols=T, fft_size=F, subcarrier_spacing=o.subcarrier_spacing_hz)
        speed = float(ch.doppler_hz) * SPEED_OF_LIGHT / o.carrier_frequency_hz
        corr = exp_corr_mat(m.rx_correlation, m.num_rx_antennas) if m.rx_correlation > 0 else None
        tdl = TDL(ch.profile, float(ch.delay_spread_s), o.carrier_frequency_hz, num_sinusoids=ch.num_sinusoids,
                  min_speed=speed, max_speed=speed, num_rx_ant=m.num_rx_antennas, rx_corr_mat=corr)
        self.gen = GenerateOFDMChannel(tdl, rg, normalize_channel=False)
        self.users = m.num_users

    def __call__(self, frames: int):
        return self.gen(frames * self.users)  # [B U, 1, R, 1, 1, T, F]: one user per batch row


def generation(cfg: SystemConfig, batches: list[int], seconds: float, rounds: int) -> None:
    torch.set_num_threads(1)
    ours = MimoFrameGenerator(cfg)
    theirs = SionnaMimoChannel(cfg)
    m = cfg.mimo
    print(f"\nMIMO generation, one thread, {m.num_rx_antennas} antennas x {m.num_users} users, "
          f"{'x'.join(map(str, cfg.ofdm.grid_shape))}: wavefront frames (channel, pilots, data, noise) against Sionna's "
          "channel alone")
    print("(no data: channel, pilots and noise, without bits, coding or QAM)")
    print(f"{'batch':>6} {'wavefront frames/s':>19} {'no data':>9} {'sionna frames/s':>16} {'ratio':>7} {'no data':>8}")
    for b in batches:
        t = best_seconds_per_call({"ours": lambda: ours.generate(b, seed=1),
                                   "bare": lambda: ours.generate(b, seed=1, with_data=False),
                                   "sionna": lambda: theirs(b)}, seconds=seconds, rounds=rounds)
        print(f"{b:>6} {b / t['ours']:>19,.1f} {b / t['bare']:>9,.1f} {b / t['sionna']:>16,.1f} "
              f"{t['sionna'] / t['ours']:>6.2f}x {t['sionna'] / t['bare']:>7.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default=None, help="a named config (mimo-chest); default: a small 4-antenna, 2-user grid")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--snr-db", default="0,10,20")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--generation", action="store_true", help="also time MIMO generation against Sionna's")
    p.add_argument("--generation-only", action="store_true", help="time generation only (no estimator comparison)")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    cfg = preset(args.preset) if args.preset else SystemConfig.from_dict(SMALL)
    m, o = cfg.mimo, cfg.ofdm
    print(f"{args.preset or 'small'}: {m.num_rx_antennas} antennas (rho {m.rx_correlation:g}), {m.num_users} users, "
          f"{'x'.join(map(str, o.grid_shape))}, TDL-{cfg.channel.profile} {float(cfg.channel.delay_spread_s) * 1e9:g} ns, "
          f"{float(cfg.channel.doppler_hz):g} Hz, {args.frames} frames a point, NMSE in dB")
    if not args.generation_only:
        compare(cfg, [float(s) for s in args.snr_db.split(",")], args.frames, args.seed)
    if args.generation or args.generation_only:
        generation(cfg, [int(b) for b in args.batches.split(",")], args.seconds, args.rounds)


if __name__ == "__main__":
    main()
