"""What a receiver can know about the channel conditions: the prior, the pilots' likelihood, the estimates.

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
- the estimators that use them live in :mod:`wavefront.sim.prior_lmmse` (``lmmse-estimated``,
  ``mmse-bayes``, ``lmmse-bank``).

Speed (issue 24). The ML estimate screens the whole grid in single precision with a proven
error bound and decides among the few hypotheses the bound cannot separate in double
precision, so its argmax is the float64 one (:func:`_ml_index`); a one-term Kronecker bank
(TDL-A/B/C on a Kronecker layout) is handled factor by factor (:class:`_Fast`); ``mmse-bayes`` on
it weighs the hypotheses in powers of two (``exp2``) and sums over the Dopplers in a truncated
basis of the time responses (:func:`~wavefront.sim.prior_lmmse._separable`).
``lmmse-estimated`` on a one-term Kronecker bank applies the ML hypothesis's filter in the
bank's eigenbasis, with no solve (:func:`~wavefront.sim.prior_lmmse._eigen_lmmse`: the genie's at
the ML conditions to the complex64 output's rounding); otherwise it takes the genie's covariance
blocks at the grid points from a cache, so its output is the genie's at the ML conditions bit for
bit. Caches: :func:`_bank` (per config, prior and device; ``_Bank.memory_bytes``, paper prior:
about 11 MB), :func:`~wavefront.sim.prior_lmmse._eigen_responses` (0.3 MB), :func:`_genie_blocks` (0.3 MB),
:func:`_cluster_bank_cached` and :func:`fit_bank_groups` (``lmmse-bank``: under 1 MB), 8 entries each.

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
from wavefront.sim.config import SystemConfig
from wavefront.sim.lmmse import _Stats, combine_terms
from wavefront.sim.pilots import flat_pilots
from wavefront.sim.profiles import channel_profile
from wavefront.sim.statistics import covariance_terms

_BUDGET_CPU = 1 << 21  # float64 elements of per-chunk temporaries: about 16 MB, cache-friendly
_VAR_REL = 1e-9  # a posterior variance's spread term skips hypotheses of weight below this (mmse-bayes, SISO and MIMO)
_BUDGET_GPU = 1 << 26  # on a GPU the chunks only bound memory (about 0.5 GB)


# The most points of one prior axis: the default prior has 12 x 20 x 51; 0:1e9 Hz at 50 Hz asked for 37 GB at once.
MAX_AXIS_POINTS = 1000


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
    if n > MAX_AXIS_POINTS:
        raise ConfigError(f"prior.{field}", list(value) if isinstance(value, (tuple, list)) else value,
                          f"spans {n} grid points at the {step:g} step; at most {MAX_AXIS_POINTS} per axis (every "
                          "point holds covariance blocks; narrow the range, or check its unit)")
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
    """The prior's hypotheses, precomputed on one device (cached per config, prior and device).

    ``k = d N_fd + f`` indexes the ``(ds_d, fd_f)`` pairs, ``s`` the noise levels.
    ``evec`` [K, P, P] c128: eigenvectors of ``R_p`` (eigenvalues ``lam`` enter through ``inv_eig``);
    ``inv_eig`` [K, S, P] f64: ``1 / (lam + sigma_s^2)``; ``logdet`` [K, S] f64;
    ``f_hp[j]`` [N_ds, F, P_f] and ``t_hp[j]`` [N_fd, T, P_t] c128: term ``j`` of ``R_hp``.
    ``rows32`` [K P, P] c64: the rows of every ``U^H``, so ``U^H p`` for a batch is one product;
    ``screen32`` [K, S, P + 1] f32: ``[inv_eig, logdet]`` in single precision, and
    ``logdet_max = max |logdet|``: for the likelihood screen (:func:`_screen`, :func:`_ml_index`);
    ``inv32_t`` [K, P + 1, S] f32: the transposed ``inv_eig`` and a row of ones, so that one
    product with the posterior weights ``w`` [K, S, b] gives ``sum_s w_s / (lam + sigma_s^2)`` and,
    in row ``P``, the weights' mass (``mmse-bayes``); ``trace_max = max sum_p inv_eig`` for the
    screen's error bound.

    A Kronecker layout whose covariance is one Kronecker term (TDL-A/B/C, no LOS term) also has
    ``fast``: ``R_p(d, f) = F_d (x) T_f``, so its eigenvectors are ``U_f,d (x) U_t,f`` and its
    eigenvalues ``a_d (x) b_f`` (two small eigendecompositions per axis instead of ``K`` of
    [P, P]), and ``mmse-bayes`` applies its filters factor by factor (see :class:`_Fast`).
    """

    ds: torch.Tensor
    fd: torch.Tensor
    snr_db: torch.Tensor
    noise_var: torch.Tensor
    evec: torch.Tensor
    rows32: torch.Tensor
    inv_eig: torch.Tensor
    logdet: torch.Tensor
    f_hp: list
    t_hp: list
    screen32: torch.Tensor | None = None
    inv32_t: torch.Tensor | None = None
    logdet_max: float = 0.0
    trace_max: float = 0.0
    fast: "_Fast | None" = None

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the bank's tensors (paper prior, TDL-A, 12 x 2 pilots: about 11 MB, of which ``mmse-bayes``'s
        own ``inv_bits`` and ``inv32_t`` take 2.4 MB)."""
        tensors = [self.ds, self.fd, self.snr_db, self.noise_var, self.evec, self.rows32, self.inv_eig, self.logdet,
                   self.screen32, self.inv32_t, *self.f_hp, *self.t_hp]
        total = sum(t.numel() * t.element_size() for t in tensors if t is not None)
        return total + (self.fast.memory_bytes if self.fast is not None else 0)


@dataclass
class _Fast:
    """The separable filters of a one-term Kronecker bank (see :class:`_Bank`).

    The eigen-index is ``p = (j, i)``: ``j`` over the time factor's ``P_t`` directions, ``i``
    over the frequency factor's ``P_f``. ``keep`` [R] int64: the kept ``(d, i)`` rows of the
    ``[N_ds P_f]`` frequency directions; ``g = q @ gam`` (``q`` [F, r], ``gam`` [r, R] c64): their
    ``A_d u_(d,i)`` (``A_d`` the frequency block of ``R_hp``), truncated to rank ``r`` at 1e-8 of
    its largest singular value (paper prior, TDL-A: r = 14 of 120, so ``|error| <= 1e-8 |g| |x|``);
    ``q_t @ h_t`` (``q_t`` [T, r_t], ``h_t`` [r_t, N_fd P_t] c64): column ``(f, j)`` is ``C_f u_(f,j)``
    (``C_f`` the time block of ``R_hp``), truncated the same way (paper prior, TDL-A: r_t = 10 of
    14, so the Doppler sum of ``mmse-bayes`` has 10 outputs per direction instead of 14).
    ``uf_h`` [N_ds P_f, P_f] c64: the stacked ``U_f,d^H``;
    ``ut_c`` [N_fd P_t, P_t] c64: row ``(f, j)`` is ``conj(U_t,f[:, j])``; together they project.
    ``uf_h64`` [N_ds P_f, P_f] and ``ut_conj64`` [N_fd, P_t, P_t] c128: the same in double precision,
    for the ML re-check. ``energy_map`` [N_fd P_t, P_t^2] f32: ``|sum_t u_t x_t|^2`` as a linear
    map of ``x``'s second moments ``|x_t|^2, Re and Im of x_t conj(x_t')`` (see :func:`_ml_screen`);
    [P_t, P_t^2] where one time basis serves every Doppler (:func:`_shared_basis`: two pilot symbols,
    Jakes fading), whose energies are then one set per delay spread;
    ``inv32`` [K, S, P] and ``ld32`` [K, S, 1] f32: the screen's two parts; ``tj_max`` ``= max_(k, s, i)
    sum_j inv_eig`` for its error bound. ``inv_bits`` [K, S, P] and ``ld_bits`` [K, S, 1] f32: the
    same parts times ``log2(e)``, so that ``mmse-bayes``'s screen gives ``-log2 L`` and its weights
    are powers of two (``exp2`` is several times faster than ``exp`` on a CPU; rounding the scaled
    parts costs the same relative ``2^-24`` as rounding the unscaled ones).

    A frequency direction ``(d, i)`` is dropped when ``a_(d,i) max_(f,j) b_(f,j) <= 1e-9 sigma_min^2``:
    its pilot signal power is then below 1e-9 of the smallest noise level, and its term
    ``R_hp u c (u^H p)`` has per-RE power below about ``lam / sigma^2 <= 1e-9`` of the pilots'
    (``|v^H R_hp u|^2 <= (v^H R v) lam`` by Cauchy-Schwarz): far below 0.01 dB of any MSE above
    -60 dB. The likelihood keeps every direction. Paper prior, TDL-A, 12 x 2: 102 of 144 kept.
    """

    keep: torch.Tensor
    q: torch.Tensor
    gam: torch.Tensor
    h_t: torch.Tensor
    uf_h: torch.Tensor
    ut_c: torch.Tensor
    uf_h64: torch.Tensor
    ut_conj64: torch.Tensor
    energy_map: torch.Tensor
    inv32: torch.Tensor
    ld32: torch.Tensor
    tj_max: float
    inv_bits: torch.Tensor | None = None
    ld_bits: torch.Tensor | None = None
    q_t: torch.Tensor | None = None

    def __post_init__(self):
        # the real [[Re, -Im], [Im, Re]] forms that mmse-bayes multiplies (re; im) planes with
        self.ut_c2, self.h_t2, self.gam2 = (_real_block(a) for a in (self.ut_c, self.h_t, self.gam))

    @property
    def memory_bytes(self) -> int:
        tensors = (self.keep, self.q, self.gam, self.h_t, self.q_t, self.uf_h, self.ut_c, self.uf_h64, self.ut_conj64,
                   self.energy_map, self.inv32, self.ld32, self.inv_bits, self.ld_bits,
                   self.ut_c2, self.h_t2, self.gam2)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def separable_blocks(config: SystemConfig, prior: ConditionPrior, symbol_average: bool = False):
    """Returns ``(f_hp, t_hp, f_pp, t_pp)``: the Kronecker terms over the prior's axes, complex128.

    Term ``j`` of the covariance at ``(ds_d, fd_f)`` is ``f_*[j][d] (x) t_*[j][f]``:
    ``f_hp[j]`` [N_ds, F, P_f], ``t_hp[j]`` [N_fd, T, P_t], ``f_pp[j]`` [N_ds, P_f, P_f],
    ``t_pp[j]`` [N_fd, P_t, P_t]. For a scattered layout ``P_f = P_t = P`` (each pilot's own
    subcarrier and symbol) and the pilot blocks combine elementwise instead of by ``kron``.
    ``symbol_average``: of each symbol's average channel (the label of the time-domain path).
    """
    o = config.ofdm
    prof = channel_profile(config.channel.profile, config.channel.travel_azimuth_deg)
    pf, pt = o.pilot_layout.covariance_columns()
    ds = torch.tensor(prior.delay_spreads_s, dtype=torch.float64)
    fd = torch.tensor(prior.dopplers_hz, dtype=torch.float64)
    # frequency blocks vary with the delay spread only, time blocks with the Doppler only
    avg = {"symbol_average": True} if symbol_average else {}
    f_hp = [a for a, _ in covariance_terms(o, prof, ds, fd[:1], cols_f=pf, cols_t=pt, **avg)]
    t_hp = [b for _, b in covariance_terms(o, prof, ds[:1], fd, cols_f=pf, cols_t=pt, **avg)]
    f_pp = [a for a, _ in covariance_terms(o, prof, ds, fd[:1], rows_f=pf, cols_f=pf, rows_t=pt, cols_t=pt, **avg)]
    t_pp = [b for _, b in covariance_terms(o, prof, ds[:1], fd, rows_f=pf, cols_f=pf, rows_t=pt, cols_t=pt, **avg)]
    return f_hp, t_hp, f_pp, t_pp


# a frequency direction is dropped from the Bayes filters below this fraction of the least noise
_DROP_REL = 1e-9
# and their frequency responses are kept to this fraction of the largest singular value
_RANK_REL = 1e-8
_LOG2_E = 1.0 / math.log(2.0)


def _build_bank(f_hp, t_hp, f_pp, t_pp, kron: bool, noise_var: torch.Tensor, ds, fd, snr_db,
                device: torch.device, extra_noise: torch.Tensor | None = None) -> _Bank:
    """Returns the :class:`_Bank` of blocks ``f_*`` [N_ds, ...], ``t_*`` [N_fd, ...] and noise levels [S] f64.

    ``extra_noise`` [K] f64 (``k = d N_fd + f``): white noise per RE that hypothesis ``k`` adds to every noise
    level (an interference treated as noise: ICI), on the eigenvalues of its ``R_p``; ``None``: none.
    """
    nd, nf = f_pp[0].shape[0], t_pp[0].shape[0]
    fast = None
    if kron and len(f_pp) == 1:
        # one Kronecker term: eigendecompose the [P_f, P_f] and [P_t, P_t] factors only
        a, uf = torch.linalg.eigh(f_pp[0])
        b, ut = torch.linalg.eigh(t_pp[0])
        shared = _shared_basis(t_pp[0], b, ut)
        if shared is not None:  # every Doppler's time block in one basis: the screen's energies are per delay spread
            b, ut = shared
        a, b = a.clamp_min(0.0), b.clamp_min(0.0)  # PSD; rounding leaves tiny negative eigenvalues
        Pf, Pt = a.shape[1], b.shape[1]
        # eigen-index p = (j, i), j the time direction: then y = U^H p laid out [d, f, j, i, b]
        # is [N_ds, (f, j), (i, b)], the shape the Doppler sum of mmse-bayes multiplies
        lam = (a[:, None, None, :] * b[None, :, :, None]).reshape(nd * nf, Pf * Pt)
        evec = (uf[:, None, :, None, None, :] * ut[None, :, None, :, :, None]).reshape(nd * nf, Pf * Pt, Pf * Pt)
        keep = torch.nonzero((a * b.max()).reshape(-1) > _DROP_REL * float(noise_var.min())).reshape(-1)
        g = torch.einsum("dfp,dpi->dfi", f_hp[0], uf).permute(1, 0, 2).reshape(f_hp[0].shape[1], nd * Pf)[:, keep]
        # the kept columns span few dimensions (frequency responses of delays up to a few 100 ns):
        # g = Q Gamma to 1e-8 of its largest singular value
        q, sv, vh = torch.linalg.svd(g, full_matrices=False)
        r = int((sv > _RANK_REL * sv[0]).sum())
        q, gam = q[:, :r], sv[:r, None] * vh[:r]
        h = torch.einsum("ftq,fqj->fjt", t_hp[0], ut).reshape(nf * Pt, -1)
        # the time responses C_f u_(f,j) too: [T, N_fd P_t] = Q_t H_t to 1e-8 of the largest singular value
        q_t, sv, vh = torch.linalg.svd(h.T, full_matrices=False)
        r_t = int((sv > _RANK_REL * sv[0]).sum())
        c64 = torch.complex64
        h_t = (sv[:r_t, None] * vh[:r_t]).to(device, c64)
        fast = _Fast(keep.to(device), q.to(device, c64), gam.to(device, c64), h_t,
                     uf.mH.reshape(nd * Pf, Pf).to(device, c64), ut.conj().transpose(1, 2).reshape(nf * Pt, Pt).to(device, c64),
                     uf.mH.reshape(nd * Pf, Pf).to(device), ut.conj().to(device),
                     _energy_map(ut.conj().transpose(1, 2).reshape(nf * Pt, Pt)[:Pt if shared else None]).to(device),
                     None, None, 0.0, q_t=q_t[:, :r_t].to(device, c64))
    else:
        # R_p for every (d, f) pair, d major
        r_pp = combine_terms([x.repeat_interleave(nf, 0) for x in f_pp], [y.repeat(nd, 1, 1) for y in t_pp], kron)
        lam, evec = torch.linalg.eigh(r_pp)
        lam = lam.clamp_min(0.0)  # R_p is PSD; rounding leaves tiny negative eigenvalues
    denom = lam[:, None, :] + noise_var[None, :, None]  # [K, S, P]
    if extra_noise is not None:
        denom = denom + extra_noise[:, None, None]
    inv, logdet = 1.0 / denom, torch.log(denom).sum(-1)
    dev = lambda x: x.to(device)  # noqa: E731
    screen = torch.cat([inv, logdet[..., None]], -1).float()  # [K, S, P + 1]
    if fast is not None:
        Pt = fast.ut_conj64.shape[-1]
        fast.inv32, fast.ld32 = inv.float().to(device), logdet[..., None].float().to(device)
        fast.inv_bits = (inv * _LOG2_E).float().to(device)
        fast.ld_bits = (logdet[..., None] * _LOG2_E).float().to(device)
        fast.tj_max = float(inv.reshape(inv.shape[0], inv.shape[1], Pt, -1).sum(2).max())
    ones = torch.ones(inv.shape[0], 1, inv.shape[1], dtype=torch.float32)
    return _Bank(dev(ds), dev(fd), dev(snr_db), dev(noise_var), dev(evec), dev(evec.mH.reshape(-1, evec.shape[-1]).to(torch.complex64)),
                 dev(inv), dev(logdet),
                 [dev(x) for x in f_hp], [dev(y) for y in t_hp], dev(screen),
                 dev(torch.cat([screen[..., :-1].mT, ones], 1)),
                 float(logdet.abs().max()), float(inv.sum(-1).max()), fast)


def _shared_basis(t: torch.Tensor, b: torch.Tensor, ut: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Returns ``(b, ut)`` [N_fd, P_t] f64, [N_fd, P_t, P_t] c128 in one basis for every Doppler, or None if there is none.

    ``t`` [N_fd, P_t, P_t] c128: the time blocks of the pilots' covariance; ``b``, ``ut``: their
    eigendecompositions. The basis is the eigenvectors of the block with the widest eigenvalue gap;
    it is kept when it diagonalizes every block to ``1e-12`` of the block's largest entry, and each
    block's eigenvalues are then its diagonal in that basis (not sorted). Two pilot symbols always
    share one (a real symmetric Toeplitz [2, 2] block has eigenvectors ``(1, +-1) / sqrt(2)``: Jakes
    fading), as does one; more symbols, or a complex correlation (a LOS term), in general do not.
    """
    Pt = t.shape[-1]
    gap = (b[:, 1:] - b[:, :-1]).amin(1) if Pt > 1 else b[:, 0]
    ref = ut[int(gap.argmax())]
    d = ref.mH @ t @ ref
    diag = torch.diagonal(d, dim1=-2, dim2=-1)
    off = (d - torch.diag_embed(diag)).abs().amax((1, 2))
    if bool((off > 1e-12 * t.abs().amax((1, 2))).any()):
        return None
    return diag.real.contiguous(), ref.expand_as(ut).contiguous()


@lru_cache(maxsize=8)
def _bank(config: SystemConfig, prior: ConditionPrior, device: torch.device) -> _Bank:
    """Returns the prior's :class:`_Bank`; cached by (config, prior, device): 8 entries of ``memory_bytes`` each."""
    f_hp, t_hp, f_pp, t_pp = separable_blocks(config, prior)
    snr = torch.tensor(prior.snrs_db, dtype=torch.float64)
    nv = config.noise_variance(snr).to(torch.float64)
    return _build_bank(f_hp, t_hp, f_pp, t_pp, config.ofdm.pilot_layout.is_kronecker, nv,
                       torch.tensor(prior.delay_spreads_s, dtype=torch.float64),
                       torch.tensor(prior.dopplers_hz, dtype=torch.float64), snr, device)


def _check_pilots(pilots: torch.Tensor, config: SystemConfig) -> torch.Tensor:
    """Returns the pilots as [B, P] complex128 (from [B, P_f, P_t] or [B, P]), or raises ConfigError naming the rule."""
    p = flat_pilots(pilots, config.ofdm.pilot_layout)
    if not pilots.is_complex():
        raise ConfigError("pilots.dtype", str(pilots.dtype), "must be complex (LS pilots)")
    return p.to(torch.complex128)


def _chunks(bank: _Bank, n: int, per_frame: int, budget_cpu: int = _BUDGET_CPU):
    """Yields frame slices whose temporaries (``per_frame`` float64 elements a frame) fit the device's budget."""
    budget = budget_cpu if bank.evec.device.type == "cpu" else _BUDGET_GPU
    c = max(1, budget // max(per_frame, 1))
    c = max(1, -(-n // max(1, -(-n // c))))  # as many chunks as needed, of equal size: a small tail chunk costs a whole call's overhead
    for s in range(0, n, c):
        yield slice(s, min(n, s + c))


def _project(bank: _Bank, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (``U^H p`` [K, P, b] complex64, ``[|U^H p|^2; 1]`` [K, P + 1, b] float32) for pilots [b, P] c128.

    Each entry of ``U^H p`` is within ``eps`` (:func:`_projection_error`) of the exact one, which
    :func:`_ml_index` accounts for. The trailing row of ones carries ``logdet`` in :func:`_screen`.
    """
    K, P, b = bank.inv_eig.shape[0], p.shape[1], p.shape[0]
    if bank.fast is None:
        y = (bank.rows32 @ p.T.to(torch.complex64)).reshape(K, P, b)
    else:  # U_f,d^H P conj(U_t,f) for every (d, f): ~10x fewer products than the dense [K P, P] one
        uf_h, ut_c = bank.fast.uf_h, bank.fast.ut_c
        nd, Pf = uf_h.shape[0] // uf_h.shape[1], uf_h.shape[1]
        Pt = P // Pf
        # the first factor in double precision (it is cheap), so only the short second sum rounds
        x = bank.fast.uf_h64 @ p.reshape(b, Pf, Pt).permute(1, 2, 0).reshape(Pf, Pt * b)  # [(d, i), (t, b)]
        x = x.reshape(nd, Pf, Pt, b).transpose(1, 2).reshape(nd, Pt, Pf * b).to(torch.complex64)
        y = (ut_c @ x).reshape(K, P, b)  # [d, (f, j), (i, b)] = [K, P, b] with p = (j, i)
    ext = torch.empty(K, P + 1, b, dtype=torch.float32, device=p.device)
    ext[:, P] = 1.0
    r = torch.view_as_real(y)  # one fused pass: abs() or a sum over the last axis of 2 is several times slower
    torch.addcmul(r[..., 0].square(), r[..., 1], r[..., 1], out=ext[:, :P])
    return y, ext


def _projection_error(bank: _Bank, p: torch.Tensor) -> torch.Tensor:
    """Returns ``eps`` [b] float64: a bound on ``|y32 - y|`` for every entry of :func:`_project`'s ``y``.

    ``u = 2^-24``. Dense: one complex64 dot product of ``P`` terms with ``p`` and ``U`` rounded,
    at most ``(P + 4) sqrt(2) u sum_q |U_qp| |p_q| <= (P + 4) sqrt(2) u ||p||`` (unit columns).
    Separable: ``x = U_f^H P`` is float64, so only its rounding and the ``P_t``-term second
    product count: ``(P_t + 4) sqrt(2) u ||x_(d,i)|| <= (P_t + 4) sqrt(2) u ||p||``. Both doubled.
    """
    n = p.shape[1] if bank.fast is None else bank.fast.ut_c.shape[1]
    return 2.0 * (n + 4) * math.sqrt(2.0) * 2.0 ** -24 * torch.linalg.vector_norm(p, dim=1)


def _energy(y: torch.Tensor) -> torch.Tensor:
    """Returns ``|y|^2`` (float64 for complex128 ``y``)."""
    r = torch.view_as_real(y)
    return torch.addcmul(r[..., 0].square(), r[..., 1], r[..., 1])


def _log_likelihood(bank: _Bank, p: torch.Tensor):
    """Returns (``log L + P log pi`` [b, K, S] float64, ``U^H p`` [b, K, P] complex128) for pilots [b, P] c128."""
    y = torch.einsum("kqp,bq->bkp", bank.evec.conj(), p)
    ll = -bank.logdet - torch.einsum("bkp,ksp->bks", _energy(y), bank.inv_eig)
    return ll, y


def _screen(bank: _Bank, ext: torch.Tensor) -> torch.Tensor:
    """Returns ``-log L`` [K, S, b] float32 (up to ``P log pi``) from ``[e; 1]`` [K, P + 1, b] (:func:`_project`).

    One single-precision product ``[1 / (lam + sigma^2), logdet] @ [e; 1]`` per hypothesis.
    With exact energies its error is at most ``gamma (q + |logdet|)`` (``q = sum_p e_p /
    (lam_p + sigma^2)``, ``gamma = (P + 4) u``): every term of ``q`` is positive, so rounding the
    inputs, the products and ``P`` additions costs a relative ``(P + 3) u`` of ``q + |logdet|``.
    """
    return torch.bmm(bank.screen32, ext)


def _gamma(P: int) -> float:
    """The relative error bound of :func:`_screen`, doubled for the rounding of the bound's own arithmetic."""
    return 2.0 * (P + 4) * 2.0 ** -24


def _energy_map(u: torch.Tensor) -> torch.Tensor:
    """Returns ``A`` [R, n^2] float32 with ``|u_r . x|^2 = A_r . z(x)`` for ``u`` [R, n] complex (see :func:`_moments`)."""
    n = u.shape[1]
    cols = [u[:, t].abs().square() for t in range(n)]
    for t in range(n):
        for t2 in range(t + 1, n):
            c = u[:, t] * u[:, t2].conj()  # 2 Re(u_t x_t conj(u_t' x_t')) = 2 Re(c) Re(z) - 2 Im(c) Im(z)
            cols += [2 * c.real, -2 * c.imag]
    return torch.stack(cols, 1).float()


def _moments(x: torch.Tensor) -> torch.Tensor:
    """Returns ``z(x)`` [.., n^2, m] float32 for ``x`` [.., n, m] complex128: ``|x_t|^2``, then ``Re, Im of x_t conj(x_t')``, ``t < t'``."""
    n = x.shape[-2]
    re, im = x.real, x.imag  # real arithmetic: abs() takes a square root, a product with conj() a copy
    rows = [re[..., t, :].square() + im[..., t, :].square() for t in range(n)]
    for t in range(n):
        for t2 in range(t + 1, n):
            rows += [re[..., t, :] * re[..., t2, :] + im[..., t, :] * im[..., t2, :],
                     im[..., t, :] * re[..., t2, :] - re[..., t, :] * im[..., t2, :]]
    return torch.stack(rows, -2).float()


def _freq_directions(fast: _Fast, p: torch.Tensor) -> torch.Tensor:
    """Returns ``x = U_f,d^H P`` [N_ds, P_f, P_t, b] complex128 for pilots [b, P] c128 (``P`` [P_f, P_t] per frame).

    The first, frequency factor of every projection ``U^H p`` of a one-term Kronecker bank, in
    double precision (it is cheap); the time factor follows per Doppler.
    """
    b, P = p.shape
    Pt = fast.ut_conj64.shape[-1]
    Pf = P // Pt
    nd = fast.uf_h64.shape[0] // Pf
    return (fast.uf_h64 @ p.reshape(b, Pf, Pt).permute(1, 2, 0).reshape(Pf, Pt * b)).reshape(nd, Pf, Pt, b)


def _ml_screen(bank: _Bank, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (``-log L`` [K, S, b] f32, a bound ``delta_e`` [b] f64 on its energy rounding, ``x`` [N_ds, P_f, P_t, b] c128).

    A one-term Kronecker bank: ``x = U_f,d^H P`` in float64 (cheap), then every energy
    ``|y_(f,j),(d,i)|^2 = |sum_t conj(U_t,f[t, j]) x_(d,i),t|^2`` at once as one real product of
    :func:`_energy_map` with ``x``'s second moments (no complex ``y``), then ``logdet + inv @ e``.
    Each energy is within ``c u ||x_(d,i)||^2`` of the exact one, ``c = 2 (P_t^2 + 4)``: the
    float32 product of ``P_t^2`` terms with ``sum |A| |z| <= (sum_t |u_t| |x_t|)^2 <= ||x_(d,i)||^2``
    (``|Re a Re z| + |Im a Im z| <= |a| |z|``), doubled. Over ``p``:
    ``sum_(j,i) inv_(j,i) c u ||x_(d,i)||^2 <= c u tj_max ||p||^2``, since ``sum_i ||x_(d,i)||^2 = ||p||^2``.

    Where one time basis serves every Doppler the energies do not depend on the Doppler: one set
    [P, b] per delay spread, and one product ``[N_fd S, P] @ [P, b]`` per delay spread scores all
    its Dopplers (the same arithmetic in 20 times fewer, larger products on the paper prior).
    """
    fast, (b, P) = bank.fast, p.shape
    K, S = bank.logdet.shape
    x = _freq_directions(fast, p)
    nd, Pf, Pt = x.shape[:3]
    z = _moments(x.transpose(1, 2).reshape(nd, Pt, Pf * b))  # [d, moments, (i, b)]
    # [d, (f, j), (i, b)] = [K, P, b]; with a shared time basis [d, j, (i, b)] = [N_ds, P, b], each row of
    # products then scoring all N_fd Dopplers of its delay spread ([N_fd S, P] @ [P, b])
    e = (fast.energy_map @ z).reshape(-1, P, b)
    n = e.shape[0]
    nll = torch.baddbmm(fast.ld32.view(n, -1, 1), fast.inv32.view(n, -1, P), e).view(K, S, b)
    return nll, 2.0 * (Pt * Pt + 4) * 2.0 ** -24 * fast.tj_max * torch.linalg.vector_norm(p, dim=1).square(), x


def _ml_index(bank: _Bank, p: torch.Tensor) -> torch.Tensor:
    """Returns the flat index ``k S + s`` [b] int64 of each frame's largest log-likelihood (first on ties).

    ``p`` [b, P] complex128: the pilots. The same index as ``argmax`` of the float64
    log-likelihood over the whole grid. The single-precision screen (:func:`_project`,
    :func:`_screen`) gives ``m = min -log L``; an entry's error is at most
    ``gamma (q + |logdet|) + 2 eps sqrt(T q) + eps^2 T`` (``T = sum_p 1 / (lam_p + sigma^2)``, by
    Cauchy-Schwarz on ``sum_p |e32_p - e_p| / (lam_p + sigma^2)``; ``eps`` from :func:`_project`).
    Near the minimum ``q + |logdet| <= |m| + Delta + 2 L_max`` (``L_max = max |logdet|``), so the
    float64 maximum lies among the ``(d, f)`` pairs whose float32 minimum over the noise levels is
    within ``Delta`` (twice that error bound) of ``m``: a few per frame on the paper prior
    (``Delta`` about 0.1 nats). Only those are evaluated in float64, at every noise level.
    """
    b, P = p.shape
    K, S = bank.logdet.shape
    if bank.fast is None:
        nll, eps, delta_e = _screen(bank, _project(bank, p)[1]), _projection_error(bank, p), 0.0
    else:
        (nll, delta_e, x), eps = _ml_screen(bank, p), 0.0
    nll_k = nll.amin(1)  # [K, b]: the best noise level per pair
    m = nll_k.amin(0).double()
    delta = torch.ones_like(m)
    for _ in range(3):  # a fixed point: the bound uses |nll| <= |m| + Delta
        big = m.abs() + delta + 2.0 * bank.logdet_max
        delta = 2.0 * (_gamma(P) * big + 2.0 * eps * torch.sqrt(bank.trace_max * big) + eps * eps * bank.trace_max
                       + delta_e)
    bound = (m + delta + 1e-6 * (m.abs() + 1.0)).float()  # rounded to float32 with room to spare
    ki, bi = torch.nonzero(nll_k <= bound, as_tuple=True)  # candidate pairs, then their candidate levels:
    row, si = torch.nonzero(nll[ki, :, bi] <= bound[bi][:, None], as_tuple=True)
    if bank.fast is None:
        y = (bank.evec[ki].conj() * p[bi][:, :, None]).sum(1)  # float64 from here on
    else:  # the same through the factors: x = U_f,d^H P from the screen, then conj(U_t,f) per candidate
        uf_h, ut_conj = bank.fast.uf_h64, bank.fast.ut_conj64
        nd = uf_h.shape[0] // uf_h.shape[1]
        nf = K // nd
        # [n, P_f, P_t] x [n, P_t, P_t] by broadcasting: a batched product of tiny matrices costs
        # microseconds per matrix in overhead
        y = (x[ki // nf, :, :, bi, None] * ut_conj[ki % nf][:, None]).sum(2).transpose(1, 2).reshape(-1, P)
    k, bi = ki[row], bi[row]
    exact = -bank.logdet[k, si] - (_energy(y)[row] * bank.inv_eig[k, si]).sum(-1)
    flat = k * S + si
    best = torch.full((b,), -math.inf, dtype=exact.dtype, device=p.device).scatter_reduce(0, bi, exact, "amax")
    tie = exact == best[bi]
    return torch.full((b,), K * S, dtype=torch.long, device=p.device).scatter_reduce(0, bi[tie], flat[tie], "amin")


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
    if method == "ml":  # the float64 argmax, through a float32 screen (see _ml_index)
        d, f, s = _ml_grid_index(bank, p, prior.shape)
        out = torch.stack([bank.ds[d], bank.fd[f], bank.snr_db[s]], 1)
    else:
        out = torch.empty(p.shape[0], 3, dtype=torch.float64, device=p.device)
        for sl in _chunks(bank, p.shape[0], K * (ns + 3 * P)):
            ll = _log_likelihood(bank, p[sl])[0].reshape(-1, nd, nf, ns)
            w = torch.softmax(ll.flatten(1), 1).reshape(-1, nd, nf, ns)
            out[sl] = torch.stack([w.sum((2, 3)) @ bank.ds, w.sum((1, 3)) @ bank.fd, w.sum((1, 2)) @ bank.snr_db], 1)
    snr = out[:, 2].float()
    return {"snr_db": snr, "delay_spread_s": out[:, 0].float(), "doppler_hz": out[:, 1].float(),
            "noise_var": config.noise_variance(snr).float()}


def _ml_grid_index(bank: _Bank, p: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns each frame's ML grid point as indices ``(d, f, s)`` [B] int64, for pilots [B, P] c128, chunk by chunk."""
    (K, S), P = bank.logdet.shape, p.shape[1]
    nd, nf, ns = shape
    # per frame, in float64 elements: y [K, P] c64, [e; 1] [K, P + 1] f32 and -log L [K, S] f32; the
    # separable screen holds only e [K, P] and -log L [K, S] f32
    per_frame = K * (2 * P + S + 1) // 2 if bank.fast is None else K * (P + S) // 2
    best = torch.cat([_ml_index(bank, p[sl]) for sl in _chunks(bank, p.shape[0], per_frame)])
    return best // (nf * ns), (best // ns) % nf, best % ns


def _real_block(a: torch.Tensor) -> torch.Tensor:
    """Returns ``[[Re a, -Im a], [Im a, Re a]]`` [2m, 2n] float32 for ``a`` [m, n] complex: ``a`` acting on (re; im) planes."""
    return torch.cat([torch.cat([a.real, -a.imag], 1), torch.cat([a.imag, a.real], 1)], 0).float()


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
