"""What a receiver can know about the channel conditions, and the estimators that use it.

A receiver sees the LS pilots ``p`` [P] (``P = P_f P_t`` row-major for a Kronecker layout; the
positions' order for any :class:`~wavefront.sim.pilots.PilotLayout`), not the delay spread,
the Doppler or the noise level. Under the hypothesis ``(ds, fd, sigma^2)`` the pilots are
``p ~ CN(0, R_p(ds, fd) + sigma^2 I)``. With one eigendecomposition
``R_p = U diag(lam) U^H`` per ``(ds, fd)`` and ``e = |U^H p|^2``, every noise level costs
only a sum over ``P``:

    log L(ds, fd, sigma^2) = -sum_i log(lam_i + sigma^2) - sum_i e_i / (lam_i + sigma^2) - P log(pi).

A :class:`ConditionPrior` is a uniform prior on a product grid of delay spreads, Dopplers
and SNRs (by default the config's channel ranges, 25 ns x 50 Hz x 0.5 dB steps; a fixed
value gives a one-point axis). On it:

- :func:`estimate_conditions`: per-frame maximum-likelihood (or posterior-mean) conditions.
  With a uniform prior the MAP estimate is the ML estimate.
- :class:`EstimatedLMMSE` (``lmmse-estimated``): the joint 2-D LMMSE at each frame's
  estimated conditions, the practical receiver.
- :class:`BayesMMSE` (``mmse-bayes``): ``E[h | p] = sum_k w_k(p) W_k p``, the posterior-weighted
  bank of LMMSE filters. The channel given the prior is a Gaussian mixture, and this is its
  MMSE estimator: no estimator that knows only the prior does better on average.

The covariance terms of :func:`~wavefront.sim.statistics.covariance_terms` are separable: the
frequency block of every Kronecker term depends on the delay spread alone and the time block
on the Doppler alone. The grid's filters are therefore kept as ``N_ds`` frequency blocks and
``N_fd`` time blocks, not ``N_ds N_fd`` full ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from wavefront.errors import ConfigError
from wavefront.sim.estimators import Estimator
from wavefront.sim.config import SystemConfig
from wavefront.sim.config import profile_label
from wavefront.sim.lmmse import GenieLMMSE, _Stats, combine_terms
from wavefront.sim.pilots import flat_pilots
from wavefront.sim.profiles import channel_profile
from wavefront.sim.statistics import covariance_terms

_BUDGET_CPU = 1 << 21  # float64 elements of per-chunk temporaries: about 16 MB, cache-friendly
_BUDGET_GPU = 1 << 26  # on a GPU the chunks only bound memory (about 0.5 GB)


def _axis(field: str, value, step_field: str, step: float, low: float | None) -> tuple[float, ...]:
    """Returns a grid axis: ``(value,)``, or ``low..high`` in equal steps of at most ``step``, ends included."""
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ConfigError(f"prior.{step_field}", step, "must be a positive finite number")
    lo, hi = (value if isinstance(value, (tuple, list)) else (value, value))
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ConfigError(f"prior.{field}", value, "must be a finite value or a (low, high) range with low <= high")
    if low is not None and lo < low:
        raise ConfigError(f"prior.{field}", value, f"must be >= {low:g}")
    n = 1 if hi == lo else int(math.ceil((hi - lo) / step - 1e-9)) + 1
    return tuple(np.linspace(lo, hi, n).tolist())


@dataclass(frozen=True)
class ConditionPrior:
    """A uniform prior on the product grid ``delay_spreads_s x dopplers_hz x snrs_db``.

    - ``delay_spreads_s``: RMS delay spreads [s]; ``dopplers_hz``: maximum Dopplers [Hz];
      ``snrs_db``: SNRs [dB] in the config's ``snr_convention``.

    Build it with :meth:`from_config` (the config's channel ranges) or :meth:`from_ranges`.
    The receiver is assumed to know the power-delay-profile shape and Doppler spectrum of
    the config's profile (e.g. TDL-A), not the scale of either.
    """

    delay_spreads_s: tuple[float, ...]
    dopplers_hz: tuple[float, ...]
    snrs_db: tuple[float, ...]

    def __post_init__(self):
        for field, low in (("delay_spreads_s", 0.0), ("dopplers_hz", 0.0), ("snrs_db", -math.inf)):
            vals = getattr(self, field)
            if not vals or not all(math.isfinite(v) and v >= low for v in vals):
                raise ConfigError(f"prior.{field}", vals, f"must be a non-empty tuple of finite values >= {low:g}")

    @classmethod
    def from_ranges(cls, delay_spread_s, doppler_hz, snr_db, delay_spread_step_s: float = 25e-9,
                    doppler_step_hz: float = 50.0, snr_step_db: float = 0.5) -> "ConditionPrior":
        """Returns the grid over each value or ``(low, high)`` range, in steps of at most the given ones.

        A fixed value gives a one-point axis; a range gives ``low, ..., high`` equally spaced
        (25-300 ns at 25 ns: 12 points; 50-1000 Hz at 50 Hz: 20 points; 0-25 dB at 0.5 dB: 51).
        """
        return cls(_axis("delay_spread_s", delay_spread_s, "delay_spread_step_s", delay_spread_step_s, 0.0),
                   _axis("doppler_hz", doppler_hz, "doppler_step_hz", doppler_step_hz, 0.0),
                   _axis("snr_db", snr_db, "snr_step_db", snr_step_db, None))

    @classmethod
    def from_config(cls, config: SystemConfig, **steps) -> "ConditionPrior":
        """Returns the grid over ``config.channel``'s delay spread, Doppler and SNR (see :meth:`from_ranges`)."""
        ch = config.channel
        return cls.from_ranges(ch.delay_spread_s, ch.doppler_hz, ch.snr_db, **steps)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N_ds, N_fd, N_snr)``."""
        return (len(self.delay_spreads_s), len(self.dopplers_hz), len(self.snrs_db))

    def describe(self, snr: bool = True) -> str:
        """Returns the grid in words, e.g. ``25–300 ns x 50–1000 Hz (25 ns x 50 Hz grid), SNR 20 dB``."""
        def axis(vals, scale, unit):
            v = [x * scale for x in vals]
            if len(v) == 1:
                return f"{v[0]:g} {unit}", None
            return f"{v[0]:g}–{v[-1]:g} {unit}", f"{(v[-1] - v[0]) / (len(v) - 1):.3g} {unit}"
        parts = [axis(self.delay_spreads_s, 1e9, "ns"), axis(self.dopplers_hz, 1.0, "Hz")]
        text = " x ".join(p for p, _ in parts)
        steps = [s for _, s in parts if s]
        if steps:
            text += f" ({' x '.join(steps)} grid)"
        if not snr:
            return text
        snr_text, step = axis(self.snrs_db, 1.0, "dB")
        return f"{text}, SNR {snr_text}" + (f" ({step} steps)" if step else "")


@dataclass
class _Bank:
    """The prior's hypotheses, precomputed on one device.

    ``k = d N_fd + f`` indexes the ``(ds_d, fd_f)`` pairs, ``s`` the noise levels.
    ``evec`` [K, P, P] c128 and ``lam`` [K, P] f64: eigendecomposition of ``R_p``;
    ``inv_eig`` [K, S, P] f64: ``1 / (lam + sigma_s^2)``; ``logdet`` [K, S] f64;
    ``f_hp[j]`` [N_ds, F, P_f] and ``t_hp[j]`` [N_fd, T, P_t] c128: term ``j`` of ``R_hp``.
    """

    ds: torch.Tensor
    fd: torch.Tensor
    snr_db: torch.Tensor
    noise_var: torch.Tensor
    evec: torch.Tensor
    inv_eig: torch.Tensor
    logdet: torch.Tensor
    f_hp: list
    t_hp: list


def separable_blocks(config: SystemConfig, prior: ConditionPrior):
    """Returns ``(f_hp, t_hp, f_pp, t_pp)``: the Kronecker terms over the prior's axes, complex128.

    Term ``j`` of the covariance at ``(ds_d, fd_f)`` is ``f_*[j][d] (x) t_*[j][f]``:
    ``f_hp[j]`` [N_ds, F, P_f], ``t_hp[j]`` [N_fd, T, P_t], ``f_pp[j]`` [N_ds, P_f, P_f],
    ``t_pp[j]`` [N_fd, P_t, P_t]. For a scattered layout ``P_f = P_t = P`` (each pilot's own
    subcarrier and symbol) and the pilot blocks combine elementwise instead of by ``kron``.
    """
    o = config.ofdm
    prof = channel_profile(config.channel.profile, config.channel.travel_azimuth_deg)
    pf, pt = o.pilot_layout.covariance_columns()
    ds = torch.tensor(prior.delay_spreads_s, dtype=torch.float64)
    fd = torch.tensor(prior.dopplers_hz, dtype=torch.float64)
    # frequency blocks vary with the delay spread only, time blocks with the Doppler only
    f_hp = [a for a, _ in covariance_terms(o, prof, ds, fd[:1], cols_f=pf, cols_t=pt)]
    t_hp = [b for _, b in covariance_terms(o, prof, ds[:1], fd, cols_f=pf, cols_t=pt)]
    f_pp = [a for a, _ in covariance_terms(o, prof, ds, fd[:1], rows_f=pf, cols_f=pf, rows_t=pt, cols_t=pt)]
    t_pp = [b for _, b in covariance_terms(o, prof, ds[:1], fd, rows_f=pf, cols_f=pf, rows_t=pt, cols_t=pt)]
    return f_hp, t_hp, f_pp, t_pp


@lru_cache(maxsize=8)
def _bank(config: SystemConfig, prior: ConditionPrior, device: torch.device) -> _Bank:
    f_hp, t_hp, f_pp, t_pp = separable_blocks(config, prior)
    nd, nf = len(prior.delay_spreads_s), len(prior.dopplers_hz)
    # R_p for every (d, f) pair, d major
    r_pp = combine_terms([a.repeat_interleave(nf, 0) for a in f_pp], [b.repeat(nd, 1, 1) for b in t_pp],
                         config.ofdm.pilot_layout.is_kronecker)
    lam, evec = torch.linalg.eigh(r_pp)
    lam = lam.clamp_min(0.0)  # R_p is PSD; rounding leaves tiny negative eigenvalues
    snr = torch.tensor(prior.snrs_db, dtype=torch.float64)
    nv = config.noise_variance(snr).to(torch.float64)
    denom = lam[:, None, :] + nv[None, :, None]  # [K, S, P]
    dev = lambda x: x.to(device)  # noqa: E731
    return _Bank(dev(torch.tensor(prior.delay_spreads_s, dtype=torch.float64)),
                 dev(torch.tensor(prior.dopplers_hz, dtype=torch.float64)), dev(snr), dev(nv), dev(evec),
                 dev(1.0 / denom), dev(torch.log(denom).sum(-1)), [dev(a) for a in f_hp], [dev(b) for b in t_hp])


def _check_pilots(pilots: torch.Tensor, config: SystemConfig) -> torch.Tensor:
    """Returns the pilots as [B, P] complex128 (from [B, P_f, P_t] or [B, P]), or raises ConfigError naming the rule."""
    p = flat_pilots(pilots, config.ofdm.pilot_layout)
    if not pilots.is_complex():
        raise ConfigError("pilots.dtype", str(pilots.dtype), "must be complex (LS pilots)")
    return p.to(torch.complex128)


def _chunks(bank: _Bank, n: int, per_frame: int):
    """Yields frame slices whose temporaries fit the device's budget."""
    budget = _BUDGET_CPU if bank.evec.device.type == "cpu" else _BUDGET_GPU
    c = max(1, budget // max(per_frame, 1))
    for s in range(0, n, c):
        yield slice(s, min(n, s + c))


def _log_likelihood(bank: _Bank, p: torch.Tensor):
    """Returns (``log L + P log pi`` [b, K, S] float64, ``U^H p`` [b, K, P] complex128) for pilots [b, P] c128."""
    y = torch.einsum("kqp,bq->bkp", bank.evec.conj(), p)
    ll = -bank.logdet - torch.einsum("bkp,ksp->bks", y.real.square() + y.imag.square(), bank.inv_eig)
    return ll, y


def log_likelihood(pilots: torch.Tensor, config: SystemConfig, prior: ConditionPrior | None = None) -> torch.Tensor:
    """Returns the pilots' log-likelihood [B, N_ds, N_fd, N_snr] float64 on the prior's grid.

    ``pilots`` [B, P_f, P_t] or [B, P] complex: LS pilots. Up to the constant ``-P log(pi)``, entry
    ``[b, d, f, s]`` is ``log CN(p_b; 0, R_p(ds_d, fd_f) + sigma_s^2 I)``. Not chunked: for
    inspection and tests; :func:`estimate_conditions` reduces chunk by chunk.
    """
    prior = prior or ConditionPrior.from_config(config)
    p = _check_pilots(pilots, config)
    bank = _bank(config, prior, p.device)
    return _log_likelihood(bank, p)[0].reshape(p.shape[0], *prior.shape)


def estimate_conditions(pilots: torch.Tensor, config: SystemConfig, prior: ConditionPrior | None = None,
                        method: str = "ml") -> dict[str, torch.Tensor]:
    """Returns per-frame conditions estimated from the pilots: a dict of [B] float32 tensors.

    ``pilots`` [B, P_f, P_t] or [B, P] complex64: LS pilots, on any device. ``prior`` defaults to
    :meth:`ConditionPrior.from_config` (25 ns x 50 Hz x 0.5 dB grid over the config's ranges).
    ``method``: ``"ml"`` (the grid point of largest likelihood; with the uniform prior also
    the MAP estimate) or ``"posterior-mean"`` (the prior-weighted mean of each axis; SNR in dB).

    Keys as in frame ``meta``: ``snr_db`` [dB, the config's convention], ``delay_spread_s``
    [s], ``doppler_hz`` [Hz], ``noise_var`` (per-RE noise variance of ``snr_db``).
    """
    if method not in ("ml", "posterior-mean"):
        raise ConfigError("method", method, "must be ml or posterior-mean")
    prior = prior or ConditionPrior.from_config(config)
    p = _check_pilots(pilots, config)
    bank = _bank(config, prior, p.device)
    nd, nf, ns = prior.shape
    K, P = bank.evec.shape[0], p.shape[1]
    out = torch.empty(p.shape[0], 3, dtype=torch.float64, device=p.device)
    for sl in _chunks(bank, p.shape[0], K * (ns + 3 * P)):
        ll = _log_likelihood(bank, p[sl])[0].reshape(-1, nd, nf, ns)
        if method == "ml":
            best = ll.flatten(1).argmax(1)
            d, f, s = best // (nf * ns), (best // ns) % nf, best % ns
            out[sl] = torch.stack([bank.ds[d], bank.fd[f], bank.snr_db[s]], 1)
        else:
            w = torch.softmax(ll.flatten(1), 1).reshape(-1, nd, nf, ns)
            out[sl] = torch.stack([w.sum((2, 3)) @ bank.ds, w.sum((1, 3)) @ bank.fd, w.sum((1, 2)) @ bank.snr_db], 1)
    snr = out[:, 2].float()
    return {"snr_db": snr, "delay_spread_s": out[:, 0].float(), "doppler_hz": out[:, 1].float(),
            "noise_var": config.noise_variance(snr).float()}


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
        self.genie = GenieLMMSE(config)
        label = "ML" if method == "ml" else method
        self.given = (f"{profile_label(config.channel.profile)} shape; delay spread, Doppler and SNR estimated "
                      f"from pilots ({label} over {self.prior.describe()})")

    def estimate(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        """Returns H_hat [B, F, T] complex64 from LS pilots [B, P_f, P_t] or [B, P]."""
        cond = estimate_conditions(pilots, self.config, self.prior, self.method)
        return self.genie.estimate(pilots, cond)


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
                      "posterior-weighted LMMSE bank")

    def estimate(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        """Returns H_hat [B, F, T] complex64 from LS pilots [B, P_f, P_t] or [B, P]."""
        p = _check_pilots(pilots, self.config)
        bank = _bank(self.config, self.prior, p.device)
        nd, nf, ns = self.prior.shape
        layout = self.config.ofdm.pilot_layout
        kron = layout.is_kronecker
        (F, T), (Pf, Pt) = self.config.ofdm.grid_shape, (layout.pilot_shape if kron else (layout.num_pilots, 1))
        K, P = bank.evec.shape[0], p.shape[1]
        out = torch.empty(p.shape[0], F, T, dtype=torch.complex64, device=p.device)
        per_frame = K * (ns + 6 * P) + 2 * nd * Pf * T + 2 * F * T + (0 if kron else 2 * nd * P * T)
        for sl in _chunks(bank, p.shape[0], per_frame):
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


def prior_average_stats(config: SystemConfig, prior: ConditionPrior) -> _Stats:
    """Returns the covariance blocks averaged over the prior's (ds, fd) grid, for a fixed LMMSE.

    Under a uniform prior on a product grid the average of ``sum_j F_j(ds) (x) T_j(fd)`` is
    ``sum_j mean_ds F_j (x) mean_fd T_j``: one Kronecker term per covariance term (B = 1).
    """
    f_hp, t_hp, f_pp, t_pp = separable_blocks(config, prior)
    mean = lambda blocks: [b.mean(0, keepdim=True) for b in blocks]  # noqa: E731
    # the frequency and time blocks are independent under the product prior, so the mean of
    # their elementwise product (a scattered layout) is the product of their means too
    return _Stats(mean(f_hp), mean(t_hp), mean(f_pp), mean(t_pp), config.ofdm.pilot_layout.is_kronecker)
