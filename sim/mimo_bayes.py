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

Cost per frame and user: ``N_ds N_fd N_rho N_snr R P`` multiply-adds for the likelihood (and as
many for the Bayes weights), plus ``N_ds N_fd R`` 2-D filter applications for ``mmse-bayes``.
Caches: :func:`_user_bank`, per (user config, prior, device), ``16 N_ds N_fd P^2`` bytes
(+ the covariance blocks), 8 entries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from wavefront.errors import ConfigError
from wavefront.sim.conditions import ConditionPrior, _axis, separable_blocks
from wavefront.sim.config import SystemConfig, profile_label
from wavefront.sim.estimators import Estimator
from wavefront.sim.lmmse import combine_terms
from wavefront.sim.mimo import MimoGenieLMMSE, rx_eigen, user_configs

RHO_STEP = 0.1  # the rho grid's largest step when rho is unknown
_BUDGET = 1 << 21  # float64 elements of the per-chunk temporaries (about 16 MB)


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


@dataclass
class _UserBank:
    """One user's pilot statistics over the conditions ``c = d N_fd + f``, complex128 on one device.

    ``mu`` [C, P] f64 and ``Q`` [C, P, P]: ``R_p = Q diag(mu) Q^H`` (``mu >= 0``); ``f_hp[j]`` [N_ds, F, P_f]
    and ``t_hp[j]`` [N_fd, T, P_t]: term j of ``R_hp`` (:func:`~wavefront.sim.conditions.separable_blocks`).
    """

    mu: torch.Tensor
    Q: torch.Tensor
    f_hp: list
    t_hp: list


@lru_cache(maxsize=8)
def _user_bank(user: SystemConfig, prior: ConditionPrior, device: torch.device) -> _UserBank:
    """Returns :class:`_UserBank` for one user's SISO config (cached: 8 entries)."""
    f_hp, t_hp, f_pp, t_pp = separable_blocks(user, prior)
    nd, nf = f_pp[0].shape[0], t_pp[0].shape[0]
    r_pp = combine_terms([x.repeat_interleave(nf, 0) for x in f_pp], [y.repeat(nd, 1, 1) for y in t_pp], True)
    mu, Q = torch.linalg.eigh(r_pp)
    return _UserBank(mu.clamp_min(0.0).to(device), Q.to(device), [a.to(device) for a in f_hp],
                     [b.to(device) for b in t_hp])


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
    """Returns the :class:`_Grid` of (config, prior, device), cached: 4 entries (besides the users' banks, the
    log-determinants, ``8 U N_ds N_fd N_rho N_snr`` bytes: 1.2 MB on the README's prior)."""
    return _Grid(config, prior, device)


class _Grid:
    """The hypotheses of one (config, prior) on one device: the users' banks, the rotations, the noise levels."""

    def __init__(self, config: SystemConfig, prior: MimoPrior, device):
        self.users = [_user_bank(u, prior.conditions, device) for u in user_configs(config)]
        self.lam, self.V = _rotations(prior.rhos, config.mimo.num_rx_antennas, device)
        self.nv = config.noise_variance(torch.tensor(prior.conditions.snrs_db, dtype=torch.float64)).double().to(device)
        self.nd, self.nf, self.nr, self.ns = prior.shape
        self.R, self.P = config.mimo.num_rx_antennas, self.users[0].mu.shape[1]
        # sum_(k,i) log(lambda_k mu_i + sigma_s^2) [C, N_rho, S] per user: frame-independent, so once
        self.logdet = [torch.cat([torch.log(self._den(u, a, b)).sum((-2, -1)) for a, b in self.row_chunks()])
                       for u in range(len(self.users))]

    def _den(self, u: int, a: int, b: int) -> torch.Tensor:
        """Returns ``lambda_k mu_i + sigma_s^2`` [c, N_rho, S, R, P] f64 for user u at conditions ``d`` in ``[a, b)``."""
        mu = self.users[u].mu[a * self.nf:b * self.nf]
        return self.lam[None, :, None, :, None] * mu[:, None, None, None, :] + self.nv[None, None, :, None, None]

    def row_chunks(self):
        """Yields delay-spread index ranges whose temporaries ``[d, N_fd, N_rho, N_snr, R P]`` fit the budget."""
        per_d = self.nf * self.nr * self.ns * self.R * self.P
        step = max(1, _BUDGET // per_d)
        for a in range(0, self.nd, step):
            yield a, min(self.nd, a + step)

    def parts(self, u: int, p: torch.Tensor, a: int, b: int):
        """Returns (``y = Q^H V^T p`` [n, c, N_rho, R, P] c128, ``1 / (lambda mu + sigma^2)`` [c, N_rho, S, R, P] f64)
        for user u's pilots ``p`` [n, R, P] at conditions ``d`` in ``[a, b)`` (every Doppler): ``c = (b - a) N_fd``."""
        z = torch.einsum("nrk,brp->bnkp", self.V.to(torch.complex128), p)  # V^T p per rho
        y = torch.einsum("cqp,bnkq->bcnkp", self.users[u].Q[a * self.nf:b * self.nf].conj(), z)  # Q^H z
        return y, 1.0 / self._den(u, a, b)

    def log_likelihood(self, p: torch.Tensor) -> torch.Tensor:
        """Returns ``log L`` [n, N_ds N_fd, N_rho, S] float64 (constant included) for pilots [n, R, U, P] c128."""
        n, R, U, P = p.shape
        ll = torch.full((n, self.nd * self.nf, self.nr, self.ns), -U * R * P * math.log(math.pi),
                        dtype=torch.float64, device=p.device)
        for u in range(U):
            for a, b in self.row_chunks():
                y, inv = self.parts(u, p[:, :, u], a, b)
                e = y.real.square() + y.imag.square()
                q = torch.einsum("bcnx,cnsx->bcns", e.flatten(-2), inv.flatten(-2))
                rows = slice(a * self.nf, b * self.nf)
                ll[:, rows] -= self.logdet[u][rows] + q
        return ll

    def posterior_mean(self, p: torch.Tensor, F: int, T: int) -> torch.Tensor:
        """Returns ``E[h | p]`` [n, R, U, F, T] complex128 for pilots [n, R, U, P] c128."""
        n, R, U, P = p.shape
        w = torch.softmax(self.log_likelihood(p).flatten(1), 1).view(n, -1, self.nr, self.ns)
        out = torch.zeros(n, R, U, F, T, dtype=torch.complex128, device=p.device)
        V = self.V.to(torch.complex128)
        for u in range(U):
            bank = self.users[u]
            Pf, Pt = bank.f_hp[0].shape[2], bank.t_hp[0].shape[2]
            for a, b in self.row_chunks():
                rows = slice(a * self.nf, b * self.nf)
                y, inv = self.parts(u, p[:, :, u], a, b)
                # sum over the noise levels: w_s lambda_k / (lambda_k mu_i + sigma_s^2), the filter at sigma^2 / lambda_k
                coef = torch.einsum("bcns,cnsx->bcnx", w[:, rows], (inv * self.lam[None, :, None, :, None]).flatten(-2))
                x = coef.view(y.shape) * y
                x = torch.einsum("nrk,bcnkp->bcrp", V, x)  # V_rho back, summed over rho
                v = torch.einsum("cpq,bcrq->bcrp", bank.Q[rows], x)  # Q_c, then R_hp,c term by term
                v = v.reshape(n, b - a, self.nf, R, Pf, Pt)
                for A, C in zip(bank.f_hp, bank.t_hp):
                    xt = torch.einsum("bdfrpq,ftq->bdrpt", v, C)  # the Doppler sum first
                    out[:, :, u] += torch.einsum("dkp,bdrpt->brkt", A[a:b], xt)
        return out

    def ml_index(self, p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Returns each frame's ML hypothesis as indices ``(d, f, rho, s)`` [n] int64 (the first on ties)."""
        k = self.log_likelihood(p).flatten(1).argmax(1)
        s, k = k % self.ns, k // self.ns
        r, k = k % self.nr, k // self.nr
        return k // self.nf, k % self.nf, r, s


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
        cond = estimate_mimo_conditions(pilots, self.config, self.prior)
        if self.rho_known:  # the config's own rho, exactly
            del cond["rx_correlation"]
        return self.genie.estimate(pilots, cond)


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
        p = _check(pilots, self.config)
        grid = _grid(self.config, self.prior, p.device)
        F, T = self.config.ofdm.grid_shape
        out = torch.empty(*p.shape[:3], F, T, dtype=torch.complex64, device=p.device)
        for sl in _frame_chunks(p.shape[0], grid):
            out[sl] = grid.posterior_mean(p[sl], F, T)
        return out
