"""ESPCN-style estimator (Shi et al., 2016): features on the pilot grid, sub-pixel shuffle to the full grid."""
from __future__ import annotations

import torch
from torch import nn

from wavefront.estimators.blocks import PilotInterpolator, integer_upsampling
from wavefront.estimators.registry import EstimatorModel, register_model


def pixel_shuffle_2d(x: torch.Tensor, r_f: int, r_t: int) -> torch.Tensor:
    """Returns ``[N, P_f*r_f, P_t*r_t]`` from ``[N, r_f*r_t, P_f, P_t]`` (sub-pixel shuffle with unequal factors)."""
    n, _, p_f, p_t = x.shape
    return x.reshape(n, r_f, r_t, p_f, p_t).permute(0, 3, 1, 4, 2).reshape(n, p_f * r_f, p_t * r_t)


@register_model("espcn")
class ESPCNEstimator(EstimatorModel):
    """Interpolated LS grid + a correction computed on the pilot grid (5x5, 3x3, 3x3 convs, tanh) and sub-pixel shuffled."""

    def __init__(self, system_config, channels=(64, 32)):
        super().__init__(system_config)
        self.r_f, self.r_t = integer_upsampling(self.ofdm, "espcn")
        c1, c2 = channels
        self.interp = PilotInterpolator(self.ofdm)
        self.features = nn.Sequential(nn.Conv2d(1, c1, 5, padding=2), nn.Tanh(), nn.Conv2d(c1, c2, 3, padding=1), nn.Tanh(),
                                      nn.Conv2d(c2, self.r_f * self.r_t, 3, padding=1))

    def forward_real(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.interp(x) + pixel_shuffle_2d(self.features(x.unsqueeze(1)), self.r_f, self.r_t)
