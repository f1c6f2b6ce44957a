"""NR DM-RS ports for the multi-user uplink: CDM groups with frequency and time orthogonal cover codes.

3GPP 38.211 §6.4.1.1.3 (PUSCH), Tables 6.4.1.1.3-1/-2. Port p belongs to CDM group lambda and
sends on subcarriers

- configuration type 1: ``k = 4 n + 2 k' + lambda`` (2 groups, each a comb of every 2nd subcarrier);
- configuration type 2: ``k = 6 n + k' + 2 lambda`` (3 groups, pairs of adjacent subcarriers);

``k' in {0, 1}``, with the frequency cover ``w_f(k')`` ([+1, +1] or [+1, -1]: 2 ports per group)
and, double symbol, on the symbol pair ``(l, l + 1)`` with the time cover ``w_t(l')`` ([+1, +1] or
[+1, -1]: 4 ports per group). The DM-RS symbols ``l`` are the config's ``pilot_symbols``. User u
takes port u (NR order: groups first, then ``w_f``, then ``w_t``), so users 0 and 1 share group 0.

**Sequence.** All ports of a group send the same unit-modulus QPSK sequence ``r_g`` (in NR it
depends on the scrambling identity, not the port), times their cover: ``x_u = r_g w_u`` on the
group's resource elements. Sharing ``r_g`` is what makes the covers orthogonal after
``conj(r_g)``: with per-port sequences the despreading would not cancel the other ports.

**Data.** No data on DM-RS symbols: every resource element of a DM-RS symbol (and, double, of
the following symbol) is DM-RS of some group or empty, so the data positions are the other
symbols in full (:func:`reserved_ofdm`).

**Despread LS** (``pilots_ls`` [B, R, U, P_f', P_t]): per user and CDM pair (2 REs single symbol,
2 x 2 double), the average of ``conj(x_u) y`` over the pair, placed at the pair's first resource
element (lowest subcarrier, first symbol): ``P_f' = F / 4`` (type 1) or ``F / 6`` (type 2),
``P_t`` the number of DM-RS symbols. So each user's LS grid is a Kronecker layout with offset
``Delta`` and spacing 4 or 6 (:func:`dmrs_user_configs`), and the SISO interpolators run on it.

**Raw group observations** (``Frames.pilots_dmrs``, ``meta["dmrs_rx"]`` [B, R, U, N_f, N_t]): per
user, ``conj(r_g) y`` at every RE of its group (``N_f = F / 2`` or ``F / 3`` subcarriers, ``N_t``
DM-RS symbols, twice as many when double). Users of one group get the same tensor. The genie
reads these, not the despread LS, because despreading throws away the channel's variation across
the pair: ``conj(r_g) y_g = sum_{v in g} W_v h_v + n`` with ``W_v = diag(w_v)`` real and unitary.

**Genie.** After the ``R_rx`` rotation (eigen-index k, eigenvalue ``lambda_k``),
``Cov = lambda_k M + sigma^2 I`` with ``M = sum_{v in g} W_v R_p W_v`` (``R_p`` the 2-D covariance
at the group's REs), and user u's estimate is ``R_hp W_u (M + s I)^-1 z``, ``s = sigma^2 / lambda_k``.
One eigendecomposition ``M = Q diag(mu) Q^H`` per (group, condition) serves every noise level
(:func:`group_eig`); the bound per user is
``(1 / R) sum_k lambda_k (1 - sum_i D_u,i / (mu_i + s_k) / (F T))``, ``D_u = diag(Q^H W_u R_ph R_hp W_u Q)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from wavefront.sim.config import DMRS_PORTS, SystemConfig
from wavefront.sim.frames import _PILOT_SEED
from wavefront.sim.profiles import channel_profile
from wavefront.sim.statistics import covariance_terms
from wavefront.utils import make_generator

_PLUS, _MINUS = (1, 1), (1, -1)


def port_table(kind: str) -> list[tuple[int, tuple[int, int], tuple[int, int]]]:
    """Returns ``[(cdm_group, w_f, w_t), ...]`` for ports 0, 1, ... of ``kind`` (38.211 Tables 6.4.1.1.3-1/-2).

    ``kind``: ``"dmrs-type1"``, ``"dmrs-type2"``, ``"dmrs-type1-double"``, ``"dmrs-type2-double"``.
    """
    groups = 2 if "type1" in kind else 3
    out = [(g, wf, _PLUS) for g in range(groups) for wf in (_PLUS, _MINUS)]
    if kind.endswith("-double"):
        out += [(g, wf, _MINUS) for g, wf, _ in out]
    assert len(out) == DMRS_PORTS[kind]
    return out


@dataclass(frozen=True)
class DmrsLayout:
    """Where every group sends and what every user sends.

    - ``group_subcarriers[g]`` [N_f], ``symbols`` [N_t]: group g's resource elements (their product);
    - ``user_group[u]``; ``cover[u]`` [N_f, N_t] float64 (+-1): ``w_f(k') w_t(l')`` at every RE of its group;
    - ``pair_f`` = 2, ``pair_t`` = 1 or 2: the CDM pair's extent in (sorted) group REs;
    - ``delta[g]``: the group's first subcarrier; ``spacing``: 4 (type 1) or 6 (type 2);
    - ``start_symbols`` [P_t]: the DM-RS symbols (the first of each pair when double).
    """

    group_subcarriers: tuple[tuple[int, ...], ...]
    symbols: tuple[int, ...]
    start_symbols: tuple[int, ...]
    user_group: tuple[int, ...]
    cover: tuple[torch.Tensor, ...]
    pair_t: int
    delta: tuple[int, ...]
    spacing: int
    pair_f: int = 2


@lru_cache(maxsize=32)
def dmrs_layout(config: SystemConfig) -> DmrsLayout:
    """Returns the DM-RS layout of a config with ``mimo.pilots`` one of the DM-RS kinds (validated by the config)."""
    kind, F = config.mimo.pilots, config.ofdm.num_subcarriers
    type1, double = "type1" in kind, kind.endswith("-double")
    spacing = 4 if type1 else 6
    step = 2 if type1 else 1  # k' moves 2 subcarriers (type 1) or 1 (type 2)
    n_groups = 2 if type1 else 3
    delta = tuple(g if type1 else 2 * g for g in range(n_groups))
    subs = tuple(tuple(sorted(spacing * n + step * kp + delta[g] for n in range(F // spacing) for kp in (0, 1)))
                 for g in range(n_groups))
    start = tuple(sorted(config.ofdm.pilot_symbol_indices))
    symbols = tuple(sorted(l + lp for l in start for lp in ((0, 1) if double else (0,))))
    table = port_table(kind)
    groups, covers = [], []
    for u in range(config.mimo.num_users):
        g, wf, wt = table[u]
        groups.append(g)
        f_cov = torch.tensor(wf, dtype=torch.float64).repeat(F // spacing)  # k' alternates along the sorted comb
        t_cov = torch.tensor(wt if double else (1,), dtype=torch.float64).repeat(len(start))
        covers.append(f_cov[:, None] * t_cov[None, :])
    return DmrsLayout(subs, symbols, start, tuple(groups), tuple(covers), 2 if double else 1, delta, spacing)


def reserved_ofdm(config: SystemConfig):
    """Returns the OFDM config whose (Kronecker) pilot layout is every RE of every DM-RS symbol: its data mask is the frames'."""
    return config.updated(ofdm={"pilot_subcarrier_offset": 0, "pilot_subcarrier_spacing": 1,
                                "pilot_symbols": dmrs_layout(config).symbols},
                          mimo={"num_rx_antennas": 1, "num_users": 1, "pilots": "kronecker"}).ofdm


@lru_cache(maxsize=64)
def dmrs_user_configs(config: SystemConfig) -> tuple[SystemConfig, ...]:
    """Returns one SISO config per user whose pilots are the user's CDM pairs (first RE): where its despread LS sits."""
    lay = dmrs_layout(config)
    siso = {"num_rx_antennas": 1, "num_users": 1, "pilots": "kronecker"}
    return tuple(config.updated(ofdm={"pilot_subcarrier_offset": lay.delta[g], "pilot_subcarrier_spacing": lay.spacing,
                                      "pilot_symbols": lay.start_symbols}, mimo=siso)
                 for g in lay.user_group)


def dmrs_pilots_per_user(config: SystemConfig) -> list[dict]:
    """Returns ``[{"positions": [[f, t], ...], "cover": [w_f w_t, ...]}, ...]``: every user's REs (its group's) and cover."""
    lay = dmrs_layout(config)
    out = []
    for g, cov in zip(lay.user_group, lay.cover):
        pos = [[f, t] for f in lay.group_subcarriers[g] for t in lay.symbols]
        out.append({"positions": pos, "cover": [int(c) for c in cov.reshape(-1).tolist()]})
    return out


def group_sequences(config: SystemConfig) -> torch.Tensor:
    """Returns every CDM group's QPSK sequence [G, N_f, N_t] complex64, fixed by the system (not by a frame's seed)."""
    lay = dmrs_layout(config)
    g = make_generator(_PILOT_SEED)
    q = torch.randint(0, 4, (len(lay.group_subcarriers), len(lay.group_subcarriers[0]), len(lay.symbols)), generator=g).double()
    return torch.polar(torch.ones_like(q), (2 * q + 1) * torch.pi / 4).to(torch.complex64)


def despread(raw: torch.Tensor, cover: torch.Tensor, pair_t: int) -> torch.Tensor:
    """Returns the despread LS [..., N_f / 2, N_t / pair_t]: the mean of ``cover * raw`` over each CDM pair.

    ``raw`` [..., N_f, N_t]: ``conj(r_g) y`` at the group's REs; ``cover`` [N_f, N_t] (+-1, its own conjugate).
    """
    z = raw * cover.to(raw.device, raw.real.dtype)
    *lead, nf, nt = z.shape
    return z.reshape(*lead, nf // 2, 2, nt // pair_t, pair_t).mean((-3, -1))


@lru_cache(maxsize=128)
def group_eig(config: SystemConfig, group: int, delay_spread_s: float, doppler_hz: float):
    """Returns one CDM group's statistics at one condition, factored once for every noise level, complex128:

    ``(A [F, N_f] per term, C [T, N_t] per term, mu [N], Q [N, N], {u: D_u [N]})`` with
    ``M = sum_{v in g} W_v R_p W_v = Q diag(mu) Q^H`` and ``D_u = diag(Q^H W_u G W_u Q)``,
    ``G = R_ph R_hp`` (``N = N_f N_t``, row-major (f, t)).
    """
    lay = dmrs_layout(config)
    prof = channel_profile(config.channel.profile, config.channel.travel_azimuth_deg)
    sf, st = list(lay.group_subcarriers[group]), list(lay.symbols)
    ds = torch.tensor([delay_spread_s], dtype=torch.float64)
    fd = torch.tensor([doppler_hz], dtype=torch.float64)
    terms = covariance_terms(config.ofdm, prof, ds, fd, cols_f=sf, cols_t=st)  # R_hp: [F, N_f], [T, N_t]
    A = [a[0] for a, _ in terms]
    C = [c[0] for _, c in terms]
    r_p = sum(torch.kron(a[sf], c[st]) for a, c in zip(A, C))
    G = sum(torch.kron(a.mH @ a2, c.mH @ c2) for a, c in zip(A, C) for a2, c2 in zip(A, C))
    users = [u for u, g in enumerate(lay.user_group) if g == group]
    W = {u: lay.cover[u].reshape(-1).to(torch.complex128) for u in users}
    M = sum(W[u][:, None] * r_p * W[u][None, :] for u in users)
    mu, Q = torch.linalg.eigh(M)
    D = {u: torch.einsum("pi,pq,qi->i", (W[u][:, None] * Q).conj(), G, W[u][:, None] * Q).real for u in users}
    return A, C, mu.clamp_min(0.0), Q, D


def dmrs_genie(config: SystemConfig, z: torch.Tensor, nv: torch.Tensor, lam: torch.Tensor, ds: float, fd: float) -> torch.Tensor:
    """Returns the genie estimate [n, K, U, F, T] complex128 in the rotated domain.

    ``z`` [n, K, U, N_f, N_t] complex128: ``V^T`` applied to the raw group observations; ``nv`` [n];
    ``lam`` [K]; one condition ``(ds, fd)`` for the n frames.
    """
    lay = dmrs_layout(config)
    n, K, U, Nf, Nt = z.shape
    F, T = config.ofdm.grid_shape
    dev = z.device
    s = (nv[:, None] / lam[None, :]).reshape(-1, 1)  # [n K, 1]
    out = torch.empty(n, K, U, F, T, dtype=torch.complex128, device=dev)
    for u, g in enumerate(lay.user_group):
        A, C, mu, Q, _ = group_eig(config, g, ds, fd)
        A, C, mu, Q = [a.to(dev) for a in A], [c.to(dev) for c in C], mu.to(dev), Q.to(dev)
        w = (z[:, :, u].reshape(-1, Nf * Nt) @ Q.conj()) / (mu + s)  # Q^H z / (mu + s), as rows
        v = ((w @ Q.T) * lay.cover[u].reshape(-1).to(dev)).reshape(-1, Nf, Nt)  # W_u (M + s I)^-1 z
        out[:, :, u] = sum(a @ v @ c.T for a, c in zip(A, C)).reshape(n, K, F, T)
    return out


def dmrs_user_mse(config: SystemConfig, u: int, ds: float, fd: float, s: torch.Tensor) -> torch.Tensor:
    """Returns user u's 2-D genie MSE per RE at noise ``s`` [...] (``1 - sum_i D_u,i / (mu_i + s) / (F T)``), float64."""
    *_, mu, _, D = group_eig(config, dmrs_layout(config).user_group[u], ds, fd)
    F, T = config.ofdm.grid_shape
    return 1.0 - (D[u] / (mu + s[..., None])).sum(-1) / (F * T)
