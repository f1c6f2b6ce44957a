"""``wavefront generate``, ``generate-suite``, ``export-mat``, ``import-mat``: datasets from the command line."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from wavefront.errors import ConfigError

_FMT = argparse.ArgumentDefaultsHelpFormatter


def _common(p, frames_flag: str, frames_default, frames_help: str) -> None:
    p.add_argument("--config", default=None, help="YAML system config (ofdm:, channel:)")
    p.add_argument("--preset", default=None, help="named system config: default, adafortitran-paper, adafortitran-reference")
    p.add_argument(frames_flag, type=int, default=frames_default, required=frames_default is None, help=frames_help)
    p.add_argument("--shard-frames", type=int, default=10_000, help="frames per shard (the last shard holds the rest)")
    p.add_argument("--seed", type=int, default=0, help="run seed; shard i draws from derive_seed(seed, i)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=1000, help="generator batch (part of the bit-exact identity)")
    p.add_argument("--compression", default="none", choices=["none", "lzf", "gzip"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto: cuda:LOCAL_RANK under torchrun)")
    p.add_argument("--shard-range", default=None,
                   help="a:b, only shards a..b-1 (half-open; for array jobs; for generate-suite it indexes the (point, shard) jobs in suite order). Under torchrun the selection is split across ranks")
    p.add_argument("--repair", action="store_true",
                   help="check every existing shard's content checksum and regenerate bad ones from their seed")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is often faster on a busy machine, and torchrun sets 1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_commands(sub) -> None:
    p = sub.add_parser("generate", help="deterministic, resumable sharded HDF5 dataset of OFDM frames",
                       description="Writes OUT/shard-NNNNN.h5 and OUT/manifest.json. Rerun the same command "
                                   "after an interruption to finish the job.", formatter_class=_FMT)
    _common(p, "--frames", None, "total frames")
    p.set_defaults(func=run_generate)

    p = sub.add_parser("generate-suite", help="standard test sweeps (adafortitran) as one dataset folder per point",
                       description="adafortitran: SNR_test_set/SNR_{0..30}, DS_test_set/DS_{50..350} (ns), "
                                   "MDS_test_set/DOP_{200..1400} (Hz), TDL-A.", formatter_class=_FMT)
    p.add_argument("suite", help="suite name: adafortitran")
    _common(p, "--frames-per-point", 2000, "frames per sweep point")
    p.set_defaults(func=run_generate_suite)

    p = sub.add_parser("export-mat", help="write frames as AdaFortiTran reference .mat files (one per frame)",
                       formatter_class=_FMT)
    p.add_argument("--data", required=True, help="a dataset folder or a tree of them (e.g. a suite)")
    p.add_argument("--out", required=True, help="output folder (the tree is mirrored)")
    p.add_argument("--round", action="store_true",
                   help="round non-integer SNR/DS(ns)/Doppler to the nearest integer (halves up) instead of refusing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_export_mat)

    p = sub.add_parser("import-mat", help="read a tree of AdaFortiTran .mat files into shard folders",
                       formatter_class=_FMT)
    p.add_argument("--mat", required=True, help="folder (tree) of {n}_SNR-.._TDL-X.mat files")
    p.add_argument("--out", required=True, help="output folder (the tree is mirrored)")
    p.add_argument("--config", default=None, help="YAML system config for the grid (pilot spacing comes from the names)")
    p.add_argument("--preset", default=None, help="named system config for the grid")
    p.add_argument("--shard-frames", type=int, default=10_000)
    p.add_argument("--compression", default="none", choices=["none", "lzf", "gzip"])
    p.add_argument("--snr-convention", default="pilot-grid", choices=["pilot-grid", "per-re"],
                   help="how the names' SNR was meant: pilot-grid = the reference generator's (noise measured "
                        "over a pilots-only grid, 13.2 dB below per-RE on the paper grid); per-re = files "
                        "exported by wavefront from per-RE data")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_import_mat)


def _base_config(args, default_preset: str = "default"):
    from wavefront.sim.config import SystemConfig, preset

    if args.config and args.preset:
        raise ConfigError("config", args.config, "give --config or --preset, not both")
    return SystemConfig.from_yaml(args.config) if args.config else preset(args.preset or default_preset)


def _device(name: str, threads: int | None = None):
    import torch

    from wavefront.utils import resolve_device

    if threads is not None:
        if threads < 1:
            raise ConfigError("threads", threads, "must be >= 1")
        torch.set_num_threads(threads)

    if name == "auto" and torch.cuda.is_available():
        return resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}")
    return resolve_device(name)


def _bar(total: int, show: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", unit_scale=True, desc=desc, disable=not show, dynamic_ncols=True,
                smoothing=0.1)


def _jobs(all_jobs: list, args) -> list:
    """Returns this process's share: the --shard-range slice, then every WORLD_SIZE-th from RANK."""
    from wavefront.datasets.generate import env_rank, parse_shard_range, rank_split

    sel = [all_jobs[k] for k in parse_shard_range(args.shard_range, len(all_jobs))]
    rank, world = env_rank()
    return rank_split(sel, rank, world)


def run_generate(args) -> int:
    from wavefront.datasets.generate import DatasetSpec, env_rank, generate_dataset

    spec = DatasetSpec(_base_config(args), args.seed, args.frames, args.shard_frames, args.batch_size, args.compression)
    mine = _jobs(list(range(spec.num_shards)), args)
    rank, world = env_rank()
    device = _device(args.device, args.threads)
    bar = _bar(sum(spec.counts[i] for i in mine), not args.no_progress and rank == 0, f"generate[{device.type}]")
    try:
        rep = generate_dataset(spec, args.out, device=device, indices=mine, repair=args.repair, progress=bar)
    finally:
        bar.close()
    man = rep.manifest
    tag = f"rank {rank}/{world}: " if world > 1 else ""
    print(f"{tag}wrote {len(rep.written)} shard(s) ({rep.frames_written} frames), skipped {len(rep.skipped)} complete, "
          f"repaired {len(rep.repaired)}; {args.out}: {len(man['shards'])}/{spec.num_shards} shards "
          f"({'complete' if man['complete'] else 'incomplete'})", file=sys.stderr)
    return 0


def run_generate_suite(args) -> int:
    from wavefront.datasets.generate import env_rank, generate_dataset, prepare_folder
    from wavefront.datasets.suites import SUITE_BASE_PRESET, suite_points, write_suite_index

    if args.suite not in SUITE_BASE_PRESET:
        raise ConfigError("suite", args.suite, f"unknown; choose one of {', '.join(SUITE_BASE_PRESET)}")
    base = _base_config(args, SUITE_BASE_PRESET[args.suite])
    points = suite_points(args.suite, base, args.frames_per_point, args.seed, args.shard_frames,
                          args.batch_size, args.compression)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for p in points:  # refuse a foreign run anywhere before writing anything
        prepare_folder(out / p.folder, p.spec)
    write_suite_index(out, args.suite, points, args.seed)
    # One job per (point, shard), so ranks and array jobs share the work evenly.
    jobs = [(k, i) for k, p in enumerate(points) for i in range(p.spec.num_shards)]
    mine = _jobs(jobs, args)
    rank, _ = env_rank()
    device = _device(args.device, args.threads)
    bar = _bar(sum(points[k].spec.counts[i] for k, i in mine), not args.no_progress and rank == 0,
               f"{args.suite}[{device.type}]")
    written = 0
    try:
        for k, p in enumerate(points):
            idx = [i for kk, i in mine if kk == k]
            if idx:
                rep = generate_dataset(p.spec, out / p.folder, device=device, indices=idx, repair=args.repair,
                                       progress=bar)
                written += rep.frames_written
    finally:
        bar.close()
    print(f"{args.suite}: {len(points)} points under {out}, {written} frames written now", file=sys.stderr)
    return 0


def run_export_mat(args) -> int:
    from wavefront.datasets.matfiles import export_mat

    bar = _bar(None, not args.no_progress, "export-mat")
    try:
        n = export_mat(args.data, args.out, round_values=args.round, progress=bar)
    finally:
        bar.close()
    print(f"wrote {n} .mat files under {args.out}", file=sys.stderr)
    return 0


def run_import_mat(args) -> int:
    from wavefront.datasets.matfiles import import_mat

    bar = _bar(None, not args.no_progress, "import-mat")
    try:
        n = import_mat(args.mat, args.out, _base_config(args), args.shard_frames, args.compression, progress=bar,
                       snr_convention=args.snr_convention)
    finally:
        bar.close()
    print(f"imported {n} frames into {args.out}", file=sys.stderr)
    return 0
