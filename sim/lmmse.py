"""Joint 2-D (time x frequency) LMMSE channel estimation and the closed-form MMSE bound.

With ``h`` the vectorised grid [F*T], ``p`` the LS pilots [P] (P = P_f * P_t, row-major),
``R_hp = E[h p^H]`` and ``R_pp = E[p p^H] = R_p + sigma^2 I``, the LMMSE estimate is

    h_hat = W p,   W = R_hp (R_p + sigma^2 I)^-1,

and its MSE per resource element is ``tr(R - W R_ph) / (F T)``. With the true statistics
(genie) this is the MMSE for a Gaussian channel: no estimator working from the pilots alone
beats it, and no linear estimator beats it whatever the channel's distribution.

The covariance is a sum of Kronecker products ``R = sum_k R_f^(k) (x) R_t^(k)``
(:func:`wavefront.sim.statistics.covariance_terms`), so ``W p`` is applied as
``sum_k R_f,hp^(k) Z R_t,hp^(k)T`` with ``Z = (R_pp)^-1 p`` reshaped to [P_f, P_t]: the
[F*T, P] matrix ``W`` is never formed. Frames with equal conditions share one solve.

A scattered pilot layout (:mod:`wavefront.sim.pilots`) has no Kronecker structure on the
pilot side. Its blocks are evaluated at each pilot's own subcarrier and symbol,
``f_hp[k]`` [B, F, P], ``t_hp[k]`` [B, T, P], and combine elementwise:
``R_p[i, j] = sum_k R_f^(k)[f_i, f_j] R_t^(k)[t_i, t_j]`` and
``(W p)[f, t] = sum_k sum_i R_f^(k)[f, f_i] R_t^(k)[t, t_i] z_i``: the dense filter ``W``,
applied term by term. A Kronecker layout keeps the Kronecker path, bit for bit.

With ``channel.ici`` (a channel that changes within each symbol), the received pilots are
``H_avg x + ICI + n``: the genie LMMSE and the bound treat the ICI as extra white noise,
``sigma^2 + P_ICI(f_d)`` (:func:`~wavefront.sim.statistics.ici_power`), and use the covariance
of the label ``H_avg``, each symbol's average channel (``covariance_terms(...,
symbol_average=True)``). The ICI is neither Gaussian nor exactly white (ICI at pilots a few
subcarriers apart is slightly correlated), so the bound is the MSE of that ICI-as-noise
LMMSE, not a bound on every estimator.

For ``profile: sparse`` (:mod:`~wavefront.sim.sparse`) the covariance is the closed-form
expectation over each frame's random paths. That channel is not Gaussian, so the genie LMMSE is
the best *linear* estimator given the frame's delay spread, Doppler and SNR, and the bound is its
MSE, exactly (a linear estimator's MSE depends on second-order statistics alone; a test holds the
two equal over 20,000 frames): a second-order yardstick, which a nonlinear estimator may beat.
The oracle-support LMMSE (:mod:`~wavefront.sim.oracle_support`) is the reference below it.
"""
from __future__ import annotations

import math

import torch

from wavefront.errors import ConfigError
from wavefront.sim.estimators import Estimator
from wavefront.sim.config import OFDMConfig, SystemConfig, profile_label
from wavefront.sim.profiles import ChannelProfile, channel_profile, subcarrier_offsets_hz, symbol_times_s
from wavefront.sim.statistics import covariance_terms, ici_power, time_correlation_jakes


def _kron_sum(terms_f, terms_t) -> torch.Tensor:
    """Returns ``sum_k kron(A_k, B_k)`` batched: A_k [B, m, n], B_k [B, p, q] -> [B, m*p, n*q]."""
    out = 0
    for A, Bt in zip(terms_f, terms_t):
        b, m, n = A.shape
        _, p, q = Bt.shape
        out = out + (A[:, :, None, :, None] * Bt[:, None, :, None, :]).reshape(b, m * p, n * q)
    return out


def _hadamard_sum(terms_f, terms_t) -> torch.Tensor:
    """Returns ``sum_k A_k * B_k`` (elementwise; batch dims broadcast): the scattered-layout counterpart of :func:`_kron_sum`."""
    out = 0
    for A, Bt in zip(terms_f, terms_t):
        out = out + A * Bt
    return out


def combine_terms(terms_f, terms_t, kron: bool) -> torch.Tensor:
    """Returns ``sum_k A_k (x) B_k`` (Kronecker layout) or ``sum_k A_k * B_k`` (scattered layout)."""
    return _kron_sum(terms_f, terms_t) if kron else _hadamard_sum(terms_f, terms_t)


class _Stats:
    """Pilot/grid covariance blocks for a batch of conditions, complex128.

    Kronecker layout (``kron``): ``f_hp[k]`` [B, F, P_f], ``t_hp[k]`` [B, T, P_t]. Scattered:
    ``f_hp[k]`` [B, F, P], ``t_hp[k]`` [B, T, P] (columns at each pilot's subcarrier and
    symbol). ``r_pp`` [B, P, P] (noise excluded) either way.
    """

    def __init__(self, f_hp, t_hp, f_pp, t_pp, kron: bool = True):
        self.f_hp, self.t_hp, self.kron = f_hp, t_hp, kron
        self.r_pp = combine_terms(f_pp, t_pp, kron)


def _true_stats(ofdm: OFDMConfig, prof: ChannelProfile, ds, fd, dense: bool = False,
                symbol_average: bool = False, moments=None) -> _Stats:
    """Returns the true blocks; ``dense``: the scattered (per-position) form even for a Kronecker layout;
    ``symbol_average``: of the per-symbol average channel (``channel.ici``); ``moments``: an
    :class:`~wavefront.sim.impairment_stats.ImpairmentMoments` whose impaired pilots they describe."""
    layout = ofdm.pilot_layout
    kron = layout.is_kronecker and not dense
    pf, pt = layout.covariance_columns() if kron else (layout.subcarrier_indices.tolist(), layout.symbol_indices.tolist())
    hp = covariance_terms(ofdm, prof, ds, fd, cols_f=pf, cols_t=pt, symbol_average=symbol_average)
    pp = covariance_terms(ofdm, prof, ds, fd, rows_f=pf, cols_f=pf, rows_t=pt, cols_t=pt, symbol_average=symbol_average)
    blocks = [a for a, _ in hp], [b for _, b in hp], [a for a, _ in pp], [b for _, b in pp]
    if moments is not None:
        blocks = moments.modulate(*blocks, pf, pt)
    return _Stats(*blocks, kron)


def _solve(stats: _Stats, noise_var: torch.Tensor) -> torch.Tensor:
    """Returns ``(R_p + sigma^2 I)^-1`` [B, P, P] complex128."""
    P = stats.r_pp.shape[-1]
    eye = torch.eye(P, dtype=torch.complex128)
    return torch.linalg.inv(stats.r_pp + noise_var.reshape(-1, 1, 1).to(torch.float64) * eye)


def _apply(stats: _Stats, inv: torch.Tensor, pilots: torch.Tensor, inv_index: torch.Tensor,
           cov_index: torch.Tensor | None = None) -> torch.Tensor:
    """Returns ``W p`` [B, F, T] complex64 for pilots [B, P_f, P_t] (Kronecker) or [B, P] (any layout).

    ``inv_index`` [B] picks each frame's row of ``inv``; ``cov_index`` [B] its covariance
    blocks (default: the same).
    """
    B = pilots.shape[0]
    Pf, Pt = stats.f_hp[0].shape[-1], stats.t_hp[0].shape[-1]
    P = Pf * Pt if stats.kron else Pf
    dev = pilots.device
    index = inv_index if cov_index is None else cov_index
    # complex128 throughout: at high SNR (R_p + sigma^2 I) is ill-conditioned, and its inverse
    # rounded to complex64 costs up to 50 dB at 60 dB per RE; the products are small.
    c128 = torch.complex128
    inv = inv.to(dev, c128)[inv_index]
    z = inv @ pilots.reshape(B, P, 1).to(c128)
    out = 0
    if stats.kron:
        z = z.reshape(B, Pf, Pt)
        for A, C in zip(stats.f_hp, stats.t_hp):
            out = out + A.to(dev, c128)[index] @ z @ C.to(dev, c128)[index].transpose(1, 2)
    else:
        z = z.reshape(B, 1, P)
        for A, C in zip(stats.f_hp, stats.t_hp):
            out = out + (A.to(dev, c128)[index] * z) @ C.to(dev, c128)[index].transpose(1, 2)
    return out.to(torch.complex64)


def _unique_conditions(*cols: torch.Tensor):
    """Returns (unique rows [U, k] float64 on CPU, inverse index [B] on the input device)."""
    stacked = torch.stack([c.detach().to(torch.float64).reshape(-1) for c in cols], 1)
    uniq, inverse = torch.unique(stacked.cpu(), dim=0, return_inverse=True)
    return uniq, inverse.to(cols[0].device)


class GenieLMMSE(Estimator):
    """Joint 2-D LMMSE with each frame's true profile, delay spread, Doppler and SNR.

    ``estimate(pilots [B, P_f, P_t] or [B, P] c64, meta) -> [B, F, T] c64``; ``meta`` needs
    ``delay_spread_s``, ``doppler_hz`` and ``noise_var`` (or ``snr_db``). With
    ``config.channel.ici`` it estimates the per-symbol average channel and adds the ICI power
    of each frame's Doppler to its noise variance (see the module docstring).
    """

    name = "lmmse-genie"
    needs = "truth"

    def __init__(self, config: SystemConfig, dense: bool = False, ici_in_noise: bool = True):
        self.config, self.ofdm, self.dense = config, config.ofdm, dense  # dense: the scattered path, as a cross-check
        self.profile = channel_profile(config.channel.profile, config.channel.travel_azimuth_deg)
        self.ici = config.channel.time_domain  # an impairment takes the time-domain path too: the label is the average
        # ici_in_noise=False: the noise variance it is given already holds the ICI (an SNR estimated from the pilots)
        self.ici_noise = self.ici and ici_in_noise
        self.given = "true profile, delay spread, Doppler and SNR (genie)" + ("; ICI as extra noise" if self.ici_noise
                                                                                else "")
        if config.channel.impaired:
            self.given += "; receiver impairments ignored (a second-order yardstick)"
        if self.profile.is_sparse:
            self.given += "; second-order statistics only, not the paths"

    def estimate(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        nv = _noise_var(meta, self.config)
        uniq, idx = _unique_conditions(meta["delay_spread_s"], meta["doppler_hz"], nv)
        stats, noise = self.second_order(uniq[:, 0], uniq[:, 1], uniq[:, 2])
        return _apply(stats, _solve(stats, noise), pilots, idx)

    def stated_mse(self, meta: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        """Returns the MSE per RE [batch] float64 that this filter's own model states at each frame's conditions
        (``meta``'s delay spread [s], Doppler [Hz] and noise variance or SNR): ``power - tr(R_hp (R_pp + sigma^2 I)^-1
        R_ph) / (F T)`` of :meth:`second_order` there, the closed form of :func:`genie_mse` (the label's power is
        ``1 - P_ICI`` with ICI). It is the true MSE where ``meta`` holds the true conditions."""
        nv = _noise_var(meta, self.config).double().cpu().reshape(-1).expand(batch)
        ds = meta["delay_spread_s"].double().cpu().reshape(-1).expand(batch)
        fd = meta["doppler_hz"].double().cpu().reshape(-1).expand(batch)
        uniq, idx = _unique_conditions(ds, fd, nv)
        stats, noise = self.second_order(uniq[:, 0], uniq[:, 1], uniq[:, 2])
        power = 1.0 - ici_power(self.ofdm, self.profile, uniq[:, 1]) if self.ici else 1.0
        return lmmse_mse(stats, noise, power, self.ofdm)[idx.reshape(-1)]

    def second_order(self, ds: torch.Tensor, fd: torch.Tensor, noise_var: torch.Tensor) -> tuple[_Stats, torch.Tensor]:
        """Returns (the covariance blocks of ``R_hp`` and ``R_pp``, the white noise per RE [U] float64) at conditions [U].

        ``ds`` [U] s, ``fd`` [U] Hz, ``noise_var`` [U] linear. The hook a second-order model of the pilots
        overrides (:class:`~wavefront.sim.impaired_lmmse.ImpairedGenieLMMSE`).
        """
        stats = _true_stats(self.ofdm, self.profile, ds, fd, self.dense, symbol_average=self.ici)
        noise = noise_var + ici_power(self.ofdm, self.profile, fd) if self.ici_noise else noise_var
        return stats, noise


def _noise_var(meta: dict[str, torch.Tensor], config: SystemConfig) -> torch.Tensor:
    """Returns ``meta["noise_var"]``, else the noise variance of ``meta["snr_db"]`` under the config's SNR convention."""
    if "noise_var" in meta:
        return meta["noise_var"]
    return config.noise_variance(meta["snr_db"].float())


def assumed_freq_correlation(df_hz: torch.Tensor, pdp: str, rms_delay_spread_s: float) -> torch.Tensor:
    """Returns the frequency correlation [..] complex128 of an assumed power delay profile.

    ``uniform``: PDP flat on ``[0, tau_max]`` with ``tau_max = sqrt(12) * rms``:
    ``(1 - exp(-j 2 pi df tau_max)) / (j 2 pi df tau_max)``.
    ``exponential``: PDP ``exp(-tau / rms) / rms``: ``1 / (1 + j 2 pi df rms)``.
    """
    df = torch.as_tensor(df_hz, dtype=torch.float64)
    if pdp == "exponential":
        return 1.0 / (1.0 + 2j * math.pi * df * rms_delay_spread_s)
    x = 2 * math.pi * df * math.sqrt(12.0) * rms_delay_spread_s
    safe = torch.where(x == 0, torch.ones_like(x), x)
    val = (1 - torch.exp(-1j * safe)) / (1j * safe)
    return torch.where(x == 0, torch.ones_like(val), val)


def assumed_time_correlation(dt_s: torch.Tensor, spectrum: str, max_doppler_hz: float) -> torch.Tensor:
    """Returns the time correlation [..] complex128 of an assumed Doppler spectrum.

    ``jakes``: ``J0(2 pi f_max dt)``; ``flat`` (uniform on [-f_max, f_max]): ``sinc(2 f_max dt)``.
    """
    dt = torch.as_tensor(dt_s, dtype=torch.float64)
    if spectrum == "flat":
        return torch.sinc(2 * max_doppler_hz * dt).to(torch.complex128)
    return time_correlation_jakes(max_doppler_hz, dt).to(torch.complex128)


class RobustLMMSE(Estimator):
    """Joint 2-D LMMSE with assumed statistics, the classic robust design.

    The channel is assumed to have a ``pdp`` (``uniform`` or ``exponential``) power delay
    profile of RMS delay spread ``max_delay_spread_s`` and a ``doppler_spectrum`` up to
    ``max_doppler_hz`` (defaults: the upper ends of the config's ranges). The noise variance
    is taken from each frame's ``meta`` (a known SNR) unless ``design_snr_db`` fixes it.

    The default spectrum is ``flat`` (uniform on [-f_max, f_max], correlation
    ``sinc(2 f_max dt)``), as in Li, Cimini & Sollenberger's robust design: with pilots 9
    symbols apart, ``J0`` at the top Doppler changes sign between them (J0(4.0) = -0.40 at
    1000 Hz) and a ``jakes`` design then loses to LS-linear at lower Dopplers (500 Hz, 30 dB:
    -9.6 dB against -13.5 dB), where the flat design keeps -14.4 dB.

    ``covariance="prior-average"`` replaces the assumed PDP and spectrum by the config
    profile's covariance averaged over ``prior`` (a :class:`~wavefront.sim.conditions.ConditionPrior`,
    default: the config's ranges on a 25 ns x 50 Hz grid): the fixed linear filter of least
    MSE averaged over that prior, for a known noise level. ``given`` states the assumed
    covariance and noise in words.
    """

    name = "lmmse-robust"
    needs = "noise"

    def __init__(self, config: SystemConfig, pdp: str = "uniform", max_delay_spread_s: float | None = None,
                 max_doppler_hz: float | None = None, design_snr_db: float | None = None,
                 doppler_spectrum: str = "flat", covariance: str = "assumed", prior=None):
        if covariance not in ("assumed", "prior-average"):
            raise ConfigError("lmmse-robust.covariance", covariance, "must be assumed or prior-average")
        if pdp not in ("uniform", "exponential"):
            raise ConfigError("lmmse-robust.pdp", pdp, "must be uniform or exponential")
        if doppler_spectrum not in ("jakes", "flat"):
            raise ConfigError("lmmse-robust.doppler_spectrum", doppler_spectrum, "must be jakes or flat")
        if covariance == "prior-average":  # the profile's own covariance replaces the assumed PDP and spectrum
            for field, value, default in (("pdp", pdp, "uniform"), ("doppler_spectrum", doppler_spectrum, "flat"),
                                          ("max_delay_spread_s", max_delay_spread_s, None),
                                          ("max_doppler_hz", max_doppler_hz, None)):
                if value != default:
                    raise ConfigError(f"lmmse-robust.{field}", value, "applies to the assumed covariance; "
                                      "prior-average uses the profile's own, averaged over the prior")
        ch = config.channel
        top = lambda v: v[1] if isinstance(v, tuple) else v  # noqa: E731
        self.max_delay_spread_s = float(top(ch.delay_spread_s) if max_delay_spread_s is None else max_delay_spread_s)
        self.max_doppler_hz = float(top(ch.doppler_hz) if max_doppler_hz is None else max_doppler_hz)
        if self.max_delay_spread_s < 0:
            raise ConfigError("lmmse-robust.max_delay_spread_s", self.max_delay_spread_s, "must be >= 0")
        if self.max_doppler_hz < 0:
            raise ConfigError("lmmse-robust.max_doppler_hz", self.max_doppler_hz, "must be >= 0")
        self.pdp, self.design_snr_db = pdp, design_snr_db
        if design_snr_db is not None:
            self.needs = "none"  # a fixed design noise level: it reads nothing from meta
        self.config = config
        o = self.ofdm = config.ofdm
        f, t = subcarrier_offsets_hz(o), symbol_times_s(o)
        pf, pt = o.pilot_layout.covariance_columns()
        rf = lambda a, b: assumed_freq_correlation(a[:, None] - b[None, :], pdp, self.max_delay_spread_s)[None]  # noqa: E731
        self.doppler_spectrum = doppler_spectrum
        rt = lambda a, b: assumed_time_correlation(a[:, None] - b[None, :], doppler_spectrum, self.max_doppler_hz)[None]  # noqa: E731
        self.stats = _Stats([rf(f, f[pf])], [rt(t, t[pt])], [rf(f[pf], f[pf])], [rt(t[pt], t[pt])],
                            o.pilot_layout.is_kronecker)
        noise = "" if design_snr_db is None else f"; noise at design SNR {design_snr_db:g} dB"
        self.given = (f"assumed covariance: {pdp} PDP at {self.max_delay_spread_s * 1e9:g} ns RMS, {doppler_spectrum} "
                      f"Doppler spectrum to {self.max_doppler_hz:g} Hz{noise}")
        if covariance == "prior-average":
            from wavefront.sim.conditions import ConditionPrior, prior_average_stats

            self.prior = prior or ConditionPrior.from_config(config)
            self.stats = prior_average_stats(config, self.prior)
            self.given = (f"prior-average covariance: {profile_label(config.channel.profile)} averaged over "
                          f"{self.prior.describe(snr=False)}{noise}")

    def estimate(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        B = pilots.shape[0]
        if self.design_snr_db is not None:
            nv = self.config.noise_variance(torch.full((B,), float(self.design_snr_db), device=pilots.device))
        else:
            nv = _noise_var(meta, self.config)
        uniq, idx = _unique_conditions(nv)
        # one assumed covariance for every frame; only the noise level differs
        return _apply(self.stats, _solve(self.stats, uniq[:, 0]), pilots, idx, torch.zeros_like(idx))

    def stated_mse(self, meta: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        """Returns the MSE per RE [batch] float64 that this filter's own model states: ``1 - tr(R_hp (R_pp + sigma^2 I)^-1
        R_ph) / (F T)`` under its assumed covariance (unit power), at the noise level it filters with (``meta``'s,
        or the design SNR's). It is the true MSE only where the channel has the assumed statistics."""
        if self.design_snr_db is not None:
            nv = self.config.noise_variance(torch.full((batch,), float(self.design_snr_db), dtype=torch.float64))
        else:
            nv = _noise_var(meta, self.config)
        uniq, idx = _unique_conditions(nv.double().cpu())
        return lmmse_mse(self.stats, uniq[:, 0], 1.0, self.ofdm)[idx.reshape(-1)]


def genie_mse(config: SystemConfig | OFDMConfig, snr_db, delay_spread_s, doppler_hz,
              profile: str | ChannelProfile | None = None, dense: bool = False) -> torch.Tensor:
    """Returns the closed-form MSE per resource element of the genie LMMSE, ``tr(R - W R_ph) / (F T)``.

    Arguments broadcast to [B] (scalars give a 0-d result); ``profile`` (a name or a
    :class:`ChannelProfile`) defaults to the config's. ``snr_db`` follows a SystemConfig's
    ``snr_convention``; with an OFDMConfig it is per resource element. float64, linear scale (``10 log10``
    for dB). This is the MMSE bound, for any pilot layout of the config. ``dense``: evaluate a
    Kronecker layout by the scattered (dense-W) path too; the two agree (a test holds them to 1e-10).
    With a SystemConfig whose ``channel.ici`` is on, it is the MSE of the LMMSE of the per-symbol
    average channel that treats the ICI as extra white noise (``sigma^2 + ici_power(f_d)``); see
    the module docstring.
    """
    ici = False
    if isinstance(config, SystemConfig):
        ofdm, azimuth, profile = config.ofdm, config.channel.travel_azimuth_deg, profile or config.channel.profile
        snr_db = torch.as_tensor(snr_db, dtype=torch.float64) + config.snr_offset_db
        ici = config.channel.time_domain  # the Doppler ICI only: the impairments are not in the bound
    else:
        ofdm, azimuth = config, 0.0
        if profile is None:
            raise ConfigError("profile", None, "is required with an OFDMConfig")
    if not isinstance(profile, ChannelProfile):
        profile = channel_profile(profile, azimuth)
    snr, ds, fd = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float64) for v in (snr_db, delay_spread_s, doppler_hz)))
    shape = snr.shape
    uniq, index = _unique_conditions(snr, ds, fd)  # frames with equal conditions share one solve
    stats = _true_stats(ofdm, profile, uniq[:, 1], uniq[:, 2], dense, symbol_average=ici)
    noise = torch.pow(10.0, -uniq[:, 0] / 10)
    # tr(R) / (F T) = 1 by the unit-power normalisation of the profile; 1 - P_ICI for the per-symbol average
    power = 1.0 - ici_power(ofdm, profile, uniq[:, 2]) if ici else 1.0
    mse = lmmse_mse(stats, noise + ici_power(ofdm, profile, uniq[:, 2]) if ici else noise, power, ofdm)
    return mse[index].reshape(shape)


def lmmse_mse(stats: _Stats, noise: torch.Tensor, power, ofdm: OFDMConfig) -> torch.Tensor:
    """Returns ``power - tr(R_hp (R_pp + noise I)^-1 R_ph) / (F T)`` [U] float64: the MSE per RE of the LMMSE of ``stats``.

    ``stats``: the blocks of ``R_hp`` and ``R_pp`` at U conditions; ``noise`` [U] the white noise per RE;
    ``power`` [U] (or a float) ``tr(R_hh) / (F T)``, the label's power. Exact for any channel whose second-order
    statistics these are: a linear estimator's MSE depends on nothing else.
    """
    inv = _solve(stats, noise)
    # R_ph R_hp = sum_{k,m} kron(F_k^H F_m, T_k^H T_m) (Kronecker layout; elementwise for a scattered one)
    terms = [(A.mH @ A2, C.mH @ C2) for A, C in zip(stats.f_hp, stats.t_hp) for A2, C2 in zip(stats.f_hp, stats.t_hp)]
    G = combine_terms([a for a, _ in terms], [b for _, b in terms], stats.kron)
    F, T = ofdm.grid_shape
    return power - torch.einsum("bij,bji->b", inv, G).real / (F * T)
