"""Second-order statistics of the received pilots under the receiver impairments' *distribution* (closed forms).

With the impairments of :mod:`~wavefront.sim.impairments` on, a pilot at subcarrier ``k`` of symbol ``s``
is ``y = c_(k,s) h + i + n``: ``h`` the label (each symbol's average channel, the time-domain path's), ``i``
the ICI (Doppler's and the impairments'), ``n`` the noise, and ``c`` the impairments' per-RE factor,

    c_(k,s) = c_f(k) c_t(s),   c_f(k) = exp(-j 2 pi k delta / N),   c_t(s) = (1/N) sum_n exp(j theta(j_s + n)),

``delta`` the timing offset (within the CP: a pure ramp, ``k`` the signed subcarrier index of
:func:`~wavefront.sim.impairments.signed_bins`), ``theta`` the oscillator phase ``2 pi f_cfo t + phi_pn(t)``
at absolute sample ``t`` (0 at the frame's first sample), ``j_s = s (N + N_cp) + N_cp`` symbol ``s``'s first
useful sample. Each frame draws ``delta``, ``f_cfo`` and the linewidth ``beta`` uniformly over the config's
ranges (fixed values: one point), independently of each other and of ``h`` and ``n``. An estimator that
knows that distribution but not the frame's values sees the second-order statistics

    R_yy = R_pp * E[c c^H] + (sigma^2 + P_ici) I,     R_hy = R_hp * conj(E[c])^T   (elementwise, broadcast over rows),

with, in closed form (``psi(tau) = E exp(j (theta(t + tau) - theta(t)))``, the phase's characteristic function
at a lag of ``tau`` samples, which depends on the lag alone because a CFO is linear and the Wiener phase has
stationary increments):

- timing, ``delta ~ U[a, b]``: ``E[c_f(k) conj(c_f(k'))] = exp(-j pi (k - k') (a + b) / N) sinc((k - k') (b - a) / N)``
  and ``E[c_f(k)]`` the same at ``k' = 0`` (``sinc(x) = sin(pi x) / (pi x)``);
- CFO, ``f ~ U[a, b]`` Hz: ``psi_cfo(tau) = exp(j pi (a + b) tau Ts) sinc((b - a) tau Ts)``;
- phase noise, ``beta ~ U[a, b]`` Hz: ``E exp(-pi beta Ts |tau|) = exp(-x a / w) (1 - exp(-x)) / x`` with
  ``x = pi Ts |tau| (b - a)``, ``w = b - a`` (``exp(-pi a Ts |tau|)`` for a fixed linewidth), since a Wiener
  increment over ``|tau|`` samples is ``N(0, 2 pi beta Ts |tau|)``;
- both: ``psi = psi_cfo psi_pn``; then ``E[c_t(s) conj(c_t(s'))] = (1/N^2) sum_(|d| < N) (N - |d|) psi(j_s - j_s' + d)``,
  ``E[c_t(s)] = (1/N) sum_n psi(j_s + n)`` (the phase starts at 0), and ``E|c|^2 = E|c_t(s)|^2`` (the same for
  every ``s``; ``|c_f| = 1``).

The impairments conserve power (unitary in time) with all bins loaded, so their ICI is ``P_imp = 1 - E|c|^2``
per RE (120 of 128 bins loaded, the default pilots see within 0.07 dB of it except subcarrier 0, whose 8 nearest
neighbours below are empty: 2.7 dB less there, 0.19 dB less averaged over the 12 pilots); with Doppler's ``P_dop``
(:func:`~wavefront.sim.statistics.ici_power`) on the label's ``1 - P_dop``, the total is
``P_ici = 1 - (1 - P_imp)(1 - P_dop)``, treated as white noise (as the genie treats Doppler's ICI).
``tests/sim/test_impairment_stats.py`` holds every moment to Monte Carlo of the frame generator's own
functions within 3 standard errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.impairments import IMPAIRMENT_LABELS, impairments_on, signed_bins


def _range(value) -> tuple[float, float]:
    """Returns ``(low, high)`` of a fixed value or a ``[low, high]`` range."""
    return (float(value[0]), float(value[1])) if isinstance(value, tuple) else (float(value), float(value))


def uniform_phase_mean(omega, low: float, high: float) -> np.ndarray:
    """Returns ``E exp(j omega u)`` [..] complex128 for ``u ~ U[low, high]`` (``u = low`` when ``low == high``).

    ``exp(j omega (low + high) / 2) sinc(omega (high - low) / (2 pi))``, ``sinc(x) = sin(pi x) / (pi x)``.
    """
    w = np.asarray(omega, dtype=np.float64)
    return np.exp(0.5j * w * (low + high)) * np.sinc(w * (high - low) / (2 * np.pi))


def phase_characteristic(config: SystemConfig, lags) -> np.ndarray:
    """Returns ``psi(tau) = E exp(j (theta(t + tau) - theta(t)))`` [..] complex128 at integer ``lags`` [..] (samples).

    ``theta`` the oscillator phase of the config's CFO and phase-noise distributions (1 where both are off).
    """
    ch, o = config.channel, config.ofdm
    n = o.time_sampling()[0]
    ts = 1.0 / (n * o.subcarrier_spacing_hz)
    tau = np.asarray(lags, dtype=np.float64)
    psi = np.ones(tau.shape, dtype=np.complex128)
    if ch.cfo_hz is not None:
        lo, hi = _range(ch.cfo_hz)
        psi = psi * uniform_phase_mean(2 * np.pi * ts * tau, lo, hi)
    if ch.phase_noise_linewidth_hz is not None:
        lo, hi = _range(ch.phase_noise_linewidth_hz)
        kappa = np.pi * ts * np.abs(tau)
        x = kappa * (hi - lo)
        # E exp(-kappa beta), beta ~ U[lo, hi]: exp(-kappa lo) (1 - exp(-x)) / x, -> exp(-kappa lo) as x -> 0
        ratio = np.where(x > 0, -np.expm1(-x) / np.where(x > 0, x, 1.0), 1.0)
        psi = psi * np.exp(-kappa * lo) * ratio
    return psi


@dataclass(frozen=True)
class ImpairmentMoments:
    """The first and second moments of the impairments' per-RE factor ``c = c_f(k) c_t(s)`` (module docstring).

    ``mean_f`` [F], ``corr_f`` [F, F] complex128: ``E[c_f(k)]``, ``E[c_f(k) conj(c_f(k'))]`` over subcarriers
    (the timing ramp; ones without a timing offset). ``mean_t`` [T], ``corr_t`` [T, T] complex128: the same of
    each symbol's common factor ``c_t(s)`` (CFO and phase noise). ``ici_power``: ``P_imp = 1 - E|c|^2``, the
    impairments' ICI power per RE (linear, unit channel power).
    """

    mean_f: torch.Tensor
    corr_f: torch.Tensor
    mean_t: torch.Tensor
    corr_t: torch.Tensor
    ici_power: float

    def total_ici_power(self, doppler_ici) -> torch.Tensor:
        """Returns ``1 - (1 - P_imp)(1 - P_dop)`` [..] float64: the ICI power per RE beside Doppler's ``doppler_ici`` [..]."""
        return 1.0 - (1.0 - self.ici_power) * (1.0 - torch.as_tensor(doppler_ici, dtype=torch.float64))

    def modulate(self, f_hp: list, t_hp: list, f_pp: list, t_pp: list, pf, pt) -> tuple[list, list, list, list]:
        """Returns the Kronecker (or scattered) covariance blocks of the impaired pilots: ``R_hy`` and ``R_yy`` without noise.

        ``f_hp[j]`` [.., F, len(pf)], ``t_hp[j]`` [.., T, len(pt)], ``f_pp[j]`` [.., len(pf), len(pf)],
        ``t_pp[j]`` [.., len(pt), len(pt)] complex128: term ``j`` of ``R_hp`` and ``R_pp``, their columns at the
        pilots' subcarriers ``pf`` and symbols ``pt`` (:meth:`PilotLayout.covariance_columns` for a Kronecker
        layout; each pilot's own for a scattered one). ``(A * M_f) (x) (B * M_t) = (A (x) B) * (M_f (x) M_t)`` and
        the same elementwise, so each term is modulated factor by factor: ``R_hp`` columns by ``conj(E[c])``,
        ``R_pp`` by ``E[c c^H]``.
        """
        pf, pt = list(pf), list(pt)
        mf, mt = self.mean_f[pf].conj(), self.mean_t[pt].conj()
        cf, ct = self.corr_f[pf][:, pf], self.corr_t[pt][:, pt]
        return ([a * mf for a in f_hp], [b * mt for b in t_hp], [a * cf for a in f_pp], [b * ct for b in t_pp])


def check_closed_form(config: SystemConfig, field: str = "channel.timing_offset_samples") -> None:
    """Raises ConfigError when the config's timing-offset range leaves ``[0, N_cp]``, where ``c_f`` is a pure ramp."""
    value = config.channel.timing_offset_samples
    if value is None:
        return
    lo, hi = _range(value)
    cp = config.ofdm.time_sampling()[1]
    if lo < 0 or hi > cp:
        raise ConfigError(field, list(value) if isinstance(value, tuple) else value,
                          f"the impairment-aware estimators need 0 <= delta <= N_cp = {cp} samples (a pure ramp; "
                          "beyond it ISI has no closed form here)")


@lru_cache(maxsize=16)
def impairment_moments(config: SystemConfig) -> ImpairmentMoments | None:
    """Returns the :class:`ImpairmentMoments` of ``config``'s impairment distribution, or ``None`` when all are off.

    Raises ConfigError for a timing-offset range outside ``[0, N_cp]`` (:func:`check_closed_form`).
    """
    if not impairments_on(config.channel):
        return None
    check_closed_form(config)
    o = config.ofdm
    n, cp = o.time_sampling()
    F, T = o.grid_shape
    k = signed_bins(o, n)[:F].numpy()
    if config.channel.timing_offset_samples is not None:
        lo, hi = _range(config.channel.timing_offset_samples)
        mean_f = uniform_phase_mean(-2 * np.pi * k / n, lo, hi)
        corr_f = uniform_phase_mean(-2 * np.pi * (k[:, None] - k[None, :]) / n, lo, hi)
    else:
        mean_f, corr_f = np.ones(F, dtype=np.complex128), np.ones((F, F), dtype=np.complex128)
    start = np.arange(T) * (n + cp) + cp  # j_s
    mean_t = phase_characteristic(config, start[:, None] + np.arange(n)[None, :]).mean(1)
    d = np.arange(-(n - 1), n)
    weight = (n - np.abs(d)) / n ** 2
    corr_t = (phase_characteristic(config, (start[:, None] - start[None, :])[..., None] + d) * weight).sum(-1)
    kept = float((phase_characteristic(config, d) * weight).sum().real)  # E|c_t(s)|^2, every s
    t = lambda a: torch.as_tensor(a, dtype=torch.complex128)  # noqa: E731
    return ImpairmentMoments(t(mean_f), t(corr_f), t(mean_t), t(corr_t), 1.0 - kept)


def impairment_text(config: SystemConfig) -> str:
    """Returns what the impairment-aware estimators know, in words: the distribution, not the frame's values."""
    ch = config.channel
    parts = []
    for field, (label, unit) in IMPAIRMENT_LABELS.items():
        v = getattr(ch, field)
        if v is not None:
            lo, hi = _range(v)
            parts.append(f"{label} {lo:g}" + ("" if lo == hi else f" to {hi:g}") + f" {unit}" + ("" if lo == hi else " uniform"))
    return f"true impairment distribution ({', '.join(parts)}), per-frame values unknown"

