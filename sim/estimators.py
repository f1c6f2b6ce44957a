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
(:func:`wavefront.sim.interpolation.interpolation_weights`), computed once per layout; a cubic spline
needs a Kronecker layout. The LMMSE estimators are joint over time and frequency: see
:mod:`wavefront.sim.lmmse`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.interpolation import interpolation_matrix, interpolation_weights
from wavefront.sim.pilots import flat_pilots

# What an estimator may read from ``meta`` (see :func:`meta_for`).
NEEDS = ("none", "noise", "conditions", "truth")
_NOISE_KEYS = ("snr_db", "noise_var")


class Estimator(ABC):
    """A channel estimator: ``name``, ``needs`` and ``estimate(pilots, meta) -> H_hat``.

    ``needs`` (required, one of :data:`NEEDS`; a class attribute, or set in ``__init__``) says
    what the experiment engine hands it in ``meta`` (:func:`meta_for`): ``"none"`` an empty
    dict, ``"noise"`` only ``snr_db`` and ``noise_var``, ``"conditions"`` SNR, delay spread and
    Doppler (estimated from the pilots or true, as the run says), ``"truth"`` the frames' true
    conditions. ``given`` (optional) says in words what it assumes; rows print it.
    """

    name: str
    needs: str
    given: str | None = None

    @abstractmethod
    def estimate(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns H_hat [B, F, T] complex64 from LS pilots [B, P_f, P_t] or [B, P] complex64 and ``meta``
        (a dict of [B] float32 tensors: ``snr_db`` [dB], ``delay_spread_s`` [s], ``doppler_hz`` [Hz],
        ``noise_var``), holding only what ``needs`` allows."""


def check_estimator(est) -> None:
    """Raises ConfigError unless ``est`` is an :class:`Estimator` whose ``needs`` is one of :data:`NEEDS`."""
    name = getattr(est, "name", type(est).__name__)
    if not isinstance(est, Estimator):
        raise ConfigError("estimators", name, "must be a wavefront.sim.estimators.Estimator (estimate(pilots, meta), "
                                              "name, needs)")
    needs = getattr(est, "needs", None)
    if needs not in NEEDS:
        raise ConfigError(f"{name}.needs", needs, f"must be one of {', '.join(NEEDS)}")


def meta_for(needs: str, true_meta: dict, estimated_meta: dict | None) -> dict:
    """Returns what an estimator that ``needs`` this may see of a batch's conditions.

    ``true_meta``: the frames' recorded conditions; ``estimated_meta``: the conditions estimated
    from the pilots, or None when the run gives true ones. A ``"none"`` estimator gets nothing,
    so one that reads a condition fails loudly instead of being told the truth.
    """
    if needs == "truth":
        return true_meta
    if needs == "none":
        return {}
    told = true_meta if estimated_meta is None else estimated_meta
    if needs == "noise":
        return {k: told[k] for k in _NOISE_KEYS if k in told}
    return told


class LSInterpolator(Estimator):
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
            A_f = interpolation_matrix(o.pilot_subcarriers, o.num_subcarriers, kind)  # [F, P_f] float64
            A_t = interpolation_matrix(o.pilot_symbol_indices, o.num_symbols, kind)  # [T, P_t] float64
            self.A_f = torch.as_tensor(A_f, dtype=torch.complex64)
            self.A_t = torch.as_tensor(A_t, dtype=torch.complex64)
            # The weights are real: on (re, im) pairs the two products are real GEMMs, the time one
            # with ``kron(A_t^T, I_2)`` [2 P_t, 2 T], which reads the frequency product's pairs as
            # they lie. About 2.5x faster on CPU at batch 100 than the complex products (whose
            # inner size P_t = 2 runs MKL's complex kernel at a fraction of its speed); the same
            # sums, in another order (float32 round-off).
            self._real_f = torch.as_tensor(A_f, dtype=torch.float32)  # [F, P_f]
            self._real_t = torch.as_tensor(np.kron(A_t.T, np.eye(2)), dtype=torch.float32)  # [2 P_t, 2 T]
            return
        if kind == "spline":
            raise ConfigError("estimators", self.name, f"a cubic spline needs a Kronecker pilot layout; this one is "
                                                       f"{self.layout.describe()}: use ls-linear or ls-nearest")

        self.A = torch.as_tensor(interpolation_weights(self.layout, kind), dtype=torch.complex64)  # [F*T, P]

    def estimate(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        """Returns H_hat [B, F, T] complex64 from LS pilots [B, P_f, P_t] (Kronecker) or [B, P]."""
        if not self.layout.is_kronecker:
            p = flat_pilots(pilots, self.layout)
            return (p @ self.A.to(pilots.device).T).reshape(p.shape[0], *self.layout.grid_shape)
        if pilots.dim() == 2:
            pilots = pilots.reshape(pilots.shape[0], *self.layout.pilot_shape)
        if pilots.dim() == 3 and pilots.dtype == torch.complex64 and not pilots.requires_grad:
            B, (F, T) = pilots.shape[0], self.layout.grid_shape
            pairs = torch.view_as_real(pilots.resolve_conj().contiguous()).reshape(B, pilots.shape[1], -1)  # [B, P_f, 2 P_t]
            if pilots.device != self._real_f.device:
                self._real_f, self._real_t = self._real_f.to(pilots.device), self._real_t.to(pilots.device)
            if B == 1:
                r = torch.mm(self._real_f, pairs[0])  # [F, 2 P_t]
            else:  # one GEMM over every frame's columns (a batched product of B small ones ran 2x slower), then [B F, 2 P_t]
                r = torch.mm(self._real_f, pairs.transpose(0, 1).reshape(pairs.shape[1], -1))  # [F, B 2 P_t]
                r = r.view(F, B, -1).transpose(0, 1)
            h = torch.mm(r.reshape(B * F, -1), self._real_t)  # [B F, 2 T]
            return torch.view_as_complex(h.view(B, F, T, 2))
        A_f = self.A_f.to(pilots.device)
        A_t = self.A_t.to(pilots.device)
        return A_f @ pilots @ A_t.T


CLASSICAL = ("ls-nearest", "ls-linear", "ls-spline", "lmmse-robust", "lmmse-genie", "lmmse-estimated", "mmse-bayes",
             "lmmse-bank", "lmmse-oracle-support", "lmmse-genie-impaired", "mmse-bayes-impaired")


class PerfectCSI(Estimator):
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
    ``lmmse-bank`` also ``filters`` (default 16). ``lmmse-oracle-support`` needs ``profile: sparse``
    (it reads each frame's true paths; :mod:`wavefront.sim.oracle_support`). ``lmmse-genie-impaired`` and
    ``mmse-bayes-impaired`` know the receiver impairments' distribution (:mod:`wavefront.sim.impaired_lmmse`);
    without impairments they are ``lmmse-genie`` and ``mmse-bayes``.
    """
    if name.startswith("ls-") and name in CLASSICAL:
        return LSInterpolator(config, name[3:])
    # lmmse and conditions subclass Estimator from this module, so they are imported here, not at the top
    if name == "lmmse-genie":
        from wavefront.sim.lmmse import GenieLMMSE

        return GenieLMMSE(config)
    if name == "lmmse-robust":
        from wavefront.sim.lmmse import RobustLMMSE

        return RobustLMMSE(config, **options)
    if name == "lmmse-oracle-support":
        from wavefront.sim.oracle_support import OracleSupportLMMSE

        return OracleSupportLMMSE(config)
    if name in ("lmmse-genie-impaired", "mmse-bayes-impaired"):
        from wavefront.sim.impaired_lmmse import ImpairedBayesMMSE, ImpairedGenieLMMSE

        return ImpairedGenieLMMSE(config) if name == "lmmse-genie-impaired" else ImpairedBayesMMSE(config, **options)
    if name in ("lmmse-estimated", "mmse-bayes", "lmmse-bank"):
        from wavefront.sim.prior_lmmse import BayesMMSE, EstimatedLMMSE, LMMSEBank

        cls = {"lmmse-estimated": EstimatedLMMSE, "mmse-bayes": BayesMMSE, "lmmse-bank": LMMSEBank}[name]
        return cls(config, **options)
    raise ConfigError("estimator", name, f"unknown classical estimator; choose from {', '.join(CLASSICAL)}")


def classical_estimators(names: list[str], config: SystemConfig, robust_options: dict | None = None) -> list:
    """Returns classical estimators (and ``perfect``) for ``names``, designed with ``config``'s assumptions.

    ``config``'s channel ranges are what designs may assume (robust LMMSE takes their top end).
    A name that is not classical raises ConfigError; learned models are resolved above this
    package (``wavefront.resolve``).
    """
    if config.mimo.is_mimo:  # several antennas or users: the MIMO versions (sim/mimo imports this module)
        from wavefront.sim.mimo import mimo_estimators

        return mimo_estimators(names, config, robust_options)
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
