"""ConvNeXt-style estimator: refine the linearly interpolated LS grid with ConvNeXt blocks (Liu et al., 2022)."""
from __future__ import annotations

import torch
from torch import nn

from wavefront.estimators.blocks import PilotInterpolator
from wavefront.estimators.registry import EstimatorModel, register_model


class ConvNeXtBlock(nn.Module):
    """Depthwise k x k conv, LayerNorm over channels, pointwise 4C + GELU + pointwise C, layer scale, residual."""

    def __init__(self, channels: int, kernel_size=7, expansion=4, layer_scale=1e-6):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pw1 = nn.Linear(channels, expansion * channels)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(expansion * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), float(layer_scale)))

    def forward(self, x):
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.pw2(self.act(self.pw1(self.norm(h)))) * self.gamma
        return x + h.permute(0, 3, 1, 2)


@register_model("convnext")
class ConvNeXtEstimator(EstimatorModel):
    """Interpolated LS grid + a learned correction: stem 3x3 -> ``depth`` ConvNeXt blocks -> 3x3 head."""

    def __init__(self, system_config, channels=32, depth=4, kernel_size=7):
        super().__init__(system_config)
        self.interp = PilotInterpolator(self.ofdm)
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(channels, kernel_size) for _ in range(depth)))
        self.head = nn.Conv2d(channels, 1, 3, padding=1)

    def forward_real(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        base = self.interp(x).unsqueeze(1)
        return (base + self.head(self.blocks(self.stem(base)))).squeeze(1)
