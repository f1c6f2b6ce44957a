"""Differentiable sensor layouts and the sensor simulator that integrates images over them.

After "Differentiable Sensor Layouts for End-to-End Learning of Task-Specific Camera
Parameters" (2023). A layout maps a regular ``h x w`` pixel grid onto a high-resolution
image of ``H x W`` pixels; each sensor pixel reports the mean of the image over its cell.

Coordinates are in high-resolution pixel units: the image covers ``[0, H] x [0, W]`` and
high-resolution pixel ``(i, j)`` is the unit square ``[i, i+1] x [j, j+1]``.

Two layouts keep the regular topology by construction, whatever their parameter values:

- :class:`RectangularLayout`: monotone row and column edges from softmax widths
  (``edges = H * cumsum(softmax(logits))``), so every cell is a rectangle of positive size
  inside the image. Its sensor image is exact (summed-area table, fractional edges).
- :class:`CurvilinearLayout`: a smooth bijection of the image onto itself built as a
  triangular map ``x' = g(x; y)``, ``y' = h(y; x')`` with strictly increasing 1-D sine-series
  components; its Jacobian determinant ``g_x * h_y`` is positive everywhere.

The functional core is :func:`rectangular_edges`, :func:`rectangular_cell_means`,
:func:`curvilinear_warp` and :func:`warped_cell_means`; the modules hold parameters.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wavefront.errors import ConfigError

# Each sine mode's coefficient is bounded by _MODE_BOUND / num_modes, so the derivative
# 1 + sum_k c_k cos(k pi u) stays >= 1 - _MODE_BOUND > 0: the warp never folds.
_MODE_BOUND = 0.9
# A rectangular cell never shrinks below this fraction of the regular width: a zero-width
# cell would have an undefined mean (0/0) and stop passing gradients.
_MIN_WIDTH_FRAC = 0.1


def _check_pixels(pixels: tuple[int, int], image_size: tuple[int, int]) -> None:
    h, w = int(pixels[0]), int(pixels[1])
    if h < 1 or w < 1:
        raise ConfigError("pixels", f"{pixels[0]}x{pixels[1]}", "needs at least 1x1 sensor pixels")
    if h > image_size[0] or w > image_size[1]:
        raise ConfigError(
            "pixels", f"{h}x{w}",
            f"the layout has more pixels than the {image_size[0]}x{image_size[1]} image it samples",
        )


def check_images(images: torch.Tensor, image_size: tuple[int, int]) -> None:
    """Raises ConfigError unless ``images`` is a float tensor [B, C, H, W] of the layout's size."""
    if images.ndim != 4 or tuple(images.shape[-2:]) != tuple(image_size):
        raise ConfigError(
            "images", tuple(images.shape),
            f"must be [B, C, {image_size[0]}, {image_size[1]}] to match the layout's image size",
        )
    if not images.is_floating_point():
        raise ConfigError("images", str(images.dtype), "must be a floating-point tensor")


# ----------------------------------------------------------------------------- rectangular
def rectangular_edges(logits: torch.Tensor, length: int, min_width_frac: float = _MIN_WIDTH_FRAC) -> torch.Tensor:
    """Returns monotone cell edges [n + 1] in [0, length] from width logits [n].

    Width ``i`` is ``length * (m / n + (1 - m) * softmax(logits)_i)`` with
    ``m = min_width_frac``: every cell keeps at least ``m`` times the regular width, so the
    edges are strictly increasing and no cell degenerates even when softmax underflows.
    ``edges[0] == 0`` and ``edges[-1] == length`` exactly. Zero logits give the regular grid.
    """
    n = logits.shape[-1]
    widths = (min_width_frac / n + (1 - min_width_frac) * torch.softmax(logits, dim=-1)) * length
    inner = torch.cumsum(widths, dim=-1)[:-1]
    zero = logits.new_zeros(1)
    # The last edge is set, not summed, so the rounding of cumsum cannot push it past the image.
    end = logits.new_full((1,), float(length))
    return torch.cat([zero, inner.clamp(0, length), end])


def _lerp_on_segment(table: torch.Tensor, pos: torch.Tensor, i0: torch.Tensor, dim: int) -> torch.Tensor:
    """Linear interpolation of ``table`` along ``dim`` at ``pos`` [n], on the segments [i0, i0 + 1]."""
    frac = (pos - i0.to(pos.dtype)).to(table.dtype)
    shape = [1] * table.ndim
    shape[dim] = -1
    frac = frac.reshape(shape)
    return table.index_select(dim, i0) * (1 - frac) + table.index_select(dim, i0 + 1) * frac


def _interp_along(table: torch.Tensor, pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Linearly interpolates ``table`` along ``dim`` at fractional indices ``pos`` [n].

    At an integer ``pos`` the interpolant has a kink. The value is exact either way; the
    derivative is the mean of the two one-sided slopes, i.e. what a central finite difference
    gives, not the right-hand slope alone. The regular grid puts every edge on an integer, so
    this is the gradient the layout starts its training from.
    """
    size = table.shape[dim]
    below = pos.detach().floor().long().clamp(0, size - 2)  # the segment to the right of a knot
    above = (pos.detach().ceil().long() - 1).clamp(0, size - 2)  # the segment to its left
    return 0.5 * (_lerp_on_segment(table, pos, below, dim) + _lerp_on_segment(table, pos, above, dim))


def rectangular_cell_means(images: torch.Tensor, edges_y: torch.Tensor, edges_x: torch.Tensor) -> torch.Tensor:
    """Returns the mean of ``images`` over each rectangular cell, [B, C, h, w].

    Args:
        images: [B, C, H, W] float, treated as piecewise constant on unit pixels.
        edges_y: [h + 1] increasing row edges in [0, H] (pixel units).
        edges_x: [w + 1] increasing column edges in [0, W] (pixel units).

    The integral image ``F(y, x) = int_0^y int_0^x image`` of a piecewise-constant image is
    bilinear inside each pixel and equals the summed-area table at integer corners, so
    bilinear interpolation of the table at fractional edges is exact. The table is
    accumulated in float64 because the corner differences cancel most of its magnitude.

    A non-finite pixel (NaN, +-inf) stays in the cells that overlap it by a positive area, as
    in a direct mean: NaN there (+-inf for infinities of one sign), the other cells exact. A
    summed-area table would carry it into every corner below and right of it, so the table is
    built with such pixels at zero and the cells that hold them are set afterwards.
    """
    finite = torch.isfinite(images)
    clean = bool(finite.all())
    values = images if clean else torch.where(finite, images, torch.zeros((), dtype=images.dtype, device=images.device))
    sat = values.to(torch.float64).cumsum(-2).cumsum(-1)
    sat = F.pad(sat, (1, 0, 1, 0))  # F(0, x) = F(y, 0) = 0
    ey, ex = edges_y.to(torch.float64), edges_x.to(torch.float64)
    corners = _interp_along(_interp_along(sat, ey, -2), ex, -1)  # [B, C, h+1, w+1]
    integral = corners[..., 1:, 1:] - corners[..., :-1, 1:] - corners[..., 1:, :-1] + corners[..., :-1, :-1]
    area = (ey[1:] - ey[:-1])[:, None] * (ex[1:] - ex[:-1])[None, :]
    means = (integral / area).to(images.dtype)
    return means if clean else _set_non_finite_cells(means, images, ey.detach(), ex.detach())


def _set_non_finite_cells(means: torch.Tensor, images: torch.Tensor, ey: torch.Tensor, ex: torch.Tensor) -> torch.Tensor:
    """Returns ``means`` [B, C, h, w] with each cell that overlaps a non-finite pixel of ``images`` [B, C, H, W] set
    to the direct mean's value: NaN for a NaN or for infinities of both signs, else +inf or -inf."""
    def overlaps(edges: torch.Tensor, n: int) -> torch.Tensor:  # [cells, pixels] 0/1: pixel [i, i+1] meets the cell
        i = torch.arange(n, dtype=torch.float64, device=edges.device)
        return ((i[None, :] < edges[1:, None]) & (i[None, :] + 1 > edges[:-1, None])).to(torch.float64)

    my, mx = overlaps(ey, images.shape[-2]), overlaps(ex, images.shape[-1])

    def count(pixels: torch.Tensor) -> torch.Tensor:  # [B, C, h, w]: such pixels in each cell (exact small integers)
        return torch.einsum("ay,bcyx,dx->bcad", my, pixels.to(torch.float64), mx)

    nan, pos, neg = count(torch.isnan(images)), count(images == math.inf), count(images == -math.inf)
    fill = torch.full_like(means, math.nan)
    out = torch.where(neg > 0, torch.full_like(means, -math.inf), means)
    out = torch.where(pos > 0, torch.full_like(means, math.inf), out)
    return torch.where((nan > 0) | ((pos > 0) & (neg > 0)), fill, out)


class RectangularLayout(nn.Module):
    """A learnable rectangular layout: monotone row and column edges over the image.

    Args:
        pixels: (h, w) sensor pixels.
        image_size: (H, W) high-resolution image size in pixels.

    Parameters ``logits_y`` [h] and ``logits_x`` [w] start at zero, the regular grid.
    """

    def __init__(self, pixels: tuple[int, int], image_size: tuple[int, int]):
        super().__init__()
        _check_pixels(pixels, image_size)
        self.pixels = (int(pixels[0]), int(pixels[1]))
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.logits_y = nn.Parameter(torch.zeros(self.pixels[0]))
        self.logits_x = nn.Parameter(torch.zeros(self.pixels[1]))

    def edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (edges_y [h+1], edges_x [w+1]) in pixel units."""
        return (rectangular_edges(self.logits_y, self.image_size[0]),
                rectangular_edges(self.logits_x, self.image_size[1]))

    def corners(self) -> torch.Tensor:
        """Returns the cell corners [h+1, w+1, 2] as (y, x) in pixel units, for plots."""
        ey, ex = self.edges()
        gy, gx = torch.meshgrid(ey, ex, indexing="ij")
        return torch.stack([gy, gx], dim=-1)

    def sense(self, images: torch.Tensor) -> torch.Tensor:
        """Returns the sensor image [B, C, h, w]: exact cell means of ``images`` [B, C, H, W]."""
        ey, ex = self.edges()
        return rectangular_cell_means(images, ey, ex)


# ----------------------------------------------------------------------------- curvilinear
def _sine_warp(u: torch.Tensor, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (g(u), g'(u)) for g(u) = u + sum_k c_k sin(k pi u) / (k pi) on [0, 1].

    ``coeffs`` [..., M] broadcasts against ``u`` [...]; g(0)=0, g(1)=1 and
    g' = 1 + sum_k c_k cos(k pi u) > 0 whenever sum_k |c_k| < 1.
    """
    k = torch.arange(1, coeffs.shape[-1] + 1, dtype=u.dtype, device=u.device)
    arg = math.pi * k * u.unsqueeze(-1)
    g = u + (coeffs * torch.sin(arg) / (math.pi * k)).sum(-1)
    dg = 1 + (coeffs * torch.cos(arg)).sum(-1)
    return g, dg


def curvilinear_warp(u: torch.Tensor, v: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (y, x, det_J) of the curvilinear warp at normalised points (u, v) in [0, 1]^2.

    Args:
        u: normalised row coordinate [...], float.
        v: normalised column coordinate [...], same shape.
        params: [2, 2, M] raw parameters: ``params[0]`` drives the column warp
            ``x' = g(v; u)``, ``params[1]`` the row warp ``y' = h(u; x')``; ``[:, 0]`` are
            the mode offsets and ``[:, 1]`` their linear dependence on the other coordinate.

    Returns normalised (y', x') in [0, 1] and the Jacobian determinant ``g_v * h_u`` of the
    triangular map, which is >= (1 - 0.9)^2 > 0: the map is a smooth bijection of the unit
    square onto itself that keeps its edges on the edges.
    """
    m = params.shape[-1]
    bound = _MODE_BOUND / m

    def coeffs(p: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return bound * torch.tanh(p[0] + p[1] * (2 * other.unsqueeze(-1) - 1))

    x, dx = _sine_warp(v, coeffs(params[0], u))
    y, dy = _sine_warp(u, coeffs(params[1], x))
    return y, x, dx * dy


# Points this close to a pixel centre (in pixels) count as on it: the warp's arithmetic puts the
# identity layout's samples within ~1e-15 of the centres, on either side at random.
_KNOT_TOL = 1e-9


def _segment(p: torch.Tensor, n: int, side: int) -> torch.Tensor:
    """Returns the left node of the interpolation segment of ``p`` (int64): right of a knot (side 0) or left (1)."""
    i = (p + _KNOT_TOL).floor() if side == 0 else (p - _KNOT_TOL).ceil() - 1
    return i.long().clamp(0, n - 2)


def _bilinear_symmetric(images: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Returns ``images`` [B, C, H, W] interpolated bilinearly at pixel coordinates (py, px) [P, Q]: [B, C, P, Q].

    Pixel centre ``i`` is at coordinate ``i``; outside [0, H-1] x [0, W-1] the border pixels
    extend (grid_sample's ``border`` padding, here a one-pixel replicate pad, which is all
    the warp's samples reach). The interpolant has kinks at pixel centres, where the identity
    layout samples; there the derivative is the mean of the two one-sided slopes (a central
    difference), taken by evaluating on the segments right and left of the knot and averaging.
    Elsewhere both are the same segment.
    """
    b, c = images.shape[:2]
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    h, w = padded.shape[-2:]
    py, px = (py + 1).clamp(0, h - 1), (px + 1).clamp(0, w - 1)
    flat = padded.flatten(-2)
    out = 0
    for side in (0, 1):
        iy, ix = _segment(py.detach(), h, side), _segment(px.detach(), w, side)
        fy, fx = (py - iy.to(py.dtype)).to(images.dtype), (px - ix.to(px.dtype)).to(images.dtype)

        def at(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
            return flat[..., (rows * w + cols).reshape(-1)].view(b, c, *py.shape)

        top = at(iy, ix) * (1 - fx) + at(iy, ix + 1) * fx
        bottom = at(iy + 1, ix) * (1 - fx) + at(iy + 1, ix + 1) * fx
        out = out + 0.5 * (top * (1 - fy) + bottom * fy)
    return out


def warped_cell_means(images: torch.Tensor, params: torch.Tensor, pixels: tuple[int, int],
                      samples: tuple[int, int]) -> torch.Tensor:
    """Returns the mean of ``images`` over each curvilinear cell, [B, C, h, w].

    Each cell is the image of a regular ``1/h x 1/w`` square under :func:`curvilinear_warp`.
    The cell integral is the midpoint rule over ``samples = (sy, sx)`` points per cell in
    the regular (pre-image) square, weighted by the Jacobian determinant, of the image
    interpolated bilinearly between pixel centres. With ``samples = (H/h, W/w)`` and zero
    warp the points are the pixel centres, so the identity layout gives ``avg_pool2d``.
    """
    h, w = pixels
    sy, sx = samples
    big_h, big_w = images.shape[-2:]
    dtype = images.dtype
    u = (torch.arange(h * sy, dtype=dtype, device=images.device) + 0.5) / (h * sy)
    v = (torch.arange(w * sx, dtype=dtype, device=images.device) + 0.5) / (w * sx)
    gu, gv = torch.meshgrid(u, v, indexing="ij")
    y, x, det = curvilinear_warp(gu, gv, params.to(dtype))
    # Normalised [0, 1] spans the outer pixel edges, so pixel centre i is at y * H - 0.5 = i.
    values = _bilinear_symmetric(images, y * big_h - 0.5, x * big_w - 0.5)
    weighted = F.avg_pool2d(values * det, (sy, sx))
    return weighted / F.avg_pool2d(det[None, None], (sy, sx))


class CurvilinearLayout(nn.Module):
    """A learnable curvilinear layout: a smooth bijective warp of the regular grid.

    Args:
        pixels: (h, w) sensor pixels.
        image_size: (H, W) high-resolution image size in pixels.
        modes: sine modes per warp component; the layout has ``4 * modes`` parameters.
        samples: quadrature points per cell and axis; default ``(ceil(H/h), ceil(W/w))``,
            which makes the identity layout reproduce ``avg_pool2d`` when h | H and w | W.
    """

    def __init__(self, pixels: tuple[int, int], image_size: tuple[int, int], modes: int = 2,
                 samples: tuple[int, int] | None = None):
        super().__init__()
        _check_pixels(pixels, image_size)
        if modes < 1:
            raise ConfigError("modes", modes, "needs at least one sine mode")
        self.pixels = (int(pixels[0]), int(pixels[1]))
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.samples = samples or (math.ceil(image_size[0] / pixels[0]), math.ceil(image_size[1] / pixels[1]))
        self.params = nn.Parameter(torch.zeros(2, 2, modes))

    def corners(self) -> torch.Tensor:
        """Returns the cell corners [h+1, w+1, 2] as (y, x) in pixel units, for plots."""
        h, w = self.pixels
        u = torch.linspace(0, 1, h + 1, dtype=self.params.dtype)
        v = torch.linspace(0, 1, w + 1, dtype=self.params.dtype)
        gu, gv = torch.meshgrid(u, v, indexing="ij")
        y, x, _ = curvilinear_warp(gu, gv, self.params)
        return torch.stack([y * self.image_size[0], x * self.image_size[1]], dim=-1)

    def sense(self, images: torch.Tensor) -> torch.Tensor:
        """Returns the sensor image [B, C, h, w]: Jacobian-weighted cell means of ``images``."""
        return warped_cell_means(images, self.params, self.pixels, self.samples)


def regular_corners(pixels: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """Returns the regular grid's cell corners [h+1, w+1, 2] as (y, x) in pixel units."""
    ey = torch.linspace(0, image_size[0], pixels[0] + 1)
    ex = torch.linspace(0, image_size[1], pixels[1] + 1)
    gy, gx = torch.meshgrid(ey, ex, indexing="ij")
    return torch.stack([gy, gx], dim=-1)


def foveated_widths(n: int, length: int, fovea: float) -> torch.Tensor:
    """Returns n cell widths [n] (pixels, float64, summing to ``length``): a hand-made fovea.

    The central ``fovea`` pixels get ``n - 2`` equal cells; one wide cell on each side covers
    the rest. With n = 16 over 64 px and a 24 px fovea the central cells are 1.71 px wide,
    fine enough to resolve period-4 stripes in any phase.
    """
    if n < 3 or not 0 < fovea < length:
        raise ConfigError("fovea", fovea, f"needs n >= 3 cells (got {n}) and 0 < fovea < {length} px")
    outer = (length - fovea) / 2
    return torch.tensor([outer] + [fovea / (n - 2)] * (n - 2) + [outer], dtype=torch.float64)


def two_fovea_widths(n: int, length: int) -> torch.Tensor:
    """Returns n cell widths [n] (pixels, float64, summing to ``length``): a fovea at each of two sites.

    The hand-made baseline for ``two-site-glyph`` (sites at 3/16 and 13/16 of the side): each
    site gets ``(n - 4) // 2`` equal cells over a 3/16-wide band centred on it; one cell
    before the first band, one after the second and the rest between them. With n = 16 over
    64 px: 6 cells of 2 px over [6, 18] and [46, 58], cells of 6, 14, 14 and 6 px elsewhere.
    """
    if n < 6:
        raise ConfigError("pixels", n, "a layout with two foveae needs at least 6 cells per side")
    band = 3 * length / 16
    c1, c2 = 3 * length / 16, 13 * length / 16
    fine = (n - 4) // 2
    middle = n - 2 - 2 * fine
    gaps = [c1 - band / 2, c2 - c1 - band, length - c2 - band / 2]
    widths = ([gaps[0]] + [band / fine] * fine + [gaps[1] / middle] * middle + [band / fine] * fine + [gaps[2]])
    return torch.tensor(widths, dtype=torch.float64)


def widths_to_logits(widths: torch.Tensor, min_width_frac: float = _MIN_WIDTH_FRAC) -> torch.Tensor:
    """Returns logits [n] for which :func:`rectangular_edges` gives cells of ``widths`` [n] (pixels).

    Inverts ``width = length (m / n + (1 - m) softmax)``; every width must exceed ``m`` times
    the regular width.
    """
    n, length = len(widths), float(widths.sum())
    share = (widths / length - min_width_frac / n) / (1 - min_width_frac)
    if bool((share <= 0).any()):
        raise ConfigError("widths", widths.tolist(), f"every cell must be wider than {min_width_frac} x the regular width")
    return share.log()


def make_layout(kind: str, pixels: tuple[int, int], image_size: tuple[int, int], fovea: float | None = None) -> nn.Module:
    """Returns a layout module by name: ``rectangular``, ``curvilinear`` or ``foveated``.

    ``foveated`` is a :class:`RectangularLayout` set to :func:`foveated_widths` on both axes
    (``fovea`` pixels, default 3/8 of the image); ``two-fovea`` one set to
    :func:`two_fovea_widths`. Train them frozen, as hand-made baselines.
    """
    if kind == "rectangular":
        return RectangularLayout(pixels, image_size)
    if kind == "curvilinear":
        return CurvilinearLayout(pixels, image_size)
    if kind in ("foveated", "two-fovea"):
        layout = RectangularLayout(pixels, image_size)
        with torch.no_grad():
            for logits, n, length in ((layout.logits_y, pixels[0], image_size[0]), (layout.logits_x, pixels[1], image_size[1])):
                if kind == "two-fovea":
                    widths = two_fovea_widths(n, length)
                else:
                    widths = foveated_widths(n, length, fovea if fovea is not None else 3 * length / 8)
                logits.copy_(widths_to_logits(widths).float())
        return layout
    raise ConfigError("layout", kind, "must be rectangular, curvilinear, foveated or two-fovea")


class SensorSimulator(nn.Module):
    """Drop-in sensor: [B, C, H, W] high-resolution images to [B, C, h, w] cell means.

    Holds a layout (:class:`RectangularLayout` or :class:`CurvilinearLayout`); gradients
    flow to its parameters. Images of the wrong shape raise :class:`ConfigError`.
    """

    def __init__(self, layout: nn.Module):
        super().__init__()
        self.layout = layout

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.layout.image_size)
        return self.layout.sense(images)
