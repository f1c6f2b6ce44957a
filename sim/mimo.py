"""Multi-user MIMO-OFDM uplink: U single-antenna users, R receive antennas, orthogonal pilots.

Shapes (B frames, R antennas, U users, F subcarriers, T symbols, each user's pilots
``P_f' x P_t`` with ``P_f' = P_f / U``):

- ``h`` [B, R, U, F, T] complex64: user u's channel at antenna r;
- ``y`` [B, R, F, T] complex64: ``sum_u h[:, :, u] x_u + n``, ``n ~ CN(0, sigma^2)`` per antenna;
- ``pilots_ls`` [B, R, U, P_f', P_t]: LS at user u's own pilots, ``y / x_u`` (DM-RS: the despread
  LS per CDM pair, ``P_f' = F / 4`` or ``F / 6``; :mod:`wavefront.sim.dmrs`);
- ``bits`` [B, U, K], ``codewords`` [B, U, N_data k]: one codeword per user and frame (5G LDPC
  with ``ldpc_rate``, as in SISO); conditions [B] as in SISO.

**Channel.** Each (antenna, user) pair draws an independent SISO channel with the frame's
delay spread and Doppler (:func:`~wavefront.sim.fading.ofdm_channel`); the antennas are then
correlated by ``R_rx^(1/2)`` (symmetric square root of ``R_rx[i, j] = rho^|i-j|``), so each
user's covariance is ``R_rx (x) R_f (x) R_t`` (the Kronecker model). With ``mimo.spatial: rays`` (CDL
profiles) each user's rays reach the base station's ULA at their own angles instead, and each cluster has
its own spatial covariance (:mod:`wavefront.sim.mimo_cdl`). The SNR is per user, per
resource element and antenna: ``E|h_u x_u|^2 / sigma^2 = 1 / sigma^2``, as Sionna's per-stream
convention.

**Pilots.** Sionna's ``KroneckerPilotPattern``: the SISO layout's pilot subcarriers are dealt
to the users in turn, and a user is silent on the others' pilots. Data fill every other resource
element for every user, so the data positions are the SISO layout's.

**Estimation.** The users' pilots are orthogonal, so each user is estimated alone. With
``R_rx = V diag(lambda) V^T``, the rotated pilots ``V^T p`` are independent across the
eigen-index k, each a 2-D problem with covariance ``lambda_k R_ft`` and noise ``sigma^2``: the
2-D LMMSE at noise ``sigma^2 / lambda_k``. So the genie over time, frequency and space costs R
2-D solves instead of one (R P)^2 one, and its MSE per resource element is

    mse = (1 / R) sum_k lambda_k mse_2D(sigma^2 / lambda_k),

the bound :func:`mimo_genie_mse` returns. ``tests/sim/test_mimo.py`` holds it to a dense
evaluation of ``tr(R - R_hp R_pp^-1 R_ph)`` over all antennas.

**NR DM-RS** (``mimo.pilots`` ``dmrs-type1`` ... ``dmrs-type2-double``): ports in CDM groups with
orthogonal cover codes, users of one group on the same resource elements; ``pilots_ls`` is then the
per-user despread LS at each CDM pair, and the genie reads the raw group observations
(``Frames.pilots_dmrs``). Shapes, sequence and filter: :mod:`wavefront.sim.dmrs`.

**Detection** (:func:`lmmse_detect`): per resource element, the LMMSE equaliser of Sionna's
``LinearDetector`` ("lmmse") with the estimate's error variance added to the noise,
``S = (sigma^2 + sum_u err_var_u) I``, unbiased outputs and their effective noise.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.dmrs import (despread, dmrs_genie, dmrs_layout, dmrs_pilots_per_user, dmrs_user_configs,
                                dmrs_user_mse, group_sequences, reserved_ofdm)
from wavefront.sim.estimators import CLASSICAL, Estimator, PerfectCSI, get_classical
from wavefront.sim.fading import tap_gains_and_phasors
from wavefront.sim.frames import _PILOT_SEED, FrameGenerator, Frames, _draw, _random_bits
from wavefront.sim.lmmse import _true_stats, combine_terms
from wavefront.sim.profiles import channel_profile
from wavefront.utils import make_generator, resolve_device


@lru_cache(maxsize=64)
def user_configs(config: SystemConfig) -> tuple[SystemConfig, ...]:
    """Returns one SISO config per user: the grid and channel of ``config`` with user u's pilots only.

    User u takes the pilot subcarriers ``u, u + U, ...`` of the SISO layout (offset
    ``o + u s``, spacing ``U s``; of a layout given as positions, its subcarriers ``S_f[u::U]``) on every pilot
    symbol.
    """
    if config.mimo.pilots != "kronecker":  # DM-RS: the user's CDM pairs, where its despread LS sits
        return dmrs_user_configs(config)
    o, U = config.ofdm, config.mimo.num_users
    siso = {"num_rx_antennas": 1, "num_users": 1}
    if o.pilot_positions is not None:  # a layout file or preset: the positions override offset and spacing, so
        # the user's share is dealt from them (else every user sent on every pilot RE and their pilots collided)
        lay = o.pilot_layout
        sf, st = lay.kron_subcarriers, lay.kron_symbols
        return tuple(config.updated(ofdm={"pilot_positions": [[f, t] for f in sf[u::U] for t in st]}, mimo=siso)
                     for u in range(U))
    return tuple(config.updated(ofdm={"pilot_subcarrier_offset": o.pilot_subcarrier_offset + u * o.pilot_subcarrier_spacing,
                                      "pilot_subcarrier_spacing": U * o.pilot_subcarrier_spacing}, mimo=siso)
                 for u in range(U))


def pilots_per_user(config: SystemConfig) -> list[dict]:
    """Returns every user's pilots for result files: ``[{"positions": [[f, t], ...], "cover": [1]}, ...]``.

    With DM-RS: every RE of the user's CDM group and its cover ``w_f w_t`` there (one per position)."""
    if config.mimo.pilots != "kronecker":
        return dmrs_pilots_per_user(config)
    out = []
    for c in user_configs(config):
        o = c.ofdm
        out.append({"positions": [[f, t] for f in o.pilot_subcarriers for t in o.pilot_symbol_indices], "cover": [1]})
    return out


def describe_pilots(config: SystemConfig) -> str:
    """Returns the users' pilots in words, e.g. ``12x2: ... dealt to 2 users in turn (6x2 each)``."""
    U = config.mimo.num_users
    if config.mimo.pilots != "kronecker":
        lay = dmrs_layout(config)
        return (f"NR DM-RS {config.mimo.pilots} on symbols {list(lay.symbols)}, ports 0..{U - 1} in CDM groups "
                f"{sorted(set(lay.user_group))}, no data on DM-RS symbols")
    if U == 1:
        return f"{config.ofdm.pilot_layout.describe()}, one user"
    each = user_configs(config)[0].ofdm.pilot_shape
    return f"{config.ofdm.pilot_layout.describe()}, dealt to {U} users in turn ({'x'.join(map(str, each))} each)"


def mimo_pilot_symbols(config: SystemConfig) -> torch.Tensor:
    """Returns every user's pilots [U, P_f', P_t] complex64: unit-modulus QPSK, fixed by the system (not by a frame's seed)."""
    g = make_generator(_PILOT_SEED)
    q = torch.randint(0, 4, (config.mimo.num_users, *user_configs(config)[0].ofdm.pilot_shape), generator=g).double()
    return torch.polar(torch.ones_like(q), (2 * q + 1) * torch.pi / 4).to(torch.complex64)


@lru_cache(maxsize=32)
def rx_eigen(rho: float, R: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(lambda [R], V [R, R])`` float64 with ``R_rx = V diag(lambda) V^T``, ``lambda >= 0`` ascending."""
    i = torch.arange(R, dtype=torch.float64)
    rx = torch.tensor(rho, dtype=torch.float64).pow((i[:, None] - i[None, :]).abs())
    lam, V = torch.linalg.eigh(rx)
    return lam.clamp_min(0.0), V


def rx_sqrt(rho: float, R: int) -> torch.Tensor:
    """Returns ``R_rx^(1/2)`` [R, R] float64, the symmetric square root."""
    lam, V = rx_eigen(rho, R)
    return (V * lam.sqrt()) @ V.T


def rx_sqrt_batch(rho: torch.Tensor, R: int) -> torch.Tensor:
    """Returns ``R_rx(rho_b)^(1/2)`` [B, R, R] float32 for per-frame ``rho`` [B] (symmetric square roots, float64 inside)."""
    i = torch.arange(R, dtype=torch.float64, device=rho.device)
    rx = rho.double()[:, None, None].pow((i[:, None] - i[None, :]).abs())
    lam, V = torch.linalg.eigh(rx)
    return ((V * lam.clamp_min(0.0).sqrt()[:, None, :]) @ V.mT).float()


class MimoFrameGenerator:
    """Draws batches of multi-user MIMO frames (see the module docstring for shapes) for a MIMO :class:`SystemConfig`.

    ``generate(batch_size, seed, with_data=True) -> Frames``. The random draws in order: SNR,
    delay spread, Doppler (and rho, when ``mimo.rx_correlation`` is a range) per frame; the B R U
    channels; the noise; the bits of every user.
    """

    def __init__(self, config: SystemConfig, device: str | torch.device = "cpu", ldpc_rate: float | None = None):
        if not config.mimo.is_mimo:
            raise ConfigError("mimo", "1x1", "one antenna and one user is the SISO FrameGenerator")
        self.config, self.device = config, resolve_device(device)
        self.R, self.U = config.mimo.num_rx_antennas, config.mimo.num_users
        from wavefront.sim.system_level import SystemLevelChannel, is_system_level  # it builds on this module

        self.system = SystemLevelChannel(config, self.device) if is_system_level(config) else None
        self.profile = None if self.system else channel_profile(config.channel.profile, config.channel.travel_azimuth_deg)
        siso = config.updated(mimo={"num_rx_antennas": 1, "num_users": 1, "pilots": "kronecker"},
                              # its grid, data mask, QAM and LDPC only: a scenario's channels come from self.system
                              **({"channel": {"profile": "A"}} if self.system else {}))
        self.dmrs = None if config.mimo.pilots == "kronecker" else dmrs_layout(config)
        if self.dmrs is not None:  # every RE of the DM-RS symbols reserved: the data mask of the frames
            siso = siso.updated(ofdm=reserved_ofdm(config).model_dump())
        self.siso = FrameGenerator(siso, self.device, ldpc_rate=ldpc_rate)  # grid, data mask, QAM tables, LDPC code
        self.ldpc_rate = ldpc_rate
        self.users = user_configs(config)
        o = config.ofdm
        T = o.num_symbols
        self.pilot_f = [torch.tensor(c.ofdm.pilot_subcarriers, device=self.device) for c in self.users]
        self.pilot_t = torch.tensor(o.pilot_symbol_indices, device=self.device)
        self._pilot_flat = torch.stack([(f[:, None] * T + self.pilot_t[None, :]).reshape(-1) for f in self.pilot_f])  # [U, P']
        if self.dmrs is not None:  # each user sends on its whole group: r_g w_u
            d = self.dmrs
            sym = torch.tensor(d.symbols, device=self.device)
            self._group_flat = torch.stack([(torch.tensor(f, device=self.device)[:, None] * T + sym[None, :]).reshape(-1)
                                            for f in d.group_subcarriers])  # [G, N]
            self._seq = group_sequences(config).to(self.device)  # [G, N_f, N_t]
            self._cover = torch.stack(list(d.cover)).to(self.device, torch.float32)  # [U, N_f, N_t]
            g = torch.tensor(d.user_group, device=self.device)
            self._pilot_flat = self._group_flat[g]
            self.pilot_symbols = self._seq[g] * self._cover
        else:
            self.pilot_symbols = mimo_pilot_symbols(config).to(self.device)
        rho = config.mimo.rx_correlation
        self.rho_range = rho if isinstance(rho, tuple) else None  # a range: rho drawn per frame
        self.mix = None if self.rho_range or rho == 0.0 else rx_sqrt(rho, self.R).to(torch.float32).to(self.device)
        self.rays = None
        if config.mimo.spatial == "rays":  # each user's CDL rays on the BS array (wavefront.sim.mimo_cdl)
            from wavefront.sim.mimo_cdl import RaysChannel  # it builds on this module

            self.rays = RaysChannel(config, self.profile, self.device)

    @property
    def decoder(self):
        """The LDPC decoder of each user's codeword (Sionna's, as in SISO)."""
        return self.siso.decoder

    def generate(self, batch_size: int, seed: int, with_data: bool = True) -> Frames:
        """Returns ``batch_size`` frames drawn from ``seed``."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError("batch_size", batch_size, "must be a positive integer")
        dev, o, ch, B, R, U = self.device, self.config.ofdm, self.config.channel, batch_size, self.R, self.U
        g = make_generator(seed, dev)
        snr_db = _draw(ch.snr_db, B, g, dev, ch.grid_points("snr_db"))
        if self.system is not None:  # the scenario's channels, Sionna reseeded from this generator
            h, fd, ds = self.system.draw(B, int(torch.randint(0, 2 ** 62, (1,), generator=g, device=dev)))
            return self._frames(h, snr_db, ds, fd, None, with_data, seed, g)
        ds = _draw(ch.delay_spread_s, B, g, dev, ch.grid_points("delay_spread_s"))
        fd = _draw(ch.doppler_hz, B, g, dev, ch.grid_points("doppler_hz"))
        rho = None if self.rho_range is None else _draw(self.rho_range, B, g, dev)  # a range only: fixed rho draws nothing
        F, T = o.grid_shape
        if self.rays is not None:  # mimo.spatial rays: each user's rays on the array
            h = self.rays.draw(ds, fd, g)
            return self._frames(h, snr_db, ds, fd, rho, with_data, seed, g)
        # Every (antenna, user) pair's tap gains [B R U, L, T] and one frame's delay phasors [B, F, L] (the
        # pairs of a frame share its delay spread). R_rx^(1/2) mixes the antennas on the taps, L x T numbers a
        # pair instead of F x T: the same linear map before the frequency sum instead of after it.
        a, P = tap_gains_and_phasors(o, self.profile, ds.repeat_interleave(R * U), fd.repeat_interleave(R * U),
                                     ch.num_sinusoids, g, phasor_rows=slice(None, None, R * U))
        L = a.shape[1]
        mix = rx_sqrt_batch(rho, R).to(dev) if rho is not None else self.mix  # [B, R, R] per frame, or [R, R]
        if mix is not None:  # real: one real matmul on the (re, im) pairs
            a = torch.view_as_complex(torch.matmul(mix, torch.view_as_real(a).reshape(B, R, -1)).view(B * R * U, L, T, 2))
        # h [B, R, U, F, T] written in place, a frame at a time: its [F, L] phasors (expanded, not copied, over
        # the R U pairs) times each pair's [L, T] gains. Multiplying [F, L] by [L, R U T] instead leaves h as
        # [F, R U, T], and moving F inside costs more than the product (a strided copy of 4.5 MB a frame at mimo-chest).
        # Small frames (under _FRAME_LOOP_SIZE numbers) take one [B, F, L] @ [B, L, R U T] product and that copy instead.
        if dev.type == "cpu" and R * U * F * T >= _FRAME_LOOP_SIZE:  # a GPU copies strided memory at full speed
            h = torch.empty(B, R * U, F, T, dtype=torch.complex64, device=dev)
            a = a.view(B, R * U, L, T)
            for b in range(B):
                torch.bmm(P[b].expand(R * U, F, L), a[b], out=h[b])
            h = h.view(B, R, U, F, T)
        else:
            h = torch.bmm(P, a.view(B, R * U, L, T).permute(0, 2, 1, 3).reshape(B, L, R * U * T))
            h = h.view(B, F, R, U, T).permute(0, 2, 3, 1, 4).contiguous()
        return self._frames(h, snr_db, ds, fd, rho, with_data, seed, g)

    def _frames(self, h, snr_db, ds, fd, rho, with_data: bool, seed, g: torch.Generator) -> Frames:
        """Returns the frames of channels ``h`` [B, R, U, F, T]: noise, every user's data and pilots, drawn from ``g``."""
        dev, ch = self.device, self.config.channel
        B, R, U, F, T = h.shape
        noise_var = self.config.noise_variance(snr_db)
        noise = torch.view_as_complex(torch.randn(B, R, F, T, 2, generator=g, device=dev))
        noise = noise.mul_(torch.sqrt(noise_var / 2).reshape(-1, 1, 1, 1))
        bits = codewords = y = None
        gen = self.siso
        # x [B, U, F*T]: every user's data on the data positions, its pilots on its own, zero on the others'
        x = torch.zeros(B, U, F * T, dtype=torch.complex64, device=dev)
        if with_data:
            bits = _random_bits(B * U, gen.info_bits, g, dev)  # one codeword per user
            codewords = bits if self.ldpc_rate is None else gen.encoder(bits)
            x[:, :, gen._data_flat] = gen._map(codewords).view(B, U, -1)
            bits, codewords = bits.view(B, U, -1), codewords.view(B, U, -1)
        for u in range(U):
            x[:, u, self._pilot_flat[u]] = self.pilot_symbols[u].reshape(-1)
        # y = sum_u h_u x_u + n, accumulated user by user: no [B, R, U, F T] temporary
        hf = h.view(B, R, U, F * T)
        y = noise.view(B, R, F * T)
        for u in range(U):
            y.addcmul_(hf[:, :, u], x[:, None, u])
        if self.dmrs is not None:
            return self._dmrs_frames(h, y, noise_var, bits, codewords, snr_db, ds, fd, with_data, int(seed), rho)
        P_shape = self.users[0].ofdm.pilot_shape
        pilots_rx = torch.stack([y[:, :, self._pilot_flat[u]] for u in range(U)], 2).view(B, R, U, *P_shape)
        return Frames(h=h, y=y.view(B, R, F, T) if with_data else None, pilots_rx=pilots_rx,
                      pilot_symbols=self.pilot_symbols, pilots_ls=pilots_rx / self.pilot_symbols,
                      bits=bits, codewords=codewords, snr_db=snr_db, delay_spread_s=ds, doppler_hz=fd,
                      noise_var=noise_var, profile=ch.profile, seed=int(seed), rx_correlation=rho)


    def _dmrs_frames(self, h, y, noise_var, bits, codewords, snr_db, ds, fd, with_data, seed, rho=None) -> Frames:
        B, R, U = h.shape[:3]
        F, T = self.config.ofdm.grid_shape
        g = torch.tensor(self.dmrs.user_group, device=y.device)
        Nf, Nt = self._seq.shape[1:]
        pilots_rx = y[:, :, self._pilot_flat].view(B, R, U, Nf, Nt)  # user u's group REs (shared within a group)
        raw = pilots_rx * self._seq[g].conj()
        ls = despread(raw, self._cover, self.dmrs.pair_t)
        return Frames(h=h, y=y.view(B, R, F, T) if with_data else None, pilots_rx=pilots_rx,
                      pilot_symbols=self.pilot_symbols, pilots_ls=ls, bits=bits, codewords=codewords, snr_db=snr_db,
                      delay_spread_s=ds, doppler_hz=fd, noise_var=noise_var, profile=self.config.channel.profile,
                      seed=seed, pilots_dmrs=raw, rx_correlation=rho)


_FRAME_LOOP_SIZE = 65536  # R U F T of a frame from which h is built frame by frame in its own layout (on a CPU)


def frame_generator(config: SystemConfig, device="cpu", ldpc_rate: float | None = None):
    """Returns the frame generator of ``config``: :class:`MimoFrameGenerator` with several antennas or users, else SISO."""
    if config.mimo.is_mimo:
        return MimoFrameGenerator(config, device, ldpc_rate)
    return FrameGenerator(config, device, ldpc_rate=ldpc_rate)


class PerUser(Estimator):
    """A SISO estimator applied to every (antenna, user) pair with that user's pilots: ``[B, R, U, P_f', P_t] -> [B, R, U, F, T]``.

    (A learned model over the antenna axis, ``across_antennas``, gets each user's ``[B, R, P_f', P_t]`` at once.)

    The receive correlation is not used: each antenna is estimated alone (for the genie over
    space, see :class:`MimoGenieLMMSE`). Estimators that read conditions get each frame's for
    every antenna and user; those that estimate them do so per (antenna, user).
    """

    mimo = True

    def __init__(self, name: str, config: SystemConfig, **options):
        self._take([get_classical(name, c, **options) for c in user_configs(config)])
        if config.mimo.pilots != "kronecker":  # the despread LS averages 2 (or 4) REs: its noise is sigma^2 / 2 (/ 4)
            lay = dmrs_layout(config)
            self.noise_scale = 1.0 / (lay.pair_f * lay.pair_t)

    @classmethod
    def wrapping(cls, estimators: list) -> "PerUser":
        """Returns ``estimators`` (one SISO estimator per user, built for :func:`user_configs`, e.g. learned models)
        applied per (antenna, user)."""
        obj = cls.__new__(cls)
        obj._take(list(estimators))
        return obj

    noise_scale = 1.0  # the LS pilots' noise variance over sigma^2 (below 1 after DM-RS despreading)

    def _take(self, per_user: list) -> None:
        self.per_user = per_user
        first = per_user[0]
        self.name, self.needs = first.name, first.needs
        # a model over the antenna axis (``across_antennas``) takes one user's R antennas together
        self.across_antennas = getattr(first, "across_antennas", False)
        self.given = (getattr(first, "given", None) or "pilots only") + (
            "; per user, across its antennas" if self.across_antennas else "; per antenna and user")
        self.trained_on = getattr(first, "trained_on", None)

    def _pair_meta(self, meta: dict[str, torch.Tensor], R: int) -> dict[str, torch.Tensor]:
        """Returns the per-frame conditions of ``meta`` repeated for each of the R antennas (frame-major), with the
        noise that of the LS pilots (``noise_scale``): what each (antenna, user) pair's SISO estimator reads."""
        rep = {k: v.repeat_interleave(R) for k, v in meta.items() if torch.is_tensor(v) and v.dim() == 1}
        if self.noise_scale != 1.0:  # what a SISO estimator reads as the noise is the LS pilots' own
            if "noise_var" in rep:
                rep["noise_var"] = rep["noise_var"] * self.noise_scale
            if "snr_db" in rep:
                rep["snr_db"] = rep["snr_db"] - 10 * math.log10(self.noise_scale)
        return rep

    def estimate(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        B, R, U = pilots.shape[:3]
        rep = self._pair_meta(meta, R)
        if self.across_antennas:  # [B, R, P_f', P_t] -> [B, R, F, T] per user, with the frames' own conditions
            return torch.stack([est.estimate(pilots[:, :, u], meta) for u, est in enumerate(self.per_user)], 2)
        out = [est.estimate(pilots[:, :, u].reshape(B * R, *pilots.shape[3:]), rep) for u, est in enumerate(self.per_user)]
        return torch.stack([o.view(B, R, *o.shape[1:]) for o in out], 2)

    def estimate_with_error_variance(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor]):
        """Returns ``(H_hat [B, R, U, F, T] c64, err_var [B] f64 or None)``: the mean over antennas and users of the
        MSE per RE each SISO filter's own model states, or None when the SISO estimator states none (LS, learned
        models). ``stated_mse`` (at the conditions it filters with): ``lmmse-robust`` under its
        assumed covariance, the genie's closed form at the true conditions; ``estimate_with_error_variance`` (from
        each pair's pilots): ``lmmse-estimated`` the genie's closed form at the pair's estimated conditions, ``mmse-bayes``
        the SISO mixture's posterior variance."""
        if self.across_antennas or not all(hasattr(e, "stated_mse") or hasattr(e, "estimate_with_error_variance")
                                           for e in self.per_user):
            return self.estimate(pilots, meta), None
        B, R = pilots.shape[:2]
        rep = self._pair_meta(meta, R)
        hs, evs = [], []
        for u, est in enumerate(self.per_user):
            p = pilots[:, :, u].reshape(B * R, *pilots.shape[3:])
            if hasattr(est, "estimate_with_error_variance"):
                h, ev = est.estimate_with_error_variance(p, rep)
                if ev is None:  # its model states nothing here
                    return self.estimate(pilots, meta), None
                ev = ev.view(B, R).mean(1)
            else:  # the same statement for every antenna: once per frame
                h = est.estimate(p, rep)
                ev = est.stated_mse(self._pair_meta(meta, 1), B)
            hs.append(h.view(B, R, *h.shape[1:]))
            evs.append(ev.to(pilots.device, torch.float64))
        return torch.stack(hs, 2), torch.stack(evs).mean(0)


@lru_cache(maxsize=128)
def _user_eig(user: SystemConfig, delay_spread_s: float, doppler_hz: float):
    """Returns one user's 2-D statistics at one condition, factored once for every noise level, complex128:

    ``(A [F, P_f] per term, C [T, P_t] per term, mu [P], Q [P, P], D [P])`` with ``R_p = Q diag(mu) Q^H`` and
    ``D = diag(Q^H G Q)``, ``G = R_ph R_hp``: then ``(R_p + s I)^-1 = Q diag(1 / (mu + s)) Q^H`` and the
    2-D MSE at noise ``s`` is ``1 - sum_i D_i / (mu_i + s) / (F T)``. About ``16 (F P_f + T P_t + P^2)``
    bytes an entry (1.6 MB at mimo-chest); 128 entries are kept.
    """
    prof = channel_profile(user.channel.profile, user.channel.travel_azimuth_deg)
    st = _true_stats(user.ofdm, prof, torch.tensor([delay_spread_s], dtype=torch.float64),
                     torch.tensor([doppler_hz], dtype=torch.float64))
    mu, Q = torch.linalg.eigh(st.r_pp[0])
    terms = [(A.mH @ A2, C.mH @ C2) for A, C in zip(st.f_hp, st.t_hp) for A2, C2 in zip(st.f_hp, st.t_hp)]
    G = combine_terms([a for a, _ in terms], [b for _, b in terms], True)[0]
    D = torch.einsum("pi,pq,qi->i", Q.conj(), G, Q).real
    return [A[0] for A in st.f_hp], [C[0] for C in st.t_hp], mu.clamp_min(0.0), Q, D


def _conditions(ds: torch.Tensor, fd: torch.Tensor):
    """Returns ``[((delay spread, Doppler), frame indices [n]), ...]``: the frames grouped by condition."""
    uniq, inverse = torch.unique(torch.stack([ds.double().cpu(), fd.double().cpu()], 1), dim=0, return_inverse=True)
    return [((float(a), float(b)), (inverse == i).nonzero().squeeze(1)) for i, (a, b) in enumerate(uniq.tolist())]


class MimoGenieLMMSE(Estimator):
    """The genie LMMSE over space, time and frequency with each frame's true statistics and ``R_rx``.

    ``estimate(pilots [B, R, U, P_f', P_t] c64, meta) -> [B, R, U, F, T] c64``: per user, the
    pilots rotated by ``V^T`` (``R_rx = V diag(lambda) V^T``), a 2-D genie LMMSE per eigen-index
    at noise ``sigma^2 / lambda_k``, rotated back by ``V``. Exact: the same filter as the dense
    (R P)^2 one. The R noise levels share one eigendecomposition of the pilots' covariance per
    user and condition (:func:`_user_eig`), so a filter costs two P x P products, not a solve.

    With DM-RS pilots it reads the raw group observations ``meta["dmrs_rx"]`` [B, R, U, N_f, N_t]
    instead of ``pilots`` (the despread LS), and filters each group's overlapping users jointly
    (:func:`wavefront.sim.dmrs.dmrs_genie`).
    """

    name = "lmmse-genie"
    needs = "truth"
    mimo = True

    def __init__(self, config: SystemConfig):
        self.config = config
        self.users = user_configs(config)
        m = config.mimo
        if isinstance(m.rx_correlation, tuple):  # each frame's rho comes in meta["rx_correlation"]
            self.lam = self.V = None
            rho = "each frame's receive correlation rho"
        else:
            lam, V = rx_eigen(m.rx_correlation, m.num_rx_antennas)
            self.lam, self.V = lam.clamp_min(1e-12), V  # an eigenvalue of 0 leaves nothing to estimate
            rho = f"the receive correlation rho = {m.rx_correlation:g}"
        self.given = f"true profile, delay spread, Doppler and SNR, and {rho} (genie over space, time and frequency)"

    def estimate(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns H_hat [B, R, U, F, T] complex64; ``meta["rx_correlation"]`` [B] (each frame's rho), when
        present, replaces the config's rho (required when the config's rho is a range)."""
        rho = meta.get("rx_correlation")
        if rho is None:
            if self.lam is None:
                raise ConfigError("meta", "rx_correlation", "the config's rho is a range: the genie needs each frame's")
            return self._estimate(pilots, meta, self.lam, self.V)
        F, T = self.config.ofdm.grid_shape
        out = torch.empty(*pilots.shape[:3], F, T, dtype=torch.complex64, device=pilots.device)
        uniq, inverse = torch.unique(rho.double().cpu(), return_inverse=True)
        for i, r in enumerate(uniq.tolist()):
            rows = (inverse == i).nonzero().squeeze(1).to(pilots.device)
            lam, V = rx_eigen(r, self.config.mimo.num_rx_antennas)
            sub = {k: v[rows] for k, v in meta.items() if torch.is_tensor(v) and v.dim() >= 1}
            out[rows] = self._estimate(pilots[rows], sub, lam.clamp_min(1e-12), V)
        return out

    def _estimate(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor], lam: torch.Tensor,
                  V: torch.Tensor) -> torch.Tensor:
        """The genie at one ``R_rx = V diag(lam) V^T`` for every frame of ``pilots``."""
        B, R, U, Pf, Pt = pilots.shape
        dev, c128 = pilots.device, torch.complex128
        F, T = self.config.ofdm.grid_shape
        nv = meta["noise_var"].double() if "noise_var" in meta else self.config.noise_variance(meta["snr_db"].double())
        dmrs = self.config.mimo.pilots != "kronecker"
        if dmrs:  # the raw group observations: the despread LS has lost the channel's variation over a pair
            if "dmrs_rx" not in meta:
                raise ConfigError("meta", "dmrs_rx", "the DM-RS genie reads the raw group observations (Frames.pilots_dmrs)")
            pilots = meta["dmrs_rx"]
        z = torch.einsum("rk,bru...->bku...", V.to(dev, c128), pilots.to(c128))  # V^T p (V is real)
        out = torch.empty(B, R, U, F, T, dtype=c128, device=dev)
        for (ds, fd), rows in _conditions(meta["delay_spread_s"], meta["doppler_hz"]):
            rows = rows.to(dev)
            if dmrs:
                out[rows] = dmrs_genie(self.config, z[rows], nv.to(dev)[rows], lam.to(dev), ds, fd)
                continue
            s = (nv.to(dev)[rows, None] / lam.to(dev)).reshape(-1, 1)  # [n R, 1]: sigma^2 / lambda_k
            for u, user in enumerate(self.users):
                A, C, mu, Q, _ = _user_eig(user, ds, fd)
                out[rows, :, u] = eigen_filter(z[rows, :, u], s, A, C, mu, Q)
        return torch.einsum("rk,bku...->bru...", V.to(dev, c128), out).to(torch.complex64)


def eigen_filter(z: torch.Tensor, s: torch.Tensor, A: list, C: list, mu: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Returns ``R_hp (R_p + s I)^-1 z`` [n, R, F, T] complex128 for one user's rotated pilots ``z`` [n, R, P_f', P_t] c128.

    ``s`` [n R, 1]: each (frame, eigen-index) row's noise ``sigma^2 / lambda_k``; ``R_p = Q diag(mu) Q^H``
    (``mu`` [P], ``Q`` [P, P]); ``R_hp = sum_i A_i (x) C_i`` with ``A_i`` [F, P_f'] and ``C_i`` [T, P_t].
    """
    n, R, Pf, Pt = z.shape
    dev = z.device
    mu, Q = mu.to(dev), Q.to(dev)
    w = (z.reshape(-1, Pf * Pt) @ Q.conj()) / (mu + s)  # Q^H z / (mu + s), as rows
    v = (w @ Q.T).reshape(-1, Pf, Pt)  # (R_p + s I)^-1 z
    h = sum(a.to(dev) @ v @ c.to(dev).T for a, c in zip(A, C))
    return h.reshape(n, R, *h.shape[-2:])


def mimo_genie_mse(config: SystemConfig, snr_db, delay_spread_s, doppler_hz, per_user: bool = False,
                   rx_correlation=None) -> torch.Tensor:
    """Returns the genie LMMSE's MSE per resource element, averaged over antennas (and users), float64 linear.

    Arguments broadcast to [B]; ``per_user``: [B, U] instead of the users' mean [B]. Per user:
    ``(1 / R) sum_k lambda_k mse_2D(sigma^2 / lambda_k)``, each 2-D MSE from one eigendecomposition
    per user and condition (:func:`_user_eig`; ``lmmse.genie_mse`` gives the same, a test holds them together).
    ``rx_correlation``: each frame's rho (``Frames.rx_correlation``); required when the config's is a range.
    """
    m = config.mimo
    if m.spatial == "rays":  # each cluster its own spatial covariance (wavefront.sim.mimo_cdl)
        from wavefront.sim.mimo_cdl import rays_genie_mse  # it builds on this module

        return rays_genie_mse(config, snr_db, delay_spread_s, doppler_hz, per_user)
    if rx_correlation is None and isinstance(m.rx_correlation, tuple):
        raise ConfigError("mimo.rx_correlation", list(m.rx_correlation), "is a range: the bound needs each frame's rho")
    rho = m.rx_correlation if rx_correlation is None else rx_correlation
    snr, ds, fd, rho = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float64).cpu()
                                                 for v in (snr_db, delay_spread_s, doppler_hz, rho)))
    shape = snr.shape
    snr, ds, fd, rho = snr.reshape(-1), ds.reshape(-1), fd.reshape(-1), rho.reshape(-1)
    nv = torch.pow(10.0, -(snr + config.snr_offset_db) / 10)
    out = torch.empty(snr.numel(), m.num_users, dtype=torch.float64)
    if rx_correlation is None:
        out[:] = _genie_mse_rows(config, rx_eigen(m.rx_correlation, m.num_rx_antennas)[0], nv, ds, fd)
    else:
        uniq, inverse = torch.unique(rho, return_inverse=True)
        for i, r in enumerate(uniq.tolist()):
            rows = (inverse == i).nonzero().squeeze(1)
            out[rows] = _genie_mse_rows(config, rx_eigen(r, m.num_rx_antennas)[0], nv[rows], ds[rows], fd[rows])
    out = out.reshape(*shape, m.num_users)
    return out if per_user else out.mean(-1)


def _genie_mse_rows(config: SystemConfig, lam: torch.Tensor, nv, ds, fd) -> torch.Tensor:
    """Returns :func:`mimo_genie_mse` per user [n, U] at one ``R_rx`` spectrum ``lam`` [R] for noise levels ``nv`` [n]."""
    m = config.mimo
    lam = lam[lam > 1e-12]  # an eigenvalue of 0 carries no channel and adds nothing
    F, T = config.ofdm.grid_shape
    out = torch.empty(nv.numel(), m.num_users, dtype=torch.float64)
    for (d, f), rows in _conditions(ds, fd):
        s = nv[rows, None, None] / lam[None, :, None]  # [n, K, 1]
        if config.mimo.pilots != "kronecker":
            for u in range(m.num_users):
                out[rows, u] = (lam * dmrs_user_mse(config, u, d, f, s[..., 0])).sum(-1) / m.num_rx_antennas
            continue
        for u, user in enumerate(user_configs(config)):
            *_, mu, _, D = _user_eig(user, d, f)
            mse_k = 1.0 - (D / (mu + s)).sum(-1) / (F * T)  # [n, K]
            out[rows, u] = (lam * mse_k).sum(-1) / m.num_rx_antennas
    return out


def lmmse_detect(y: torch.Tensor, h_hat: torch.Tensor, noise_var: torch.Tensor, err_var: torch.Tensor):
    """Returns ``(x_hat [B, U, N] c64, no_eff [B, U, N] f32)``: LMMSE detection per resource element.

    ``y`` [B, R, N], ``h_hat`` [B, R, U, N] complex64; ``noise_var`` [B]; ``err_var`` [B] the
    estimate's error variance per element. With ``s = sigma^2 + U err_var``:
    ``G = (H^H H + s I)^-1 H^H``, ``x_hat = (G y) / d``, ``no_eff = 1 / d - 1``,
    ``d = diag(G H)`` (Sionna's ``lmmse_equalizer`` with a white noise covariance).
    """
    B, R, U, N = h_hat.shape
    H = h_hat.permute(0, 3, 1, 2).to(torch.complex128)  # [B, N, R, U]
    s = (noise_var.double() + U * err_var.double()).reshape(B, 1, 1, 1)
    A = H.mH @ H + s * torch.eye(U, dtype=torch.complex128, device=H.device)
    rhs = torch.cat([H.mH @ y.permute(0, 2, 1).unsqueeze(-1).to(torch.complex128), H.mH @ H], -1)  # [B, N, U, 1 + U]
    sol = torch.linalg.solve(A, rhs)
    gy, gh = sol[..., 0], sol[..., 1:]
    d = torch.diagonal(gh, dim1=-2, dim2=-1).real.clamp_min(1e-12)  # [B, N, U]
    x_hat = (gy / d).permute(0, 2, 1)
    no_eff = (1.0 / d - 1.0).clamp_min(1e-12).permute(0, 2, 1)
    return x_hat.to(torch.complex64), no_eff.float()


def error_variance(est, noise_var: torch.Tensor, bound: torch.Tensor, model: torch.Tensor | None = None) -> torch.Tensor:
    """Returns the error variance [B] an estimator states to the detector.

    Perfect CSI 0; the genie its closed-form MSE per frame (``bound``); ``model`` [B], where given,
    the estimator's own model's (``estimate_with_error_variance``: ``--error-variance model``); any
    other estimator the noise variance of its LS pilots (Sionna's ``LSChannelEstimator``
    convention): ``sigma^2``, or ``sigma^2 / 2`` (``/ 4``) after DM-RS despreading (``noise_scale``).
    """
    if getattr(est, "is_perfect", False):
        return torch.zeros_like(noise_var, dtype=torch.float64)
    if isinstance(est, MimoGenieLMMSE):
        return bound
    if model is not None:
        return model.to(noise_var.device, torch.float64)
    return noise_var.double() * getattr(est, "noise_scale", 1.0)


# Sionna's OFDM estimators on the same pilots (wavefront.sim.sionna_ref)
SIONNA = ("sionna-ls", "sionna-lmmse-tf", "sionna-lmmse-tfs")
MIMO_CLASSICAL = ("ls-nearest", "ls-linear", "ls-spline", "lmmse-robust", "lmmse-genie", "lmmse-estimated", "mmse-bayes",
                  "lmmse-estimated-per-pair", "mmse-bayes-per-pair", "lmmse-genie-per-pair", "lmmse-sample")
# what a system-level scenario (UMi, UMa: no closed-form covariance) cannot run: they assume a tap profile's statistics
_NEEDS_PROFILE = ("lmmse-genie", "lmmse-estimated", "mmse-bayes", "lmmse-estimated-per-pair", "mmse-bayes-per-pair",
                  "lmmse-genie-per-pair", "sionna-lmmse-tf", "sionna-lmmse-tfs")
# joint over antennas and users with the Kronecker pattern (wavefront.sim.mimo_bayes); "-per-pair": the SISO
# estimator on each (antenna, user) pair alone, receive correlation ignored (the baseline they replace)
_JOINT = ("lmmse-estimated", "mmse-bayes")
# estimators whose prior is the Kronecker model R_rx(rho) (x) R_ft: refused under mimo.spatial rays
_KRONECKER_MODEL = _JOINT + ("sionna-lmmse-tfs",)
_PER_PAIR = "-per-pair"


def mimo_estimators(names: list[str], config: SystemConfig, robust_options: dict | None = None) -> list:
    """Returns MIMO estimators for ``names``: the genie over space (``lmmse-genie``; under ``mimo.spatial: rays``
    :class:`~wavefront.sim.mimo_cdl.RaysGenieLMMSE`), perfect CSI,
    ``lmmse-estimated`` and ``mmse-bayes`` joint over antennas and users with rho in the prior
    (:mod:`wavefront.sim.mimo_bayes`; per pair with DM-RS pilots; refused under rays, as ``sionna-lmmse-tfs``: their
    prior is the Kronecker model), their per-pair baselines (``lmmse-estimated-per-pair``, ``mmse-bayes-per-pair``,
    ``lmmse-genie-per-pair``: the 2-D genie per antenna), and the other classical ones per
    (antenna, user) (:class:`PerUser`)."""
    from wavefront.sim.system_level import SampleCovarianceLMMSE, is_system_level  # it builds on this module

    out = []
    for name in names:
        if name in _NEEDS_PROFILE and is_system_level(config):
            raise ConfigError("estimators", name, f"needs a tap profile's closed-form statistics, which the system-level "
                                                  f"scenario {config.channel.profile} does not have; use lmmse-sample "
                                                  "(covariances from samples), ls-*, lmmse-robust or perfect")
        if name == "perfect":
            out.append(PerfectCSI())
        elif name == "lmmse-sample":
            out.append(SampleCovarianceLMMSE(config))
        elif name == "lmmse-genie" and config.mimo.spatial == "rays":
            from wavefront.sim.mimo_cdl import RaysGenieLMMSE  # it builds on this module

            out.append(RaysGenieLMMSE(config))
        elif name == "lmmse-genie":
            out.append(MimoGenieLMMSE(config))
        elif name in _KRONECKER_MODEL and config.mimo.spatial == "rays":
            alt = "sionna-lmmse-tf" if name in SIONNA else f"{name}-per-pair"
            raise ConfigError("estimators", name, f"assumes the Kronecker model (rho^|i-j| across the antennas), which "
                                                  f"mimo.spatial rays is not; use {alt} or lmmse-genie")
        elif name in SIONNA and config.mimo.pilots != "kronecker":
            raise ConfigError("estimators", name, f"Sionna's estimators here use the Kronecker pattern, not "
                                                  f"{config.mimo.pilots}")
        elif name in SIONNA:
            from wavefront.sim.sionna_ref import SionnaEstimator  # it builds on this module

            out.append(SionnaEstimator(name, config))
        elif name in _JOINT and config.mimo.pilots == "kronecker":
            from wavefront.sim.mimo_bayes import MimoBayesMMSE, MimoEstimatedLMMSE  # it builds on this module

            out.append((MimoEstimatedLMMSE if name == "lmmse-estimated" else MimoBayesMMSE)(config))
        elif name.endswith(_PER_PAIR) and name in MIMO_CLASSICAL:
            est = PerUser(name[:-len(_PER_PAIR)], config)
            est.name = name
            ignored = "spatial correlation" if config.mimo.spatial == "rays" else "receive correlation"
            est.given = est.given.replace("; per antenna and user", "; each (antenna, user) pair alone, its own "
                                          f"conditions, {ignored} ignored")
            out.append(est)
        elif name in MIMO_CLASSICAL:
            out.append(PerUser(name, config, **((robust_options or {}) if name == "lmmse-robust" else {})))
        else:
            known = ", ".join(MIMO_CLASSICAL + SIONNA + ("perfect",))
            why = "is SISO only so far" if name in CLASSICAL else "is neither a classical estimator nor a learned model with a checkpoint for each user's pilots"
            raise ConfigError("estimators", name, f"{why}; with several antennas or users choose from {known}")
    return out
