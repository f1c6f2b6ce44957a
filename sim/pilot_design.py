"""Pilot layouts designed against the MMSE bound: a fast bound for many layouts, and a local search.

**The bound of a layout.** For pilots at positions ``(f_i, t_i)``, ``i < P``, the genie LMMSE
MSE per resource element is (see :mod:`wavefront.sim.lmmse`)

    mse = 1 - tr((R_p + sigma^2 I)^-1 G) / (F T),
    R_p[i, j] = sum_k R_f^(k)[f_i, f_j] R_t^(k)[t_i, t_j],
    G[i, j]   = sum_{k,m} (R_f^(k)H R_f^(m))[f_i, f_j] (R_t^(k)H R_t^(m))[t_i, t_j],

with ``R_f^(k)`` [F, F] and ``R_t^(k)`` [T, T] the Kronecker terms of the channel covariance
on the whole grid (:func:`wavefront.sim.statistics.covariance_terms`). :class:`BoundEvaluator`
computes those full-grid blocks and their Gram products once per condition grid, so a
layout costs gathers, one eigendecomposition ``R_p = U diag(lam) U^H`` per (delay spread,
Doppler) and, for every SNR at once, ``mse = 1 - sum_i (U^H G U)_ii / (lam_i + sigma^2) / (F T)``.
It agrees with :func:`wavefront.sim.lmmse.genie_mse` to 1e-10 (a test holds it).

**The objective** of :func:`optimise_layout` is the bound in dB averaged over a product grid of
conditions: delay spreads x Dopplers x SNRs (per resource element), by default the
AdaFortiTran paper's training ranges, 25-300 ns (25 ns steps) x 50-1000 Hz (50 Hz steps) x
0-25 dB (5 dB steps): 1440 conditions, each weighted equally in dB, so a layout is judged by
its relative error everywhere rather than by the worst (highest-Doppler, lowest-SNR) corner.

**The method** is a discrete local search. Start: the best of a family of staggered lattices
with ``P`` pilots (``n_t`` symbols spread over the slot, ``P / n_t`` equally spaced subcarriers
on each, shifted by a fraction of the spacing from one symbol to the next) and of the presets
with ``P`` pilots. Then passes over the pilots in random order (seeded): each pilot tries every
free position within ``radius_f`` subcarriers and ``radius_t`` symbols of where it is, all
candidates evaluated in one batch, and takes the best one if it lowers the objective. The
search stops after a pass without a move, or after ``max_passes``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from wavefront import paper
from wavefront.errors import ConfigError
from wavefront.sim.config import OFDMConfig
from wavefront.sim.pilots import PILOT_PRESETS, PilotLayout, preset_fields
from wavefront.sim.profiles import channel_profile
from wavefront.sim.statistics import covariance_terms

# The objective's grid steps: the paper's training grid
DEFAULT_STEPS = dict(paper.TRAIN_STEPS)


def axis_values(field: str, value, step: float) -> tuple[float, ...]:
    """Returns a fixed value as one point, or ``(low, high)`` as ``low, ..., high`` in equal steps of at most ``step``."""
    lo, hi = (value if isinstance(value, (tuple, list)) else (value, value))
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ConfigError(field, value, "must be a finite value or a low:high range with low <= high")
    if field != "snr_db" and lo < 0:
        raise ConfigError(field, value, "must be >= 0")
    n = 1 if hi == lo else int(math.ceil((hi - lo) / step - 1e-9)) + 1
    return tuple(np.linspace(lo, hi, n).tolist())


class BoundEvaluator:
    """The MMSE bound of any pilot layout over a product grid of conditions (see the module docstring).

    ``delay_spreads_s`` [N_ds] (s), ``dopplers_hz`` [N_fd] (Hz), ``snrs_db`` [N_snr] (dB per
    resource element). :meth:`bound_db` maps layouts to ``[L, N_ds, N_fd, N_snr]`` float64 dB.
    """

    def __init__(self, ofdm: OFDMConfig, profile: str, delay_spreads_s, dopplers_hz, snrs_db,
                 travel_azimuth_deg: float = 0.0):
        self.ofdm, self.profile = ofdm, profile
        self.grid_shape = tuple(ofdm.grid_shape)
        self.ds = torch.tensor(list(delay_spreads_s), dtype=torch.float64)
        self.fd = torch.tensor(list(dopplers_hz), dtype=torch.float64)
        self.snr_db = torch.tensor(list(snrs_db), dtype=torch.float64)
        self.noise_var = torch.pow(10.0, -self.snr_db / 10)
        prof = channel_profile(profile, travel_azimuth_deg)
        # frequency blocks depend on the delay spread alone, time blocks on the Doppler alone
        terms_f = [a for a, _ in covariance_terms(ofdm, prof, self.ds, self.fd[:1])]  # [N_ds, F, F]
        terms_t = [b for _, b in covariance_terms(ofdm, prof, self.ds[:1], self.fd)]  # [N_fd, T, T]
        self.r_f, self.r_t = terms_f, terms_t
        self.q_f = [a.mH @ b for a in terms_f for b in terms_f]  # R_f^(k)H R_f^(m)
        self.q_t = [a.mH @ b for a in terms_t for b in terms_t]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N_ds, N_fd, N_snr)``."""
        return (len(self.ds), len(self.fd), len(self.snr_db))

    def bound(self, positions: np.ndarray) -> torch.Tensor:
        """Returns the bound (linear MSE) ``[L, N_ds, N_fd, N_snr]`` float64 of layouts ``positions`` [L, P, 2] int."""
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.int64)
        if pos.dim() == 2:
            pos = pos[None]
        fi, ti = pos[..., 0], pos[..., 1]  # [L, P]

        def pair(blocks, idx):  # blocks [N, n, n] -> [L, N, P, P]: the rows and columns of each layout's pilots
            return blocks[:, idx[:, :, None], idx[:, None, :]].transpose(0, 1)

        r_p = sum(pair(a, fi)[:, :, None] * pair(b, ti)[:, None] for a, b in zip(self.r_f, self.r_t))
        g = sum(pair(a, fi)[:, :, None] * pair(b, ti)[:, None] for a, b in zip(self.q_f, self.q_t))
        lam, u = torch.linalg.eigh(r_p)  # [L, N_ds, N_fd, P], [..., P, P]
        gd = torch.einsum("...pi,...pq,...qi->...i", u.conj(), g, u).real
        F, T = self.grid_shape
        denom = lam.clamp_min(0.0)[..., None, :] + self.noise_var[:, None]  # [L, N_ds, N_fd, N_snr, P]
        return 1.0 - (gd[..., None, :] / denom).sum(-1) / (F * T)

    def _blocks(self, fa, ta, fb, tb, which: str) -> torch.Tensor:
        """Returns ``R`` (or ``G``) between pilot sets a and b: ``[N_ds, N_fd, len(a), len(b)]``."""
        fs, ts = (self.r_f, self.r_t) if which == "r" else (self.q_f, self.q_t)
        return sum(a[:, fa[:, None], fb[None, :]][:, None] * b[:, ta[:, None], tb[None, :]][None]
                   for a, b in zip(fs, ts))

    def move_objectives(self, positions: np.ndarray, i: int, targets: np.ndarray) -> torch.Tensor:
        """Returns the objective [N] of layout ``positions`` [P, 2] with pilot ``i`` moved to each of ``targets`` [N, 2].

        Exact, by the block inverse: with ``S = R_p + sigma^2 I`` of the other ``P - 1`` pilots,
        ``r``, ``g`` the new pilot's columns of ``R_p`` and ``G`` and ``w = S^-1 r``,
        ``tr(M^-1 G') = tr(S^-1 G) + (w^H G w - 2 Re(w^H g) + g_cc) / (s_cc - r^H w)``, all SNRs
        at once in the eigenbasis of ``R_p``. About ``P`` times cheaper than :meth:`objective` on
        each moved layout; a test holds the two equal.
        """
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.int64)
        tgt = torch.as_tensor(np.asarray(targets), dtype=torch.int64).reshape(-1, 2)
        P = pos.shape[0]
        if P == 1:
            return self.objective(tgt[:, None, :].numpy())
        keep = torch.cat([pos[:i], pos[i + 1:]])
        fo, to, fc, tc = keep[:, 0], keep[:, 1], tgt[:, 0], tgt[:, 1]
        r_o = self._blocks(fo, to, fo, to, "r")  # [D, V, P-1, P-1]
        g_o = self._blocks(fo, to, fo, to, "g")
        r_c = self._blocks(fo, to, fc, tc, "r")  # [D, V, P-1, N]
        g_c = self._blocks(fo, to, fc, tc, "g")
        idx = torch.arange(len(tgt))
        r_cc = self._blocks(fc, tc, fc, tc, "r")[..., idx, idx].real  # [D, V, N]
        g_cc = self._blocks(fc, tc, fc, tc, "g")[..., idx, idx].real
        lam, u = torch.linalg.eigh(r_o)
        lam = lam.clamp_min(0.0)
        k = u.mH @ g_o @ u  # [D, V, P-1, P-1]
        y, z = u.mH @ r_c, u.mH @ g_c  # [D, V, P-1, N]
        d = 1.0 / (lam[..., None, :] + self.noise_var[:, None])  # [D, V, S, P-1]
        base = (d * k.diagonal(dim1=-2, dim2=-1).real[..., None, :]).sum(-1)  # [D, V, S]
        dy = d[..., :, None] * y[..., None, :, :]  # [D, V, S, P-1, N]
        quad = (dy.conj() * (k[..., None, :, :] @ dy)).sum(-2).real  # [D, V, S, N]
        cross = (dy.conj() * z[..., None, :, :]).sum(-2).real
        rw = (dy.conj() * y[..., None, :, :]).sum(-2).real
        gamma = (r_cc[..., None, :] + self.noise_var[:, None]) - rw
        trace = base[..., None] + (quad - 2 * cross + g_cc[..., None, :]) / gamma
        F, T = self.grid_shape
        mse = 1.0 - trace / (F * T)  # [D, V, S, N]
        return (10 * torch.log10(mse.clamp_min(1e-30))).flatten(0, 2).mean(0)

    def bound_db(self, positions: np.ndarray) -> torch.Tensor:
        """Returns ``10 log10`` of :meth:`bound`."""
        return 10 * torch.log10(self.bound(positions).clamp_min(1e-30))

    def objective(self, positions: np.ndarray) -> torch.Tensor:
        """Returns the bound in dB averaged over every condition of the grid, ``[L]``."""
        return self.bound_db(positions).flatten(1).mean(1)


def staggered_lattice(num_pilots: int, num_symbols_used: int, grid_shape, shift_fraction: float) -> np.ndarray | None:
    """Returns a staggered lattice [P, 2] (or None if ``num_symbols_used`` does not divide ``P``).

    ``num_symbols_used`` symbols spread evenly over the slot (first at 0, last at T - 1 or
    before), ``P / num_symbols_used`` subcarriers on each, spaced ``F / n_f``; symbol ``j``'s
    subcarriers are shifted by ``j * shift_fraction`` of the spacing (mod the spacing).
    """
    F, T = grid_shape
    n_t = num_symbols_used
    if n_t < 1 or n_t > T or num_pilots % n_t:
        return None
    n_f = num_pilots // n_t
    if n_f > F:
        return None
    step_t = T / n_t
    symbols = [int(round(j * step_t)) for j in range(n_t)]
    spacing = F / n_f
    out = set()
    for j, t in enumerate(symbols):
        shift = (j * shift_fraction % 1.0) * spacing
        for k in range(n_f):
            out.add((int(math.floor(shift + k * spacing)) % F, t))
    if len(out) != num_pilots:
        return None
    return np.asarray(sorted(out), dtype=np.int64)


def _start_candidates(num_pilots: int, grid_shape) -> dict[str, np.ndarray]:
    F, T = grid_shape
    cands = {}
    for name in PILOT_PRESETS:
        try:
            fields = preset_fields(name, grid_shape)
        except ConfigError:
            continue
        ofdm = OFDMConfig(num_subcarriers=F, num_symbols=T, **fields)
        lay = ofdm.pilot_layout
        if lay.num_pilots == num_pilots:
            cands[name] = np.stack([lay.subcarrier_indices, lay.symbol_indices], 1)
    for n_t in range(1, T + 1):
        for frac in (0.0, 0.25, 0.5):
            lat = staggered_lattice(num_pilots, n_t, grid_shape, frac)
            if lat is not None:
                cands[f"lattice {n_t}x{num_pilots // n_t}/{frac:g}"] = lat  # symbols x subcarriers / shift
    return cands


def search_bytes(evaluator: BoundEvaluator, num_pilots: int, num_layouts: int, num_targets: int) -> float:
    """Returns about the bytes the search holds at once: complex128 ``[L, N_ds, N_fd, P, P]`` blocks of
    :meth:`BoundEvaluator.bound` (``R_p``, ``G``, the eigenvectors and a product: 4) for ``num_layouts`` layouts,
    or :meth:`BoundEvaluator.move_objectives`' four ``[N_ds, N_fd, P, P]`` blocks and three
    ``[N_ds, N_fd, N_snr, P, N]`` ones for ``num_targets`` candidate moves, whichever is larger."""
    D, V, S = evaluator.shape
    P = num_pilots
    return 16.0 * max(4 * num_layouts * D * V * P * P, 4 * D * V * P * P + 3 * D * V * S * P * num_targets)


def _check_search_memory(evaluator: BoundEvaluator, num_pilots: int, num_layouts: int, num_targets: int) -> None:
    """Raises ConfigError naming ``num_pilots`` where :func:`search_bytes` exceeds the free CPU memory (before allocating)."""
    from wavefront.utils import check_memory

    D, V, S = evaluator.shape
    check_memory("num_pilots", num_pilots, search_bytes(evaluator, num_pilots, num_layouts, num_targets), "cpu",
                 hint=f"use fewer pilots or fewer conditions ({D} delay spreads x {V} Dopplers x {S} SNRs now; "
                      "coarser --delay-spread-ns/--doppler-hz/--snr-db steps)")


@dataclass
class SearchResult:
    """What :func:`optimise_layout` found: the layout, its objective [dB], where it started, the search history."""

    layout: PilotLayout
    objective_db: float
    start_name: str
    start_layout: PilotLayout
    start_objective_db: float
    moves: int
    passes: int
    history: list


def optimise_layout(evaluator: BoundEvaluator, num_pilots: int, radius_f: int = 6, radius_t: int = 2,
                    max_passes: int = 8, seed: int = 0, progress=None, start: np.ndarray | None = None) -> SearchResult:
    """Returns the layout of ``num_pilots`` pilots found by the local search (module docstring) on ``evaluator``.

    ``progress``: a tqdm-like object with ``update(n)`` and ``set_postfix_str``, advanced once
    per pilot visited (``max_passes * num_pilots`` in all), or None. ``start`` [P, 2]: start
    from this layout instead of the best lattice or preset.
    """
    F, T = evaluator.grid_shape
    if not isinstance(num_pilots, int) or not (1 <= num_pilots <= F * T):
        raise ConfigError("num_pilots", num_pilots, f"must be an integer in 1..{F * T} (the grid's resource elements)")
    if start is None:
        cands = _start_candidates(num_pilots, (F, T))
        if not cands:  # no lattice fits P: spread the pilots over the grid in raster order
            idx = np.linspace(0, F * T - 1, num_pilots).round().astype(np.int64)
            cands = {"raster": np.stack([idx % F, idx // F], 1)}
        names = list(cands)
        _check_search_memory(evaluator, num_pilots, len(names), (2 * radius_f + 1) * (2 * radius_t + 1) - 1)
        scores = evaluator.objective(np.stack([cands[n] for n in names]))
        best = int(scores.argmin())
        start_name, current = names[best], cands[names[best]].copy()
        current_score = float(scores[best])
    else:
        _check_search_memory(evaluator, num_pilots, 1, (2 * radius_f + 1) * (2 * radius_t + 1) - 1)
        start_name, current = "given", np.asarray(start, dtype=np.int64).copy()
        current_score = float(evaluator.objective(current[None])[0])
    start_score, start_positions = current_score, current.copy()
    rng = np.random.default_rng(seed)
    offsets = [(df, dt) for df in range(-radius_f, radius_f + 1) for dt in range(-radius_t, radius_t + 1) if df or dt]
    history, moves, passes = [current_score], 0, 0
    for passes in range(1, max_passes + 1):
        moved = False
        for i in rng.permutation(num_pilots):
            occupied = {tuple(p) for p in current.tolist()}
            f0, t0 = current[i]
            targets = [(f0 + df, t0 + dt) for df, dt in offsets
                       if 0 <= f0 + df < F and 0 <= t0 + dt < T and (f0 + df, t0 + dt) not in occupied]
            if progress is not None:
                progress.update(1)
            if not targets:
                continue
            scores = evaluator.move_objectives(current, int(i), np.asarray(targets))
            k = int(scores.argmin())
            if float(scores[k]) < current_score - 1e-9:
                current = current.copy()
                current[i] = targets[k]
                # the fast score is exact up to round-off; the kept score is the direct one
                current_score, moved = float(evaluator.objective(current[None])[0]), True
                moves += 1
            if progress is not None:
                progress.set_postfix_str(f"objective {current_score:.3f} dB, {moves} moves")
        history.append(current_score)
        if not moved:
            break
    if progress is not None and passes < max_passes:
        progress.update((max_passes - passes) * num_pilots)
    as_layout = lambda pos: PilotLayout.from_positions([tuple(map(int, p)) for p in pos], (F, T))  # noqa: E731
    return SearchResult(as_layout(current), current_score, start_name, as_layout(start_positions), start_score, moves,
                        passes, history)
