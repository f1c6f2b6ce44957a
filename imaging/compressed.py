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

The forward pass runs one of three equivalent paths (:func:`path_macs`): the assembled
k x k kernel in one ``conv2d`` (``dense``), or k x 1, 1 x k and 1 x 1 convolutions
(``spatial-first`` / ``mix-first``), which need about ``k^2 / R`` times fewer multiply-adds
for wide layers. Fewer multiply-adds is not less time or memory: on CPU the grouped
convolutions run far below dense speed, and their R * C intermediate channels take 3.5x
the activation memory of the dense path on the surrogate (imaging/RESULTS.md). ``auto``
(the default) therefore takes a separable path only where it needs 20x fewer
multiply-adds (rank 1 on wide layers); at the surrogate's ranks (9, 4, 4, 9) every layer runs
dense, and the compression saves parameters, not compute.
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
        path: how ``forward`` runs it (see :func:`path_macs`): ``"auto"`` picks by
            multiply-adds, ``"dense"`` assembles the k x k kernel, ``"spatial-first"`` /
            ``"mix-first"`` run k x 1, 1 x k and 1 x 1 convolutions.
    Input [B, C_in, H, W] -> output [B, C_out, H, W] ("same" zero padding).
    Initialised so the assembled kernel has the variance of ``nn.Conv2d``'s default.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, rank: int, bias: bool = True,
                 path: str = "auto"):
        super().__init__()
        if path not in PATHS:
            raise ConfigError("path", path, f"must be one of {PATHS}")
        self.path = path
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError("kernel_size", kernel_size, "must be a positive odd integer")
        if rank < 1:
            raise ConfigError("rank", rank, "must be at least 1")
        for name, c in (("in_channels", in_channels), ("out_channels", out_channels)):
            if c < 1:  # 0 input channels divided by zero in the initialisation
                raise ConfigError(name, c, "must be at least 1")
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
        """Returns the convolution [B, C_out, H, W] of ``x`` [B, C_in, H, W], by ``self.path``.

        ``path`` is ``"auto"`` (default: :func:`cheapest_path`), ``"dense"``, ``"spatial-first"``
        or ``"mix-first"``; every path computes the same function (to float round-off).
        """
        path = cheapest_path(self.in_channels, self.out_channels, self.kernel_size, self.rank) \
            if self.path == "auto" else self.path
        if path == "dense":
            return F.conv2d(x, self.kernel(), self.bias, padding=self.kernel_size // 2)
        col, row = F.normalize(self.col, dim=1), F.normalize(self.row, dim=1)
        if path == "spatial-first":
            return separable_spatial_first(x, self.mix, col, row, self.bias)
        if path == "mix-first":
            return separable_mix_first(x, self.mix, col, row, self.bias)
        raise ConfigError("path", path, f"must be one of {PATHS}")


PATHS = ("auto", "dense", "spatial-first", "mix-first")


def path_macs(in_channels: int, out_channels: int, kernel_size: int, rank: int) -> dict[str, int]:
    """Returns multiply-adds per output pixel of each way to run a rank-R factorised k x k conv.

    ``dense``: C_in C_out k^2 (the assembled kernel). ``spatial-first``: k x 1 and 1 x k
    filters on each input channel (R C_in channels), then a 1 x 1 mix: R C_in (2k + C_out).
    ``mix-first``: a 1 x 1 mix to R C_out channels, then the k x 1 and 1 x k filters summed
    per output channel: R C_out (C_in + 2k).
    """
    c_in, c_out, k, r = in_channels, out_channels, kernel_size, rank
    return {"dense": c_in * c_out * k * k, "spatial-first": r * c_in * (2 * k + c_out),
            "mix-first": r * c_out * (c_in + 2 * k)}


# A separable path must need this many times fewer multiply-adds than the dense one to be
# faster. Measured on the 2-core CPU (torch 2.13, 1 thread, NCHW; scripts/bench_compressed.py
# --single-layer, imaging/RESULTS.md): at 4.4-5.8x fewer (rank 4, 24-128 channels) the
# separable layer ran 1.7-5x *slower*; at 17.6x (24 channels, rank 1) 0.5-1.4x the dense time
# from run to run; at 21.6-23x (64-128 channels, rank 1) 0.15-0.26x. Grouped convolutions with
# a channel multiplier run far below dense conv speed.
SEPARABLE_MIN_MAC_RATIO = 20


def cheapest_path(in_channels: int, out_channels: int, kernel_size: int, rank: int) -> str:
    """Returns the separable path with fewer multiply-adds if it needs ``SEPARABLE_MIN_MAC_RATIO``
    times fewer than the dense one, else ``"dense"``."""
    macs = path_macs(in_channels, out_channels, kernel_size, rank)
    best = min(("spatial-first", "mix-first"), key=macs.get)
    return best if SEPARABLE_MIN_MAC_RATIO * macs[best] <= macs["dense"] else "dense"


def separable_spatial_first(x: torch.Tensor, mix: torch.Tensor, col: torch.Tensor, row: torch.Tensor,
                            bias: torch.Tensor | None) -> torch.Tensor:
    """Returns sum_r M_r (b_r * (a_r * x)) + bias: [B, C_out, H, W] from x [B, C_in, H, W].

    Args: mix [R, C_out, C_in], col / row [R, k] (the k x 1 and 1 x k filters), bias [C_out].
    Channel ``c R + r`` of the two grouped convolutions holds filter r applied to input c.
    """
    r, c_out, c_in = mix.shape
    k = col.shape[-1]
    z = F.conv2d(x, col.repeat(c_in, 1).view(c_in * r, 1, k, 1), padding=(k // 2, 0), groups=c_in)
    z = F.conv2d(z, row.repeat(c_in, 1).view(c_in * r, 1, 1, k), padding=(0, k // 2), groups=c_in * r)
    return F.conv2d(z, mix.permute(1, 2, 0).reshape(c_out, c_in * r, 1, 1), bias)


def separable_mix_first(x: torch.Tensor, mix: torch.Tensor, col: torch.Tensor, row: torch.Tensor,
                        bias: torch.Tensor | None) -> torch.Tensor:
    """Returns sum_r b_r * (a_r * (M_r x)) + bias: [B, C_out, H, W] from x [B, C_in, H, W].

    Args as :func:`separable_spatial_first`. The 1 x 1 mix writes channel ``o R + r``; the last
    grouped 1 x k convolution sums the R channels of each output.
    """
    r, c_out, c_in = mix.shape
    k = col.shape[-1]
    z = F.conv2d(x, mix.permute(1, 0, 2).reshape(c_out * r, c_in, 1, 1))
    z = F.conv2d(z, col.repeat(c_out, 1).view(c_out * r, 1, k, 1), padding=(k // 2, 0), groups=c_out * r)
    return F.conv2d(z, row.repeat(c_out, 1).view(c_out, r, 1, k), bias, padding=(0, k // 2), groups=c_out)


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
        path: how compressed layers run (:class:`CompressedConv2d`); ignored for full ones.
    """

    def __init__(self, channels: int = 32, layers: int = 4, kernel_size: int = 5,
                 rank: int | Sequence[int] | None = None, path: str = "auto"):
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
            return CompressedConv2d(c_in, c_out, kernel_size, r, path=path)

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
