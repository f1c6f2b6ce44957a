"""Gated LMMSE: a learned, pilot-gated mixture of K LMMSE filters built from the prior's covariance.

The channel drawn over a prior of conditions (delay spread, Doppler, SNR) is a Gaussian
mixture, and its MMSE estimate is the posterior-weighted bank of LMMSE filters
(``mmse-bayes``, thousands of hypotheses). This model keeps that structure at a fraction
of the cost and learns what the coarse bank gets wrong:

- the (delay spread, Doppler) box of the prior is cut into ``K = n_ds x n_fd`` cells; cell
  ``k`` has the pilot and grid covariances averaged over its fine grid (25 ns x 50 Hz),
  ``R_pp,k = U_k diag(lam_k) U_k^H`` and ``R_hp,k`` (fixed buffers, from the closed-form
  covariance of the config's profile);
- ``S`` noise levels cover the SNR range; the gate is the posterior over the ``K x S``
  hypotheses, from each one's Gaussian log-likelihood of the pilots
  ``-sum_i log(lam_ki + s^2) - sum_i |U_k^H p|_i^2 / (lam_ki + s^2)`` plus learned terms:
  a bias per hypothesis (initialised to the log prior), a log-offset per eigenvalue, and a
  small MLP on the per-cell evidence whose last layer starts at zero;
- the estimate is ``sum_k R_hp,k U_k (c_k * U_k^H p)`` with
  ``c_ki = g_ki sum_s w_ks / (lam_ki + s^2)`` and learned gains ``g`` (initialised to 1).

At initialisation it is the K-cell Bayes mixture; training on prior frames refines the gate
and shrinkage. It reads the pilots only (no conditions), and its parameters number in the
thousands; the filter bank (``K x F T x P`` complex) is a buffer, not trained, rebuilt from
the hyper-parameters and the config's profile when a checkpoint loads.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from wavefront.errors import ConfigError
from wavefront.estimators.registry import EstimatorModel, register_model
from wavefront.sim.profiles import channel_profile
from wavefront.sim.statistics import covariance_terms


def _cells(lo: float, hi: float, step: float, n: int) -> list[np.ndarray]:
    """Returns ``n`` contiguous groups of the fine grid ``lo..hi`` (steps of at most ``step``), ends included."""
    m = 1 if hi == lo else int(math.ceil((hi - lo) / step - 1e-9)) + 1
    fine = np.linspace(lo, hi, m)
    if n < 1 or n > m:
        raise ValueError(f"cannot cut {m} grid points into {n} cells")
    return [g for g in np.array_split(fine, n)]


def prior_bank(system_config, delay_spread_s: tuple, doppler_hz: tuple, n_ds: int, n_fd: int):
    """Returns ``(r_hp [K, F*T, P], r_pp [K, P, P], log_prior [K])`` complex128/float64 over the K cells.

    Cell ``k = d * n_fd + f`` averages the covariance over its fine grid (25 ns x 50 Hz);
    ``log_prior`` is the log of its share of the fine grid (a uniform prior over the box).
    Pilots are in the layout's position order, the grid row-major ``(f, t)``.
    """
    o = system_config.ofdm
    layout = o.pilot_layout
    prof = channel_profile(system_config.channel.profile, system_config.channel.travel_azimuth_deg)
    sf, st = layout.subcarrier_indices.tolist(), layout.symbol_indices.tolist()
    ds_cells = _cells(delay_spread_s[0], delay_spread_s[1], 25e-9, n_ds)
    fd_cells = _cells(doppler_hz[0], doppler_hz[1], 50.0, n_fd)
    F, T = o.grid_shape
    r_hp, r_pp, weight = [], [], []
    for ds in ds_cells:
        for fd in fd_cells:
            # the frequency block depends on the delay spread alone and the time block on the
            # Doppler alone, so the mean over the cell's product grid is the product of means
            fh = [a.mean(0) for a, _ in covariance_terms(o, prof, torch.tensor(ds), torch.tensor(fd[:1]), cols_f=sf)]
            th = [b.mean(0) for _, b in covariance_terms(o, prof, torch.tensor(ds[:1]), torch.tensor(fd), cols_t=st)]
            hp = sum(a[:, None, :] * b[None, :, :] for a, b in zip(fh, th)).reshape(F * T, -1)  # [F*T, P]
            idx_f, idx_t = torch.tensor(sf), torch.tensor(st)
            # rows at the pilots: R_pp[i, j] = sum_k Rf[f_i, f_j] Rt[t_i, t_j]
            pp = sum(a[idx_f] * b[idx_t] for a, b in zip(fh, th))
            r_hp.append(hp)
            r_pp.append(pp)
            weight.append(len(ds) * len(fd))
    w = torch.tensor(weight, dtype=torch.float64)
    return torch.stack(r_hp), torch.stack(r_pp), torch.log(w / w.sum())


@register_model("gated-lmmse")
class GatedLMMSE(EstimatorModel):
    """``[N, P] (or [N, P_f, P_t]) -> [N, F, T]``: a learned, pilot-gated mixture of LMMSE filters (pilots only).

    Hyper-parameters: ``delay_spread_bins`` x ``doppler_bins`` cells of the prior box
    ``prior_delay_spread_ns`` x ``prior_doppler_hz``; noise hypotheses every ``snr_step_db``
    over ``prior_snr_db`` (dB, the config's SNR convention); ``hidden``: width of the gate's MLP.
    """

    uses_conditions = False
    # The learned parts act on the eigen-coordinates of the cells' pilot covariances, which depend on
    # pilot position differences only (the channel is wide-sense stationary in frequency); where the
    # layout sits on the grid lives in the bank, rebuilt from the config. So a checkpoint serves its
    # layout moved along the subcarriers, e.g. every user of a Kronecker MIMO pattern.
    frequency_shift_invariant = True

    def __init__(self, system_config, delay_spread_bins: int = 4, doppler_bins: int = 4,
                 prior_delay_spread_ns: list = (25.0, 300.0), prior_doppler_hz: list = (50.0, 1000.0),
                 prior_snr_db: list = (0.0, 30.0), snr_step_db: float = 1.0, hidden: int = 32):
        super().__init__(system_config)
        for name, v in (("prior_delay_spread_ns", prior_delay_spread_ns), ("prior_doppler_hz", prior_doppler_hz),
                        ("prior_snr_db", prior_snr_db)):
            if len(v) != 2 or not v[0] <= v[1]:
                raise ConfigError(f"gated-lmmse.{name}", list(v), "must be [low, high] with low <= high")
        if not snr_step_db > 0:
            raise ConfigError("gated-lmmse.snr_step_db", snr_step_db, "must be > 0")
        r_hp, r_pp, log_prior = prior_bank(system_config, (prior_delay_spread_ns[0] * 1e-9, prior_delay_spread_ns[1] * 1e-9),
                                           tuple(prior_doppler_hz), delay_spread_bins, doppler_bins)
        lam, evec = torch.linalg.eigh(r_pp)
        lam = lam.clamp_min(1e-9)  # R_pp is PSD; rounding leaves tiny negative eigenvalues
        K, P = lam.shape
        n_snr = 1 if prior_snr_db[1] == prior_snr_db[0] else \
            int(math.ceil((prior_snr_db[1] - prior_snr_db[0]) / snr_step_db - 1e-9)) + 1
        snr = torch.linspace(float(prior_snr_db[0]), float(prior_snr_db[1]), n_snr, dtype=torch.float64)
        noise_var = system_config.noise_variance(snr).to(torch.float64)
        # Buffers are rebuilt from the hyper-parameters and the config's profile (not persistent):
        # a checkpoint holds only the learned parameters (kilobytes, not the 5 MB bank).
        self.register_buffer("evec_h", evec.conj().transpose(1, 2).to(torch.complex64), persistent=False)  # U_k^H [K,P,P]
        self.register_buffer("log_lam", torch.log(lam).float(), persistent=False)  # [K, P]
        self.register_buffer("log_noise", torch.log(noise_var).float(), persistent=False)  # [S]
        # R_hp,k U_k stacked as one [F*T, K*P] matrix: the whole bank is one complex GEMM
        g = torch.einsum("khp,kpq->hkq", r_hp, evec).reshape(r_hp.shape[1], K * P)
        self.register_buffer("bank", g.to(torch.complex64), persistent=False)
        # learned parts
        self.gate_bias = nn.Parameter((log_prior[:, None] - math.log(n_snr)).expand(K, n_snr).float().clone())
        self.lam_offset = nn.Parameter(torch.zeros(K, P))
        self.gain_log = nn.Parameter(torch.zeros(K, P))
        self.mlp = nn.Sequential(nn.Linear(K + 1, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, K))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def gate(self, p: torch.Tensor):
        """Returns ``(w [B, K, S], y [B, K, P] c64, inv [K, S, P])``: hypothesis weights, eigen-coordinates, 1/(lam+s^2)."""
        y = torch.einsum("kqp,bp->bkq", self.evec_h, p)  # U_k^H p
        e = y.real.square() + y.imag.square()  # [B, K, P]
        var = torch.exp(self.log_lam + self.lam_offset)[:, None, :] + torch.exp(self.log_noise)[None, :, None]
        inv = 1.0 / var  # [K, S, P]
        ll = -torch.log(var).sum(-1) - torch.einsum("bkp,ksp->bks", e, inv)  # [B, K, S]
        # the MLP sees each cell's best evidence relative to the frame's best, and the pilot energy
        best = ll.amax(-1)
        feat = torch.cat([(best - best.amax(-1, keepdim=True)) / self.num_pilots,
                          torch.log(e.sum((1, 2)) / (self.num_pilots * e.shape[1]) + 1e-6)[:, None]], 1)
        logits = ll + self.gate_bias + self.mlp(feat)[:, :, None]
        w = torch.softmax(logits.flatten(1), 1).reshape(ll.shape)
        return w, y, inv

    def forward_real(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        # The bank is a complex linear map; rebuild the complex pilots from the stacked halves
        # (the base class's real-view contract) and return the stacked halves of the estimate.
        b = x.shape[0] // 2
        p = torch.complex(x[:b], x[b:]).reshape(b, -1)
        w, y, inv = self.gate(p)
        c = torch.exp(self.gain_log) * torch.einsum("bks,ksp->bkp", w, inv)  # [B, K, P]
        h = (c * y).reshape(b, -1) @ self.bank.transpose(0, 1)  # [B, F*T]
        h = h.reshape(b, *self.grid_shape)
        return torch.cat([h.real, h.imag], 0)
