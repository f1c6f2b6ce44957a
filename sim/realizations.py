"""How fading realizations are drawn: per frame (independent), or per condition as the AdaFortiTran reference does.

The reference generator (OFDMChannelGenerator, ``functions/generate_pair.m``) builds a new
``nrTDLChannel`` for every frame and never sets its ``Seed`` (default 73), ``RandomStream`` or
``InitialTime``, so every frame with the same delay spread and Doppler replays the same fading
realization; only the noise (and a timing offset) changes. Over its training grid of 12 delay
spreads x 20 Dopplers there are 240 channels, and every test point lies on that grid.

:func:`per_condition_channel` reproduces that protocol: the realization of a frame is drawn
from a generator seeded by its (delay spread, Doppler) alone, independent of the run seed, the
batch and the frame's position, so equal conditions give bit-identical channels in every split.
"""
from __future__ import annotations

import torch

from wavefront.sim.config import OFDMConfig
from wavefront.sim.fading import ofdm_channel
from wavefront.sim.profiles import ChannelProfile
from wavefront.utils import derive_seed, make_generator

# The realization stream of the per-condition protocol (the reference's role of nrTDLChannel's Seed = 73).
REALIZATION_SEED = 73


def condition_seed(delay_spread_s: float, doppler_hz: float) -> int:
    """Returns the seed of the realization at (delay spread [s], Doppler [Hz]), keyed on ps and mHz."""
    return derive_seed(REALIZATION_SEED, round(float(delay_spread_s) * 1e12), round(float(doppler_hz) * 1e3))


def per_condition_channel(ofdm: OFDMConfig, profile: ChannelProfile, delay_spread_s: torch.Tensor,
                          doppler_hz: torch.Tensor, num_sinusoids: int) -> torch.Tensor:
    """Returns H [B, F, T] complex64 with one realization per distinct (delay spread, Doppler).

    ``delay_spread_s`` [B] (s) and ``doppler_hz`` [B] (Hz), float32. Each distinct pair draws its
    channel with :func:`~wavefront.sim.fading.ofdm_channel` from a generator seeded by
    :func:`condition_seed`, so frames with equal conditions get bit-identical channels whatever
    the batch, the run seed or the split (on one device and library version).
    """
    dev = doppler_hz.device
    pairs = torch.stack([delay_spread_s.double(), doppler_hz.double()], 1)
    uniq, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    h = torch.empty((len(uniq),) + ofdm.grid_shape, dtype=torch.complex64, device=dev)
    for k, (ds, fd) in enumerate(uniq.tolist()):
        g = make_generator(condition_seed(ds, fd), dev)
        h[k] = ofdm_channel(ofdm, profile, uniq[k:k + 1, 0].float(), uniq[k:k + 1, 1].float(), num_sinusoids, g)[0]
    return h[inverse]
