"""Benchmark: every generation ratio in one run: wavefront against Sionna called directly, and the ICI path's cost.

Measured side by side (the functions of one row timed in turn, round after round, each keeping
its best round: :func:`wavefront.bench.best_seconds_per_call`), on one device:

- ``wavefront``: ``FrameGenerator.generate`` (TDL-A channel, QPSK data, pilots, noise) then
  ``ls-linear`` on the pilots, at batch 1, 100 and 1000;
- ``per-frame draws``: the same with a delay spread and Doppler drawn per frame;
- ``sionna direct``: the same chain built from Sionna blocks (TDL, GenerateOFDMChannel,
  BinarySource, Mapper, ResourceGridMapper, ApplyOFDMChannel, LSChannelEstimator with linear
  interpolation), one fixed Doppler and delay spread per instance;
- ``per-frame loop``: what per-frame conditions cost without wavefront: a Python loop that
  builds a Sionna TDL for each frame's own Doppler and delay spread and runs the chain on batch 1;
- ``ici / frequency``: the generation cost of ``channel.ici: true`` (the time-domain path,
  :class:`~wavefront.sim.fading.TimeVaryingChannel`) against the frequency-domain path,
  ``FrameGenerator.generate`` alone, TDL-A at 1000 Hz, with data, at batch 100 and 1000.

``--before REV`` also measures the library as it was at git revision ``REV`` (exported to a
temporary folder and imported from there in a subprocess, timed by this script's loop), and
prints both runs and each ratio before and after.

On CPU the clock is the process's CPU time (``--clock cpu``): on a machine shared with other
jobs it leaves out the time spent waiting for a core; ``--clock wall`` times elapsed time.

``--threads`` (default 1) sets torch's thread count in this process and in the ``--before`` one,
so the README's one-thread figures need no environment variable.

``--repeats N`` runs the whole measurement N times (with ``--before``, the two libraries in turn
each time) and prints every ratio of every run, then each ratio's median and range: on a shared
machine one run's ratio moves by 10-20%. The load average is printed before and after.

``--estimators`` then runs ``scripts/bench_estimators.py`` (its defaults: the condition estimate,
``lmmse-estimated``, ``mmse-bayes`` and the other estimators against 9778769, and the learned row's
cost over the classical rows), so one command prints every ratio of issue 24.

Usage: ``python scripts/bench_sim.py [--device cpu|cuda] [--threads 1] [--seconds 2] [--rounds 3]
[--clock cpu|wall] [--before REV] [--ici-only] [--repeats 1] [--estimators]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import tomllib
import warnings
from pathlib import Path

import numpy as np
import torch

from wavefront.bench import best_seconds_per_call, machine_description
from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import get_classical
from wavefront.sim.frames import FrameGenerator
from wavefront.utils import resolve_device

DS, FD, SNR = 300e-9, 500.0, 10.0
BATCHES = (1, 100, 1000)
ICI_BATCHES = (100, 1000)
REPO = Path(__file__).resolve().parents[1]


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


def measure(dev: torch.device, seconds: float, rounds: int, loop_frames: int, ici_only: bool, clock: str) -> dict:
    """Returns frames/s of every measurement: ``{"generation": {batch: {...}}, "loop": fps, "ici": {batch: {...}}}``."""
    import wavefront

    out: dict = {"machine": f"{machine_description(dev)}; {clock} clock",
                 "library": str(Path(wavefront.__file__).parent.parent), "generation": {}, "ici": {}}
    cfg_ici = SystemConfig.from_dict({"channel": {"delay_spread_s": DS, "doppler_hz": 1000.0, "snr_db": SNR}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unmodelled-ICI warning is the point of the comparison
        freq = FrameGenerator(cfg_ici, dev)
    ici = FrameGenerator(cfg_ici.updated(channel={"ici": True}), dev)
    for b in ICI_BATCHES:
        t = best_seconds_per_call({"frequency": lambda: freq.generate(b, seed=3), "ici": lambda: ici.generate(b, seed=3)},
                                  seconds, rounds, device=dev, clock=clock)
        out["ici"][b] = {k: b / v for k, v in t.items()}
    if ici_only:
        return out
    cfg = SystemConfig.from_dict({"channel": {"delay_spread_s": DS, "doppler_hz": FD, "snr_db": SNR}})
    gen = FrameGenerator(cfg, dev)
    ls = get_classical("ls-linear", cfg)
    sionna = SionnaChain(cfg, str(dev))
    cfg_draw = SystemConfig.from_dict({"channel": {"delay_spread_s": [25e-9, 300e-9], "doppler_hz": [50, 1000],
                                                   "snr_db": SNR}})
    gen_draw = FrameGenerator(cfg_draw, dev)

    def chain(g, b, seed):
        fr = g.generate(b, seed=seed)
        return ls.estimate(fr.pilots_ls, fr.meta)

    for b in BATCHES:
        t = best_seconds_per_call({"wavefront": lambda: chain(gen, b, 1), "per-frame draws": lambda: chain(gen_draw, b, 2),
                                   "sionna direct": lambda: sionna(b)}, seconds, rounds, device=dev, clock=clock)
        out["generation"][b] = {k: b / v for k, v in t.items()}
    # per-frame loop: each frame has its own (delay spread, Doppler), so each needs its own TDL
    rng = np.random.default_rng(0)

    def loop():
        for _ in range(loop_frames):
            SionnaChain(cfg, str(dev), ds=rng.uniform(25e-9, 300e-9), fd=rng.uniform(50, 1000))(1)

    out["loop"] = loop_frames / best_seconds_per_call({"loop": loop}, seconds, 1, device=dev, clock=clock)["loop"]
    return out


def print_report(label: str, res: dict) -> None:
    """Prints one run's tables: frames/s and the ratios."""
    print(f"== {label}: {res['machine']}; library at {res['library']}")
    if res["generation"]:
        print(f"TDL-A, 120x14 grid, QPSK data, generation + LS-linear; per-frame loop (Sionna TDL per frame, batch 1): "
              f"{res['loop']:,.0f} frames/s")
        print(f"{'batch':>6} {'wavefront':>12} {'per-frame draws':>16} {'sionna direct':>14} {'vs sionna':>10} {'vs loop':>9}")
        for b, r in res["generation"].items():
            print(f"{b:>6} {r['wavefront']:>12,.0f} {r['per-frame draws']:>16,.0f} {r['sionna direct']:>14,.0f} "
                  f"{r['wavefront'] / r['sionna direct']:>9.2f}x {r['per-frame draws'] / res['loop']:>8.0f}x")
    print("generation alone, TDL-A, 1000 Hz, QPSK data: frequency-domain path against the time-domain (ICI) path")
    print(f"{'batch':>6} {'frequency':>12} {'ici':>12} {'ici cost':>9}")
    for b, r in res["ici"].items():
        print(f"{b:>6} {r['frequency']:>12,.0f} {r['ici']:>12,.0f} {r['frequency'] / r['ici']:>8.2f}x")


# issue 24's targets: the generation ratios at least these, the ICI cost at most these
TARGETS = {"generation vs sionna, batch 1": (">=", 3.0), "generation vs sionna, batch 100": (">=", 5.0),
           "generation vs sionna, batch 1000": (">=", 5.0), "ici cost over frequency path, batch 100": ("<=", 2.0),
           "ici cost over frequency path, batch 1000": ("<=", 2.0)}


def ratios(res: dict) -> dict[str, float]:
    """Returns the headline ratios of one run by name."""
    out = {f"generation vs sionna, batch {b}": r["wavefront"] / r["sionna direct"] for b, r in res["generation"].items()}
    out.update({f"ici cost over frequency path, batch {b}": r["frequency"] / r["ici"] for b, r in res["ici"].items()})
    return out


def export_revision(rev: str, folder: Path) -> Path:
    """Returns an importable copy of the library at git revision ``rev``, laid out as ``pyproject.toml`` maps it.

    Today's :mod:`wavefront.bench` is copied in, so both runs are timed by the same loop.
    """
    src = folder / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    mapping = tomllib.loads((src / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    pkg = folder / "pkg"
    for name, where in sorted(mapping.items(), key=lambda kv: kv[0].count(".")):
        shutil.copytree(src / where, pkg.joinpath(*name.split(".")), dirs_exist_ok=True)
    shutil.copy(REPO / "wavefront" / "bench.py", pkg / "wavefront" / "bench.py")
    return pkg


def measure_revision(rev: str, args) -> dict:
    """Returns :func:`measure` of the library at ``rev``, run in a subprocess that imports it."""
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        pkg = export_revision(rev, Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(pkg)}
        cmd = [sys.executable, __file__, "--worker", "--device", args.device, "--seconds", str(args.seconds),
               "--rounds", str(args.rounds), "--loop-frames", str(args.loop_frames), "--clock", args.clock,
               "--threads", str(args.threads)]
        cmd += ["--ici-only"] if args.ici_only else []
        proc = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=tmp)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("generation", "ici"):
        res[key] = {int(b): r for b, r in res[key].items()}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (torch.set_num_threads), both runs")
    ap.add_argument("--seconds", type=float, default=2.0, help="minimum timing window per measurement and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of side-by-side timing; each keeps its best")
    ap.add_argument("--loop-frames", type=int, default=30, help="frames timed for the per-frame loop")
    ap.add_argument("--ici-only", action="store_true", help="only the ICI / frequency-domain generation cost")
    ap.add_argument("--clock", choices=["wall", "cpu"], default=None,
                    help="wall time, or the process's CPU time (default on CPU: holds ratios on a loaded machine)")
    ap.add_argument("--before", metavar="REV", help="also measure the library at git revision REV, and compare")
    ap.add_argument("--repeats", type=int, default=1, help="whole measurements, each ratio's median and range printed")
    ap.add_argument("--estimators", action="store_true", help="then run scripts/bench_estimators.py (the estimator ratios)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one run, as JSON on stdout
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    args.clock = args.clock or ("cpu" if dev.type == "cpu" else "wall")
    torch.manual_seed(0)
    if args.worker:
        print(json.dumps(measure(dev, args.seconds, args.rounds, args.loop_frames, args.ici_only, args.clock)))
        return
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start")
    runs = []
    for i in range(args.repeats):
        before = measure_revision(args.before, args) if args.before else None
        now = measure(dev, args.seconds, args.rounds, args.loop_frames, args.ici_only, args.clock)
        tag = f" (run {i + 1} of {args.repeats})" if args.repeats > 1 else ""
        if before is not None:
            print_report(f"before ({args.before}){tag}", before)
            print()
        print_report(("now" if before is not None else "wavefront") + tag, now)
        print()
        runs.append(((ratios(before) if before is not None else {}), ratios(now)))
        print_ratios({k: [v] for k, v in runs[-1][0].items()}, {k: [v] for k, v in runs[-1][1].items()})
        print(f"load average {os.getloadavg()[0]:.1f} after run {i + 1}\n")
    if args.repeats > 1:
        print(f"over {args.repeats} runs: median [min - max]")
        print_ratios({k: [r[0][k] for r in runs] for k in runs[0][0]}, {k: [r[1][k] for r in runs] for k in runs[0][1]})
    print("frames/s; 'vs sionna' > 1 is faster than Sionna; 'ici cost' is frequency-path frames/s over ICI-path frames/s")
    if args.estimators:
        print("\n== estimators: scripts/bench_estimators.py", flush=True)
        subprocess.run([sys.executable, str(REPO / "scripts" / "bench_estimators.py")], check=True)


def print_ratios(before: dict[str, list[float]], now: dict[str, list[float]]) -> None:
    """Prints each ratio before and now (one value, or the median and range of several) against its target."""
    def fmt(v: list[float]) -> str:
        if len(v) == 1:
            return f"{v[0]:.2f}x"
        return f"{statistics.median(v):.2f}x [{min(v):.2f}-{max(v):.2f}]"

    width = 8 if all(len(v) == 1 for v in now.values()) else 20
    print(f"{'ratio':<42} {'before':>{width}} {'now':>{width}}  target")
    for k, v in now.items():
        was = fmt(before[k]) if k in before else "-"
        op, goal = TARGETS.get(k, (None, None))
        m = statistics.median(v)
        met = "" if op is None else f"  {op} {goal:g}x: {'met' if (m >= goal if op == '>=' else m <= goal) else 'not met'}"
        print(f"{k:<42} {was:>{width}} {fmt(v):>{width}}{met}")


if __name__ == "__main__":
    main()
