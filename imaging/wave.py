"""Wave-equation front end: deepwave propagation and receivers at learnable, continuous positions.

deepwave's fast path records at integer grid cells. wavefront records the wavefield on every
cell of a *recording region* (the candidate region plus the interpolation support) with
integer receivers, then samples it at continuous receiver positions in one batched
contraction whose gradients flow to the positions. The wavefield does not depend on where
passive receivers sit, so a co-design loop can simulate once and move receivers for free.

Units: velocities in m/s, grid spacing ``dx_m`` in m, time step ``dt_s`` in s, frequencies
in Hz. Grid coordinates are (row, column) = (depth, lateral) cell indices, deepwave's order.
Interpolation kernels:

- ``"bilinear"``: weights ``max(0, 1 - |j - p|)``; exact for fields linear between cells.
- ``"sinc"``: Kaiser-windowed sinc of half-width 4 and beta 4.14, the Hicks (2002) weights
  deepwave uses for its own off-grid receivers, so the two agree to round-off.
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
        raise ConfigError("velocity", float(v.min()), "must be positive everywhere")


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


_FLUSH_DEPTH = 0  # nesting depth of flush_denormals blocks (the setting is process-wide)


@contextlib.contextmanager
def flush_denormals():
    """Flushes subnormal floats to zero on CPU inside the block; the outermost block restores off.

    Why: the leading edge of a wave and the field decaying in the PML pass through subnormal
    values, which x86 CPUs process ~100x slower. Measured on the 2-core CPU with deepwave
    0.1.0, 5 shots of 70 x 70 (PML 20) for 100 steps: 4.1 s without, 0.011 s with. Values
    below ~1e-38 of the field's unit change; the recorded data do not, at float32 precision.
    Blocks nest: wrap a whole script or training loop in one, and the ``propagate`` calls
    inside keep it on. Backward passes through deepwave run after ``propagate`` returns, so
    wrap them too. The flag is per CPU thread; torch sets it on the calling thread.
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


def propagate(v: torch.Tensor, dx_m: float, dt_s: float, source_amplitudes: torch.Tensor,
              source_locations: torch.Tensor, receiver_locations: torch.Tensor,
              pml_width: int = 20, accuracy: int = 4, freq_hz: float | None = None) -> torch.Tensor:
    """Returns receiver data [S, R, nt] from deepwave's scalar propagator (m/s, m, s).

    Args:
        v: velocity [ny, nx] (or [S, ny, nx]), m/s.
        source_amplitudes: [S, n_src, nt]. source_locations: [S, n_src, 2] int64 cells.
        receiver_locations: [S, R, 2] int64 cells, or float (deepwave's Hicks path).
        freq_hz: the source peak frequency, for the dispersion check and deepwave's PML.
    CFL and dispersion are checked here, before deepwave is called. The forward pass runs
    inside :func:`flush_denormals`.
    """
    import deepwave

    check_velocity(v)
    check_stability(dt_s, dx_m, float(v.max()), float(v.min()), freq_hz, accuracy)
    with flush_denormals():
        out = deepwave.scalar(
            v, dx_m, dt_s, source_amplitudes=source_amplitudes, source_locations=source_locations,
            receiver_locations=receiver_locations, pml_width=pml_width, accuracy=accuracy,
            pml_freq=freq_hz if freq_hz is not None else 25.0,
        )
    return flush_subnormal_values(out.receiver_amplitudes)


def flush_subnormal_values(x: torch.Tensor) -> torch.Tensor:
    """Returns ``x`` with subnormal entries set to zero (same shape and dtype).

    The recorded data are later fed to networks, possibly on threads where
    :func:`flush_denormals` does not apply; zeros keep them at full speed there.
    """
    if not x.is_floating_point():
        return x
    return torch.where(x.abs() < torch.finfo(x.dtype).tiny, torch.zeros_like(x), x)


def record_region(v: torch.Tensor, dx_m: float, dt_s: float, source_amplitudes: torch.Tensor,
                  source_locations: torch.Tensor, region: Region, **kwargs) -> torch.Tensor:
    """Returns the wavefield on every cell of ``region``, [S, nt, Hr, Wr], via integer receivers."""
    ny, nx = v.shape[-2:]
    if region.y0 < 0 or region.x0 < 0 or region.y1 > ny or region.x1 > nx or region.y1 <= region.y0 or region.x1 <= region.x0:
        raise ConfigError("region", region, f"must be a non-empty part of the {ny}x{nx} model")
    shots = source_amplitudes.shape[0]
    cells = region.cells().to(source_locations.device).unsqueeze(0).expand(shots, -1, -1).contiguous()
    data = propagate(v, dx_m, dt_s, source_amplitudes, source_locations, cells, **kwargs)
    return data.reshape(shots, *region.shape, -1).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- interpolation
def interpolation_weights(positions: torch.Tensor, n: int, kernel: str = "bilinear") -> torch.Tensor:
    """Returns dense 1-D interpolation weights [K, n] for fractional indices ``positions`` [K].

    Node ``j`` gets ``k(j - p)``: ``max(0, 1 - |d|)`` (bilinear) or the Kaiser-windowed sinc
    of half-width 4 (sinc). The weights are differentiable in ``positions``.
    """
    d = torch.arange(n, dtype=positions.dtype, device=positions.device)[None, :] - positions[:, None]
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


def sample_field(field: torch.Tensor, positions: torch.Tensor, kernel: str = "bilinear") -> torch.Tensor:
    """Returns the field sampled at continuous positions, [S, K, nt].

    Args:
        field: [S, nt, Hr, Wr] wavefield on a recording region.
        positions: [K, 2] (row, col) in the region's own fractional cell indices.
    One contraction ``data[s,k,t] = sum_ij wy[k,i] wx[k,j] field[s,t,i,j]``; the cost is
    S*K*nt*Hr*Wr multiply-adds, small beside the propagation for thin regions.
    """
    wy = interpolation_weights(positions[:, 0], field.shape[-2], kernel).to(field.dtype)
    wx = interpolation_weights(positions[:, 1], field.shape[-1], kernel).to(field.dtype)
    rows = torch.einsum("stij,ki->sktj", field, wy)  # [S, K, nt, Wr]
    return torch.einsum("sktj,kj->skt", rows, wx)


def _support(kernel: str) -> int:
    """Returns how many cells beyond a position range [lo, hi] the kernel reads on each side.

    Bilinear weights vanish beyond the two neighbours, which lie in [lo, hi]; the sinc
    reads nodes with |j - p| < 4, i.e. up to 3 cells beyond either end.
    """
    return 0 if kernel == "bilinear" else SINC_HALFWIDTH - 1


class LearnableReceivers(nn.Module):
    """K receivers at continuous, learnable positions inside a candidate region.

    Args:
        num_receivers: K.
        candidate: the cells receivers may sit on (a one-row region is a line: depth fixed).
        model_shape: (ny, nx) of the velocity model, to check that the support fits.
        kernel: ``"bilinear"`` or ``"sinc"``.
        learnable: False fixes the positions (the regular-array baseline).

    Positions are ``lo + sigmoid(raw) * (hi - lo)`` per axis, with ``[lo, hi]`` the first
    and last candidate cell, so they stay inside the candidate region for any parameters.
    They start as a regular array: K evenly spaced points along the longer axis (centres
    of K equal segments), on the middle row or column of the other axis.
    """

    def __init__(self, num_receivers: int, candidate: Region, model_shape: tuple[int, int],
                 kernel: str = "bilinear", learnable: bool = True):
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
        if rec.y0 < 0 or rec.x0 < 0 or rec.y1 > ny or rec.x1 > nx:
            raise ConfigError("candidate", candidate,
                              f"with the {kernel} support it needs cells {rec}, outside the {ny}x{nx} model")
        self.kernel, self.candidate, self.recording = kernel, candidate, rec
        self.num_receivers = num_receivers
        lo = torch.tensor([candidate.y0, candidate.x0], dtype=torch.float64)
        hi = torch.tensor([candidate.y1 - 1, candidate.x1 - 1], dtype=torch.float64)
        self.register_buffer("lo", lo.float())
        self.register_buffer("hi", hi.float())
        long_axis = 1 if wr >= hr else 0
        frac = torch.full((num_receivers, 2), 0.5, dtype=torch.float64)
        frac[:, long_axis] = (torch.arange(num_receivers, dtype=torch.float64) + 0.5) / num_receivers
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
