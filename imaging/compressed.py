"""A-priori compressed convolutions and a wave-surrogate CNN built from them.

After "A priori compression of convolutional neural networks for wave simulators" (2023):
the kernel shape is fixed *before* training to a low-rank, one-way factorised form

    W[o, i, p, q] = sum_{r < R} M[r, o, i] * a[r, p] * b[r, q]

a rank-R sum of (1x1 channel mixing M_r) x (k x 1 column filter a_r) x (1 x k row filter b_r).

Parameter count (closed form, see :func:`compressed_param_count`)::

    R * (C_in * C_out + 2 k) + C_out          (the last term is the bias)

against ``C_in * C_out * k^2 + C_out`` for a full k x k convolution, so the conv weights
shrink by about ``k^2 / R``. At ``R = k^2`` (:func:`full_rank`) the rank-one spatial
filters can be the k^2 pixel indicators and the layer represents every full kernel exactly
(:meth:`CompressedConv2d.from_full`).

The spatial factors are weight-normalised: the kernel uses ``a_r / ||a_r||`` and
``b_r / ||b_r||``, so every scale lives in ``M``. The product ``M a b`` is unchanged by
``(s a, b / s)``, and without the normalisation that redundant direction makes the
gradient steps on three factors badly conditioned. Measured on the wave surrogate (k=5,
1500 steps, peak rate 3e-2, seed 0), validation error unnormalised -> normalised: 0.0327 ->
0.0295 at rank 4, 0.0289 -> 0.0251 at ranks (9, 4, 4, 9). It adds no parameter.

The forward pass assembles the k x k kernel (one einsum, tiny beside the convolution) and
calls ``conv2d``: the compression is in the parameters, which is what the paper targets,
and one dense conv is faster on CPU than 3R thin ones.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wavefront.errors import ConfigError


def compressed_param_count(in_channels: int, out_channels: int, kernel_size: int, rank: int, bias: bool = True) -> int:
    """Returns R (C_in C_out + 2k) + C_out [bias]: the trainable parameters of a CompressedConv2d."""
    return rank * (in_channels * out_channels + 2 * kernel_size) + (out_channels if bias else 0)


def full_param_count(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> int:
    """Returns C_in C_out k^2 + C_out [bias]: the trainable parameters of a full Conv2d."""
    return in_channels * out_channels * kernel_size ** 2 + (out_channels if bias else 0)


def full_rank(kernel_size: int) -> int:
    """Returns k^2, the rank at which the factorised form spans every k x k kernel."""
    return kernel_size ** 2


def compressed_kernel(mix: torch.Tensor, col: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Returns the full kernel [C_out, C_in, k, k] = sum_r mix[r] (x) col[r] (x) row[r].

    Args:
        mix: [R, C_out, C_in] channel mixing. col: [R, k] column (k x 1) filters.
        row: [R, k] row (1 x k) filters.
    """
    return torch.einsum("roi,rp,rq->oipq", mix, col, row)


class CompressedConv2d(nn.Module):
    """A k x k convolution whose kernel is a rank-R one-way factorisation (see module doc).

    Args:
        in_channels, out_channels, kernel_size (odd k), rank (1 <= R), bias.
    Input [B, C_in, H, W] -> output [B, C_out, H, W] ("same" zero padding).
    Initialised so the assembled kernel has the variance of ``nn.Conv2d``'s default.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, rank: int, bias: bool = True):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError("kernel_size", kernel_size, "must be a positive odd integer")
        if rank < 1:
            raise ConfigError("rank", rank, "must be at least 1")
        self.in_channels, self.out_channels, self.kernel_size, self.rank = in_channels, out_channels, kernel_size, rank
        k = kernel_size
        # Unit-norm a, b have E[a_p^2] = 1/k, so var(W) = R var(m) / k^2 = 1 / (3 C_in k^2),
        # as nn.Conv2d's kaiming_uniform(a=sqrt 5).
        self.mix = nn.Parameter(torch.randn(rank, out_channels, in_channels) / math.sqrt(3 * in_channels * rank))
        self.col = nn.Parameter(torch.randn(rank, k) / math.sqrt(k))
        self.row = nn.Parameter(torch.randn(rank, k) / math.sqrt(k))
        bound = 1 / math.sqrt(in_channels * k * k)
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None

    @classmethod
    def from_full(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> "CompressedConv2d":
        """Returns a full-rank (R = k^2) layer whose kernel equals ``weight`` [C_out, C_in, k, k]."""
        c_out, c_in, k, k2 = weight.shape
        if k != k2:
            raise ConfigError("weight", tuple(weight.shape), "must be a square k x k kernel")
        layer = cls(c_in, c_out, k, full_rank(k), bias=bias is not None).to(weight.dtype)
        eye = torch.eye(k, dtype=weight.dtype)
        with torch.no_grad():
            # Term r = (p, q): pixel indicators e_p (x) e_q carry the channel matrix W[:, :, p, q].
            layer.mix.copy_(weight.permute(2, 3, 0, 1).reshape(k * k, c_out, c_in))
            layer.col.copy_(eye.repeat_interleave(k, dim=0))
            layer.row.copy_(eye.repeat(k, 1))
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    def kernel(self) -> torch.Tensor:
        """Returns the assembled kernel [C_out, C_in, k, k] (spatial factors at unit norm)."""
        return compressed_kernel(self.mix, F.normalize(self.col, dim=1), F.normalize(self.row, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), self.bias, padding=self.kernel_size // 2)


def conv_param_count(module: nn.Module) -> int:
    """Returns the trainable parameters of every Conv2d / CompressedConv2d inside ``module``."""
    return sum(p.numel() for m in module.modules() if isinstance(m, (nn.Conv2d, CompressedConv2d))
               for p in m.parameters(recurse=False) if p.requires_grad)


class WaveSurrogate(nn.Module):
    """A CNN that predicts the wavefield one (coarse) step ahead from the two previous ones.

    Input: ``u_prev``, ``u_now`` [B, H, W] and the velocity ``v`` [B, H, W] scaled to ~1.
    Output: ``u_next`` [B, H, W] = ``2 u_now - u_prev + net([u_prev, u_now, v])``: the
    network learns the correction to linear extrapolation in time, i.e. the (v dt)^2
    Laplacian term of the leapfrog update and what the coarse step adds to it.

    Args:
        channels: hidden width. layers: number of convolutions (>= 2).
        kernel_size: k. rank: None for full ``nn.Conv2d`` layers; an int, the rank of every
            :class:`CompressedConv2d` layer; or one rank per layer (``layers`` ints). The
            first (3 -> C) and last (C -> 1) layers cost R (3C + 2k) and R (C + 2k), so a
            higher rank there is cheap beside the C x C layers' R (C^2 + 2k).
    """

    def __init__(self, channels: int = 32, layers: int = 4, kernel_size: int = 5,
                 rank: int | Sequence[int] | None = None):
        super().__init__()
        if layers < 2:
            raise ConfigError("layers", layers, "must be at least 2")
        if rank is None or isinstance(rank, int):
            ranks = [rank] * layers
        else:
            ranks = list(rank)
            if len(ranks) != layers:
                raise ConfigError("rank", tuple(ranks), f"must be one int or one rank per layer ({layers})")

        def conv(c_in: int, c_out: int, r: int | None) -> nn.Module:
            if r is None:
                return nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)
            return CompressedConv2d(c_in, c_out, kernel_size, r)

        widths = [3] + [channels] * (layers - 1) + [1]
        blocks: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            blocks.append(conv(c_in, c_out, ranks[i]))
            if i < layers - 1:
                blocks.append(nn.GELU())
        self.net = nn.Sequential(*blocks)

    def forward(self, u_prev: torch.Tensor, u_now: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x = torch.stack([u_prev, u_now, v], dim=1)
        return 2 * u_now - u_prev + self.net(x)[:, 0]
