"""ReEsNet (Li et al., 2019) and InterpolateNet (Luan & Thompson, 2021): residual convolutions on the pilot grid, then upsampling.

Both share the trunk; they differ in how the pilot grid grows to the full grid:
ReEsNet learns a transposed convolution (whole upsampling factors only), InterpolateNet
resizes bilinearly (any grid) and refines.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from wavefront.estimators.blocks import ResidualBlock, integer_upsampling, require_pilot_grid
from wavefront.estimators.registry import EstimatorModel, register_model


class ResidualTrunk(nn.Module):
    """``[N, 1, P_f, P_t] -> [N, C, P_f, P_t]``: conv in, ``num_blocks`` residual blocks, conv, long skip."""

    def __init__(self, channels=16, num_blocks=4):
        super().__init__()
        self.head = nn.Conv2d(1, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(num_blocks)))
        self.tail = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        h = self.head(x)
        return h + self.tail(self.blocks(h))


@register_model("reesnet")
class ReEsNet(EstimatorModel):
    """Residual trunk on the pilot grid, transposed conv by ``(F/P_f, T/P_t)``, 3x3 conv to one plane."""

    def __init__(self, system_config, channels=16, num_blocks=4):
        super().__init__(system_config)
        r_f, r_t = integer_upsampling(self.ofdm, "reesnet")
        self.trunk = ResidualTrunk(channels, num_blocks)
        self.up = nn.ConvTranspose2d(channels, channels, kernel_size=(r_f, r_t), stride=(r_f, r_t))
        self.out = nn.Conv2d(channels, 1, 3, padding=1)

    def forward_real(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.out(self.up(self.trunk(x.unsqueeze(1)))).squeeze(1)


@register_model("interpolatenet")
class InterpolateNet(EstimatorModel):
    """Residual trunk on the pilot grid, bilinear resize to ``(F, T)``, two 3x3 convs to one plane."""

    def __init__(self, system_config, channels=16, num_blocks=4):
        super().__init__(system_config)
        require_pilot_grid(self.ofdm, "interpolatenet")
        self.trunk = ResidualTrunk(channels, num_blocks)
        self.out = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, 1, 3, padding=1))

    def forward_real(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(self.trunk(x.unsqueeze(1)), size=self.grid_shape, mode="bilinear", align_corners=False)
        return self.out(h).squeeze(1)
