"""Frame sources for the experiment engine that read what ``wavefront generate`` (or ``import-mat``) wrote.

:func:`folder_points` turns a folder of HDF5 shards, or a tree of them such as a
``generate-suite`` folder, into :class:`wavefront.sim.experiment.Point` objects, one per
distinct (SNR, delay spread, Doppler), for :func:`wavefront.sim.experiment.run_experiment`;
a folder whose config draws its conditions per frame (a prior) is one point.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import torch
from torch.utils.data import DataLoader

from wavefront.datasets.folders import read_manifest
from wavefront.datasets.shards import read_attrs
from wavefront.datasets.torch_datasets import H5FrameDataset
from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.experiment import COND_FIELDS, Point, drawn_ranges
from wavefront.sim.frames import Frames
from wavefront.sim.impairments import IMPAIRMENT_FIELDS


def _stored_config(ds: H5FrameDataset) -> SystemConfig | None:
    try:
        return SystemConfig.from_dict(json.loads(read_attrs(ds.files[0])["config"]))
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def realization_label(folder: Path, stored: SystemConfig | None) -> str:
    """Returns how a folder's fading realizations were drawn: its config's, or what ``import-mat``'s audit found."""
    try:
        found = (read_manifest(folder) or {}).get("realization_audit")
    except ConfigError:
        found = None
    if isinstance(found, dict) and "realizations" in found:
        return (f"imported ({found['realizations']} distinct realization(s) in {found.get('frames')} frames, "
                "by import-mat's audit)")
    return stored.realization_text if stored is not None else "unknown"


def _check_grid(ds: H5FrameDataset, config: SystemConfig, folder: Path) -> None:
    """Raises ConfigError when the folder's grid or pilots differ from ``config``'s."""
    stored = _stored_config(ds)
    if stored is None:
        return  # no recorded config: a shape mismatch still fails at the estimator
    if stored.mimo.is_mimo and not config.mimo.is_mimo:
        raise ConfigError("data", str(folder), f"holds MIMO frames ({stored.mimo.num_rx_antennas} antennas x "
                                               f"{stored.mimo.num_users} users); evaluating a dataset folder is "
                                               "single-antenna only so far (sweep runs MIMO on generated frames)")
    a, b = stored.ofdm, config.ofdm
    if tuple(a.grid_shape) != tuple(b.grid_shape):
        raise ConfigError("data", str(folder), f"its frames have grid_shape {tuple(a.grid_shape)}, the estimators "
                                               f"were built for {tuple(b.grid_shape)}; pass the matching --config/--preset")
    if a.pilot_layout.positions != b.pilot_layout.positions:
        raise ConfigError("data", str(folder), f"its frames have pilots {a.pilot_layout.describe()}, the estimators "
                                               f"were built for {b.pilot_layout.describe()}; pass the matching "
                                               "--config/--preset/--pilots")


def refuse_frameless(path: str | Path, field: str) -> None:
    """Raises ConfigError when a dataset folder at or under ``path`` lists no frames (its manifest lists no shard).

    ``generate`` rebuilds the manifest's shard list when it finishes, so a killed run leaves a folder whose
    manifest lists none yet: read as it is, evaluate died on a KeyError, audit on a TypeError, train called
    its batch "larger than the training set (0 samples)" and export-mat wrote 0 files with exit 0.
    ``field``: the option that named the folder (``suite``, ``train``, ``data`` ...).
    """
    from wavefront.datasets.folders import MANIFEST_FORMAT, dataset_folders, manifest_entries

    if not Path(path).is_dir():
        return  # the reader names a missing folder or a file in its own words
    try:
        folders = dataset_folders(path, field)
    except ConfigError:
        return  # no dataset folder at all: the reader names it, after its own checks
    for folder in folders:
        try:
            man = read_manifest(folder, "data")
        except ConfigError:
            return  # an unreadable manifest: the reader names it
        if not isinstance(man, dict) or man.get("format") != MANIFEST_FORMAT:
            return  # not a manifest this check can read: the reader names it
        if not manifest_entries(man):
            done = "generation is not complete" if not man.get("complete", False) else "it is complete"
            raise ConfigError(field, str(path), f"{folder} lists no shards in its manifest ({done}: "
                                                f"{man.get('num_shards', '?')} expected); rerun the command that "
                                                "generated it to finish it")


def folder_points(path: str | Path, config: SystemConfig, batch_size: int = 4096) -> list[Point]:
    """Returns one point per distinct (SNR, delay spread, Doppler) in a folder (or a tree) of HDF5 shards.

    A folder whose stored config draws a condition per frame (a range, as over a prior; not an
    ``import-mat`` folder, whose ranges span its files' fixed values) is one point instead: every
    frame keeps its own conditions, the point's scalars are their means and its config holds the
    ranges (:func:`wavefront.sim.experiment.drawn_ranges`).

    Sub-folders named as the AdaFortiTran suites (``SNR_test_set`` ...) become the sweeps
    ``snr``, ``delay_spread``, ``doppler``; the varying condition of a folder is its axis.
    A folder whose shards record receiver impairments gives its points its impairment settings, and
    its frames carry each one's drawn values in ``meta`` (as simulated frames do).
    """
    root = Path(path)
    if not root.is_dir():
        raise ConfigError("data", str(path), "is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir()) or [root]
    named = {"SNR_test_set": "snr", "DS_test_set": "delay_spread", "MDS_test_set": "doppler"}
    axis_sweep = {"snr_db": "snr", "delay_spread_s": "delay_spread", "doppler_hz": "doppler"}
    points = []
    for folder in folders:
        ds = H5FrameDataset(folder)
        _check_grid(ds, config, folder)
        cat = {}
        for b in DataLoader(ds, batch_size=batch_size, shuffle=False):
            for k, v in b.items():
                cat.setdefault(k, []).append(v)
        cat = {k: torch.cat(v) for k, v in cat.items()}
        keys = torch.stack([cat["snr_db"].double(), cat["delay_spread_s"].double() * 1e9, cat["doppler_hz"].double()], 1)
        keys = torch.round(keys * 1000) / 1000
        profile = _folder_profile(ds)
        stored = _stored_config(ds)
        # a folder generated over a prior (snr_db: [0, 25] ...) holds frames whose conditions all differ: it is
        # one point, its MSE the Bayes risk over that prior, not one row per frame
        drawn = {} if _imported(folder) else drawn_ranges(stored)
        if drawn:  # every frame keeps its own conditions; the point's scalars are their means
            uniq, inv = keys.mean(0, keepdim=True), torch.zeros(len(keys), dtype=torch.long)
            axis = ""
        else:
            uniq, inv = torch.unique(keys, dim=0, return_inverse=True)
            varying = [a for a, col in zip(COND_FIELDS, uniq.T) if col.unique().numel() > 1]
            axis = varying[0] if len(varying) == 1 else ""
        sweep = named.get(folder.name, axis_sweep.get(axis, folder.name))
        realization = realization_label(folder, stored)
        impaired = ({k: getattr(stored.channel, k) for k in IMPAIRMENT_FIELDS}
                    if stored is not None and stored.channel.impaired else {})
        for u in range(uniq.shape[0]):
            sel = inv == u
            snr, ds_ns, fd = (float(v) for v in uniq[u])
            sub = {k: v[sel] for k, v in cat.items()}
            conds = {"snr_db": snr, "delay_spread_s": ds_ns * 1e-9, "doppler_hz": fd, **drawn}
            cfg = config.updated(channel={**conds, **({"profile": profile} if profile else {}), **impaired})

            def batches(sub=sub, profile=profile or cfg.channel.profile):
                n = sub["h"].shape[0]
                for s in range(0, n, batch_size):
                    sl = {k: v[s:s + batch_size] for k, v in sub.items()}
                    yield Frames(h=sl["h"], y=None, pilots_rx=None, pilot_symbols=None, pilots_ls=sl["pilots"], bits=None,
                                 codewords=None, snr_db=sl["snr_db"], delay_spread_s=sl["delay_spread_s"],
                                 doppler_hz=sl["doppler_hz"], noise_var=sl["noise_var"], profile=profile, seed=-1,
                                 **{k: sl[k] for k in IMPAIRMENT_FIELDS if k in sl})

            points.append(Point(sweep, axis, snr, ds_ns * 1e-9, fd, cfg, batches, available=int(sel.sum()),
                                realization=realization))
    order = {"snr": 0, "delay_spread": 1, "doppler": 2}
    return sorted(points, key=lambda p: (order.get(p.sweep, 9), p.sweep, p.axis_value))


def _imported(folder: Path) -> bool:
    """Whether ``import-mat`` wrote the folder: its config's ranges then span the files' fixed values (a test
    set's SNRs in one folder), not a prior drawn per frame, and it keeps one point per condition."""
    try:
        return "imported_from" in (read_manifest(folder) or {})
    except ConfigError:
        return False


def _folder_profile(ds) -> str | None:
    try:
        with h5py.File(ds.files[0], "r") as f:
            return f["profile"][0].decode()
    except (OSError, KeyError, IndexError):
        return None
