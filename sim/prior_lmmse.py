"""LMMSE estimators that know the prior, not the conditions: they read the pilots alone.

- :class:`EstimatedLMMSE` (``lmmse-estimated``): the joint 2-D LMMSE at each frame's
  conditions estimated from its pilots (:func:`~wavefront.sim.conditions.estimate_conditions`),
  the practical receiver.
- :class:`BayesMMSE` (``mmse-bayes``): ``E[h | p] = sum_k w_k(p) W_k p``, the posterior-weighted
  bank of LMMSE filters over the prior's grid. The channel given the prior is a Gaussian
  mixture, and this is its MMSE estimator: no estimator that knows only the prior does better
  on average over the prior (at a given point another may: the README shows where).
  For ``profile: sparse`` the channel given its conditions is not Gaussian (a mixture over each
  frame's random paths): both then use its closed-form second-order statistics
  (:mod:`~wavefront.sim.sparse`) and are second-order yardsticks, not the MMSE.
- :class:`LMMSEBank` (``lmmse-bank``): the same on ``K`` clusters of the ``(ds, fd)`` grid (16
  by default, fitted against ``mmse-bayes``), each with its mean covariance: within a few
  hundredths of a dB of ``mmse-bayes``'s Bayes risk on the paper prior at several times its speed.

The hypothesis bank, the likelihood and its fast paths are :mod:`wavefront.sim.conditions`'s.
"""
from __future__ import annotations

import math
import threading
from functools import lru_cache

import torch

from wavefront.errors import ConfigError
from wavefront.sim.conditions import (
    _BUDGET_CPU, _LOG2_E, _VAR_REL, ConditionPrior, _Bank, _bank, _build_bank, _check_pilots, _chunks, _freq_directions, _log_likelihood,
    _ml_grid_index, estimate_conditions, separable_blocks,
)
from wavefront.sim.config import SystemConfig, profile_label
from wavefront.sim.estimators import Estimator
from wavefront.sim.lmmse import GenieLMMSE, _apply, _solve, _Stats


class EstimatedLMMSE(Estimator):
    """Joint 2-D LMMSE at each frame's conditions estimated from its pilots (``lmmse-estimated``).

    ``estimate(pilots [B, P_f, P_t] or [B, P] c64, meta) -> [B, F, T] c64``; ``meta`` is not read.
    The conditions come from :func:`estimate_conditions` (ML on ``prior``); frames with equal
    estimates share one filter.
    """

    name = "lmmse-estimated"
    needs = "none"  # it estimates the conditions itself

    def __init__(self, config: SystemConfig, prior: ConditionPrior | None = None, method: str = "ml"):
        self.config, self.method = config, method
        self.prior = prior or ConditionPrior.from_config(config)
        # on the time-domain path the SNR it estimates from the pilots (scored without an ICI model) holds the ICI
        # already: its filter does not add the ICI power again (at 30 dB, 1000 Hz, dense pilots: 0.15 dB better)
        self.genie = GenieLMMSE(config, ici_in_noise=False)
        label = "ML" if method == "ml" else method
        self.given = (f"{profile_label(config.channel.profile)} shape; delay spread, Doppler and SNR estimated "
                      f"from pilots ({label} over {self.prior.describe()})"
                      + ("; its SNR estimate holds the ICI as noise" if config.channel.time_domain else ""))

    def estimate(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        """Returns H_hat [B, F, T] complex64 from LS pilots [B, P_f, P_t] or [B, P]."""
        return self.estimate_with_error_variance(pilots, meta, variance=False)[0]

    def estimate_with_error_variance(self, pilots: torch.Tensor, meta: dict | None = None, variance: bool = True):
        """Returns ``(H_hat [B, F, T] c64, err_var [B] f64 or None)``: the error variance its model states, the
        genie's closed-form MSE per RE (:meth:`GenieLMMSE.stated_mse`) at the frame's estimated conditions, as if
        they were the truth (``--error-variance model`` for ``lmmse-estimated-per-pair``)."""
        if self.method != "ml" or self.config.channel.time_domain or self.genie.dense:
            cond = estimate_conditions(pilots, self.config, self.prior, self.method)
            h = self.genie.estimate(pilots, cond)
            return h, (self.genie.stated_mse(cond, h.shape[0]) if variance else None)
        p = _check_pilots(pilots, self.config)
        bank = _bank(self.config, self.prior, p.device)
        d, f, s = _ml_grid_index(bank, p, self.prior.shape)
        nf = bank.t_hp[0].shape[0]
        if bank.fast is not None:  # one Kronecker term: the grid point's filter in its cached eigenbasis, no solve
            h = _eigen_lmmse(bank, p, d, f, s, _eigen_responses(self.config, self.prior, p.device))
            return h, (_hypothesis_mse(self.config, self.prior, p.device)[d * nf + f, s] if variance else None)
        # the genie's own solve and apply, with the covariance blocks of the grid point each frame
        # landed on taken from a cache instead of evaluated per frame (most of the genie's time)
        (du, fu, su), idx = torch.unique(torch.stack([d, f, s]).cpu(), dim=1, return_inverse=True)
        f_hp, t_hp, f_pp, t_pp = _genie_blocks(self.config, self.prior)
        stats = _Stats([a[du] for a in f_hp], [b[fu] for b in t_hp], [a[du] for a in f_pp], [b[fu] for b in t_pp],
                       self.config.ofdm.pilot_layout.is_kronecker)
        snr = torch.tensor(self.prior.snrs_db, dtype=torch.float64)[su].float()
        nv = self.config.noise_variance(snr).float()  # as estimate_conditions hands it to the genie
        h = _apply(stats, _solve(stats, nv.to(torch.float64)), pilots, idx.to(p.device))
        if not variance:
            return h, None
        # the genie's MSE at its grid hypothesis from the bank (GenieLMMSE.stated_mse without a [P, P] solve)
        k = (du * nf + fu).to(p.device)
        mse = _hypothesis_mse(self.config, self.prior, p.device)[k, su.to(p.device)]
        return h, mse[idx.to(p.device)]


@lru_cache(maxsize=8)
def _eigen_responses(config: SystemConfig, prior: ConditionPrior, device: torch.device):
    """Returns ``(G [N_ds, F, P_f], Ht [N_fd, P_t, T])`` complex128 of a one-term Kronecker bank (cached).

    ``G[d] = A_d U_f,d`` and ``Ht[f] = (C_f U_t,f)^T``: the frequency and time blocks of ``R_hp``
    times the pilot covariance's eigenvectors, so that the LMMSE filter of hypothesis ``(d, f, s)``
    is ``W p = G[d] (Lambda_s * (U_f,d^H P conj(U_t,f))) Ht[f]`` (:func:`_eigen_lmmse`). Memory:
    ``16 (N_ds F P_f + N_fd P_t T)`` bytes (paper prior, TDL-A, 12 x 2: 0.28 MB).
    """
    bank = _bank(config, prior, device)
    fast = bank.fast
    Pf = fast.uf_h64.shape[1]
    uf = fast.uf_h64.view(-1, Pf, Pf).mH  # [N_ds, P_f, P_f]: U_f,d
    return bank.f_hp[0] @ uf, (bank.t_hp[0] @ fast.ut_conj64.conj()).mT.contiguous()


def _eigen_lmmse(bank: _Bank, p: torch.Tensor, d: torch.Tensor, f: torch.Tensor, s: torch.Tensor,
                 responses) -> torch.Tensor:
    """Returns the LMMSE estimate [B, F, T] complex64 of pilots ``p`` [B, P] c128 at grid hypotheses ``(d, f, s)`` [B].

    A one-term Kronecker bank (:class:`~wavefront.sim.conditions._Fast`): ``R_p + sigma^2 I =
    (U_f (x) U_t) diag(a (x) b + sigma^2) (U_f (x) U_t)^H``, so the filter ``R_hp (R_p + sigma^2 I)^-1``
    needs no solve: project (``U_f,d^H P conj(U_t,f)``), divide by the eigenvalues, and map
    back through ``G[d]`` and ``Ht[f]`` (:func:`_eigen_responses`). All in complex128, as the
    genie's solve; the two differ by the solve's rounding (about 1e-12 relative at 25 dB), far
    below the complex64 output's. The frequency product runs once per delay spread on its frames.
    """
    G, Ht = responses
    fast = bank.fast
    B, P = p.shape
    Pf = fast.uf_h64.shape[1]
    Pt = P // Pf
    nd, nf = G.shape[0], Ht.shape[0]
    k = d * nf + f
    x = fast.uf_h64.view(nd, Pf, Pf)[d] @ p.view(B, Pf, Pt)  # U_f,d^H P: [B, P_f, P_t]
    c = (x @ fast.ut_conj64[f]) * bank.inv_eig[k, s].view(B, Pt, Pf).mT  # eigen-coordinates over lam + sigma^2
    order = torch.argsort(d, stable=True)
    counts = torch.bincount(d, minlength=nd).tolist()
    c = c[order].transpose(0, 1).reshape(Pf, B * Pt)  # [P_f, (frame, j)] grouped by delay spread
    F = G.shape[1]
    gc, at = torch.empty(F, B * Pt, dtype=c.dtype, device=p.device), 0
    for dk, n in enumerate(counts):
        if n:
            torch.mm(G[dk], c[:, at * Pt:(at + n) * Pt], out=gc[:, at * Pt:(at + n) * Pt])
            at += n
    h = torch.bmm(gc.view(F, B, Pt).transpose(0, 1), Ht[f[order]])  # [B, F, T], sorted by delay spread
    out = torch.empty(B, F, h.shape[-1], dtype=torch.complex64, device=p.device)
    return out.index_copy_(0, order, h.to(torch.complex64))


@lru_cache(maxsize=8)
def _genie_blocks(config: SystemConfig, prior: ConditionPrior):
    """Returns :func:`separable_blocks` at the grid's values rounded to float32, on the CPU (cached).

    The genie receives conditions as float32 ``meta``; with the blocks at the same values,
    ``lmmse-estimated`` gives the genie's output at the ML conditions bit for bit. Memory per
    entry: ``16 (N_ds F P_f + N_fd T P_t + N_ds P_f^2 + N_fd P_t^2)`` bytes per covariance term
    (paper prior, TDL-A, 12 x 2: 0.3 MB).
    """
    rounded = ConditionPrior(tuple(float(torch.tensor(v, dtype=torch.float32)) for v in prior.delay_spreads_s),
                             tuple(float(torch.tensor(v, dtype=torch.float32)) for v in prior.dopplers_hz),
                             prior.snrs_db)
    return separable_blocks(config, rounded)


class BayesMMSE(Estimator):
    """The MMSE estimator given the prior: ``E[h | p] = sum_k w_k(p) W_k p`` (``mmse-bayes``).

    ``w_k(p)`` is the posterior of hypothesis ``k = (ds, fd, sigma^2)`` under the uniform
    ``prior``, ``W_k`` its joint 2-D LMMSE filter. ``estimate(pilots [B, P_f, P_t] c64, meta)
    -> [B, F, T] c64``; ``meta`` is not read. Computed in the eigenbasis of each ``R_p``:
    ``sum_s w_ks W_ks p = R_hp,k U_k (c_k * U_k^H p)`` with ``c_k = sum_s w_ks / (lam_k + sigma_s^2)``,
    chunked over frames so memory stays bounded.
    """

    name = "mmse-bayes"
    needs = "none"  # it weighs the prior's hypotheses itself

    def __init__(self, config: SystemConfig, prior: ConditionPrior | None = None):
        self.config = config
        self.prior = prior or ConditionPrior.from_config(config)
        self.given = (f"{profile_label(config.channel.profile)} shape; uniform prior over {self.prior.describe()}; "
                      "posterior-weighted LMMSE bank" + ("; its SNR hypotheses hold the ICI as noise"
                                                          if config.channel.time_domain else ""))

    def estimate(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        """Returns H_hat [B, F, T] complex64 from LS pilots [B, P_f, P_t] or [B, P]."""
        p = _check_pilots(pilots, self.config)
        return _posterior_mean(self.bank(p.device), p, self.config)

    def bank(self, device: torch.device) -> _Bank:
        """Returns the hypotheses' :class:`_Bank` on ``device`` (cached): the hook a second-order model of the pilots
        overrides (:class:`~wavefront.sim.impaired_lmmse.ImpairedBayesMMSE`)."""
        return _bank(self.config, self.prior, device)

    def estimate_with_error_variance(self, pilots: torch.Tensor, meta: dict | None = None, variance: bool = True):
        """Returns ``(H_hat [B, F, T] c64, err_var [B] f64 or None)``: the error variance the model states is the
        mixture's posterior variance per RE, ``sum_k w_k (mse_k + |h_k - h_bar|^2) / (F T)`` (``mse_k`` the genie's
        closed form at hypothesis k, ``h_k`` its estimate, ``h_bar`` this estimate): under the prior, the expected
        MSE given the pilots (``--error-variance model`` for ``mmse-bayes-per-pair``). The spread term skips
        hypotheses of weight below 1e-9 (each adds at most ``w |h_k - h_bar|^2``). None on the time-domain path
        (ICI, impairments), whose label power the bank does not state."""
        h = self.estimate(pilots, meta)
        if not variance or self.config.channel.time_domain:
            return h, None
        p = _check_pilots(pilots, self.config)
        return h, _posterior_variance(self.bank(p.device), _hypothesis_mse(self.config, self.prior, p.device),
                                      p, h, self.config)


def _gram_terms(bank: _Bank) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Returns ``(A_j^H A_j' [N_ds, ., .], C_j^H C_j' [N_fd, ., .])`` c128 for every pair of ``R_hp``'s terms
    (``A_j`` = ``f_hp[j]``, ``C_j`` = ``t_hp[j]``): ``R_ph R_hp`` is ``sum A^H A' (x) C^H C'`` on a Kronecker layout
    and ``sum (A^H A') * (C^H C')`` on a scattered one."""
    return [(a.mH @ a2, c.mH @ c2) for a, c in zip(bank.f_hp, bank.t_hp) for a2, c2 in zip(bank.f_hp, bank.t_hp)]


def _grid_energies(terms: list, d: torch.Tensor, f: torch.Tensor, z: torch.Tensor, pilot_shape) -> torch.Tensor:
    """Returns ``|R_hp,(d_n, f_n) z_n|^2`` [n] f64, summed over the grid, for pilot-domain vectors ``z`` [n, P] c128 at
    conditions ``(d, f)`` [n] (``terms`` of :func:`_gram_terms`; ``pilot_shape`` ``(P_f, P_t)`` on a Kronecker
    layout, else None): ``sum conj(Z) * (G_f Z G_t^T)`` per term, without forming the grid."""
    e = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    # one condition's Gram factors at a time (a [P, P] gathered per row would take P^2 per hypothesis)
    keys = d if pilot_shape is not None else d * (int(f.max()) + 1 if len(f) else 1) + f
    for key in torch.unique(keys).tolist():
        rows = torch.nonzero(keys == key).squeeze(1)
        dk, zr = int(d[rows[0]]), z[rows]
        for ga, gc in terms:
            if pilot_shape is not None:
                Z = zr.view(-1, *pilot_shape)
                gz = _left(ga[dk], Z)  # one [P_f, P_f] @ [P_f, n P_t] product, not a broadcast of it per row
                e[rows] += (Z.conj() * (gz @ gc[f[rows]].mT)).real.sum((1, 2))
            else:
                e[rows] += torch.einsum("ni,ij,nj->n", zr.conj(), ga[dk] * gc[int(f[rows[0]])], zr).real
    return e


def _left(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Returns ``a @ x[n]`` [n, m, q] for ``a`` [m, p] and ``x`` [n, p, q], as one ``[m, p] @ [p, n q]`` product."""
    n, p, q = x.shape
    return (a @ x.transpose(0, 1).reshape(p, n * q)).view(a.shape[0], n, q).transpose(0, 1)


def _eigen_to_pilots(bank: _Bank, k: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Returns ``U_k x`` [n, P] c128 for eigen-coordinates ``x`` [n, P] c128 of conditions ``k`` [n]: on a one-term
    Kronecker bank by its factors, ``U_f,d X^T``-wise (``P_f^2 P_t`` a row, grouped by delay spread), else by each
    condition's ``[P, P]`` eigenvectors (never gathered per row)."""
    out = torch.empty_like(x)
    nf = bank.t_hp[0].shape[0]
    if bank.fast is not None:
        uf_h, ut_c = bank.fast.uf_h64, bank.fast.ut_conj64  # [N_ds P_f, P_f] stacked U_f,d^H; [N_fd, P_t, P_t] conj(U_t,f)
        Pf = uf_h.shape[1]
        Pt = x.shape[1] // Pf
        d, f = k // nf, k % nf
        for dk in torch.unique(d).tolist():
            rows = torch.nonzero(d == dk).squeeze(1)
            xm = x[rows].view(-1, Pt, Pf)  # eigen-index p = (j, i): [n, P_t, P_f]
            w = ut_c[f[rows]].conj() @ xm  # sum_j U_t,f[b, j] x[j, i]: [n, P_t (b), P_f (i)]
            out[rows] = _left(uf_h[dk * Pf:(dk + 1) * Pf].mH, w.mT).reshape(-1, Pf * Pt)  # [n, P_f (a), P_t (b)]
        return out
    for kk in torch.unique(k).tolist():
        rows = torch.nonzero(k == kk).squeeze(1)
        out[rows] = x[rows] @ bank.evec[kk].T
    return out


def _column_energies(config: SystemConfig, prior: ConditionPrior, device: torch.device) -> torch.Tensor:
    """Returns ``D`` [K, P] f64: ``|R_hp,k u_k,p|^2`` for each eigenvector of each condition's ``R_p``, so that the genie
    at hypothesis ``(k, s)`` has MSE per RE ``1 - sum_p D_kp / (lam_kp + sigma_s^2) / (F T)`` (:func:`_hypothesis_mse`)."""
    bank = _bank(config, prior, device)
    K, P = bank.inv_eig.shape[0], bank.inv_eig.shape[2]
    nf = bank.t_hp[0].shape[0]
    terms = _gram_terms(bank)
    shape = config.ofdm.pilot_shape if config.ofdm.pilot_layout.is_kronecker else None
    out = torch.empty(K, P, dtype=torch.float64, device=device)
    step = max(1, (1 << 20) // (P * P))
    for a in range(0, K, step):
        k = torch.arange(a, min(K, a + step), device=device).repeat_interleave(P)
        z = bank.evec[a:a + step].transpose(1, 2).reshape(-1, P)  # rows: the eigenvectors u_k,p
        out[a:a + step] = _grid_energies(terms, k // nf, k % nf, z, shape).view(-1, P)
    return out


@lru_cache(maxsize=8)
def _hypothesis_mse(config: SystemConfig, prior: ConditionPrior, device: torch.device) -> torch.Tensor:
    """Returns the genie's MSE per RE at every hypothesis ``(k, s)`` of the prior's bank, [K, S] f64:
    ``1 - sum_p D_kp / (lam_kp + sigma_s^2) / (F T)`` (``D`` of :func:`_column_energies`), the closed form of
    :meth:`GenieLMMSE.stated_mse` without a ``[P, P]`` solve. Cached like :func:`_bank` (``8 K S`` bytes)."""
    F, T = config.ofdm.grid_shape
    inv = _bank(config, prior, device).inv_eig
    return 1.0 - torch.einsum("kp,ksp->ks", _column_energies(config, prior, device), inv) / (F * T)


def _posterior_variance(bank: _Bank, mse: torch.Tensor, p: torch.Tensor, h_bar: torch.Tensor,
                        config: SystemConfig) -> torch.Tensor:
    """Returns ``sum_(k,s) w_ks (mse_ks + |h_ks - h_bar|^2) / (F T)`` [B] f64 for pilots [B, P] c128 and the posterior
    mean ``h_bar`` [B, F, T]; ``mse`` [K, S] of :func:`_hypothesis_mse`. ``h_ks = R_hp,k U_k (c_ks * U_k^H p)``,
    ``c_ks = 1 / (lam_k + sigma_s^2)``; the spread is ``sum w |h_ks|^2 - |h_bar|^2`` over the hypotheses of weight
    at least ``_VAR_REL``."""
    (F, T), nf = config.ofdm.grid_shape, bank.t_hp[0].shape[0]
    K, S, P = bank.inv_eig.shape
    terms = _gram_terms(bank)
    shape = config.ofdm.pilot_shape if config.ofdm.pilot_layout.is_kronecker else None
    out = torch.empty(p.shape[0], dtype=torch.float64, device=p.device)
    for sl in _chunks(bank, p.shape[0], K * (S + 2 * P)):
        ll, y = _log_likelihood(bank, p[sl])
        w = torch.softmax(ll.flatten(1), 1).view(ll.shape)  # [b, K, S]
        v = torch.einsum("bks,ks->b", w, mse)
        for i in range(w.shape[0]):
            k, s = torch.nonzero(w[i] >= _VAR_REL, as_tuple=True)
            z = _eigen_to_pilots(bank, k, bank.inv_eig[k, s] * y[i, k])  # rows U_k (c_ks * y_k) [n, P]
            spread = (w[i, k, s] * _grid_energies(terms, k // nf, k % nf, z, shape)).sum()
            spread = spread - h_bar[sl][i].to(torch.complex128).abs().square().sum()
            v[i] += spread.clamp_min(0.0) / (F * T)
        out[sl] = v
    return out


def _posterior_mean(bank: _Bank, p: torch.Tensor, config: SystemConfig) -> torch.Tensor:
    """Returns ``sum_(k,s) w_ks(p) W_ks p`` [B, F, T] complex64 over ``bank``'s hypotheses, for pilots [B, P] c128."""
    nd, nf, ns = bank.f_hp[0].shape[0], bank.t_hp[0].shape[0], bank.logdet.shape[1]
    layout = config.ofdm.pilot_layout
    kron = layout.is_kronecker
    (F, T), (Pf, Pt) = config.ofdm.grid_shape, (layout.pilot_shape if kron else (layout.num_pilots, 1))
    K, P = bank.evec.shape[0], p.shape[1]
    out = torch.empty(p.shape[0], F, T, dtype=torch.complex64, device=p.device)
    per_frame = K * (ns + 6 * P) + 2 * nd * Pf * T + 2 * F * T + (0 if kron else 2 * nd * P * T)
    budget = _BUDGET_CPU
    if bank.fast is not None:
        # single precision (float64 elements): y and c y [K, 2P], e [K, P], w [K, S], c [K, P + 1] f32;
        # x [N_ds, P] c128; the output [F, T] c64. Half the usual budget (about 8 MB a chunk, 34 frames
        # on the paper prior): under a loaded machine's shared cache such chunks ran 15% faster than
        # 100-frame ones, and no slower on a quiet one
        per_frame, budget = K * (7 * P + ns + 1) // 2 + 3 * nd * Pf * Pt + F * T, _BUDGET_CPU // 2
    fast = bank.fast
    for sl in _chunks(bank, p.shape[0], per_frame, budget):
        if fast is not None:
            _separable(bank, p[sl], out[sl])
            continue
        ll, y = _log_likelihood(bank, p[sl])
        w = torch.softmax(ll.flatten(1), 1).reshape(ll.shape)
        c = torch.einsum("bks,ksp->bkp", w, bank.inv_eig)
        z = torch.einsum("kqp,bkp->bkq", bank.evec, c * y)
        h = 0
        for A, C in zip(bank.f_hp, bank.t_hp):
            if kron:  # the Doppler sum first: N_fd time blocks
                x = torch.einsum("bdfpq,ftq->bdpt", z.reshape(-1, nd, nf, Pf, Pt), C)
                h = h + torch.einsum("dkp,bdpt->bkt", A, x)
            else:  # scattered: pilot i sits at (f_i, t_i); sum over i last
                x = torch.einsum("bdfi,fti->bdti", z.reshape(-1, nd, nf, P), C)
                h = h + torch.einsum("dki,bdti->bkt", A, x)
        out[sl] = h
    return out


class _Workspace(threading.local):
    """The fast path's float32 temporaries, kept per thread and reused from chunk to chunk and call to call.

    Freshly allocated, each chunk's few MB of temporaries came from the operating system page by
    page (thousands of page faults a call, as much kernel time as arithmetic on a loaded machine);
    reused, they cost nothing after the first call. One set per thread, grown to the largest
    chunk seen: paper prior, 34-frame chunks, about 6 MB (``nbytes``).
    """

    def __init__(self):
        self.buffers: dict = {}

    def take(self, role: str, shape: tuple, device: torch.device) -> torch.Tensor:
        """Returns an uninitialised float32 tensor of ``shape`` on ``device`` in this thread's ``role`` buffer."""
        n = math.prod(shape)
        buf = self.buffers.get(role)
        if buf is None or buf.numel() < n or buf.device != device:
            buf = self.buffers[role] = torch.empty(n, dtype=torch.float32, device=device)
        return buf[:n].view(shape)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers.values())


_WORKSPACE = _Workspace()


def _separable(bank: _Bank, p: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Writes ``E[h | p]`` [b, F, T] complex64 into ``out`` for pilots [b, P] c128 on a one-term Kronecker bank.

    Single precision from the projection on, in the eigenbasis, where nothing is inverted:
    ``y = U^H p`` (its frequency factor in float64, :func:`_freq_directions`), the energies
    ``|y|^2``, ``-log2 L = log2(e) (logdet + inv @ |y|^2)`` for every hypothesis (one batched
    product), the unnormalised posterior ``w = 2^(min - (-log2 L))``, ``c = sum_s w_s / (lam +
    sigma_s^2)`` and the mass ``sum w`` (one product), then the filters factor by factor:
    ``sum_d G_d sum_f (c * y)_(d,f) H_f^T`` with ``G_d = A_d U_f,d`` (negligible directions
    dropped, see :class:`_Fast`) and ``H_f = C_f U_t,f``. The weights' log-likelihoods carry
    float32 rounding of about ``1e-7 (q + |logdet|)`` (``q = sum_p e_p / (lam_p + sigma^2)``),
    a few 1e-5 nats at the likely hypotheses: relative weight errors of that order, far below
    0.01 dB of MSE (the tests hold the output to 1e-5 of the MSE of the float64 bank). The
    large temporaries live in :data:`_WORKSPACE`.
    """
    fast, b, dev = bank.fast, p.shape[0], p.device
    take = _WORKSPACE.take
    x = _freq_directions(fast, p)  # [N_ds, P_f, P_t, b] c128
    nd, Pf, Pt = x.shape[:3]
    (K, S), P = bank.logdet.shape, Pf * Pt
    (rt, nfPt), r, R = fast.h_t.shape, fast.gam.shape[0], fast.keep.shape[0]
    # planar (real, imaginary) arithmetic from here on: real products with the blocks
    # [[Re, -Im], [Im, Re]], and the real weights c scale both planes without a complex copy
    xt = x.transpose(1, 2).reshape(nd, Pt, Pf * b)
    xc = take("xc", (nd, 2 * Pt, Pf * b), dev)
    xc[:, :Pt], xc[:, Pt:] = xt.real, xt.imag
    y = torch.matmul(fast.ut_c2, xc, out=take("y", (nd, 2 * nfPt, Pf * b), dev))  # [d, (re/im, f, j), (i, b)]
    planes = y.view(nd, 2, -1)
    e = torch.mul(planes[:, 0], planes[:, 0], out=take("e", (nd, nfPt * Pf * b), dev))
    e = e.addcmul_(planes[:, 1], planes[:, 1]).view(K, P, b)  # |y|^2
    nll = torch.baddbmm(fast.ld_bits, fast.inv_bits, e, out=take("nll", (K, S, b), dev))  # -log2 L [K, S, b]
    # unnormalised posterior, max 1; floored at 2^-115 (about e^-80, above float32's smallest
    # normal number): subnormal weights slow every later product many times over, and the
    # floor adds at most K S 2^-115 < 1e-30 of mass. The maximum over the hypothesis axis
    # first: a reduction over the middle axis runs scalar unless b is a multiple of 16
    w = torch.sub(nll.amin(0).amin(0), nll, out=nll).clamp_min_(-115.0).exp2_()
    # c [K, P + 1, b]: sum_s w_s / (lam + sigma_s^2), and in row P sum_s w_s
    c = torch.bmm(bank.inv32_t, w, out=take("c", (K, P + 1, b), dev))
    mass = c[:, P].sum(0)
    # c y in place of y: c [K, P, b] = [d, f, (j, (i, b))]
    y.view(nd, 2, -1, Pt, Pf * b).mul_(c[:, :P].reshape(nd, 1, -1, Pt, Pf * b))
    # the Doppler sum: [d, (re/im, t'), (i, b)]
    xd = torch.matmul(fast.h_t2, y, out=take("xd", (nd, 2 * rt, Pf * b), dev))
    xp = take("xp", (2, nd, Pf, rt, b), dev)
    xp.copy_(xd.view(nd, 2, rt, Pf, b).permute(1, 0, 3, 2, 4))
    xk = torch.index_select(xp.view(2, nd * Pf, rt * b), 1, fast.keep, out=take("xk", (2, R, rt * b), dev))
    # the delay-spread sum over the kept directions, through the rank-r basis: [r, r_t, b], normalised
    # by the posterior's mass while it is small; then the time basis, laid out [b, r, T] so that q gives [b, F, T]
    g = torch.matmul(fast.gam2, xk.view(2 * R, rt * b), out=take("g", (2 * r, rt * b), dev)).view(2, r, rt, b)
    g = fast.q_t @ torch.complex(g[0], g[1]).div_(mass)  # [r, T, b]
    return torch.bmm(fast.q.expand(b, -1, -1), g.permute(2, 0, 1).contiguous(), out=out)


def _cluster_bank(config: SystemConfig, prior: ConditionPrior, ds_groups: tuple, fd_groups: tuple,
                  device: torch.device, blocks=None) -> _Bank:
    """Returns a :class:`_Bank` over clusters of the prior's ``(ds, fd)`` grid, each with its moment-matched covariance.

    ``ds_groups`` / ``fd_groups``: tuples of ``(start, stop)`` index ranges that tile each axis.
    Cluster ``(g, h)`` is the product set ``ds[g] x fd[h]``; its covariance, the mean of the
    members' (the Gaussian closest to their mixture), is ``sum_j mean_g F_j (x) mean_h T_j``,
    still separable. Its prior mass (the member count over ``N_ds N_fd``) enters ``logdet``
    as ``-log mass``, so the screen scores ``-log L - log prior``. The noise levels are the
    prior's own ``S``.
    """
    f_hp, t_hp, f_pp, t_pp = blocks or separable_blocks(config, prior)
    mean = lambda blocks, groups: [torch.stack([x[a:b].mean(0) for a, b in groups]) for x in blocks]  # noqa: E731
    snr = torch.tensor(prior.snrs_db, dtype=torch.float64)
    nv = config.noise_variance(snr).to(torch.float64)
    ds = torch.tensor(prior.delay_spreads_s, dtype=torch.float64)
    fd = torch.tensor(prior.dopplers_hz, dtype=torch.float64)
    bank = _build_bank(mean(f_hp, ds_groups), mean(t_hp, fd_groups), mean(f_pp, ds_groups), mean(t_pp, fd_groups),
                       config.ofdm.pilot_layout.is_kronecker, nv, torch.stack([ds[a:b].mean() for a, b in ds_groups]),
                       torch.stack([fd[a:b].mean() for a, b in fd_groups]), snr, torch.device("cpu"))
    nd, nf = prior.shape[:2]
    mass = torch.tensor([(b1 - a1) * (b2 - a2) / (nd * nf) for a1, b1 in ds_groups for a2, b2 in fd_groups],
                        dtype=torch.float64)
    bank.logdet = bank.logdet - torch.log(mass)[:, None]
    bank.screen32[..., -1] = bank.logdet.float()
    bank.logdet_max = float(bank.logdet.abs().max())
    if bank.fast is not None:  # the fast path's own copies of logdet (single precision, and in bits for exp2)
        bank.fast.ld32 = bank.logdet[..., None].float()
        bank.fast.ld_bits = (bank.logdet[..., None] * _LOG2_E).float()
    return _move(bank, device)


def _move(bank: _Bank, device: torch.device) -> _Bank:
    """Returns ``bank`` with every tensor on ``device``."""
    import dataclasses

    def mv(v):
        if torch.is_tensor(v):
            return v.to(device)
        if isinstance(v, list):
            return [mv(x) for x in v]
        if dataclasses.is_dataclass(v):
            return type(v)(**{f.name: mv(getattr(v, f.name)) for f in dataclasses.fields(v)})
        return v

    return mv(bank)


class LMMSEBank(Estimator):
    """A bank of ``K`` LMMSE filters weighted by a cheap posterior over them (``lmmse-bank``).

    The prior's ``(ds, fd)`` grid is tiled into ``K = n_ds x n_fd`` clusters (contiguous
    ranges of each axis, chosen by :func:`fit_bank_groups` to minimise the prior-averaged MSE);
    each cluster has one covariance, the mean of its members'. Given the pilots, the weight of
    cluster ``c`` at noise level ``s`` is its posterior under that Gaussian and the cluster's
    prior mass, and the estimate is ``sum_(c,s) w_cs W_cs p``: :class:`BayesMMSE`'s computation
    on ``K`` hypotheses instead of ``N_ds N_fd`` (paper prior: 16 instead of 240; the noise levels
    stay the prior's, since weighing them is cheap in each cluster's eigenbasis).

    ``estimate(pilots [B, P_f, P_t] or [B, P] c64, meta) -> [B, F, T] c64``; ``meta`` is not read.
    """

    name = "lmmse-bank"
    needs = "none"  # it reads only the pilots

    def __init__(self, config: SystemConfig, prior: ConditionPrior | None = None, filters: int = 16):
        if not (isinstance(filters, int) and filters >= 1):
            raise ConfigError("lmmse-bank.filters", filters, "must be a positive integer")
        self.config = config
        self.prior = prior or ConditionPrior.from_config(config)
        self.ds_groups, self.fd_groups = fit_bank_groups(config, self.prior, filters)
        k = len(self.ds_groups) * len(self.fd_groups)
        self.given = (f"{profile_label(config.channel.profile)} shape; uniform prior over {self.prior.describe()}; "
                      f"bank of {k} LMMSE filters ({len(self.ds_groups)} delay-spread x {len(self.fd_groups)} Doppler "
                      f"clusters) weighted by their posterior from the pilots")

    def estimate(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        """Returns H_hat [B, F, T] complex64 from LS pilots [B, P_f, P_t] or [B, P]."""
        p = _check_pilots(pilots, self.config)
        bank = _cluster_bank_cached(self.config, self.prior, self.ds_groups, self.fd_groups, p.device)
        return _posterior_mean(bank, p, self.config)


@lru_cache(maxsize=8)
def _cluster_bank_cached(config, prior, ds_groups, fd_groups, device) -> _Bank:
    """:func:`_cluster_bank`, cached by (config, prior, groups, device): ``memory_bytes`` each.

    Paper prior, K = 16: about 0.85 MB.
    """
    return _cluster_bank(config, prior, ds_groups, fd_groups, device)


# lmmse-bank's clusters are fitted on this many pilot vectors drawn from the prior's model, with a fixed seed
_FIT_FRAMES, _FIT_SEED = 256, 20261206


@lru_cache(maxsize=8)
def fit_bank_groups(config: SystemConfig, prior: ConditionPrior, filters: int = 16) -> tuple[tuple, tuple]:
    """Returns ``(ds_groups, fd_groups)``: contiguous ranges of each prior axis, at most ``filters`` clusters in all.

    Greedy splitting: starting from one cluster, each step cuts one range of either axis in
    two (Doppler cuts on every other grid point) wherever that lowers the objective most, until
    the next cut would exceed ``filters`` clusters or no cut helps. The objective is the bank's
    mean squared distance to ``mmse-bayes`` on :data:`_FIT_FRAMES` pilot vectors drawn from the
    prior's Gaussian model (a uniform grid hypothesis, then ``p ~ CN(0, R_p + sigma^2 I)``) with the
    fixed seed :data:`_FIT_SEED`. For frames from that model ``E|h - h_bank|^2 = E|h - h_bayes|^2
    + E|h_bayes - h_bank|^2`` (``h_bayes = E[h | p]``), so this is the bank's excess Bayes risk,
    without drawing a channel. Deterministic, from the config and prior alone; paper prior,
    TDL-A, 12 x 2, 16 filters: about a second on one thread, once per (config, prior, filters).
    """
    nd, nf = prior.shape[:2]
    full = _bank(config, prior, torch.device("cpu"))
    g = torch.Generator().manual_seed(_FIT_SEED)
    K, S, P = full.inv_eig.shape
    k = torch.randint(K, (_FIT_FRAMES,), generator=g)
    s = torch.randint(S, (_FIT_FRAMES,), generator=g)
    z = torch.randn(_FIT_FRAMES, P, dtype=torch.complex128, generator=g)
    p = (full.evec[k] @ (z / full.inv_eig[k, s].sqrt())[..., None]).squeeze(-1)  # [N, P] c128
    target = _posterior_mean(full, p, config)
    blocks = separable_blocks(config, prior)

    def excess(dg, fg) -> float:
        bank = _cluster_bank(config, prior, dg, fg, torch.device("cpu"), blocks)
        return float((_posterior_mean(bank, p, config) - target).abs().square().mean())

    dg, fg = ((0, nd),), ((0, nf),)
    best = excess(dg, fg)
    while True:
        cands = []
        for axis, groups, other in ((0, dg, len(fg)), (1, fg, len(dg))):
            if (len(groups) + 1) * other > filters:
                continue
            for gi, (a, b) in enumerate(groups):
                for cut in range(a + 1, b):
                    if axis == 1 and cut % 2:
                        continue
                    new = groups[:gi] + ((a, cut), (cut, b)) + groups[gi + 1:]
                    cands.append((new, fg) if axis == 0 else (dg, new))
        scored = [(excess(*c), c) for c in cands]
        if not scored or min(scored, key=lambda x: x[0])[0] >= best:
            return dg, fg
        best, (dg, fg) = min(scored, key=lambda x: x[0])
