"""Second-order statistics of the fading channel in closed form: correlations, covariance terms, ICI power.

Closed forms (tested in ``tests/sim/test_channel_statistics.py`` against the simulator of
:mod:`~wavefront.sim.fading`):

- frequency correlation ``E[H(f) H*(f + df)] = sum_l P_l exp(-j 2 pi tau_l df)``;
- time correlation of a TDL Rayleigh tap ``J0(2 pi f_d dt)``, of a CDL cluster
  ``mean_{m,n} exp(j 2 pi f_d sin(ZoA_n) cos(AoA_m - az) dt)`` over all pairs of its rays'
  arrival azimuth ``AoA_m`` and zenith ``ZoA_n`` (the expectation over the random coupling);
  a LoS path adds ``P_los exp(j 2 pi f_d c_los dt)``.

The covariance of the grid is therefore a sum of Kronecker products,
``R = sum_k R_f^(k) (x) R_t^(k)``: one term for TDL NLoS profiles (A, B, C), two for TDL
LoS profiles (D, E), one per cluster (plus the LoS path) for CDL, one for ``sparse``
(:func:`~wavefront.sim.sparse.sparse_freq_correlation` times ``J0``, the expectation over
each frame's random paths). :func:`covariance_terms`
returns those terms; LMMSE and the bound use them.

**The LoS path is not Gaussian.** TDL-D/E's (and CDL-D/E's) LoS path has a deterministic
Doppler ``f_d c_los`` (``c_los = 0.7`` for TDL) and a phase drawn uniformly per frame
(:func:`~wavefront.sim.fading.draw_sinusoids`): a random-phase sinusoid, whose covariance
``P_los exp(j 2 pi f_d c_los dt)`` is the term above. The second-order model (the genie LMMSE,
``mmse-bayes`` and the bound) treats it as if it were Gaussian with that covariance. It is far
from it: the normalised fourth moment ``E|H|^4 / (E|H|^2)^2`` of a resource element is 2 for a
complex Gaussian (1.99 for TDL-A's 20-sinusoid taps) and, by :func:`fourth_moment_ratio`, 1.21
for TDL-D and 1.20 for TDL-E (K = 7.9 and 8.5 over the whole channel), 1.09 and 1.01 for their
first tap alone, where the LoS path sits (1 would be a constant modulus).
``tests/sim/test_los.py`` holds these to Monte Carlo.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.special import j0, jv

from wavefront.errors import ConfigError
from wavefront.sim.config import OFDMConfig, SystemConfig
from wavefront.sim.profiles import ChannelProfile, subcarrier_offsets_hz, symbol_times_s
from wavefront.sim.sparse import sparse_freq_correlation

def freq_correlation(profile: ChannelProfile, delay_spread_s, df_hz, part: str = "all") -> torch.Tensor:
    """Returns ``sum_l P_l exp(-j 2 pi tau_l df)`` complex128, broadcast over ``delay_spread_s`` and ``df_hz``.

    ``part``: ``"all"`` (total), ``"nlos"`` (Rayleigh part) or ``"los"`` (specular part of tap 0).
    Shapes: ``delay_spread_s`` [...], ``df_hz`` [...]; broadcast together.
    """
    if profile.is_sparse:  # paths drawn per frame: the closed form of the expectation over them (no LoS part)
        return sparse_freq_correlation(delay_spread_s, df_hz)
    ds = torch.as_tensor(delay_spread_s, dtype=torch.float64)
    df = torch.as_tensor(df_hz, dtype=torch.float64)
    if part == "los":
        tau0 = float(profile.norm_delays[0])
        return (profile.los_power * torch.exp(-2j * math.pi * tau0 * ds * df)).to(torch.complex128)
    p = torch.as_tensor(profile.nlos_powers, dtype=torch.float64).clone()
    if part == "all":
        p[0] += profile.los_power
    tau = torch.as_tensor(profile.norm_delays, dtype=torch.float64)
    phase = -2 * math.pi * (ds * df).unsqueeze(-1) * tau
    return (p * torch.exp(1j * phase)).sum(-1)


def fourth_moment_ratio(profile: ChannelProfile, num_sinusoids: int = 20, tap: int | None = None) -> float:
    """Returns ``E|a|^4 / (E|a|^2)^2`` (2 for a complex Gaussian): of one resource element, or of tap ``tap`` alone.

    ``a = sqrt(P_los) exp(j phi_0) + sum_l x_l``, ``phi_0`` uniform, ``x_l`` independent sums of
    ``N = num_sinusoids`` equal-amplitude, uniform-phase sinusoids of power ``P_l`` (TDL): with
    ``s = P_los``, ``S = sum_l P_l``, ``E|a|^4 = s^2 + 4 s S + 2 S^2 - sum_l P_l^2 / N`` (a sum of N
    sinusoids has ``E|x|^4 = (2 - 1/N) P^2``), ``E|a|^2 = s + S``. Delays and Dopplers multiply each
    term by a unit phasor at a given (f, t) and leave this unchanged. ``tap``: only that tap's
    powers (the LoS sits on tap 0). For CDL clusters, ``N`` is the ray count.
    """
    p = np.asarray(profile.nlos_powers, dtype=np.float64)
    if tap is not None:
        p = p[tap:tap + 1]
    s = profile.los_power if tap in (None, 0) else 0.0
    n = profile.ray_aoa_rad.shape[1] if profile.is_cdl else num_sinusoids
    total = p.sum()
    return float((s * s + 4 * s * total + 2 * total ** 2 - (p ** 2).sum() / n) / (s + total) ** 2)


def time_correlation_jakes(doppler_hz, dt_s) -> torch.Tensor:
    """Returns ``J0(2 pi f_d dt)`` float64, the Clarke/Jakes time correlation of a Rayleigh tap."""
    x = 2 * math.pi * torch.as_tensor(doppler_hz, dtype=torch.float64) * torch.as_tensor(dt_s, dtype=torch.float64)
    return torch.from_numpy(j0(x.numpy()))


def cdl_time_correlation(profile: ChannelProfile, doppler_hz, dt_s) -> torch.Tensor:
    """Returns each CDL cluster's normalised time correlation [..., L] complex128.

    ``rho_l(dt) = E[a_l(t + dt) a_l*(t)] / P_l = mean_{m,n} exp(j 2 pi f_d sin(ZoA_n) cos(AoA_m - az) dt)``:
    the mean over all ``M^2`` (azimuth ``m``, zenith ``n``) pairs of cluster ``l``'s ray angles.
    A uniformly random pairing gives ray ``m`` each zenith with probability ``1/M``, so this is
    the exact expectation over the per-frame random coupling of :func:`tap_gains`.
    ``doppler_hz`` (Hz) and ``dt_s`` (s) broadcast together to [...]; L clusters, NLoS part only.
    """
    if not profile.is_cdl:
        raise ConfigError("profile", profile.name, "cdl_time_correlation needs a CDL profile")
    x = 2 * math.pi * torch.as_tensor(doppler_hz, dtype=torch.float64) * torch.as_tensor(dt_s, dtype=torch.float64)
    L = len(profile.norm_delays)
    xu, inv = torch.unique(x.abs().flatten(), return_inverse=True)  # rho(-x) = conj(rho(x))
    if xu.numel() == 0:
        return torch.empty(*x.shape, L, dtype=torch.complex128)
    cos_az, sin_ze = profile.ray_direction_factors()
    pair_cos = np.clip((cos_az[:, :, None] * sin_ze[:, None, :]).reshape(L, -1), -1.0, 1.0)  # [L, M*M]
    # Jacobi-Anger, exp(j x cos t) = sum_k eps_k j^k J_k(x) cos(k t), turns the mean over the
    # M^2 pairs into K + 1 moments mean(T_k(c)) of the pairs' Doppler cosines: the same numbers
    # (within 1e-13 up to f_d dt = 1000), several times faster than the direct mean over the
    # thousands of (f_d, dt) of a batch. |J_k(x)| < (e x / 2k)^k, below 1e-21 from K = 1.4 x + 40.
    K = int(math.ceil(1.4 * float(xu.max()))) + 40
    k = np.arange(K + 1)
    moments = np.cos(k[:, None, None] * np.arccos(pair_cos)).mean(-1)  # [K + 1, L]
    coef = np.array([1, 1j, -1, -1j])[k % 4] * np.where(k == 0, 1.0, 2.0)
    rho = torch.from_numpy((jv(k, xu.numpy()[:, None]) * coef) @ moments)  # [X, L]
    rho = rho[inv].reshape(*x.shape, L)
    return torch.where((x < 0).unsqueeze(-1), rho.conj(), rho)


def symbol_average_lags(ofdm: OFDMConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (lags [2N-1] float64 in s, weights [2N-1] float64) of the per-symbol average's correlation.

    The average of a stationary process over the N samples of a useful symbol (period
    ``Ts = 1 / (N scs)``, N from :meth:`OFDMConfig.time_sampling`) has the correlation
    ``rho_avg(dt) = sum_d w_d rho(dt + d Ts)``, ``w_d = (N - |d|) / N^2``, ``|d| < N``.
    Where ``time_sampling`` refuses the CP, N is the smallest power of two >= F (the warning
    about unmodelled ICI needs a level, not a simulator).
    """
    try:
        n = ofdm.time_sampling()[0]
    except ConfigError:
        n = 1 << max(ofdm.num_subcarriers - 1, 1).bit_length()
    d = torch.arange(-(n - 1), n, dtype=torch.float64)
    return d / (n * ofdm.subcarrier_spacing_hz), (n - d.abs()) / n ** 2


def covariance_terms(ofdm: OFDMConfig, profile: ChannelProfile, delay_spread_s, doppler_hz,
                     rows_f=None, cols_f=None, rows_t=None, cols_t=None, symbol_average: bool = False):
    """Returns the Kronecker terms ``[(R_f^(k), R_t^(k)), ...]`` of the channel covariance, complex128.

    ``R[(f1,t1),(f2,t2)] = E[H(f1,t1) H*(f2,t2)] = sum_k R_f^(k)[f1,f2] R_t^(k)[t1,t2]``.

    ``delay_spread_s``, ``doppler_hz``: [B] (or scalars, giving B = 1). ``rows_*``/``cols_*``
    select subcarrier / symbol indices (default: all). Output blocks are
    ``R_f`` [B, len(rows_f), len(cols_f)] and ``R_t`` [B, len(rows_t), len(cols_t)].
    ``symbol_average``: the covariance of each symbol's average channel over its useful samples
    (the label of ``channel.ici``) rather than of its value at one instant: every time
    correlation becomes ``sum_d w_d rho(dt + d Ts)`` (:func:`symbol_average_lags`); its value at
    ``dt = 0`` is ``1 - `` the ICI power (:func:`ici_power`).
    """
    ds = torch.as_tensor(delay_spread_s, dtype=torch.float64).reshape(-1, 1, 1)
    fd = torch.as_tensor(doppler_hz, dtype=torch.float64).reshape(-1, 1, 1)
    f = subcarrier_offsets_hz(ofdm)
    t = symbol_times_s(ofdm)
    rf = f if rows_f is None else f[list(rows_f)]
    cf = f if cols_f is None else f[list(cols_f)]
    rt = t if rows_t is None else t[list(rows_t)]
    ct = t if cols_t is None else t[list(cols_t)]
    # Correlations depend on lags alone, and a grid has few distinct lags: evaluate on those
    # (O(B * lags * taps)) and gather, rather than on every (row, column) pair.
    df_u, df_i = torch.unique(rf[:, None] - cf[None, :], return_inverse=True)
    dt_u, dt_i = torch.unique(rt[:, None] - ct[None, :], return_inverse=True)
    B = max(ds.shape[0], fd.shape[0])
    ds, fd = ds.expand(B, 1, 1), fd.expand(B, 1, 1)
    U = dt_u.numel()
    if symbol_average:
        lags, weights = symbol_average_lags(ofdm)
        dt_eval = (dt_u[:, None] + lags).reshape(-1)  # [U * K]

        def average(v):  # [..., U * K] -> [..., U]
            return (v.reshape(*v.shape[:-1], U, -1) * weights).sum(-1)
    else:
        dt_eval, average = dt_u, (lambda v: v)

    def on_grid(fun_f, fun_t):
        return (fun_f(df_u.reshape(1, 1, -1))[:, 0][:, df_i], average(fun_t(dt_eval.reshape(1, 1, -1)))[:, 0][:, dt_i])

    los = [on_grid(lambda df: freq_correlation(profile, ds, df, "los"),
                   lambda dt: torch.exp(2j * math.pi * profile.los_cos_aoa * fd * dt))] if profile.is_los else []
    if not profile.is_cdl:  # TDL: every tap has the Jakes time correlation
        jakes = lambda dt: time_correlation_jakes(fd, dt).to(torch.complex128)  # noqa: E731
        return [on_grid(lambda df: freq_correlation(profile, ds, df, "nlos"), jakes)] + los
    # CDL: each cluster has its own Doppler spectrum (averaged over the random ray coupling):
    # one term per cluster.
    rho = cdl_time_correlation(profile, fd, dt_eval.reshape(1, 1, -1))  # [B, 1, lags, L]
    clusters = []
    for l, (tau, power) in enumerate(zip(profile.norm_delays.tolist(), profile.nlos_powers.tolist())):
        clusters.append(on_grid(lambda df, tau=tau, power=power: power * torch.exp(-2j * math.pi * tau * ds * df),
                                lambda dt, l=l: rho[..., l]))
    return clusters + los


def ici_power(ofdm: OFDMConfig, profile: ChannelProfile, doppler_hz) -> torch.Tensor:
    """Returns the inter-carrier interference power per resource element, float64, broadcast over ``doppler_hz`` (Hz).

    With unit-power symbols on every subcarrier, the FFT of a symbol received through a channel
    that changes within it gives ``Y_k = H_avg,k X_k + ICI_k``, ``H_avg`` the channel averaged
    over the symbol's N useful samples; since ``E|H|^2 = 1``, ``E|ICI|^2 = 1 - E|H_avg|^2``
    = ``1 - sum_d w_d rho(d Ts)`` (:func:`symbol_average_lags`), for any profile. For Jakes fading
    (TDL) this is Russell & Stueber's ``1 - sum_d w_d J0(2 pi f_d d Ts)``, about
    ``(2 pi f_d / scs)^2 / 24`` at small ``f_d / scs``. Guard bins without symbols lower the
    edge subcarriers' share (-0.08 dB in the average at 120 of 128 bins); this ignores that.
    Independent of the delay spread.
    """
    fd = torch.as_tensor(doppler_hz, dtype=torch.float64)
    terms = covariance_terms(ofdm, profile, 0.0, fd.reshape(-1), rows_f=[0], cols_f=[0], rows_t=[0], cols_t=[0],
                             symbol_average=True)
    kept = sum(a[:, 0, 0] * b[:, 0, 0] for a, b in terms).real
    return (1.0 - kept).clamp_min(0.0).reshape(fd.shape)


def warn_unmodelled_ici(config: SystemConfig, profile: ChannelProfile) -> None:
    """Warns when the ICI that ``channel.ici: false`` leaves out exceeds the noise per RE.

    Compares :func:`ici_power` at the config's top Doppler with the noise variance at its top
    SNR (the worst frame the config can draw), and names both levels.
    """
    ch = config.channel
    fd, snr = (v[1] if isinstance(v, tuple) else v for v in (ch.doppler_hz, ch.snr_db))
    if fd <= 0:
        return
    ici = float(ici_power(config.ofdm, profile, fd))
    noise = float(config.noise_variance(torch.tensor(float(snr), dtype=torch.float64)))
    if ici > noise:
        warnings.warn(f"inter-carrier interference is not modelled: at doppler_hz={fd:g} it would be "
                      f"{10 * math.log10(ici):.1f} dB per RE, above the noise at snr_db={snr:g} "
                      f"({10 * math.log10(noise):.1f} dB per RE); set channel.ici: true (--ici) to model it",
                      stacklevel=1)  # one location: Python's default filter then says it once, however many generators


def isi_power(config: SystemConfig, profile: ChannelProfile, delay_spread_s: float) -> float:
    """Returns about the power per RE [linear, of the unit channel] that taps beyond the cyclic prefix would leak.

    A tap at delay ``tau`` beyond the CP ``T_cp`` loses the fraction ``(tau - T_cp) / T_u`` of its symbol to
    the previous one (``T_u = 1 / scs``, capped at 1): ``sum_l P_l min(1, max(0, (tau_l - T_cp) / T_u))``,
    ``tau_l = delay_spread_s * norm_delay_l``, the LoS power on tap 0. Neither path simulates it: both treat
    the channel as circular within the symbol. For ``sparse`` (delays drawn per frame) the taps are its expected
    PDP's 256 bins (:func:`~wavefront.sim.sparse.sparse_profile`), so this is the expected leak over the frames'
    paths (within 1e-4 of its integral).
    """
    o = config.ofdm
    t_u, t_cp = 1.0 / o.subcarrier_spacing_hz, o.cyclic_prefix_ratio / o.subcarrier_spacing_hz
    p = np.asarray(profile.nlos_powers, dtype=np.float64).copy()
    p[0] += profile.los_power
    frac = np.clip((delay_spread_s * np.asarray(profile.norm_delays, dtype=np.float64) - t_cp) / t_u, 0.0, 1.0)
    return float((p * frac).sum())


def warn_unmodelled_isi(config: SystemConfig, profile: ChannelProfile) -> None:
    """Warns when the inter-symbol interference of taps beyond the cyclic prefix (not simulated) exceeds the noise.

    A delay spread this long is a valid config, not an error: the frames, the genie LMMSE and the bound all
    treat the channel as circular and agree with one another; only the ISI a real receiver would see is
    left out. Compares :func:`isi_power` at the config's top delay spread with the noise at its top SNR.
    """
    ch = config.channel
    ds, snr = (v[1] if isinstance(v, tuple) else v for v in (ch.delay_spread_s, ch.snr_db))
    isi = isi_power(config, profile, ds)
    if isi <= 0:
        return
    noise = float(config.noise_variance(torch.tensor(float(snr), dtype=torch.float64)))
    if isi > noise:
        cp_us = 1e6 * config.ofdm.cyclic_prefix_ratio / config.ofdm.subcarrier_spacing_hz
        warnings.warn(f"inter-symbol interference is not modelled: at delay_spread_s={ds:g} taps beyond the "
                      f"{cp_us:.2f} us cyclic prefix would leak about {10 * math.log10(isi):.1f} dB per RE, above "
                      f"the noise at snr_db={snr:g} ({10 * math.log10(noise):.1f} dB per RE); the frames treat the "
                      f"channel as circular within each symbol", stacklevel=1)  # once a process, as above
