"""Deterministic, atomic, resumable generation of sharded HDF5 datasets.

``generate_dataset(spec, out)`` writes ``out/shard-00000.h5 ...`` and ``out/manifest.json``.
Shard ``i`` is drawn from ``derive_seed(seed, i)`` (its generator batch ``j`` from
``derive_seed(seed, i, j)``), so any shard can be regenerated alone, and a run split across
ranks, array jobs or restarts writes the same bytes as one uninterrupted run on the same
device and library versions.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wavefront.datasets.shards import (
    COMPRESSIONS, FORMAT_VERSION, PROFILE_DTYPE, ShardArrays, ShardError, partial_name, read_attrs, shard_name,
    verify_content, versions, write_shard,
)
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.utils import derive_seed

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "wavefront-dataset"
# Manifest fields that must match for a folder to be resumed rather than refused.
IDENTITY = ("format_version", "config", "seed", "frames", "shard_frames", "batch_size")


def shard_counts(frames: int, shard_frames: int) -> list[int]:
    """Returns the frame count of every shard: full shards, then the remainder (exact, no rounding)."""
    if not isinstance(frames, int) or frames < 1:
        raise ConfigError("frames", frames, "must be a positive integer")
    if not isinstance(shard_frames, int) or shard_frames < 1:
        raise ConfigError("shard_frames", shard_frames, "must be a positive integer")
    full, rest = divmod(frames, shard_frames)
    return [shard_frames] * full + ([rest] if rest else [])


def parse_shard_range(text: str | None, num_shards: int) -> range:
    """Returns the shard indices of ``"a:b"`` (half-open, like Python; ``a:`` and ``:b`` allowed)."""
    if text is None:
        return range(num_shards)
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a = int(parts[0]) if parts[0].strip() else 0
        b = int(parts[1]) if parts[1].strip() else num_shards
    except ValueError:
        raise ConfigError("shard_range", text, "must be a:b with integers (half-open, e.g. 0:10)") from None
    if not (0 <= a < b <= num_shards):
        raise ConfigError("shard_range", text, f"must satisfy 0 <= a < b <= {num_shards} (the number of shards)")
    return range(a, b)


def rank_split(items: list, rank: int, world_size: int) -> list:
    """Returns the items of ``rank`` out of ``world_size``: every world_size-th, starting at rank."""
    if world_size < 1 or not (0 <= rank < world_size):
        raise ConfigError("rank", rank, f"must satisfy 0 <= rank < world_size={world_size}")
    return list(items)[rank::world_size]


def env_rank() -> tuple[int, int]:
    """Returns (rank, world_size) from torchrun's ``RANK``/``WORLD_SIZE`` (0, 1 when absent)."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ConfigError("RANK/WORLD_SIZE", os.environ.get("RANK"), "must be integers") from None


@dataclass
class DatasetSpec:
    """What a dataset folder holds: config, seed, frame counts and the generator batch size.

    ``batch_size`` is part of the identity because frames are deterministic per
    (config, seed, batch size, device). ``extra`` lands in the manifest (e.g. suite metadata).
    """

    config: SystemConfig
    seed: int
    frames: int
    shard_frames: int = 10_000
    batch_size: int = 1000
    compression: str = "none"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError("seed", self.seed, "must be a non-negative integer")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError("batch_size", self.batch_size, "must be a positive integer")
        if self.compression not in COMPRESSIONS:
            raise ConfigError("compression", self.compression, f"choose one of {', '.join(COMPRESSIONS)}")
        self.counts = shard_counts(self.frames, self.shard_frames)

    @property
    def num_shards(self) -> int:
        return len(self.counts)

    def header(self) -> dict:
        """Returns the manifest fields that describe the run (everything but the shard list)."""
        return {"format": MANIFEST_FORMAT, "format_version": FORMAT_VERSION,
                "config": json.loads(self.config.to_json()), "seed": self.seed, "frames": self.frames,
                "shard_frames": self.shard_frames, "num_shards": self.num_shards,
                "batch_size": self.batch_size, "compression": self.compression,
                "seeding": "shard i uses derive_seed(seed, i); its generator batch j uses derive_seed(seed, i, j)",
                "snr_convention": self.config.snr_convention_text,
                "versions": versions(), **self.extra}

    def shard_attrs(self, index: int, device: str) -> dict:
        return {"config": self.config.to_json(), "seed": self.seed, "shard_index": index,
                "shard_seed": derive_seed(self.seed, index), "batch_size": self.batch_size,
                "device": device, "versions": versions()}


def draw_shard(generator, spec: DatasetSpec, index: int, progress=None) -> ShardArrays:
    """Returns the frames of shard ``index`` drawn with ``generator`` (a FrameGenerator).

    ``progress``: a tqdm-like object updated per generator batch, or None.
    """
    o = spec.config.ofdm
    n = spec.counts[index]
    parts, done, j = [], 0, 0
    while done < n:
        b = min(spec.batch_size, n - done)
        fr = generator.generate(b, derive_seed(spec.seed, index, j), with_data=False)
        parts.append(ShardArrays(
            h_true=fr.h.cpu().numpy(), pilots_ls=fr.pilots_ls.cpu().numpy(), pilots_rx=fr.pilots_rx.cpu().numpy(),
            pilot_symbols=fr.pilot_symbols.cpu().numpy(),
            pilot_subcarriers=np.asarray(o.pilot_subcarriers, dtype=np.int64),
            pilot_symbol_indices=np.asarray(o.pilot_symbols, dtype=np.int64),
            snr_db=fr.snr_db.cpu().numpy(), delay_spread_s=fr.delay_spread_s.cpu().numpy(),
            doppler_hz=fr.doppler_hz.cpu().numpy(), noise_var=fr.noise_var.cpu().numpy(),
            profile=np.full(b, fr.profile.encode(), dtype=PROFILE_DTYPE)))
        done += b
        j += 1
        if progress is not None:
            progress.update(b)
    return ShardArrays.concat(parts) if len(parts) > 1 else parts[0]


# ---- manifest ---------------------------------------------------------------------------
def read_manifest(out: Path) -> dict | None:
    """Returns the parsed manifest of ``out``, or None when there is none."""
    p = Path(out) / MANIFEST
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError("out", str(out), f"{p} is not valid JSON; move it away or use a new --out folder") from None


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _check_identity(out: Path, spec: DatasetSpec) -> None:
    """Refuses a folder that holds a different run (config, seed or frame layout)."""
    have = read_manifest(out)
    want = spec.header()
    if have is None:
        # No manifest: a shard left by a run killed before writing it still must match.
        for i in range(spec.num_shards):
            p = out / shard_name(i)
            if p.exists():
                try:
                    a = read_attrs(p)
                except ShardError:
                    continue  # judged (and named) later, with the --repair hint
                if a.get("config") != spec.config.to_json() or a.get("seed") != spec.seed:
                    raise ConfigError("out", str(out), f"{p.name} was written with a different config or seed; "
                                                       "use a new --out folder")
                break
        return
    if have.get("format") != MANIFEST_FORMAT:
        raise ConfigError("out", str(out), "holds a manifest.json that is not a wavefront dataset; use a new --out folder")
    diffs = [k for k in IDENTITY if have.get(k) != want.get(k)]
    if diffs:
        k = diffs[0]
        raise ConfigError("out", str(out), f"already holds a dataset with a different {k} "
                                           f"({json.dumps(have.get(k))[:120]} there, {json.dumps(want.get(k))[:120]} now); "
                                           "refusing to mix: use a new --out folder or the same arguments")
    if have.get("versions") != want.get("versions"):
        warnings.warn(f"{out} was started with other library versions ({have.get('versions')}); "
                      "new shards may not be bit-identical to a single run", stacklevel=3)


def update_manifest(out: Path, spec: DatasetSpec) -> dict:
    """Rebuilds ``manifest.json`` from the complete shards on disk; returns it.

    Each rank calls this when its shards are done; the last one to finish lists them all
    (``complete: true``). Any rank can rebuild it, because every entry comes from a shard's
    own attributes.
    """
    man = read_manifest(out) or {}
    header = spec.header()
    if man.get("versions"):
        header["versions"] = man["versions"]  # the versions the run started with
    shards = _complete_shards(out, spec)
    for _ in range(5):
        header["shards"] = shards
        header["complete"] = len(shards) == spec.num_shards
        _write_json_atomic(out / MANIFEST, header)
        # Another rank may have renamed a shard between our scan and our write, and written
        # its own (shorter or longer) list; rescan until what we wrote is what is on disk.
        again = _complete_shards(out, spec)
        if again == shards:
            break
        shards = again
    return header


def _complete_shards(out: Path, spec: DatasetSpec) -> list[dict]:
    shards = []
    for i, n in enumerate(spec.counts):
        p = out / shard_name(i)
        if not p.exists():
            continue
        try:
            a = read_attrs(p)
        except ShardError:
            continue
        if a.get("num_frames") != n:
            continue
        shards.append({"file": p.name, "index": i, "frames": n, "content_sha256": a["content_sha256"],
                       "device": a.get("device")})
    return shards


def check_shard(path: Path, spec: DatasetSpec, index: int, full: bool = False) -> None:
    """Raises :class:`ShardError` unless ``path`` is shard ``index`` of ``spec``, complete.

    ``full`` also reads every array and checks the content checksum.
    """
    a = verify_content(path) if full else read_attrs(path)
    expect = {"config": spec.config.to_json(), "seed": spec.seed, "shard_index": index,
              "num_frames": spec.counts[index], "batch_size": spec.batch_size, "format_version": FORMAT_VERSION}
    for k, v in expect.items():
        if a.get(k) != v:
            raise ShardError(path, f"attribute {k}={a.get(k)!r}, expected {v!r}")


# ---- the run ----------------------------------------------------------------------------
@dataclass
class RunReport:
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)
    frames_written: int = 0
    manifest: dict | None = None


def prepare_folder(out: str | Path, spec: DatasetSpec) -> Path:
    """Creates ``out`` if needed, refuses a foreign run there, and writes the manifest header."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_identity(out, spec)
    if read_manifest(out) is None:
        _write_json_atomic(out / MANIFEST, {**spec.header(), "shards": [], "complete": False})
    return out


def plan_work(out: Path, spec: DatasetSpec, indices: list[int], repair: bool = False) -> tuple[list[int], list[int], list[int]]:
    """Returns (to_write, skipped, to_repair) for ``indices``; stale ``.partial`` files are removed.

    A complete shard is checked by attributes and frame count (``repair``: by full content
    checksum too). A bad one raises :class:`ConfigError` naming the file, unless ``repair``.
    """
    todo, skipped, bad = [], [], []
    for i in indices:
        tmp = out / partial_name(i)
        if tmp.exists():
            tmp.unlink()  # a partial shard from an interrupted run: discard and redo
        p = out / shard_name(i)
        if not p.exists():
            todo.append(i)
            continue
        try:
            check_shard(p, spec, i, full=repair)
            skipped.append(i)
        except ShardError as exc:
            if not repair:
                raise ConfigError("shard", str(p), f"{exc.reason}; rerun the same command with --repair "
                                                   "to regenerate it from its seed") from None
            bad.append(i)
    return todo, skipped, bad


def generate_dataset(spec: DatasetSpec, out: str | Path, device="cpu", indices: list[int] | None = None,
                     repair: bool = False, progress=None) -> RunReport:
    """Writes the shards ``indices`` (default all) of ``spec`` into ``out``; returns what it did.

    ``progress``: a tqdm-like object updated with frames written, or None.
    """
    from wavefront.sim.frames import FrameGenerator

    out = prepare_folder(out, spec)
    indices = list(range(spec.num_shards)) if indices is None else list(indices)
    todo, skipped, bad = plan_work(out, spec, indices, repair)
    report = RunReport(skipped=skipped, repaired=bad)
    work = sorted(todo + bad)
    if work:
        gen = FrameGenerator(spec.config, device=device)
        for i in work:
            arrays = draw_shard(gen, spec, i, progress)
            write_shard(out / shard_name(i), arrays, spec.shard_attrs(i, gen.device.type), spec.compression)
            report.written.append(i)
            report.frames_written += len(arrays)
    report.manifest = update_manifest(out, spec)
    return report
