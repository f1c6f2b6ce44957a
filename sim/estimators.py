"""Classical channel estimators behind one interface.

Every estimator (classical here; learned ones live in the estimators package) has a ``name``,
a ``needs`` attribute (what it reads from ``meta``: ``none``, ``noise``, ``conditions`` or
``truth``; see :mod:`wavefront.sim.experiment`) and

    estimate(pilots, meta) -> H_hat

- ``pilots`` [B, P_f, P_t] complex64 (a Kronecker layout) or [B, P] (any layout, in position
  order; see :mod:`wavefront.sim.pilots`): LS estimate at the pilot positions.
- ``meta``: dict of [B] float32 tensors ``snr_db``, ``delay_spread_s``, ``doppler_hz``,
  ``noise_var`` (per-RE noise variance, ``10^(-snr_db/10)``).
- ``H_hat`` [B, F, T] complex64.

LS with interpolation is separable: ``H_hat = A_f @ P @ A_t^T`` with interpolation matrices
``A_f`` [F, P_f] and ``A_t`` [T, P_t]; nearest, (bi)linear and cubic-spline differ only in
those matrices. A scattered layout has no separable form: LS interpolates with one weight
matrix ``A`` [F*T, P] over the layout's Delaunay triangulation
(:func:`wavefront.sim.pilots.interpolation_weights`), computed once per layout; a cubic spline
needs a Kronecker layout. The LMMSE estimators are joint over time and frequency: see
:mod:`wavefront.sim.lmmse`.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig


class Estimator(Protocol):
    name: str
    needs: str

    def estimate(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor: ...


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
        from scipy.interpolate import CubicSpline

        return CubicSpline(p, np.eye(m), axis=0, bc_type="not-a-knot", extrapolate=True)(x)
    # linear, with the end segments extended
    j = np.clip(np.searchsorted(p, x, side="right") - 1, 0, m - 2)
    w = (x - p[j]) / (p[j + 1] - p[j])
    A = np.zeros((n, m))
    A[np.arange(n), j] = 1 - w
    A[np.arange(n), j + 1] = w
    return A


class LSInterpolator:
    """LS at the pilots, then interpolation: separable ``H_hat = A_f @ P @ A_t^T`` on a Kronecker
    layout, ``H_hat = A p`` over the triangulation of a scattered one."""

    given = "pilots only"

    def __init__(self, config: SystemConfig, kind: str = "linear"):
        if kind not in ("nearest", "linear", "spline"):
            raise ConfigError("interpolation", kind, "must be nearest, linear or spline")
        o = config.ofdm
        self.name = f"ls-{kind}"
        self.needs = "none"
        self.layout = o.pilot_layout
        if self.layout.is_kronecker:
            self.A_f = torch.as_tensor(interpolation_matrix(o.pilot_subcarriers, o.num_subcarriers, kind), dtype=torch.complex64)
            self.A_t = torch.as_tensor(interpolation_matrix(o.pilot_symbol_indices, o.num_symbols, kind), dtype=torch.complex64)
            return
        if kind == "spline":
            raise ConfigError("estimators", self.name, f"a cubic spline needs a Kronecker pilot layout; this one is "
                                                       f"{self.layout.describe()}: use ls-linear or ls-nearest")
        from wavefront.sim.pilots import interpolation_weights

        self.A = torch.as_tensor(interpolation_weights(self.layout, kind), dtype=torch.complex64)  # [F*T, P]

    def estimate(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        """Returns H_hat [B, F, T] complex64 from LS pilots [B, P_f, P_t] (Kronecker) or [B, P]."""
        if not self.layout.is_kronecker:
            from wavefront.sim.pilots import flat_pilots

            p = flat_pilots(pilots, self.layout)
            return (p @ self.A.to(pilots.device).T).reshape(p.shape[0], *self.layout.grid_shape)
        if pilots.dim() == 2:
            pilots = pilots.reshape(pilots.shape[0], *self.layout.pilot_shape)
        A_f = self.A_f.to(pilots.device)
        A_t = self.A_t.to(pilots.device)
        return A_f @ pilots @ A_t.T


CLASSICAL = ("ls-nearest", "ls-linear", "ls-spline", "lmmse-robust", "lmmse-genie", "lmmse-estimated", "mmse-bayes",
             "lmmse-bank")


class PerfectCSI:
    """The true channel as the estimate: the BER reference (its MSE is 0)."""

    name = "perfect"
    needs = "truth"
    given = "the true channel"
    is_perfect = True

    def estimate(self, pilots, meta):  # the engine substitutes the true channel
        raise NotImplementedError("perfect CSI has no estimate; the experiment engine uses the true channel")


def get_classical(name: str, config: SystemConfig, **options) -> Estimator:
    """Returns the classical estimator ``name`` (one of :data:`CLASSICAL`) for ``config``.

    ``lmmse-estimated``, ``mmse-bayes`` and ``lmmse-bank`` take ``prior=ConditionPrior`` (default:
    the config's ranges; see :mod:`wavefront.sim.conditions`) and read nothing from ``meta``;
    ``lmmse-bank`` also ``filters`` (default 16).
    """
    if name.startswith("ls-") and name in CLASSICAL:
        return LSInterpolator(config, name[3:])
    if name == "lmmse-genie":
        from wavefront.sim.lmmse import GenieLMMSE

        return GenieLMMSE(config)
    if name == "lmmse-robust":
        from wavefront.sim.lmmse import RobustLMMSE

        return RobustLMMSE(config, **options)
    if name in ("lmmse-estimated", "mmse-bayes", "lmmse-bank"):
        from wavefront.sim.conditions import BayesMMSE, EstimatedLMMSE, LMMSEBank

        cls = {"lmmse-estimated": EstimatedLMMSE, "mmse-bayes": BayesMMSE, "lmmse-bank": LMMSEBank}[name]
        return cls(config, **options)
    raise ConfigError("estimator", name, f"unknown classical estimator; choose from {', '.join(CLASSICAL)}")


def classical_estimators(names: list[str], config: SystemConfig, robust_options: dict | None = None) -> list:
    """Returns classical estimators (and ``perfect``) for ``names``, designed with ``config``'s assumptions.

    ``config``'s channel ranges are what designs may assume (robust LMMSE takes their top end).
    A name that is not classical raises ConfigError; learned models are resolved above this
    package (``wavefront.resolve``).
    """
    out = []
    for name in names:
        if name == "perfect":
            out.append(PerfectCSI())
        elif name == "lmmse-robust":
            out.append(get_classical(name, config, **(robust_options or {})))
        elif name in CLASSICAL:
            out.append(get_classical(name, config))
        else:
            raise ConfigError("estimators", name, f"unknown classical estimator; choose from {', '.join(CLASSICAL)}, perfect")
    return out
