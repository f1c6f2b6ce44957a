"""Torch datasets over OFDM frames: file-backed (HDF5 shards) and generated on the fly.

Both yield the same sample, a dict:

- ``pilots`` [P_f, P_t] complex64: LS estimate at the pilots.
- ``h`` [F, T] complex64: true channel.
- ``snr_db`` (dB, per RE), ``delay_spread_s`` (s), ``doppler_hz`` (Hz), ``noise_var``: float32 0-d tensors.
- ``cfo_hz`` (Hz), ``phase_noise_linewidth_hz`` (Hz), ``timing_offset_samples`` (samples): float32 0-d
  tensors, the frame's receiver impairments, only those the config sets (none by default). A tree
  of folders of which only some set one gives ``0.0`` (what off means) for the others' frames.

so a trainer can take either. The default collate stacks them into ``[B, ...]``.

**MIMO** (R receive antennas, U users; :mod:`wavefront.sim.mimo`): the same keys with the antenna
and user axes, and the received grid and bits:

- ``pilots`` [R, U, P_f', P_t] complex64: user u's LS pilots at antenna r (DM-RS: the despread LS);
- ``h`` [R, U, F, T] complex64; ``y`` [R, F, T] complex64: ``sum_u h_u x_u + n``;
- ``bits`` [U, K] float32 (0/1): each user's uncoded information bits;
- ``dmrs_rx`` [R, U, N_f, N_t] complex64 (NR DM-RS only): the raw group observations;
- the conditions as in SISO (shared by every antenna and user).

:func:`pairs` views a MIMO dataset as R U per-(antenna, user) SISO samples per frame: ``pilots``
[P_f', P_t] (user u's pilots at antenna r), ``h`` [F, T] (that pair's channel), the conditions,
and ``antenna``, ``user`` (int64 0-d), what per-pair learned models train on.
"""
from __future__ import annotations

import bisect
import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from wavefront.datasets.folders import check_listed, find_shards
from wavefront.datasets.shards import H5_ERRORS, OPTIONAL_META, ShardError
from wavefront.errors import ConfigError
from wavefront.sim.frames import FrameGenerator
from wavefront.utils import derive_seed

SAMPLE_KEYS = ("pilots", "h", "snr_db", "delay_spread_s", "doppler_hz", "noise_var")
PAIR_KEYS = SAMPLE_KEYS + ("antenna", "user")  # a sample of the pairs view (:func:`pairs`)
_META = ("snr_db", "delay_spread_s", "doppler_hz", "noise_var")
# Keeps on-the-fly frames apart from the shards of `wavefront generate` with the same seed,
# whose batches use derive_seed(seed, shard, batch).
_ON_THE_FLY_STREAM = 0x0F1F


class _FrameReader:
    """Reads frame ``i`` of a [N, ...] HDF5 dataset as a tensor of shape ``shape[1:]``, fast.

    Unfiltered one-frame chunks (format 1 shards) are read as raw bytes. Filtered ones
    (Fletcher-32 in format 2) go through HDF5's filter pipeline, which checks each chunk;
    the low-level read with reused dataspaces costs half of ``ds[i]`` (about 14 us a frame).
    """

    def __init__(self, ds: h5py.Dataset):
        self.ds, self.frame_shape, self.dtype = ds, ds.shape[1:], ds.dtype
        self.direct = (ds.compression is None and not ds.fletcher32 and not ds.shuffle and ds.scaleoffset is None
                       and ds.chunks == (1,) + ds.shape[1:] and ds.dtype == np.dtype("<c8"))
        self.zeros = (0,) * len(self.frame_shape)
        self.file_space = ds.id.get_space()
        self.mem_space = h5py.h5s.create_simple(self.frame_shape)

    def part(self, index: tuple[int, ...]) -> torch.Tensor:
        """Returns ``ds[index]`` (a frame and leading sub-indices, e.g. (frame, antenna, user)) as a tensor."""
        shape = self.frame_shape[len(index) - 1:]
        out = np.empty(shape, dtype=self.dtype)
        self.file_space.select_hyperslab(tuple(index) + (0,) * len(shape), (1,) * len(index) + shape)
        self.ds.id.read(h5py.h5s.create_simple(shape), self.file_space, out)
        return torch.from_numpy(out)

    def __call__(self, i: int) -> torch.Tensor:
        if self.direct:
            _, raw = self.ds.id.read_direct_chunk((i,) + self.zeros)
            return torch.from_numpy(np.frombuffer(raw, dtype=np.complex64).reshape(self.frame_shape).copy())
        out = np.empty(self.frame_shape, dtype=self.dtype)
        self.file_space.select_hyperslab((i,) + self.zeros, (1,) + self.frame_shape)
        self.ds.id.read(self.mem_space, self.file_space, out)
        return torch.from_numpy(out)


class H5FrameDataset(Dataset):
    """Map-style dataset over HDF5 shards, read lazily (see the module docstring for samples).

    ``path_or_dir``: one shard, a dataset folder, or a tree of them (e.g. a whole suite). The
    shards and their frame counts come from each folder's ``manifest.json`` (a shard on disk
    that the manifest does not list is not read); each listed shard's attributes are checked
    against its entry up front. Every frame read is checked against its chunk's Fletcher-32
    checksum by HDF5 (format version 2 shards), so corrupt data raises
    :class:`~wavefront.datasets.ShardError` naming the file instead of being served.
    Each worker process opens its own file handles on first use, so ``num_workers > 0`` is safe.
    """

    def __init__(self, path_or_dir: str | Path):
        shards = find_shards(path_or_dir)
        self.files = [s.path for s in shards]
        self.lengths, impaired = [], set()
        axes = set()
        for s in shards:
            try:
                a = check_listed(s)
            except ShardError as exc:
                raise ShardError(exc.path, f"{exc.reason}; regenerate it with the generating command plus --repair") from None
            self.lengths.append(s.frames)
            axes.add(_antennas_users(a))
            impaired |= _impairments_set(a)
        if len(axes) > 1:
            raise ConfigError("path", str(path_or_dir), f"mixes frames of {sorted(axes)} (antennas, users); "
                                                        "read one system at a time")
        # R antennas and U users (1, 1: SISO samples, MIMO ones otherwise; see the module docstring)
        self.num_rx_antennas, self.num_users = axes.pop() if axes else (1, 1)
        self.mimo = (self.num_rx_antennas, self.num_users) != (1, 1)
        # the impairments any shard records: every sample carries these keys (collate needs one key set)
        self.impairments = tuple(k for k in OPTIONAL_META if k in impaired)
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
            entry = {"file": f, "h": _FrameReader(f["h_true"]), "pilots": _FrameReader(f["pilots_ls"]),
                     # [N] float32 each: small, so read once instead of once per sample
                     **{m: torch.from_numpy(f[m][()].astype(np.float32)) for m in _META + self.impairments if m in f},
                     **{key: _FrameReader(f[name]) for key, name in _MIMO_ARRAYS.items() if self.mimo and name in f}}
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

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k, i = self.locate(int(index))
        try:
            e = self._file(k)
            sample = {"pilots": e["pilots"](i), "h": e["h"](i)}
            extra = {key: e[key](i) for key in _MIMO_ARRAYS if key in e}  # MIMO: y, bits (, dmrs_rx)
        except H5_ERRORS as exc:
            raise self._corrupt(k, i, exc) from None
        sample.update(self._meta(e, i))
        if "bits" in extra:
            extra["bits"] = extra["bits"].float()  # stored uint8, served as Frames.bits (float32 0/1)
        sample.update(extra)
        return sample

    def pair_sample(self, index: int, antenna: int, user: int) -> dict[str, torch.Tensor]:
        """Returns frame ``index``'s (antenna, user) pair as a SISO sample (:func:`pairs`), reading only that pair."""
        k, i = self.locate(int(index))
        try:
            e = self._file(k)
            sample = {"pilots": e["pilots"].part((i, antenna, user)), "h": e["h"].part((i, antenna, user))}
        except H5_ERRORS as exc:
            raise self._corrupt(k, i, exc) from None
        sample.update(self._meta(e, i))
        return sample

    def _meta(self, e: dict, i: int) -> dict[str, torch.Tensor]:
        """Returns frame ``i``'s conditions and impairments (0-d float32 each) from shard entry ``e``."""
        out = {m: e[m][i].clone() for m in _META}
        for m in self.impairments:  # 0.0 for a shard whose config leaves this impairment off
            out[m] = e[m][i].clone() if m in e else torch.zeros((), dtype=torch.float32)
        return out

    def _corrupt(self, k: int, i: int, exc: BaseException) -> ShardError:
        msg = " ".join(f"{exc.__class__.__name__}: {exc}".split())[:200]
        return ShardError(self.files[k], f"cannot read frame {i} ({msg}); it is corrupt: "
                                         "regenerate it with the generating command plus --repair")

    def close(self) -> None:
        for e in self._handles.values():
            e["file"].close()
        self._handles = {}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _impairments_set(attrs: dict) -> set[str]:
    """Returns the optional per-frame fields a shard's recorded config sets (its per-frame datasets):
    the impairments, and ``rx_correlation`` where ``mimo.rx_correlation`` is a range."""
    try:
        config = json.loads(attrs["config"])
        channel, mimo = config.get("channel", {}), config.get("mimo") or {}
    except (KeyError, TypeError, ValueError, AttributeError):
        return set()
    ranged = {"rx_correlation"} if isinstance(mimo.get("rx_correlation"), list) else set()
    return {k for k in OPTIONAL_META if channel.get(k) is not None} | ranged


def frames_to_samples(frames) -> dict[str, torch.Tensor]:
    """Returns a batch of samples from simulator ``Frames``: ``pilots`` [B, P_f, P_t] (or [B, P]) c64,
    ``h`` [B, F, T] c64, ``snr_db`` [dB], ``delay_spread_s`` [s], ``doppler_hz`` [Hz], ``noise_var`` ([B] f32 each),
    and the impairments the frames carry (``cfo_hz`` [Hz], ``phase_noise_linewidth_hz`` [Hz],
    ``timing_offset_samples`` [samples], [B] f32 each) when their config sets them.

    MIMO frames (``h`` [B, R, U, F, T]) add ``y`` [B, R, F, T] c64 and ``bits`` [B, U, K] f32 when drawn with
    data, and ``dmrs_rx`` [B, R, U, N_f, N_t] c64 with NR DM-RS pilots (the module docstring)."""
    out = {"pilots": frames.pilots_ls, "h": frames.h, "snr_db": frames.snr_db,
           "delay_spread_s": frames.delay_spread_s, "doppler_hz": frames.doppler_hz, "noise_var": frames.noise_var,
           **{k: getattr(frames, k) for k in OPTIONAL_META if getattr(frames, k, None) is not None}}
    if frames.h.dim() == 5:
        extra = {"y": frames.y, "bits": frames.bits, "dmrs_rx": frames.pilots_dmrs}
        out.update({k: v for k, v in extra.items() if v is not None})
    return out


def _antennas_users(attrs: dict) -> tuple[int, int]:
    """Returns (R, U) of a shard from its ``config`` attribute (a SISO config's JSON has no ``mimo`` section)."""
    try:
        m = json.loads(attrs["config"]).get("mimo") or {}
    except (KeyError, TypeError, ValueError, AttributeError):
        m = {}
    return int(m.get("num_rx_antennas", 1)), int(m.get("num_users", 1))


# sample key -> shard dataset, MIMO shards only
_MIMO_ARRAYS = {"y": "y", "bits": "bits", "dmrs_rx": "pilots_dmrs"}


def _system_config(config):
    """Returns ``config`` as a SystemConfig: one already, a YAML file's path or a preset's name (as ``--on-the-fly``),
    or a dict of ``ofdm:``, ``channel:`` and ``mimo:`` settings."""
    from wavefront.sim.config import PRESETS, SystemConfig, preset

    if isinstance(config, SystemConfig):
        return config
    if isinstance(config, dict):
        return SystemConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        if str(config) in PRESETS or (not p.suffix and not p.exists()):
            return preset(str(config))
        return SystemConfig.from_yaml(str(config))
    raise ConfigError("config", type(config).__name__, "must be a SystemConfig, a YAML file's path, a preset name or a dict")


class OnTheFlyDataset(IterableDataset):
    """The one source of frames drawn from a config on demand (same samples as H5FrameDataset).

    Two views of it:

    - **iteration** (a DataLoader's dataset): frames in generator batches, split across
      workers and ranks as below, epoch by epoch;
    - **step-indexed** (:meth:`batch`, the training loop's source): ``batch(step)`` is the
      global batch of optimiser step ``step``, drawn from ``derive_seed(seed, step)`` whatever
      came before, so a resumed run sees exactly the batches a straight run would; each rank
      takes its contiguous slice, so averaged DDP gradients equal one process's.

    Frames come in generator batches of ``batch_size``; batch ``k`` of epoch ``e`` is drawn
    from ``derive_seed(seed, 0x0F1F, e, k)`` (a stream apart from ``wavefront generate``'s)
    and belongs to exactly one consumer: consumer ``c = rank * num_workers + worker`` of ``world_size * num_workers`` takes the batches
    ``k = c, c + C, ...``. So workers (and DDP ranks) never repeat each other's frames, and the
    same (seed, epoch, batch_size, device) gives the same frames whatever the worker count,
    up to order.

    ``config``: a SystemConfig, a YAML file's path or a preset's name (as ``--on-the-fly`` takes), or a dict.
    ``frames_per_epoch``: frames per epoch over all consumers (None: endless).
    Call :meth:`set_epoch` between epochs for fresh frames.
    """

    def __init__(self, config, seed: int, frames_per_epoch: int | None = None, batch_size: int = 256,
                 device: str = "cpu", rank: int = 0, world_size: int = 1):
        config = _system_config(config)
        if frames_per_epoch is not None and (not isinstance(frames_per_epoch, int) or frames_per_epoch < 1):
            raise ConfigError("frames_per_epoch", frames_per_epoch, "must be a positive integer or None")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError("batch_size", batch_size, "must be a positive integer")
        if world_size < 1 or not (0 <= rank < world_size):
            raise ConfigError("rank", rank, f"must satisfy 0 <= rank < world_size={world_size}")
        self.config, self.seed, self.frames_per_epoch = config, int(seed), frames_per_epoch
        self.batch_size, self.device, self.rank, self.world_size = batch_size, device, rank, world_size
        # In shared memory, so DataLoader workers that outlive an epoch (persistent_workers=True)
        # see set_epoch too: they keep their own copy of everything else.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._gen = None

    @property
    def epoch(self) -> int:
        """The epoch whose frames the next iterator yields."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Selects the frames of ``epoch`` (call before creating the epoch's iterator), in every worker."""
        self._epoch.fill_(int(epoch))

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

    @property
    def num_rx_antennas(self) -> int:
        return self.config.mimo.num_rx_antennas

    @property
    def num_users(self) -> int:
        return self.config.mimo.num_users

    def _generator(self):
        if self._gen is None:
            if self.config.mimo.is_mimo:
                from wavefront.sim.mimo import MimoFrameGenerator

                self._gen = MimoFrameGenerator(self.config, device=self.device)
            else:
                self._gen = FrameGenerator(self.config, device=self.device)
        return self._gen

    def __iter__(self):
        epoch = self.epoch  # read once: the whole pass is one epoch
        for k, b in self._batches():
            samples = frames_to_samples(self._generator().generate(
                b, derive_seed(self.seed, _ON_THE_FLY_STREAM, epoch, k), with_data=self.config.mimo.is_mimo))
            for i in range(b):
                yield {key: v[i] for key, v in samples.items()}

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """Returns this rank's slice of the global batch of optimiser step ``step`` ([batch_size / world_size, ...]).

        ``batch_size`` is the global batch; it must split evenly over the ranks (the trainer checks).
        """
        samples = frames_to_samples(self._generator().generate(self.batch_size, seed=derive_seed(self.seed, step),
                                                               with_data=self.config.mimo.is_mimo))
        if self.world_size == 1:
            return samples
        n = self.batch_size // self.world_size
        return {k: v[self.rank * n:(self.rank + 1) * n] for k, v in samples.items()}


# ---- per-(antenna, user) pairs of MIMO frames ----------------------------------------------
def _pair_of(sample: dict[str, torch.Tensor], r: int, u: int) -> dict[str, torch.Tensor]:
    """Returns the SISO sample of pair (r, u) of a MIMO ``sample`` (module docstring)."""
    out = {"pilots": sample["pilots"][r, u], "h": sample["h"][r, u]}
    out.update({m: sample[m] for m in _META + OPTIONAL_META if m in sample})
    out.update(antenna=torch.tensor(r), user=torch.tensor(u))
    return out


def _axes(frames, users) -> tuple[int, tuple[int, ...]]:
    """Returns (R, the users to serve) of a MIMO dataset; refuses a SISO one and bad user indices."""
    R, U = int(getattr(frames, "num_rx_antennas", 1)), int(getattr(frames, "num_users", 1))
    if (R, U) == (1, 1):
        raise ConfigError("frames", type(frames).__name__, "is single-antenna, single-user: its samples are the "
                                                           "pairs already")
    if isinstance(users, (int, np.integer)) and not isinstance(users, bool):
        users = (users,)  # one user's pairs: pairs(ds, users=1) as pairs(ds, users=[1])
    users = tuple(range(U)) if users is None else tuple(int(u) for u in users)
    if not users or any(not 0 <= u < U for u in users) or len(set(users)) != len(users):
        raise ConfigError("users", list(users), f"must be distinct user indices in 0..{U - 1}")
    return R, users


class PairDataset(Dataset):
    """A MIMO map-style dataset (e.g. :class:`H5FrameDataset`) as per-(antenna, user) SISO samples.

    Sample ``n`` is pair ``(r, users[j])`` of frame ``n // (R J)`` with ``r, j = divmod(n % (R J), J)``
    (``J = len(users)``, all users by default): ``pilots`` [P_f', P_t] c64, ``h`` [F, T] c64, the frame's
    conditions (f32 0-d), ``antenna``, ``user`` (int64 0-d). An :class:`H5FrameDataset` reads only the pair.
    """

    def __init__(self, frames: Dataset, users=None):
        self.frames = frames
        self.R, self.users = _axes(frames, users)

    def __len__(self) -> int:
        return len(self.frames) * self.R * len(self.users)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"pair {index} out of range for {len(self)} pairs")
        per = self.R * len(self.users)
        frame, rest = divmod(index, per)
        r, j = divmod(rest, len(self.users))
        u = self.users[j]
        read = getattr(self.frames, "pair_sample", None)
        if read is None:
            return _pair_of(self.frames[frame], r, u)
        out = read(frame, r, u)
        out.update(antenna=torch.tensor(r), user=torch.tensor(u))
        return out


class PairIterable(IterableDataset):
    """An iterable MIMO dataset (e.g. :class:`OnTheFlyDataset`) as per-(antenna, user) SISO samples:
    every frame's pairs in antenna-major order (samples as :class:`PairDataset`)."""

    def __init__(self, frames: IterableDataset, users=None):
        self.frames = frames
        self.R, self.users = _axes(frames, users)

    def __len__(self) -> int:
        return len(self.frames) * self.R * len(self.users)

    def set_epoch(self, epoch: int) -> None:
        self.frames.set_epoch(epoch)

    def __iter__(self):
        for sample in self.frames:
            for r in range(self.R):
                for u in self.users:
                    yield _pair_of(sample, r, u)


def pairs(frames: Dataset, users=None) -> Dataset:
    """Returns the per-(antenna, user) SISO view of a MIMO dataset: :class:`PairDataset` for a map-style one,
    :class:`PairIterable` for an iterable one. ``users``: only these users' pairs (a list, or one int; default all).

    Refuses a SISO dataset (its samples are pairs already).
    """
    return PairIterable(frames, users) if isinstance(frames, IterableDataset) else PairDataset(frames, users)
