"""AdaFortiTran ``.mat`` interop: one file per frame, in the reference code's layout.

File name: ``{n}_SNR-{snr}_DS-{ds_ns}_DOP-{doppler_hz}_N-{pilot_spacing}_TDL-{profile}.mat``
(``n`` counts frames from 1 within a dataset folder). Variable ``H`` [F, T, 2] complex64:
``H[:,:,0]`` the true channel, ``H[:,:,1]`` the LS estimate at the pilots and zeros elsewhere.
The reference reader takes the pilots as the non-zero entries of ``H[:,:,1]`` in row-major
(subcarrier-major) order, reshaped to [P_f, P_t].

Rules, because the reference name pattern holds only non-negative integers:

- SNR (dB), delay spread (ns) and Doppler (Hz) within 1e-3 of an integer are written as that
  integer. Other values are refused, unless ``round_values`` (CLI ``--round``): then they
  are rounded to the nearest integer, halves up, and the imported metadata is the rounded value.
- A negative value is always refused (the pattern cannot name it).
- An LS pilot exactly 0 is refused: the reference reader would lose that pilot.
- SNR in the name is wavefront's per-resource-element SNR.
- Only Kronecker pilot layouts (``P_f x P_t``) whose subcarriers are equally spaced can be
  exported: the reader reshapes the pilots to ``[P_f, P_t]`` and the name's ``N-`` is that
  spacing. A scattered layout (:mod:`wavefront.sim.pilots`) is refused before anything is written.
- The format holds one antenna and one user: a MIMO dataset (antenna and user axes) is refused
  by ``export-mat``, and a MIMO ``--config``/``--preset`` by ``import-mat``, before anything is written.
- A dataset with receiver impairments (``channel.cfo_hz``, ``phase_noise_linewidth_hz``,
  ``timing_offset_samples``) is refused before anything is written, naming the field: the
  reference format has no place for each frame's drawn value, and frames exported without it
  would read back as unimpaired ones.
"""
from __future__ import annotations

import io
import json
import math
import re
import warnings
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import torch

from wavefront.datasets.folders import (
    MANIFEST, MANIFEST_FORMAT, dataset_folders, manifest_shards, read_manifest, verify_listed,
)
from wavefront.datasets.generate import shard_counts, write_json_atomic
from wavefront.datasets.shards import (
    FORMAT_VERSION, H5_ERRORS, PROFILE_DTYPE, DiskFullError, ShardArrays, ShardError, read_shard, shard_name, versions,
    write_file_atomic, write_shard,
)
from wavefront.errors import ConfigError
from wavefront.utils import check_output_folder
from wavefront.sim.config import SystemConfig, profile_label
from wavefront.sim.impairments import IMPAIRMENT_FIELDS
from wavefront.sim.pilots import is_arithmetic

NAME_RE = re.compile(r"(\d+)_SNR-(\d+)_DS-(\d+)_DOP-(\d+)_N-(\d+)_([A-Z\-]+)\.mat")
_INT_TOL = 1e-3


def mat_label(value: float, field: str, where: str, round_values: bool) -> int:
    """Returns the integer that names ``value`` in a ``.mat`` file name (rules in the module docstring)."""
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ConfigError(field, v, f"{where}: .mat names hold only non-negative integers; "
                                    "a negative value cannot be exported")
    r = math.floor(v + 0.5)
    if abs(v - r) > _INT_TOL and not round_values:
        raise ConfigError(field, v, f"{where}: .mat names hold only non-negative integers; "
                                    "pass --round to round to the nearest integer (halves up)")
    return int(r)


def mat_name(n: int, snr: int, ds_ns: int, doppler: int, spacing: int, profile: str) -> str:
    """Returns the reference file name of frame ``n`` (1-based)."""
    return f"{n}_SNR-{snr}_DS-{ds_ns}_DOP-{doppler}_N-{spacing}_{profile_label(profile)}.mat"


def frame_to_mat(h: np.ndarray, pilots_ls: np.ndarray, pf: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """Returns ``H`` [F, T, 2] complex64 from ``h`` [F, T] and ``pilots_ls`` [P_f, P_t]."""
    H = np.zeros(h.shape + (2,), dtype=np.complex64)
    H[:, :, 0] = h
    H[pf[:, None], pt[None, :], 1] = pilots_ls
    return H


def _write_mat(path: Path, H: np.ndarray) -> int:
    """Writes ``H`` as ``path`` atomically (a full disk raises DiskFullError); returns the bytes written."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"H": H})
    write_file_atomic(path, buf.getbuffer())
    return buf.getbuffer().nbytes


def export_mat(data: str | Path, out: str | Path, round_values: bool = False, progress=None) -> int:
    """Writes every frame under ``data`` (a dataset folder or a tree, e.g. a suite) as ``.mat`` files.

    The shards are those the manifests list; each is read in full and checked (Fletcher-32 and
    content checksum) before any of its frames is written, so a corrupt shard is named, never
    exported. The folder structure is mirrored under ``out``. Returns the number of files written.
    Raises :class:`~wavefront.datasets.shards.DiskFullError` (naming ``out`` and the space
    still needed) when the disk fills; the files already written stay complete.
    """
    data, out = Path(data), check_output_folder("out", out)
    folders = [(d, manifest_shards(d)) for d in dataset_folders(data, "data")]
    spacings = {d: _mat_spacing(d) for d, _ in folders}  # every folder checked before any file is written
    # and every frame's name: a value no name can hold stops the export before its first file
    labels = {s.path: _labels(s.path, round_values) for _, shards in folders for s in shards}
    left = sum(s.frames for _, shards in folders for s in shards)
    total = 0
    for d, shards in folders:
        spacing = spacings[d]
        dest = out / d.relative_to(data)
        dest.mkdir(parents=True, exist_ok=True)
        n = 0
        for s in shards:
            try:
                verify_listed(s)
            except ShardError as exc:
                raise ShardError(s.path, f"{exc.reason}; nothing of it was exported: regenerate it with the "
                                         "generating command plus --repair") from None
            a = read_shard(s.path)
            pf, pt = a.pilot_subcarriers, a.pilot_symbol_indices
            for i in range(len(a)):
                n += 1
                where = f"frame {i} of {s.path}"
                if np.any(a.pilots_ls[i] == 0):
                    raise ConfigError("pilots_ls", 0, f"{where}: an LS pilot is exactly 0; the reference reader finds "
                                                      "pilots as the non-zero entries of H[:,:,1] and would lose it")
                name = mat_name(n, *labels[s.path][i], spacing, a.profile[i].decode())
                try:
                    _write_mat(dest / name, frame_to_mat(a.h_true[i], a.pilots_ls[i], pf, pt))
                except DiskFullError as exc:
                    raise DiskFullError(out, name, exc.need_bytes, exc.free_bytes, exc.need_bytes * left) from None
                total += 1
                left -= 1
                if progress is not None:
                    progress.update(1)
    return total


def _labels(path: Path, round_values: bool) -> list[tuple[int, int, int]]:
    """Returns each frame's ``.mat`` name integers (SNR dB, delay spread ns, Doppler Hz) of shard ``path``.

    Reads only the [N] condition arrays; :func:`mat_label` gives the rule, and raises ConfigError naming the frame
    where a value no name can hold."""
    try:
        with h5py.File(path, "r") as f:
            cols = {k: f[k][()] for k in ("snr_db", "delay_spread_s", "doppler_hz")}
    except H5_ERRORS as exc:
        raise ShardError(path, f"cannot read its conditions ({exc.__class__.__name__}: {exc})") from None
    out = []
    for i in range(len(cols["snr_db"])):
        where = f"frame {i} of {path}"
        out.append((mat_label(cols["snr_db"][i], "snr_db", where, round_values),
                    mat_label(float(cols["delay_spread_s"][i]) * 1e9, "delay_spread_ns", where, round_values),
                    mat_label(cols["doppler_hz"][i], "doppler_hz", where, round_values)))
    return out


def _mat_spacing(folder: Path) -> int:
    """Returns the ``N-`` spacing of a dataset folder's pilots, or raises ConfigError if ``.mat`` cannot hold its layout."""
    man = read_manifest(folder)
    channel = (man.get("config") or {}).get("channel") or {}
    for k in IMPAIRMENT_FIELDS:
        if channel.get(k) is not None:
            raise ConfigError(f"channel.{k}", channel[k], f"{folder} holds impaired frames: the AdaFortiTran .mat "
                                                          f"format has no place for each frame's {k}, so .mat export "
                                                          "refuses impaired datasets")
    try:
        cfg = SystemConfig.from_dict(man["config"])
    except (KeyError, TypeError, ConfigError):
        return int(man["config"]["ofdm"]["pilot_subcarrier_spacing"])
    if cfg.mimo.is_mimo:
        raise ConfigError("data", str(folder), f"holds MIMO frames ({cfg.mimo.num_rx_antennas} antennas x "
                                               f"{cfg.mimo.num_users} users): .mat export (the AdaFortiTran reference "
                                               "format, one [F, T] channel per file) is SISO only")
    layout = cfg.ofdm.pilot_layout
    if not layout.is_kronecker:
        raise ConfigError("data", str(folder), f"its pilot layout is {layout.describe()}: .mat export covers Kronecker "
                                               "layouts only (the reference reader reshapes the pilots to [P_f, P_t])")
    sub = cfg.ofdm.pilot_subcarriers
    if cfg.ofdm.pilot_positions is None:
        return cfg.ofdm.pilot_subcarrier_spacing
    if not is_arithmetic(sub):
        raise ConfigError("data", str(folder), f"its pilot subcarriers ({layout.describe()}) are not equally spaced; "
                                               "a .mat name's N-{spacing} cannot name them")
    return sub[1] - sub[0] if len(sub) > 1 else cfg.ofdm.num_subcarriers


def parse_mat_name(path: Path) -> dict:
    """Returns the metadata in a reference file name; raises ConfigError naming the file if malformed."""
    m = NAME_RE.fullmatch(path.name)
    if not m:
        raise ConfigError("mat", str(path), "file name does not match "
                                            "{n}_SNR-{snr}_DS-{ds_ns}_DOP-{doppler_hz}_N-{spacing}_TDL-{profile}.mat "
                                            "(non-negative integers only)")
    n, snr, ds, dop, spacing, kind = m.groups()
    profile = kind.removeprefix("TDL-")
    if kind == profile or profile not in ("A", "B", "C", "D", "E"):
        raise ConfigError("mat", str(path), f"channel type {kind!r} is not TDL-A..TDL-E")
    return {"n": int(n), "snr_db": float(snr), "delay_spread_s": int(ds) / 1e9, "doppler_hz": float(dop),
            "spacing": int(spacing), "profile": profile}


def _folder_config(files: list[Path], metas: list[dict], base: SystemConfig, snr_convention: str) -> SystemConfig:
    for key in ("spacing", "profile"):
        vals = {m[key] for m in metas}
        if len(vals) > 1:
            bad = next(f for f, m in zip(files, metas) if m[key] != metas[0][key])
            raise ConfigError("mat", str(bad), f"its {key} differs from that of {files[0].name} in the same "
                                               "folder; put one pilot spacing and profile per folder")
    channel = {"profile": metas[0]["profile"], "snr_convention": snr_convention}
    for key in ("snr_db", "delay_spread_s", "doppler_hz"):
        lo, hi = min(m[key] for m in metas), max(m[key] for m in metas)
        channel[key] = lo if lo == hi else (lo, hi)
    # the names carry a Kronecker grid: any pilot_positions of the base config do not apply
    return base.updated(ofdm={"pilot_subcarrier_spacing": metas[0]["spacing"], "pilot_positions": None}, channel=channel)


def mat_folders(root: str | Path) -> dict[Path, list[Path]]:
    """Returns {folder: its ``.mat`` files in frame-number order} for every folder under ``root`` that holds some.

    Raises ConfigError naming the file for a malformed name or a frame number that repeats.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError("mat", str(root), "no such folder")
    folders: dict[Path, list[Path]] = {}
    for f in sorted(root.rglob("*.mat")):
        folders.setdefault(f.parent, []).append(f)
    if not folders:
        raise ConfigError("mat", str(root), "holds no .mat files")
    out = {}
    for folder, files in sorted(folders.items()):
        numbers = [parse_mat_name(f)["n"] for f in files]
        order = sorted(range(len(files)), key=lambda k: numbers[k])
        for a, b in zip(order, order[1:]):
            if numbers[a] == numbers[b]:
                raise ConfigError("mat", str(files[b]), f"frame number {numbers[b]} appears twice in the folder")
        out[folder] = [files[k] for k in order]
    return out


def read_mat_h(path: Path) -> np.ndarray:
    """Returns variable ``H`` [F, T, 2] complex of a reference ``.mat`` file; ConfigError naming the file otherwise."""
    try:
        H = scipy.io.loadmat(path)["H"]
    except (KeyError, ValueError, OSError) as exc:
        raise ConfigError("mat", str(path), f"cannot read variable H ({exc.__class__.__name__}: {exc})") from None
    if H.ndim != 3 or H.shape[2] != 2 or not np.iscomplexobj(H):
        raise ConfigError("mat", str(path), f"H has shape {list(H.shape)} {H.dtype}, expected [F, T, 2] complex")
    bad = int((~np.isfinite(H)).sum())
    if bad:  # a NaN channel would be stored as a frame, and its MSE read later as a number
        raise ConfigError("mat", str(path), f"H holds {bad} NaN or inf entries (first at [F, T, k] = "
                                            f"{[int(i) for i in np.argwhere(~np.isfinite(H))[0]]}); the file is damaged")
    return H


def import_mat(root: str | Path, out: str | Path, base: SystemConfig, shard_frames: int = 10_000,
               compression: str = "none", progress=None, snr_convention: str = "pilot-grid",
               audit: bool = True) -> int:
    """Reads a tree of reference ``.mat`` files into shard folders (mirrored under ``out``).

    Metadata comes from the file names; the grid from ``base`` with the names' pilot spacing
    and profile. ``snr_convention``: how to read the names' SNR; ``"pilot-grid"`` (default) is
    the reference generator's, ``"per-re"`` that of files wavefront exported from per-RE data;
    the stored ``noise_var`` follows it. Imported shards store ``pilot_symbols = 1`` and
    ``pilots_rx = pilots_ls`` (the ``.mat`` layout keeps only the LS estimate). Returns the
    number of frames imported.

    ``audit``: afterwards, look for repeated channel realizations within and across the
    imported folders (:func:`wavefront.datasets.audit.audit`), warn with the figures when there
    are any, and record the findings under ``realization_audit`` in each folder's manifest.
    """
    m = base.mimo
    if m.is_mimo:
        raise ConfigError("mimo", f"{m.num_rx_antennas} antennas x {m.num_users} users",
                          ".mat import (the AdaFortiTran reference format, one antenna and one user) is SISO only; "
                          "give a single-antenna --config/--preset")
    root, out = Path(root), check_output_folder("out", out)
    folders = mat_folders(root)
    total, written = 0, []
    for folder, files in folders.items():
        metas = [parse_mat_name(f) for f in files]
        cfg = _folder_config(files, metas, base, snr_convention)
        o = cfg.ofdm
        pf = np.asarray(o.pilot_subcarriers, dtype=np.int64)
        pt = np.asarray(o.pilot_symbols, dtype=np.int64)
        mask = np.zeros(o.grid_shape, dtype=bool)
        mask[pf[:, None], pt[None, :]] = True
        dest = out / folder.relative_to(root)
        dest.mkdir(parents=True, exist_ok=True)
        counts = shard_counts(len(files), shard_frames)
        start, shards = 0, []
        for si, cnt in enumerate(counts):
            h = np.empty((cnt,) + o.grid_shape, np.complex64)
            ls = np.empty((cnt,) + o.pilot_shape, np.complex64)
            for j in range(cnt):
                f = files[start + j]
                H = read_mat_h(f)
                if H.shape != o.grid_shape + (2,):
                    raise ConfigError("mat", str(f), f"H has shape {list(H.shape)} {H.dtype}, expected "
                                                     f"{list(o.grid_shape) + [2]} complex")
                nz = H[:, :, 1] != 0
                if not np.array_equal(nz, mask):
                    raise ConfigError("mat", str(f), f"H[:,:,1] is non-zero at {int(nz.sum())} entries, expected the "
                                                     f"{mask.sum()} pilots of N-{o.pilot_subcarrier_spacing} on symbols "
                                                     f"{list(o.pilot_symbols)} (0-based)")
                h[j] = H[:, :, 0]
                ls[j] = H[:, :, 1][nz].reshape(o.pilot_shape)  # row-major: subcarrier-major, as the reference
                if progress is not None:
                    progress.update(1)
            m = metas[start:start + cnt]
            snr = np.asarray([x["snr_db"] for x in m], np.float32)
            arrays = ShardArrays(
                h_true=h, pilots_ls=ls, pilots_rx=ls.copy(), pilot_symbols=np.ones(o.pilot_shape, np.complex64),
                pilot_subcarriers=pf, pilot_symbol_indices=pt, snr_db=snr,
                delay_spread_s=np.asarray([x["delay_spread_s"] for x in m], np.float32),
                doppler_hz=np.asarray([x["doppler_hz"] for x in m], np.float32),
                noise_var=cfg.noise_variance(torch.from_numpy(snr).double()).float().numpy(),
                profile=np.asarray([x["profile"].encode() for x in m], dtype=PROFILE_DTYPE))
            attrs = {"config": cfg.to_json(), "seed": -1, "shard_index": si, "batch_size": 0,
                     "frames": len(files), "shard_frames": shard_frames, "compression": compression,
                     "device": "none", "source": "import-mat", "versions": versions()}
            rec = write_shard(dest / shard_name(si), arrays, attrs, compression)
            shards.append({"file": shard_name(si), "index": si, "frames": cnt, "content_sha256": rec.content_sha256,
                           "file_sha256": rec.file_sha256, "bytes": rec.bytes})
            start += cnt
        total += len(files)
        write_json_atomic(dest / MANIFEST, {
            "format": MANIFEST_FORMAT, "format_version": FORMAT_VERSION, "source": "import-mat",
            "imported_from": str(folder), "config": json.loads(cfg.to_json()), "seed": None,
            "frames": len(files), "shard_frames": shard_frames, "num_shards": len(counts),
            "compression": compression, "versions": versions(), "shards": shards, "complete": True,
            "snr_convention": cfg.snr_convention_text,
            "channel_realization": "unknown: imported frames; " + (
                "see realization_audit" if audit else "not audited (--no-audit): run wavefront audit on this folder"),
            "note": "metadata from file names; pilot_symbols = 1 and pilots_rx = pilots_ls"})
        written.append(dest)
    if audit:
        audit_imported(out, written, progress)
    return total


def audit_imported(out: Path, folders: list[Path], progress=None):
    """Audits the imported ``folders`` together; warns with the figures and records them in each manifest.

    Returns the :class:`~wavefront.datasets.audit.AuditReport`.
    """
    # audit reads .mat folders through this module, so it is imported here, not at the top
    from wavefront.datasets.audit import audit, warning_lines

    names = [str(d.relative_to(out)) if d != out else d.name for d in folders]
    if progress is not None and hasattr(progress, "set_description"):
        progress.set_description("audit")
    rep = audit(folders, names=names, progress=progress)
    for k, (d, s) in enumerate(zip(folders, rep.sets)):
        man = read_manifest(d)
        shared = [{"with": o.b if o.a == s.name else o.a, "shared_realizations": o.shared_realizations,
                   "frames_here": o.frames_a if o.a == s.name else o.frames_b}
                  for o in rep.overlaps if s.name in (o.a, o.b)]
        man["realization_audit"] = {"tolerance_db": rep.tolerance_db, "frames": s.frames,
                                    "realizations": s.realizations, "repeating_frames": s.repeating_frames,
                                    "repeat_fraction": s.repeat_fraction, "shared_with_imported_folders": shared,
                                    "method": rep.method}
        write_json_atomic(d / MANIFEST, man)
    for line in warning_lines(rep):
        warnings.warn(f"import-mat: {line}", stacklevel=2)
    return rep
