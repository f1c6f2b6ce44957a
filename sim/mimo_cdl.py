"""CDL rays on the base station's array: ``mimo.spatial: rays`` (uplink, U single-antenna users, an R-element ULA).

**Model.** Each user draws its own TR 38.901 CDL channel (the SISO draws of
:func:`~wavefront.sim.fading.draw_sinusoids`: per ray a UT-side Doppler cosine from its arrival
azimuth/zenith, randomly coupled, and a uniform phase). In the uplink the base station sees each
ray at the tables' *departure* angles (``AoD``, ``ZoD`` with their cluster spreads; Sionna's
``CDL`` swaps the tables for ``direction="uplink"`` so that they arrive there), and every ray
(cluster c, ray m) is weighted by the ULA's steering vector

    a_r(m) = exp(j 2 pi d (r - (R - 1) / 2) sin(ZoD_m) sin(AoD_m)),   r = 0..R-1,

``d`` = ``mimo.antenna_spacing_wavelengths``. This is Sionna's convention: ``PanelArray(num_rows_per_panel=1,
num_cols_per_panel=R, ...)`` places its columns along the y axis, centred on the origin, and a
ray's phase at element position ``p`` is ``2 pi / lambda r_hat . p`` with
``r_hat = (sin Z cos A, sin Z sin A, cos Z)``; with the BS orientation 0 and omni, vertically
polarised elements (field 1 everywhere) the steering phase is all the array adds.
``tests/sim/test_mimo_cdl.py`` holds the clusters' spatial correlation to Sionna's
``CDL(..., bs_array=PanelArray(...), direction="uplink")`` draws. The coupling of a ray's BS-side
azimuth and zenith to each other and to its UT-side angles is random per frame, user and cluster
(TR 38.901 7.7.1 step 8, Sionna's ``_random_coupling``): two more independent permutations per
cluster. The LoS path of CDL-D/E arrives at its own fixed BS angles. Tap gains are then
``[B, U, L, R, T]`` (a sum over each cluster's rays with the steering weights), and the grid
channel is the delay phasors' product, as in the Kronecker path.

**Covariance.** With random coupling, a ray's BS direction and its UT direction are independent,
and the rays' phases are independent, so user u's covariance over (antenna, subcarrier, symbol) is

    R = sum_c S_c (x) F_c (x) T_c  (+ s_los s_los^H (x) F_los (x) T_los),

``S_c = mean over the cluster's M^2 (azimuth, zenith) pairs of a a^H`` (R x R, unit diagonal),
``F_c``, ``T_c`` the cluster's frequency and time terms of
:func:`~wavefront.sim.statistics.covariance_terms`. The users are independent. Not a Kronecker
product ``R_rx (x) R_ft``: each cluster has its own spatial covariance.

**Genie and bound.** The users' pilots are orthogonal, so each user is estimated alone: LMMSE over its
``R P`` pilots with ``R_pp = sum_k S_k (x) F_k^pp (x) T_k^pp`` (``P = P_f' P_t``), factored once per user
and condition (``R_pp = Q diag(mu) Q^H``), and ``R_hp`` applied per cluster in separable form
(``sum_k A_k (S_k V) C_k^T``), never formed as an (R F T) x (R P) matrix. The MSE per resource element
is ``tr(R_hh - R_hp (R_pp + sigma^2 I)^-1 R_ph) / (R F T) = 1 - sum_i D_i / (mu_i + sigma^2) / (R F T)``,
``D = diag(Q^H R_ph R_hp Q)``. Each cluster's frequency factor is rank one, so ``R_pp`` has rank at most
``K R P_t`` (K terms): the factorisation is a thin SVD of an ``R P x K R P_t`` matrix per user and condition
(:func:`_rays_user_eig`; at mimo-chest's size with CDL-C 4992 x 800).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.fading import delay_phasors, draw_sinusoids
from wavefront.sim.mimo import MimoGenieLMMSE, _conditions, user_configs
from wavefront.sim.profiles import ChannelProfile, channel_profile, subcarrier_offsets_hz
from wavefront.sim.statistics import covariance_terms

_CHUNK = 64  # user-frames per block of the ray sums: their [b, L, M, T] phasors stay small


@dataclass(frozen=True)
class BsRays:
    """The base station's ray angles of a CDL profile, float64 rad: ``aod`` and ``zod`` [L, M] (unpaired, table
    order, the departure angles of TR 38.901's tables, i.e. the BS side in uplink); ``los_aod``, ``los_zod`` the LoS
    path's (``None`` for NLoS profiles)."""

    aod: np.ndarray
    zod: np.ndarray
    los_aod: float | None
    los_zod: float | None


@lru_cache(maxsize=None)
def bs_rays(name: str) -> BsRays:
    """Returns the BS-side ray angles of ``CDL-A``..``CDL-E`` from Sionna's ``CDL`` tables (Sionna 2.2.0, spec 19.2).

    Read from a downlink model, as :func:`~wavefront.sim.profiles.cdl_profile` reads the UT side: its
    ``_aod``/``_zod`` are the tables' departure angles with the Table 7.5-3 ray offsets scaled by the
    cluster spreads ``C_ASD``/``C_ZSD``; an uplink model holds the same numbers as its arrival angles.
    """
    from sionna.phy.channel.tr38901 import CDL, Antenna

    omni = Antenna("single", "V", "omni", carrier_frequency=1e9, device="cpu", precision="double")
    model = CDL(name.removeprefix("CDL-"), delay_spread=1.0, carrier_frequency=1e9, ut_array=omni, bs_array=omni,
                device="cpu", precision="double")
    aod = model._aod.cpu().numpy().astype(np.float64)
    zod = model._zod.cpu().numpy().astype(np.float64)
    los = model._has_los
    return BsRays(aod, zod, float(model._los_aod) if los else None, float(model._los_zod) if los else None)


def element_positions(num_antennas: int, spacing_wavelengths: float) -> torch.Tensor:
    """Returns the ULA's element positions [R] float64 in wavelengths, centred: ``d (r - (R - 1) / 2)``."""
    return spacing_wavelengths * (torch.arange(num_antennas, dtype=torch.float64) - (num_antennas - 1) / 2)


def steering(direction: torch.Tensor, num_antennas: int, spacing_wavelengths: float) -> torch.Tensor:
    """Returns the steering vectors [..., R] complex128 of rays with ``direction = sin(ZoD) sin(AoD)`` [...] (float):
    ``exp(j 2 pi d (r - (R - 1) / 2) direction)``."""
    pos = element_positions(num_antennas, spacing_wavelengths).to(direction.device)
    return torch.polar(torch.ones((), dtype=torch.float64, device=direction.device),
                       2 * math.pi * direction.double().unsqueeze(-1) * pos)


@lru_cache(maxsize=64)
def cluster_spatial_covariances(name: str, num_antennas: int, spacing_wavelengths: float
                                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Returns ``(S [L, R, R], s_los [R] or None)`` complex128: each cluster's spatial covariance at the BS,
    ``S_c = mean_{k, n} a(sin ZoD_n sin AoD_k) a^H`` over its M^2 (azimuth, zenith) pairs (the expectation over
    the random coupling; unit diagonal), and the LoS path's steering vector (its covariance is ``s s^H``)."""
    rays = bs_rays(name)
    x = torch.from_numpy(np.sin(rays.zod)[:, None, :] * np.sin(rays.aod)[:, :, None])  # [L, M az, M ze]
    a = steering(x.reshape(x.shape[0], -1), num_antennas, spacing_wavelengths)  # [L, M^2, R]
    S = torch.einsum("lmr,lms->lrs", a, a.conj()) / a.shape[1]
    s_los = None
    if rays.los_aod is not None:
        s_los = steering(torch.tensor(math.sin(rays.los_zod) * math.sin(rays.los_aod), dtype=torch.float64),
                         num_antennas, spacing_wavelengths)
    return S, s_los


def spatial_terms(config: SystemConfig) -> list[torch.Tensor]:
    """Returns the spatial factor [R, R] complex128 of every term of :func:`~wavefront.sim.statistics.covariance_terms`
    (its NLoS clusters in order, then the LoS path): the ``S_k`` of ``R = sum_k S_k (x) F_k (x) T_k``."""
    m = config.mimo
    S, s_los = cluster_spatial_covariances(config.channel.profile, m.num_rx_antennas, m.antenna_spacing_wavelengths)
    out = list(S)
    if s_los is not None:
        out.append(torch.outer(s_los, s_los.conj()))
    return out


class RaysChannel:
    """Draws every user's CDL channel on the BS array: ``draw(ofdm, ds [B], fd [B], generator) -> h [B, R, U, F, T]``
    complex64 (see the module docstring). The random draws in order: the B U users' SISO draws
    (:func:`~wavefront.sim.fading.draw_sinusoids`, frame-major), then the BS-side azimuth and zenith permutations
    [B U, L, M] each."""

    def __init__(self, config: SystemConfig, profile: ChannelProfile, device: torch.device):
        m = config.mimo
        if m.spatial != "rays" or not profile.is_cdl:
            raise ConfigError("mimo.spatial", m.spatial, "RaysChannel needs spatial rays and a CDL profile")
        self.config, self.profile, self.device = config, profile, device
        self.R, self.U = m.num_rx_antennas, m.num_users
        rays = bs_rays(config.channel.profile)
        self.sin_aod = torch.as_tensor(np.sin(rays.aod), dtype=torch.float32, device=device)  # [L, M]
        self.sin_zod = torch.as_tensor(np.sin(rays.zod), dtype=torch.float32, device=device)
        self.phase_per_direction = (2 * math.pi * element_positions(self.R, m.antenna_spacing_wavelengths)).float().to(device)
        self.los = None
        if profile.is_los:
            s = cluster_spatial_covariances(config.channel.profile, self.R, m.antenna_spacing_wavelengths)[1]
            self.los = (math.sqrt(profile.los_power) * s).to(device, torch.complex64)  # [R]
        self.amp = torch.as_tensor(np.sqrt(profile.nlos_powers / rays.aod.shape[1]), dtype=torch.float32, device=device)
        self.norm_delays = torch.as_tensor(profile.norm_delays, dtype=torch.float32, device=device)

    def directions(self, num_links: int, generator: torch.Generator) -> torch.Tensor:
        """Returns every ray's BS direction ``sin(ZoD) sin(AoD)`` [num_links, L, M] float32: each link's azimuths and
        zeniths re-paired by two independent uniformly random permutations per cluster (TR 38.901's random coupling)."""
        L, M = self.sin_aod.shape
        perm_az = torch.rand(num_links, L, M, generator=generator, device=self.device).argsort(dim=-1)
        perm_ze = torch.rand(num_links, L, M, generator=generator, device=self.device).argsort(dim=-1)
        return (self.sin_aod.expand(num_links, L, M).gather(2, perm_az)
                * self.sin_zod.expand(num_links, L, M).gather(2, perm_ze))

    def draw(self, delay_spread_s: torch.Tensor, doppler_hz: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        o = self.config.ofdm
        B, R, U = delay_spread_s.shape[0], self.R, self.U
        F, T = o.grid_shape
        dev = self.device
        draws = draw_sinusoids(self.profile, doppler_hz.repeat_interleave(U), self.config.channel.num_sinusoids, generator)
        BU, L, M = draws.cosines.shape
        direction = self.directions(BU, generator)
        t = torch.arange(T, dtype=torch.float32, device=dev) * o.symbol_duration_s
        w = 2 * math.pi * draws.doppler_hz.float()  # [BU] rad/s
        a = torch.empty(BU, L, R, T, dtype=torch.complex64, device=dev)
        for s in range(0, BU, _CHUNK):
            sl = slice(s, s + _CHUNK)
            arg = w[sl].reshape(-1, 1, 1, 1) * draws.cosines[sl].unsqueeze(-1) * t + draws.phases_rad[sl].unsqueeze(-1)
            rays = torch.polar(torch.ones_like(arg), arg)  # [b, L, M, T]
            steer_arg = direction[sl].unsqueeze(2) * self.phase_per_direction.reshape(1, 1, R, 1)  # [b, L, R, M]
            steer = torch.polar(torch.ones_like(steer_arg), steer_arg)
            a[sl] = torch.matmul(steer, rays) * self.amp.reshape(1, L, 1, 1)
        if self.los is not None:
            arg0 = w.double().reshape(BU, 1) * self.profile.los_cos_aoa * t.double() + draws.los_phase_rad.double()
            a[:, 0] += self.los.reshape(1, R, 1) * torch.polar(torch.ones_like(arg0), arg0).to(torch.complex64).unsqueeze(1)
        first_hz = float(subcarrier_offsets_hz(o)[0])
        P = delay_phasors(delay_spread_s.float().reshape(B, 1) * self.norm_delays, first_hz, o.subcarrier_spacing_hz, F)
        # [B, F, L] @ [B, L, R U T] -> [B, F, R, U, T] -> [B, R, U, F, T]
        a = a.view(B, U, L, R, T).permute(0, 2, 3, 1, 4).reshape(B, L, R * U * T)
        return torch.bmm(P, a).view(B, F, R, U, T).permute(0, 2, 3, 1, 4).contiguous()


def user_covariance_terms(config: SystemConfig, user: int, delay_spread_s: float, doppler_hz: float):
    """Returns user ``user``'s covariance factors ``[(S_k [R, R], A_k [F, P_f], C_k [T, P_t], Fpp_k [P_f, P_f],
    Tpp_k [P_t, P_t]), ...]`` complex128: ``R_hp = sum_k S_k (x) A_k (x) C_k`` and ``R_pp = sum_k S_k (x) Fpp_k (x) Tpp_k``
    over the user's own pilots (subcarriers ``P_f``, symbols ``P_t``)."""
    uc = user_configs(config)[user]
    prof = channel_profile(config.channel.profile, config.channel.travel_azimuth_deg)
    pf, pt = list(uc.ofdm.pilot_subcarriers), list(uc.ofdm.pilot_symbol_indices)
    hp = covariance_terms(uc.ofdm, prof, delay_spread_s, doppler_hz, cols_f=pf, cols_t=pt)
    pp = covariance_terms(uc.ofdm, prof, delay_spread_s, doppler_hz, rows_f=pf, cols_f=pf, rows_t=pt, cols_t=pt)
    S = spatial_terms(config)
    if len(S) != len(hp):
        raise ValueError(f"{len(S)} spatial terms for {len(hp)} covariance terms")
    return [(s, A[0], C[0], Fp[0], Tp[0]) for s, (A, C), (Fp, Tp) in zip(S, hp, pp)]


def _rank_one_frequency(A: torch.Tensor, Fp: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Returns ``(P, u [F], v [P_f])`` with ``A = P u v^H`` and ``Fp = P v v^H``: a cluster's frequency factor,
    ``P exp(-j 2 pi tau (f1 - f2))``, is rank one (up to a common phase of ``u`` and ``v``). Raises ValueError where
    it is not (the low-rank factorisation below relies on it)."""
    p = float(Fp[0, 0].real)
    u, v = A[:, 0] / p, Fp[:, 0] / p
    tol = 1e-9 * p
    if not (torch.allclose(A, p * torch.outer(u, v.conj()), rtol=0, atol=tol)
            and torch.allclose(Fp, p * torch.outer(v, v.conj()), rtol=0, atol=tol)):
        raise ValueError("a covariance term's frequency factor is not rank one")
    return p, u, v


def _rays_user_eig(config: SystemConfig, user: int, delay_spread_s: float, doppler_hz: float):
    """Returns one user's statistics at one condition, factored once for every noise level, complex128:
    ``(terms, mu [r], Q [R P, r], D [r])`` with ``R_pp = Q diag(mu) Q^H`` (``Q`` orthonormal columns spanning the
    range of ``R_pp``, ``r <= R P``) and ``D = diag(Q^H R_ph R_hp Q)`` (``terms``: :func:`user_covariance_terms`).
    Cached by what they depend on: the grid, the array, the profile and the condition, not the config's SNR or
    condition ranges (a sweep's points share them).

    Each term's frequency factor is rank one (``F_k = P_k v_k v_k^H``), so ``R_pp = Psi Psi^H`` with
    ``Psi = [(I (x) v_k (x) I) L_k]_k``, ``L_k L_k^H = P_k S_k (x) T_k``: ``Psi`` is ``R P x K R P_t``, and its thin SVD
    gives ``Q`` and ``mu`` at ``min(R P, K R P_t)`` columns (800 at mimo-chest's size with CDL-C, instead of an
    eigendecomposition of order 4992). The pilots' part outside ``Q``'s span carries no channel: ``R_hp`` vanishes
    there, as ``range(R_ph)`` lies in ``range(R_pp)``. ``D`` likewise from ``(I (x) v_k^H (x) I) Q`` and the
    ``(K R P_t)^2`` blocks ``P_k P_k' (u_k^H u_k') (S_k^H S_k' (x) C_k^H C_k')`` of ``R_ph R_hp``."""
    ch = config.channel
    return _rays_user_eig_cached(config.ofdm, config.mimo, ch.profile, float(ch.travel_azimuth_deg), user,
                                 delay_spread_s, doppler_hz)


@lru_cache(maxsize=64)
def _rays_user_eig_cached(ofdm, mimo, profile: str, travel_azimuth_deg: float, user: int, delay_spread_s: float,
                          doppler_hz: float):
    config = SystemConfig.from_dict({"ofdm": ofdm.model_dump(), "mimo": mimo.model_dump(),
                                     "channel": {"profile": profile, "travel_azimuth_deg": travel_azimuth_deg}})
    terms = user_covariance_terms(config, user, delay_spread_s, doppler_hz)
    R = mimo.num_rx_antennas
    Pf, Pt = terms[0][3].shape[0], terms[0][4].shape[0]
    factors, psi = [], []
    for S, A, C, Fp, Tp in terms:
        p, u, v = _rank_one_frequency(A, Fp)
        lam, V = torch.linalg.eigh(p * torch.kron(S, Tp))  # [R P_t]: (antenna, symbol)
        L = (V * lam.clamp_min(0.0).sqrt()).view(R, Pt, -1)
        psi.append(torch.einsum("f,rtj->rftj", v, L).reshape(R * Pf * Pt, -1))
        factors.append((p, u, v, S, C))
    Q, sv, _ = torch.linalg.svd(torch.cat(psi, 1), full_matrices=False)
    W = [torch.einsum("f,rfti->rti", v.conj(), Q.view(R, Pf, Pt, -1)).reshape(R * Pt, -1) for _, _, v, _, _ in factors]
    D = torch.zeros(Q.shape[1], dtype=torch.float64)
    for (p, u, _, S, C), Wk in zip(factors, W):  # R_ph R_hp = sum_{k, k'} Phi_k H_kk' Phi_k'^H
        for (p2, u2, _, S2, C2), Wk2 in zip(factors, W):
            H = (p * p2 * torch.vdot(u, u2)) * torch.kron(S.mH @ S2, C.mH @ C2)
            D += torch.einsum("ai,ab,bi->i", Wk.conj(), H, Wk2).real
    return terms, sv.square(), Q, D


class RaysGenieLMMSE(MimoGenieLMMSE):
    """The genie LMMSE over space, time and frequency under ``mimo.spatial: rays``: each user's true cluster
    covariances (spatial, frequency, time), delay spread, Doppler and noise (see the module docstring).

    ``estimate(pilots [B, R, U, P_f', P_t] c64, meta) -> [B, R, U, F, T] c64``.
    """

    name = "lmmse-genie"
    needs = "truth"
    mimo = True

    def __init__(self, config: SystemConfig):
        if config.mimo.spatial != "rays":
            raise ConfigError("mimo.spatial", config.mimo.spatial, "RaysGenieLMMSE is the genie of spatial rays")
        self.config = config
        self.users = user_configs(config)
        self.lam = self.V = None
        m = config.mimo
        self.given = (f"true profile, delay spread, Doppler and SNR, and each cluster's spatial covariance on the "
                      f"{m.num_rx_antennas}-element ULA ({m.antenna_spacing_wavelengths:g} wavelengths) (genie over "
                      f"space, time and frequency)")

    def estimate(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        B, R, U, Pf, Pt = pilots.shape
        dev, c128 = pilots.device, torch.complex128
        F, T = self.config.ofdm.grid_shape
        nv = meta["noise_var"].double() if "noise_var" in meta else self.config.noise_variance(meta["snr_db"].double())
        out = torch.empty(B, R, U, F, T, dtype=c128, device=dev)
        for (ds, fd), rows in _conditions(meta["delay_spread_s"], meta["doppler_hz"]):
            rows = rows.to(dev)
            s = nv.to(dev)[rows].reshape(-1, 1)
            for u in range(U):
                terms, mu, Q, _ = _rays_user_eig(self.config, u, ds, fd)
                mu, Q = mu.to(dev), Q.to(dev)
                z = pilots[rows, :, u].reshape(-1, R * Pf * Pt).to(c128)
                v = (((z @ Q.conj()) / (mu + s)) @ Q.T).reshape(-1, R, Pf, Pt)  # (R_pp + s I)^-1 z, as rows
                acc = 0
                for S, A, C, _, _ in terms:  # R_hp v = sum_k (S_k (x) A_k (x) C_k) v, separably
                    acc = acc + A.to(dev) @ torch.einsum("rq,nqft->nrft", S.to(dev), v) @ C.to(dev).T
                out[rows, :, u] = acc
        return out.to(torch.complex64)


def rays_genie_mse(config: SystemConfig, snr_db, delay_spread_s, doppler_hz, per_user: bool = False) -> torch.Tensor:
    """Returns the genie's MSE per resource element under ``spatial: rays``, float64 linear, averaged over antennas
    (and users): ``tr(R_hh - R_hp (R_pp + sigma^2 I)^-1 R_ph) / (R F T)`` per user. Arguments broadcast to [B];
    ``per_user``: [B, U] instead of the users' mean [B]."""
    m = config.mimo
    snr, ds, fd = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float64).cpu()
                                            for v in (snr_db, delay_spread_s, doppler_hz)))
    shape = snr.shape
    snr, ds, fd = snr.reshape(-1), ds.reshape(-1), fd.reshape(-1)
    nv = torch.pow(10.0, -(snr + config.snr_offset_db) / 10)
    F, T = config.ofdm.grid_shape
    out = torch.empty(snr.numel(), m.num_users, dtype=torch.float64)
    for (d, f), rows in _conditions(ds, fd):
        for u in range(m.num_users):
            _, mu, _, D = _rays_user_eig(config, u, d, f)
            out[rows, u] = 1.0 - (D / (mu + nv[rows, None])).sum(-1) / (m.num_rx_antennas * F * T)
    out = out.reshape(*shape, m.num_users)
    return out if per_user else out.mean(-1)
