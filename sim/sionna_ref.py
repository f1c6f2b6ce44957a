"""Sionna's OFDM channel estimators on wavefront's MIMO frames: the same received grid, the same pilots.

:func:`sionna_estimates` rebuilds a frame batch's resource grid for Sionna (a ``ResourceGrid``
with one stream per user and a ``PilotPattern`` holding wavefront's pilots: Sionna's
``KroneckerPilotPattern`` layout, every user masked on every pilot resource element and zero on
the others' pilots) and runs

- ``"ls"``: ``LSChannelEstimator(interpolation_type="lin")``;
- ``"lmmse-tf"``: ``LMMSEChannelEstimator(order="t-f")`` with the true time and frequency covariances;
- ``"lmmse-tfs"``: the same with the spatial covariance ``R_rx``, ``order="t-f-s"``.

The covariances are those of one condition (delay spread, Doppler) and of a profile whose
covariance is one Kronecker term (TDL-A, B, C): Sionna's estimator takes separable statistics.
"""
from __future__ import annotations

import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SystemConfig
from wavefront.sim.frames import Frames
from wavefront.sim.mimo import user_configs
from wavefront.sim.profiles import channel_profile
from wavefront.sim.statistics import covariance_terms

KINDS = ("ls", "lmmse-tf", "lmmse-tfs")


def sionna_resource_grid(config: SystemConfig, pilot_symbols: torch.Tensor):
    """Returns Sionna's ``ResourceGrid`` [T symbols x F subcarriers, U streams] carrying ``pilot_symbols`` [U, P_f', P_t]."""
    from sionna.phy.ofdm import PilotPattern, ResourceGrid

    o = config.ofdm
    F, T = o.grid_shape
    U = config.mimo.num_users
    siso = torch.from_numpy(o.pilot_layout.mask())  # [F, T]: every user's pilot positions
    mask = siso.T.reshape(1, 1, T, F).expand(U, 1, T, F).clone()
    values = torch.zeros(U, T, F, dtype=torch.complex64)
    for u, c in enumerate(user_configs(config)):
        pf = torch.tensor(c.ofdm.pilot_subcarriers)
        pt = torch.tensor(c.ofdm.pilot_symbol_indices)
        values[u][pt[None, :], pf[:, None]] = pilot_symbols[u].cpu()  # [P_f', P_t] at (symbol, subcarrier)
    # Sionna reads a stream's pilots in the order of its mask's True entries, symbol-major
    pilots = values[:, mask[0, 0]].reshape(U, 1, -1)
    pattern = PilotPattern(mask.numpy(), pilots.numpy(), normalize=False)
    return ResourceGrid(num_ofdm_symbols=T, fft_size=F, subcarrier_spacing=o.subcarrier_spacing_hz, num_tx=U,
                        num_streams_per_tx=1, pilot_pattern=pattern)


def sionna_covariances(config: SystemConfig, delay_spread_s: float, doppler_hz: float):
    """Returns the true ``(R_t [T, T], R_f [F, F], R_rx [R, R])`` complex64 of one condition (one-term profiles only)."""
    prof = channel_profile(config.channel.profile, config.channel.travel_azimuth_deg)
    terms = covariance_terms(config.ofdm, prof, delay_spread_s, doppler_hz)
    if len(terms) != 1:
        raise ConfigError("channel.profile", config.channel.profile, "Sionna's LMMSE takes separable statistics: "
                                                                      "use a one-term profile (TDL-A, B or C)")
    r_f, r_t = terms[0]
    r_rx = config.mimo.rx_covariance().to(torch.complex128)
    return r_t[0].to(torch.complex64), r_f[0].to(torch.complex64), r_rx.to(torch.complex64)


def sionna_estimates(config: SystemConfig, frames: Frames, kinds=KINDS) -> dict[str, torch.Tensor]:
    """Returns ``{kind: h_hat [B, R, U, F, T] complex64}``: Sionna's estimators on ``frames`` (see the module docstring).

    The frames must share one delay spread and Doppler (the LMMSE kinds use their covariances).
    """
    from sionna.phy.ofdm import LMMSEChannelEstimator, LSChannelEstimator

    for k in kinds:
        if k not in KINDS:
            raise ConfigError("kinds", k, f"choose from {', '.join(KINDS)}")
    if frames.y is None:
        raise ConfigError("frames", "without data", "Sionna's estimators read the received grid: draw frames with data")
    rg = sionna_resource_grid(config, frames.pilot_symbols)
    B, R, F, T = frames.y.shape
    y = frames.y.permute(0, 1, 3, 2).reshape(B, 1, R, T, F).cpu()
    no = frames.noise_var.float().cpu().reshape(B, 1, 1)
    out = {}
    for kind in kinds:
        if kind == "ls":
            est = LSChannelEstimator(rg, interpolation_type="lin")
        else:
            ds, fd = frames.delay_spread_s.unique(), frames.doppler_hz.unique()
            if ds.numel() != 1 or fd.numel() != 1:
                raise ConfigError("frames", "mixed conditions", "Sionna's LMMSE takes one covariance: use frames of one "
                                                                "delay spread and Doppler")
            r_t, r_f, r_rx = sionna_covariances(config, float(ds), float(fd))
            est = LMMSEChannelEstimator(rg, r_t, r_f, r_rx if kind == "lmmse-tfs" else None,
                                        order="t-f-s" if kind == "lmmse-tfs" else "t-f")
        h_hat, _ = est(y, no)  # [B, 1, R, U, 1, T, F]
        out[kind] = h_hat[:, 0, :, :, 0].permute(0, 1, 2, 4, 3).to(torch.complex64)
    return out
