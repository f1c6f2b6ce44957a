"""LS interpolation from the pilots to the whole grid: the one home of its weights.

Every LS estimator (``ls-nearest``, ``ls-linear``, ``ls-spline``) and every learned model
that starts from an interpolated grid (:class:`wavefront.estimators.blocks.PilotInterpolator`)
takes its weights from here. Coordinates are (subcarrier index, symbol index), one unit each;
rows of every weight matrix sum to 1, so a constant channel is reproduced exactly.

- A Kronecker layout is interpolated separably, ``H_hat = A_f P A_t^T``, with 1-D matrices
  from :func:`interpolation_matrix`. ``linear`` extends the outer segments linearly beyond
  the outer pilots, as Sionna's linear interpolator does (measured equal to 1e-6 on the
  same frames).
- A scattered layout is interpolated with one matrix ``A`` [F*T, P] from
  :func:`interpolation_weights`: ``linear`` is linear over the layout's Delaunay triangles
  inside the convex hull of the pilots and, outside it, the value at the nearest point of the
  hull boundary.

The extrapolation rule is therefore the one of each layout's natural linear interpolant:
along a grid axis a straight line is extended (what Sionna and the literature do on a
Kronecker grid), while beyond a scattered hull the plane of a boundary triangle is not,
because a thin boundary triangle extended by several cells multiplies the pilot noise. Both
reproduce affine channels exactly inside the pilots' hull (tests).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial import Delaunay

from wavefront.errors import ConfigError
from wavefront.sim.pilots import PilotLayout


def interpolation_matrix(pilot_idx: list[int], n: int, kind: str) -> np.ndarray:
    """Returns ``A`` [n, len(pilot_idx)] float64 mapping values at ``pilot_idx`` to all ``n`` positions.

    ``kind``: ``nearest``; ``linear`` (linear extrapolation beyond the outer pilots);
    ``spline`` (not-a-knot cubic spline with extrapolation; falls back to linear with fewer
    than 4 pilots, to nearest with one).
    """
    p = np.asarray(pilot_idx, dtype=np.float64)
    x = np.arange(n, dtype=np.float64)
    m = len(p)
    if m == 1 or kind == "nearest":
        nearest = np.abs(x[:, None] - p[None, :]).argmin(1)
        return np.eye(m)[nearest]
    if kind == "spline" and m >= 4:
        return CubicSpline(p, np.eye(m), axis=0, bc_type="not-a-knot", extrapolate=True)(x)
    # linear, with the end segments extended
    j = np.clip(np.searchsorted(p, x, side="right") - 1, 0, m - 2)
    w = (x - p[j]) / (p[j + 1] - p[j])
    A = np.zeros((n, m))
    A[np.arange(n), j] = 1 - w
    A[np.arange(n), j + 1] = w
    return A


@lru_cache(maxsize=32)
def interpolation_weights(layout: PilotLayout, kind: str = "linear") -> np.ndarray:
    """Returns ``A`` [F*T, P] float64: ``H_hat.flatten() = A @ p`` maps pilot values to the grid.

    Coordinates are (subcarrier index, symbol index), one unit each. Rows sum to 1.

    - ``nearest``: the nearest pilot (Euclidean; ties go to the first in position order).
    - ``linear``: inside the convex hull of the pilots, linear over the Delaunay triangle
      that holds the point (scipy's Qhull), so affine channels are reproduced exactly; outside
      the hull, the value at the nearest point of the hull boundary (linear along that edge):
      continuous, and never extrapolated beyond the pilots' range of values. Pilots on one
      line: linear along the line, constant beyond its ends; one pilot: constant.

    Computed once per layout (cached).
    """
    if kind not in ("nearest", "linear"):
        raise ConfigError("interpolation", kind, "a scattered layout supports nearest or linear")
    F, T = layout.grid_shape
    pts = np.stack([layout.subcarrier_indices, layout.symbol_indices], 1).astype(np.float64)  # [P, 2]
    grid = np.stack(np.meshgrid(np.arange(F), np.arange(T), indexing="ij"), -1).reshape(-1, 2).astype(np.float64)
    P, N = len(pts), len(grid)
    A = np.zeros((N, P))
    if kind == "nearest" or P == 1:
        d = ((grid[:, None, :] - pts[None]) ** 2).sum(-1)
        A[np.arange(N), d.argmin(1)] = 1.0
        return A
    centred = pts - pts.mean(0)
    if np.linalg.matrix_rank(centred, tol=1e-9) < 2:  # collinear: 1-D linear along the line
        u = centred[np.argmax(np.abs(centred).sum(1))]
        u = u / np.linalg.norm(u)
        s_p = centred @ u
        order = np.argsort(s_p)
        s_g = np.clip((grid - pts.mean(0)) @ u, s_p[order[0]], s_p[order[-1]])
        j = np.clip(np.searchsorted(s_p[order], s_g, side="right") - 1, 0, P - 2)
        w = (s_g - s_p[order][j]) / (s_p[order][j + 1] - s_p[order][j])
        A[np.arange(N), order[j]] = 1 - w
        A[np.arange(N), order[j + 1]] += w
        return A

    tri = Delaunay(pts)
    simplex = tri.find_simplex(grid)
    inside = simplex >= 0
    s = simplex[inside]
    X = tri.transform[s]  # [n, 3, 2]: affine map to barycentric coordinates
    b = np.einsum("nij,nj->ni", X[:, :2], grid[inside] - X[:, 2])
    bary = np.concatenate([b, 1 - b.sum(1, keepdims=True)], 1)
    rows = np.nonzero(inside)[0]
    for k in range(3):
        np.add.at(A, (rows, tri.simplices[s, k]), bary[:, k])
    out = np.nonzero(~inside)[0]
    if len(out):
        e = tri.convex_hull  # [E, 2] vertex pairs of the boundary edges
        a, c = pts[e[:, 0]], pts[e[:, 1]]
        g = grid[out][:, None, :]  # [n, 1, 2]
        ac = c - a
        t = np.clip(((g - a) * ac).sum(-1) / (ac * ac).sum(-1), 0.0, 1.0)  # [n, E]
        dist = (((a + t[..., None] * ac) - g) ** 2).sum(-1)
        best = dist.argmin(1)
        tb = t[np.arange(len(out)), best]
        np.add.at(A, (out, e[best, 0]), 1 - tb)
        np.add.at(A, (out, e[best, 1]), tb)
    A[np.abs(A) < 1e-15] = 0.0  # barycentric round-off
    return A
