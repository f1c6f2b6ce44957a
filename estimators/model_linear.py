"""Linear: one learned affine map from the ``P`` pilots to the ``F*T`` grid (a learned LMMSE-like interpolator)."""
from __future__ import annotations

import torch
from torch import nn

from wavefront.estimators.registry import EstimatorModel, register_model


@register_model("linear")
class Linear(EstimatorModel):
    """``[N, P] (or [N, P_f, P_t]) -> [N, F, T]`` by one ``nn.Linear``; real and imaginary parts share it."""

    def __init__(self, system_config):
        super().__init__(system_config)
        f, t = self.grid_shape
        self.linear = nn.Linear(self.num_pilots, f * t)

    def forward_real(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.linear(x.reshape(x.shape[0], -1)).reshape(x.shape[0], *self.grid_shape)
