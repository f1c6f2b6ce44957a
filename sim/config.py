"""Typed, validated configuration of the OFDM system and the fading channel.

Conventions used everywhere in wavefront:

- The resource grid is ``[F, T]`` = ``[num_subcarriers, num_symbols]``; tensors on the
  public API are ``[batch, F, T]`` complex64.
- Pilots sit on a :class:`~wavefront.sim.pilots.PilotLayout` (``OFDMConfig.pilot_layout``):
  the Kronecker grid ``pilot_subcarriers x pilot_symbols`` (``[P_f, P_t]``), or any set of
  ``P`` positions (``pilot_positions``; pilots ``[P]``).
- **SNR is per resource element**: ``SNR = E|H x|^2 / sigma^2`` with unit-power pilots and
  data (``E|x|^2 = 1``) and a channel normalised to ``E|H|^2 = 1``; the noise variance
  per complex resource element is therefore ``sigma^2 = 10^(-snr_db/10)``.
- Delay spread is the RMS delay spread in seconds, Doppler the maximum Doppler
  frequency in Hz (users never compute speeds).
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Literal, Union

import torch
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_serializer, model_validator

from wavefront.errors import ConfigError, from_pydantic
from wavefront.sim.pilots import PilotLayout
from wavefront.utils import constant, read_text_file

TDL_PROFILES = ("A", "B", "C", "D", "E")
CDL_PROFILES = tuple(f"CDL-{x}" for x in TDL_PROFILES)
SPARSE_PROFILE = "sparse"  # a few discrete paths drawn per frame (wavefront.sim.sparse)
SYSTEM_LEVEL_PROFILES = ("UMi", "UMa")  # TR 38.901 scenarios drawn through Sionna (wavefront.sim.system_level), MIMO only


def profile_label(profile: str) -> str:
    """Returns the full name of a ``ChannelConfig.profile``: ``"A"`` -> ``"TDL-A"``; ``"CDL-A"``, ``"sparse"``, ``"UMi"`` unchanged."""
    plain = profile.startswith("CDL-") or profile == SPARSE_PROFILE or profile in SYSTEM_LEVEL_PROFILES
    return profile if plain else f"TDL-{profile}"


Value = Union[float, tuple[float, float]]
# The most resource elements a frame may hold (F x T): the classical estimators and the bound hold dense
# [F T, P] matrices over the grid, and a list of every pilot position is built in Python. NR's widest
# carrier is 3300 subcarriers (275 PRBs); 3300 x 14 is 4.4% of this. 1e9 subcarriers hung in that list.
MAX_GRID_RES = 1 << 20
# The most subcarriers: the bound's covariance takes the lags of every subcarrier pair ([F, F]); 70000 ran
# out of memory there after minutes. 8192 is twice NR's largest FFT (4096).
MAX_SUBCARRIERS = 8192
# Sinusoids per tap: beyond a few dozen a tap is Gaussian to Monte-Carlo accuracy; each costs
# batch x taps x symbols draws, so 1e9 asked for 184 GB in one allocation.
MAX_SINUSOIDS = 1024
# The unit each number-or-range channel field is written in (config files give SI units).
_VALUE_UNITS = {"delay_spread_s": "seconds", "doppler_hz": "Hz", "snr_db": "dB", "cfo_hz": "Hz",
                "phase_noise_linewidth_hz": "Hz", "timing_offset_samples": "samples"}
# Range fields and the optional step that makes their draws discrete.
GRID_STEPS = {"snr_db": "snr_step_db", "delay_spread_s": "delay_spread_step_s", "doppler_hz": "doppler_step_hz"}
# Channel fields added after datasets and checkpoints were first written: left out of the
# canonical JSON while at their default, so a config that does not use them keeps the identity
# (and the frames) it had before they existed.
_ADDED_CHANNEL_DEFAULTS = {"ici": False, "snr_step_db": None, "delay_spread_step_s": None, "doppler_step_hz": None,
                           "realization": "independent", "sparse_num_paths": 4,
                           "cfo_hz": None, "phase_noise_linewidth_hz": None, "timing_offset_samples": None}

# MIMO fields added after MIMO datasets were first written (left out of the JSON at their default, likewise).
_ADDED_MIMO_DEFAULTS = {"spatial": "kronecker", "antenna_spacing_wavelengths": 0.5}


def _check_value(name: str, v, lo: float | None, hi: float | None = None, unit: str = ""):
    """Validates a fixed value or a ``(low, high)`` uniform range; ``unit`` follows a broken bound's rule."""
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"{name} must be a number or a [low, high] range")
        a, b = float(v[0]), float(v[1])
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"{name} must be finite")
        if a > b:
            raise ValueError(f"{name} range must have low <= high")
        vals = (a, b)
        out = (a, b) if a != b else a
    else:
        a = float(v)
        if not math.isfinite(a):
            raise ValueError(f"{name} must be finite")
        vals, out = (a,), a
    for x in vals:
        if lo is not None and x < lo:
            raise ValueError(f"{name} must be >= {lo:g}")
        if hi is not None and x > hi:
            raise ValueError(f"{name} must be <= {hi:g}{unit}")
    return out


def _number_or_range(name: str, v, unit: str):
    """Refuses, before pydantic's own per-type messages, a value that is neither a number nor a [low, high] pair.

    Returns ``v`` unchanged otherwise (numbers written as text, ``"3e-7"`` as YAML reads it, still parse).
    """
    def number(x) -> bool:
        if isinstance(x, bool):
            return False
        try:
            float(x)
            return True
        except (TypeError, ValueError):
            return False

    shape = f"must be a number in {unit} or a [low, high] range"
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"{name} {shape}, not a list of {len(v)}")
        if not all(number(x) for x in v):
            raise ValueError(f"{name} {shape}; [low, high] must both be numbers")
    elif not number(v):
        raise ValueError(f"{name} {shape}" + (" (the value alone, without a unit)" if isinstance(v, str) else ""))
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def build(cls, prefix: str = "", **kwargs):
        """Returns a validated instance, or raises :class:`ConfigError` naming the field."""
        try:
            return cls(**kwargs)
        except ValidationError as exc:
            raise from_pydantic(exc, prefix) from None


class OFDMConfig(_Model):
    """The OFDM resource grid and its pilot pattern.

    Defaults are the AdaFortiTran reference grid: 120 subcarriers x 14 symbols at 15 kHz,
    pilots on every 10th subcarrier (12 of them) and on OFDM symbols 3 and 12 (1-based;
    indices 2 and 11), 12 x 2 pilots in all.

    ``pilot_positions``: ``((subcarrier, symbol), ...)`` 0-based, any set of distinct positions
    in the grid; when set it replaces ``pilot_subcarrier_offset/spacing`` and ``pilot_symbols``
    (which are then ignored). ``None`` (default): the Kronecker grid of those three fields.
    Serialised only when set, so configs without it keep their JSON (and shards their bytes).
    """

    num_subcarriers: int = 120
    num_symbols: int = 14
    subcarrier_spacing_hz: float = 15e3
    carrier_frequency_hz: float = 3.5e9
    # NR/LTE normal cyclic prefix: 144/2048 of the useful symbol (4.69 us at 15 kHz)
    cyclic_prefix_ratio: float = 144 / 2048
    pilot_subcarrier_spacing: int = 10
    pilot_subcarrier_offset: int = 0
    pilot_symbols: tuple[int, ...] = (2, 11)  # 0-based OFDM symbol indices
    modulation: Literal["qpsk", "16qam", "64qam"] = "qpsk"  # data symbols; pilots are unit-modulus QPSK
    pilot_positions: tuple[tuple[int, int], ...] | None = None  # any layout; overrides the three fields above

    @model_serializer(mode="wrap")
    def _omit_unset_positions(self, handler):
        d = handler(self)
        if d.get("pilot_positions", 0) is None:
            del d["pilot_positions"]
        return d

    @field_validator("num_subcarriers", "num_symbols")
    @classmethod
    def _positive(cls, v, info):
        if v < 1:
            raise ValueError(f"{info.field_name} must be >= 1")
        top = MAX_SUBCARRIERS if info.field_name == "num_subcarriers" else MAX_GRID_RES
        if v > top:  # before the product check, so the message names the field that is absurd
            raise ValueError(f"{info.field_name} must be <= {top} ("
                             + ("NR's widest carrier has 3300; the MMSE bound holds [F, F] lag matrices)"
                                if top == MAX_SUBCARRIERS else f"a frame holds at most {MAX_GRID_RES} resource elements)"))
        return v

    @field_validator("subcarrier_spacing_hz", "carrier_frequency_hz")
    @classmethod
    def _positive_hz(cls, v, info):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{info.field_name} must be a positive frequency in Hz")
        return v

    @field_validator("cyclic_prefix_ratio")
    @classmethod
    def _cp(cls, v):
        if not (0 <= v < 1):
            raise ValueError("cyclic_prefix_ratio must be in [0, 1) (CP duration / useful symbol duration)")
        return v

    @field_validator("pilot_subcarrier_spacing")
    @classmethod
    def _spacing(cls, v):
        if v < 1:
            raise ValueError("pilot_subcarrier_spacing must be >= 1")
        return v

    @model_validator(mode="after")
    def _pilots_inside_grid(self):
        if self.num_subcarriers * self.num_symbols > MAX_GRID_RES:
            raise ConfigError("ofdm.num_subcarriers x num_symbols", f"{self.num_subcarriers}x{self.num_symbols}",
                              f"a frame holds at most {MAX_GRID_RES} resource elements (the estimators hold dense "
                              "matrices over the grid)")
        if not (0 <= self.pilot_subcarrier_offset < self.num_subcarriers):
            raise ConfigError("ofdm.pilot_subcarrier_offset", self.pilot_subcarrier_offset,
                              f"must lie in the grid, 0..{self.num_subcarriers - 1}")
        if not self.pilot_symbols:
            raise ConfigError("ofdm.pilot_symbols", list(self.pilot_symbols), "needs at least one OFDM symbol")
        for s in self.pilot_symbols:
            if not (0 <= s < self.num_symbols):
                raise ConfigError("ofdm.pilot_symbols", list(self.pilot_symbols),
                                  f"index {s} is outside the grid, 0..{self.num_symbols - 1} (0-based)")
        if len(set(self.pilot_symbols)) != len(self.pilot_symbols) or list(self.pilot_symbols) != sorted(self.pilot_symbols):
            raise ConfigError("ofdm.pilot_symbols", list(self.pilot_symbols), "must be strictly increasing")
        if self.pilot_positions is not None:
            PilotLayout.from_positions(self.pilot_positions, self.grid_shape, "ofdm.pilot_positions")
        return self

    # ---- derived quantities -------------------------------------------------------
    @property
    def pilot_layout(self):
        """The :class:`~wavefront.sim.pilots.PilotLayout` of these fields (cached per config)."""
        return _layout(self.pilot_positions, self.pilot_subcarrier_offset, self.pilot_subcarrier_spacing,
                       self.pilot_symbols, self.grid_shape)

    @property
    def pilot_subcarriers(self) -> list[int]:
        """0-based subcarrier indices of the pilots, ``[P_f]`` (Kronecker layouts; ConfigError otherwise)."""
        if self.pilot_positions is None:
            return list(range(self.pilot_subcarrier_offset, self.num_subcarriers, self.pilot_subcarrier_spacing))
        return self.pilot_layout.kron_subcarriers

    @property
    def pilot_symbol_indices(self) -> list[int]:
        """0-based OFDM symbols of the pilots, ``[P_t]`` (Kronecker layouts; ConfigError otherwise).

        Equals ``pilot_symbols`` unless ``pilot_positions`` is set.
        """
        if self.pilot_positions is None:
            return list(self.pilot_symbols)
        return self.pilot_layout.kron_symbols

    @property
    def num_pilot_subcarriers(self) -> int:
        return len(self.pilot_subcarriers)

    @property
    def num_pilot_symbols(self) -> int:
        return len(self.pilot_symbol_indices)

    @property
    def num_pilots(self) -> int:
        """``P``: pilot resource elements per frame."""
        return self.pilot_layout.num_pilots

    @property
    def pilot_shape(self) -> tuple[int, ...]:
        """``(P_f, P_t)`` for a Kronecker layout, ``(P,)`` for a scattered one."""
        return self.pilot_layout.pilot_shape

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(F, T)``."""
        return (self.num_subcarriers, self.num_symbols)

    @property
    def num_data_res(self) -> int:
        """Resource elements that carry data (all but the pilots)."""
        return self.num_subcarriers * self.num_symbols - self.num_pilots

    @property
    def bits_per_symbol(self) -> int:
        return {"qpsk": 2, "16qam": 4, "64qam": 6}[self.modulation]

    @property
    def symbol_duration_s(self) -> float:
        """OFDM symbol duration with cyclic prefix [s]: ``(1 + cp_ratio) / scs`` (71.35 us at 15 kHz)."""
        return (1.0 + self.cyclic_prefix_ratio) / self.subcarrier_spacing_hz

    def time_sampling(self) -> tuple[int, int]:
        """Returns ``(fft_size, cp_samples)`` of the time-domain (ICI) path: samples per useful symbol and per CP.

        ``fft_size`` is the smallest power of two ``N >= num_subcarriers`` for which the cyclic
        prefix ``cyclic_prefix_ratio * N`` is a whole number of samples, so that the sampled
        symbol lasts exactly :attr:`symbol_duration_s` (NR's 144/2048 at 120 subcarriers:
        N = 128, 9 CP samples, sample period 1/(128 scs) = 520.8 ns at 15 kHz). Raises
        :class:`ConfigError` when no such N up to 2**16 exists.
        """
        n = 1 << max(self.num_subcarriers - 1, 1).bit_length()
        while n <= 1 << 16:
            cp = self.cyclic_prefix_ratio * n
            if abs(cp - round(cp)) < 1e-9:
                return n, int(round(cp))
            n *= 2
        raise ConfigError("ofdm.cyclic_prefix_ratio", self.cyclic_prefix_ratio,
                          "channel.ici needs cyclic_prefix_ratio x FFT size to be a whole number of samples "
                          "for a power-of-two FFT size up to 65536 (e.g. 144/2048)")


@lru_cache(maxsize=256)
def _layout(positions, offset: int, spacing: int, symbols: tuple, grid_shape: tuple):
    if positions is None:
        return PilotLayout.kronecker(range(offset, grid_shape[0], spacing), symbols, grid_shape)
    return PilotLayout.from_positions(positions, grid_shape, "ofdm.pilot_positions")


class ChannelConfig(_Model):
    """The fading channel and noise, each a fixed value or a ``[low, high]`` range drawn per frame.

    - ``profile``: 3GPP TR 38.901 profile: TDL ``A``..``E`` (also written ``TDL-A``), or
      ``CDL-A``..``CDL-E`` (SISO, omnidirectional antennas). D and E have a LoS path.
      ``UMi``, ``UMa``: the TR 38.901 system-level scenarios, drawn through Sionna for MIMO
      configs only (:mod:`wavefront.sim.system_level`): each frame drops its users in one
      sector, so delay spread, angles and LoS come from the scenario (``delay_spread_s`` is
      not used) and ``doppler_hz`` sets the users' speed range.
    - ``travel_azimuth_deg``: CDL only: the UT moves horizontally in this azimuth [deg], in
      the CDL tables' angle frame. Each ray's Doppler is ``doppler_hz`` times the cosine
      between its arrival direction and the travel direction.
    - ``delay_spread_s``: RMS delay spread [s].
    - ``doppler_hz``: maximum Doppler frequency [Hz]; the generator converts it to speed.
    - ``snr_db``: SNR [dB], read as ``snr_convention`` says:
      ``"per-re"`` (default): per resource element, ``E|Hx|^2 / sigma^2``;
      ``"pilot-grid"``: the AdaFortiTran reference generator's, MATLAB ``awgn(..., 'measured')``
      on a grid that holds only the P pilots, so ``sigma^2 = (P / (F T)) 10^(-snr/10)``: the
      per-RE SNR is ``10 log10(F T / P)`` dB higher (13.2 dB on the paper grid, 18.5 dB on the
      default one). MATLAB measures each frame's own pilot power; wavefront uses its
      expectation, so that one SNR is one noise level.
    - ``num_sinusoids``: sinusoids per tap of the sum-of-sinusoids fading model (TDL; a CDL
      cluster has the 20 rays of its table).
    - ``ici``: ``False`` (default): one channel value per resource element, the value at the
      symbol's start; no inter-carrier interference (ICI). ``True``: the channel varies within
      each symbol (time-domain path, :class:`~wavefront.sim.fading.TimeVaryingChannel`), so the
      received grid carries ICI; the label ``h`` is then each symbol's average channel, and the
      genie LMMSE and the bound treat the ICI as extra noise. About ``(2 pi f_d / scs)^2 / 24``
      per RE for Jakes fading: -21.4 dB at 1000 Hz and 15 kHz. The time-domain path (``ici`` or an
      impairment) takes ``doppler_hz`` up to ``ofdm.subcarrier_spacing_hz`` (see
      ``SystemConfig._ici_doppler_fits``).
    - ``snr_step_db``, ``delay_spread_step_s``, ``doppler_step_hz``: ``None`` (default) draws a
      ``[low, high]`` range uniformly; a step draws uniformly from the discrete grid
      ``low:step:high`` instead (MATLAB colon, both ends included), as the reference
      generator's training grid (SNR 0:5:25 dB, delay spread 25:25:300 ns, Doppler 50:50:1000 Hz).
    - ``realization``: ``"independent"`` (default): every frame draws its own fading
      realization. ``"per-condition"`` reproduces the AdaFortiTran reference generator, which
      builds a new ``nrTDLChannel`` per frame with the default ``Seed``: the realization is
      seeded by the frame's (delay spread, Doppler) alone, so frames with equal conditions
      share one channel, in every run and every split; noise still differs per frame. Such
      data leak between training and test sets (see ``wavefront audit``).
    - ``sparse_num_paths``: ``profile: sparse`` only: the number of discrete paths each frame
      draws (1..64, default 4), with uniform delays, Jakes-angle Dopplers and an exponential
      power-delay profile whose expected RMS is ``delay_spread_s`` (:mod:`wavefront.sim.sparse`).
    - ``cfo_hz``, ``phase_noise_linewidth_hz``, ``timing_offset_samples``: receiver impairments,
      ``None`` (default: off, frames and JSON as before) or a value / ``[low, high]`` range drawn per
      frame: residual carrier frequency offset [Hz], the 3 dB linewidth [Hz] of Wiener phase noise
      (>= 0), the FFT window's timing offset [samples of ``1 / (N scs)``, fractional, either sign,
      ``|offset| <= N + N_cp``; positive = window early]. Any of them sends the frames through the
      time-domain path (as ``ici``; the label is then each symbol's average channel, without the
      impairment). Model and closed forms: :mod:`wavefront.sim.impairments`. The genie LMMSE and the
      bound stay second-order yardsticks that ignore the impairment.
    """

    profile: str = "A"
    delay_spread_s: Value = 300e-9
    doppler_hz: Value = 500.0
    snr_db: Value = 10.0
    num_sinusoids: int = 20  # Sionna's default; more makes each tap closer to Gaussian
    travel_azimuth_deg: float = 0.0
    snr_convention: Literal["per-re", "pilot-grid"] = "per-re"
    ici: bool = False
    snr_step_db: float | None = None
    delay_spread_step_s: float | None = None
    doppler_step_hz: float | None = None
    realization: Literal["independent", "per-condition"] = "independent"
    sparse_num_paths: int = 4
    cfo_hz: Value | None = None
    phase_noise_linewidth_hz: Value | None = None
    timing_offset_samples: Value | None = None

    @field_validator("delay_spread_s", "doppler_hz", "snr_db", "cfo_hz", "phase_noise_linewidth_hz",
                     "timing_offset_samples", mode="before")
    @classmethod
    def _value_shape(cls, v, info):
        if v is None and info.field_name in ("cfo_hz", "phase_noise_linewidth_hz", "timing_offset_samples"):
            return v  # off
        return _number_or_range(info.field_name, v, _VALUE_UNITS[info.field_name])

    @field_validator("cfo_hz")
    @classmethod
    def _cfo(cls, v):
        return None if v is None else _check_value("cfo_hz", v, None)

    @field_validator("phase_noise_linewidth_hz")
    @classmethod
    def _linewidth(cls, v):
        return None if v is None else _check_value("phase_noise_linewidth_hz", v, 0.0)

    @field_validator("timing_offset_samples")
    @classmethod
    def _timing(cls, v):
        return None if v is None else _check_value("timing_offset_samples", v, None)

    @field_validator("profile", mode="before")
    @classmethod
    def _profile(cls, v):
        p = str(v).upper()
        if p == "SPARSE":
            return SPARSE_PROFILE
        for name in SYSTEM_LEVEL_PROFILES:
            if p == name.upper():
                return name
        if p.startswith("CDL"):
            p = "CDL-" + p.removeprefix("CDL").removeprefix("-")
            if p in CDL_PROFILES:
                return p
        else:
            p = p.removeprefix("TDL").removeprefix("-")
            if p in TDL_PROFILES:
                return p
        raise ValueError(f"unknown profile; choose one of TDL-{', TDL-'.join(TDL_PROFILES)}, {', '.join(CDL_PROFILES)}, "
                         f"{SPARSE_PROFILE}, {', '.join(SYSTEM_LEVEL_PROFILES)} (MIMO)")

    @field_validator("travel_azimuth_deg")
    @classmethod
    def _azimuth(cls, v):
        if not math.isfinite(v):
            raise ValueError("travel_azimuth_deg must be a finite angle in degrees")
        return v

    @field_validator("delay_spread_s")
    @classmethod
    def _ds(cls, v):
        return _check_value("delay_spread_s", v, 0.0, 10e-6, " (seconds: 300 ns is 300e-9)")

    @field_validator("doppler_hz")
    @classmethod
    def _dop(cls, v):
        return _check_value("doppler_hz", v, 0.0)

    @field_validator("snr_db")
    @classmethod
    def _snr(cls, v):
        return _check_value("snr_db", v, -50.0, 100.0)

    @field_validator("num_sinusoids")
    @classmethod
    def _nsin(cls, v):
        if v < 4:
            raise ValueError("num_sinusoids must be >= 4")
        if v > MAX_SINUSOIDS:
            raise ValueError(f"num_sinusoids must be <= {MAX_SINUSOIDS} (a tap of 20 sinusoids is Gaussian to "
                             "within 0.01 in its fourth moment; each sinusoid costs memory per frame and tap)")
        return v

    @field_validator("sparse_num_paths")
    @classmethod
    def _num_paths(cls, v):
        if not 1 <= v <= 64:
            raise ValueError("sparse_num_paths must be an integer in 1..64 (paths per frame of profile sparse)")
        return v

    @model_validator(mode="after")
    def _cdl_only_options(self):
        if self.travel_azimuth_deg != 0.0 and self.profile not in CDL_PROFILES:  # TDL taps draw their angles per frame
            raise ConfigError("channel.travel_azimuth_deg", self.travel_azimuth_deg,
                              f"applies to the CDL profiles only (profile {self.profile!r} draws its arrival angles "
                              "per frame, or from its scenario)")
        return self

    @model_validator(mode="after")
    def _sparse_only_options(self):
        if self.profile != SPARSE_PROFILE:
            if self.sparse_num_paths != _ADDED_CHANNEL_DEFAULTS["sparse_num_paths"]:
                raise ConfigError("channel.sparse_num_paths", self.sparse_num_paths, "applies to profile sparse only")
            return self
        if self.ici or self.impaired:
            raise ConfigError(*self.time_domain_cause,
                              "the time-domain (ICI) path does not draw sparse paths yet; "
                              "leave it (and cfo_hz, phase_noise_linewidth_hz, timing_offset_samples) off with profile sparse")
        if self.realization != "independent":
            raise ConfigError("channel.realization", self.realization, "profile sparse draws its paths per frame")
        return self

    @model_validator(mode="after")
    def _steps_divide_ranges(self):
        for value_name, step_name in GRID_STEPS.items():
            step = getattr(self, step_name)
            if step is None:
                continue
            if not (math.isfinite(step) and step > 0):
                raise ConfigError(f"channel.{step_name}", step, "must be a positive number (or null for uniform draws)")
            value = getattr(self, value_name)
            if isinstance(value, tuple):
                n = (value[1] - value[0]) / step
                if abs(n - round(n)) > 1e-6:
                    raise ConfigError(f"channel.{step_name}", step, f"must divide the {value_name} range "
                                      f"[{value[0]:g}, {value[1]:g}] into whole steps")
        return self

    @property
    def impaired(self) -> bool:
        """Whether any receiver impairment (CFO, phase noise, timing offset) is set: frames then take the time-domain path."""
        return any(v is not None for v in (self.cfo_hz, self.phase_noise_linewidth_hz, self.timing_offset_samples))

    @property
    def time_domain(self) -> bool:
        """Whether frames go through the time-domain path: ``ici`` or an impairment."""
        return self.ici or self.impaired

    @property
    def time_domain_cause(self) -> tuple[str, object]:
        """``(field, value)`` that sends frames through the time-domain path, for a refusal to name: ``("channel.ici",
        True)``, else the first impairment set, e.g. ``("channel.cfo_hz", [-200.0, 200.0])``."""
        if self.ici:
            return "channel.ici", True
        name = next(k for k in ("cfo_hz", "phase_noise_linewidth_hz", "timing_offset_samples")
                    if getattr(self, k) is not None)
        v = getattr(self, name)
        return f"channel.{name}", list(v) if isinstance(v, tuple) else v

    def grid_points(self, name: str) -> list[float] | None:
        """Returns the discrete values ``low:step:high`` of range field ``name``, or None when drawn uniformly."""
        step, value = getattr(self, GRID_STEPS[name]), getattr(self, name)
        if step is None or not isinstance(value, tuple):
            return None
        lo, hi = value
        return [lo + k * step for k in range(int(round((hi - lo) / step)) + 1)]


# NR DM-RS ports per kind (38.211 Tables 6.4.1.1.3-1/-2): CDM groups x 2 frequency covers (x 2 time covers when double)
DMRS_PORTS = {"dmrs-type1": 4, "dmrs-type2": 6, "dmrs-type1-double": 8, "dmrs-type2-double": 12}


class MimoConfig(_Model):
    """Antennas and users: ``num_users`` single-antenna users send to ``num_rx_antennas`` receive antennas (uplink).

    - ``num_rx_antennas`` (R) and ``num_users`` (U): R = U = 1 (default) is the SISO system,
      bit for bit: its frames, numbers and JSON are those of a config without this section.
    - ``rx_correlation``: rho in [0, 1): the receive antennas form a uniform linear array with
      exponential correlation ``R_rx[i, j] = rho^|i - j|``, the same for every user and every
      resource element, so each user's channel covariance is ``R_rx (x) R_f (x) R_t`` (the
      Kronecker model; for CDL profiles too, whose cluster angles it does not follow). A
      ``(low, high)`` range, like the channel's condition ranges: each frame draws its rho
      uniformly there (``Frames.rx_correlation``), and the estimators that know only the prior
      (``lmmse-estimated``, ``mmse-bayes``) put rho on a grid over it.
    - ``array``: ``"ula"``, the only geometry so far.
    - ``pilots``: ``"kronecker"``, Sionna's ``KroneckerPilotPattern``: the SISO layout's pilot
      subcarriers are dealt to the users in turn (user u takes pilot subcarriers u, u + U, ...
      on every pilot symbol) and the other users are silent there, so the users' pilots are
      orthogonal. The layout must be a Kronecker one whose pilot subcarriers U divides.
      ``"dmrs-type1"``, ``"dmrs-type2"``, ``"dmrs-type1-double"``, ``"dmrs-type2-double"``: NR DM-RS
      ports (38.211 §6.4.1.1.3) in CDM groups with orthogonal cover codes on the ``pilot_symbols``
      (each with the next symbol when double); user u takes port u, so at most 4, 6, 8 or 12
      users; the subcarrier comb fields are ignored and F must be a multiple of 4 (type 1) or 6
      (type 2). See :mod:`wavefront.sim.dmrs`.

    - ``spatial``: ``"kronecker"`` (default): each (antenna, user) pair draws its own fading and
      ``R_rx`` mixes the antennas, as above. ``"rays"``: a CDL profile's rays reach a ULA at the
      base station at their own angles (each ray gets the array's steering phase at the tables'
      departure angles, the BS side in uplink), so each user's spatial covariance follows the
      clusters; needs a ``CDL-*`` profile, ``rx_correlation`` 0 and the Kronecker pilot pattern
      (:mod:`wavefront.sim.mimo_cdl`).
    - ``antenna_spacing_wavelengths``: the ULA's element spacing in wavelengths (default 0.5),
      read by ``spatial: rays`` only.

    Delay spread, Doppler and SNR are drawn per frame and shared by every user and antenna; each
    (antenna, user) pair draws its own fading before the antennas are correlated (``kronecker``),
    or each user its own rays (``rays``).
    """

    num_rx_antennas: int = 1
    num_users: int = 1
    rx_correlation: Value = 0.0
    array: Literal["ula"] = "ula"
    pilots: Literal["kronecker", "dmrs-type1", "dmrs-type2", "dmrs-type1-double", "dmrs-type2-double"] = "kronecker"
    spatial: Literal["kronecker", "rays"] = "kronecker"
    antenna_spacing_wavelengths: float = 0.5

    @field_validator("antenna_spacing_wavelengths")
    @classmethod
    def _spacing(cls, v):
        if not (math.isfinite(v) and 0.0 < v <= 100.0):
            raise ValueError("antenna_spacing_wavelengths must be in (0, 100] wavelengths")
        return v

    @field_validator("num_rx_antennas", "num_users")
    @classmethod
    def _count(cls, v, info):
        if not 1 <= v <= 64:
            raise ValueError(f"{info.field_name} must be an integer in 1..64")
        return v

    @field_validator("rx_correlation", mode="before")
    @classmethod
    def _rho_shape(cls, v):
        return _number_or_range("rx_correlation", v, "[0, 1)")

    @field_validator("rx_correlation")
    @classmethod
    def _rho(cls, v):
        vals = v if isinstance(v, (tuple, list)) else (v,)
        if len(vals) not in (1, 2) or not all(isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x < 1.0
                                              for x in vals):
            raise ValueError("rx_correlation must be in [0, 1) (or a [low, high] range there): exponential "
                             "correlation rho^|i-j| of a ULA")
        return _check_value("rx_correlation", v, 0.0, 1.0)

    @property
    def rho_range(self) -> tuple[float, float]:
        """``(low, high)`` of ``rx_correlation`` (``low == high`` for a fixed rho)."""
        v = self.rx_correlation
        return (float(v[0]), float(v[1])) if isinstance(v, tuple) else (float(v), float(v))

    @property
    def is_mimo(self) -> bool:
        """Whether there is more than one antenna or user (else the SISO path runs, unchanged)."""
        return self.num_rx_antennas > 1 or self.num_users > 1

    def rx_covariance(self) -> torch.Tensor:
        """Returns ``R_rx`` [R, R] float64: ``rho^|i - j|`` (a fixed rho only)."""
        if isinstance(self.rx_correlation, tuple):
            raise ConfigError("mimo.rx_correlation", list(self.rx_correlation), "is a range here; this needs one rho")
        i = torch.arange(self.num_rx_antennas, dtype=torch.float64)
        return torch.tensor(self.rx_correlation, dtype=torch.float64).pow((i[:, None] - i[None, :]).abs())


class SystemConfig(_Model):
    """The OFDM grid, the channel and the antennas together: what a frame generator needs."""

    ofdm: OFDMConfig = OFDMConfig()
    channel: ChannelConfig = ChannelConfig()
    mimo: MimoConfig = MimoConfig()

    @model_validator(mode="after")
    def _mimo_supported(self):
        m = self.mimo
        if self.channel.profile in SYSTEM_LEVEL_PROFILES:
            self._system_level_fits()
        if not m.is_mimo:  # (spatial rays with one antenna and one user is the SISO CDL channel: the SISO path)
            if m.pilots != "kronecker":  # the SISO path would silently use the layout's own pilots
                raise ConfigError("mimo.pilots", m.pilots, "DM-RS ports need several users or antennas")
            return self
        if m.antenna_spacing_wavelengths != 0.5 and m.spatial != "rays":
            raise ConfigError("mimo.antenna_spacing_wavelengths", m.antenna_spacing_wavelengths,
                              "is read by mimo.spatial rays only; the Kronecker model's array is rho")
        if m.spatial == "rays":
            if not self.channel.profile.startswith("CDL-"):
                raise ConfigError("mimo.spatial", m.spatial, f"rays need a CDL profile (CDL-A..CDL-E), not "
                                                             f"{self.channel.profile}")
            if m.rx_correlation != 0.0:
                raise ConfigError("mimo.rx_correlation", m.rx_correlation, "must be 0 with mimo.spatial rays: the "
                                                                           "rays' angles set the spatial correlation")
            if m.pilots != "kronecker":
                raise ConfigError("mimo.pilots", m.pilots, "mimo.spatial rays supports the Kronecker pilot pattern "
                                                           "only so far")
        if self.channel.time_domain:
            raise ConfigError(*self.channel.time_domain_cause,
                              "the time-domain (ICI) path, and with it the impairments, is SISO only so far; "
                              "leave it off with several antennas or users")
        if self.channel.realization != "independent":
            raise ConfigError("channel.realization", self.channel.realization,
                              "the reference protocol (per-condition) is SISO only")
        if self.channel.profile == SPARSE_PROFILE:
            raise ConfigError("channel.profile", SPARSE_PROFILE, "is SISO only so far")
        layout = self.ofdm.pilot_layout
        if m.pilots in DMRS_PORTS:
            return self._dmrs_fits()
        if not layout.is_kronecker:
            raise ConfigError("ofdm.pilot_positions", layout.describe(), "MIMO pilots (Kronecker pattern) need a "
                                                                         "Kronecker layout: subcarrier spacing and "
                                                                         "pilot symbols")
        n = self.ofdm.num_pilot_subcarriers
        if n % m.num_users:
            raise ConfigError("mimo.num_users", m.num_users, f"must divide the {n} pilot subcarriers, which are dealt "
                                                             "to the users in turn")
        return self

    def _system_level_fits(self) -> None:
        m, p = self.mimo, self.channel.profile  # one antenna and one user: refused by the SISO FrameGenerator
        if m.rx_correlation != 0.0:
            raise ConfigError("mimo.rx_correlation", m.rx_correlation, f"must be 0 with profile {p}: the scenario's "
                                                                       "angles set the antennas' correlation")
        if m.pilots != "kronecker":
            raise ConfigError("mimo.pilots", m.pilots, f"profile {p} runs with the Kronecker pattern only so far")

    def _dmrs_fits(self):
        m, o = self.mimo, self.ofdm
        ports = DMRS_PORTS[m.pilots]
        if m.num_users > ports:
            raise ConfigError("mimo.num_users", m.num_users, f"{m.pilots} has {ports} DM-RS ports, one per user")
        if o.pilot_positions is not None:
            raise ConfigError("ofdm.pilot_positions", o.pilot_layout.describe(),
                              f"{m.pilots} places its own pilots on ofdm.pilot_symbols; leave the positions out")
        step = 4 if "type1" in m.pilots else 6
        if o.num_subcarriers % step:
            raise ConfigError("ofdm.num_subcarriers", o.num_subcarriers, f"must be a multiple of {step} for {m.pilots}")
        if m.pilots.endswith("-double"):
            start = set(o.pilot_symbols)
            if any(l + 1 >= o.num_symbols or l + 1 in start for l in start):
                raise ConfigError("ofdm.pilot_symbols", list(o.pilot_symbols), "double-symbol DM-RS needs each pilot "
                                                                            "symbol's next symbol free and in the slot")
        return self

    @model_validator(mode="after")
    def _ici_sampling(self):
        if self.channel.time_domain:
            n, cp = self.ofdm.time_sampling()  # a CP that is no whole number of samples fails here, not mid-run
            self._ici_doppler_fits()
            if self.channel.realization != "independent":
                raise ConfigError("channel.realization", self.channel.realization,
                                  "the reference protocol (per-condition) is not available with channel.ici: true "
                                  "or an impairment")
            t = self.channel.timing_offset_samples
            if t is not None and max(abs(v) for v in (t if isinstance(t, tuple) else (t,))) > n + cp:
                raise ConfigError("channel.timing_offset_samples", list(t) if isinstance(t, tuple) else t,
                                  f"must be within the symbol: |offset| <= "
                                  f"{n + cp} samples (FFT size {n} + CP {cp})")
        return self

    def _ici_doppler_fits(self) -> None:
        """Refuses a Doppler above the subcarrier spacing on the time-domain path (``channel.ici`` or an impairment).

        The time-domain path expands each symbol's fading in a series over its useful part
        (:class:`~wavefront.sim.fading.TimeVaryingChannel`), in float32: the gains match the direct sum of
        sinusoids to 8e-6 at ``f_d = scs`` and 1.2e-5 at ``2 scs``, and turn to NaN from about ``2.1 scs``
        (an ``OverflowError`` from about 225 scs). ``f_d <= scs`` (at most one Doppler cycle per useful
        symbol, ten times the fastest train at 15 kHz) keeps a factor of two from that edge.
        """
        fd, scs = self.channel.doppler_hz, self.ofdm.subcarrier_spacing_hz
        top = fd[1] if isinstance(fd, tuple) else fd
        if top > scs:
            field = self.channel.time_domain_cause[0]
            raise ConfigError("channel.doppler_hz", list(fd) if isinstance(fd, tuple) else fd,
                              f"with {field} (the time-domain path) the Doppler must be <= the subcarrier spacing, "
                              f"{scs:g} Hz (at most one Doppler cycle per useful symbol; its within-symbol series "
                              f"fails beyond about twice that)")

    @classmethod
    def from_dict(cls, d: dict) -> "SystemConfig":
        """Returns a validated config from a nested dict (as loaded from YAML or JSON)."""
        if not isinstance(d, dict):
            raise ConfigError("config", type(d).__name__, "must be a mapping with 'ofdm' and 'channel'")
        unknown = set(d) - {"ofdm", "channel", "mimo"}
        if unknown:
            raise ConfigError("config", sorted(unknown)[0], "unknown section; allowed: ofdm, channel, mimo")
        for section in ("ofdm", "channel", "mimo"):
            if not isinstance(d.get(section) or {}, dict):
                raise ConfigError(section, d[section], "must be a mapping of field: value")
        ofdm = OFDMConfig.build("ofdm", **(d.get("ofdm") or {}))
        channel = ChannelConfig.build("channel", **(d.get("channel") or {}))
        mimo = MimoConfig.build("mimo", **(d.get("mimo") or {}))
        return cls.build(ofdm=ofdm, channel=channel, mimo=mimo)

    @classmethod
    def from_yaml(cls, path: str) -> "SystemConfig":
        """Returns a validated config from a YAML file with ``ofdm:`` and ``channel:`` sections.

        An empty file is refused: a config that sets nothing is more likely a wrong file than a
        wish for the defaults (which need no ``--config``).
        """
        text = read_text_file("config", path, "file not found", "is a folder; give a YAML file")
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError("config", str(path), f"not valid YAML ({exc.__class__.__name__})") from None
        if d is None:
            raise ConfigError("config", str(path), "is empty; give ofdm: and/or channel: settings, or leave out "
                                                   "--config for the defaults")
        return cls.from_dict(d)

    def updated(self, ofdm: dict | None = None, channel: dict | None = None, mimo: dict | None = None) -> "SystemConfig":
        """Returns a validated copy with some ``ofdm``, ``channel`` and ``mimo`` fields replaced.

        Bad values raise :class:`ConfigError` naming ``ofdm.<field>``, ``channel.<field>`` or ``mimo.<field>``.
        """
        return SystemConfig.from_dict({"ofdm": {**self.ofdm.model_dump(), **(ofdm or {})},
                                       "channel": {**self.channel.model_dump(), **(channel or {})},
                                       "mimo": {**self.mimo.model_dump(), **(mimo or {})}})

    @property
    def snr_offset_db(self) -> float:
        """Returns per-RE SNR minus the configured SNR [dB]: 0, or ``10 log10(F T / P)`` for ``"pilot-grid"``."""
        if self.channel.snr_convention == "per-re":
            return 0.0
        f, t = self.ofdm.grid_shape
        return 10 * math.log10(f * t / self.ofdm.num_pilots)

    @property
    def snr_convention_text(self) -> str:
        """Returns the SNR convention in words, for result files and manifests."""
        if self.channel.snr_convention == "per-re":
            return "per-re: per resource element, E|Hx|^2 / sigma^2"
        return (f"pilot-grid: measured over a pilots-only grid (the AdaFortiTran reference's); "
                f"per-RE SNR = SNR + {self.snr_offset_db:.2f} dB")

    def noise_variance(self, snr_db):
        """Returns the per-RE noise variance ``10^(-(snr_db + snr_offset_db)/10)`` (tensor in, tensor out)."""
        snr = torch.as_tensor(snr_db)
        if not snr.is_floating_point():
            return torch.pow(10.0, -(snr + self.snr_offset_db) / 10)
        # -(x + off) / 10 as (x + off) / -10, the same rounding; without an offset x itself (x + 0.0 differs
        # from x only at -0.0, which 10^(-x/10) maps to 1 either way); the numbers as tensors (utils.constant)
        offset = self.snr_offset_db
        x = snr if offset == 0.0 else snr + constant(offset, snr.dtype, snr.device)
        return torch.pow(constant(10.0, snr.dtype, snr.device), x.div(constant(-10.0, snr.dtype, snr.device)))

    def to_json(self) -> str:
        """Returns the config as canonical JSON (sorted keys), as stored in shards and checkpoints.

        Channel fields added later (``ici``, grid steps, ``realization``) appear only when set, so a
        config that leaves them at their defaults keeps the JSON, and the dataset identity, it had before.
        """
        d = self.model_dump(mode="json")
        for k, default in _ADDED_CHANNEL_DEFAULTS.items():
            if d["channel"].get(k) == default:
                del d["channel"][k]
        if not self.mimo.is_mimo:  # one antenna, one user: the SISO JSON, as before the section existed
            del d["mimo"]
        else:  # fields added later: left out at their defaults, so earlier MIMO configs keep their identity
            for k, default in _ADDED_MIMO_DEFAULTS.items():
                if d["mimo"].get(k) == default:
                    del d["mimo"][k]
        return json.dumps(d, sort_keys=True)

    @property
    def ici_text(self) -> str:
        """Returns how inter-carrier interference is treated, in words, for result files and manifests."""
        ch = self.channel
        if ch.time_domain:
            text = ("modelled: the channel varies within each symbol; label = per-symbol average channel; "
                    "genie LMMSE and bound add the ICI power to the noise variance")
            if ch.impaired:
                parts = [f"{k}={getattr(ch, k)}" for k in ("cfo_hz", "phase_noise_linewidth_hz", "timing_offset_samples")
                         if getattr(ch, k) is not None]
                text += ("; receiver impairments " + ", ".join(parts) + " (label without them; the genie LMMSE and "
                         "the bound ignore them)")
            return text
        return "not modelled: one channel value per resource element (at the symbol start)"

    @property
    def realization_text(self) -> str:
        """Returns how fading realizations are drawn, in words, for manifests and result files."""
        if self.channel.realization == "independent":
            return "independent: every frame draws its own fading realization"
        return ("per-condition: the realization is seeded by (delay spread, Doppler) alone, as the AdaFortiTran "
                "reference generator; frames with equal conditions share one channel in every split (leaky)")


# Named presets that match published setups.
PRESETS: dict[str, dict] = {
    "default": {},
    # The AdaFortiTran author's MATLAB generator: every 3rd subcarrier, symbols 3 and 12 (1-based).
    "adafortitran-paper": {"ofdm": {"pilot_subcarrier_spacing": 3}},
    # The same grid with the reference generator's SNR: noise measured over a pilots-only grid.
    "adafortitran-reference": {"ofdm": {"pilot_subcarrier_spacing": 3}, "channel": {"snr_convention": "pilot-grid"}},
    # Sionna Bench's MIMO-OFDM-CHEST layout: uplink, 4 single-antenna users, a 16-antenna base
    # station, 14 x 624 (52 PRBs), pilots on symbols 3 and 12 (1-based) in Sionna's Kronecker
    # pattern (every subcarrier of those symbols, dealt to the users in turn: 156 x 2 each).
    # Its channel is not rebuilt here: TDL-A at 100 ns and 100 Hz (about 30 km/h at 3.5 GHz), 30 kHz
    # subcarriers, a ULA with exponential receive correlation 0.7 -- wavefront's choices, not the benchmark's.
    "mimo-chest": {"ofdm": {"num_subcarriers": 624, "num_symbols": 14, "subcarrier_spacing_hz": 30e3,
                            "pilot_subcarrier_spacing": 1, "pilot_symbols": (2, 11)},
                   "channel": {"profile": "A", "delay_spread_s": 100e-9, "doppler_hz": 100.0},
                   "mimo": {"num_rx_antennas": 16, "num_users": 4, "rx_correlation": 0.7}},
    # The same layout over TR 38.901 UMi drawn through Sionna (wavefront.sim.system_level): each frame
    # drops the 4 users in one sector, the base station's 16 elements a half-wavelength ULA, users at
    # 1.7 m/s (Doppler 20 Hz at 3.5 GHz; a [low, high] range draws each user's speed). No closed-form
    # covariance, so no genie and no bound: the benchmark's yardstick, the LMMSE with covariances
    # estimated from samples, is lmmse-sample.
    "mimo-chest-umi": {"ofdm": {"num_subcarriers": 624, "num_symbols": 14, "subcarrier_spacing_hz": 30e3,
                                "pilot_subcarrier_spacing": 1, "pilot_symbols": (2, 11)},
                       "channel": {"profile": "UMi", "doppler_hz": 20.0},
                       "mimo": {"num_rx_antennas": 16, "num_users": 4}},
}


def preset(name: str) -> SystemConfig:
    """Returns the named preset system config (a key of :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ConfigError("preset", name, f"unknown; choose one of {', '.join(PRESETS)}")
    return SystemConfig.from_dict(PRESETS[name])
