"""The HDF5 shard format: one file per shard, written atomically, verifiable alone.

A shard ``shard-{index:05d}.h5`` holds N frames (F subcarriers, T symbols, P_f x P_t pilots):

- ``h_true`` [N, F, T] complex64: true channel; chunked one frame per chunk.
- ``pilots_ls`` [N, P_f, P_t] complex64: LS estimate at the pilots, ``pilots_rx / pilot_symbols``.
- ``pilots_rx`` [N, P_f, P_t] complex64: received pilots.
- ``pilot_symbols`` [P_f, P_t] complex64: the known transmitted pilots (unit modulus).
- ``pilot_subcarriers`` [P_f] int64, ``pilot_symbol_indices`` [P_t] int64: 0-based pilot positions.
- ``snr_db`` [N] float32 (dB, per resource element), ``delay_spread_s`` [N] float32 (s, RMS),
  ``doppler_hz`` [N] float32 (Hz, maximum), ``noise_var`` [N] float32 (per complex RE),
  ``profile`` [N] bytes ``S5``: the TDL letter (``A``..``E``) or ``CDL-A``..``CDL-E``.

Root attributes: ``format`` ("wavefront-shard"), ``format_version``, ``config`` (canonical
JSON of the SystemConfig), ``seed`` (the run's seed), ``shard_index``, ``shard_seed``
(``derive_seed(seed, shard_index)``), ``num_frames``, ``batch_size`` (generator batch),
``device`` (device type that drew it), ``versions`` (JSON), ``content_sha256`` (SHA-256 of
the arrays, see :func:`content_checksum`).

Files carry no timestamps (``track_times=False``) and no run-dependent attributes, so the
same command on the same device and versions writes byte-identical shards.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

FORMAT = "wavefront-shard"
FORMAT_VERSION = 1
PROFILE_DTYPE = "S5"  # "A".."E" (TDL) or "CDL-A".."CDL-E"
FRAME_ARRAYS = ("h_true", "pilots_ls", "pilots_rx")  # [N, ...] complex64, one chunk per frame
META_ARRAYS = ("snr_db", "delay_spread_s", "doppler_hz", "noise_var")  # [N] float32
STATIC_ARRAYS = ("pilot_symbols", "pilot_subcarriers", "pilot_symbol_indices")
COMPRESSIONS = ("none", "lzf", "gzip")


class ShardError(Exception):
    """A shard on disk is missing, truncated, corrupt or belongs to another run."""

    def __init__(self, path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def shard_name(index: int) -> str:
    """Returns the file name of shard ``index``: ``shard-00000.h5``."""
    return f"shard-{index:05d}.h5"


def partial_name(index: int) -> str:
    """Returns the temporary name a shard is written under before its atomic rename."""
    return shard_name(index) + ".partial"


def versions() -> dict[str, str]:
    """Returns the library versions that determine the bytes of a shard."""
    import torch

    from wavefront import __version__

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

    def __len__(self) -> int:
        return self.h_true.shape[0]

    @classmethod
    def concat(cls, parts: list["ShardArrays"]) -> "ShardArrays":
        """Returns the frames of ``parts`` in order (static arrays from the first)."""
        first = parts[0]
        kw = {}
        for name in cls.__dataclass_fields__:
            if name in STATIC_ARRAYS:
                kw[name] = getattr(first, name)
            else:
                kw[name] = np.concatenate([getattr(p, name) for p in parts])
        return cls(**kw)


def content_checksum(a: ShardArrays) -> str:
    """Returns the SHA-256 hex digest of a shard's arrays (bytes, in a fixed order)."""
    h = hashlib.sha256()
    for name in FRAME_ARRAYS + META_ARRAYS + STATIC_ARRAYS + ("profile",):
        arr = np.ascontiguousarray(getattr(a, name))
        h.update(name.encode())
        h.update(str(arr.dtype.str).encode())
        h.update(repr(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_shard(path: str | Path, arrays: ShardArrays, attrs: dict, compression: str = "none") -> str:
    """Writes ``arrays`` to ``path`` atomically and returns the content checksum.

    The file is written to ``path + ".partial"``, flushed to disk, then renamed: a crash or a
    full disk leaves at most a ``.partial`` file, never a shard that looks complete.
    ``compression``: ``none``, ``lzf`` or ``gzip`` (applies to the per-frame arrays).
    """
    path = Path(path)
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}")
    tmp = path.with_name(path.name + ".partial")
    checksum = content_checksum(arrays)
    n = len(arrays)
    comp = {} if compression == "none" else {"compression": compression}
    if compression == "gzip":
        comp["compression_opts"] = 4
    try:
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
            for name in FRAME_ARRAYS:
                arr = getattr(arrays, name)
                f.create_dataset(name, data=arr, chunks=(1,) + arr.shape[1:], track_times=False, **comp)
            for name in META_ARRAYS:
                f.create_dataset(name, data=getattr(arrays, name).astype(np.float32), track_times=False)
            f.create_dataset("profile", data=arrays.profile.astype(PROFILE_DTYPE), track_times=False)
            for name in STATIC_ARRAYS:
                f.create_dataset(name, data=getattr(arrays, name), track_times=False)
            full = {"format": FORMAT, "format_version": FORMAT_VERSION, "num_frames": n,
                    "content_sha256": checksum, **attrs}
            for k in sorted(full):
                v = full[k]
                f.attrs[k] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
            f.flush()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return checksum


def read_attrs(path: str | Path) -> dict:
    """Returns the root attributes of a shard (``config``/``versions`` still JSON strings).

    Raises :class:`ShardError` when the file is missing, not HDF5, truncated or not a shard.
    """
    path = Path(path)
    if not path.exists():
        raise ShardError(path, "missing")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
            shapes = {k: f[k].shape for k in FRAME_ARRAYS + META_ARRAYS + ("profile",) if k in f}
    except OSError as exc:
        raise ShardError(path, f"not a readable HDF5 file ({exc.__class__.__name__}: {exc}); "
                               "it may be truncated or corrupt") from None
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
    """Returns every array of a shard as numpy; raises :class:`ShardError` if unreadable."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            return ShardArrays(**{k: f[k][()] for k in ShardArrays.__dataclass_fields__})
    except (OSError, KeyError) as exc:
        raise ShardError(path, f"cannot read its arrays ({exc.__class__.__name__}: {exc}); "
                               "it may be truncated or corrupt") from None


def verify_content(path: str | Path) -> dict:
    """Reads the whole shard and checks its arrays against ``content_sha256``; returns its attrs."""
    attrs = read_attrs(path)
    got = content_checksum(read_shard(path))
    if got != attrs.get("content_sha256"):
        raise ShardError(path, "content checksum mismatch: the data is corrupt")
    return attrs
