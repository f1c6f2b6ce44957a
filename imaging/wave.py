"""Wave-equation front end: deepwave propagation and receivers at learnable, continuous positions.

deepwave's fast path records at integer grid cells. wavefront records the wavefield on every
cell of a *recording region* (the candidate region plus the interpolation support) with
integer receivers, then samples it at continuous receiver positions by gathering the few
cells around each one, with gradients to the positions. The wavefield does not depend on
where passive receivers sit, so a co-design loop can simulate once and move receivers for
free. The recorded field stays in deepwave's memory layout (time fastest) and is never
copied; see :func:`record_region` for how its peak memory is bounded.

Units: velocities in m/s, grid spacing ``dx_m`` in m, time step ``dt_s`` in s, frequencies
in Hz. Grid coordinates are (row, column) = (depth, lateral) cell indices, deepwave's order.
Interpolation kernels:

- ``"sinc"`` (the default): Kaiser-windowed sinc of half-width 4 and beta 4.14, the Hicks
  (2002) weights deepwave uses for its own off-grid receivers. Data and position gradients
  agree with deepwave's float ``receiver_locations`` path to float round-off
  (tests/imaging/test_wave.py).
- ``"bilinear"``: weights ``max(0, 1 - |j - p|)``; exact only for fields linear between
  cells. Against the Hicks path, on a 15 Hz wavefield at 10 m cells and over 100 random
  receiver sets, its data are up to 3.4 % off and its position gradients 11 % (median),
  22 % (90th percentile) and 57 % (max) off: a cheaper, different receiver, not an
  approximation of deepwave's.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from wavefront.errors import ConfigError

# Critical Courant numbers of the leapfrog scheme with a 2nd/4th/6th/8th-order Laplacian:
# stable when dt * v_max * sqrt(sum 1/dx_i^2) <= C. C = 2 / sqrt(peak of the stencil's
# symbol), e.g. 2 / sqrt(16/3) for the 4th-order stencil (-1/12, 4/3, -5/2, 4/3, -1/12).
CRITICAL_COURANT = {2: 1.0, 4: math.sqrt(3) / 2, 6: 2 / math.sqrt(272 / 45), 8: 2 / math.sqrt(2048 / 315)}
# Grid points per shortest wavelength that keep numerical dispersion small (rule of thumb
# for a few hundred wavelengths of travel); the shortest wavelength is v_min / f_max.
POINTS_PER_WAVELENGTH = {2: 8.0, 4: 4.0, 6: 3.5, 8: 3.0}
# A Ricker wavelet's amplitude spectrum at 2.5 times its peak frequency is ~3 % of the peak.
RICKER_FMAX_FACTOR = 2.5
SINC_HALFWIDTH = 4
SINC_BETA = 4.14  # Kaiser beta for half-width 4 (Hicks 2002, Table 2; deepwave's value)
KERNELS = ("bilinear", "sinc")


# ----------------------------------------------------------------------------- checks
def check_stability(dt_s: float, dx_m: float, v_max: float, v_min: float | None = None,
                    freq_hz: float | None = None, accuracy: int = 4) -> None:
    """Raises ConfigError unless the run obeys the CFL limit and the dispersion rule.

    CFL (2-D, square cells): ``dt_s <= C(accuracy) * dx_m / (v_max * sqrt(2))``.
    Dispersion (when ``v_min`` and ``freq_hz``, the Ricker peak, are given):
    ``dx_m <= v_min / (2.5 * freq_hz * points_per_wavelength(accuracy))``.
    """
    if accuracy not in CRITICAL_COURANT:
        raise ConfigError("accuracy", accuracy, "must be 2, 4, 6 or 8")
    if dt_s <= 0 or dx_m <= 0 or v_max <= 0:
        raise ConfigError("dt, dx, v_max", (dt_s, dx_m, v_max), "must all be positive")
    dt_limit = CRITICAL_COURANT[accuracy] * dx_m / (v_max * math.sqrt(2))
    if dt_s > dt_limit:
        raise ConfigError(
            "dt", dt_s,
            f"violates the CFL condition for dx={dx_m} m and v_max={v_max} m/s: "
            f"dt must be <= {dt_limit:.6g} s (Courant limit {CRITICAL_COURANT[accuracy]:.4f}, "
            f"accuracy {accuracy}, 2-D)",
        )
    if v_min is not None and freq_hz is not None:
        ppw = POINTS_PER_WAVELENGTH[accuracy]
        dx_limit = v_min / (RICKER_FMAX_FACTOR * freq_hz * ppw)
        if dx_m > dx_limit + 1e-9 * dx_limit:
            raise ConfigError(
                "dx", dx_m,
                f"too coarse for grid dispersion: with v_min={v_min} m/s and a {freq_hz} Hz Ricker "
                f"(f_max={RICKER_FMAX_FACTOR * freq_hz} Hz) dx must be <= {dx_limit:.6g} m "
                f"({ppw:g} points per shortest wavelength at accuracy {accuracy}; dt={dt_s} s)",
            )


def check_velocity(v: torch.Tensor, shape: tuple[int, int] | None = None) -> None:
    """Raises ConfigError unless ``v`` is a positive float map [ny, nx] (or [S, ny, nx])."""
    if v.ndim not in (2, 3) or not v.is_floating_point():
        raise ConfigError("velocity", tuple(v.shape), "must be a float map [ny, nx] or [shots, ny, nx]")
    if shape is not None and tuple(v.shape[-2:]) != tuple(shape):
        raise ConfigError("velocity", tuple(v.shape), f"must have spatial shape {tuple(shape)}")
    if not bool((v > 0).all()):
        raise ConfigError("velocity", float(v.detach().min()), "must be positive everywhere")


# ----------------------------------------------------------------------------- sources, models
def ricker(freq_hz: float, nt: int, dt_s: float, peak_time_s: float | None = None,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Returns a Ricker wavelet [nt]: ``(1 - 2 a) exp(-a)``, ``a = (pi f (t - t0))^2``.

    ``t0`` defaults to ``1.5 / freq_hz``, where the wavelet starts below 1e-4 of its peak.
    """
    t0 = 1.5 / freq_hz if peak_time_s is None else peak_time_s
    t = torch.arange(nt, dtype=torch.float64) * dt_s - t0
    a = (math.pi * freq_hz * t) ** 2
    return ((1 - 2 * a) * torch.exp(-a)).to(dtype)


def layered_velocity(shape: tuple[int, int], interfaces: list[int], velocities: list[float],
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Returns a layered velocity model [ny, nx] (m/s): layer i spans rows [interfaces[i-1], interfaces[i])."""
    if len(velocities) != len(interfaces) + 1:
        raise ConfigError("velocities", velocities, f"needs len(interfaces)+1 = {len(interfaces) + 1} values")
    v = torch.empty(shape, dtype=dtype)
    bounds = [0, *interfaces, shape[0]]
    for top, bottom, vel in zip(bounds[:-1], bounds[1:], velocities):
        v[top:bottom] = vel
    return v


def add_inclusion(v: torch.Tensor, centre: tuple[float, float], radius: float, velocity: float) -> torch.Tensor:
    """Returns a copy of ``v`` [ny, nx] with a disc (centre (row, col) and radius in cells) set to ``velocity``."""
    ny, nx = v.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(ny, dtype=torch.float32), torch.arange(nx, dtype=torch.float32), indexing="ij")
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    return torch.where(inside, torch.as_tensor(velocity, dtype=v.dtype), v)


def random_layered_model(shape: tuple[int, int], generator: torch.Generator, num_layers: int = 3,
                         v_range: tuple[float, float] = (1500.0, 4500.0), num_inclusions: int = 1) -> torch.Tensor:
    """Returns a random OpenFWI-style model [ny, nx]: velocity increasing with depth, plus discs."""
    ny, nx = shape
    u = torch.rand(4 * num_layers + 4 * num_inclusions, generator=generator).tolist()
    interfaces = sorted(int(ny * (0.15 + 0.7 * x)) for x in u[:num_layers - 1])
    lo, hi = v_range
    vels = sorted(lo + (hi - lo) * x for x in u[num_layers:2 * num_layers])
    v = layered_velocity(shape, interfaces, vels)
    for i in range(num_inclusions):
        a, b, c, d = u[4 * num_layers + 4 * i:4 * num_layers + 4 * i + 4]
        v = add_inclusion(v, (ny * (0.3 + 0.5 * a), nx * (0.15 + 0.7 * b)), 3 + 0.1 * min(shape) * c, lo + (hi - lo) * d)
    return v


# ----------------------------------------------------------------------------- propagation
@dataclass(frozen=True)
class Region:
    """A half-open rectangle of grid cells: rows [y0, y1), columns [x0, x1)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)

    def cells(self) -> torch.Tensor:
        """Returns the region's cell indices [Hr * Wr, 2] (row, col), row-major, int64."""
        yy, xx = torch.meshgrid(torch.arange(self.y0, self.y1), torch.arange(self.x0, self.x1), indexing="ij")
        return torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=-1)


_FLUSH_DEPTH = 0  # nesting depth of cpu_flush_to_zero blocks (the setting is process-wide)


@contextlib.contextmanager
def cpu_flush_to_zero():
    """Flushes subnormal floats to zero on CPU inside the block; the outermost block restores off.

    Why, and how much it matters: deepwave 0.1's own CPU kernels already run with
    flush-to-zero (its ``common_cpu.h``); measured on the 2-core CPU they return no subnormal
    values, flag or not. Subnormals appear when deepwave resamples the receiver data in time
    (``dt`` above its CFL target, e.g. 1 ms with 4500 m/s at 10 m), because that FFT runs in
    torch: 58k of 2.45M values at 70 x 70, 5 shots, 100 steps without the flag, none with it
    on one thread. The speed cost is small, not the 100x once claimed here: 5 shots of
    70 x 70, 1000 steps, 0.98 s without against 0.90 s with (the first deepwave call costs
    about 1-2 s of start-up either way, which is what the old figure measured). A torch
    multiply over subnormal values runs about 3x slower, so the block stays around network
    training as a cheap guard. Blocks nest; the flag is per CPU thread and torch sets it on
    the calling thread only.
    """
    global _FLUSH_DEPTH
    torch.set_flush_denormal(True)
    _FLUSH_DEPTH += 1
    try:
        yield
    finally:
        _FLUSH_DEPTH -= 1
        if _FLUSH_DEPTH == 0:
            torch.set_flush_denormal(False)


# Elements handled per step by the in-place flush and by the receiver gather: 4M floats
# (16 MB in float32), so their temporaries stay a small, fixed size whatever the field.
_CHUNK_ELEMS = 1 << 22
# Peak memory deepwave 0.1 adds per byte of recorded data, measured on CPU (50 shots, 70 x 70,
# 1000 steps, an 800-cell box; scripts/bench_wave.py): 2.85 when it records at the user's dt,
# 6.0 when it runs a finer internal step and resamples the receiver data with FFTs
# (step_ratio > 1): twice as many samples, their spectrum, and the result.
_DEEPWAVE_TRANSIENT = {1: 2.9, "resampled": 6.0}


def deepwave_step_ratio(dx_m: float, dt_s: float, v_max: float) -> int:
    """Returns deepwave's internal step ratio: how many solver steps it takes per ``dt_s`` (int >= 1)."""
    from deepwave.discretisation import cfl_condition

    return int(cfl_condition(dx_m, dx_m, dt_s, v_max)[1])


def propagate(v: torch.Tensor, dx_m: float, dt_s: float, source_amplitudes: torch.Tensor,
              source_locations: torch.Tensor, receiver_locations: torch.Tensor,
              pml_width: int = 20, accuracy: int = 4, freq_hz: float | None = None,
              check_dispersion: bool = True) -> torch.Tensor:
    """Returns receiver data [S, R, nt] from deepwave's scalar propagator (m/s, m, s).

    Args:
        v: velocity [ny, nx] (or [S, ny, nx]), m/s.
        source_amplitudes: [S, n_src, nt]. source_locations: [S, n_src, 2] int64 cells.
        receiver_locations: [S, R, 2] int64 cells, or float (deepwave's Hicks path).
        freq_hz: the source peak frequency, for the dispersion check and deepwave's PML.
        check_dispersion: False skips the dispersion rule (the caller warns instead); CFL is always checked.
    CFL and dispersion are checked here, before deepwave is called. The forward pass runs
    inside :func:`cpu_flush_to_zero`; the data are deepwave's own tensor (possibly a
    time-major view), with subnormal values set to zero in place.
    """
    import deepwave

    check_velocity(v)
    check_stability(dt_s, dx_m, float(v.detach().max()), float(v.detach().min()),
                    freq_hz if check_dispersion else None, accuracy)
    with cpu_flush_to_zero():
        out = deepwave.scalar(
            v, dx_m, dt_s, source_amplitudes=source_amplitudes, source_locations=source_locations,
            receiver_locations=receiver_locations, pml_width=pml_width, accuracy=accuracy,
            pml_freq=freq_hz if freq_hz is not None else 25.0,
        )
    return zero_subnormals_(out.receiver_amplitudes)


def zero_subnormals_(x: torch.Tensor) -> torch.Tensor:
    """Sets the subnormal entries of ``x`` to zero in place and returns ``x`` (any shape, float).

    The recorded data are later fed to networks, possibly on threads where
    :func:`cpu_flush_to_zero` does not apply (deepwave's FFT time resampling on a second torch
    thread leaves some). The pass runs over blocks of the dimension with the largest stride,
    so its temporaries stay near ``_CHUNK_ELEMS`` elements. It runs outside autograd: a
    flushed value is below 1.2e-38 (float32), and the gradient passes through unchanged.
    """
    if not x.is_floating_point() or x.numel() == 0:
        return x
    tiny = torch.finfo(x.dtype).tiny
    # deepwave returns a view whose storage may be time-major; walk the dimension with the
    # largest stride so each block is one contiguous stretch of memory.
    dim = max(range(x.ndim), key=lambda d: x.stride(d)) if x.ndim else 0
    blocks = x.movedim(dim, 0) if x.ndim else x.reshape(1)
    step = max(1, _CHUNK_ELEMS // max(1, blocks[0].numel()))
    with torch.no_grad():
        for i in range(0, blocks.shape[0], step):
            b = blocks[i:i + step]
            b.masked_fill_(b.abs() < tiny, 0)
    return x


# How far a recording region may reach beyond the model: the sinc kernel's support (3 cells)
# around a receiver on the model's edge, with a cell to spare.
MAX_EDGE_PAD = SINC_HALFWIDTH


def _pad_for_region(v: torch.Tensor, source_locations: torch.Tensor, region: Region
                    ) -> tuple[torch.Tensor, torch.Tensor, Region]:
    """Returns (v, sources, region) with the model extended by its edge values so that ``region`` lies inside it.

    Extending by edge values is what deepwave does itself to build its absorbing layer, which
    then starts that many cells further out; sources and the region shift with the padding.
    No copy when the region is already inside. Differentiable in ``v``.
    """
    ny, nx = v.shape[-2:]
    top, left = max(0, -region.y0), max(0, -region.x0)
    bottom, right = max(0, region.y1 - ny), max(0, region.x1 - nx)
    if not (top or left or bottom or right):
        return v, source_locations, region
    v4 = v.reshape(-1, 1, ny, nx)
    padded = torch.nn.functional.pad(v4, (left, right, top, bottom), mode="replicate")
    padded = padded.reshape(*v.shape[:-2], ny + top + bottom, nx + left + right)
    shift = torch.tensor([top, left], dtype=source_locations.dtype, device=source_locations.device)
    return padded, source_locations + shift, Region(region.y0 + top, region.y1 + top, region.x0 + left, region.x1 + left)


def record_region(v: torch.Tensor, dx_m: float, dt_s: float, source_amplitudes: torch.Tensor,
                  source_locations: torch.Tensor, region: Region, shots_per_call: int | None = None,
                  pml_width: int = 20, accuracy: int = 4, freq_hz: float | None = None) -> torch.Tensor:
    """Returns the wavefield on every cell of ``region``, [S, nt, Hr, Wr] (solver units), via integer receivers.

    The result is a view with time as the *fastest* dimension in memory (storage
    [S, Hr, Wr, nt], or deepwave's own layout when it is one call): it is never copied into
    another layout. :func:`sample_field` reads any layout without a copy.

    Args:
        v: velocity [ny, nx] (or [S, ny, nx]), m/s.
        source_amplitudes: [S, n_src, nt]. source_locations: [S, n_src, 2] int64 cells.
        region: the cells to record; it may reach up to ``MAX_EDGE_PAD`` cells beyond the model, which is
            then extended by its edge values there (:func:`_pad_for_region`).
        shots_per_call: shots per deepwave call. ``None`` chooses it so the memory deepwave
            needs beyond the recorded field stays below half the field: deepwave's own
            transient is about 2.9x the data it records, 6x when it resamples in time, so
            the shots run in chunks of S/6 or S/12. Chunks are written into one preallocated
            field, or concatenated when gradients to ``v`` or the sources are needed.
    """
    ny, nx = v.shape[-2:]
    m = MAX_EDGE_PAD
    if (region.y0 < -m or region.x0 < -m or region.y1 > ny + m or region.x1 > nx + m or region.y1 <= region.y0
            or region.x1 <= region.x0):
        raise ConfigError("region", region, f"must be a non-empty part of the {ny}x{nx} model, reaching at most {m} "
                                            f"cells beyond its edges")
    v, source_locations, region = _pad_for_region(v, source_locations, region)
    shots, nt = source_amplitudes.shape[0], source_amplitudes.shape[-1]
    if shots_per_call is None:
        ratio = deepwave_step_ratio(dx_m, dt_s, float(v.detach().max()))
        transient = _DEEPWAVE_TRANSIENT[1] if ratio == 1 else _DEEPWAVE_TRANSIENT["resampled"]
        shots_per_call = max(1, int(0.5 * shots / transient))
    elif shots_per_call < 1:
        raise ConfigError("shots_per_call", shots_per_call, "must be a positive integer or None")
    hr, wr = region.shape
    cells = region.cells().to(source_locations.device)
    kwargs = dict(pml_width=pml_width, accuracy=accuracy, freq_hz=freq_hz)

    def run(s0: int, s1: int) -> torch.Tensor:
        v_part = v[s0:s1] if v.ndim == 3 else v
        rec = cells.unsqueeze(0).expand(s1 - s0, -1, -1).contiguous()
        return propagate(v_part, dx_m, dt_s, source_amplitudes[s0:s1], source_locations[s0:s1], rec, **kwargs)

    if shots_per_call >= shots:
        data = run(0, shots)  # [S, R, nt], a view of deepwave's storage
    elif torch.is_grad_enabled() and (v.requires_grad or source_amplitudes.requires_grad):
        data = torch.cat([run(s, min(s + shots_per_call, shots)) for s in range(0, shots, shots_per_call)])
    else:
        data = torch.empty(shots, hr * wr, nt, dtype=source_amplitudes.dtype, device=source_amplitudes.device)
        for s in range(0, shots, shots_per_call):
            s1 = min(s + shots_per_call, shots)
            data[s:s1].copy_(run(s, s1))
    return data.reshape(shots, hr, wr, nt).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- interpolation
def _halfwidth(kernel: str) -> int:
    """Returns the kernel's half-width in cells: weights vanish for |j - p| >= it."""
    if kernel == "bilinear":
        return 1
    if kernel == "sinc":
        return SINC_HALFWIDTH
    raise ConfigError("kernel", kernel, f"must be one of {KERNELS}")


def kernel_weights(d: torch.Tensor, kernel: str = "sinc") -> torch.Tensor:
    """Returns the 1-D kernel ``k(d)`` at offsets ``d = j - p`` (cells), same shape and dtype.

    ``max(0, 1 - |d|)`` (bilinear) or ``sinc(d) I0(b sqrt(1 - (d/4)^2)) / I0(b)`` for
    ``|d| < 4``, else 0 (sinc, b = 4.14): the Hicks (2002) weights, written as deepwave
    writes them. Differentiable in ``d``.
    """
    if kernel == "bilinear":
        return torch.clamp(1 - d.abs(), min=0)
    if kernel == "sinc":
        h = SINC_HALFWIDTH
        inside = d.abs() < h
        u = torch.where(inside, 1 - (d / h) ** 2, torch.ones_like(d))
        beta = torch.tensor(SINC_BETA, dtype=d.dtype, device=d.device)
        # The 1e-30 keeps d sqrt/du finite at the window edge (as deepwave does) without changing values.
        w = torch.sinc(d) * torch.i0(beta * (u + 1e-30).sqrt()) / torch.i0(beta)
        return torch.where(inside, w, torch.zeros_like(w))
    raise ConfigError("kernel", kernel, f"must be one of {KERNELS}")


def interpolation_weights(positions: torch.Tensor, n: int, kernel: str = "sinc") -> torch.Tensor:
    """Returns dense 1-D interpolation weights [K, n]: node ``j`` gets ``k(j - p)`` for ``positions`` [K].

    For inspection and tests; :func:`sample_field` uses only the ``2 * halfwidth`` nodes
    around each position.
    """
    d = torch.arange(n, dtype=positions.dtype, device=positions.device)[None, :] - positions[:, None]
    return kernel_weights(d, kernel)


def _axis_support(p: torch.Tensor, n: int, kernel: str, axis: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (node indices [K, L] int64, weights [K, L]) of positions ``p`` [K] on an axis of ``n`` cells.

    An axis of one cell is fixed: one node, weight ``k(0 - p)``, and ``p`` must be 0. On a
    longer axis the ``L = 2 h`` nodes ``floor(p) - h + 1 .. floor(p) + h`` hold every
    non-zero weight; ``p`` must keep them inside the axis: ``h - 1 <= p <= n - h``.
    """
    h = _halfwidth(kernel)
    if n == 1:
        if bool((p != 0).any()):
            raise ConfigError("positions", float(p.detach().abs().max()), f"must be 0 on the {axis} axis of a one-cell region")
        return torch.zeros_like(p, dtype=torch.long)[:, None], kernel_weights(-p, kernel)[:, None]
    lo, hi = float(p.detach().min()), float(p.detach().max())
    if lo < h - 1 - 1e-4 or hi > n - h + 1e-4:
        raise ConfigError("positions", (lo, hi),
                          f"{axis} positions must lie in [{h - 1}, {n - h}] of a {n}-cell region: the {kernel} "
                          f"kernel reads {h - 1} cell(s) beyond them")
    steps = torch.arange(1 - h, h + 1, device=p.device)
    nodes = p.detach().floor().long()[:, None] + steps[None, :]
    w = kernel_weights(nodes.to(p.dtype) - p[:, None], kernel)
    # A node past the edge only occurs where its weight is exactly zero; clamp its index.
    return nodes.clamp(0, n - 1), w


def _field_as_cells_by_time(field: torch.Tensor) -> torch.Tensor:
    """Returns ``field`` [S, nt, Hr, Wr] as [S, Hr*Wr, nt], a view whenever the strides allow."""
    s, nt, hr, wr = field.shape
    return field.permute(0, 2, 3, 1).reshape(s, hr * wr, nt)


def _chunks(shots: int, nt: int, per_shot_step: int, budget: int):
    """Yields (s0, s1, t0, t1) blocks of at most ``budget`` gathered elements (one step at least)."""
    per_step = max(1, per_shot_step)
    tc = min(nt, max(1, budget // per_step))
    sc = max(1, budget // (per_step * tc))
    for s0 in range(0, shots, sc):
        for t0 in range(0, nt, tc):
            yield s0, min(s0 + sc, shots), t0, min(t0 + tc, nt)


class _GatherSample(torch.autograd.Function):
    """data[s, k, t] = sum_m w[k, m] F[s, idx[k, m], t], in blocks; backward recomputes the gathers.

    The gathered block (K*M values per shot and step, e.g. 512 for 8 sinc receivers) is
    bounded by ``_gather_budget``: a fixed 16 MB at most and an eighth of the field at most,
    so thin regions (a line of 68 cells) do not pay more for the gather than for the field.
    One block buffer is reused for every block.
    """

    @staticmethod
    def forward(ctx, field, index, weights):
        cells = _field_as_cells_by_time(field)
        shots, _, nt = cells.shape
        k, m = weights.shape
        out = torch.empty(shots, k, nt, dtype=field.dtype, device=field.device)
        flat = index.reshape(-1)
        w = weights[None, :, :, None]
        buf = None
        for s0, s1, t0, t1 in _chunks(shots, nt, k * m, _gather_budget(field)):
            g, buf = _gather(cells[s0:s1, :, t0:t1], flat, buf)
            out[s0:s1, :, t0:t1] = g.view(s1 - s0, k, m, t1 - t0).mul_(w).sum(2)
        ctx.save_for_backward(field, index, weights)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        field, index, weights = ctx.saved_tensors
        cells = _field_as_cells_by_time(field)
        shots, _, nt = cells.shape
        k, m = weights.shape
        flat = index.reshape(-1)
        grad_w = torch.zeros_like(weights) if ctx.needs_input_grad[2] else None
        grad_field = torch.zeros_like(field) if ctx.needs_input_grad[0] else None
        grad_cells = _field_as_cells_by_time(grad_field) if grad_field is not None else None
        buf = None
        for s0, s1, t0, t1 in _chunks(shots, nt, k * m, _gather_budget(field)):
            go = grad_out[s0:s1, :, t0:t1]
            if grad_w is not None:
                g, buf = _gather(cells[s0:s1, :, t0:t1], flat, buf)
                grad_w += torch.einsum("skt,skmt->km", go, g.view(s1 - s0, k, m, t1 - t0))
            if grad_cells is not None:
                spread = (go[:, :, None, :] * weights[None, :, :, None]).reshape(s1 - s0, k * m, t1 - t0)
                grad_cells[s0:s1, :, t0:t1].index_add_(1, flat, spread)
        return grad_field, None, grad_w


def _gather_budget(field: torch.Tensor) -> int:
    """Returns the gathered elements per block: at most ``_CHUNK_ELEMS`` and an eighth of the field."""
    return max(1 << 12, min(_CHUNK_ELEMS, field.numel() // 8))


def _gather(block: torch.Tensor, flat: torch.Tensor, buf: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (block.index_select(1, flat), the buffer it was written into), reusing ``buf``."""
    n = block.shape[0] * flat.numel() * block.shape[2]
    if buf is None or buf.numel() < n:
        buf = torch.empty(n, dtype=block.dtype, device=block.device)
    out = buf[:n].view(block.shape[0], flat.numel(), block.shape[2])
    torch.index_select(block, 1, flat, out=out)
    return out, buf


def sample_field(field: torch.Tensor, positions: torch.Tensor, kernel: str = "sinc") -> torch.Tensor:
    """Returns the field sampled at continuous positions, [S, K, nt] (field's dtype and unit).

    Args:
        field: [S, nt, Hr, Wr] wavefield on a recording region, any strides (the
            time-fastest views of :func:`record_region` are read without a copy).
        positions: [K, 2] (row, col) in the region's own fractional cell indices; on an
            axis longer than one cell they must keep the kernel's support inside the region.
        kernel: ``"sinc"`` (default, deepwave's Hicks weights) or ``"bilinear"``.
    ``data[s,k,t] = sum_ij wy[k,i] wx[k,j] field[s,t,i,j]`` over the ``(2h)^2`` nodes around
    each position only (64 for the sinc, 4 for bilinear): S*K*nt*(2h)^2 multiply-adds, in
    blocks of fixed size; gradients flow to ``positions`` and to ``field``.
    """
    if field.ndim != 4:
        raise ConfigError("field", tuple(field.shape), "must be [shots, nt, rows, cols]")
    if positions.ndim != 2 or positions.shape[-1] != 2:
        raise ConfigError("positions", tuple(positions.shape), "must be [K, 2] (row, col)")
    hr, wr = field.shape[-2:]
    pos = positions.to(field.dtype)
    iy, wy = _axis_support(pos[:, 0], hr, kernel, "row")
    ix, wx = _axis_support(pos[:, 1], wr, kernel, "column")
    index = (iy[:, :, None] * wr + ix[:, None, :]).reshape(len(pos), -1)
    weights = (wy[:, :, None] * wx[:, None, :]).reshape(len(pos), -1)
    return _GatherSample.apply(field, index, weights)


def _support(kernel: str) -> int:
    """Returns how many cells beyond a position range [lo, hi] the kernel reads on each side.

    Bilinear weights vanish beyond the two neighbours, which lie in [lo, hi]; the sinc
    reads nodes with |j - p| < 4, i.e. up to 3 cells beyond either end.
    """
    return _halfwidth(kernel) - 1


def regular_positions(num_receivers: int, candidate: Region, span: tuple[float, float] | None = None) -> torch.Tensor:
    """Returns K evenly spaced positions [K, 2] (row, col) in model cells, float64.

    The points are the centres of K equal segments of ``span`` (first and last cell along the
    candidate's longer axis; default the whole axis), on the middle row or column of the
    other axis: the regular-array baseline, or an array spread over a sub-range.
    """
    hr, wr = candidate.shape
    long_axis = 1 if wr >= hr else 0
    lo = (candidate.y0, candidate.x0)
    hi = (candidate.y1 - 1, candidate.x1 - 1)
    a, b = span if span is not None else (lo[long_axis], hi[long_axis])
    if not (lo[long_axis] <= a <= b <= hi[long_axis]):
        raise ConfigError("span", (a, b), f"must be an increasing range inside [{lo[long_axis]}, {hi[long_axis]}]")
    pos = torch.empty(num_receivers, 2, dtype=torch.float64)
    pos[:, 1 - long_axis] = (lo[1 - long_axis] + hi[1 - long_axis]) / 2
    pos[:, long_axis] = a + (b - a) * (torch.arange(num_receivers, dtype=torch.float64) + 0.5) / num_receivers
    return pos


class LearnableReceivers(nn.Module):
    """K receivers at continuous, learnable positions inside a candidate region.

    Args:
        num_receivers: K.
        candidate: the cells receivers may sit on (a one-row region is a line: depth fixed).
        model_shape: (ny, nx) of the velocity model, to check that the support fits.
        kernel: ``"sinc"`` (default; deepwave's Hicks receivers) or ``"bilinear"``.
        learnable: False fixes the positions (a baseline array).
        initial_positions: [K, 2] (row, col) model cells to start from; default
            :func:`regular_positions` over the whole candidate region.

    Positions are ``lo + sigmoid(raw) * (hi - lo)`` per axis, with ``[lo, hi]`` the first
    and last candidate cell, so they stay inside the candidate region for any parameters.
    """

    def __init__(self, num_receivers: int, candidate: Region, model_shape: tuple[int, int],
                 kernel: str = "sinc", learnable: bool = True, initial_positions: torch.Tensor | None = None):
        super().__init__()
        if kernel not in KERNELS:
            raise ConfigError("kernel", kernel, f"must be one of {KERNELS}")
        hr, wr = candidate.shape
        if hr < 1 or wr < 1:
            raise ConfigError("candidate", candidate, "must be a non-empty region")
        if num_receivers < 1 or num_receivers > hr * wr:
            raise ConfigError("receivers", num_receivers,
                              f"must be between 1 and the {hr * wr} cells of the candidate region {hr}x{wr}")
        # A one-cell axis is fixed at an integer cell, where every kernel is a unit spike.
        my = _support(kernel) if hr > 1 else 0
        mx = _support(kernel) if wr > 1 else 0
        rec = Region(candidate.y0 - my, candidate.y1 + my, candidate.x0 - mx, candidate.x1 + mx)
        ny, nx = model_shape
        if candidate.y0 < 0 or candidate.x0 < 0 or candidate.y1 > ny or candidate.x1 > nx:
            raise ConfigError("candidate", candidate, f"must lie inside the {ny}x{nx} model")
        # The kernel's support may reach beyond the model: record_region extends the model by its edge values there.
        self.kernel, self.candidate, self.recording = kernel, candidate, rec
        self.num_receivers = num_receivers
        lo = torch.tensor([candidate.y0, candidate.x0], dtype=torch.float64)
        hi = torch.tensor([candidate.y1 - 1, candidate.x1 - 1], dtype=torch.float64)
        self.register_buffer("lo", lo.float())
        self.register_buffer("hi", hi.float())
        if initial_positions is None:
            initial_positions = regular_positions(num_receivers, candidate)
        init = torch.as_tensor(initial_positions, dtype=torch.float64)
        if tuple(init.shape) != (num_receivers, 2):
            raise ConfigError("initial_positions", tuple(init.shape), f"must be [{num_receivers}, 2] (row, col)")
        if bool((init < lo).any() or (init > hi).any()):
            raise ConfigError("initial_positions", init.tolist(),
                              f"must lie in rows [{candidate.y0}, {candidate.y1 - 1}] and columns "
                              f"[{candidate.x0}, {candidate.x1 - 1}] of the candidate region")
        frac = torch.where(hi > lo, (init - lo) / (hi - lo).clamp(min=1), torch.full_like(init, 0.5))
        raw = torch.logit(frac.clamp(1e-4, 1 - 1e-4))
        self.raw = nn.Parameter(raw.float(), requires_grad=learnable)

    def positions(self) -> torch.Tensor:
        """Returns receiver positions [K, 2] (row, col) in model cells, float."""
        return self.lo + torch.sigmoid(self.raw) * (self.hi - self.lo)

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        """Returns receiver data [S, K, nt] from the field [S, nt, Hr, Wr] on ``self.recording``."""
        if tuple(field.shape[-2:]) != self.recording.shape:
            raise ConfigError("field", tuple(field.shape), f"must be recorded on region {self.recording} ({self.recording.shape})")
        offset = torch.tensor([self.recording.y0, self.recording.x0], dtype=self.lo.dtype, device=self.lo.device)
        pos = self.positions() - offset
        return sample_field(field, pos.to(field.dtype), self.kernel)


class WaveFrontEnd(nn.Module):
    """Scene to receiver data: deepwave propagation plus :class:`LearnableReceivers`.

    Args:
        receivers: the receiver module (its ``recording`` region is what deepwave records).
        dx_m, dt_s, freq_hz: grid spacing (m), time step (s), source peak frequency (Hz).
    ``record`` runs the solver once (no receiver gradients needed); ``forward`` = record + sample.
    """

    def __init__(self, receivers: LearnableReceivers, dx_m: float, dt_s: float, freq_hz: float,
                 pml_width: int = 20, accuracy: int = 4):
        super().__init__()
        self.receivers = receivers
        self.dx_m, self.dt_s, self.freq_hz = dx_m, dt_s, freq_hz
        self.pml_width, self.accuracy = pml_width, accuracy

    def record(self, v: torch.Tensor, source_amplitudes: torch.Tensor, source_locations: torch.Tensor) -> torch.Tensor:
        """Returns the wavefield on the recording region, [S, nt, Hr, Wr]."""
        return record_region(v, self.dx_m, self.dt_s, source_amplitudes, source_locations, self.receivers.recording,
                             pml_width=self.pml_width, accuracy=self.accuracy, freq_hz=self.freq_hz)

    def forward(self, v: torch.Tensor, source_amplitudes: torch.Tensor, source_locations: torch.Tensor) -> torch.Tensor:
        """Returns receiver data [S, K, nt] at the current receiver positions."""
        return self.receivers(self.record(v, source_amplitudes, source_locations))
