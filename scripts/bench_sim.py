"""Benchmark: frames/s of frame generation + LS-linear, against Sionna called directly and a per-frame loop.

Measured side by side in one run, on the same device:

- ``wavefront``: ``FrameGenerator.generate`` (TDL-A channel, QPSK data, pilots, noise) then
  ``ls-linear`` on the pilots;
- ``sionna direct``: the same chain built from Sionna blocks (TDL, GenerateOFDMChannel,
  BinarySource, Mapper, ResourceGridMapper, ApplyOFDMChannel, LSChannelEstimator with linear
  interpolation), one fixed Doppler and delay spread per instance;
- ``per-frame loop``: what per-frame conditions cost without wavefront: a Python loop that
  builds a Sionna TDL for each frame's own Doppler and delay spread and runs the chain on
  batch 1.

- ``ici / frequency``: the generation cost of ``channel.ici: true`` (the time-domain path,
  :class:`~wavefront.sim.fading.TimeVaryingChannel`) against the frequency-domain path,
  ``FrameGenerator.generate`` alone, TDL-A at 1000 Hz, with data.

Usage: ``python scripts/bench_sim.py [--device cpu|cuda] [--seconds 2] [--ici-only]``.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import get_classical
from wavefront.sim.frames import FrameGenerator
from wavefront.utils import resolve_device

DS, FD, SNR = 300e-9, 500.0, 10.0


def timeit(fn, batch, seconds):
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el > seconds and n >= 3:
            return n * batch / el


class SionnaChain:
    """Generation + LS built from Sionna blocks for one (delay spread, Doppler)."""

    def __init__(self, cfg: SystemConfig, device: str, ds=DS, fd=FD):
        from sionna.phy import SPEED_OF_LIGHT
        from sionna.phy.channel import ApplyOFDMChannel, GenerateOFDMChannel
        from sionna.phy.channel.tr38901 import TDL
        from sionna.phy.mapping import BinarySource, Mapper
        from sionna.phy.ofdm import LSChannelEstimator, PilotPattern, ResourceGrid, ResourceGridMapper

        o = cfg.ofdm
        F, T = o.grid_shape
        mask = np.zeros((1, 1, T, F), dtype=bool)
        mask[0, 0, np.array(o.pilot_symbols)[:, None], np.array(o.pilot_subcarriers)[None, :]] = True
        pilots = np.exp(1j * np.pi / 4) * np.ones((1, 1, int(mask.sum())), dtype=np.complex64)
        self.rg = ResourceGrid(num_ofdm_symbols=T, fft_size=F, subcarrier_spacing=o.subcarrier_spacing_hz,
                               cyclic_prefix_length=round(o.cyclic_prefix_ratio * F),
                               pilot_pattern=PilotPattern(mask, pilots, device=device), device=device)
        speed = fd * SPEED_OF_LIGHT / o.carrier_frequency_hz
        tdl = TDL(cfg.channel.profile, ds, o.carrier_frequency_hz, min_speed=speed, max_speed=speed,
                  num_sinusoids=cfg.channel.num_sinusoids, device=device)
        self.gen = GenerateOFDMChannel(tdl, self.rg, normalize_channel=False, device=device)
        self.src = BinarySource(device=device)
        self.mapper = Mapper("qam", o.bits_per_symbol, device=device)
        self.rgm = ResourceGridMapper(self.rg, device=device)
        self.apply = ApplyOFDMChannel(device=device)
        self.ls = LSChannelEstimator(self.rg, interpolation_type="lin", device=device)
        self.nbits = self.rg.num_data_symbols * o.bits_per_symbol
        self.no = 10 ** (-SNR / 10)

    def __call__(self, batch):
        h = self.gen(batch)
        x = self.rgm(self.mapper(self.src([batch, 1, 1, self.nbits])))
        y = self.apply(x, h, self.no)
        return self.ls(y, self.no)[0]


def ici_cost(dev, seconds: float, batches=(100, 1000)) -> None:
    """Prints frames/s of generation with and without ``channel.ici`` and their ratio."""
    cfg = SystemConfig.from_dict({"channel": {"delay_spread_s": DS, "doppler_hz": 1000.0, "snr_db": SNR}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unmodelled-ICI warning is the point of the comparison
        freq = FrameGenerator(cfg, dev)
    ici = FrameGenerator(cfg.updated(channel={"ici": True}), dev)
    print(f"generation alone, TDL-A, 1000 Hz, QPSK data, {dev} ({torch.get_num_threads()} threads)")
    print(f"{'batch':>6} {'frequency':>12} {'ici':>12} {'cost ratio':>11}")
    for b in batches:
        f = timeit(lambda: freq.generate(b, seed=3), b, seconds)
        i = timeit(lambda: ici.generate(b, seed=3), b, seconds)
        print(f"{b:>6} {f:>12,.0f} {i:>12,.0f} {f / i:>10.1f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=2.0, help="minimum timing window per measurement")
    ap.add_argument("--loop-frames", type=int, default=30, help="frames timed for the per-frame loop")
    ap.add_argument("--ici-only", action="store_true", help="only the ICI / frequency-domain generation cost")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    torch.manual_seed(0)
    if args.ici_only:
        ici_cost(dev, args.seconds)
        return
    cfg = SystemConfig.from_dict({"channel": {"delay_spread_s": DS, "doppler_hz": FD, "snr_db": SNR}})
    gen = FrameGenerator(cfg, dev)
    ls = get_classical("ls-linear", cfg)
    sionna = SionnaChain(cfg, str(dev))

    def ours(b):
        fr = gen.generate(b, seed=1)
        return ls.estimate(fr.pilots_ls, fr.meta)

    # per-frame loop: each frame has its own (delay spread, Doppler), so each needs its own TDL
    rng = np.random.default_rng(0)

    def loop():
        for _ in range(args.loop_frames):
            SionnaChain(cfg, str(dev), ds=rng.uniform(25e-9, 300e-9), fd=rng.uniform(50, 1000))(1)

    loop_fps = timeit(loop, args.loop_frames, args.seconds)
    # wavefront with per-frame drawn conditions, for the same comparison
    cfg_draw = SystemConfig.from_dict({"channel": {"delay_spread_s": [25e-9, 300e-9], "doppler_hz": [50, 1000], "snr_db": SNR}})
    gen_draw = FrameGenerator(cfg_draw, dev)

    def ours_draw(b):
        fr = gen_draw.generate(b, seed=2)
        return ls.estimate(fr.pilots_ls, fr.meta)

    print(f"device: {dev} ({torch.get_num_threads()} threads), TDL-{cfg.channel.profile}, "
          f"{cfg.ofdm.num_subcarriers}x{cfg.ofdm.num_symbols} grid, QPSK data, generation + LS-linear")
    print(f"per-frame loop (Sionna TDL per frame, batch 1): {loop_fps:,.0f} frames/s")
    print(f"{'batch':>6} {'wavefront':>12} {'per-frame draws':>16} {'sionna direct':>14} {'vs sionna':>10} {'vs loop':>9}")
    for b in (1, 100, 1000):
        w = timeit(lambda: ours(b), b, args.seconds)
        wd = timeit(lambda: ours_draw(b), b, args.seconds)
        s = timeit(lambda: sionna(b), b, args.seconds)
        print(f"{b:>6} {w:>12,.0f} {wd:>16,.0f} {s:>14,.0f} {w / s:>9.2f}x {wd / loop_fps:>8.0f}x")
    print("frames/s; 'vs loop' compares per-frame drawn conditions, batched, with the per-frame loop")
    print()
    ici_cost(dev, args.seconds)


if __name__ == "__main__":
    main()
