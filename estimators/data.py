"""Where training batches come from: frames simulated on the fly, or any torch Dataset of samples.

A **sample** is a dict (a DataLoader batches it):

    ``pilots``          [P_f, P_t] complex64  LS estimate at the pilots ([P] for a scattered pilot layout)
    ``h``               [F, T] complex64      true channel
    ``snr_db``          float [dB]; ``delay_spread_s`` float [s]; ``doppler_hz`` float [Hz]

Both sources are indexed by the **global optimiser step**: ``source.batch(step)`` returns the
same frames for the same (seed, step) whatever came before, so a resumed run sees exactly the
batches a straight run would. Each DDP rank takes its contiguous slice of the global batch, so
the averaged gradients equal those of one process on the whole batch.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from wavefront.datasets import H5FrameDataset
from wavefront.datasets.shards import read_attrs
from wavefront.datasets.torch_datasets import OnTheFlyDataset, frames_to_samples
from wavefront.errors import ConfigError
from wavefront.estimators.checkpoint import check_grid_matches
from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import FrameGenerator
from wavefront.utils import derive_seed

SAMPLE_KEYS = ("pilots", "h", "snr_db", "delay_spread_s", "doppler_hz")
_VAL_STREAM = 0x5EED_0FA1  # separates validation seeds from training seeds


def shard(batch: dict, rank: int, world: int) -> dict:
    """Returns rank ``rank``'s contiguous slice of a global batch (equal sizes: the caller checks divisibility)."""
    if world == 1:
        return batch
    n = next(iter(batch.values())).shape[0] // world
    return {k: v[rank * n:(rank + 1) * n] for k, v in batch.items()}


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class OnTheFlySource:
    """Frames simulated per step for the trainer: :meth:`~wavefront.datasets.OnTheFlyDataset.batch` on ``device``.

    ``batch(step)`` is rank ``rank``'s slice of ``generate(global_batch, seed=derive_seed(seed, step))``,
    moved to ``device``. ``steps_per_epoch`` is None.
    """

    steps_per_epoch = None

    def __init__(self, config, batch_size: int, seed: int, device="cpu", rank: int = 0, world: int = 1):
        self.frames = OnTheFlyDataset(config, seed, batch_size=batch_size, device=device, rank=rank, world_size=world)
        self.device = device

    def batch(self, step: int) -> dict:
        return to_device(self.frames.batch(step), self.device)


class MimoUserSource:
    """MIMO frames simulated per step, one user's pilots and channels as the samples (``train`` on a MIMO config).

    ``batch(step)`` draws ``batch_size`` frames of MIMO ``config`` from ``derive_seed(seed, step)`` (the seeds
    of :class:`OnTheFlySource`), takes rank ``rank``'s contiguous slice of them and returns user ``user``'s
    samples (:func:`mimo_user_samples`): its R antennas as R pairs (``per_pair``) or as one sample.
    ``steps_per_epoch`` is None.
    """

    steps_per_epoch = None

    def __init__(self, config, user: int, batch_size: int, seed: int, per_pair: bool, device="cpu", rank: int = 0,
                 world: int = 1):
        from wavefront.sim.mimo import MimoFrameGenerator

        self.gen, self.user, self.batch_size, self.seed = MimoFrameGenerator(config, device=device), user, batch_size, seed
        self.per_pair, self.rank, self.world = per_pair, rank, world

    def batch(self, step: int) -> dict:
        fr = self.gen.generate(self.batch_size, seed=derive_seed(self.seed, step), with_data=False)
        n = self.batch_size // self.world
        return mimo_user_samples(fr, self.user, self.per_pair, slice(self.rank * n, (self.rank + 1) * n))


def mimo_user_samples(frames, user: int, per_pair: bool, rows: slice = slice(None)) -> dict:
    """Returns user ``user``'s samples of MIMO ``frames`` (frames ``rows``), for a per-pair or an antenna-axis model.

    ``per_pair``: ``pilots`` [B R, P_f', P_t] c64, ``h`` [B R, F, T] c64 and the conditions (``snr_db`` [dB],
    ``delay_spread_s`` [s], ``doppler_hz`` [Hz], ``noise_var``) repeated per antenna, [B R] f32 (antenna-major
    within a frame); else ``pilots`` [B, R, P_f', P_t], ``h`` [B, R, F, T] and the conditions [B].
    """
    p, h = frames.pilots_ls[rows, :, user], frames.h[rows, :, user]
    meta = {k: getattr(frames, k)[rows] for k in ("snr_db", "delay_spread_s", "doppler_hz", "noise_var")}
    if not per_pair:
        return {"pilots": p, "h": h, **meta}
    R = p.shape[1]
    return {"pilots": p.flatten(0, 1), "h": h.flatten(0, 1), **{k: v.repeat_interleave(R) for k, v in meta.items()}}


def mimo_validation(config, user: int, num_frames: int, seed: int, per_pair: bool, device="cpu",
                    chunk: int = 256) -> list[dict]:
    """Returns held-out MIMO frames of ``config`` as user ``user``'s sample batches (:func:`mimo_user_samples`),
    drawn from the seed stream of :func:`simulated_validation`, which training never uses."""
    from wavefront.sim.mimo import MimoFrameGenerator

    gen = MimoFrameGenerator(config, device=device)
    out = []
    for i, start in enumerate(range(0, num_frames, chunk)):
        fr = gen.generate(min(chunk, num_frames - start), seed=derive_seed(seed, _VAL_STREAM, i), with_data=False)
        out.append(mimo_user_samples(fr, user, per_pair))
    return out


def simulated_validation(config, num_frames: int, seed: int, device="cpu", chunk: int = 1024) -> list[dict]:
    """Returns held-out frames as a list of batch dicts, drawn from a seed stream that training never uses."""
    gen = FrameGenerator(config, device=device)
    out = []
    for i, start in enumerate(range(0, num_frames, chunk)):
        n = min(chunk, num_frames - start)
        out.append(frames_to_samples(gen.generate(n, seed=derive_seed(seed, _VAL_STREAM, i), with_data=False)))
    return out


class DatasetSource:
    """Batches from a map-style Dataset of samples: one seeded permutation per epoch, whole batches only.

    Step ``s`` is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch`` (permutation
    seeded by ``derive_seed(seed, epoch)``), so resuming at any step is exact.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, device="cpu", rank: int = 0, world: int = 1,
                 num_workers: int = 0):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.device, self.rank, self.world, self.num_workers = device, rank, world, num_workers
        self.steps_per_epoch = len(dataset) // batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError("batch_size", batch_size, f"is larger than the training set ({len(dataset)} samples)")
        self._iter, self._next_step = None, None

    def _indices(self, epoch: int, first_batch: int):
        g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        perm = torch.randperm(len(self.dataset), generator=g).tolist()
        n = self.batch_size // self.world
        for b in range(first_batch, self.steps_per_epoch):
            chunk = perm[b * self.batch_size:(b + 1) * self.batch_size]
            yield chunk[self.rank * n:(self.rank + 1) * n]

    def batch(self, step: int) -> dict:
        if self._next_step != step:  # first call, a resume, or a new epoch: restart the loader at this step
            epoch, first = divmod(step, self.steps_per_epoch)
            loader = DataLoader(self.dataset, batch_sampler=list(self._indices(epoch, first)),
                                num_workers=self.num_workers, pin_memory=str(self.device).startswith("cuda"))
            self._iter = iter(loader)
        b = next(self._iter)
        self._next_step = step + 1 if (step + 1) % self.steps_per_epoch else None
        missing = [k for k in SAMPLE_KEYS if k not in b]
        if missing:
            raise ConfigError("dataset", type(self.dataset).__name__, f"samples lack {missing}; expected keys {list(SAMPLE_KEYS)}")
        return to_device(b, self.device)


class UserAntennas(Dataset):
    """One user's R antennas of each frame of a MIMO map-style dataset as one sample: what a model with
    ``antenna_axis`` trains on (the file-backed twin of :func:`mimo_user_samples` with ``per_pair=False``).

    Sample ``n``: frame ``n``'s ``pilots`` [R, P_f', P_t] and ``h`` [R, F, T] (complex64) of user ``user`` and its
    conditions (0-d float32: ``snr_db`` in dB, ``delay_spread_s`` in s, ``doppler_hz`` in Hz, ``noise_var``, ...).
    """

    def __init__(self, frames: Dataset, user: int):
        self.frames, self.user = frames, int(user)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        s = self.frames[index]
        return {"pilots": s["pilots"][:, self.user], "h": s["h"][:, self.user],
                **{k: v for k, v in s.items() if k not in ("pilots", "h") and v.dim() == 0}}


def antenna_samples(dataset: Dataset | None) -> Dataset | None:
    """Returns one user's pairs of a MIMO dataset (:func:`open_frame_folder`) as :class:`UserAntennas`, that user's
    antennas together; any other dataset (SISO frames: one antenna) as it is."""
    from wavefront.datasets.torch_datasets import PairDataset

    if isinstance(dataset, PairDataset) and len(dataset.users) == 1:
        return UserAntennas(dataset.frames, dataset.users[0])
    return dataset


def dataset_validation(dataset: Dataset, batch_size: int = 1024) -> list[dict]:
    """Returns a validation Dataset as a list of batch dicts (kept on CPU)."""
    return list(DataLoader(dataset, batch_size=batch_size, shuffle=False))


def recorded_config(path: str):
    """Returns the SystemConfig recorded in the HDF5 shards of folder ``path`` (or of its first sub-folder with
    shards, as a ``generate-suite`` tree), or None when none is recorded or readable."""
    from pathlib import Path

    try:
        import json

    except ImportError:
        return None
    root = Path(path)
    for folder in [root] + sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        try:
            return SystemConfig.from_dict(json.loads(read_attrs(H5FrameDataset(folder).files[0])["config"]))
        except (ConfigError, AttributeError, IndexError, KeyError, TypeError, ValueError, OSError):
            continue
    return None


def pair_training_config(config: SystemConfig, user: int = 0) -> SystemConfig:
    """Returns the SISO config a per-(antenna, user) model of MIMO ``config`` trains on: user ``user``'s pilots (default 0).

    Every (antenna, user) pair of a frame is a SISO channel of ``config``'s law (receive correlation
    couples antennas, not a pair's own statistics), and under the Kronecker pattern user u's pilots
    are user 0's moved by u pilot subcarriers, which a ``frequency_shift_invariant`` model serves
    (:func:`wavefront.sim.mimo.user_configs`). A SISO ``config`` is returned as is; NR DM-RS pilots
    (LS despread over CDM pairs) are refused.
    """
    if not config.mimo.is_mimo:
        return config
    if config.mimo.pilots != "kronecker":
        raise ConfigError("mimo.pilots", config.mimo.pilots, "training per (antenna, user) pair takes the Kronecker "
                                                             "pattern only: NR DM-RS pilots are despread over CDM pairs")
    from wavefront.sim.mimo import user_configs

    users = user_configs(config)
    if not 0 <= user < len(users):
        raise ConfigError("user", user, f"the config has {len(users)} users (0..{len(users) - 1})")
    return users[user]


def open_frame_folder(path: str, config, user: int = 0) -> Dataset:
    """Returns the HDF5-shard dataset in folder ``path`` (``wavefront.datasets.H5FrameDataset``); a MIMO
    folder as user ``user``'s pairs (``wavefront.datasets.pairs``; ``config`` then :func:`pair_training_config`'s)."""
    try:
        from wavefront.datasets import H5FrameDataset
    except ImportError:
        raise ConfigError("train", str(path), "reading HDF5 shards needs wavefront.datasets.H5FrameDataset, which this "
                                              "installation lacks; use --on-the-fly CONFIG instead") from None
    ds = H5FrameDataset(path)
    stored = None
    try:  # shards record their SystemConfig as JSON in the root attributes
        import json


        stored = SystemConfig.from_dict(json.loads(read_attrs(ds.files[0])["config"]))
    except (ImportError, AttributeError, IndexError, KeyError, TypeError, ValueError):
        pass  # no recorded config: a grid mismatch still fails at the model's shape check
    if stored is not None:
        check_grid_matches(pair_training_config(stored, user if stored.mimo.is_mimo else 0), config, path,
                           what="dataset")
    if getattr(ds, "mimo", False):
        from wavefront.datasets import pairs

        return pairs(ds, users=[user])
    return ds
