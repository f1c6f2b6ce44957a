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
from wavefront.sim.estimators import Estimator
from wavefront.sim.frames import Frames
from wavefront.sim.mimo import mimo_pilot_symbols, user_configs
from wavefront.sim.profiles import channel_profile
from wavefront.sim.statistics import covariance_terms
from wavefront.utils import available_memory_bytes, check_memory

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


class SionnaEstimator(Estimator):
    """One of Sionna's OFDM channel estimators as a wavefront MIMO estimator (``sionna-ls``, ``sionna-lmmse-tf``, ``sionna-lmmse-tfs``).

    ``estimate(pilots [B, R, U, P_f', P_t] c64, meta) -> [B, R, U, F, T] c64``. Sionna reads a
    received grid; it reads only the pilot resource elements, so the grid is rebuilt from the LS
    pilots (``pilots x`` at each user's positions, zero elsewhere). The LMMSE kinds take the true
    time and frequency covariances of each frame's delay spread and Doppler, and the true noise
    variance (``needs = "truth"``); frames are grouped by condition.
    """

    mimo = True

    def __init__(self, name: str, config: SystemConfig):
        kind = name.removeprefix("sionna-")
        if kind not in KINDS:
            raise ConfigError("estimators", name, f"choose from {', '.join('sionna-' + k for k in KINDS)}")
        if kind != "ls":
            sionna_covariances(config, 100e-9, 100.0)  # a profile Sionna's LMMSE cannot take fails here
        self.name, self.kind, self.config = name, kind, config
        self.needs = "none" if kind == "ls" else "truth"
        self.x = mimo_pilot_symbols(config)
        self.rg = sionna_resource_grid(config, self.x)
        self.users = [(torch.tensor(c.ofdm.pilot_subcarriers), torch.tensor(c.ofdm.pilot_symbol_indices))
                      for c in user_configs(config)]
        self.given = {"ls": "pilots only; Sionna's LSChannelEstimator, linear interpolation",
                      "lmmse-tf": "true time and frequency covariances and noise; Sionna's LMMSEChannelEstimator t-f",
                      "lmmse-tfs": "true time, frequency and spatial covariances and noise; Sionna's "
                                   "LMMSEChannelEstimator t-f-s"}[kind]

    def _grid(self, pilots: torch.Tensor) -> torch.Tensor:
        """Returns the received grid [B, 1, R, T, F] Sionna reads: ``pilots x`` at each user's pilots, zero elsewhere."""
        B, R = pilots.shape[:2]
        F, T = self.config.ofdm.grid_shape
        y = torch.zeros(B, R, T, F, dtype=torch.complex64)
        for u, (pf, pt) in enumerate(self.users):
            y[:, :, pt[None, :], pf[:, None]] = pilots[:, :, u].cpu() * self.x[u]
        return y.reshape(B, 1, R, T, F)

    def estimate(self, pilots: torch.Tensor, meta: dict[str, torch.Tensor]) -> torch.Tensor:
        from sionna.phy.ofdm import LMMSEChannelEstimator, LSChannelEstimator

        y = self._grid(pilots)
        B = y.shape[0]
        if self.kind == "ls":
            h_hat, _ = LSChannelEstimator(self.rg, interpolation_type="lin")(y, torch.ones(B, 1, 1))
            return _ours(h_hat).to(pilots.device)
        nv = meta["noise_var"].float().cpu()
        out = torch.empty(B, *pilots.shape[1:3], *self.config.ofdm.grid_shape, dtype=torch.complex64)
        conds = torch.stack([meta["delay_spread_s"].double().cpu(), meta["doppler_hz"].double().cpu()], 1)
        uniq, inverse = torch.unique(conds, dim=0, return_inverse=True)
        for k, (ds, fd) in enumerate(uniq.tolist()):
            rows = (inverse == k).nonzero().squeeze(1)
            r_t, r_f, r_rx = sionna_covariances(self.config, ds, fd)
            spatial = self.kind == "lmmse-tfs"
            est = LMMSEChannelEstimator(self.rg, r_t, r_f, r_rx if spatial else None, order="t-f-s" if spatial else "t-f")
            for chunk in rows.split(self.chunk_frames()):
                h_hat, _ = est(y[chunk], nv[chunk].reshape(-1, 1, 1))
                out[chunk] = _ours(h_hat)
        return out.to(pilots.device)

    def chunk_frames(self) -> int:
        """Returns how many frames go to Sionna's LMMSE at once: its filters hold about ``24 R U T F^2`` bytes a
        frame (8.4 GB at ``mimo-chest``, measured), so frames go in chunks that fit half the free memory."""
        o, m = self.config.ofdm, self.config.mimo
        F, T = o.grid_shape
        per_frame = 24 * m.num_rx_antennas * m.num_users * T * F * F
        check_memory("estimators", self.name, per_frame, "cpu", "Sionna's LMMSE builds F x F filters per antenna, "
                                                                 "user and symbol: use a smaller grid")
        free = available_memory_bytes("cpu")
        return max(1, int(0.5 * free // per_frame)) if free else 1


def _ours(h_hat: torch.Tensor) -> torch.Tensor:
    """Returns Sionna's estimate [B, 1, R, U, 1, T, F] in wavefront's layout [B, R, U, F, T] complex64."""
    return h_hat[:, 0, :, :, 0].permute(0, 1, 2, 4, 3).to(torch.complex64)


def sionna_estimates(config: SystemConfig, frames: Frames, kinds=KINDS) -> dict[str, torch.Tensor]:
    """Returns ``{kind: h_hat [B, R, U, F, T] complex64}``: Sionna's estimators run on ``frames``' received grid.

    The LMMSE kinds use the covariances of each frame's own delay spread and Doppler.
    """
    from sionna.phy.ofdm import LSChannelEstimator

    if frames.y is None:
        raise ConfigError("frames", "without data", "Sionna's estimators read the received grid: draw frames with data")
    B, R, F, T = frames.y.shape
    out = {}
    for kind in kinds:
        est = SionnaEstimator("sionna-" + kind, config)
        if kind == "ls":  # the real received grid, data included
            y = frames.y.permute(0, 1, 3, 2).reshape(B, 1, R, T, F).cpu()
            out[kind] = _ours(LSChannelEstimator(est.rg, interpolation_type="lin")(y, torch.ones(B, 1, 1))[0])
        else:
            out[kind] = est.estimate(frames.pilots_ls, frames.meta)
    return out
