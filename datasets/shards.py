"""The HDF5 shard format: one file per shard, written atomically, verifiable alone.

A shard ``shard-{index:05d}.h5`` holds N frames (F subcarriers, T symbols, P_f x P_t pilots):

- ``h_true`` [N, F, T] complex64: true channel; chunked one frame per chunk.
- ``pilots_ls`` [N, P_f, P_t] complex64: LS estimate at the pilots, ``pilots_rx / pilot_symbols``.
- ``pilots_rx`` [N, P_f, P_t] complex64: received pilots.
- ``pilot_symbols`` [P_f, P_t] complex64: the known transmitted pilots (unit modulus).
- ``pilot_subcarriers`` [P_f] int64, ``pilot_symbol_indices`` [P_t] int64: 0-based pilot positions.

A scattered pilot layout (:mod:`wavefront.sim.pilots`) stores its pilots as ``[N, P]`` in
position order (``pilots_ls``, ``pilots_rx``; ``pilot_symbols`` [P]), ``pilot_subcarriers`` and
``pilot_symbol_indices`` [P] (each pilot's subcarrier and symbol), and one more dataset,
``pilot_positions`` [P, 2] int64 ``(subcarrier, symbol)``, which a Kronecker shard does not
carry (its bytes are those of shards written before layouts existed). Either way the root
attribute ``config`` names the layout.
- ``snr_db`` [N] float32 (dB, per resource element), ``delay_spread_s`` [N] float32 (s, RMS),
  ``doppler_hz`` [N] float32 (Hz, maximum), ``noise_var`` [N] float32 (per complex RE),
  ``profile`` [N] bytes ``S5``: the TDL letter (``A``..``E``) or ``CDL-A``..``CDL-E``.
- ``cfo_hz``, ``phase_noise_linewidth_hz``, ``timing_offset_samples`` [N] float32: each frame's
  receiver impairment (:mod:`wavefront.sim.impairments`), one dataset per impairment the config
  sets (:data:`OPTIONAL_META`), its unit in the dataset's ``units`` attribute (Hz, Hz, samples of
  ``1 / (N scs)``). A shard whose config sets none carries none: its bytes are those of shards
  written before impairments existed.
- ``rx_correlation`` [N] float32 (MIMO with a ``mimo.rx_correlation`` range only): each frame's drawn rho.

**MIMO shards** (a config with R receive antennas and U users, ``mimo`` section;
:mod:`wavefront.sim.mimo`) carry the antenna and user axes, and three more frame arrays:

- ``h_true`` [N, R, U, F, T] complex64: user u's channel at antenna r; one chunk per (frame, antenna, user);
- ``pilots_ls``, ``pilots_rx`` [N, R, U, P_f', P_t] complex64: each user's own pilots at each
  antenna (Kronecker pattern: ``P_f' = P_f / U``; NR DM-RS: ``pilots_rx`` the user's group REs
  [N, R, U, N_f, N_t] and ``pilots_ls`` the despread LS per CDM pair);
- ``pilot_symbols`` [U, P_f', P_t] complex64; ``pilot_subcarriers`` [U, P_f'] int64 (each user's
  pilot subcarriers), ``pilot_symbol_indices`` [P_t] int64;
- ``y`` [N, R, F, T] complex64: the received grid, ``sum_u h_u x_u + n``;
- ``bits`` [N, U, K] uint8 (0/1): each user's uncoded information bits on the data positions;
- ``pilots_dmrs`` [N, R, U, N_f, N_t] complex64 (NR DM-RS only): the raw group observations the
  genie reads (``Frames.pilots_dmrs``).

A SISO shard has none of the three (its bytes are those of shards written before MIMO existed).

Every dataset carries HDF5's Fletcher-32 filter (format version 2), so a flipped byte in any
chunk fails the read that would have served it: one frame per chunk for the frame arrays.

Root attributes: ``format`` ("wavefront-shard"), ``format_version``, ``config`` (canonical
JSON of the SystemConfig), ``seed`` (the run's seed), ``shard_index``, ``shard_seed``
(``derive_seed(seed, shard_index)``), ``num_frames``, ``batch_size`` (generator batch),
``frames``, ``shard_frames``, ``compression`` (the run's layout, so a folder that lost its
manifest can still be recognised), ``device`` (device type that drew it), ``versions``
(JSON), ``content_sha256`` (SHA-256 of the arrays, see :func:`content_checksum`).

Files carry no timestamps (``track_times=False``) and no run-dependent attributes, so the
same command on the same device and versions writes byte-identical shards. The file is
built in memory and reaches the disk with plain writes, so a full disk or a kill never
happens inside HDF5 and never leaves a file under the shard's name that is not complete.
"""
from __future__ import annotations

import errno
import faulthandler
import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from wavefront import __version__
from wavefront.errors import ConfigError
from wavefront.sim.impairments import IMPAIRMENT_FIELDS, IMPAIRMENT_UNITS
from wavefront.utils import fsync_dir

try:  # POSIX advisory locks tell a live writer's ``.partial`` from one a killed run left
    import fcntl
except ImportError:  # pragma: no cover - Windows: every .partial counts as stale
    fcntl = None

FORMAT = "wavefront-shard"
FORMAT_VERSION = 2  # 2: Fletcher-32 on every dataset; frames/shard_frames/compression attributes
PROFILE_DTYPE = "S5"  # "A".."E" (TDL) or "CDL-A".."CDL-E"
FRAME_ARRAYS = ("h_true", "pilots_ls", "pilots_rx")  # [N, ...] complex64, one chunk per frame
META_ARRAYS = ("snr_db", "delay_spread_s", "doppler_hz", "noise_var")  # [N] float32
STATIC_ARRAYS = ("pilot_symbols", "pilot_subcarriers", "pilot_symbol_indices")
OPTIONAL_STATIC = ("pilot_positions",)  # [P, 2] int64, scattered layouts only
OPTIONAL_FRAME = ("y", "bits", "pilots_dmrs")  # [N, ...], MIMO shards only (bits uint8, the rest complex64)
# Per-frame [N] float32 datasets present only when the config sets them (with a ``units`` attribute).
OPTIONAL_META = IMPAIRMENT_FIELDS + ("rx_correlation",)
META_UNITS = {**IMPAIRMENT_UNITS, "rx_correlation": "1 (rho of the receive antennas' exponential correlation)"}
COMPRESSIONS = ("none", "lzf", "gzip")
# What h5py raises on a damaged file, by where the damage sits: OSError (truncation, bad
# signatures, checksum failures), RuntimeError ("bad object header version number", local
# heap), KeyError (a damaged link name), TypeError/ValueError (a damaged datatype or
# dataspace), and a few more from decoding damaged attribute values.
H5_ERRORS = (OSError, RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
             MemoryError, SystemError)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_PROBE_TIMEOUT_S = 600  # a full read of a 10 000-frame shard takes about a second


class ShardError(ConfigError):
    """A shard on disk is missing, truncated, corrupt or belongs to another run.

    A :class:`ConfigError` naming the file, so the command line reports it on one line (exit 2).
    """

    def __init__(self, path, reason: str | None = None):
        if reason is None:
            # Re-raised by torch from a DataLoader worker: it passes one message, the worker's
            # whole traceback, whose last line is ours. Keep that line, not the traceback.
            last = str(path).rstrip().splitlines()[-1] if str(path).strip() else ""
            m = re.search(r"ShardError: shard='(.*)': (.*)$", last)
            path, reason = (m.group(1), m.group(2)) if m else ("?", last or "unreadable shard")
        self.path, self.reason = Path(path), reason
        super().__init__("shard", str(path), reason)


class ShardBusy(Exception):
    """Another live process holds the ``.partial`` of this shard: it is writing it now."""


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class DiskFullError(ConfigError):
    """The file system of ``folder`` has no room for what must be written next.

    ``need_bytes``: what the next file needs; ``total_bytes``: about what the whole job still
    needs (None when unknown).
    """

    def __init__(self, folder, what: str, need_bytes: int, free_bytes: int, total_bytes: int | None = None):
        self.folder, self.need_bytes, self.free_bytes = Path(folder), int(need_bytes), int(free_bytes)
        rest = f"; about {_mb(total_bytes)} for the rest of the job" if total_bytes and total_bytes > need_bytes else ""
        super().__init__("out", str(folder), f"not enough free space: {what} needs {_mb(need_bytes)}, "
                                             f"{_mb(free_bytes)} free{rest}; free some space (or use another "
                                             "folder) and rerun the same command to resume")


def free_bytes(folder: str | Path) -> int:
    """Returns the bytes free to this user on the file system of ``folder``."""
    return shutil.disk_usage(folder).free


def ensure_free(folder: str | Path, need_bytes: int, what: str, total_bytes: int | None = None) -> None:
    """Raises :class:`DiskFullError` unless ``folder`` has ``need_bytes`` free (plus 1 % and 64 kB of slack)."""
    free = free_bytes(folder)
    if free < need_bytes * 1.01 + 65536:
        raise DiskFullError(folder, what, need_bytes, free, total_bytes)


def is_disk_full(exc: BaseException) -> bool:
    """Returns whether ``exc`` is the operating system saying the disk (or quota) is full."""
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE


def shard_name(index: int) -> str:
    """Returns the file name of shard ``index``: ``shard-00000.h5``."""
    return f"shard-{index:05d}.h5"


def partial_name(index: int) -> str:
    """Returns the temporary name a shard is written under before its atomic rename."""
    return shard_name(index) + ".partial"


def versions() -> dict[str, str]:
    """Returns the library versions that determine the bytes of a shard."""
    return {"wavefront": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version}


@dataclass
class ShardArrays:
    """The arrays of one shard as numpy (see the module docstring for shapes and dtypes)."""

    h_true: np.ndarray
    pilots_ls: np.ndarray
    pilots_rx: np.ndarray
    pilot_symbols: np.ndarray
    pilot_subcarriers: np.ndarray
    pilot_symbol_indices: np.ndarray
    snr_db: np.ndarray
    delay_spread_s: np.ndarray
    doppler_hz: np.ndarray
    noise_var: np.ndarray
    profile: np.ndarray  # [N] S5
    pilot_positions: np.ndarray | None = None  # [P, 2] int64: scattered layouts only
    y: np.ndarray | None = None  # [N, R, F, T] complex64: MIMO only
    bits: np.ndarray | None = None  # [N, U, K] uint8: MIMO only
    pilots_dmrs: np.ndarray | None = None  # [N, R, U, N_f, N_t] complex64: MIMO with NR DM-RS only
    cfo_hz: np.ndarray | None = None  # [N] float32 (Hz), the OPTIONAL_META: set when the config sets them
    phase_noise_linewidth_hz: np.ndarray | None = None  # [N] float32 (Hz)
    timing_offset_samples: np.ndarray | None = None  # [N] float32 (samples)
    rx_correlation: np.ndarray | None = None  # [N] float32: MIMO with a rho range only, each frame's rho

    def __len__(self) -> int:
        return self.h_true.shape[0]

    @classmethod
    def concat(cls, parts: list["ShardArrays"]) -> "ShardArrays":
        """Returns the frames of ``parts`` in order (static arrays from the first)."""
        first = parts[0]
        kw = {}
        for name in cls.__dataclass_fields__:
            if name in STATIC_ARRAYS + OPTIONAL_STATIC or getattr(first, name) is None:
                kw[name] = getattr(first, name)
            else:
                kw[name] = np.concatenate([getattr(p, name) for p in parts])
        return cls(**kw)


@dataclass(frozen=True)
class ShardRecord:
    """What a manifest records of one shard file: ``content_sha256`` of its arrays (also an
    attribute inside the file), ``file_sha256`` of all its bytes, its size ``bytes`` and the
    ``device`` type that drew it."""

    content_sha256: str
    file_sha256: str
    bytes: int
    device: str | None = None


def content_checksum(a: ShardArrays) -> str:
    """Returns the SHA-256 hex digest of a shard's arrays (bytes, in a fixed order)."""
    h = hashlib.sha256()
    optional = tuple(n for n in OPTIONAL_STATIC + OPTIONAL_FRAME + OPTIONAL_META if getattr(a, n) is not None)
    for name in FRAME_ARRAYS + META_ARRAYS + STATIC_ARRAYS + ("profile",) + optional:
        arr = np.ascontiguousarray(getattr(a, name))
        h.update(name.encode())
        h.update(str(arr.dtype.str).encode())
        h.update(repr(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def file_checksum(path: str | Path) -> str:
    """Returns the SHA-256 hex digest of every byte of the file at ``path``."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def estimate_shard_bytes(arrays_bytes_per_frame: int, frames: int) -> int:
    """Returns an upper estimate [bytes] of an uncompressed shard of ``frames`` frames."""
    # Fletcher-32 adds 4 bytes per chunk; chunk B-tree, headers and attributes stay under 64 kB
    # plus about 100 bytes per chunk (three chunks per frame).
    return frames * (arrays_bytes_per_frame + 3 * (4 + 100)) + 65536


def shard_image(arrays: ShardArrays, attrs: dict, compression: str = "none") -> tuple[bytes, str]:
    """Returns (the bytes of the HDF5 shard file, its content checksum), built in memory.

    ``compression``: ``none``, ``lzf`` or ``gzip`` (applies to the per-frame arrays).
    """
    if compression not in COMPRESSIONS:
        raise ConfigError("compression", compression, f"choose one of {', '.join(COMPRESSIONS)}")
    checksum = content_checksum(arrays)
    comp = {} if compression == "none" else {"compression": compression}
    if compression == "gzip":
        comp["compression_opts"] = 4
    # Fletcher-32 everywhere: HDF5 checks it on every chunk it reads, so corrupt data never
    # reaches a caller; the small arrays get one chunk each.
    opts = {"track_times": False, "fletcher32": True}
    buf = io.BytesIO()
    with h5py.File(buf, "w", libver="earliest", track_order=False) as f:
        for name in FRAME_ARRAYS:
            arr = getattr(arrays, name)
            # one frame per chunk; a MIMO channel [N, R, U, F, T] one (antenna, user) pair per chunk, so the
            # per-pair view reads (and checks) only that pair
            chunks = (1, 1, 1) + arr.shape[3:] if name == "h_true" and arr.ndim == 5 else (1,) + arr.shape[1:]
            f.create_dataset(name, data=arr, chunks=chunks, **opts, **comp)
        for name in META_ARRAYS:
            f.create_dataset(name, data=getattr(arrays, name).astype(np.float32), **opts)
        f.create_dataset("profile", data=arrays.profile.astype(PROFILE_DTYPE), **opts)
        for name in STATIC_ARRAYS + tuple(n for n in OPTIONAL_STATIC if getattr(arrays, n) is not None):
            f.create_dataset(name, data=getattr(arrays, name), **opts)
        for name in (n for n in OPTIONAL_FRAME if getattr(arrays, n) is not None):  # MIMO only
            arr = getattr(arrays, name)
            f.create_dataset(name, data=arr, chunks=(1,) + arr.shape[1:], **opts, **comp)
        for name in (n for n in OPTIONAL_META if getattr(arrays, n) is not None):
            f.create_dataset(name, data=getattr(arrays, name).astype(np.float32), **opts).attrs["units"] = \
                META_UNITS[name]
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, "num_frames": len(arrays),
                "content_sha256": checksum, **attrs}
        for k in sorted(full):
            v = full[k]
            f.attrs[k] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
    return buf.getvalue(), checksum


# ---- files on disk ----------------------------------------------------------------------
def _try_lock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def remove_if_stale(tmp: Path) -> bool:
    """Removes ``tmp`` (a ``.partial``) unless a live writer holds its lock; returns whether it is gone.

    A writer holds an exclusive ``flock`` on its ``.partial`` from creation to rename; the
    kernel drops it when the writer dies, so an unlocked ``.partial`` is a killed run's leftover.
    """
    try:
        fd = os.open(tmp, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        if not _try_lock(fd):
            return False  # a live writer: leave it alone
        try:
            if os.stat(tmp).st_ino != os.fstat(fd).st_ino:
                return False  # replaced since we opened it: judge it another time
            tmp.unlink()
        except FileNotFoundError:
            pass
        return True
    finally:
        os.close(fd)


def remove_stale_partials(folder: Path) -> list[Path]:
    """Removes every ``shard-*.h5.partial`` in ``folder`` that no live writer holds; returns them."""
    return [p for p in sorted(Path(folder).glob("shard-*.h5.partial")) if remove_if_stale(p)]


def _claim_partial(tmp: Path) -> int:
    """Returns a writable fd on a new ``tmp`` locked by this process; raises ShardBusy if a live writer has it."""
    for attempt in range(50):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if remove_if_stale(tmp):
                continue
            raise ShardBusy(tmp) from None
        if _try_lock(fd) and os.fstat(fd).st_nlink > 0:
            return fd
        # Another process's planner was judging this file between our create and our lock
        # (and may have removed it): start again with a fresh file.
        os.close(fd)
        time.sleep(0.01 * (attempt + 1))
    raise ShardBusy(tmp)


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file_atomic(path: str | Path, data: bytes, lock: bool = False, tmp_name: str | None = None) -> None:
    """Writes ``data`` to ``path`` via ``path + ".partial"`` (or ``tmp_name`` beside it), fsync and rename.

    A crash leaves at most the ``.partial``; a full disk removes it and raises
    :class:`DiskFullError` naming the folder. ``lock``: hold an exclusive lock on the
    ``.partial`` while writing (see :func:`remove_if_stale`); a live writer's lock raises
    :class:`ShardBusy`.
    """
    path = Path(path)
    tmp = path.with_name(tmp_name or path.name + ".partial")
    fd = _claim_partial(tmp) if lock else os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
            os.replace(tmp, path)
        finally:
            os.close(fd)
        fsync_dir(path.parent)
    except BaseException as exc:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        if is_disk_full(exc):
            raise DiskFullError(path.parent, path.name, len(data), free_bytes(path.parent)) from None
        raise


def write_shard(path: str | Path, arrays: ShardArrays, attrs: dict, compression: str = "none") -> ShardRecord:
    """Writes ``arrays`` to ``path`` atomically and returns what a manifest records of it.

    The file is built in memory, checked against the free space, written to
    ``path + ".partial"`` (locked while written), flushed to disk, then renamed: a crash or a
    full disk leaves at most a ``.partial`` file, never a shard that looks complete.
    ``compression``: ``none``, ``lzf`` or ``gzip`` (applies to the per-frame arrays).
    Raises :class:`DiskFullError` when the disk cannot hold it and :class:`ShardBusy` when
    another live process is writing the same shard.
    """
    path = Path(path)
    image, checksum = shard_image(arrays, attrs, compression)
    ensure_free(path.parent, len(image), path.name)
    write_file_atomic(path, image, lock=True)
    return ShardRecord(checksum, hashlib.sha256(image).hexdigest(), len(image), attrs.get("device"))


# ---- reading ------------------------------------------------------------------------------
def _damaged(path: Path, what: str, exc: BaseException) -> ShardError:
    msg = " ".join(f"{exc.__class__.__name__}: {exc}".split())  # one line, whatever HDF5 said
    return ShardError(path, f"{what} ({msg[:200]}); the file is truncated or corrupt")


def read_attrs(path: str | Path) -> dict:
    """Returns the root attributes of a shard (``config``/``versions`` still JSON strings).

    Raises :class:`ShardError` when the file is missing, not HDF5, truncated, damaged or not a shard.
    """
    path = Path(path)
    if not path.exists():
        raise ShardError(path, "missing")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
            shapes = {k: f[k].shape for k in FRAME_ARRAYS + META_ARRAYS + ("profile",) + OPTIONAL_FRAME + OPTIONAL_META if k in f}
    except H5_ERRORS as exc:
        raise _damaged(path, "cannot read its structure", exc) from None
    if attrs.get("format") != FORMAT:
        raise ShardError(path, f"not a wavefront shard (format={attrs.get('format')!r})")
    n = attrs.get("num_frames")
    missing = [k for k in FRAME_ARRAYS + META_ARRAYS + ("profile",) if k not in shapes]
    if missing:
        raise ShardError(path, f"dataset {missing[0]!r} is missing")
    bad = [k for k, s in shapes.items() if not s or s[0] != n]
    if bad:
        raise ShardError(path, f"dataset {bad[0]!r} has {shapes[bad[0]][0] if shapes[bad[0]] else 0} frames, "
                               f"attribute num_frames says {n}")
    return attrs


def read_shard(path: str | Path) -> ShardArrays:
    """Returns every array of a shard as numpy; raises :class:`ShardError` if unreadable or corrupt.

    Every chunk read is checked against its Fletcher-32 checksum (format version 2).
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            return ShardArrays(**{k: f[k][()] for k in ShardArrays.__dataclass_fields__ if k in f
                                  or k not in OPTIONAL_STATIC + OPTIONAL_FRAME + OPTIONAL_META})
    except H5_ERRORS as exc:
        raise _damaged(path, "cannot read its arrays", exc) from None


def verify_content(path: str | Path) -> dict:
    """Reads the whole shard and checks its arrays against ``content_sha256``; returns its attrs."""
    attrs = read_attrs(path)
    got = content_checksum(read_shard(path))
    if got != attrs.get("content_sha256"):
        raise ShardError(path, "content checksum mismatch: the data is corrupt")
    return attrs


def _probe_child(path: str, full: bool, conn) -> None:
    # What the C library prints when HDF5 corrupts its heap ("free(): invalid size") must not
    # reach the user's terminal: the parent reports the crash on its one line.

    faulthandler.disable()  # a Python traceback of the crash would be just as unwelcome
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        conn.send(("ok", verify_content(path) if full else read_attrs(path)))
    except ShardError as exc:
        conn.send(("err", exc.reason))
    except BaseException as exc:  # noqa: BLE001 - anything at all becomes the parent's ShardError
        conn.send(("err", f"{exc.__class__.__name__}: {exc}"))
    conn.close()


def probe_shard(path: str | Path, full: bool = False) -> dict:
    """Returns :func:`read_attrs` (``full``: :func:`verify_content`) of a shard no checksum vouches for yet.

    HDF5 can crash the process (SIGSEGV, abort) on some damaged metadata, so the file is read
    in a forked child; a crash there becomes a :class:`ShardError` naming the file. Files whose
    SHA-256 matched their manifest entry are safe to read in-process.
    """
    path = Path(path)
    if "fork" not in mp.get_all_start_methods():  # pragma: no cover - no fork: read in-process
        return verify_content(path) if full else read_attrs(path)
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_probe_child, args=(str(path), full, send), daemon=True)
    child.start()
    send.close()
    kind, value = None, None
    try:
        if recv.poll(_PROBE_TIMEOUT_S):
            kind, value = recv.recv()
    except EOFError:
        pass
    finally:
        recv.close()
        if kind is None and child.is_alive():  # HDF5 looping on damaged metadata
            child.kill()
        child.join()
    if kind is None:
        raise ShardError(path, f"HDF5 crashed or hung reading it (exit code {child.exitcode}); the file is corrupt")
    if kind == "err":
        raise ShardError(path, value)
    return value
