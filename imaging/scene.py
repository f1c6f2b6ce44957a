"""Receiver co-design on the user's own scene: their velocity model, sources, candidate sites and loss.

Files in (checked at the door, one :class:`ConfigError` line each): a velocity model
(``.npy``, or ``.h5`` holding one 2-D dataset or one named ``velocity``; m/s), sources as
JSON ``{"positions": [[row, col], ...], "frequency_hz": f}`` (one Ricker shot per position),
candidate sites as a boolean mask ``.npy`` of the model's shape or a rectangle
``r0:r1,c0:c1`` (half-open cell ranges), an optional velocity perturbation ``.npy`` (m/s,
added to the model). The wavefield is recorded once on every candidate cell
(:func:`record_cells`) and the layout chosen on that recording (:mod:`~wavefront.imaging.placement`).

**Time step.** Any ``dt_s`` deepwave accepts is accepted: the solver runs ``n_sub`` steps of
``dt_s / n_sub`` per output sample, with ``n_sub = ceil(dt_s * v_max * sqrt(2) / (0.6 * dx_m))``
(deepwave's own rule, :func:`substeps`: Courant number 0.6, below the 4th-order scheme's
limit 0.866), the Ricker wavelet is evaluated at the fine step, and every ``n_sub``-th fine
sample is kept (sample ``i`` at time ``i * dt_s``). On a 30 x 40 two-layer model this
agrees with deepwave's own FFT-resampled sub-stepping to 2e-5 relative
(tests/imaging/test_codesign_scene.py).

**Model edge.** Receivers are recorded on integer cells, so a candidate may sit on any cell,
the first and last rows and columns included; deepwave's absorbing layer lies outside the
model.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from wavefront.errors import ConfigError
from wavefront.imaging.placement import (BUILTIN_LOSSES, TASKS, LayoutLoss, Loss, check_capacity, mask_cells,
                                         select_receivers)
from wavefront.imaging.wave import check_stability, propagate, ricker
from wavefront.utils import atomic_write_json, check_memory, finish_figure

DEEPWAVE_COURANT = 0.6  # deepwave's default target Courant number (deepwave.discretisation.cfl_condition)


# ----------------------------------------------------------------------------- files in
def _load_array(field: str, path: str | Path) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise ConfigError(field, str(path), "no such file")
    if p.is_dir():
        raise ConfigError(field, str(path), "is a folder, not a .npy or .h5 file")
    try:
        if p.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(p, "r") as f:
                names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
                name = field if field in names else (names[0] if len(names) == 1 else None)
                if name is None:
                    raise ConfigError(field, str(path), f"the HDF5 file must hold one dataset or one named {field!r}; "
                                                        f"it holds {names}")
                return np.asarray(f[name][()])
        return np.load(p, allow_pickle=False)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise ConfigError(field, str(path), f"cannot be read as a .npy or .h5 array ({exc.__class__.__name__})") from None


def load_velocity(path: str | Path) -> torch.Tensor:
    """Returns the velocity model [ny, nx] float32 (m/s) from ``.npy``/``.h5``; 2-D, finite and positive."""
    a = _load_array("velocity", path)
    if a.ndim != 2 or min(a.shape) < 1:
        raise ConfigError("velocity", str(path), f"must be a 2-D array [rows, cols], got shape {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ConfigError("velocity", str(path), f"must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ConfigError("velocity", str(path), f"must be finite everywhere; {int((~np.isfinite(a)).sum())} cells are NaN or inf")
    if not (a > 0).all():
        raise ConfigError("velocity", str(path), f"must be positive everywhere (m/s); its minimum is {a.min():g}")
    return torch.from_numpy(a).float()


def load_perturbation(path: str | Path, velocity: torch.Tensor) -> torch.Tensor:
    """Returns the velocity perturbation(s), [ny, nx] or [M, ny, nx] float32 (m/s), finite, each keeping ``v + dv > 0``.

    Several perturbations (a 3-D array) are for ``--task inversion``: one column of the
    linearised inversion's Jacobian each.
    """
    a = _load_array("perturbation", path)
    shape = tuple(velocity.shape)
    if a.ndim not in (2, 3) or tuple(a.shape[-2:]) != shape or (a.ndim == 3 and a.shape[0] < 1):
        raise ConfigError("perturbation", str(path), f"must have the velocity model's shape {list(shape)} "
                                                     f"(or [M, {shape[0]}, {shape[1]}]), got {list(a.shape)}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ConfigError("perturbation", str(path), "must be finite everywhere")
    dv = torch.from_numpy(a).float()
    if not bool(((velocity + dv) > 0).all()):
        raise ConfigError("perturbation", str(path), "velocity + perturbation must stay positive everywhere")
    flat = dv.reshape(-1, *shape)
    zero = [i for i in range(len(flat)) if not bool((flat[i] != 0).any())]
    if zero:
        raise ConfigError("perturbation", str(path), f"is zero everywhere{'' if dv.ndim == 2 else f' in {zero}'}: "
                                                     "nothing to be sensitive to")
    return dv


def load_sources(path: str | Path, shape: tuple[int, int], nt: int | None = None
                 ) -> tuple[torch.Tensor, float, torch.Tensor | None]:
    """Returns (source cells [S, 2] int64 (row, col), peak frequency in Hz, wavelet [nt] float32 or None).

    The JSON is ``{"positions": [[row, col], ...], "frequency_hz": f}`` (a Ricker of peak
    ``f``), optionally with ``"wavelet": "w.npy"``: a 1-D array of ``nt`` samples at ``dt``
    (relative paths from the JSON's folder), fired at every position; ``f`` then sets the
    absorbing layer's frequency and the dispersion check.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError("sources", str(path), "no such file" if not p.exists() else "is a folder, not a JSON file")
    try:
        spec = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError("sources", str(path), f"cannot be read as JSON ({exc.__class__.__name__})") from None
    if not isinstance(spec, dict) or "positions" not in spec or "frequency_hz" not in spec:
        raise ConfigError("sources", str(path), 'must be {"positions": [[row, col], ...], "frequency_hz": f}')
    pos = spec["positions"]
    ok = isinstance(pos, list) and len(pos) > 0 and all(
        isinstance(q, list) and len(q) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in q) for q in pos)
    if not ok:
        raise ConfigError("sources.positions", pos, "must be a non-empty list of [row, col] integer cells")
    ny, nx = shape
    for r, c in pos:
        if not (0 <= r < ny and 0 <= c < nx):
            raise ConfigError("sources.positions", [r, c], f"must lie inside the {ny}x{nx} model")
    f = spec["frequency_hz"]
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f <= 0:
        raise ConfigError("sources.frequency_hz", f, "must be a positive number (Hz)")
    wavelet = None
    if spec.get("wavelet") is not None:
        if not isinstance(spec["wavelet"], str):
            raise ConfigError("sources.wavelet", spec["wavelet"], "must be the path of a 1-D .npy file")
        wpath = Path(spec["wavelet"]) if Path(spec["wavelet"]).is_absolute() else p.parent / spec["wavelet"]
        w = _load_array("sources.wavelet", wpath)
        if w.ndim != 1 or (nt is not None and len(w) != nt):
            raise ConfigError("sources.wavelet", str(wpath), f"must be a 1-D array of nt={nt} samples, got shape {list(w.shape)}")
        if not np.issubdtype(w.dtype, np.number) or np.iscomplexobj(w) or not np.isfinite(w).all():
            raise ConfigError("sources.wavelet", str(wpath), "must hold finite real numbers")
        wavelet = torch.from_numpy(w.astype(np.float32))
    return torch.tensor(pos, dtype=torch.long), float(f), wavelet


_RECT = re.compile(r"^\s*(-?\d+)\s*:\s*(-?\d+)\s*,\s*(-?\d+)\s*:\s*(-?\d+)\s*$")


def load_candidates(spec: str, shape: tuple[int, int]) -> torch.Tensor:
    """Returns the candidate mask [ny, nx] bool from a rectangle ``r0:r1,c0:c1`` (half-open) or a mask ``.npy``/``.h5``."""
    ny, nx = shape
    m = _RECT.match(spec)
    if m:
        r0, r1, c0, c1 = (int(x) for x in m.groups())
        if not (0 <= r0 < r1 <= ny and 0 <= c0 < c1 <= nx):
            raise ConfigError("candidates", spec, f"the rectangle r0:r1,c0:c1 must be non-empty and inside the {ny}x{nx} model")
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[r0:r1, c0:c1] = True
        return mask
    if Path(spec).suffix not in (".npy", ".h5", ".hdf5"):
        raise ConfigError("candidates", spec, "must be a rectangle r0:r1,c0:c1 or a boolean mask .npy/.h5 file")
    a = _load_array("candidates", spec)
    if tuple(a.shape) != tuple(shape):
        raise ConfigError("candidates", spec, f"the mask must have the velocity model's shape {list(shape)}, got {list(a.shape)}")
    if a.dtype != np.bool_:
        if not np.issubdtype(a.dtype, np.number) or not np.isin(a, (0, 1)).all():
            raise ConfigError("candidates", spec, f"the mask must be boolean (or 0/1), got dtype {a.dtype}")
        a = a.astype(bool)
    if not a.any():
        raise ConfigError("candidates", spec, "the mask has no cells: nowhere to put a receiver")
    return torch.from_numpy(np.ascontiguousarray(a))


def load_loss(spec: str) -> Loss:
    """Returns the user's loss from ``module:function`` (importable, or the current folder) or ``path/file.py:function``."""
    module_name, sep, func_name = spec.rpartition(":")
    if not sep or not module_name or not func_name:
        raise ConfigError("loss", spec, "must look like module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ConfigError("loss", spec, f"no such file {module_name}")
            mod_spec = importlib.util.spec_from_file_location(f"wavefront_user_loss_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises on import is one line
        raise ConfigError("loss", spec, f"cannot import {module_name} ({exc.__class__.__name__}: {exc})") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ConfigError("loss", spec, f"{module_name} has no function {func_name}")
    return fn


# ----------------------------------------------------------------------------- recording
def substeps(dt_s: float, dx_m: float, v_max: float) -> int:
    """Returns n_sub = ceil(dt_s * v_max * sqrt(2) / (0.6 * dx_m)), at least 1: solver steps per output sample.

    deepwave's own rule (``cfl_condition``), so deepwave runs the fine step as it is.
    """
    ratio = dt_s * v_max * math.sqrt(2) / (DEEPWAVE_COURANT * dx_m)
    return max(1, math.ceil(ratio - 1e-12))


def upsample_wavelet(wavelet: torch.Tensor, n_sub: int) -> torch.Tensor:
    """Returns ``wavelet`` [nt] band-limited-interpolated to [nt * n_sub] (same units); sample ``i * n_sub`` is sample ``i``.

    Zero-padding of the spectrum (as deepwave resamples): exact for a wavelet without energy
    at or above the original Nyquist frequency that has tapered to zero by its last sample
    (the FFT treats it as periodic).
    """
    if n_sub == 1:
        return wavelet
    nt = wavelet.shape[-1]
    spec = torch.fft.rfft(wavelet.double(), n=nt)
    if nt % 2 == 0:  # the Nyquist bin is shared by +-f: split it so the interpolant stays real and exact on the samples
        spec[..., -1] = spec[..., -1] / 2
    full = torch.zeros(*spec.shape[:-1], nt * n_sub // 2 + 1, dtype=spec.dtype)
    full[..., :spec.shape[-1]] = spec
    return (torch.fft.irfft(full, n=nt * n_sub) * n_sub).to(wavelet.dtype)


def record_cells(v: torch.Tensor, dx_m: float, dt_s: float, nt: int, freq_hz: float, source_cells: torch.Tensor,
                 cells: torch.Tensor, pml_width: int = 20, accuracy: int = 4,
                 wavelet: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Returns (traces [S, N, nt] float32 on ``cells`` [N, 2], one shot per ``source_cells`` [S, 2], n_sub).

    Each shot fires a Ricker of peak ``freq_hz`` (evaluated at the solver's step), or
    ``wavelet`` [nt] given at ``dt_s`` (interpolated by :func:`upsample_wavelet`). Samples
    ``i`` are at time ``i * dt_s`` (s); the solver steps at ``dt_s / n_sub`` (:func:`substeps`).
    A model too coarse for the wavelet's shortest wavelength is run with a warning, not
    refused (deepwave runs it). The memory the run needs (the fine-step traces and deepwave's
    transient, about 4x them) is checked first.
    """
    v_max, v_min = float(v.max()), float(v.min())
    n_sub = substeps(dt_s, dx_m, v_max)
    dt_fine = dt_s / n_sub
    check_stability(dt_fine, dx_m, v_max, accuracy=accuracy)
    try:
        check_stability(dt_fine, dx_m, v_max, v_min, freq_hz, accuracy)
    except ConfigError as exc:
        warnings.warn(f"{exc} (run anyway: expect grid dispersion)", stacklevel=2)
    shots = len(source_cells)
    check_memory("candidates", len(cells), 4.0 * 4 * shots * len(cells) * nt * n_sub,
                 hint=f"record fewer candidate cells, shots or samples ({n_sub} solver steps per sample)")
    if wavelet is None:
        fine = ricker(freq_hz, nt * n_sub, dt_fine)
    else:
        if tuple(wavelet.shape) != (nt,):
            raise ConfigError("wavelet", tuple(wavelet.shape), f"must be [nt={nt}] samples at dt={dt_s} s")
        fine = upsample_wavelet(wavelet.float(), n_sub)
    amp = fine.reshape(1, 1, -1).expand(shots, 1, -1).contiguous()
    rec = cells.reshape(1, -1, 2).expand(shots, -1, -1).contiguous()
    data = propagate(v, dx_m, dt_fine, amp, source_cells.reshape(shots, 1, 2), rec, pml_width=pml_width,
                     accuracy=accuracy, freq_hz=freq_hz, check_dispersion=False)
    return data[..., ::n_sub].contiguous(), n_sub


# ----------------------------------------------------------------------------- the run
def plot_scene(v: torch.Tensor, mask: torch.Tensor, source_cells: torch.Tensor, layouts: dict[str, list],
               path: Path, title: str, dx_m: float, perturbation: torch.Tensor | None = None) -> None:
    """Writes a PNG: the velocity model (km/s), the candidate mask (white), the perturbation's outline (red),
    the sources and each layout's receivers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ny, nx = v.shape
    fig, ax = plt.subplots(figsize=(7, 7 * ny / nx + 0.8))
    ext = (-0.5, nx - 0.5, ny - 0.5, -0.5)
    im = ax.imshow(v.numpy() / 1000, cmap="viridis", extent=ext)
    fig.colorbar(im, ax=ax, label="velocity (km/s)", shrink=0.8)
    overlay = np.zeros((ny, nx, 4))
    overlay[mask.numpy()] = (1.0, 1.0, 1.0, 0.45)
    ax.imshow(overlay, extent=ext)
    if perturbation is not None:
        support = (perturbation.reshape(-1, ny, nx) != 0).any(0)  # every perturbation's outline
        ax.contour(np.arange(nx), np.arange(ny), support.numpy().astype(float), levels=[0.5], colors="red",
                   linewidths=1.2)
    ax.plot(source_cells[:, 1], source_cells[:, 0], "r*", ms=14, mec="k", label="sources")
    styles = {"learned": ("^", "#ff00ff", 11), "regular": ("s", "orange", 6), "random": ("X", "white", 8), "greedy": ("o", "cyan", 6)}
    for name, pos in layouts.items():
        p = np.asarray(pos)
        marker, color, size = styles.get(name, ("d", "y", 6))
        ax.plot(p[:, 1], p[:, 0], marker, color=color, ms=size, mec="k", ls="none", label=name)
    ax.set_xlabel(f"column (x {dx_m:g} m)")
    ax.set_ylabel(f"row / depth (x {dx_m:g} m)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=5, fontsize=7)
    finish_figure(fig, path, dpi=110)


def run_scene_codesign(v: torch.Tensor, dx_m: float, dt_s: float, nt: int, source_cells: torch.Tensor, freq_hz: float,
                       mask: torch.Tensor, num_receivers: int, min_spacing: float, loss: Loss, task: str,
                       out: Path, perturbation: torch.Tensor | None = None, seed: int = 0, restarts: int = 8,
                       wavelet: torch.Tensor | None = None, log=print) -> dict:
    """Records once, selects K receivers on the mask, writes receivers.json, results.json and receivers.png; returns results.

    ``loss`` sees the background traces and, when ``perturbation`` [ny, nx] (m/s) is given,
    the traces in ``v + perturbation`` as ``batch["perturbed"]``.
    """
    cells = mask_cells(mask)
    check_capacity(cells, num_receivers, min_spacing, seed)  # before minutes of simulation
    field, n_sub = record_cells(v, dx_m, dt_s, nt, freq_hz, source_cells, cells, wavelet=wavelet)
    perturbed = None
    if perturbation is not None:  # one recording per perturbation: [S, N, nt], or [M, S, N, nt]
        runs = [record_cells(v + dv, dx_m, dt_s, nt, freq_hz, source_cells, cells, wavelet=wavelet)[0]
                for dv in perturbation.reshape(-1, *v.shape)]
        perturbed = runs[0] if perturbation.ndim == 2 else torch.stack(runs)
    log(f"recorded {len(source_cells)} shot(s) on {len(cells)} candidate cells, {nt} samples of {dt_s:g} s "
        f"({n_sub} solver step(s) of {dt_s / n_sub:.4g} s each)")
    layout_loss = LayoutLoss(field, cells, loss, perturbed, source_cells, dt_s, dx_m,
                             name="loss" if task not in BUILTIN_LOSSES else "task")
    sel = select_receivers(layout_loss, num_receivers, min_spacing, seed, restarts=restarts)
    learned = sel["learned"]
    result = {
        "learned": {"loss": learned["loss"], "positions": learned["positions"], "method": learned["method"]},
        "baselines": {name: {"loss": b["loss"], "positions": b["positions"]} for name, b in sel["baselines"].items()},
        "task": task, "num_receivers": num_receivers, "min_spacing": min_spacing, "seed": seed, "restarts": restarts,
        "candidates": len(cells), "shots": len(source_cells), "nt": nt, "dt_s": dt_s, "dx_m": dx_m,
        "substeps": n_sub, "solver_dt_s": dt_s / n_sub, "loss_evaluations": layout_loss.calls,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "receivers.json", {"positions": learned["positions"], "loss": learned["loss"]}, indent=2)
    atomic_write_json(out / "results.json", result, indent=2)
    bl = result["baselines"]
    plot_scene(v, mask, source_cells, {"learned": learned["positions"]} | {n: b["positions"] for n, b in bl.items()},
               out / "receivers.png",
               f"{task}, K={num_receivers}, min spacing {min_spacing:g} cells\nloss learned {learned['loss']:.4g}, "
               + ", ".join(f"{n} {b['loss']:.4g}" for n, b in bl.items()), dx_m, perturbation)
    return result


def resolve_task(task: str | None, loss_spec: str | None) -> tuple[str, Loss]:
    """Returns (task name, loss function) from ``--task`` or ``--loss module:function`` (exactly one)."""
    if loss_spec is not None:
        if task is not None:
            raise ConfigError("loss", loss_spec, "give --task or --loss, not both")
        return f"loss {loss_spec}", load_loss(loss_spec)
    if task is None:
        raise ConfigError("task", None, f"give --task ({', '.join(TASKS)}) or --loss module:function")
    if task not in BUILTIN_LOSSES:
        raise ConfigError("task", task, f"must be one of {', '.join(TASKS)} (or give --loss module:function)")
    return task, BUILTIN_LOSSES[task]
