"""K-of-N receiver placement on a recorded wavefield: candidate sites, a minimum spacing, losses, selectors.

The wavefield on every candidate cell is recorded once (:func:`wavefront.imaging.scene.record_cells`);
a receiver layout is then a choice of K of those N cells, and its data are a gather of K
traces, so no layout ever re-runs the solver. Receivers sit on cell centres, where deepwave's
Hicks (sinc) receiver reduces to the cell's own value: the gathered trace *is* the receiver's
data.

Rules every layout here obeys, by construction:

- each receiver sits on a distinct candidate cell (any mask: lines, boreholes, scattered cells);
- no two receivers are closer than ``min_spacing`` cells (Euclidean distance between cell centres).

Selectors: ``regular`` (evenly spread along the candidates' principal axis), ``random``
(seeded), ``greedy`` (forward selection on the loss) and :func:`swap_refine` (pairwise swaps
of one receiver for one candidate cell, accepted only when they lower the loss).
:func:`select_receivers` runs them all and returns the learned layout: swap refinement
started from greedy, from the best baseline and from seeded random layouts, the best of
them; its loss is never above the best baseline's.

A loss is any callable ``loss(data, batch) -> scalar`` (lower is better) with ``data`` the
traces [S, K, nt] of the chosen cells in the background model and ``batch`` a dict:
``"positions"`` [K, 2] int64 (row, col), ``"perturbed"`` [S, K, nt] (the traces in the
perturbed model; [M, S, K, nt] for M perturbations; or None), ``"source_positions"`` [S, 2] int64, ``"dt_s"``, ``"dx_m"``. Greedy selection also calls it on
partial layouts (1 to K receivers), so it must accept any K.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from wavefront.errors import ConfigError
from wavefront.utils import derive_seed

Loss = Callable[[torch.Tensor, dict], torch.Tensor | float]
BASELINES = ("regular", "random", "greedy")
TASKS = ("sensitivity", "localisation", "inversion")


# ----------------------------------------------------------------------------- built-in losses
def sensitivity_loss(data: torch.Tensor, batch: dict) -> torch.Tensor:
    """Returns ``-||d(v + dv) - d(v)||^2 / ||d(v)||^2`` over the chosen traces (float64 scalar, dimensionless).

    Minus the share of the recorded energy that the velocity perturbation changes: the
    larger the perturbation's signature against the background data it has to be told
    apart from, the lower the loss. ``batch["perturbed"]`` [S, K, nt] is required.
    """
    perturbed = batch.get("perturbed")
    if perturbed is None:
        raise ConfigError("task", "sensitivity", "needs the traces of the perturbed model (--perturbation)")
    d = data.double()
    diff = perturbed.double() - d
    return -diff.pow(2).sum() / d.pow(2).sum().clamp(min=torch.finfo(torch.float64).tiny)


def localisation_loss(data: torch.Tensor, batch: dict) -> torch.Tensor:
    """Returns ``-min_{i<j} ||d_i - d_j||^2 / mean_i ||d_i||^2`` over shots i, j (float64 scalar, dimensionless).

    Minus how well the worst-separated pair of source positions is told apart by the chosen
    receivers' traces ``data`` [S, K, nt], against the mean energy of one shot's traces.
    Needs at least two sources.
    """
    s = data.shape[0]
    if s < 2:
        raise ConfigError("task", "localisation", "needs at least two source positions to tell apart")
    d = data.double().reshape(s, -1)
    dist = torch.cdist(d, d).pow(2)
    iu = torch.triu_indices(s, s, 1)
    scale = d.pow(2).sum(1).mean().clamp(min=torch.finfo(torch.float64).tiny)
    return -dist[iu[0], iu[1]].min() / scale


INVERSION_RIDGE = 1e-6  # added to the normalised Gram matrix's diagonal: resolution below it counts as none


def inversion_loss(data: torch.Tensor, batch: dict) -> torch.Tensor:
    """Returns ``-logdet(J^T J / ||d||^2 + 1e-6 I)`` (float64 scalar): D-optimal design for M model perturbations.

    ``J`` [S*K*nt, M] holds one column per perturbation, ``d(v + dv_m) - d(v)`` at the chosen
    traces (``batch["perturbed"]`` [M, S, K, nt], or [S, K, nt] for M = 1). This is a
    linearised inversion proxy: the log-volume of the Gauss-Newton information about the M
    perturbation amplitudes, relative to the data energy. The 1e-6 ridge keeps it finite
    when a perturbation is unseen.
    """
    perturbed = batch.get("perturbed")
    if perturbed is None:
        raise ConfigError("task", "inversion", "needs the traces of the perturbed models (--perturbation)")
    d = data.double()
    p = perturbed.double().reshape(-1, *d.shape)
    jac = (p - d).reshape(len(p), -1)  # [M, S*K*nt]
    gram = jac @ jac.T / d.pow(2).sum().clamp(min=torch.finfo(torch.float64).tiny)
    return -torch.logdet(gram + INVERSION_RIDGE * torch.eye(len(p), dtype=gram.dtype))


BUILTIN_LOSSES: dict[str, Loss] = {"sensitivity": sensitivity_loss, "localisation": localisation_loss,
                                   "inversion": inversion_loss}


# ----------------------------------------------------------------------------- candidate sites
def mask_cells(mask: torch.Tensor) -> torch.Tensor:
    """Returns the cells of a boolean mask [ny, nx] as [N, 2] int64 (row, col), row-major."""
    return torch.nonzero(mask, as_tuple=False).to(torch.long)


def principal_order(cells: torch.Tensor) -> torch.Tensor:
    """Returns the indices [N] that sort ``cells`` [N, 2] along their principal axis (row-major ties).

    The axis is the leading right singular vector of the centred coordinates, its sign fixed
    so its largest component is positive; for a line or a borehole this is the walk along it.
    """
    x = cells.double()
    if len(x) < 2:
        return torch.arange(len(x))
    centred = x - x.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    axis = vh[0]
    if axis[axis.abs().argmax()] < 0:
        axis = -axis
    proj = torch.round(centred @ axis, decimals=9)
    # lexicographic (projection, row-major index): stable sort on the index first, then on the projection
    return torch.sort(proj, stable=True).indices


def spaced_from(cells: torch.Tensor, chosen: torch.Tensor, min_spacing: float) -> torch.Tensor:
    """Returns a bool [N]: cells at least ``min_spacing`` from every chosen cell and not chosen themselves.

    ``chosen`` is [k] indices into ``cells`` [N, 2]; an empty ``chosen`` allows every cell.
    """
    ok = torch.ones(len(cells), dtype=torch.bool)
    if len(chosen) == 0:
        return ok
    d = torch.cdist(cells.double(), cells[chosen].double())
    ok &= (d >= min_spacing - 1e-9).all(1)
    ok[chosen] = False
    return ok


def pack(cells: torch.Tensor, order: torch.Tensor, min_spacing: float, available: torch.Tensor | None = None,
         limit: int | None = None) -> list[int]:
    """Returns indices taken greedily in ``order``: each cell at least ``min_spacing`` from those taken before.

    ``available`` [N] bool restricts the cells; ``limit`` stops after that many. On a line in
    order this is the largest spaced set; on other masks, a large one.
    """
    avail = torch.ones(len(cells), dtype=torch.bool) if available is None else available.clone()
    ordered_avail = avail[order]
    taken: list[int] = []
    pos = 0
    while limit is None or len(taken) < limit:
        rest = torch.nonzero(ordered_avail[pos:], as_tuple=False)
        if len(rest) == 0:
            break
        pos += int(rest[0])
        i = int(order[pos])
        taken.append(i)
        near = (cells.double() - cells[i].double()).norm(dim=1) < min_spacing - 1e-9
        near[i] = True
        avail &= ~near
        ordered_avail = avail[order]
    return taken


def check_layout(cells: torch.Tensor, chosen: list[int], min_spacing: float) -> None:
    """Raises ConfigError unless ``chosen`` are distinct indices of ``cells`` at least ``min_spacing`` apart."""
    if len(set(chosen)) != len(chosen):
        raise ConfigError("layout", chosen, "receivers must sit on distinct candidate cells")
    if len(chosen) > 1:
        p = cells[torch.tensor(chosen)].double()
        d = torch.cdist(p, p).fill_diagonal_(math.inf)  # eye * inf would put NaN (0 * inf) off the diagonal
        if float(d.min()) < min_spacing - 1e-9:
            raise ConfigError("layout", p.long().tolist(), f"two receivers are {float(d.min()):.3g} cells apart, "
                                                           f"closer than min_spacing={min_spacing}")


def check_capacity(cells: torch.Tensor, num_receivers: int, min_spacing: float, seed: int = 0,
                   tries: int = 32) -> None:
    """Raises ConfigError unless K receivers fit the N candidate cells at ``min_spacing``.

    Exact for K > N; otherwise the largest spaced set found by packing along the principal
    axis and in ``tries`` seeded random orders must hold K.
    """
    n = len(cells)
    if n == 0:
        raise ConfigError("candidates", 0, "the candidate mask has no cells")
    if num_receivers < 1:
        raise ConfigError("num_receivers", num_receivers, "must be a positive integer")
    if num_receivers > n:
        raise ConfigError("num_receivers", num_receivers, f"must be at most the {n} candidate cells")
    if min_spacing < 0 or not math.isfinite(min_spacing):
        raise ConfigError("min_spacing", min_spacing, "must be a finite number of cells >= 0")
    best = len(pack(cells, principal_order(cells), min_spacing, limit=num_receivers))
    g = torch.Generator().manual_seed(seed)
    for _ in range(tries):
        if best >= num_receivers:
            return
        best = max(best, len(pack(cells, torch.randperm(n, generator=g), min_spacing, limit=num_receivers)))
    if best < num_receivers:
        raise ConfigError("num_receivers", num_receivers,
                          f"the {n} candidate cells hold at most {best} receivers {min_spacing:g} cells apart "
                          f"(largest spaced set found); lower K or --min-spacing")


# ----------------------------------------------------------------------------- evaluating layouts
class LayoutLoss:
    """Evaluates a loss on K of the N recorded traces: ``layout_loss(indices) -> float``.

    Args:
        field: background traces on every candidate cell [S, N, nt].
        cells: the candidate cells [N, 2] int64 (row, col).
        loss: ``loss(data [S, K, nt], batch) -> scalar`` (see the module docstring).
        perturbed: traces in the perturbed model [S, N, nt] (or in M perturbed models, [M, S, N, nt]), or None.
        source_positions: [S, 2] int64; dt_s, dx_m: the recording's sample interval and cell size.
    Counts evaluations in ``self.calls``; a non-finite or non-scalar loss raises ConfigError.
    """

    def __init__(self, field: torch.Tensor, cells: torch.Tensor, loss: Loss, perturbed: torch.Tensor | None = None,
                 source_positions: torch.Tensor | None = None, dt_s: float | None = None, dx_m: float | None = None,
                 name: str = "loss"):
        if field.ndim != 3 or field.shape[1] != len(cells):
            raise ConfigError("field", tuple(field.shape), f"must be [shots, {len(cells)} cells, nt]")
        if perturbed is not None and (perturbed.ndim not in (3, 4) or perturbed.shape[-3:] != field.shape):
            raise ConfigError("perturbed", tuple(perturbed.shape), f"must be {tuple(field.shape)} or [M, *that]")
        self.field, self.cells, self.loss, self.perturbed = field, cells, loss, perturbed
        self.source_positions, self.dt_s, self.dx_m, self.name = source_positions, dt_s, dx_m, name
        self.calls = 0

    def __call__(self, indices: list[int]) -> float:
        idx = torch.tensor(indices, dtype=torch.long)
        batch = {"positions": self.cells[idx], "perturbed": None if self.perturbed is None else self.perturbed[..., idx, :],
                 "source_positions": self.source_positions, "dt_s": self.dt_s, "dx_m": self.dx_m}
        with torch.no_grad():
            value = self.loss(self.field[:, idx], batch)
        self.calls += 1
        try:
            value = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(self.name, type(value).__name__, "must return a scalar (a float or a one-element tensor)") from None
        if not math.isfinite(value):
            raise ConfigError(self.name, value, f"must return a finite number (got it for cells {batch['positions'].tolist()})")
        return value


# ----------------------------------------------------------------------------- selectors
def regular_layout(cells: torch.Tensor, num_receivers: int, min_spacing: float) -> list[int]:
    """Returns K indices evenly spread along the candidates' principal axis, at least ``min_spacing`` apart.

    Targets are the centres of K equal segments of the ordered candidates; each takes the
    allowed cell nearest its target in that order. If a target finds none, the layout is the
    first K cells of the spaced packing along the axis.
    """
    order = principal_order(cells)
    n = len(cells)
    chosen: list[int] = []
    for k in range(num_receivers):
        target = int((k + 0.5) * n / num_receivers)
        ok = spaced_from(cells, torch.tensor(chosen, dtype=torch.long), min_spacing)[order]
        allowed = torch.nonzero(ok, as_tuple=False).flatten()
        if len(allowed) == 0:
            return pack(cells, order, min_spacing, limit=num_receivers)
        chosen.append(int(order[allowed[(allowed - target).abs().argmin()]]))
    return chosen if len(chosen) == num_receivers else pack(cells, order, min_spacing, limit=num_receivers)


def random_layout(cells: torch.Tensor, num_receivers: int, min_spacing: float, seed: int, tries: int = 100) -> list[int]:
    """Returns K indices drawn at random (seeded), at least ``min_spacing`` apart: a spaced packing of a random order."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(tries):
        taken = pack(cells, torch.randperm(len(cells), generator=g), min_spacing, limit=num_receivers)
        if len(taken) == num_receivers:
            return taken
    return pack(cells, principal_order(cells), min_spacing, limit=num_receivers)


def _completable(cells: torch.Tensor, chosen: list[int], need: int, min_spacing: float, order: torch.Tensor) -> bool:
    """Returns whether ``need`` more receivers still fit beside ``chosen`` (by packing along ``order``)."""
    if need <= 0:
        return True
    avail = spaced_from(cells, torch.tensor(chosen, dtype=torch.long), min_spacing)
    return len(pack(cells, order, min_spacing, available=avail, limit=need)) >= need


def greedy_layout(layout_loss: LayoutLoss, num_receivers: int, min_spacing: float) -> list[int]:
    """Returns K indices chosen one at a time, each the allowed cell that lowers the loss most.

    A cell is allowed when it keeps ``min_spacing`` to those chosen and K receivers can still
    be completed (checked by packing); ties go to the lower index.
    """
    cells = layout_loss.cells
    order = principal_order(cells)
    chosen: list[int] = []
    for k in range(num_receivers):
        allowed = torch.nonzero(spaced_from(cells, torch.tensor(chosen, dtype=torch.long), min_spacing)).flatten().tolist()
        scored = sorted((layout_loss(chosen + [c]), c) for c in allowed)
        for _, c in scored:
            if _completable(cells, chosen + [c], num_receivers - k - 1, min_spacing, order):
                chosen.append(c)
                break
        else:
            raise ConfigError("num_receivers", num_receivers, "no spaced completion found by greedy selection")
    return chosen


def swap_refine(layout_loss: LayoutLoss, start: list[int], min_spacing: float, max_passes: int = 20) -> tuple[list[int], float]:
    """Returns (indices, loss) after pairwise swaps: one receiver moved to one allowed cell, best move per receiver.

    A move is kept only if it lowers the loss (by more than 1e-12 relative), so the result
    is never worse than ``start``; passes repeat until none helps or ``max_passes``.
    """
    cells = layout_loss.cells
    chosen = list(start)
    best = layout_loss(chosen)
    for _ in range(max_passes):
        improved = False
        for slot in range(len(chosen)):
            others = torch.tensor(chosen[:slot] + chosen[slot + 1:], dtype=torch.long)
            allowed = spaced_from(cells, others, min_spacing)
            allowed[chosen[slot]] = False
            move, move_loss = None, best - 1e-12 * abs(best)
            for c in torch.nonzero(allowed).flatten().tolist():
                trial = chosen[:slot] + [c] + chosen[slot + 1:]
                value = layout_loss(trial)
                if value < move_loss:
                    move, move_loss = c, value
            if move is not None:
                chosen[slot], best, improved = move, move_loss, True
        if not improved:
            break
    return chosen, best


def select_receivers(layout_loss: LayoutLoss, num_receivers: int, min_spacing: float, seed: int = 0,
                     max_passes: int = 20, restarts: int = 8) -> dict:
    """Returns the learned layout and the baselines: ``{"learned": {...}, "baselines": {name: {...}}}``.

    Each entry holds ``"indices"`` (into the candidate cells), ``"positions"`` [[row, col], ...]
    and ``"loss"``. ``learned`` is the best :func:`swap_refine` result over these starts:
    greedy, the best baseline, and ``restarts`` seeded random spaced layouts (seeds
    ``derive_seed(seed, r)``). So ``learned.loss <= min(baseline losses)``;
    ``learned.start`` names the winning start. Ties keep the earlier start.
    """
    if restarts < 0:
        raise ConfigError("restarts", restarts, "must be >= 0")
    cells = layout_loss.cells
    check_capacity(cells, num_receivers, min_spacing, seed)
    layouts = {"regular": regular_layout(cells, num_receivers, min_spacing),
               "random": random_layout(cells, num_receivers, min_spacing, seed),
               "greedy": greedy_layout(layout_loss, num_receivers, min_spacing)}
    baselines = {}
    for name, idx in layouts.items():
        check_layout(cells, idx, min_spacing)
        baselines[name] = {"indices": idx, "positions": cells[torch.tensor(idx)].tolist(), "loss": layout_loss(idx)}
    best_base = min(BASELINES, key=lambda n: (baselines[n]["loss"], BASELINES.index(n)))
    starts = {"greedy": baselines["greedy"]["indices"]}
    starts.setdefault(best_base, baselines[best_base]["indices"])
    for r in range(restarts):
        starts[f"random restart {r}"] = random_layout(cells, num_receivers, min_spacing, derive_seed(seed, r))
    learned = None
    for start, idx0 in starts.items():
        idx, value = swap_refine(layout_loss, idx0, min_spacing, max_passes)
        if learned is None or value < learned["loss"]:
            learned = {"indices": idx, "positions": cells[torch.tensor(idx)].tolist(), "loss": value,
                       "start": start, "method": f"{start} + pairwise swaps (best of {len(starts)} starts)"}
    check_layout(cells, learned["indices"], min_spacing)
    return {"learned": learned, "baselines": baselines}
