"""The oracle-support estimator (``lmmse-oracle-support``): LMMSE of a sparse channel's path gains given its true paths.

Given the support (each path's delay ``tau_n``, Doppler ``nu_n`` and prior power ``p_n``, which
:class:`~wavefront.sim.frames.Frames` records for ``profile: sparse``), the channel is linear in
the gains: ``h = A g``, ``A[(f, t), n] = exp(-j 2 pi f tau_n) exp(j 2 pi nu_n t)`` [F T, N],
``g ~ CN(0, P)``, ``P = diag(p_n)``. The LS pilots are ``y_p = A_p g + e``, ``e ~ CN(0, sigma^2 I)``
(unit-modulus pilots), ``A_p`` the rows of ``A`` at the pilots. Then

    g_hat = P A_p^H (A_p P A_p^H + sigma^2 I)^-1 y_p = (A_p^H A_p + sigma^2 P^-1)^-1 A_p^H y_p,
    h_hat = A g_hat,

the second form (Woodbury) an N x N solve per frame. Given the support, ``h`` and ``y_p`` are
jointly Gaussian, so this is the exact MMSE estimate given the support and the pilots: a bound
that a sparse-aware estimator (one that finds the paths from the pilots) can approach, and
below the genie LMMSE, which knows only the second-order statistics. Its MSE per resource
element given the support is ``tr(A C A^H) / (F T)``, ``C = sigma^2 (A_p^H A_p + sigma^2 P^-1)^-1``
(:func:`oracle_support_mse`).
"""
from __future__ import annotations

import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.estimators import Estimator
from wavefront.sim.pilots import flat_pilots
from wavefront.sim.sparse import path_matrices

_SUPPORT_KEYS = ("path_delays_s", "path_doppler_hz", "path_powers")


def _support(meta: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    missing = [k for k in _SUPPORT_KEYS if k not in meta]
    if missing:
        raise ConfigError("estimators", "lmmse-oracle-support", "needs frames of profile sparse, which record each "
                                                                "frame's paths (missing: " + ", ".join(missing) + ")")
    return tuple(meta[k].double() for k in _SUPPORT_KEYS)


def _posterior(config: SystemConfig, meta: dict, noise_var: torch.Tensor):
    """Returns ``(A_p [B, P, N], M^-1 [B, N, N], E_f [B, F, N], E_t [B, T, N])``, ``M = A_p^H A_p + sigma^2 P^-1``, complex128."""
    tau, nu, p = _support(meta)
    layout = config.ofdm.pilot_layout
    e_f, e_t = path_matrices(config.ofdm, tau, nu)
    fi = torch.as_tensor(layout.subcarrier_indices, device=tau.device)
    ti = torch.as_tensor(layout.symbol_indices, device=tau.device)
    a_p = e_f[:, fi] * e_t[:, ti]  # [B, P, N], pilots in position order
    m = a_p.mH @ a_p + torch.diag_embed((noise_var.double().reshape(-1, 1) / p).to(torch.complex128))
    return a_p, torch.linalg.inv(m), e_f, e_t


def _noise(meta: dict, config: SystemConfig) -> torch.Tensor:
    return meta["noise_var"] if "noise_var" in meta else config.noise_variance(meta["snr_db"].float())


class OracleSupportLMMSE(Estimator):
    """LMMSE of the path gains given each frame's true paths (``lmmse-oracle-support``; see the module docstring).

    ``estimate(pilots [B, P_f, P_t] or [B, P] c64, meta) -> [B, F, T] c64``; ``meta`` (the truth)
    needs ``path_delays_s``, ``path_doppler_hz``, ``path_powers`` [B, N] and ``noise_var`` (or ``snr_db``).
    """

    name = "lmmse-oracle-support"
    needs = "truth"
    given = "true paths (delays, Dopplers, powers) and SNR: LMMSE of the path gains (oracle support)"

    def __init__(self, config: SystemConfig):
        if config.channel.profile != "sparse":
            raise ConfigError("estimators", self.name, f"needs profile sparse (each frame's paths); "
                                                       f"this config's is {config.channel.profile}")
        self.config = config

    def estimate(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        y = flat_pilots(pilots, self.config.ofdm.pilot_layout).to(torch.complex128)  # [B, P]
        a_p, m_inv, e_f, e_t = _posterior(self.config, meta, _noise(meta, self.config).to(y.device))
        g = (m_inv @ (a_p.mH @ y.unsqueeze(-1))).squeeze(-1)  # [B, N]
        return ((e_f * g.unsqueeze(1)) @ e_t.transpose(1, 2)).to(torch.complex64)


def oracle_support_mse(config: SystemConfig, meta: dict[str, torch.Tensor]) -> torch.Tensor:
    """Returns each frame's closed-form MSE per resource element [B] float64 of :class:`OracleSupportLMMSE` given its support.

    ``tr(A C A^H) / (F T)`` with ``C = sigma^2 M^-1`` the posterior covariance of the gains;
    ``tr(A C A^H) = sum_{n,m} C[n, m] (E_f^H E_f)[m, n] (E_t^H E_t)[m, n]`` since ``A`` has the
    Khatri-Rao columns ``E_f[:, n] (x) E_t[:, n]``.
    """
    nv = _noise(meta, config).double()
    _, m_inv, e_f, e_t = _posterior(config, meta, nv)
    c = nv.reshape(-1, 1, 1) * m_inv
    gram = (e_f.mH @ e_f) * (e_t.mH @ e_t)  # [B, N, N]: (A^H A)[m, n]
    F, T = config.ofdm.grid_shape
    return torch.einsum("bnm,bmn->b", c, gram).real / (F * T)
