"""Deterministic, atomic, resumable generation of sharded HDF5 datasets (reading them: :mod:`.folders`).

``generate_dataset(spec, out)`` writes ``out/shard-00000.h5 ...`` and ``out/manifest.json``.
Shard ``i`` is drawn from ``derive_seed(seed, i)`` (its generator batch ``j`` from
``derive_seed(seed, i, j)``), so any shard can be regenerated alone, and a run split across
ranks, array jobs or restarts writes the same bytes as one uninterrupted run on the same
device and library versions.

**MIMO** (a config with several antennas or users): frames carry the antenna and user axes
(:mod:`.shards`), and the run's frames are cut into generator batches of ``batch_size`` in order,
batch ``k`` drawn from ``derive_seed(seed, MIMO_STREAM, k)`` with data (``y``, ``bits``); a shard
draws the batches its frames fall in. So a frame depends on (config, seed, frames, batch size,
device) only, not on the shard size: any ``--shard-frames``, range or rank split gives the same
frames. A shard size that is a multiple of ``batch_size`` draws every batch once.

The manifest is the folder's table of contents: the run's identity (config, seed, frame
layout, batch size, compression) and, per complete shard, its file name, index, frame count,
``content_sha256``, ``file_sha256`` and size in ``bytes``. Readers take the shard list and
frame counts from it, never from a directory listing.

Checks, from cheap to thorough:

- resume (every ``generate``): each existing shard's attributes, and its whole-file SHA-256
  against the manifest (a full read and content checksum when the manifest has no entry).
  A bad shard is named and refused; ``repair=True`` regenerates it from its seed.
- :func:`verify_folder` (``wavefront verify``): the same for every listed shard, plus every
  chunk's Fletcher-32 and the content checksum.
- reading (:class:`~wavefront.datasets.H5FrameDataset`, ``export-mat``): HDF5 checks the
  Fletcher-32 of every chunk it serves, so a flipped data byte fails the read that hits it.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wavefront.datasets.folders import MANIFEST, MANIFEST_FORMAT, check_file, manifest_entries, read_manifest
from wavefront.datasets.shards import (
    COMPRESSIONS, DiskFullError, FORMAT_VERSION, OPTIONAL_META, PROFILE_DTYPE, ShardArrays, ShardBusy, ShardError, ShardRecord,
    ensure_free, estimate_shard_bytes, file_checksum, is_disk_full, partial_name, probe_shard, read_attrs,
    remove_stale_partials, shard_name, versions, write_file_atomic, write_shard,
)
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.impairments import IMPAIRMENT_FIELDS
from wavefront.sim.frames import FrameGenerator
from wavefront.sim.progress import first_difference
from wavefront.utils import check_interrupt, check_output_folder, deferred_interrupt, derive_seed

# Manifest fields that must match for a folder to be resumed rather than refused.
IDENTITY = ("format_version", "config", "seed", "frames", "shard_frames", "batch_size", "compression")
SEED_LIMIT = 2 ** 63  # seeds are stored as HDF5 int64 attributes
MIMO_STREAM = 0x4D494D4F  # MIMO batch k draws from derive_seed(seed, MIMO_STREAM, k): the run's frames in order
_SHARD_RE = re.compile(r"shard-(\d{5,})\.h5")


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
        if not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
            raise ConfigError("seed", self.seed, "must be an integer in [0, 2**63)")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError("batch_size", self.batch_size, "must be a positive integer")
        if self.compression not in COMPRESSIONS:
            raise ConfigError("compression", self.compression, f"choose one of {', '.join(COMPRESSIONS)}")
        self.counts = shard_counts(self.frames, self.shard_frames)

    @property
    def num_shards(self) -> int:
        return len(self.counts)

    @property
    def bytes_per_frame(self) -> int:
        """Returns the array bytes of one frame: channel, LS and received pilots (complex64), metadata
        (MIMO: :func:`mimo_frame_bytes`)."""
        if self.config.mimo.is_mimo:
            return mimo_frame_bytes(self.config)
        o = self.config.ofdm
        f, t = o.grid_shape
        impairments = sum(getattr(self.config.channel, k) is not None for k in IMPAIRMENT_FIELDS)
        return 8 * (f * t + 2 * o.num_pilots) + 4 * (4 + impairments) + 5

    def header(self) -> dict:
        """Returns the manifest fields that describe the run (everything but the shard list)."""
        return {"format": MANIFEST_FORMAT, "format_version": FORMAT_VERSION,
                "config": json.loads(self.config.to_json()), "seed": self.seed, "frames": self.frames,
                "shard_frames": self.shard_frames, "num_shards": self.num_shards,
                "batch_size": self.batch_size, "compression": self.compression,
                "seeding": "shard i uses derive_seed(seed, i); its generator batch j uses derive_seed(seed, i, j)",
                "snr_convention": self.config.snr_convention_text, "ici": self.config.ici_text,
                "channel_realization": self.config.realization_text,
                "versions": versions(), **self.impairments(), **self.extra, **mimo_header(self.config)}

    def impairments(self) -> dict:
        """Returns ``{"impairments": {field: {"value", "units"}}}`` when the config sets any, else ``{}``.

        Each frame's drawn value is in the shards' ``[N]`` float32 dataset named ``field``; the
        manifest of a run without impairments stays as it was.
        """
        from wavefront.sim.impairments import impairment_record

        rec = impairment_record(self.config.channel)
        return {"impairments": rec} if rec else {}

    def shard_attrs(self, index: int, device: str) -> dict:
        # MIMO: no shard seed (its frames come from the run's batches), the first frame's index instead
        seed = ({"first_frame": index * self.shard_frames} if self.config.mimo.is_mimo
                else {"shard_seed": derive_seed(self.seed, index)})
        return {"config": self.config.to_json(), "seed": self.seed, "shard_index": index,
                **seed, "batch_size": self.batch_size,
                "frames": self.frames, "shard_frames": self.shard_frames, "compression": self.compression,
                "device": device, "versions": versions()}

    def expected_attrs(self, index: int) -> dict:
        """Returns the attributes shard ``index`` of this run must carry."""
        return {"format_version": FORMAT_VERSION, "config": self.config.to_json(), "seed": self.seed,
                "shard_index": index, "num_frames": self.counts[index], "batch_size": self.batch_size,
                "frames": self.frames, "shard_frames": self.shard_frames, "compression": self.compression}


def mimo_frame_bytes(config: SystemConfig) -> int:
    """Returns the array bytes of one MIMO frame: ``h`` [R, U, F, T], ``y`` [R, F, T], the LS and
    received pilots [R, U, ...] (and DM-RS group observations) complex64, ``bits`` [U, K] uint8, metadata."""
    m, o = config.mimo, config.ofdm
    f, t = o.grid_shape
    R, U = m.num_rx_antennas, m.num_users
    pilots = 3 * f * t if m.pilots != "kronecker" else 2 * o.num_pilots  # DM-RS: at most the grid, three arrays
    return 8 * R * (U * f * t + f * t + pilots) + U * f * t * 8 + 4 * 4 + 5  # bits: at most 8 per RE (256-QAM)


def mimo_header(config: SystemConfig) -> dict:
    """Returns what a MIMO run adds to its manifest (nothing for SISO): the antennas and users, every user's
    pilots (``pilots_per_user``: ``[{"positions": [[f, t], ...], "cover": [...]}, ...]``), the arrays and the seeding."""
    m = config.mimo
    if not m.is_mimo:
        return {}
    from wavefront.sim.mimo import describe_pilots, pilots_per_user

    return {"mimo": {"rx_antennas": m.num_rx_antennas, "users": m.num_users, "rx_correlation": m.rx_correlation,
                     "array": m.array, "pilots": m.pilots, "pilot_description": describe_pilots(config),
                     **({"spatial": "rays", "antenna_spacing_wavelengths": m.antenna_spacing_wavelengths}
                        if m.spatial == "rays" else {})},
            "pilots_per_user": pilots_per_user(config),
            "arrays": {"h_true": "[N, R, U, F, T] complex64", "y": "[N, R, F, T] complex64",
                       "pilots_ls": "[N, R, U, P_f', P_t] complex64 (user u's own pilots at antenna r)",
                       "pilots_rx": "[N, R, U, P_f', P_t] complex64 (DM-RS: the user's group REs)",
                       "bits": "[N, U, K] uint8 (uncoded, each user's data positions)",
                       **({"pilots_dmrs": "[N, R, U, N_f, N_t] complex64"} if m.pilots != "kronecker" else {})},
            "seeding": (f"the run's frames in generator batches of batch_size, in order; batch k uses "
                        f"derive_seed(seed, {MIMO_STREAM:#x}, k) (independent of shard_frames)")}


def _mimo_static(config: SystemConfig) -> tuple[np.ndarray, np.ndarray]:
    """Returns (``pilot_subcarriers`` [U, P_f'], ``pilot_symbol_indices`` [P_t]) int64: where ``pilots_ls`` sits."""
    from wavefront.sim.mimo import user_configs

    users = user_configs(config)
    return (np.asarray([c.ofdm.pilot_subcarriers for c in users], dtype=np.int64),
            np.asarray(users[0].ofdm.pilot_symbol_indices, dtype=np.int64))


def draw_mimo_shard(generator, spec: DatasetSpec, index: int, progress=None) -> ShardArrays:
    """Returns the frames of MIMO shard ``index`` drawn with ``generator`` (a MimoFrameGenerator).

    Frame ``n`` of the run is row ``n - k B`` of batch ``k = n // B`` (``B = batch_size``; the last
    batch holds the rest), drawn from ``derive_seed(seed, MIMO_STREAM, k)`` with data: the shard
    draws every batch its frames fall in and keeps its rows.
    """
    B, start = spec.batch_size, index * spec.shard_frames
    end = start + spec.counts[index]
    sub, sym = _mimo_static(spec.config)
    parts, pos = [], start
    while pos < end:
        k = pos // B
        size = min(B, spec.frames - k * B)
        lo, hi = pos - k * B, min(size, end - k * B)
        fr = generator.generate(size, derive_seed(spec.seed, MIMO_STREAM, k), with_data=True)
        cut = (lambda t: None if t is None else t[lo:hi].cpu().numpy())  # noqa: E731
        parts.append(ShardArrays(
            h_true=cut(fr.h), pilots_ls=cut(fr.pilots_ls), pilots_rx=cut(fr.pilots_rx),
            pilot_symbols=fr.pilot_symbols.cpu().numpy(), pilot_subcarriers=sub, pilot_symbol_indices=sym,
            snr_db=cut(fr.snr_db), delay_spread_s=cut(fr.delay_spread_s), doppler_hz=cut(fr.doppler_hz),
            noise_var=cut(fr.noise_var), profile=np.full(hi - lo, fr.profile.encode(), dtype=PROFILE_DTYPE),
            y=cut(fr.y), bits=cut(fr.bits).astype(np.uint8), pilots_dmrs=cut(fr.pilots_dmrs),
            rx_correlation=cut(fr.rx_correlation)))
        pos = k * B + hi
        if progress is not None:
            progress.update(hi - lo)
        check_interrupt()
    return ShardArrays.concat(parts) if len(parts) > 1 else parts[0]


def draw_shard(generator, spec: DatasetSpec, index: int, progress=None) -> ShardArrays:
    """Returns the frames of shard ``index`` drawn with ``generator`` (a FrameGenerator; MIMO:
    :func:`draw_mimo_shard`).

    ``progress``: a tqdm-like object updated per generator batch, or None.
    """
    if spec.config.mimo.is_mimo:
        return draw_mimo_shard(generator, spec, index, progress)
    o = spec.config.ofdm
    layout = o.pilot_layout
    if layout.is_kronecker:  # the axes, as shards have always stored them
        sub, sym, positions = o.pilot_subcarriers, o.pilot_symbol_indices, None
    else:  # each pilot's subcarrier and symbol, and the positions themselves
        sub, sym = layout.subcarrier_indices, layout.symbol_indices
        positions = np.stack([sub, sym], 1).astype(np.int64)
    n = spec.counts[index]
    parts, done, j = [], 0, 0
    while done < n:
        b = min(spec.batch_size, n - done)
        fr = generator.generate(b, derive_seed(spec.seed, index, j), with_data=False)
        parts.append(ShardArrays(
            h_true=fr.h.cpu().numpy(), pilots_ls=fr.pilots_ls.cpu().numpy(), pilots_rx=fr.pilots_rx.cpu().numpy(),
            pilot_symbols=fr.pilot_symbols.cpu().numpy(),
            pilot_subcarriers=np.asarray(sub, dtype=np.int64),
            pilot_symbol_indices=np.asarray(sym, dtype=np.int64),
            snr_db=fr.snr_db.cpu().numpy(), delay_spread_s=fr.delay_spread_s.cpu().numpy(),
            doppler_hz=fr.doppler_hz.cpu().numpy(), noise_var=fr.noise_var.cpu().numpy(),
            profile=np.full(b, fr.profile.encode(), dtype=PROFILE_DTYPE), pilot_positions=positions,
            **{k: getattr(fr, k).cpu().numpy() for k in OPTIONAL_META if getattr(fr, k) is not None}))
        done += b
        j += 1
        if progress is not None:
            progress.update(b)
        check_interrupt()
    return ShardArrays.concat(parts) if len(parts) > 1 else parts[0]


# ---- manifest ---------------------------------------------------------------------------
def write_json_atomic(path: Path, obj: dict) -> None:
    # A per-process temporary name: ranks rebuilding the manifest at once never share one.
    data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
    write_file_atomic(path, data, tmp_name=f".{path.name}.{os.getpid()}.partial")


def shard_files(out: Path) -> dict[int, Path]:
    """Returns {index: path} of every ``shard-NNNNN.h5`` file in folder ``out``."""
    found = {}
    for p in Path(out).glob("shard-*.h5"):
        m = _SHARD_RE.fullmatch(p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def _check_identity(out: Path, spec: DatasetSpec) -> dict | None:
    """Refuses a folder that holds a different run; returns its manifest (None when it has none).

    Without a manifest, the shards' own attributes identify the run, and a shard beyond this
    run's count is refused too: a loader must never find more frames than the run has.
    """
    have = read_manifest(out)
    want = spec.header()
    if have is None:
        foreign, matching = None, 0
        for i, p in shard_files(out).items():
            if i >= spec.num_shards:
                raise ConfigError("out", str(out), f"holds {p.name}, beyond the {spec.num_shards} shard(s) of this run; "
                                                   "use a new --out folder or the arguments that wrote it")
            try:
                a = probe_shard(p)  # no manifest vouches for it: HDF5 reads it in a child process
            except ShardError:
                continue  # judged (and named) by the resume check, with the --repair hint
            expect = spec.expected_attrs(i)
            diffs = [k for k in IDENTITY if a.get(k) != expect.get(k)]
            if not diffs:
                matching += 1
            elif foreign is None:
                k = diffs[0]
                foreign = (f"{p.name} was written with a different {k} ({str(a.get(k))[:80]} there, "
                           f"{str(expect.get(k))[:80]} now) and the folder has no manifest; use a new --out folder "
                           "or the same arguments")
        # Shards that all disagree are another run's. One that disagrees with shards that agree
        # is a damaged one of ours: the resume check names it and --repair regenerates it.
        if foreign and not matching:
            raise ConfigError("out", str(out), foreign)
        return None
    diffs = [k for k in IDENTITY if have.get(k) != want.get(k)]
    if diffs:
        # the first differing leaf (config.channel.ici, not the whole config cut at 120 characters)
        k, there, now = first_difference(have.get(diffs[0]), want.get(diffs[0]), diffs[0]) or (
            diffs[0], have.get(diffs[0]), want.get(diffs[0]))
        raise ConfigError("out", str(out), f"already holds a dataset with a different {k} "
                                           f"({json.dumps(there)[:120]} there, {json.dumps(now)[:120]} now); "
                                           "refusing to mix: use a new --out folder or the same arguments")
    beyond = [p.name for i, p in shard_files(out).items() if i >= spec.num_shards]
    if beyond:
        raise ConfigError("out", str(out), f"holds {beyond[0]}, beyond the {spec.num_shards} shard(s) its manifest "
                                           "lists; move it away")
    if have.get("versions") != want.get("versions"):
        warnings.warn(f"{out} was started with other library versions ({have.get('versions')}); "
                      "new shards may not be bit-identical to a single run", stacklevel=3)
    return have


def update_manifest(out: Path, spec: DatasetSpec, known: dict[int, ShardRecord] | None = None) -> dict:
    """Rebuilds ``manifest.json`` from the complete shards on disk; returns it.

    ``known``: records of shards this process wrote or checked. Each rank calls this when its
    shards are done; the last one to finish lists them all (``complete: true``). Any rank can
    rebuild it: a shard no record covers is read in full and checked first.
    """
    out = Path(out)
    man = read_manifest(out) or {}
    header = spec.header()
    if man.get("versions"):
        header["versions"] = man["versions"]  # the versions the run started with
    records = dict(known or {})
    old = manifest_entries(man)
    shards = _complete_shards(out, spec, records, old)
    for _ in range(5):
        header["shards"] = shards
        header["complete"] = len(shards) == spec.num_shards
        write_json_atomic(out / MANIFEST, header)
        # Another rank may have renamed a shard between our scan and our write, and written
        # its own (shorter or longer) list; rescan until what we wrote is what is on disk.
        again = _complete_shards(out, spec, records, old)
        if again == shards:
            break
        shards = again
    return header


def _complete_shards(out: Path, spec: DatasetSpec, records: dict[int, ShardRecord], old: dict[int, dict]) -> list[dict]:
    shards = []
    for i, n in enumerate(spec.counts):
        p = out / shard_name(i)
        try:
            rec = records.get(i)
            if rec is None or p.stat().st_size != rec.bytes:  # not checked by this process, or replaced since
                try:
                    rec = check_shard(p, spec, i, old.get(i))
                except ShardError:
                    if not old.get(i):
                        raise
                    # Rewritten since the old manifest (another rank's --repair, say): the full
                    # content check decides, and the new file's checksum is recorded.
                    rec = check_shard(p, spec, i, None)
                records[i] = rec
        except (ShardError, FileNotFoundError):
            continue
        shards.append({"file": p.name, "index": i, "frames": n, "content_sha256": rec.content_sha256,
                       "file_sha256": rec.file_sha256, "bytes": rec.bytes, "device": rec.device})
    return shards


def check_shard(path: Path, spec: DatasetSpec, index: int, entry: dict | None = None) -> ShardRecord:
    """Returns the record of ``path`` if it is shard ``index`` of ``spec``, complete and intact.

    ``entry``: the shard's manifest entry. With a ``file_sha256`` there, the file's size and
    SHA-256 must match it (one sequential read) before HDF5 opens it; without, HDF5 reads every
    array in a child process (:func:`~wavefront.datasets.shards.probe_shard`: Fletcher-32 and
    content checksum). Then every identity attribute must match. Raises :class:`ShardError`
    naming the file otherwise.
    """
    if not path.exists():
        raise ShardError(path, "missing")
    if entry and entry.get("file_sha256"):
        digest = check_file(path, entry)
        a = read_attrs(path)  # the bytes the manifest vouches for: safe to open in-process
    else:
        a = probe_shard(path, full=True)
        digest = file_checksum(path)
    for k, v in spec.expected_attrs(index).items():
        if a.get(k) != v:
            raise ShardError(path, f"attribute {k}={str(a.get(k))[:80]!r}, expected {str(v)[:80]!r}")
    if entry and entry.get("content_sha256") not in (None, a["content_sha256"]):
        raise ShardError(path, "its content checksum differs from the manifest's")
    return ShardRecord(a["content_sha256"], digest, path.stat().st_size, a.get("device"))


# ---- the run ----------------------------------------------------------------------------
@dataclass
class RunReport:
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)  # left to another live process writing them
    stale_removed: list[str] = field(default_factory=list)  # .partial files of killed runs
    frames_written: int = 0
    manifest: dict | None = None


@dataclass
class Plan:
    todo: list[int]
    skipped: dict[int, ShardRecord]
    bad: list[int]
    busy: list[int]


def check_folder(out: str | Path, spec: DatasetSpec) -> dict | None:
    """Refuses an ``out`` that is not a folder or holds another run; writes nothing. Returns its manifest."""
    out = check_output_folder("out", out)
    return _check_identity(out, spec) if out.is_dir() else None


def plan_work(out: Path, spec: DatasetSpec, indices: list[int], repair: bool = False,
              manifest: dict | None = None) -> Plan:
    """Returns what to do with shards ``indices``: write, skip (intact), repair, or leave to a live writer.

    Every existing shard gets :func:`check_shard`. A bad one raises :class:`ShardError`
    naming the file, unless ``repair``. Call :func:`~wavefront.datasets.shards.remove_stale_partials` first.
    """
    entries = manifest_entries(manifest)
    plan = Plan([], {}, [], [])
    for i in indices:
        p = out / shard_name(i)
        if not p.exists():
            if (out / (p.name + ".partial")).exists():
                plan.busy.append(i)  # stale ones are gone already: a live writer holds it
            else:
                plan.todo.append(i)
            continue
        try:
            plan.skipped[i] = check_shard(p, spec, i, entries.get(i))
        except ShardError as exc:
            if not repair:
                raise ShardError(p, f"{exc.reason}; rerun the same command with --repair "
                                    "to regenerate it from its seed") from None
            plan.bad.append(i)
    return plan


def _remaining_bytes(spec: DatasetSpec, work: list[int], per_frame: float) -> int:
    return int(sum(spec.counts[i] for i in work) * per_frame) + 65536 * len(work)


def _generator(config: SystemConfig, device):
    """Returns the frame generator of ``config``: SISO's own, or the MIMO one with antennas and users."""
    if config.mimo.is_mimo:
        from wavefront.sim.mimo import MimoFrameGenerator

        return MimoFrameGenerator(config, device=device)
    return FrameGenerator(config, device=device)


def generate_dataset(spec: DatasetSpec, out: str | Path, device="cpu", indices: list[int] | None = None,
                     repair: bool = False, progress=None) -> RunReport:
    """Writes the shards ``indices`` (default all) of ``spec`` into ``out``; returns what it did.

    Nothing is written before every check passed. Free space is checked before each shard;
    a full disk raises :class:`~wavefront.datasets.shards.DiskFullError` (a ConfigError naming
    the folder and the space needed) after listing the shards already complete in the manifest.
    ``progress``: a tqdm-like object updated with frames written, or None.
    """
    out = check_output_folder("out", out)
    indices = list(range(spec.num_shards)) if indices is None else list(indices)
    manifest = check_folder(out, spec)
    out.mkdir(parents=True, exist_ok=True)
    report = RunReport(stale_removed=[p.name for p in remove_stale_partials(out)])
    plan = plan_work(out, spec, indices, repair, manifest)
    report.skipped, report.repaired, report.busy = sorted(plan.skipped), plan.bad, list(plan.busy)
    known = dict(plan.skipped)
    work = sorted(plan.todo + plan.bad)
    with deferred_interrupt():  # a Ctrl-C stops between batches, or after the manifest lists the last shard
        _write_work(out, spec, device, plan, work, known, report, manifest, progress)
        report.manifest = update_manifest(out, spec, known)
    return report


def _write_work(out: Path, spec: DatasetSpec, device, plan: Plan, work: list[int], known: dict[int, ShardRecord],
                report: RunReport, manifest: dict | None, progress) -> None:
    """The shard loop of :func:`generate_dataset`: writes ``work`` into ``out``, recording each in ``known`` and ``report``."""
    try:
        if manifest is None:
            write_json_atomic(out / MANIFEST, {**spec.header(), "shards": [], "complete": False})
        if work:
            # Bytes per frame: what shards on disk took, else the uncompressed upper estimate
            # (a compressed run without a shard yet relies on the exact check before its write).
            sizes = [r.bytes / spec.counts[i] for i, r in known.items()]
            per_frame = max(sizes) if sizes else estimate_shard_bytes(spec.bytes_per_frame, 1000) / 1000
            gen = _generator(spec.config, device)
            for k, i in enumerate(work):
                if i not in plan.bad and ((out / shard_name(i)).exists() or (out / partial_name(i)).exists()):
                    report.busy.append(i)  # another process wrote it, or is writing it, since our plan
                    continue
                if sizes or spec.compression == "none":
                    ensure_free(out, int(spec.counts[i] * per_frame) + 65536, shard_name(i),
                                _remaining_bytes(spec, work[k:], per_frame))
                arrays = draw_shard(gen, spec, i, progress)
                try:
                    rec = write_shard(out / shard_name(i), arrays, spec.shard_attrs(i, gen.device.type),
                                      spec.compression)
                except ShardBusy:
                    report.busy.append(i)
                    continue
                except DiskFullError as exc:  # the exact size did not fit, or the disk filled while writing
                    per_frame = max(per_frame, exc.need_bytes / spec.counts[i])
                    raise DiskFullError(out, shard_name(i), exc.need_bytes, exc.free_bytes,
                                        _remaining_bytes(spec, work[k:], per_frame)) from None
                known[i] = rec
                sizes.append(rec.bytes / spec.counts[i])
                per_frame = max(sizes)
                report.written.append(i)
                report.frames_written += len(arrays)
                check_interrupt()
    except DiskFullError:
        try:  # list what is complete, so readers and the next run see it
            update_manifest(out, spec, known)
        except DiskFullError:
            pass
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(out, "the next write", 65536, 0) from None
        raise
