"""Torch datasets over OFDM frames: file-backed (HDF5 shards) and generated on the fly.

Both yield the same sample, a dict:

- ``pilots`` [P_f, P_t] complex64: LS estimate at the pilots.
- ``h`` [F, T] complex64: true channel.
- ``snr_db`` (dB, per RE), ``delay_spread_s`` (s), ``doppler_hz`` (Hz), ``noise_var``: float32 0-d tensors.

so a trainer can take either. The default collate stacks them into ``[B, ...]``.
"""
from __future__ import annotations

import bisect
import json
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from wavefront.datasets.shards import ShardError, read_attrs
from wavefront.errors import ConfigError
from wavefront.utils import derive_seed

SAMPLE_KEYS = ("pilots", "h", "snr_db", "delay_spread_s", "doppler_hz", "noise_var")
_META = ("snr_db", "delay_spread_s", "doppler_hz", "noise_var")
# Keeps on-the-fly frames apart from the shards of `wavefront generate` with the same seed,
# whose batches use derive_seed(seed, shard, batch).
_ON_THE_FLY_STREAM = 0x0F1F


def find_shards(path_or_dir: str | Path) -> list[Path]:
    """Returns the shard files of a file, a dataset folder, or a tree of dataset folders (sorted)."""
    p = Path(path_or_dir)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ConfigError("path", str(p), "no such file or folder")
    man = p / "manifest.json"
    if man.exists():  # one dataset folder: its complete shards (``.partial`` files never match)
        m = json.loads(man.read_text())
        if not m.get("complete", False):
            warnings.warn(f"{p}: the manifest says generation is not complete; reading the shards present",
                          stacklevel=3)
        return sorted(p.glob("shard-*.h5"))
    files = sorted(p.rglob("shard-*.h5"))
    if not files:
        raise ConfigError("path", str(p), "holds no shard-*.h5 files")
    return files


class H5FrameDataset(Dataset):
    """Map-style dataset over HDF5 shards, read lazily (see the module docstring for samples).

    ``path_or_dir``: one shard, a dataset folder, or a tree of them (e.g. a whole suite).
    Only the shard lengths are read up front; each worker process opens its own file
    handles on first use, so ``num_workers > 0`` is safe.
    """

    def __init__(self, path_or_dir: str | Path):
        self.files = find_shards(path_or_dir)
        self.lengths = []
        for f in self.files:
            try:
                self.lengths.append(int(read_attrs(f)["num_frames"]))
            except ShardError as exc:
                raise ConfigError("shard", str(exc.path), f"{exc.reason}; regenerate it with the generating "
                                                          "command plus --repair") from None
        self.offsets = np.cumsum([0] + self.lengths).tolist()
        self._handles: dict[int, dict] = {}  # shard number -> open file, datasets, metadata
        self._pid = None

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = {}, None
        return state

    def _file(self, k: int) -> dict:
        """Returns shard ``k``'s open handles: the file, its frame datasets and its metadata in memory."""
        if self._pid != os.getpid():  # forked or spawned worker: never share HDF5 handles
            self._handles, self._pid = {}, os.getpid()
        entry = self._handles.get(k)
        if entry is None:
            f = h5py.File(self.files[k], "r")
            entry = {"file": f, "h": f["h_true"], "pilots": f["pilots_ls"],
                     # [N] float32 each: small, so read once instead of once per sample
                     **{m: torch.from_numpy(f[m][()].astype(np.float32)) for m in _META}}
            entry["direct"] = all(entry[n].compression is None and entry[n].chunks == (1,) + entry[n].shape[1:]
                                  and entry[n].dtype == np.dtype("<c8") for n in ("h", "pilots"))
            self._handles[k] = entry
        return entry

    def locate(self, index: int) -> tuple[int, int]:
        """Returns (shard number, frame within shard) of a global frame index."""
        if index < 0:
            index += len(self)
        if not (0 <= index < len(self)):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        k = bisect.bisect_right(self.offsets, index) - 1
        return k, index - self.offsets[k]

    @staticmethod
    def _frame(ds: h5py.Dataset, i: int, direct: bool) -> torch.Tensor:
        if direct:  # an uncompressed one-frame chunk is the frame's bytes: skip h5py's selection machinery
            _, raw = ds.id.read_direct_chunk((i,) + (0,) * (ds.ndim - 1))
            return torch.from_numpy(np.frombuffer(raw, dtype=np.complex64).reshape(ds.shape[1:]).copy())
        return torch.from_numpy(ds[i])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k, i = self.locate(int(index))
        try:
            e = self._file(k)
            sample = {"pilots": self._frame(e["pilots"], i, e["direct"]), "h": self._frame(e["h"], i, e["direct"])}
        except (OSError, KeyError, ValueError) as exc:
            raise ShardError(self.files[k], f"cannot read frame {i} ({exc}); it may be corrupt: "
                                            "regenerate it with `wavefront generate ... --repair`") from None
        for m in _META:
            sample[m] = e[m][i].clone()
        return sample

    def close(self) -> None:
        for e in self._handles.values():
            e["file"].close()
        self._handles = {}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class OnTheFlyDataset(IterableDataset):
    """Iterable dataset that draws frames from a config on demand (same samples as H5FrameDataset).

    Frames come in generator batches of ``batch_size``; batch ``k`` of epoch ``e`` is drawn
    from ``derive_seed(seed, 0x0F1F, e, k)`` (a stream apart from ``wavefront generate``'s)
    and belongs to exactly one consumer: consumer ``c = rank * num_workers + worker`` of ``world_size * num_workers`` takes the batches
    ``k = c, c + C, ...``. So workers (and DDP ranks) never repeat each other's frames, and the
    same (seed, epoch, batch_size, device) gives the same frames whatever the worker count,
    up to order.

    ``frames_per_epoch``: frames per epoch over all consumers (None: endless).
    Call :meth:`set_epoch` between epochs for fresh frames.
    """

    def __init__(self, config, seed: int, frames_per_epoch: int | None = None, batch_size: int = 256,
                 device: str = "cpu", rank: int = 0, world_size: int = 1):
        if frames_per_epoch is not None and (not isinstance(frames_per_epoch, int) or frames_per_epoch < 1):
            raise ConfigError("frames_per_epoch", frames_per_epoch, "must be a positive integer or None")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError("batch_size", batch_size, "must be a positive integer")
        if world_size < 1 or not (0 <= rank < world_size):
            raise ConfigError("rank", rank, f"must satisfy 0 <= rank < world_size={world_size}")
        self.config, self.seed, self.frames_per_epoch = config, int(seed), frames_per_epoch
        self.batch_size, self.device, self.rank, self.world_size = batch_size, device, rank, world_size
        self.epoch = 0
        self._gen = None

    def set_epoch(self, epoch: int) -> None:
        """Selects the frames of ``epoch`` (call before creating the epoch's iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.frames_per_epoch is None:
            raise TypeError("an endless OnTheFlyDataset has no length")
        return self.frames_per_epoch

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_gen"] = None
        return state

    def _batches(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        consumer, consumers = self.rank * nw + wid, self.world_size * nw
        if self.frames_per_epoch is None:
            k = consumer
            while True:
                yield k, self.batch_size
                k += consumers
        nb, rest = divmod(self.frames_per_epoch, self.batch_size)
        sizes = [self.batch_size] * nb + ([rest] if rest else [])
        for k in range(consumer, len(sizes), consumers):
            yield k, sizes[k]

    def __iter__(self):
        from wavefront.sim.frames import FrameGenerator

        if self._gen is None:
            self._gen = FrameGenerator(self.config, device=self.device)
        for k, b in self._batches():
            fr = self._gen.generate(b, derive_seed(self.seed, _ON_THE_FLY_STREAM, self.epoch, k), with_data=False)
            for i in range(b):
                yield {"pilots": fr.pilots_ls[i], "h": fr.h[i], "snr_db": fr.snr_db[i],
                       "delay_spread_s": fr.delay_spread_s[i], "doppler_hz": fr.doppler_hz[i],
                       "noise_var": fr.noise_var[i]}
