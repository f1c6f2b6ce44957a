"""Benchmark: end-to-end frames/s into HDF5 shards against a one-frame-at-a-time ``.mat`` pipeline.

The per-frame pipeline is how the AdaFortiTran reference stores data: draw one frame, write
one ``.mat`` file (``H`` [F, T, 2] complex64) with ``scipy.io.savemat``. Both use the same
simulator and config, in the same run, so the ratio compares storage pipelines on one machine.

    python scripts/bench_datasets.py --frames 20000 --per-frame 1000

Prints frames/s both ways, their ratio, disk bytes per frame, and read frames/s (one
process) for ``H5FrameDataset`` and ``scipy.io.loadmat``. Runs on GPU too when present.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io
import torch

from wavefront.datasets import H5FrameDataset
from wavefront.datasets.generate import DatasetSpec, generate_dataset
from wavefront.datasets.matfiles import frame_to_mat, mat_label, mat_name
from wavefront.sim.config import SystemConfig, preset
from wavefront.sim.frames import FrameGenerator
from wavefront.utils import derive_seed


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_hdf5(cfg, frames: int, shard_frames: int, batch: int, device, out: Path) -> dict:
    """Returns frames/s and bytes/frame of ``generate_dataset`` end to end (draw, checksum, write)."""
    FrameGenerator(cfg, device=device).generate(min(batch, 64), 0, with_data=False)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    generate_dataset(DatasetSpec(cfg, 1, frames, shard_frames, batch), out, device=device)
    dt = time.perf_counter() - t
    return {"frames_per_s": frames / dt, "seconds": dt, "bytes_per_frame": folder_bytes(out) / frames}


def bench_per_frame(cfg, frames: int, device, out: Path) -> dict:
    """Returns frames/s and bytes/frame of drawing one frame and writing one ``.mat`` file at a time."""
    gen = FrameGenerator(cfg, device=device)
    gen.generate(1, 0, with_data=False)  # warm-up
    o = cfg.ofdm
    pf, pt = np.asarray(o.pilot_subcarriers), np.asarray(o.pilot_symbols)
    out.mkdir(parents=True)
    t = time.perf_counter()
    for n in range(1, frames + 1):
        fr = gen.generate(1, derive_seed(1, n), with_data=False)
        H = frame_to_mat(fr.h[0].cpu().numpy(), fr.pilots_ls[0].cpu().numpy(), pf, pt)
        name = mat_name(n, mat_label(fr.snr_db[0], "snr", "", True),
                        mat_label(float(fr.delay_spread_s[0]) * 1e9, "ds", "", True),
                        mat_label(fr.doppler_hz[0], "dop", "", True), o.pilot_subcarrier_spacing, fr.profile)
        scipy.io.savemat(out / name, {"H": H})
    dt = time.perf_counter() - t
    return {"frames_per_s": frames / dt, "seconds": dt, "bytes_per_frame": folder_bytes(out) / frames}


def bench_per_frame_sionna(cfg, frames: int, out: Path) -> dict:
    """Returns frames/s of a one-frame generator built from Sionna blocks, writing one ``.mat`` per frame.

    Each frame has its own delay spread and Doppler, and Sionna's TDL takes one of each per
    instance, so the per-frame generator builds a TDL and a GenerateOFDMChannel per frame, as a
    per-frame reference pipeline would; then noise at the pilots, LS, ``savemat``.
    """
    from sionna.phy import SPEED_OF_LIGHT
    from sionna.phy.channel import GenerateOFDMChannel
    from sionna.phy.channel.tr38901 import TDL
    from sionna.phy.ofdm import ResourceGrid

    o, ch = cfg.ofdm, cfg.channel
    F, T = o.grid_shape
    pf, pt = np.asarray(o.pilot_subcarriers), np.asarray(o.pilot_symbols)
    rg = ResourceGrid(num_ofdm_symbols=T, fft_size=F, subcarrier_spacing=o.subcarrier_spacing_hz,
                      cyclic_prefix_length=round(o.cyclic_prefix_ratio * F), device="cpu")
    rng = np.random.default_rng(0)
    draw = lambda v: rng.uniform(*v) if isinstance(v, tuple) else v  # noqa: E731
    out.mkdir(parents=True)
    t = time.perf_counter()
    for n in range(1, frames + 1):
        snr, ds, fd = draw(ch.snr_db), draw(ch.delay_spread_s), draw(ch.doppler_hz)
        speed = fd * SPEED_OF_LIGHT / o.carrier_frequency_hz
        tdl = TDL(ch.profile, ds, o.carrier_frequency_hz, min_speed=speed, max_speed=speed, device="cpu")
        h = GenerateOFDMChannel(tdl, rg, normalize_channel=False, device="cpu")(1)[0, 0, 0, 0, 0].T.numpy()  # [F, T]
        noise = (rng.standard_normal((len(pf), len(pt))) + 1j * rng.standard_normal((len(pf), len(pt)))) * np.sqrt(10 ** (-snr / 10) / 2)
        ls = h[pf[:, None], pt[None, :]] + noise.astype(np.complex64)
        H = frame_to_mat(h, ls, pf, pt)
        name = mat_name(n, mat_label(snr, "snr", "", True), mat_label(ds * 1e9, "ds", "", True),
                        mat_label(fd, "dop", "", True), o.pilot_subcarrier_spacing, ch.profile)
        scipy.io.savemat(out / name, {"H": H})
    dt = time.perf_counter() - t
    return {"frames_per_s": frames / dt, "seconds": dt, "bytes_per_frame": folder_bytes(out) / frames}


def bench_reads(h5_dir: Path, mat_dir: Path, n: int) -> dict:
    """Returns random-access read frames/s (one process) of H5FrameDataset and of loadmat."""
    ds = H5FrameDataset(h5_dir)
    idx = random.Random(0).sample(range(len(ds)), min(n, len(ds)))
    t = time.perf_counter()
    for i in idx:
        ds[i]
    h5 = len(idx) / (time.perf_counter() - t)
    files = sorted(mat_dir.glob("*.mat"))[:n]
    t = time.perf_counter()
    for f in files:
        torch.from_numpy(scipy.io.loadmat(f)["H"])
    mat = len(files) / (time.perf_counter() - t)
    return {"h5_read_frames_per_s": h5, "mat_read_frames_per_s": mat}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "adafortitran.yaml"))
    ap.add_argument("--preset", default=None, help="use a named preset instead of --config")
    ap.add_argument("--frames", type=int, default=20_000, help="frames for the HDF5 pipeline")
    ap.add_argument("--shard-frames", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--per-frame", type=int, default=1000, help="frames for the one-file-per-frame pipeline")
    ap.add_argument("--gpu-frames", type=int, default=200_000, help="frames for the HDF5 pipeline on GPU")
    ap.add_argument("--gpu-batch-size", type=int, default=10_000)
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed after)")
    args = ap.parse_args()

    cfg = preset(args.preset) if args.preset else SystemConfig.from_yaml(args.config)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-datasets-"))
    cpu = torch.device("cpu")
    print(f"config: grid {cfg.ofdm.grid_shape}, pilots {cfg.ofdm.pilot_shape}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    # On a shared 2-core machine torch's intra-op pool can make small ops far slower with 2
    # threads than with 1; each pipeline gets its best thread count, both are printed.
    threads = sorted({1, torch.get_num_threads()})
    try:
        h5s, pfs = {}, {}
        for th in threads:
            torch.set_num_threads(th)
            h5s[th] = bench_hdf5(cfg, args.frames, args.shard_frames, args.batch_size, cpu, work / f"h5-cpu-{th}")
            pfs[th] = bench_per_frame(cfg, args.per_frame, cpu, work / f"mat-cpu-{th}")
            print(f"  {th} thread(s): HDF5 {h5s[th]['frames_per_s']:.0f} frames/s, "
                  f"one .mat/frame {pfs[th]['frames_per_s']:.0f} frames/s")
        bh = max(h5s, key=lambda t: h5s[t]["frames_per_s"])
        bp = max(pfs, key=lambda t: pfs[t]["frames_per_s"])
        h5, pf = h5s[bh], pfs[bp]
        rd = bench_reads(work / f"h5-cpu-{bh}", work / f"mat-cpu-{bp}", 1000)
        print(f"CPU  HDF5 shards      : {h5['frames_per_s']:10.0f} frames/s  ({args.frames} frames in {h5['seconds']:.1f} s, "
              f"{bh} thread(s)), {h5['bytes_per_frame']:.0f} bytes/frame")
        print(f"CPU  one .mat/frame   : {pf['frames_per_s']:10.0f} frames/s  ({args.per_frame} frames in {pf['seconds']:.1f} s, "
              f"{bp} thread(s)), {pf['bytes_per_frame']:.0f} bytes/frame")
        print(f"CPU  ratio            : {h5['frames_per_s'] / pf['frames_per_s']:10.1f} x  "
              "(against wavefront's own generator at batch 1)")
        torch.set_num_threads(bp)
        sio = bench_per_frame_sionna(cfg, max(args.per_frame // 10, 50), work / "mat-sionna")
        print(f"CPU  Sionna TDL/frame : {sio['frames_per_s']:10.0f} frames/s  (a TDL per frame for its own conditions, "
              f"one .mat each)")
        print(f"CPU  ratio            : {h5['frames_per_s'] / sio['frames_per_s']:10.1f} x  (target >= 50 x)")
        print(f"read, one process     : HDF5 {rd['h5_read_frames_per_s']:.0f} frames/s, "
              f".mat {rd['mat_read_frames_per_s']:.0f} frames/s (random access)")
        torch.set_num_threads(max(threads))
        if torch.cuda.is_available():
            gpu = torch.device("cuda:0")
            g = bench_hdf5(cfg, args.gpu_frames, args.shard_frames, args.gpu_batch_size, gpu, work / "h5-gpu")
            gp = bench_per_frame(cfg, args.per_frame, gpu, work / "mat-gpu")
            print(f"GPU  ({torch.cuda.get_device_name(0)}) HDF5 shards: {g['frames_per_s']:.0f} frames/s "
                  f"({args.gpu_frames} frames in {g['seconds']:.1f} s), {g['bytes_per_frame']:.0f} bytes/frame")
            print(f"GPU  one .mat/frame   : {gp['frames_per_s']:10.0f} frames/s; ratio {g['frames_per_s'] / gp['frames_per_s']:.1f} x; "
                  f"ratio to the best CPU one .mat/frame {g['frames_per_s'] / pf['frames_per_s']:.1f} x")
        else:
            print("GPU: not present")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
