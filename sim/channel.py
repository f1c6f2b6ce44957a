"""3GPP TDL and CDL fading on the OFDM grid, with per-frame delay spread and Doppler, and its closed forms.

The tables come from Sionna: normalised delays, powers and LoS K-factor of
``sionna.phy.channel.tr38901.TDL``, and for CDL also the per-ray arrival angles of
``tr38901.CDL`` (cluster angles plus the Table 7.5-3 offsets scaled by the cluster spread).
The frequency response is the sum of Sionna's ``cir_to_ofdm_channel``, computed faster (see
:func:`frequency_response`). What wavefront adds is a **per-frame, recorded** delay spread
and maximum Doppler: Sionna's models take one delay spread per instance and draw their
velocity internally without returning it, so the path gains are drawn here, one Doppler
per frame:

- a TDL tap is a sum of sinusoids (Zheng & Xiao) whose angles are drawn per frame, so its
  Doppler spectrum is Jakes';
- a CDL cluster is the sum of its 20 rays, each with a random phase and the Doppler
  ``f_d cos(angle between its arrival direction and the travel direction)``; the rays' arrival
  azimuths and zeniths are re-paired at random per frame and cluster (TR 38.901's random
  coupling, as Sionna's ``CDL`` does). With SISO omnidirectional antennas that is the whole of
  TR 38.901's CDL channel.

Closed forms (tested in ``tests/sim/test_channel_statistics.py``):

- frequency correlation ``E[H(f) H*(f + df)] = sum_l P_l exp(-j 2 pi tau_l df)``;
- time correlation of a TDL Rayleigh tap ``J0(2 pi f_d dt)``, of a CDL cluster
  ``mean_{m,n} exp(j 2 pi f_d sin(ZoA_n) cos(AoA_m - az) dt)`` over all pairs of its rays'
  arrival azimuth ``AoA_m`` and zenith ``ZoA_n`` (the expectation over the random coupling);
  a LoS path adds ``P_los exp(j 2 pi f_d c_los dt)``.

The covariance of the grid is therefore a sum of Kronecker products,
``R = sum_k R_f^(k) (x) R_t^(k)``: one term for TDL NLoS profiles (A, B, C), two for TDL
LoS profiles (D, E), one per cluster (plus the LoS path) for CDL. :func:`covariance_terms`
returns those terms; LMMSE and the bound use them.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.special import j0, jv

from wavefront.errors import ConfigError
from wavefront.sim.config import OFDMConfig, SystemConfig

# TR 38.901 7.7.2: the LoS Doppler peak sits at 0.7 of the maximum Doppler
LOS_ANGLE_OF_ARRIVAL = math.acos(0.7)
_CHUNK = 128  # frames per block in the heavy loops on CPU: large enough to vectorise, small enough for cache
_CHUNK_GPU = 8192  # on a GPU the blocks only bound memory (about 0.2 GB of temporaries for TDL-A)


def _chunk(device: torch.device) -> int:
    return _CHUNK if device.type == "cpu" else _CHUNK_GPU


@dataclass(frozen=True)
class ChannelProfile:
    """A TDL or CDL profile normalised to unit power and unit RMS delay spread.

    ``norm_delays`` [L] (delays / delay_spread), ``nlos_powers`` [L] (Rayleigh part of each
    tap or cluster), ``los_power`` (specular part at delay ``norm_delays[0]``, 0 for NLoS),
    ``los_cos_aoa`` (Doppler cosine of the LoS path). For CDL, ``ray_aoa_rad`` and
    ``ray_zoa_rad`` [L, M] float64 (rad) hold each cluster's ray arrival azimuths and zeniths in
    table order, *unpaired*: a frame pairs them by a random permutation per cluster (see
    :func:`tap_gains`); ``travel_azimuth_rad`` is the UT's horizontal direction of travel. Both
    are ``None`` for TDL taps, whose angles are drawn per frame.
    ``nlos_powers.sum() + los_power == 1``.
    """

    name: str
    norm_delays: np.ndarray
    nlos_powers: np.ndarray
    los_power: float
    los_cos_aoa: float
    ray_aoa_rad: np.ndarray | None = None
    ray_zoa_rad: np.ndarray | None = None
    travel_azimuth_rad: float = 0.0

    @property
    def is_los(self) -> bool:
        return self.los_power > 0

    @property
    def is_cdl(self) -> bool:
        return self.ray_aoa_rad is not None

    def ray_direction_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns (``cos(AoA - travel azimuth)``, ``sin(ZoA)``), each [L, M] float64, CDL only.

        A ray pairing azimuth ``m`` with zenith ``n`` has the Doppler cosine ``sin(ZoA_n) cos(AoA_m - az)``.
        """
        return np.cos(self.ray_aoa_rad - self.travel_azimuth_rad), np.sin(self.ray_zoa_rad)


@lru_cache(maxsize=None)
def tdl_profile(name: str) -> ChannelProfile:
    """Returns the TR 38.901 TDL profile ``name`` (A..E), read from Sionna's tables."""
    from sionna.phy.channel.tr38901 import TDL

    model = TDL(name, delay_spread=1.0, carrier_frequency=1e9, los_angle_of_arrival=LOS_ANGLE_OF_ARRIVAL,
                device="cpu", precision="double")
    delays = model.delays.cpu().numpy().astype(np.float64)
    powers = model.mean_powers.cpu().numpy().astype(np.float64)
    los = float(model.mean_power_los.cpu()) if model.los else 0.0
    nlos = powers.copy()
    nlos[0] -= los  # mean_powers folds the specular power into tap 0
    cos_aoa = math.cos(LOS_ANGLE_OF_ARRIVAL) if model.los else 0.0
    total = nlos.sum() + los
    return ChannelProfile(name, delays, nlos / total, los / total, cos_aoa)


def _doppler_cos(aoa_rad, zoa_rad, travel_azimuth_rad: float):
    """Returns ``r_hat . v_hat`` for arrival angles (azimuth, zenith) and horizontal travel."""
    return np.sin(zoa_rad) * np.cos(aoa_rad - travel_azimuth_rad)


@lru_cache(maxsize=None)
def cdl_profile(name: str, travel_azimuth_deg: float = 0.0) -> ChannelProfile:
    """Returns the TR 38.901 CDL profile ``name`` (``CDL-A``..``CDL-E``) for SISO omni antennas.

    Reads Sionna's ``CDL`` tables (Sionna 2.2.0, spec 19.2): normalised cluster delays and
    powers, the K-factor, and the 20 ray arrival azimuths and zeniths per cluster (cluster angle
    plus the Table 7.5-3 offsets scaled by the cluster spread), kept unpaired: the coupling of
    azimuth and zenith is drawn per frame (:func:`tap_gains`). The UT travels horizontally at
    azimuth ``travel_azimuth_deg``; a ray gets the Doppler cosine ``sin(ZoA) cos(AoA - azimuth)``.
    Angles at the UT are the tables' arrival angles in both link directions (Sionna swaps the
    tables for uplink so that they stay at the UT).
    """
    from sionna.phy.channel.tr38901 import CDL, Antenna

    omni = Antenna("single", "V", "omni", carrier_frequency=1e9, device="cpu", precision="double")
    model = CDL(name.removeprefix("CDL-"), delay_spread=1.0, carrier_frequency=1e9, ut_array=omni, bs_array=omni,
                device="cpu", precision="double")
    delays = model._delays.cpu().numpy().astype(np.float64)
    powers = model._powers.cpu().numpy().astype(np.float64)  # NLoS clusters, summing to 1
    az = math.radians(travel_azimuth_deg)
    aoa = model._aoa.cpu().numpy().astype(np.float64)
    zoa = model._zoa.cpu().numpy().astype(np.float64)
    los, los_cos = 0.0, 0.0
    if model._has_los:
        if delays[0] != 0.0:
            raise ValueError(f"{name}: the LoS path must share the first cluster's delay")
        k = float(model._k_factor.cpu())
        los, powers = k / (k + 1), powers / (k + 1)
        los_cos = float(_doppler_cos(float(model._los_aoa), float(model._los_zoa), az))
    total = powers.sum() + los
    return ChannelProfile(name, delays, powers / total, los / total, los_cos, aoa, zoa, az)


def channel_profile(name: str, travel_azimuth_deg: float = 0.0) -> ChannelProfile:
    """Returns the profile a :class:`ChannelConfig` names: TDL letters ``A``..``E`` or ``CDL-A``..``CDL-E``."""
    if name.startswith("CDL-"):
        return cdl_profile(name, float(travel_azimuth_deg))
    return tdl_profile(name)


def subcarrier_offsets_hz(ofdm: OFDMConfig) -> torch.Tensor:
    """Returns the baseband subcarrier frequencies [F] float64 in Hz (Sionna's convention)."""
    from sionna.phy.channel import subcarrier_frequencies

    return subcarrier_frequencies(ofdm.num_subcarriers, ofdm.subcarrier_spacing_hz,
                                  precision="double", device="cpu")


def symbol_times_s(ofdm: OFDMConfig) -> torch.Tensor:
    """Returns the start times [T] float64 of the OFDM symbols in s: ``n * T_sym``."""
    return torch.arange(ofdm.num_symbols, dtype=torch.float64) * ofdm.symbol_duration_s


# ---------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------
def freq_correlation(profile: ChannelProfile, delay_spread_s, df_hz, part: str = "all") -> torch.Tensor:
    """Returns ``sum_l P_l exp(-j 2 pi tau_l df)`` complex128, broadcast over ``delay_spread_s`` and ``df_hz``.

    ``part``: ``"all"`` (total), ``"nlos"`` (Rayleigh part) or ``"los"`` (specular part of tap 0).
    Shapes: ``delay_spread_s`` [...], ``df_hz`` [...]; broadcast together.
    """
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
                      stacklevel=3)


# ---------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SinusoidDraws:
    """The random part of a batch of sum-of-sinusoids channels, drawn once and evaluable at any times.

    ``doppler_hz`` [B] float32 (maximum Doppler per frame, Hz); ``cosines`` [B, L, N] float32
    (each sinusoid's Doppler cosine, so its frequency is ``doppler_hz * cosine``);
    ``phases_rad`` [B, L, N] float32; ``los_phase_rad`` [B, 1] float32 for a LoS profile, else ``None``.
    """

    doppler_hz: torch.Tensor
    cosines: torch.Tensor
    phases_rad: torch.Tensor
    los_phase_rad: torch.Tensor | None


def draw_sinusoids(profile: ChannelProfile, doppler_hz: torch.Tensor, num_sinusoids: int,
                   generator: torch.Generator) -> SinusoidDraws:
    """Returns the per-frame random draws of :func:`tap_gains` (see there for the model), in its order.

    ``doppler_hz`` [B]; the draws are on its device. The frequency-domain path
    (:func:`ofdm_channel`) and the time-domain one (:class:`TimeVaryingChannel`) both start
    here, so one seed gives the same channel realisation, and the same generator state after it.
    """
    dev = doppler_hz.device
    B, L = doppler_hz.shape[0], len(profile.norm_delays)
    if not profile.is_cdl:
        N = num_sinusoids
        n = torch.arange(1, N + 1, device=dev, dtype=torch.float32)
        theta = (torch.rand(B, L, N, generator=generator, device=dev) * 2 - 1) * (math.pi / N)
        cosines = torch.cos(2 * math.pi * n / N + theta)
    else:
        N = profile.ray_aoa_rad.shape[1]
        cos_az, sin_ze = (torch.as_tensor(v, dtype=torch.float32, device=dev).expand(B, L, N)
                          for v in profile.ray_direction_factors())
        cosines = (cos_az.gather(2, _random_permutations(B, L, N, generator, dev))
                   * sin_ze.gather(2, _random_permutations(B, L, N, generator, dev)))
    phi = (torch.rand(B, L, N, generator=generator, device=dev) * 2 - 1) * math.pi
    phi0 = (torch.rand(B, 1, generator=generator, device=dev) * 2 - 1) * math.pi if profile.is_los else None
    return SinusoidDraws(doppler_hz, cosines, phi, phi0)


def tap_gains(profile: ChannelProfile, doppler_hz: torch.Tensor, times_s: torch.Tensor,
              num_sinusoids: int, generator: torch.Generator) -> torch.Tensor:
    """Returns sum-of-sinusoids tap gains ``a`` [B, L, T] complex64 with ``E|a_l|^2 = P_l``.

    ``doppler_hz`` [B] float32 (one maximum Doppler per frame), ``times_s`` [T].
    Each tap is ``sqrt(P_l/N) sum_n exp(j(2 pi f_d t c_n + phi_n))``, ``phi_n ~ U(-pi, pi)``.
    TDL: ``c_n = cos(alpha_n)``, ``alpha_n = 2 pi n / N + theta_n``, ``theta_n ~ U(-pi/N, pi/N)``
    drawn per frame: averaging over ``theta`` makes the autocorrelation exactly
    ``J0(2 pi f_d dt)``. CDL: ``N`` is the cluster's ray count (``num_sinusoids`` is not used) and
    ``c_n = sin(ZoA_{pi(n)}) cos(AoA_{sigma(n)} - az)``, where ``sigma`` and ``pi`` are
    independent uniformly random permutations drawn per frame and per cluster: TR 38.901's
    random coupling of rays within a cluster, as Sionna 2.2's ``CDL._random_coupling`` does it
    (it shuffles AoA, AoD, ZoA and ZoD independently per link and cluster, by argsort of random
    numbers; with SISO omni antennas only the arrival pair AoA/ZoA sets the Doppler). The
    cluster's time correlation is then :func:`cdl_time_correlation`. A LoS path at tap 0 adds
    ``sqrt(P_los) exp(j(2 pi f_d t c_los + phi_0))``; its angles are fixed.
    """
    return evaluate_tap_gains(profile, draw_sinusoids(profile, doppler_hz, num_sinusoids, generator), times_s)


def evaluate_tap_gains(profile: ChannelProfile, draws: SinusoidDraws, times_s: torch.Tensor) -> torch.Tensor:
    """Returns the tap gains ``a`` [B, L, T] complex64 of ``draws`` at ``times_s`` [T] (s); see :func:`tap_gains`."""
    doppler_hz, cosines, phi = draws.doppler_hz, draws.cosines, draws.phases_rad
    dev = doppler_hz.device
    B, L, N = cosines.shape
    w = 2 * math.pi * doppler_hz.float().reshape(B, 1, 1, 1)  # rad/s
    t = times_s.to(dev, torch.float32).reshape(1, 1, 1, -1)
    a_re = torch.empty(B, L, t.shape[-1], device=dev)
    a_im = torch.empty_like(a_re)
    # Real cos/sin sums, then one complex tensor: about 3x faster on CPU than summing
    # torch.polar phasors. Chunks keep the [b, L, N, T] intermediates in cache; same numbers.
    c = _chunk(dev)
    for s in range(0, B, c):
        arg = (w[s:s + c] * t) * cosines[s:s + c].unsqueeze(-1) + phi[s:s + c].unsqueeze(-1)
        a_re[s:s + c] = torch.cos(arg).sum(2)
        a_im[s:s + c] = torch.sin(arg).sum(2)
    a = torch.complex(a_re, a_im)
    amp = torch.as_tensor(np.sqrt(profile.nlos_powers / N), dtype=torch.float32, device=dev)
    a = a * amp.reshape(1, L, 1)
    if profile.is_los:
        arg0 = w.reshape(B, 1) * profile.los_cos_aoa * t.reshape(1, -1) + draws.los_phase_rad
        a[:, 0] += math.sqrt(profile.los_power) * torch.polar(torch.ones_like(arg0), arg0)
    return a


def _random_permutations(B: int, L: int, N: int, generator: torch.Generator, device) -> torch.Tensor:
    """Returns [B, L, N] int64: an independent uniformly random permutation of ``0..N-1`` per (frame, cluster)."""
    return torch.rand(B, L, N, generator=generator, device=device).argsort(dim=-1)


def ofdm_channel(ofdm: OFDMConfig, profile: ChannelProfile, delay_spread_s: torch.Tensor, doppler_hz: torch.Tensor,
                 num_sinusoids: int, generator: torch.Generator) -> torch.Tensor:
    """Returns the channel on the resource grid, H [B, F, T] complex64, ``E|H|^2 = 1``.

    ``delay_spread_s`` [B] RMS delay spread in s and ``doppler_hz`` [B] maximum Doppler in Hz,
    one per frame. No per-frame energy normalisation: that would bias the time correlation
    and make the channel non-Gaussian.
    """
    dev = doppler_hz.device
    freqs, times, norm_delays = _grid_axes(ofdm, tuple(profile.norm_delays.tolist()), dev)
    a = tap_gains(profile, doppler_hz, times, num_sinusoids, generator)  # [B, L, T]
    tau = delay_spread_s.float().reshape(-1, 1) * norm_delays
    return frequency_response(freqs, a, tau)


@lru_cache(maxsize=64)
def _grid_axes(ofdm: OFDMConfig, norm_delays: tuple[float, ...], device: torch.device):
    """Returns (subcarrier offsets [F] float32 Hz, symbol times [T] float64 s, normalised delays [L] float32) on ``device``.

    Cached, so a training loop that draws frames on a GPU every step makes no host-to-device copies.
    """
    return (subcarrier_offsets_hz(ofdm).to(device, torch.float32), symbol_times_s(ofdm).to(device),
            torch.tensor(norm_delays, dtype=torch.float32, device=device))


def frequency_response(freqs_hz: torch.Tensor, a: torch.Tensor, tau_s: torch.Tensor) -> torch.Tensor:
    """Returns ``H[b, f, t] = sum_l a[b, l, t] exp(-j 2 pi f tau[b, l])`` [B, F, T] complex64.

    ``freqs_hz`` [F], ``a`` [B, L, T] complex64, ``tau_s`` [B, L]. The same sum as Sionna's
    ``cir_to_ofdm_channel`` (a test holds the two equal), with the phasors built from real
    cos/sin, about 3x faster on CPU than the complex ``exp`` Sionna uses.
    """
    B = a.shape[0]
    h = torch.empty(B, freqs_hz.shape[0], a.shape[2], dtype=torch.complex64, device=a.device)
    c = _chunk(a.device)
    for s in range(0, B, c):
        theta = (2 * math.pi) * tau_s[s:s + c].unsqueeze(-1) * freqs_hz  # [b, L, F]
        e = torch.complex(torch.cos(theta), -torch.sin(theta))
        h[s:s + c] = torch.einsum("blf,blt->bft", e, a[s:s + c])
    return h


_CHUNK_ICI_GPU = 2048  # frames per block of the time-domain path on a GPU (its [b, P, T, N] FFT blocks)
_TAYLOR_TOL = 1e-10  # series remainder bound, well below float32 round-off (6e-8)


class TimeVaryingChannel:
    """A batch of channels that change within each OFDM symbol: the time-domain (ICI) path of ``channel.ici``.

    Holds the draws of :func:`draw_sinusoids` (the same as the frequency-domain path's for the
    same generator state) and the tap delays ``tau_s`` [B, L] float32 (s). :meth:`propagate`
    sends a grid through it as a time-domain simulator does, per frame and symbol:

    1. the grid's F subcarriers go on their bins of an N-point IFFT (N and the CP from
       :meth:`OFDMConfig.time_sampling`: 128 and 9 samples for 120 subcarriers and NR's CP);
    2. tap ``l`` delays the symbol by ``tau_l`` exactly: its signal is the IFFT of
       ``X_k exp(-j 2 pi f_k tau_l)``, the band-limited symbol with its cyclic prefix evaluated
       at ``t - tau_l`` (the ideal, untruncated form of the sinc interpolation of Sionna's
       ``cir_to_time_channel``; a test holds the two equal at whole-sample delays, where
       Sionna's is exact);
    3. the taps are weighted by their gains ``a_l(t)`` at each sample time
       ``t = m T_sym + (N_cp + n) Ts`` of the useful part (the receiver drops the CP samples),
       summed, and demodulated by an N-point FFT.

    The gains are the sums of sinusoids of :func:`tap_gains`, evaluated at the samples through a
    Taylor series in time about each symbol's centre, ``exp(j w c (t_c + u T_u)) = exp(j w c t_c)
    sum_p (j w c T_u u)^p / p!``, ``|u| < 1/2``, cut where the remainder bound
    ``(pi f_d / scs)^p / p!`` falls below 1e-10 (8 terms at 1000 Hz, 15 kHz; 1 at 0 Hz).
    Then ``sum_l a_l(t) IFFT(E_l X)(t) = sum_p u^p IFFT(H_p X)``, with ``H_p`` the frequency
    response of the taps' p-th coefficients: P IFFTs per symbol instead of one per tap, and the
    same numbers as the direct sum (a test holds the gains to :func:`evaluate_tap_gains` at every
    sample time).

    Intersymbol interference is not modelled: a tap delayed beyond the CP reads the current
    symbol's cyclic extension, as the frequency-domain path assumes (TDL-A at 300 ns ends at
    2.9 us, inside the 4.7 us CP).

    **Label.** ``Y_k = H_avg,k X_k + ICI_k`` exactly, with ``H_avg`` the channel averaged over the
    symbol's N useful samples: the coefficient a one-tap equaliser after the FFT sees. That average
    is the label ``h``: perfect-CSI equalisation then leaves ICI and noise only, and the split
    ``E|H_avg|^2 + E|ICI|^2 = 1`` is exact (:func:`ici_power`); the value at the symbol's centre
    misses that coefficient by a second-order term (about -47 dB at 1000 Hz) and its covariance
    with the received pilots has no Kronecker closed form of its own. The frequency-domain path's
    label is the value at the symbol start; the two agree at 0 Hz.
    """

    def __init__(self, ofdm: OFDMConfig, profile: ChannelProfile, draws: SinusoidDraws, tau_s: torch.Tensor):
        self.ofdm, self.profile, self.draws, self.tau_s = ofdm, profile, draws, tau_s
        self.fft_size, self.cp_samples = ofdm.time_sampling()

    @classmethod
    def draw(cls, ofdm: OFDMConfig, profile: ChannelProfile, delay_spread_s: torch.Tensor, doppler_hz: torch.Tensor,
             num_sinusoids: int, generator: torch.Generator) -> "TimeVaryingChannel":
        """Returns channels drawn as :func:`ofdm_channel` draws them (same arguments, same generator use)."""
        norm_delays = _grid_axes(ofdm, tuple(profile.norm_delays.tolist()), doppler_hz.device)[2]
        draws = draw_sinusoids(profile, doppler_hz, num_sinusoids, generator)
        return cls(ofdm, profile, draws, delay_spread_s.float().reshape(-1, 1) * norm_delays)

    def __len__(self) -> int:
        return self.tau_s.shape[0]

    def sample_offsets(self, device=None) -> torch.Tensor:
        """Returns ``u`` [N] float32: each useful sample's time from the symbol centre in units of ``T_u = 1/scs``."""
        n = self.fft_size
        return (torch.arange(n, device=device, dtype=torch.float64) - (n - 1) / 2).div(n).float()

    def sample_times_s(self) -> torch.Tensor:
        """Returns the time [T, N] float64 (s) of every useful sample: ``m T_sym + (N_cp + n) Ts``."""
        ts = 1.0 / (self.fft_size * self.ofdm.subcarrier_spacing_hz)
        return symbol_times_s(self.ofdm)[:, None] + (self.cp_samples + torch.arange(self.fft_size)) * ts

    def propagate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(h, y)``: the label ``h`` [B, F, T] complex64 and the received grid ``y`` [B, F, T] complex64, noise-free.

        ``x`` [B, F, T] complex64: the transmitted grid. ``y - h x`` is the ICI.
        """
        B = len(self)
        F, T = self.ofdm.grid_shape
        h = torch.empty(B, F, T, dtype=torch.complex64, device=x.device)
        y = torch.empty_like(h)
        c = _CHUNK if x.device.type == "cpu" else _CHUNK_ICI_GPU
        for s in range(0, B, c):
            h[s:s + c], y[s:s + c] = self._propagate(x[s:s + c], slice(s, s + c))
        return h, y

    def gains_at_samples(self) -> torch.Tensor:
        """Returns the tap gains [B, L, T, N] complex64 at every useful sample (:meth:`sample_times_s`), from the series."""
        d = self._taylor_coefficients(slice(0, len(self)))  # [B, L, P, T]
        u = self.sample_offsets(d.device)
        powers = u.unsqueeze(0) ** torch.arange(d.shape[2], device=d.device).unsqueeze(1)  # [P, N]
        return torch.einsum("blpt,pn->bltn", d, powers.to(d.dtype))

    def _taylor_coefficients(self, rows: slice) -> torch.Tensor:
        """Returns ``D`` [b, L, P, T] complex64 with ``a_l(t_c,m + u T_u) = sum_p D[l, p, m] u^p`` for ``|u| < 1/2``."""
        o, prof, dr = self.ofdm, self.profile, self.draws
        cos_, phi, fd = dr.cosines[rows], dr.phases_rad[rows], dr.doppler_hz[rows].float()
        b, L, S = cos_.shape
        dev = cos_.device
        t_u = 1.0 / o.subcarrier_spacing_hz
        # |w c T_u u| <= pi f_d / scs: the series' argument bound
        x_max = math.pi * float(fd.max()) / o.subcarrier_spacing_hz if b else 0.0
        P, term = 1, x_max
        while term >= _TAYLOR_TOL:
            P += 1
            term *= x_max / P
        w = 2 * math.pi * fd.reshape(b, 1, 1, 1)
        t_c = (symbol_times_s(o) + (self.cp_samples + (self.fft_size - 1) / 2) / (self.fft_size * o.subcarrier_spacing_hz))
        t_c = t_c.to(dev, torch.float32)  # [T] centre of each symbol's useful part
        T = t_c.numel()
        arg = (w * t_c) * cos_.unsqueeze(-1) + phi.unsqueeze(-1)  # [b, L, S, T]
        base = torch.stack([torch.cos(arg), torch.sin(arg)], -1).reshape(b * L, S, 2 * T)
        # (j y)^p / p! = j^p y^p / p! with y = w c T_u real: real powers by recurrence, then j^p
        y_s = (w.reshape(b, 1, 1) * t_u * cos_).reshape(b * L, 1, S)
        real = torch.ones(b * L, P, S, device=dev)
        for q in range(1, P):
            real[:, q] = real[:, q - 1] * y_s[:, 0] / q
        amp = torch.as_tensor(np.sqrt(prof.nlos_powers / S), dtype=torch.float32, device=dev)
        d = (real @ base).reshape(b, L, P, T, 2) * amp.reshape(1, L, 1, 1, 1)
        d = torch.view_as_complex(d) * _j_powers(P, dev).reshape(1, 1, P, 1)  # [b, L, P, T]
        if prof.is_los:
            arg0 = w.reshape(b, 1) * prof.los_cos_aoa * t_c + dr.los_phase_rad[rows]  # [b, T]
            y0 = (2 * math.pi * t_u * prof.los_cos_aoa) * fd  # [b]
            real0 = torch.ones(b, P, device=dev)
            for q in range(1, P):
                real0[:, q] = real0[:, q - 1] * y0 / q
            coef0 = real0 * _j_powers(P, dev)  # [b, P]
            d[:, 0] += math.sqrt(prof.los_power) * coef0.unsqueeze(-1) * torch.polar(torch.ones_like(arg0), arg0).unsqueeze(1)
        return d

    def _propagate(self, x: torch.Tensor, rows: slice):
        o, n_fft = self.ofdm, self.fft_size
        dev = x.device
        freqs = _grid_axes(o, tuple(self.profile.norm_delays.tolist()), dev)[0]  # [F] Hz
        d = self._taylor_coefficients(rows)  # [b, L, P, T]
        b, L, P, T = d.shape
        theta = (2 * math.pi) * self.tau_s[rows].unsqueeze(-1) * freqs  # [b, L, F]
        e = torch.complex(torch.cos(theta), -torch.sin(theta))
        h_p = (e.transpose(1, 2) @ d.reshape(b, L, P * T)).reshape(b, -1, P, T)  # [b, F, P, T]
        powers = self.sample_offsets(dev).unsqueeze(0) ** torch.arange(P, device=dev).unsqueeze(1)  # [P, N]
        h = (h_p * powers.mean(1).reshape(1, 1, P, 1)).sum(2)  # the per-symbol average (the label)
        # Subcarrier i sits on bin i rather than on its offset's bin: a shift by whole bins multiplies
        # the time signal by exp(j 2 pi k0 n / N), which commutes with the weighting in time and is
        # undone by the FFT, so y is the same, without a scatter and a gather.
        z = (h_p * x.unsqueeze(2)).permute(0, 2, 3, 1)  # [b, P, T, F]
        r = torch.einsum("bptn,pn->btn", torch.fft.ifft(z, n=n_fft, dim=-1), powers.to(torch.complex64))
        y = torch.fft.fft(r, dim=-1)[..., :x.shape[1]].transpose(1, 2)
        return h, y


@lru_cache(maxsize=16)
def _j_powers(n: int, device: torch.device) -> torch.Tensor:
    """Returns ``j^p`` [n] complex64 for ``p = 0..n-1``."""
    return torch.tensor([1, 1j, -1, -1j], dtype=torch.complex64)[torch.arange(n) % 4].to(device)
