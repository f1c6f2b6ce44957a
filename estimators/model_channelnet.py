"""ChannelNet (Soltani et al., 2019): the LS grid interpolated, sharpened by SRCNN, denoised by DnCNN."""
from __future__ import annotations

import torch
from torch import nn

from wavefront.estimators.blocks import PilotInterpolator
from wavefront.estimators.registry import EstimatorModel, register_model


def srcnn(channels=(64, 32)) -> nn.Sequential:
    """SRCNN: 9x9 x64, ReLU, 1x1 x32, ReLU, 5x5 x1 (``[N, 1, F, T] -> [N, 1, F, T]``)."""
    c1, c2 = channels
    return nn.Sequential(nn.Conv2d(1, c1, 9, padding=4), nn.ReLU(), nn.Conv2d(c1, c2, 1), nn.ReLU(),
                         nn.Conv2d(c2, 1, 5, padding=2))


class DnCNN(nn.Module):
    """DnCNN: ``depth`` 3x3 convolutions (conv+ReLU, conv+BN+ReLU ..., conv) predicting the noise; returns ``x - noise``."""

    def __init__(self, depth=20, channels=64):
        super().__init__()
        layers = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.body(x)


@register_model("channelnet")
class ChannelNet(EstimatorModel):
    """Interpolated LS grid -> SRCNN -> DnCNN (20 layers). Batch norm sees real and imaginary planes together."""

    def __init__(self, system_config, srcnn_channels=(64, 32), dncnn_depth=20, dncnn_channels=64):
        super().__init__(system_config)
        self.interp = PilotInterpolator(self.ofdm)
        self.sr = srcnn(tuple(srcnn_channels))
        self.dn = DnCNN(dncnn_depth, dncnn_channels)

    def forward_real(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.dn(self.sr(self.interp(x).unsqueeze(1))).squeeze(1)
