"""Antenna attention: a per-antenna estimate, then learned smoothing across one user's R receive antennas.

A user's channels at nearby antennas of an array are correlated (``R_rx``), which the per-pair
estimators (:class:`~wavefront.sim.mimo.PerUser`) ignore and the genie over space
(:class:`~wavefront.sim.mimo.MimoGenieLMMSE`) is told. This model learns to use it from the
pilots alone:

1. **per pair**: a :class:`~wavefront.estimators.model_gated_lmmse.GatedLMMSE` on each antenna's
   LS pilots, ``h_r`` [F, T] (the same weights for every antenna);
2. **across antennas**: one attention layer whose tokens are the antennas. Token ``r`` embeds the
   log pilot energy and the log residual ``|p_r - h_r(pilots)|^2`` (what the SNR is); the logit of
   ``(r, s)`` is ``q_r . k_s / sqrt(d)`` plus a small MLP of the pair's sample correlation
   ``c_rs = <h_r, h_s> / (|h_r| |h_s|)`` over the grid (``Re c``, ``|c|``, ``r == s``);
3. **mixing**: ``out_r = g_r ((1 - a_r) h_r + a_r sum_s A_rs h_s)`` with ``A = softmax(logits)``
   over ``s``, a mixing share ``a_r`` in (0, 1) and a gain ``g_r`` in (0, 2), both from token r.
   Averaging correlated antennas lowers the noise, so the per-pair shrinkage may be undone (g > 1).

No antenna positions enter: the output is permutation-equivariant over antennas and the model
runs at any R (R = 1 at initialisation is the per-pair model exactly). Its learned parts act on
the gated stage's eigen-coordinates and on the estimates, so like ``gated-lmmse`` it serves its
layout moved along the subcarriers (every user of a Kronecker MIMO pattern).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from wavefront.errors import ConfigError
from wavefront.estimators.model_gated_lmmse import GatedLMMSE
from wavefront.estimators.registry import EstimatorModel, register_model


@register_model("antenna-attention")
class AntennaAttention(EstimatorModel):
    """``[B, R, P_f, P_t]`` (or ``[B, R, P]``; ``[B, P_f, P_t]`` as R = 1) complex -> ``[B, R, F, T]`` complex64.

    Hyper-parameters: those of ``gated-lmmse`` for the per-pair stage, ``attention_dim`` (query
    and key width) and ``pair_hidden`` (width of the pair-bias MLP). Pilots only: no conditions.
    """

    uses_conditions = False
    frequency_shift_invariant = True
    antenna_axis = True  # MIMO wrappers hand it one user's antennas together, not pair by pair

    def __init__(self, system_config, delay_spread_bins: int = 4, doppler_bins: int = 4,
                 prior_delay_spread_ns: list = (25.0, 300.0), prior_doppler_hz: list = (50.0, 1000.0),
                 prior_snr_db: list = (0.0, 30.0), snr_step_db: float = 1.0, hidden: int = 32,
                 attention_dim: int = 16, pair_hidden: int = 16, position_bias: bool = True,
                 max_antenna_distance: int = 16, initial_share: float = 0.1):
        super().__init__(system_config)
        if attention_dim < 1 or pair_hidden < 1:
            raise ConfigError("antenna-attention.attention_dim", attention_dim, "attention_dim and pair_hidden must be >= 1")
        if max_antenna_distance < 1:
            raise ConfigError("antenna-attention.max_antenna_distance", max_antenna_distance, "must be >= 1")
        if not 0.0 < initial_share < 1.0:
            raise ConfigError("antenna-attention.initial_share", initial_share, "must lie in (0, 1)")
        self.per_pair = GatedLMMSE(system_config, delay_spread_bins, doppler_bins, prior_delay_spread_ns,
                                   prior_doppler_hz, prior_snr_db, snr_step_db, hidden)
        F, T = self.grid_shape
        pos = torch.tensor(self.ofdm.pilot_layout.positions)
        self.register_buffer("pilot_flat", pos[:, 0] * T + pos[:, 1], persistent=False)  # [P], layout order
        d = attention_dim
        self.token = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
        self.query, self.key = nn.Linear(d, d), nn.Linear(d, d)
        self.pair = nn.Sequential(nn.Linear(3, pair_hidden), nn.GELU(), nn.Linear(pair_hidden, 1))
        # a ULA's geometry: a learned logit per antenna distance |r - s| (clamped), zero at the start
        self.distance_bias = nn.Parameter(torch.zeros(max_antenna_distance)) if position_bias else None
        self.share = nn.Linear(d, 1)  # mixing share a_r = sigmoid(.), starts at initial_share
        self.gain = nn.Linear(d, 1)  # gain g_r = 1 + tanh(.), starts at 1
        for layer, bias in ((self.share, math.log(initial_share / (1 - initial_share))), (self.gain, 0.0)):
            nn.init.zeros_(layer.weight)
            nn.init.constant_(layer.bias, bias)

    def mixing(self, p: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(A [B, R, R], share [B, R], gain [B, R])`` float32 from pilots ``p`` [B, R, P] and estimates ``h`` [B, R, F*T]."""
        B, R, P = p.shape
        energy = p.abs().square().mean(-1)
        resid = (p - h[..., self.pilot_flat]).abs().square().mean(-1)
        tok = self.token(torch.stack([torch.log(energy + 1e-6), torch.log(resid + 1e-6)], -1))  # [B, R, d]
        gram = torch.einsum("brn,bsn->brs", h, h.conj())
        norm = gram.diagonal(dim1=-2, dim2=-1).real.clamp_min(1e-12).sqrt()
        c = gram / (norm[:, :, None] * norm[:, None, :])
        eye = torch.eye(R, device=p.device).expand(B, R, R)
        bias = self.pair(torch.stack([c.real, c.abs(), eye], -1)).squeeze(-1)  # [B, R, R]
        logits = self.query(tok) @ self.key(tok).transpose(1, 2) / math.sqrt(tok.shape[-1]) + bias
        if self.distance_bias is not None:
            i = torch.arange(R, device=p.device)
            logits = logits + self.distance_bias[(i[:, None] - i[None, :]).abs().clamp_max(len(self.distance_bias) - 1)]
        share = torch.sigmoid(self.share(tok)).squeeze(-1)
        gain = 1.0 + torch.tanh(self.gain(tok)).squeeze(-1)
        return torch.softmax(logits, -1), share, gain

    def forward(self, pilots: torch.Tensor, meta: dict | None = None) -> torch.Tensor:
        """Returns ``[B, R, F, T]`` complex64 (``[B, F, T]`` for SISO pilots ``[B, P_f, P_t]`` or ``[B, P]``).

        ``pilots``: the LS estimates at one user's pilots on every antenna, ``[B, R, P_f, P_t]``
        or ``[B, R, P]`` complex. ``meta`` is unused (pilots only).
        """
        siso = pilots.dim() == 2 or tuple(pilots.shape[1:]) == self.pilot_shape
        if siso:
            pilots = pilots.unsqueeze(1)
        if pilots.dim() not in (3, 4):
            raise ConfigError("pilots", tuple(pilots.shape), f"expected [B, R, {', '.join(map(str, self.pilot_shape))}]")
        B, R = pilots.shape[:2]
        p = pilots.reshape(B, R, -1).to(torch.complex64)
        if p.shape[-1] != self.num_pilots:
            raise ConfigError("pilots", tuple(pilots.shape), f"expected [B, R, {', '.join(map(str, self.pilot_shape))}]")
        h = self.per_pair(p.reshape(B * R, *self.pilot_shape)).reshape(B, R, -1)  # [B, R, F*T]
        A, share, gain = self.mixing(p, h)
        mixed = torch.complex(A @ h.real, A @ h.imag)
        out = (gain * (1.0 - share))[..., None] * h + (gain * share)[..., None] * mixed
        out = out.reshape(B, R, *self.grid_shape)
        return out[:, 0] if siso else out
