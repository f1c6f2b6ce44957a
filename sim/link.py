"""Data path: one-tap equalisation with an estimated channel, QAM demapping (Sionna), BER.

The closed forms the tests hold this to (``tests/sim/test_link.py``):

- AWGN, Gray QPSK: ``BER = Q(sqrt(SNR))``;
- AWGN, Gray 16-QAM: ``BER = (3 Q(a) + 2 Q(3a) - Q(5a)) / 4`` with ``a = sqrt(SNR / 5)``;
- flat Rayleigh, QPSK: ``BER = (1 - sqrt(g / (1 + g))) / 2`` with ``g = SNR / 2`` (per-bit SNR),

where SNR is per resource element (``E|Hx|^2 / sigma^2``).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from wavefront.errors import ConfigError


def equalize(y: torch.Tensor, h_hat: torch.Tensor, noise_var: torch.Tensor, method: str = "zf"):
    """Returns (x_hat, post-equalisation noise variance), both shaped like ``y`` [..].

    ``y``, ``h_hat``: complex64 [B, N]; ``noise_var``: [B] float32.
    ``zf``: ``x = y / h``, noise ``sigma^2 / |h|^2``.
    ``mmse``: ``x = h* y / (|h|^2 + sigma^2)`` rescaled to be unbiased, which for one tap gives
    the same hard decisions as ZF and noise ``sigma^2 / |h|^2``; it differs from ZF in being
    safe where ``h`` is tiny.
    """
    nv = noise_var.reshape(-1, *([1] * (y.dim() - 1))).to(y.real.dtype)
    g = h_hat.abs().square()
    if method == "zf":
        g = g.clamp_min(1e-12)
        return y / h_hat, nv / g
    if method == "mmse":
        w = h_hat.conj() / (g + nv)
        bias = (w * h_hat).real.clamp_min(1e-12)  # = |h|^2 / (|h|^2 + sigma^2)
        x = w * y / bias
        return x, nv / g.clamp_min(1e-12)
    raise ConfigError("equalizer", method, "must be zf or mmse")


@lru_cache(maxsize=None)
def _demapper(bits_per_symbol: int, hard: bool, method: str, device: str):
    from sionna.phy.mapping import Demapper

    return Demapper(method, "qam", bits_per_symbol, hard_out=hard, device=device)


def demap(x_hat: torch.Tensor, no: torch.Tensor, bits_per_symbol: int, hard: bool = True, method: str = "app") -> torch.Tensor:
    """Returns hard bits (0/1) or LLRs [B, N * bits_per_symbol] float32 from equalised symbols [B, N].

    ``no`` [B, N] is the effective noise variance per symbol. Uses Sionna's QAM demapper.
    """
    return _demapper(bits_per_symbol, hard, method, str(x_hat.device))(x_hat, no.to(x_hat.real.dtype))


def bit_errors(bits: torch.Tensor, llr_or_hard: torch.Tensor, hard: bool = True) -> int:
    """Returns the number of bit errors between transmitted bits and decisions (hard bits or LLRs)."""
    dec = llr_or_hard if hard else (llr_or_hard > 0).float()
    return int((dec != bits).sum())


def q_function(x):
    """Returns the Gaussian tail ``Q(x) = erfc(x / sqrt 2) / 2``."""
    return 0.5 * math.erfc(x / math.sqrt(2))


def ber_awgn(modulation: str, snr_db: float) -> float:
    """Returns the closed-form BER of Gray QPSK or 16-QAM over AWGN at per-symbol SNR ``snr_db``."""
    snr = 10 ** (snr_db / 10)
    if modulation == "qpsk":
        return q_function(math.sqrt(snr))
    if modulation == "16qam":
        a = math.sqrt(snr / 5)
        return (3 * q_function(a) + 2 * q_function(3 * a) - q_function(5 * a)) / 4
    raise ConfigError("modulation", modulation, "closed form available for qpsk and 16qam")


def ber_rayleigh_qpsk(snr_db: float) -> float:
    """Returns the closed-form BER of Gray QPSK over flat Rayleigh fading with perfect CSI."""
    g = 10 ** (snr_db / 10) / 2
    return 0.5 * (1 - math.sqrt(g / (1 + g)))
