"""3GPP TDL and CDL profiles read from Sionna's tables, and the OFDM grid's axes they are evaluated on.

The tables come from Sionna: normalised delays, powers and LoS K-factor of
``sionna.phy.channel.tr38901.TDL``, and for CDL also the per-ray arrival angles of
``tr38901.CDL`` (cluster angles plus the Table 7.5-3 offsets scaled by the cluster spread).
A profile is normalised to unit power and unit RMS delay spread; the per-frame delay spread
and Doppler scale it (:mod:`~wavefront.sim.statistics` for its closed forms,
:mod:`~wavefront.sim.fading` for its realizations).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from wavefront.sim.config import OFDMConfig

# TR 38.901 7.7.2: the LoS Doppler peak sits at 0.7 of the maximum Doppler
LOS_ANGLE_OF_ARRIVAL = math.acos(0.7)

@dataclass(frozen=True)
class ChannelProfile:
    """A TDL or CDL profile normalised to unit power and unit RMS delay spread.

    ``norm_delays`` [L] (delays / delay_spread), ``nlos_powers`` [L] (Rayleigh part of each
    tap or cluster), ``los_power`` (specular part at delay ``norm_delays[0]``, 0 for NLoS),
    ``los_cos_aoa`` (Doppler cosine of the LoS path). For CDL, ``ray_aoa_rad`` and
    ``ray_zoa_rad`` [L, M] float64 (rad) hold each cluster's ray arrival azimuths and zeniths in
    table order, *unpaired*: a frame pairs them by a random permutation per cluster (see
    :func:`tap_gains`); ``travel_azimuth_rad`` is the UT's horizontal direction of travel. Both
    are ``None`` for TDL taps, whose angles are drawn per frame.
    ``nlos_powers.sum() + los_power == 1``.
    """

    name: str
    norm_delays: np.ndarray
    nlos_powers: np.ndarray
    los_power: float
    los_cos_aoa: float
    ray_aoa_rad: np.ndarray | None = None
    ray_zoa_rad: np.ndarray | None = None
    travel_azimuth_rad: float = 0.0

    @property
    def is_los(self) -> bool:
        return self.los_power > 0

    @property
    def is_cdl(self) -> bool:
        return self.ray_aoa_rad is not None

    @property
    def is_sparse(self) -> bool:
        """Whether this is ``profile: sparse`` (:mod:`~wavefront.sim.sparse`): paths drawn per frame, closed-form covariance."""
        return self.name == "sparse"

    def ray_direction_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns (``cos(AoA - travel azimuth)``, ``sin(ZoA)``), each [L, M] float64, CDL only.

        A ray pairing azimuth ``m`` with zenith ``n`` has the Doppler cosine ``sin(ZoA_n) cos(AoA_m - az)``.
        """
        return np.cos(self.ray_aoa_rad - self.travel_azimuth_rad), np.sin(self.ray_zoa_rad)


@lru_cache(maxsize=None)
def tdl_profile(name: str) -> ChannelProfile:
    """Returns the TR 38.901 TDL profile ``name`` (A..E), read from Sionna's tables."""
    from sionna.phy.channel.tr38901 import TDL

    model = TDL(name, delay_spread=1.0, carrier_frequency=1e9, los_angle_of_arrival=LOS_ANGLE_OF_ARRIVAL,
                device="cpu", precision="double")
    delays = model.delays.cpu().numpy().astype(np.float64)
    powers = model.mean_powers.cpu().numpy().astype(np.float64)
    los = float(model.mean_power_los.cpu()) if model.los else 0.0
    nlos = powers.copy()
    nlos[0] -= los  # mean_powers folds the specular power into tap 0
    cos_aoa = math.cos(LOS_ANGLE_OF_ARRIVAL) if model.los else 0.0
    total = nlos.sum() + los
    return ChannelProfile(name, delays, nlos / total, los / total, cos_aoa)


def _doppler_cos(aoa_rad, zoa_rad, travel_azimuth_rad: float):
    """Returns ``r_hat . v_hat`` for arrival angles (azimuth, zenith) and horizontal travel."""
    return np.sin(zoa_rad) * np.cos(aoa_rad - travel_azimuth_rad)


@lru_cache(maxsize=None)
def cdl_profile(name: str, travel_azimuth_deg: float = 0.0) -> ChannelProfile:
    """Returns the TR 38.901 CDL profile ``name`` (``CDL-A``..``CDL-E``) for SISO omni antennas.

    Reads Sionna's ``CDL`` tables (Sionna 2.2.0, spec 19.2): normalised cluster delays and
    powers, the K-factor, and the 20 ray arrival azimuths and zeniths per cluster (cluster angle
    plus the Table 7.5-3 offsets scaled by the cluster spread), kept unpaired: the coupling of
    azimuth and zenith is drawn per frame (:func:`tap_gains`). The UT travels horizontally at
    azimuth ``travel_azimuth_deg``; a ray gets the Doppler cosine ``sin(ZoA) cos(AoA - azimuth)``.
    Angles at the UT are the tables' arrival angles in both link directions (Sionna swaps the
    tables for uplink so that they stay at the UT).
    """
    from sionna.phy.channel.tr38901 import CDL, Antenna

    omni = Antenna("single", "V", "omni", carrier_frequency=1e9, device="cpu", precision="double")
    model = CDL(name.removeprefix("CDL-"), delay_spread=1.0, carrier_frequency=1e9, ut_array=omni, bs_array=omni,
                device="cpu", precision="double")
    delays = model._delays.cpu().numpy().astype(np.float64)
    powers = model._powers.cpu().numpy().astype(np.float64)  # NLoS clusters, summing to 1
    az = math.radians(travel_azimuth_deg)
    aoa = model._aoa.cpu().numpy().astype(np.float64)
    zoa = model._zoa.cpu().numpy().astype(np.float64)
    los, los_cos = 0.0, 0.0
    if model._has_los:
        if delays[0] != 0.0:
            raise ValueError(f"{name}: the LoS path must share the first cluster's delay")
        k = float(model._k_factor.cpu())
        los, powers = k / (k + 1), powers / (k + 1)
        los_cos = float(_doppler_cos(float(model._los_aoa), float(model._los_zoa), az))
    total = powers.sum() + los
    return ChannelProfile(name, delays, powers / total, los / total, los_cos, aoa, zoa, az)


def channel_profile(name: str, travel_azimuth_deg: float = 0.0) -> ChannelProfile:
    """Returns the profile a :class:`ChannelConfig` names: TDL letters ``A``..``E``, ``CDL-A``..``CDL-E`` or ``sparse``."""
    if name == "sparse":
        from wavefront.sim.sparse import sparse_profile  # sparse builds on this module's ChannelProfile

        return sparse_profile()
    if name.startswith("CDL-"):
        return cdl_profile(name, float(travel_azimuth_deg))
    if name in ("UMi", "UMa"):
        from wavefront.errors import ConfigError

        raise ConfigError("channel.profile", name, "is a system-level scenario drawn through Sionna "
                                                   "(wavefront.sim.system_level): it has no tap profile or closed-form "
                                                   "covariance")
    return tdl_profile(name)


def subcarrier_offsets_hz(ofdm: OFDMConfig) -> torch.Tensor:
    """Returns the baseband subcarrier frequencies [F] float64 in Hz (Sionna's convention)."""
    from sionna.phy.channel import subcarrier_frequencies

    return subcarrier_frequencies(ofdm.num_subcarriers, ofdm.subcarrier_spacing_hz,
                                  precision="double", device="cpu")


def symbol_times_s(ofdm: OFDMConfig) -> torch.Tensor:
    """Returns the start times [T] float64 of the OFDM symbols in s: ``n * T_sym``."""
    return torch.arange(ofdm.num_symbols, dtype=torch.float64) * ofdm.symbol_duration_s
