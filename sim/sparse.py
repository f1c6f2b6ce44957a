"""Sparse multipath (``profile: sparse``): a few discrete paths per frame, and their second-order statistics in closed form.

**The model.** Each frame draws ``N = channel.sparse_num_paths`` paths, independently of each other:

- delay ``tau_n = tau_max u_n``, ``u_n ~ U(0, 1)``;
- Doppler ``nu_n = f_d cos(theta_n)``, ``theta_n ~ U(-pi, pi)``, independent of the delay;
- gain ``g_n ~ CN(0, p_n)``, constant over the frame, with the exponential power-delay profile
  ``p_n = c exp(-tau_n / gamma)``, ``c = kappa / (N (1 - e^-kappa))`` so that the expected total
  power ``E[sum_n p_n] = N c E[e^-kappa u] = 1``.

The channel is ``H(f, t) = sum_n g_n exp(-j 2 pi f tau_n) exp(j 2 pi nu_n t)`` (the sign
conventions of :mod:`~wavefront.sim.fading`). There is no per-frame power normalisation
(a frame's total power ``sum_n p_n`` varies around 1), so the covariance stays closed-form.

**Tying it to the frame's delay spread.** ``tau_max = kappa gamma`` with ``kappa = ln 100``:
the expected PDP, ``E[sum_n p_n delta(tau - tau_n)] = N c exp(-tau/gamma) / tau_max`` on
``[0, tau_max]``, is an exponential truncated where it has fallen by 20 dB. ``gamma`` is chosen
so that this expected PDP's RMS delay spread equals the frame's ``delay_spread_s``:
``gamma = delay_spread_s / s(kappa)``, ``s(kappa)`` the RMS of a unit exponential truncated to
``[0, kappa]`` (:func:`truncated_exponential_rms`, 0.8852 at ``kappa = ln 100``). At 300 ns,
``gamma = 339 ns`` and ``tau_max = 1.56 us``, inside NR's 4.7 us cyclic prefix.

**Second-order statistics** (:func:`sparse_freq_correlation`). The gains are zero-mean and
independent, so the cross terms vanish and, with ``Df = f1 - f2``, ``Dt = t1 - t2``,

    E[H(f1,t1) H*(f2,t2)] = sum_n E[p_n e^{-j 2 pi Df tau_n}] E[e^{j 2 pi f_d cos(theta) Dt}]
                          = R_f(Df) J0(2 pi f_d Dt),

    R_f(Df) = N c E_u[e^{-kappa u} e^{-j beta u}] = kappa (1 - e^{-(kappa + j beta)}) / ((1 - e^-kappa)(kappa + j beta)),

``beta = 2 pi Df tau_max``; ``R_f(0) = 1``. It does not depend on ``N``: second-order statistics
cannot see how sparse the channel is; the fourth moment can (:func:`sparse_fourth_moment_ratio`). The covariance is one Kronecker term ``R_f (x) J0``, the
shape of a TDL NLoS profile, and :func:`~wavefront.sim.statistics.covariance_terms` returns it for
the sparse profile, so the genie LMMSE, ``mmse-bayes``, ``lmmse-estimated`` and the bound
(:func:`~wavefront.sim.lmmse.genie_mse`) apply as **second-order yardsticks**: the genie is the
best *linear* estimator given the frame's delay spread and Doppler, not the MMSE of this
(non-Gaussian, a Gaussian mixture over the support) channel. The MMSE-like reference that knows
the support is :class:`~wavefront.sim.oracle_support.OracleSupportLMMSE`.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from wavefront.sim.config import OFDMConfig
from wavefront.sim.profiles import ChannelProfile, subcarrier_offsets_hz, symbol_times_s

SPARSE_PDP_DECAY = math.log(100.0)  # kappa: the expected PDP falls by 20 dB from delay 0 to tau_max
_PDP_BINS = 256  # taps of the discretised expected PDP a ChannelProfile carries (see sparse_profile)


def truncated_exponential_rms(kappa: float = SPARSE_PDP_DECAY) -> float:
    """Returns the RMS of the density ``e^-x / (1 - e^-kappa)`` on ``[0, kappa]`` (dimensionless)."""
    z = 1.0 - math.exp(-kappa)
    m1 = (1.0 - (kappa + 1.0) * math.exp(-kappa)) / z
    m2 = (2.0 - (kappa * kappa + 2.0 * kappa + 2.0) * math.exp(-kappa)) / z
    return math.sqrt(m2 - m1 * m1)


def sparse_delay_scales(delay_spread_s):
    """Returns ``(gamma, tau_max)`` in s (same type and shape as ``delay_spread_s``): the PDP decay constant and the largest delay.

    ``gamma = delay_spread_s / s(kappa)``, ``tau_max = kappa gamma`` (see the module docstring).
    """
    gamma = delay_spread_s / truncated_exponential_rms()
    return gamma, SPARSE_PDP_DECAY * gamma


def sparse_freq_correlation(delay_spread_s, df_hz) -> torch.Tensor:
    """Returns ``R_f(Df) = E[sum_n p_n exp(-j 2 pi Df tau_n)]`` complex128, broadcast over ``delay_spread_s`` (s) and ``df_hz`` (Hz).

    ``kappa (1 - exp(-(kappa + j beta))) / ((1 - e^-kappa)(kappa + j beta))``, ``beta = 2 pi Df tau_max``:
    the expectation over the uniform delays of the exponential PDP weight times the delay phasor.
    """
    ds = torch.as_tensor(delay_spread_s, dtype=torch.float64)
    df = torch.as_tensor(df_hz, dtype=torch.float64)
    kappa = SPARSE_PDP_DECAY
    beta = 2 * math.pi * df * sparse_delay_scales(ds)[1]
    s = torch.complex(torch.full_like(beta, kappa), beta)
    return kappa * (1 - torch.exp(-s)) / ((1 - math.exp(-kappa)) * s)


def sparse_fourth_moment_ratio(num_paths: int) -> float:
    """Returns ``E|H|^4 / (E|H|^2)^2`` of one resource element (2 for a complex Gaussian): how far from Gaussian the paths are.

    Given the paths, ``H`` is ``CN(0, S)``, ``S = sum_n p_n``, so ``E|H|^4 = 2 E[S^2]
    = 2 (N E[p^2] + N (N - 1) E[p]^2)``, with ``E[p] = 1/N`` and ``E[p^2] = c^2 (1 - e^{-2 kappa}) / (2 kappa)``:
    ``2 (N E[p^2] + 1 - 1/N)``, 3.35 for 2 paths, 2.67 for 4, 2.34 for 8, tending to 2 as ``N`` grows.
    Independent of the delay spread, the Doppler and the resource element.
    """
    kappa, n = SPARSE_PDP_DECAY, num_paths
    c = kappa / (n * (1 - math.exp(-kappa)))
    return 2 * (n * c * c * (1 - math.exp(-2 * kappa)) / (2 * kappa) + 1 - 1 / n)


@lru_cache(maxsize=None)
def sparse_profile() -> ChannelProfile:
    """Returns the :class:`ChannelProfile` of ``profile: sparse``: the expected PDP, normalised to unit power and RMS.

    Its ``norm_delays``/``nlos_powers`` [256] discretise the expected (truncated exponential) PDP
    at bin midpoints, for code that reads taps; the covariance itself takes the closed form of
    :func:`sparse_freq_correlation` (``profile.is_sparse``). The per-frame paths are drawn by
    :func:`sparse_channel`, not from these taps.
    """
    kappa, s = SPARSE_PDP_DECAY, truncated_exponential_rms()
    edges = np.linspace(0.0, kappa, _PDP_BINS + 1)
    mass = np.exp(-edges[:-1]) - np.exp(-edges[1:])
    return ChannelProfile("sparse", 0.5 * (edges[:-1] + edges[1:]) / s, mass / mass.sum(), 0.0, 0.0)


def draw_sparse_paths(num_paths: int, delay_spread_s: torch.Tensor, doppler_hz: torch.Tensor,
                      generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Returns one frame's paths per row: ``path_delays_s``, ``path_doppler_hz``, ``path_powers`` [B, N] float64 and ``path_gains`` [B, N] complex128.

    ``delay_spread_s`` (s) and ``doppler_hz`` (Hz) [B], on the generator's device. Draw order:
    the uniforms of the delays, the Doppler angles, then the gains' real and imaginary parts.
    ``path_powers`` is ``p_n``, each path's expected power given its delay (the prior variance
    of its gain).
    """
    dev = delay_spread_s.device
    B, N = delay_spread_s.shape[0], num_paths
    u = torch.rand(B, N, generator=generator, device=dev, dtype=torch.float64)
    theta = (torch.rand(B, N, generator=generator, device=dev, dtype=torch.float64) * 2 - 1) * math.pi
    z = torch.randn(B, N, 2, generator=generator, device=dev, dtype=torch.float64)
    kappa = SPARSE_PDP_DECAY
    tau_max = sparse_delay_scales(delay_spread_s.double().reshape(B, 1))[1]
    powers = (kappa / (N * (1 - math.exp(-kappa)))) * torch.exp(-kappa * u)
    gains = torch.view_as_complex(z) * torch.sqrt(powers / 2)
    return {"path_delays_s": tau_max * u, "path_doppler_hz": doppler_hz.double().reshape(B, 1) * torch.cos(theta),
            "path_powers": powers, "path_gains": gains}


def path_matrices(ofdm: OFDMConfig, delays_s: torch.Tensor, doppler_hz: torch.Tensor, rows_f=None, rows_t=None):
    """Returns ``(E_f [B, F, N], E_t [B, T, N])`` complex128: ``exp(-j 2 pi f tau_n)`` and ``exp(j 2 pi nu_n t)``.

    ``delays_s``, ``doppler_hz`` [B, N] (s, Hz). ``rows_f``/``rows_t`` pick subcarriers / symbols
    (default: all). ``H = E_f diag(g) E_t^T``, i.e. ``A[(f, t), n] = E_f[f, n] E_t[t, n]``.
    """
    dev = delays_s.device
    f = subcarrier_offsets_hz(ofdm).to(dev)
    t = symbol_times_s(ofdm).to(dev)
    f = f if rows_f is None else f[torch.as_tensor(rows_f, device=dev)]
    t = t if rows_t is None else t[torch.as_tensor(rows_t, device=dev)]
    ang_f = (-2 * math.pi) * f.reshape(1, -1, 1) * delays_s.double().unsqueeze(1)
    ang_t = (2 * math.pi) * t.reshape(1, -1, 1) * doppler_hz.double().unsqueeze(1)
    return torch.polar(torch.ones_like(ang_f), ang_f), torch.polar(torch.ones_like(ang_t), ang_t)


def sparse_channel(ofdm: OFDMConfig, num_paths: int, delay_spread_s: torch.Tensor, doppler_hz: torch.Tensor,
                   generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns ``(H [B, F, T] complex64, support)``: the sparse channel on the grid and each frame's paths.

    ``support``: ``path_delays_s``, ``path_doppler_hz``, ``path_powers`` [B, N] float32 (what
    :class:`~wavefront.sim.frames.Frames` records and the oracle-support estimator reads).
    Evaluated in float64 and rounded once; deterministic per generator state.
    """
    paths = draw_sparse_paths(num_paths, delay_spread_s, doppler_hz, generator)
    e_f, e_t = path_matrices(ofdm, paths["path_delays_s"], paths["path_doppler_hz"])
    h = (e_f * paths["path_gains"].unsqueeze(1)) @ e_t.transpose(1, 2)
    support = {k: paths[k].float() for k in ("path_delays_s", "path_doppler_hz", "path_powers")}
    return h.to(torch.complex64), support
