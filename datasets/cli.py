"""``wavefront generate``, ``generate-suite``, ``export-mat``, ``import-mat``: datasets from the command line."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from wavefront.errors import ConfigError
from wavefront.utils import (DefaultsHelpFormatter, any_int, finite_float, job_ranks, nonnegative_int, positive_int,
                             thread_count)

_FMT = DefaultsHelpFormatter


def _common(p, frames_flag: str, frames_default, frames_help: str) -> None:
    p.add_argument("--config", default=None, help="YAML system config (ofdm:, channel:)")
    p.add_argument("--preset", default=None, help="named system config: default, adafortitran-paper, adafortitran-reference, mimo-chest (16 antennas, 4 users, 14 x 624)")
    p.add_argument("--pilots", default=None, metavar="PRESET|FILE.json", help=_pilots_help())
    p.add_argument(frames_flag, type=positive_int, default=frames_default, required=frames_default is None, help=frames_help)
    p.add_argument("--shard-frames", type=positive_int, default=10_000, help="frames per shard (the last shard holds the rest)")
    p.add_argument("--seed", type=any_int, default=0, help="run seed; shard i draws from derive_seed(seed, i)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="generator batch (part of the bit-exact identity)")
    p.add_argument("--compression", default="none", choices=["none", "lzf", "gzip"],
                   help="HDF5 filter of the shards' arrays (lzf: fast; gzip: smaller)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto: cuda:LOCAL_RANK under torchrun)")
    p.add_argument("--shard-range", default=None,
                   help="a:b, only shards a..b-1 (half-open; for array jobs; for generate-suite it indexes the (point, shard) jobs in suite order). Under torchrun the selection is split across ranks")
    p.add_argument("--repair", action="store_true",
                   help="regenerate every existing shard that fails the resume check (attributes, SHA-256 against "
                        "the manifest, or a full content check) from its seed, instead of refusing")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="torch CPU threads (default: torch's, one per core, at most the container's CPU quota; 1 is often faster on a busy machine, and torchrun sets 1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--ici", action="store_true",
                   help="model inter-carrier interference (channel.ici: true): the channel varies within each symbol, "
                        "pilots carry ICI from the data around them, and h is each symbol's average channel")
    from wavefront.sim.cli import add_impairment_arguments

    add_impairment_arguments(p)  # each frame's drawn values land in the shards (one [N] float32 dataset each)


def add_commands(sub) -> None:
    p = sub.add_parser("generate", help="deterministic, resumable sharded HDF5 dataset of OFDM frames",
                       description="Writes OUT/shard-NNNNN.h5 and OUT/manifest.json. Rerun the same command "
                                   "after an interruption to finish the job.", formatter_class=_FMT)
    _common(p, "--frames", None, "total frames")
    _mimo_arguments(p)
    p.set_defaults(func=run_generate, kept_on_interrupt="every finished shard")

    p = sub.add_parser("generate-suite", help="standard test sweeps (adafortitran) as one dataset folder per point",
                       description="adafortitran: SNR_test_set/SNR_{0..30}, DS_test_set/DS_{50..350} (ns), "
                                   "MDS_test_set/DOP_{200..1400} (Hz), TDL-A.", formatter_class=_FMT)
    p.add_argument("suite", help="suite name: adafortitran")
    _common(p, "--frames-per-point", 2000, "frames per sweep point")
    p.set_defaults(func=run_generate_suite, kept_on_interrupt="every finished shard")

    p = sub.add_parser("export-mat", help="write frames as AdaFortiTran reference .mat files (one per frame)",
                       formatter_class=_FMT)
    p.add_argument("--data", required=True, help="a dataset folder or a tree of them (e.g. a suite)")
    p.add_argument("--out", required=True, help="output folder (the tree is mirrored)")
    p.add_argument("--round", action="store_true",
                   help="round non-integer SNR/DS(ns)/Doppler to the nearest integer (halves up) instead of refusing")
    p.add_argument("--overwrite", action="store_true",
                   help="remove the .mat files already in the folders this export writes, instead of refusing (a "
                        "smaller export over a larger one would leave the larger one's last frames among its own)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_export_mat)

    p = sub.add_parser("verify", help="check every shard of a dataset folder (or a tree) against its checksums",
                       description="Reads every shard the manifests list: whole-file SHA-256 and size against the "
                                   "manifest, attributes, every chunk's Fletcher-32 and the content checksum. Exit 0 "
                                   "when all are intact; 2 naming the first bad shard.", formatter_class=_FMT)
    p.add_argument("--data", required=True, help="a dataset folder or a tree of them (e.g. a suite)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_verify)

    p = sub.add_parser("import-mat", help="read a tree of AdaFortiTran .mat files into shard folders",
                       formatter_class=_FMT)
    p.add_argument("--mat", required=True, help="folder (tree) of {n}_SNR-.._TDL-X.mat files")
    p.add_argument("--out", required=True, help="output folder (the tree is mirrored)")
    p.add_argument("--config", default=None, help="YAML system config for the grid (pilot spacing comes from the names)")
    p.add_argument("--preset", default=None, help="named system config for the grid")
    p.add_argument("--shard-frames", type=positive_int, default=10_000, help="frames per shard (the last holds the rest)")
    p.add_argument("--compression", default="none", choices=["none", "lzf", "gzip"],
                   help="HDF5 filter of the shards' arrays (lzf: fast; gzip: smaller)")
    p.add_argument("--snr-convention", default="pilot-grid", choices=["pilot-grid", "per-re"],
                   help="how the names' SNR was meant: pilot-grid = the reference generator's (noise measured "
                        "over a pilots-only grid, 13.2 dB below per-RE on the paper grid); per-re = files "
                        "exported by wavefront from per-RE data")
    p.add_argument("--no-audit", action="store_true",
                   help="skip the check for repeated channel realizations within and across the imported folders")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a dataset an --out folder already holds that was not imported from the same .mat "
                        "folder (e.g. a generated one), instead of refusing")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_import_mat)

    p = sub.add_parser("audit", help="find repeated channel realizations within and across dataset folders",
                       description="Frames hold the same realization when their channels, scaled to unit energy, "
                                   "match after removing a common phase and a linear phase ramp across subcarriers "
                                   "(a timing offset). Reports the distinct realizations and the repeating frames "
                                   "of each folder, the overlap between folders (train against test) and the "
                                   "largest groups. Exit 0; with --strict, 1 when folders share a realization.",
                       formatter_class=_FMT)
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="dataset folder (or tree, or one shard) of HDF5 shards, or a folder (tree) of .mat files")
    p.add_argument("--tolerance-db", type=finite_float, default=-60.0,
                   help="largest aligned residual, in dB of one frame's energy, still counted as the same "
                        "realization (copies differ by rounding, < -120 dB; distinct TDL-A realizations on the "
                        "paper's grid stay above about -47 dB)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any two folders share a realization")
    p.add_argument("--groups", type=nonnegative_int, default=10, help="largest duplicate groups to list")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="torch CPU threads for the comparisons (default: torch's, at most the container's CPU quota)")
    p.set_defaults(func=run_audit)


def _pilots_help() -> str:
    from wavefront.sim.pilots import PILOTS_HELP

    return PILOTS_HELP


def _mimo_arguments(p) -> None:
    """``--rx-antennas``, ``--users``, ``--rx-correlation``, ``--mimo-pilots``: the sweep's flags, one definition."""
    from wavefront.sim.cli import add_mimo_arguments

    add_mimo_arguments(p)


def _base_config(args, default_preset: str = "default"):
    from wavefront.sim.cli import mimo_overrides
    from wavefront.sim.config import SystemConfig, preset
    from wavefront.sim.pilots import apply_pilots

    if args.config and args.preset:
        raise ConfigError("config", args.config, "give --config or --preset, not both")
    config = SystemConfig.from_yaml(args.config) if args.config else preset(args.preset or default_preset)
    config = config.updated(channel={"ici": True}) if getattr(args, "ici", False) else config
    mimo = mimo_overrides(args)  # generate's --rx-antennas, --users, ... (None elsewhere)
    config = config.updated(mimo=mimo) if mimo else config
    from wavefront.sim.cli import refuse_idle_rx_correlation, with_impairments

    refuse_idle_rx_correlation(args, config)

    return apply_pilots(with_impairments(config, args), getattr(args, "pilots", None))


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
    """Returns a tqdm progress bar on stderr, shown only on a terminal (``disable=None``)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", unit_scale=True, desc=desc, disable=None if show else True,
                dynamic_ncols=True, smoothing=0.1)


class _progress:
    """Context manager around :func:`_bar` that erases the bar when the command fails, so an
    error stays the one line on stderr."""

    def __init__(self, total, show: bool, desc: str):
        self.bar = _bar(total, show, desc)

    def __enter__(self):
        return self.bar

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.bar.leave = False
        self.bar.close()
        return False


def _jobs(all_jobs: list, args) -> list:
    """Returns this process's share: the --shard-range slice, then every WORLD_SIZE-th from RANK."""
    from wavefront.datasets.generate import parse_shard_range, rank_split

    sel = [all_jobs[k] for k in parse_shard_range(args.shard_range, len(all_jobs))]
    rank, world, _ = job_ranks()
    return rank_split(sel, rank, world)


# A folder of more shards than this is a typo, not a dataset: planning it alone would take minutes.
MAX_SHARDS = 1_000_000
# Grid-sized complex64 tensors the generator holds per frame of a batch (an upper estimate).
_GENERATOR_GRIDS_PER_FRAME = 12


def check_sizes(config, frames: int, shard_frames: int, batch_size: int, device, frames_field: str = "frames") -> None:
    """Refuses, in microseconds and before any work, sizes that cannot run: too many shards, or a shard or a
    generator batch that would not fit ``device``'s free memory (one line naming the field and the estimate)."""
    from wavefront.utils import check_memory

    shards = -(-frames // shard_frames)
    if shards > MAX_SHARDS:
        raise ConfigError(frames_field, frames, f"makes {shards} shards of {shard_frames} frames, more than "
                                                f"{MAX_SHARDS}; raise --shard-frames or lower the frame count")
    f, t = config.ofdm.grid_shape
    grid = 8 * f * t
    per_frame = grid + 16 * config.ofdm.num_pilots + 64  # stored bytes of a frame (h, both pilot arrays, metadata)
    if config.mimo.is_mimo:  # R U channels, R received grids, every user's bits: the generator holds R (U + 1) grids
        from wavefront.datasets.generate import mimo_frame_bytes

        per_frame = mimo_frame_bytes(config) + 64
        grid *= config.mimo.num_rx_antennas * (config.mimo.num_users + 1)
    # A shard is assembled in memory (its batches, then their concatenation) before it is written.
    check_memory("shard_frames", shard_frames, 2 * min(shard_frames, frames) * per_frame, "cpu",
                 "lower --shard-frames")
    check_memory("batch_size", batch_size, min(batch_size, frames) * grid * _GENERATOR_GRIDS_PER_FRAME
                 * (4 if config.channel.time_domain else 1), device, "lower --batch-size")


def run_generate(args) -> int:
    from wavefront.datasets.generate import DatasetSpec, check_folder, generate_dataset

    config = _base_config(args)
    check_sizes(config, args.frames, args.shard_frames, args.batch_size, _device(args.device, args.threads))
    spec = DatasetSpec(config, args.seed, args.frames, args.shard_frames, args.batch_size, args.compression)
    check_folder(args.out, spec)  # before any work: a bad --out or a foreign run costs nothing
    mine = _jobs(list(range(spec.num_shards)), args)
    rank, world, _ = job_ranks()
    device = _device(args.device, args.threads)
    with _progress(sum(spec.counts[i] for i in mine), not args.no_progress and rank == 0,
                   f"generate[{device.type}]") as bar:
        rep = generate_dataset(spec, args.out, device=device, indices=mine, repair=args.repair, progress=bar)
    man = rep.manifest
    tag = f"rank {rank}/{world}: " if world > 1 else ""
    busy = f", left {len(rep.busy)} to another process writing them" if rep.busy else ""
    stale = f", removed {len(rep.stale_removed)} stale .partial file(s)" if rep.stale_removed else ""
    print(f"{tag}wrote {len(rep.written)} shard(s) ({rep.frames_written} frames), skipped {len(rep.skipped)} complete, "
          f"repaired {len(rep.repaired)}{busy}{stale}; {args.out}: {len(man['shards'])}/{spec.num_shards} shards "
          f"({'complete' if man['complete'] else 'incomplete'})", file=sys.stderr)
    return 0


def run_generate_suite(args) -> int:
    from wavefront.datasets.generate import check_folder, generate_dataset
    from wavefront.datasets.suites import SUITE_BASE_PRESET, suite_points, write_suite_index
    from wavefront.utils import check_output_folder

    if args.suite not in SUITE_BASE_PRESET:
        raise ConfigError("suite", args.suite, f"unknown; choose one of {', '.join(SUITE_BASE_PRESET)}")
    base = _base_config(args, SUITE_BASE_PRESET[args.suite])
    check_sizes(base, args.frames_per_point, args.shard_frames, args.batch_size, _device(args.device, args.threads),
                "frames_per_point")
    points = suite_points(args.suite, base, args.frames_per_point, args.seed, args.shard_frames,
                          args.batch_size, args.compression)
    out = check_output_folder("out", args.out)
    for p in points:  # refuse a foreign run anywhere before writing anything
        check_folder(out / p.folder, p.spec)
    # One job per (point, shard), so ranks and array jobs share the work evenly.
    jobs = [(k, i) for k, p in enumerate(points) for i in range(p.spec.num_shards)]
    mine = _jobs(jobs, args)
    rank, _, _ = job_ranks()
    device = _device(args.device, args.threads)
    out.mkdir(parents=True, exist_ok=True)
    write_suite_index(out, args.suite, points, args.seed)
    written = 0
    with _progress(sum(points[k].spec.counts[i] for k, i in mine), not args.no_progress and rank == 0,
                   f"{args.suite}[{device.type}]") as bar:
        for k, p in enumerate(points):
            idx = [i for kk, i in mine if kk == k]
            if idx:
                rep = generate_dataset(p.spec, out / p.folder, device=device, indices=idx, repair=args.repair,
                                       progress=bar)
                written += rep.frames_written
    print(f"{args.suite}: {len(points)} points under {out}, {written} frames written now", file=sys.stderr)
    return 0


def run_export_mat(args) -> int:
    from wavefront.datasets.folders import dataset_folders
    from wavefront.datasets.matfiles import export_mat
    from wavefront.utils import check_output_folder

    out = check_output_folder("out", args.out)
    data = Path(args.data)
    from wavefront.datasets.sources import refuse_frameless

    refuse_frameless(data, "data")  # a killed generate's folder: "wrote 0 .mat files" and exit 0 otherwise
    # .mat files already where this export writes: another export's (or this one's, interrupted). Written over,
    # a smaller export would leave the other's last frames among its own, each a valid-looking frame.
    held = [f for d in dataset_folders(data, "data") for f in sorted((out / d.relative_to(data)).glob("*.mat"))]
    if held and not args.overwrite:
        raise ConfigError("out", str(out), f"already holds {len(held)} .mat file(s) where this export writes (e.g. "
                                           f"{held[0]}); add --overwrite to remove them first, or give another --out")
    for f in held:
        f.unlink()
    with _progress(None, not args.no_progress, "export-mat") as bar:
        n = export_mat(args.data, args.out, round_values=args.round, progress=bar)
    print(f"wrote {n} .mat files under {args.out}", file=sys.stderr)
    return 0


def run_import_mat(args) -> int:
    from wavefront.datasets.matfiles import import_mat
    from wavefront.utils import check_output_folder

    out = check_output_folder("out", args.out)
    _refuse_foreign_datasets(Path(args.mat), out, args.overwrite)
    with _progress(None, not args.no_progress, "import-mat") as bar:
        n = import_mat(args.mat, args.out, _base_config(args), args.shard_frames, args.compression, progress=bar,
                       snr_convention=args.snr_convention, audit=not args.no_audit)
    print(f"imported {n} frames into {args.out}", file=sys.stderr)
    return 0


def _refuse_foreign_datasets(mat: Path, out: Path, overwrite: bool) -> None:
    """Raises ConfigError when a folder ``import-mat`` would write under ``out`` holds a dataset not imported from
    the same ``.mat`` folder (a generated one, or another import), unless ``overwrite``: its shards and manifest
    would be replaced. Importing the same folder again passes, as it always did."""
    import json

    from wavefront.datasets.folders import MANIFEST
    from wavefront.datasets.matfiles import mat_folders

    if overwrite:
        return
    try:
        folders = mat_folders(mat)
    except ConfigError:
        return  # no .mat files, or a bad name: import-mat names it, after its own checks
    for folder in folders:
        manifest = out / folder.relative_to(mat) / MANIFEST
        if not manifest.exists():
            continue
        try:
            held = json.loads(manifest.read_text())
        except (OSError, ValueError):
            held = {}
        held = held if isinstance(held, dict) else {}
        source = held.get("imported_from")
        if held.get("source") != "import-mat" or source is None or Path(source).resolve() != folder.resolve():
            what = (f"imported from {source}" if held.get("source") == "import-mat"
                    else f"generated with seed {held['seed']}" if "seed" in held and held.get("source") is None
                    else "not imported from this folder")
            raise ConfigError("out", str(out), f"{manifest.parent} already holds a dataset {what}; add --overwrite to "
                                               f"replace it with the frames of {folder}, or give another --out")


def run_verify(args) -> int:
    import time

    from wavefront.datasets.folders import find_shards, verify_folder
    from wavefront.datasets.shards import ShardError

    total = sum(s.frames for s in find_shards(args.data, "data"))
    t = time.perf_counter()
    with _progress(total, not args.no_progress, "verify") as bar:
        rep = verify_folder(args.data, progress=bar)
    dt = time.perf_counter() - t
    if rep.bad:
        more = f" (and {len(rep.bad) - 1} more bad shard(s))" if len(rep.bad) > 1 else ""
        raise ShardError(rep.bad[0].path, f"{rep.bad[0].reason}{more}; regenerate with the generating command "
                                          "plus --repair")
    # "all intact" of a killed generate's folder is of the shards its manifest lists, perhaps none of them
    incomplete = [] if not Path(args.data).is_dir() else _incomplete(Path(args.data))
    note = "" if not incomplete else (f"; {incomplete[0][0]} is incomplete ({incomplete[0][1]} of {incomplete[0][2]} "
                                      "shards listed): rerun the command that generated it to finish it"
                                      + (f" (and {len(incomplete) - 1} more incomplete folder(s))"
                                         if len(incomplete) > 1 else ""))
    print(f"verified {rep.shards} shard(s), {rep.frames} frames, {rep.bytes / 1e6:.1f} MB under {args.data} "
          f"in {dt:.1f} s ({rep.bytes / 1e6 / max(dt, 1e-9):.0f} MB/s): all {'listed ' if incomplete else ''}intact"
          f"{note}", file=sys.stderr)
    return 1 if incomplete else 0  # exit 0 says the data are there to use: a script's `verify && train` stops here


def _incomplete(root: Path) -> list[tuple[Path, int, object]]:
    """Returns ``(folder, shards listed, shards expected)`` of each dataset folder under ``root`` not complete."""
    from wavefront.datasets.folders import dataset_folders, manifest_entries, read_manifest

    out = []
    for d in dataset_folders(root, "data"):
        man = read_manifest(d, "data") or {}
        if not man.get("complete", False):
            out.append((d, len(manifest_entries(man)), man.get("num_shards", "?")))
    return out


def run_audit(args) -> int:
    from pathlib import Path

    from wavefront.datasets.audit import audit, format_report

    if args.groups < 0:
        raise ConfigError("groups", args.groups, "must be >= 0")
    if args.json:  # before the audit: a bad --json must not cost its report
        from wavefront.utils import check_output_folder

        if Path(args.json).is_dir():
            raise ConfigError("json", args.json, "is a folder; give a file path for the JSON report")
        check_output_folder("json", Path(args.json).parent)
    from wavefront.datasets.folders import MANIFEST
    from wavefront.datasets.sources import refuse_frameless

    for d in args.dirs:  # a dataset folder (or tree) whose manifest lists no shard yet: one line, not a TypeError
        if Path(d).is_dir() and any(Path(d).rglob(MANIFEST)):
            refuse_frameless(d, "dir")
    with _progress(None, not args.no_progress, "audit") as bar:
        rep = audit(args.dirs, args.tolerance_db, max_groups=args.groups, progress=bar)
    print(format_report(rep))
    if args.json:
        from wavefront.utils import atomic_write_json

        atomic_write_json(args.json, rep.to_dict(), indent=1)
    if args.strict and rep.has_overlap:
        print(f"wavefront: audit --strict: {len(rep.overlaps)} pair(s) of folders share channel realizations",
              file=sys.stderr)
        return 1
    return 0
