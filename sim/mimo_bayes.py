"""The MIMO receivers that know the prior, not the conditions: ``lmmse-estimated`` and ``mmse-bayes`` over space.

Shapes as in :mod:`wavefront.sim.mimo`: LS pilots ``p`` [B, R, U, P_f', P_t] complex64 (Kronecker
pattern), estimates [B, R, U, F, T] complex64.

**Hypotheses.** A :class:`MimoPrior` is a uniform prior on the product grid delay spread x
Doppler x rho x SNR: the conditions' grid of :class:`~wavefront.sim.conditions.ConditionPrior`
(the config's channel ranges) and ``rhos``, the receive correlation's (the config's
``mimo.rx_correlation``: one point when it is fixed, ``low..high`` in steps of at most 0.1 when
it is a range). Delay spread, Doppler, SNR and rho are drawn per frame and shared by all its
users and antennas (:class:`~wavefront.sim.config.MimoConfig`), so one hypothesis explains every
user's pilots at once.

**Joint likelihood.** Given rho, ``R_rx = V diag(lambda) V^T``; the rotated pilots
``z_k = sum_r V[r, k] p_r`` of user u are independent across the eigen-index k, each
``CN(0, lambda_k R_p,u + sigma^2 I)`` (the users' pilots are orthogonal, so the users are
independent too). With one eigendecomposition ``R_p,u = Q diag(mu) Q^H`` per (user, delay spread,
Doppler), shared by every k and rho (``lambda_k R_p + sigma^2 I = lambda_k (R_p + sigma^2 / lambda_k I)``,
the genie's noise trick), and ``e_ki = |(Q^H z_k)_i|^2``:

    log L = sum_u sum_k sum_i [ -log(lambda_k mu_i + sigma^2) - e_ki / (lambda_k mu_i + sigma^2) ] - U R P log(pi).

``tests/sim/test_mimo_bayes.py`` holds it to the dense (R P) x (R P) Gaussian log-likelihood.

**Estimators.** :class:`MimoEstimatedLMMSE`: the ML hypothesis, then
:class:`~wavefront.sim.mimo.MimoGenieLMMSE` there. :class:`MimoBayesMMSE`: the posterior mean
``sum_(c, rho, s) w V_rho [R_hp,c Q_c diag(lambda_k / (lambda_k mu + sigma_s^2)) Q_c^H] V_rho^T p``; the
sums over the noise levels and rho are taken in the eigenbasis before ``R_hp,c Q_c`` (which depends
on neither) is applied, once per (user, condition). With R = U = 1 both are the SISO estimators
(``lmmse-estimated``, ``mmse-bayes``) on the same grid; a test holds them equal.

Speed (issue 25). The likelihood keeps, per hypothesis row, only the terms ``lambda_k mu_i`` above
1e-3 of the least noise level exactly and takes the others by a three-term series with a stated
error bound (:class:`_Grid`); with one Kronecker covariance term (TDL-A/B/C) the eigenbasis is
``uf_d (x) ut_f``, so the projection costs ``N_ds P_f^2 R`` instead of ``N_ds N_fd P^2 R`` and no
``[P, P]`` eigendecomposition is made. The ML hypothesis is re-decided in float64 among those the
bound cannot separate, so it is the float64 argmax; the posterior applies only hypotheses within
40 nats of the best, one condition at a time. At ``--preset mimo-chest`` on the sweep's prior
(12 x 20 x 75 hypotheses, 156 x 2 pilots a user) one frame took 5-14 s (plus 44 s to build the
grid) and takes 0.8-0.9 s (plus 4.4 s) on one idle thread, the same ML on every frame and the
same NMSE to 1e-5 dB (``scripts/bench_mimo_bayes.py``).

Caches: :func:`_user_bank`, per (user config, prior, device), 8 entries (``_UserBank.memory_bytes``:
mimo-chest's sweep prior 29 MB a user; without a single Kronecker term ``16 N_ds N_fd P^2`` bytes);
:func:`_grid`, per (config, prior, device), 4 entries (``_Grid.memory_bytes``: 129 MB at mimo-chest,
the users' banks included).

**Error variance** (``--error-variance model``): ``estimate_with_error_variance`` returns each frame's
stated MSE per RE with the estimate: ``lmmse-estimated`` the genie's closed form at its ML
hypothesis, ``mmse-bayes`` the mixture's posterior variance ``sum_k w_k (mse_k + |h_k - h_bar|^2)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from wavefront.errors import ConfigError
from wavefront.sim.conditions import _VAR_REL, ConditionPrior, _axis, separable_blocks
from wavefront.sim.config import SystemConfig, profile_label
from wavefront.sim.estimators import Estimator
from wavefront.sim.lmmse import combine_terms
from wavefront.sim.mimo import MimoGenieLMMSE, mimo_genie_mse, rx_eigen, user_configs

RHO_STEP = 0.1  # the rho grid's largest step when rho is unknown
_BUDGET = 1 << 19  # float64 elements of the per-chunk temporaries (about 4 MB: below the allocator's mmap threshold)
_SMALL = 1 << 16  # float64 elements of the noise-level sums' pieces (512 kB)


@dataclass(frozen=True)
class MimoPrior:
    """A uniform prior on ``conditions`` (delay spread x Doppler x SNR) x ``rhos`` (receive correlations in [0, 1))."""

    conditions: ConditionPrior
    rhos: tuple[float, ...]

    def __post_init__(self):
        if not self.rhos or not all(math.isfinite(r) and 0.0 <= r < 1.0 for r in self.rhos):
            raise ConfigError("prior.rhos", self.rhos, "must be a non-empty tuple of values in [0, 1)")

    @classmethod
    def from_config(cls, config: SystemConfig, rho_step: float = RHO_STEP, **steps) -> "MimoPrior":
        """Returns the grid over the config's channel ranges (:meth:`ConditionPrior.from_config`, ``steps``) and its
        ``mimo.rx_correlation`` (a fixed rho: one point; a range: ``low..high`` in steps of at most ``rho_step``)."""
        return cls(ConditionPrior.from_config(config, **steps),
                   _axis("rx_correlation", config.mimo.rho_range, "rho_step", rho_step, 0.0))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N_ds, N_fd, N_rho, N_snr)``."""
        nd, nf, ns = self.conditions.shape
        return nd, nf, len(self.rhos), ns

    def describe(self) -> str:
        """Returns the grid in words, e.g. ``25–300 ns x 50–1000 Hz (...), rho 0–0.9 (0.1 steps), SNR 0–20 dB (...)``."""
        r = self.rhos
        rho = f"rho {r[0]:g}" if len(r) == 1 else f"rho {r[0]:g}–{r[-1]:g} ({(r[-1] - r[0]) / (len(r) - 1):.3g} steps)"
        c = self.conditions
        snr = ConditionPrior(c.delay_spreads_s[:1], c.dopplers_hz[:1], c.snrs_db).describe().split(", SNR ", 1)[1]
        return f"{c.describe(snr=False)}, {rho}, SNR {snr}"


_WEAK_REL = 1e-3  # a term lambda_k mu_i <= 1e-3 sigma_min^2 enters the likelihood by its series (_Grid)
_DROP_NATS = 40.0  # the posterior drops hypotheses more than 40 nats below the best one (_Grid.posterior)


@dataclass
class _UserBank:
    """One user's pilot statistics over the conditions ``c = d N_fd + f``, complex128 on one device.

    ``mu`` [C, P] f64: the eigenvalues of ``R_p,c = Q_c diag(mu) Q_c^H`` (``mu >= 0``); ``D`` [C, P] f64:
    ``diag(Q_c^H R_ph R_hp Q_c)``, so the 2-D genie MSE at noise ``s`` is ``1 - sum_i D_i / (mu_i + s) / (F T)``.

    One Kronecker covariance term (TDL-A/B/C): ``Q_c = uf[d] (x) ut[f]`` (``uf`` [N_ds, P_f, P_f], ``ut``
    [N_fd, P_t, P_t]; eigen-index ``i P_t + j``) and ``gf`` [N_ds, F, P_f] ``= A_d uf_d``, ``gt`` [N_fd, T, P_t]
    ``= C_f ut_f`` (``A``, ``C`` the blocks of ``R_hp``), so hypothesis c's ``R_hp Q_c X = gf_d X gt_f^T`` for
    ``X`` [P_f, P_t]. Otherwise ``Q`` [C, P, P] and the blocks ``f_hp[j]`` [N_ds, F, P_f], ``t_hp[j]`` [N_fd, T, P_t].
    """

    mu: torch.Tensor
    D: torch.Tensor
    uf: torch.Tensor | None = None
    ut: torch.Tensor | None = None
    gf: torch.Tensor | None = None
    gt: torch.Tensor | None = None
    Q: torch.Tensor | None = None
    f_hp: list | None = None
    t_hp: list | None = None
    uf_h: torch.Tensor | None = None

    @property
    def kron(self) -> bool:
        return self.Q is None

    @property
    def memory_bytes(self) -> int:
        """Bytes held (mimo-chest's sweep prior, 12 x 20 conditions, 156 x 2 pilots: 29 MB a user, ``gf`` 19 MB of it)."""
        ts = [self.mu, self.D, self.uf, self.ut, self.gf, self.gt, self.Q, self.uf_h, *(self.f_hp or []), *(self.t_hp or [])]
        return sum(t.numel() * t.element_size() for t in ts if t is not None)


@lru_cache(maxsize=8)
def _user_bank(user: SystemConfig, prior: ConditionPrior, device: torch.device) -> _UserBank:
    """Returns :class:`_UserBank` for one user's SISO config (cached by user config, prior and device: 8 entries)."""
    f_hp, t_hp, f_pp, t_pp = separable_blocks(user, prior)
    nd, nf = f_pp[0].shape[0], t_pp[0].shape[0]
    dev = lambda x: x.to(device)  # noqa: E731
    if len(f_pp) == 1 and user.ofdm.pilot_layout.is_kronecker:  # R_p = F_d (x) T_f: two small eigendecompositions
        a, uf = torch.linalg.eigh(f_pp[0])
        b, ut = torch.linalg.eigh(t_pp[0])
        a, b = a.clamp_min(0.0), b.clamp_min(0.0)  # PSD; rounding leaves tiny negative eigenvalues
        P = a.shape[1] * b.shape[1]
        mu = (a[:, None, :, None] * b[None, :, None, :]).reshape(nd * nf, P)
        gf, gt = f_hp[0] @ uf, t_hp[0] @ ut
        df, dt = gf.abs().square().sum(1), gt.abs().square().sum(1)  # diag(gf^H gf) [N_ds, P_f], diag(gt^H gt)
        D = (df[:, None, :, None] * dt[None, :, None, :]).reshape(nd * nf, P)
        return _UserBank(dev(mu), dev(D), dev(uf), dev(ut), dev(gf), dev(gt), uf_h=dev(uf.mH.contiguous()))
    r_pp = combine_terms([x.repeat_interleave(nf, 0) for x in f_pp], [y.repeat(nd, 1, 1) for y in t_pp], True)
    mu, Q = torch.linalg.eigh(r_pp)
    terms = [(A.mH @ A2, C.mH @ C2) for A, C in zip(f_hp, t_hp) for A2, C2 in zip(f_hp, t_hp)]
    G = combine_terms([a.repeat_interleave(nf, 0) for a, _ in terms], [b.repeat(nd, 1, 1) for _, b in terms], True)
    D = torch.einsum("cpi,cpq,cqi->ci", Q.conj(), G, Q).real
    return _UserBank(dev(mu.clamp_min(0.0)), dev(D), Q=dev(Q), f_hp=[dev(a) for a in f_hp], t_hp=[dev(b) for b in t_hp])


def _rotations(rhos: tuple[float, ...], R: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(lambda [N_rho, R], V [N_rho, R, R])`` float64: ``R_rx(rho) = V diag(lambda) V^T`` per grid rho."""
    eig = [rx_eigen(float(r), R) for r in rhos]
    return torch.stack([e[0] for e in eig]).to(device), torch.stack([e[1] for e in eig]).to(device)


def _check_config(config: SystemConfig) -> None:
    """Raises ConfigError unless the users' pilots are the Kronecker pattern (DM-RS: the per-pair estimators)."""
    if config.mimo.pilots != "kronecker":
        raise ConfigError("mimo.pilots", config.mimo.pilots, "the joint MIMO prior estimators need the Kronecker pattern")


def _check(pilots: torch.Tensor, config: SystemConfig) -> torch.Tensor:
    """Returns the pilots as [B, R, U, P] complex128, or raises ConfigError naming the rule."""
    _check_config(config)
    m = config.mimo
    want = (m.num_rx_antennas, m.num_users, *user_configs(config)[0].ofdm.pilot_shape)
    if not pilots.is_complex() or pilots.dim() != 5 or tuple(pilots.shape[1:]) != want:
        raise ConfigError("pilots", f"{tuple(pilots.shape)} {pilots.dtype}", f"must be complex [B, {', '.join(map(str, want))}]")
    return pilots.reshape(*pilots.shape[:3], math.prod(want[2:])).to(torch.complex128)


@lru_cache(maxsize=4)
def _grid(config: SystemConfig, prior: MimoPrior, device: torch.device) -> "_Grid":
    """Returns the :class:`_Grid` of (config, prior, device), cached: 4 entries of ``_Grid.memory_bytes``
    (mimo-chest's sweep prior, 4 users: 129 MB, the users' banks 117 MB of it)."""
    return _Grid(config, prior, device)


class _Grid:
    """The hypotheses of one (config, prior) on one device: the users' banks, the rotations, the noise levels.

    A hypothesis is ``(c', s)``: ``c' = c N_rho + r`` (condition ``c = d N_fd + f``, grid rho ``r``) and the noise
    level ``s``. User u's terms are ``g_x = lambda_k mu_(c, i)`` (``x = k P + i``, ``X = R P`` of them).
    **Likelihood split.** A term with ``g <= delta sigma_min^2`` (``delta`` = ``_WEAK_REL`` = 1e-3) is *weak*:
    ``1 / (g + s) = 1/s - g/s^2 + g^2/s^3`` to within ``delta^3 / s``, so the weak terms of every noise level
    cost three moments ``S_m = sum_weak e g^m`` per ``c'`` and frame, and ``log(g + s) = log s + g/s - g^2/(2 s^2)
    + g^3/(3 s^3)`` to within ``delta^4 / 4``. Only the others (mimo-chest: 560 of 4,992 a row on average, 697 at most) are
    evaluated at every noise level. The quadratic form is then within ``delta^3 S_0 / sigma_min^2`` of the exact
    one, and :meth:`ml_index` re-decides in full float64 among the hypotheses this bound cannot separate.
    **Posterior.** Only hypotheses within ``_DROP_NATS`` = 40 nats of the best carry weight: each dropped one
    weighs at most ``e^-40 = 4.2e-18`` of the best, all of them together at most ``N e^-40`` (mimo-chest's
    18,000 hypotheses: 8e-14). Their filters are applied one condition at a time from the eigenbasis, never
    as a ``[hypotheses x R x F x T]`` stack.
    """

    def __init__(self, config: SystemConfig, prior: MimoPrior, device):
        self.users = [_user_bank(u, prior.conditions, device) for u in user_configs(config)]
        self.lam, self.V = _rotations(prior.rhos, config.mimo.num_rx_antennas, device)
        self.Vt = self.V.mT.to(torch.complex128)  # [N_rho, R, R]: V^T, applied to the pilots
        self.nv = config.noise_variance(torch.tensor(prior.conditions.snrs_db, dtype=torch.float64)).double().to(device)
        self.nd, self.nf, self.nr, self.ns = prior.shape
        self.R, self.P = config.mimo.num_rx_antennas, self.users[0].mu.shape[1]
        self.F, self.T = config.ofdm.grid_shape
        self.cut = _WEAK_REL * float(self.nv.min())
        self.mid, self.logdet, self.mse = [], [], []
        for u in range(len(self.users)):
            g = self._g(u, 0, self.nd)
            weak = g <= self.cut
            n_mid = (~weak).sum(1)
            M = max(int(n_mid.max()), 1)
            idx = torch.argsort(weak.to(torch.int8), dim=1, stable=True)[:, :M]  # the strong terms first
            valid = torch.arange(M, device=g.device) < n_mid[:, None]
            g_mid = torch.where(valid, g.gather(1, idx), torch.full_like(idx, math.inf, dtype=torch.float64))
            self.mid.append((idx, g_mid))
            # frame-independent: sum_x log(g_x + s) [C', S], and the genie's MSE per RE at each hypothesis,
            # (1/R) sum_k lambda_k mse_2D(s / lambda_k) = mean(lambda) - sum_x lambda_k^2 D_i / (g_x + s) / (R F T)
            s = self.nv
            gw = torch.where(weak, g, 0.0)
            n_w = weak.sum(1, keepdim=True).double()
            g1, g2, g3 = gw.sum(1, keepdim=True), gw.square().sum(1, keepdim=True), gw.pow(3).sum(1, keepdim=True)
            a_all = (self.lam.square()[None, :, :, None] * self.users[u].D[:, None, None, :]).reshape(g.shape)
            lam_mean = self.lam.mean(1).repeat(self.nd * self.nf)[:, None]  # [C', 1]
            lg, mse = [], []
            for lo, hi in self.row_chunks(1):
                r = slice(lo * self.nf * self.nr, hi * self.nf * self.nr)
                lg.append(torch.where(valid[r, :, None], torch.log(g_mid[r, :, None] + s), 0.0).sum(1))
                mse.append(lam_mean[r] - self._cauchy(a_all[None, r], g[r], idx[r], g_mid[r], weak[r])[0]
                           / (self.R * self.F * self.T))
            self.logdet.append(torch.cat(lg) + n_w * torch.log(s) + g1 / s - g2 / (2 * s ** 2) + g3 / (3 * s ** 3))
            self.mse.append(torch.cat(mse))

    @property
    def memory_bytes(self) -> int:
        ts = [t for m in self.mid for t in m] + self.logdet + self.mse
        return sum(t.numel() * t.element_size() for t in ts) + sum(b.memory_bytes for b in self.users)

    def _g(self, u: int, a: int, b: int) -> torch.Tensor:
        """Returns ``g = lambda_k mu_(c, i)`` [c', R P] f64 for user u at conditions ``d`` in ``[a, b)``."""
        mu = self.users[u].mu[a * self.nf:b * self.nf]
        return (self.lam[None, :, :, None] * mu[:, None, None, :]).reshape(-1, self.R * self.P)

    def _cauchy(self, e: torch.Tensor, g: torch.Tensor, idx, g_mid, weak) -> torch.Tensor:
        """Returns ``sum_x e_x / (g_x + s)`` [n, c', S] f64 for ``e`` [n, c', X] (>= 0), the weak terms by their series."""
        s = self.nv
        em = e.gather(2, idx.expand(e.shape[0], -1, -1)).transpose(0, 1)  # [c', n, M]
        q = torch.empty(e.shape[1], e.shape[0], len(s), dtype=torch.float64, device=e.device)
        step = max(1, _SMALL // (g_mid.shape[1] * len(s)))  # cache-sized pieces: no page faults on big temporaries
        for a in range(0, g_mid.shape[0], step):
            torch.bmm(em[a:a + step], torch.add(g_mid[a:a + step, :, None], s).reciprocal_(), out=q[a:a + step])
        q = q.transpose(0, 1)
        gw = torch.where(weak, g, 0.0)
        mom = torch.matmul(e.transpose(0, 1), torch.stack([weak.double(), gw, gw.square()], 2)).transpose(0, 1)
        s0, s1, s2 = mom[..., 0:1], mom[..., 1:2], mom[..., 2:3]  # S_m = sum_weak e g^m [n, c', 1]
        return q + s0 / s - s1 / s ** 2 + s2 / s ** 3

    def row_chunks(self, n: int):
        """Yields delay-spread index ranges whose temporaries ``[n, d, N_fd, N_rho, R P]`` fit the budget."""
        per_d = max(n, 1) * self.nf * self.nr * max(self.R * self.P, self.ns)
        step = max(1, _BUDGET // per_d)
        for a in range(0, self.nd, step):
            yield a, min(self.nd, a + step)

    def project(self, u: int, p: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """Returns ``y = Q_c^H V_rho^T p`` [n, c', R P] c128 for user u's pilots ``p`` [n, R, P] c128 at conditions
        ``d`` in ``[a, b)`` (every Doppler and rho): the eigen-coordinates of the likelihood and the filters."""
        bank, n = self.users[u], p.shape[0]
        z = torch.matmul(self.Vt, p[:, None])  # V^T p per rho [n, N_rho, R, P]
        if bank.kron:
            Pf, Pt = bank.uf.shape[1], bank.ut.shape[1]
            # uf_d^H Z [n, d, N_rho, R, P_f, P_t], then Z conj(ut_f) as P_t rank-one terms: [n, d, f, N_rho, R, P_f, P_t]
            w = torch.matmul(bank.uf_h[a:b, None, None], z.reshape(n, 1, self.nr, self.R, Pf, Pt))
            ut_c = bank.ut.conj()[None, None, :, None, None, None]  # [1, 1, N_fd, 1, 1, 1, P_t, P_t]
            y = sum(w[:, :, None, ..., t, None] * ut_c[..., t, :] for t in range(Pt))
        else:  # (Q_c^H z)_p = sum_q z_q conj(Q_c[q, p])
            y = torch.matmul(z.reshape(n, 1, self.nr * self.R, -1), bank.Q[a * self.nf:b * self.nf].conj())
        return y.reshape(n, -1, self.R * self.P)

    def log_likelihood(self, p: torch.Tensor, bounds: bool = False):
        """Returns ``log L`` [n, C', S] float64 (constant included) for pilots [n, R, U, P] c128; ``bounds``: also
        ``(err [n], scale [n])``, a bound on every entry's error and the largest ``q + |log det|``."""
        n, R, U, P = p.shape
        ll = torch.full((n, self.nd * self.nf * self.nr, self.ns), -U * R * P * math.log(math.pi),
                        dtype=torch.float64, device=p.device)
        err = torch.zeros(n, dtype=torch.float64, device=p.device)
        scale = torch.zeros(n, dtype=torch.float64, device=p.device)
        for u in range(U):
            idx, g_mid = self.mid[u]
            err_u = torch.zeros(n, dtype=torch.float64, device=p.device)
            for a, b in self.row_chunks(n):
                rows = slice(a * self.nf * self.nr, b * self.nf * self.nr)
                y = self.project(u, p[:, :, u], a, b)
                e = _energy(y)
                g = self._g(u, a, b)
                weak = g <= self.cut
                q = self._cauchy(e, g, idx[rows], g_mid[rows], weak)
                ll[:, rows] -= self.logdet[u][rows] + q
                if bounds:  # the series' remainders: delta^3 S_0 / sigma_min^2 (quadratic), n_w delta^4 / 4 (log det)
                    s0 = torch.einsum("ncx,cx->nc", e, weak.double())
                    b_u = _WEAK_REL ** 3 * s0 / float(self.nv.min()) + weak.sum(1) * _WEAK_REL ** 4 / 4
                    err_u = torch.maximum(err_u, b_u.amax(1))
                    scale = torch.maximum(scale, (q + self.logdet[u][rows].abs()).amax((1, 2)))
            err += err_u
        return (ll, err, U * scale) if bounds else ll

    def exact_log_likelihood(self, p: torch.Tensor, hyps: torch.Tensor) -> torch.Tensor:
        """Returns ``log L`` [K] float64 of one frame's pilots [R, U, P] c128 at flat hypotheses ``hyps`` [K] (index
        ``c' S + s``), every term in float64 (no series): the ML decision among near-ties."""
        R, U, P = p.shape
        out = torch.full((len(hyps),), -U * R * P * math.log(math.pi), dtype=torch.float64, device=p.device)
        for j, h in enumerate(hyps.tolist()):
            cp, s = divmod(h, self.ns)
            c, r = divmod(cp, self.nr)
            d = c // self.nf
            for u in range(U):
                y = self.project(u, p[None, :, u], d, d + 1)[0, (c - d * self.nf) * self.nr + r]
                g = self._g(u, d, d + 1)[(c - d * self.nf) * self.nr + r]
                den = g + self.nv[s]
                out[j] -= torch.log(den).sum() + (_energy(y) / den).sum()
        return out

    def ml_index(self, p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Returns each frame's ML hypothesis as indices ``(d, f, rho, s)`` [n] int64: the float64 argmax (the first
        on ties). The screen's values are within ``err`` of the exact ones (:meth:`log_likelihood`), so only those
        within ``2 err`` (plus 1e-10 of the largest terms, for rounding) of the screen's best are re-evaluated."""
        ll, err, scale = self.log_likelihood(p, bounds=True)
        ll = ll.flatten(1)
        best = ll.max(1).values
        margin = 2 * err + 1e-10 * scale
        k = ll.argmax(1)
        for i in range(ll.shape[0]):
            cand = torch.nonzero(ll[i] >= best[i] - margin[i]).squeeze(1)
            if len(cand) > 1:
                exact = self.exact_log_likelihood(p[i], cand)
                k[i] = cand[int(torch.argmax(exact))]  # cand ascends: argmax takes the first of equal maxima
        s, k = k % self.ns, k // self.ns
        r, k = k % self.nr, k // self.nr
        return k // self.nf, k % self.nf, r, s

    def posterior(self, p: torch.Tensor, variance: bool = False):
        """Returns ``E[h | p]`` [n, R, U, F, T] complex128 for pilots [n, R, U, P] c128; ``variance``: also the
        mixture's posterior variance per RE [n] f64, ``sum_k w_k (mse_k + |h_k - h_bar|^2)`` averaged over every
        antenna, user, subcarrier and symbol (``mse_k`` the genie's closed form at hypothesis k)."""
        n, R, U, P = p.shape
        F, T, nr = self.F, self.T, self.nr
        ll = self.log_likelihood(p)
        out = torch.zeros(n, R, U, F, T, dtype=torch.complex128, device=p.device)
        var = torch.zeros(n, dtype=torch.float64, device=p.device)
        V = self.V.to(torch.complex128)
        lam = self.lam[None, None, :, :, None]  # [1, 1, N_rho, R, 1]
        for i in range(n):
            w = ll[i] - ll[i].max()
            w = torch.where(w >= -_DROP_NATS, torch.exp(w), 0.0)
            w = w / w.sum()  # [C', S]
            wv = w.view(-1, nr, w.shape[1])  # [C, N_rho, S]
            conds = torch.nonzero(wv.sum((1, 2)) > 0).squeeze(1)  # the live conditions c = d N_fd + f, ascending
            live = torch.nonzero(w.sum(0) > 0).squeeze(1)  # the noise levels any of them weighs
            nv, wl = self.nv[live, None, None, None], wv[:, :, live]
            spread = 0.0
            for u in range(U):
                bank = self.users[u]
                if variance:
                    var[i] += (w * self.mse[u]).sum() / U
                for d in torch.unique(conds // self.nf).tolist():
                    cs = conds[conds // self.nf == d]
                    fs = cs % self.nf
                    y = self.project(u, p[i:i + 1, :, u], d, d + 1)[0].view(self.nf, nr, R, P)[fs]  # [m, N_rho, R, P]
                    # beta[m, s, rho, k, i] = lambda_k / (lambda_k mu_i + sigma_s^2): the genie's eigen-gains, every
                    # Doppler f of this delay spread at once, in pieces of bounded size
                    xs = []
                    step = max(1, _BUDGET // (len(live) * nr * R * P))
                    for a in range(0, len(cs), step):
                        mu = bank.mu[cs[a:a + step], None, None, None, :]  # [m', 1, 1, 1, P]
                        beta = lam / (lam * mu + nv)  # [m', S', N_rho, R, P]
                        x = torch.einsum("mxs,msxkp->mxkp", wl[cs[a:a + step]], beta) * y[a:a + step]
                        xs.append(torch.einsum("xrk,mxkp->mrp", V, x))
                        if variance:  # sum_k w_k |h_k|^2 over the live hypotheses of weight >= _VAR_REL
                            for j in range(len(x)):
                                ws = wl[cs[a + j]].T  # [S', N_rho]
                                big = ws >= _VAR_REL
                                xk = beta[j][big] * y[a + j][big.nonzero()[:, 1]]  # [K, R, P]
                                spread += float((ws[big] * self._energy_out(u, d, int(fs[a + j]), xk)).sum())
                    out[i, :, u] += self._apply(u, d, list(zip(fs.tolist(), torch.cat(xs))))
            if variance:
                spread -= float(_energy(out[i]).sum())
                var[i] += max(spread, 0.0) / (R * U * F * T)
        return (out, var) if variance else out

    def _apply(self, u: int, d: int, parts: list) -> torch.Tensor:
        """Returns ``sum_f R_hp,(d, f) Q_(d, f) X_f`` [R, F, T] c128 for ``parts`` ``[(f, X_f [R, P]), ...]``."""
        bank, R = self.users[u], self.R
        if bank.kron:
            Pf, Pt = bank.uf.shape[1], bank.ut.shape[1]
            fs = [f for f, _ in parts]
            X = torch.stack([x for _, x in parts]).view(len(fs), R, Pf, Pt)
            gt = bank.gt[fs]  # [n_f, T, P_t]
            if len(fs) * Pt < self.T:  # the frequency response first: it then acts on fewer columns
                z = torch.einsum("ki,nrit->nrkt", bank.gf[d], X)
                return torch.einsum("nrkt,nst->rks", z, gt)
            z = torch.einsum("nrit,nst->ris", X, gt)  # the Doppler sum first
            return torch.einsum("ki,ris->rks", bank.gf[d], z)
        out = 0
        Pf, Pt = bank.f_hp[0].shape[2], bank.t_hp[0].shape[2]
        for f, x in parts:
            v = (x @ bank.Q[d * self.nf + f].T).view(R, Pf, Pt)  # Q_c X, as rows
            out = out + sum(torch.einsum("ki,rit,st->rks", A[d], v, C[f]) for A, C in zip(bank.f_hp, bank.t_hp))
        return out

    def _energy_out(self, u: int, d: int, f: int, xs: torch.Tensor) -> torch.Tensor:
        """Returns ``|R_hp Q_c x|^2`` [K] f64 summed over antennas, subcarriers and symbols, for eigen-coordinates
        ``xs`` [K, R, P] of condition ``c = (d, f)``: ``x^H (Q^H R_ph R_hp Q) x``, without forming the grid."""
        bank = self.users[u]
        if bank.kron:
            Pf, Pt = bank.uf.shape[1], bank.ut.shape[1]
            gf, gt = bank.gf[d], bank.gt[f]
            X = xs.view(-1, self.R, Pf, Pt)
            Y = torch.einsum("ij,krjt,st->kris", gf.mH @ gf, X, gt.mH @ gt)
            return (X.conj() * Y).real.sum((1, 2, 3))
        Pf, Pt = bank.f_hp[0].shape[2], bank.t_hp[0].shape[2]
        v = (xs @ bank.Q[d * self.nf + f].T).view(-1, self.R, Pf, Pt)
        h = sum(torch.einsum("ki,nrit,st->nrks", A[d], v, C[f]) for A, C in zip(bank.f_hp, bank.t_hp))
        return _energy(h).sum((1, 2, 3))


def _energy(y: torch.Tensor) -> torch.Tensor:
    """Returns ``|y|^2`` (float64 for complex128 ``y``)."""
    r = torch.view_as_real(y)
    return torch.addcmul(r[..., 0].square(), r[..., 1], r[..., 1])


def _frame_chunks(B: int, grid: _Grid):
    """Yields frame slices whose likelihood temporaries fit the budget."""
    per = grid.nd * grid.nf * grid.nr * max(grid.ns, grid.R * grid.P)
    c = max(1, _BUDGET // max(per // 4, 1))
    for s in range(0, B, c):
        yield slice(s, min(B, s + c))


def mimo_log_likelihood(pilots: torch.Tensor, config: SystemConfig, prior: MimoPrior | None = None) -> torch.Tensor:
    """Returns the joint log-likelihood [B, N_ds, N_fd, N_rho, N_snr] float64 of every frame's pilots, constant included.

    ``pilots`` [B, R, U, P_f', P_t] complex (LS, Kronecker pattern). Entry ``[b, d, f, r, s]`` is
    ``log CN(p_b; 0, blockdiag_u(R_rx(rho_r) (x) R_p,u(ds_d, fd_f)) + sigma_s^2 I)`` over all antennas and users.
    """
    prior = prior or MimoPrior.from_config(config)
    p = _check(pilots, config)
    grid = _grid(config, prior, p.device)
    return torch.cat([grid.log_likelihood(p[sl]) for sl in _frame_chunks(p.shape[0], grid)]).view(p.shape[0], *prior.shape)


def estimate_mimo_conditions(pilots: torch.Tensor, config: SystemConfig,
                             prior: MimoPrior | None = None) -> dict[str, torch.Tensor]:
    """Returns each frame's ML hypothesis from all its antennas and users: a dict of [B] tensors.

    Keys as in frame ``meta``: ``delay_spread_s`` [s], ``doppler_hz`` [Hz], ``snr_db`` [dB] and
    ``noise_var`` float32 (as :func:`~wavefront.sim.conditions.estimate_conditions` gives them), and
    ``rx_correlation`` float64 (the grid's rho).
    """
    prior = prior or MimoPrior.from_config(config)
    p = _check(pilots, config)
    grid = _grid(config, prior, p.device)
    idx = [torch.cat(t) for t in zip(*(grid.ml_index(p[sl]) for sl in _frame_chunks(p.shape[0], grid)))]
    c = prior.conditions
    axis = lambda vals, i: torch.tensor(vals, dtype=torch.float64, device=p.device)[i]  # noqa: E731
    snr = axis(c.snrs_db, idx[3]).float()
    return {"delay_spread_s": axis(c.delay_spreads_s, idx[0]).float(), "doppler_hz": axis(c.dopplers_hz, idx[1]).float(),
            "rx_correlation": axis(prior.rhos, idx[2]), "snr_db": snr, "noise_var": config.noise_variance(snr).float()}


def _rho_words(config: SystemConfig, prior: MimoPrior) -> str:
    return ("rho known" if len(prior.rhos) == 1 and not isinstance(config.mimo.rx_correlation, tuple)
            else "rho in the prior")


class MimoEstimatedLMMSE(Estimator):
    """``lmmse-estimated`` over space: the genie over space, time and frequency at each frame's ML hypothesis.

    ``estimate(pilots [B, R, U, P_f', P_t] c64, meta) -> [B, R, U, F, T] c64``; ``meta`` is not read.
    The hypothesis (delay spread, Doppler, SNR, and rho when the config's is a range) maximises the
    joint likelihood of all antennas and users (:func:`estimate_mimo_conditions`); then
    :class:`~wavefront.sim.mimo.MimoGenieLMMSE` runs there.
    """

    name = "lmmse-estimated"
    needs = "none"
    mimo = True

    def __init__(self, config: SystemConfig, prior: MimoPrior | None = None):
        _check_config(config)
        self.config, self.prior = config, prior or MimoPrior.from_config(config)
        self.genie = MimoGenieLMMSE(config)
        self.rho_known = not isinstance(config.mimo.rx_correlation, tuple)
        self.given = (f"{profile_label(config.channel.profile)} shape; delay spread, Doppler, SNR"
                      f"{'' if self.rho_known else ' and rho'} estimated from all antennas' and users' pilots "
                      f"(joint ML over {self.prior.describe()}; {_rho_words(config, self.prior)}), "
                      "then the genie over space, time and frequency there")

    def estimate(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        return self.estimate_with_error_variance(pilots, meta, variance=False)[0]

    def estimate_with_error_variance(self, pilots: torch.Tensor, meta: dict | None = None, variance: bool = True):
        """Returns ``(H_hat [B, R, U, F, T] c64, err_var [B] f64 or None)``: the error variance the model states, the
        genie's closed-form MSE per RE (:func:`~wavefront.sim.mimo.mimo_genie_mse`, averaged over antennas and users)
        at the frame's ML hypothesis, as if that hypothesis were the truth."""
        cond = estimate_mimo_conditions(pilots, self.config, self.prior)
        if self.rho_known:  # the config's own rho, exactly
            del cond["rx_correlation"]
        h = self.genie.estimate(pilots, cond)
        if not variance:
            return h, None
        rho = cond.get("rx_correlation")
        ev = mimo_genie_mse(self.config, cond["snr_db"].double().cpu(), cond["delay_spread_s"].double().cpu(),
                            cond["doppler_hz"].double().cpu(), rx_correlation=None if rho is None else rho.cpu())
        return h, ev.to(pilots.device)


class MimoBayesMMSE(Estimator):
    """``mmse-bayes`` over space: ``E[h | p]`` under the uniform prior on delay spread x Doppler x rho x SNR.

    ``estimate(pilots [B, R, U, P_f', P_t] c64, meta) -> [B, R, U, F, T] c64``; ``meta`` is not read.
    The posterior weights come from the joint likelihood of all antennas and users; each
    hypothesis's filter is :class:`~wavefront.sim.mimo.MimoGenieLMMSE`'s. Computed in float64.
    """

    name = "mmse-bayes"
    needs = "none"
    mimo = True

    def __init__(self, config: SystemConfig, prior: MimoPrior | None = None):
        _check_config(config)
        self.config, self.prior = config, prior or MimoPrior.from_config(config)
        self.given = (f"{profile_label(config.channel.profile)} shape; uniform prior over {self.prior.describe()} "
                      f"({_rho_words(config, self.prior)}); posterior from all antennas' and users' pilots, "
                      "mixture of the genie filters over space, time and frequency")

    def estimate(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        return self.estimate_with_error_variance(pilots, meta, variance=False)[0]

    def estimate_with_error_variance(self, pilots: torch.Tensor, meta: dict | None = None, variance: bool = True):
        """Returns ``(H_hat [B, R, U, F, T] c64, err_var [B] f64 or None)``: the error variance the model states is
        the mixture's posterior variance per RE, ``sum_k w_k (mse_k + |h_k - h_bar|^2) / (R U F T)`` (``mse_k`` the
        genie's closed form at hypothesis k, ``h_k`` its estimate): under the prior, the expected MSE given the
        pilots. The spread term skips hypotheses of weight below 1e-9 (each adds at most ``w |h_k - h_bar|^2``)."""
        p = _check(pilots, self.config)
        grid = _grid(self.config, self.prior, p.device)
        F, T = self.config.ofdm.grid_shape
        out = torch.empty(*p.shape[:3], F, T, dtype=torch.complex64, device=p.device)
        ev = torch.empty(p.shape[0], dtype=torch.float64, device=p.device) if variance else None
        for sl in _frame_chunks(p.shape[0], grid):
            if variance:
                out[sl], ev[sl] = grid.posterior(p[sl], variance=True)
            else:
                out[sl] = grid.posterior(p[sl])
        return out, ev
