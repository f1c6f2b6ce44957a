"""Receiver impairments of the time-domain path: residual CFO, Wiener phase noise, timing offset; and their closed forms.

What a frame's received useful samples go through after the channel (:class:`~wavefront.sim.fading.TimeVaryingChannel`),
in this order, per frame and symbol ``s`` of ``N`` useful samples and ``N_cp`` CP samples (``Ts = 1 / (N scs)``):

1. **Timing offset** ``delta`` samples (fractional allowed, either sign): the FFT window of every symbol
   starts ``delta`` samples *early* (the signal arrives ``delta`` samples late). Window sample ``n`` reads the
   received signal at ``n - delta`` samples from the nominal window start. The symbol's own part is its
   band-limited cyclic extension delayed by ``delta`` (frequency-domain phase, the exact fractional delay of
   the cyclic signal: no sinc truncation), so for ``0 <= delta <= N_cp`` on a flat channel
   ``Y_k = exp(-j 2 pi k delta / N) H_k X_k``, ``k`` the subcarrier's signed index (its offset over the
   spacing). Beyond that the window reads the neighbour: for ``delta < 0`` (late window) the samples with
   ``n - delta >= N`` come from the next symbol's CP, for ``delta > N_cp`` those with ``n - delta < -N_cp``
   from the previous symbol's tail (inter-symbol interference). The switch falls on the first sample whose
   time lies in the neighbour; a frame's first and last symbols have silence beyond them. The channel's
   gains stay at the nominal sample times (an error of order ``f_d delta Ts``, below 1e-4 at 1000 Hz).
2. **Oscillator phase** ``theta(t) = 2 pi f_cfo t + phi_pn(t)`` multiplies each sample at its absolute time
   ``t = (s (N + N_cp) + N_cp + n) Ts`` (CPs included; ``t = 0`` is the frame's first sample):
   a residual CFO ``f_cfo`` [Hz] and a Wiener phase ``phi_pn``: ``phi_pn(0) = 0`` (**the phase starts at
   0**, so a symbol's common phase error grows with its index) and independent increments
   ``N(0, 2 pi beta Ts)`` per sample, continuous across symbols and CPs, ``beta`` the 3 dB linewidth [Hz].

The received grid is then the first ``F`` FFT bins. The label ``h`` stays the channel without the
impairment: the impairment is part of what an estimator must cope with.

Closed forms (``tests/sim/test_impairments.py`` holds each to Monte Carlo), for a flat channel with all
``N`` bins carrying independent unit-power symbols, where ``Y_k = c_s H X_k + I_k`` with ``I_k`` the
ICI (and ISI) uncorrelated with ``X_k``, and power is conserved so ``E|I|^2 = 1 - E|c_s|^2``:

- CFO, ``eps = f_cfo / scs``: ``c_s = exp(j 2 pi f_cfo t_c,s) sin(pi eps) / (N sin(pi eps / N))``, ``t_c,s``
  the mean of symbol s's window times (:func:`cfo_common_phase_rad`, :func:`cfo_attenuation`,
  :func:`cfo_ici_power`);
- phase noise, ``sigma^2 = 2 pi beta Ts``: the common phase error ``mean_n phi_pn`` of symbol s has variance
  ``sigma^2 (j_s + (N - 1)(2 N - 1) / (6 N))``, ``j_s = s (N + N_cp) + N_cp`` its first sample
  (``Cov(phi_a, phi_b) = sigma^2 min(a, b)`` and ``sum_{a,b<N} min(a, b) = (N - 1) N (2 N - 1) / 6``;
  :func:`phase_noise_cpe_variance`); ``c_s = (1/N) sum_n exp(j phi_n)``, and since ``phi_m - phi_n ~
  N(0, sigma^2 |m - n|)`` has ``E exp(j (phi_m - phi_n)) = exp(-sigma^2 |m - n| / 2)``,
  ``E|c_s|^2 = (1/N^2) sum_{m,n} exp(-sigma^2 |m - n| / 2)`` (:func:`phase_noise_ici_power`);
- timing: the ramp above for ``0 <= delta <= N_cp``; a late window by ``d = -delta`` samples (integer)
  keeps ``c_s = (N - d) / N exp(+j 2 pi k d / N)``, an early one beyond the CP ``(N - delta + N_cp) / N`` times
  the ramp, and turns the rest into ISI (:func:`timing_coefficient`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from wavefront.sim.config import ChannelConfig, OFDMConfig
from wavefront.sim.profiles import subcarrier_offsets_hz
from wavefront.utils import derive_seed, make_generator

IMPAIRMENT_FIELDS = ("cfo_hz", "phase_noise_linewidth_hz", "timing_offset_samples")
# The unit of each field, as shards (the ``units`` attribute of their per-frame datasets) and result files state it.
IMPAIRMENT_UNITS = {"cfo_hz": "Hz (residual carrier frequency offset)",
                    "phase_noise_linewidth_hz": "Hz (3 dB linewidth of Wiener phase noise)",
                    "timing_offset_samples": "samples of 1/(N scs) (FFT window timing offset, positive = early)"}
# How tables and estimator descriptions name each field: (label, unit)
IMPAIRMENT_LABELS = {"cfo_hz": ("CFO", "Hz"), "phase_noise_linewidth_hz": ("phase-noise linewidth", "Hz"),
                     "timing_offset_samples": ("timing offset", "samples")}
_IMPAIRMENT_STREAM = 0x1A9A  # the impairments' random stream is its own: the channel, noise and bits stay the seed's
# Rows of frames per draw of the phase-noise increments (CPU; on a GPU 2048): part of the frames' definition, so
# fixed here, not the time-domain path's cache-sized blocks (tuning those must not change a frame)
_PHASE_NOISE_ROWS = 32
_PHASE_NOISE_ROWS_GPU = 2048


@dataclass(frozen=True)
class Impairments:
    """Per-frame impairment values, [B] float32 each, or ``None`` where that impairment is off.

    ``cfo_hz`` (Hz), ``phase_noise_linewidth_hz`` (3 dB linewidth, Hz), ``timing_offset_samples`` (samples of
    ``1 / (N scs)``); ``generator`` draws the phase-noise increments.
    """

    cfo_hz: torch.Tensor | None
    phase_noise_linewidth_hz: torch.Tensor | None
    timing_offset_samples: torch.Tensor | None
    generator: torch.Generator
    _drawn: dict = field(default_factory=dict, compare=False, repr=False)  # phase-noise increments drawn so far

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Returns the impairments that are on, name -> [B] float32 (what :class:`Frames` records)."""
        return {k: getattr(self, k) for k in IMPAIRMENT_FIELDS if getattr(self, k) is not None}


def impairments_on(channel: ChannelConfig) -> bool:
    """Returns whether ``channel`` sets any impairment."""
    return any(getattr(channel, k) is not None for k in IMPAIRMENT_FIELDS)


def impairment_record(channel: ChannelConfig | dict) -> dict:
    """Returns the impairments ``channel`` sets, ``{field: {"value": v or [low, high], "units": ...}}``, empty when all are off.

    ``channel``: a ChannelConfig or its JSON dict. What manifests and ``results.json`` record (a
    ``[low, high]`` range is drawn uniformly per frame).
    """
    get = channel.get if isinstance(channel, dict) else lambda k: getattr(channel, k)
    return {k: {"value": list(v) if isinstance(v, tuple) else v, "units": IMPAIRMENT_UNITS[k]}
            for k in IMPAIRMENT_FIELDS if (v := get(k)) is not None}


def draw_impairments(channel: ChannelConfig, batch_size: int, seed: int, device, draw) -> Impairments | None:
    """Returns the per-frame impairments of ``channel`` (``None`` when all are off), from their own stream of ``seed``.

    ``draw(value, n, generator, device)`` draws a fixed value or a ``[low, high]`` range, as the other channel fields.
    """
    if not impairments_on(channel):
        return None
    g = make_generator(derive_seed(int(seed), _IMPAIRMENT_STREAM), device)
    values = {k: None if getattr(channel, k) is None else draw(getattr(channel, k), batch_size, g, device)
              for k in IMPAIRMENT_FIELDS}
    return Impairments(**values, generator=g)


def signed_bins(ofdm: OFDMConfig, fft_size: int, device=None) -> torch.Tensor:
    """Returns ``k`` [N] float64: the signed subcarrier index of each bin of the time-domain path's FFT.

    That path puts subcarrier ``i`` on bin ``i`` (a whole-bin shift; see ``TimeVaryingChannel._propagate``):
    bin ``i < F`` is subcarrier ``i`` (offset over spacing), the others continue the grid, wrapped into ``[-N/2, N/2)``.
    """
    k0 = float(subcarrier_offsets_hz(ofdm)[0]) / ofdm.subcarrier_spacing_hz
    k = torch.arange(fft_size, dtype=torch.float64) + k0
    return (torch.remainder(k + fft_size // 2, fft_size) - fft_size // 2).to(device)


def apply_impairments(imp: Impairments, rows: slice, spectrum: torch.Tensor, ofdm: OFDMConfig, cp_samples: int) -> torch.Tensor:
    """Returns the received grid [b, T, F] complex64 of the impaired receiver.

    ``spectrum`` [b, T, N] complex64: every bin of each symbol's noise-free received useful part, without the
    impairment, in the time-domain path's bins (subcarrier ``i`` on bin ``i``); ``rows`` the frames it holds.
    """
    b, T, N = spectrum.shape
    F = ofdm.num_subcarriers
    dev = spectrum.device
    if imp.timing_offset_samples is not None:
        r = _timing_window(spectrum, imp.timing_offset_samples[rows].to(dev), signed_bins(ofdm, N, dev), cp_samples)
    else:
        r = torch.fft.ifft(spectrum, dim=-1)
    phase = oscillator_phase(imp, rows, b, T, N, cp_samples, ofdm.subcarrier_spacing_hz, dev)
    if phase is not None:
        r = r * torch.polar(torch.ones_like(phase), phase).to(torch.complex64)
    return torch.fft.fft(r, dim=-1)[..., :F]


def _timing_window(spectrum: torch.Tensor, delta: torch.Tensor, k: torch.Tensor, cp: int) -> torch.Tensor:
    """Returns the window samples [b, T, N] complex64 of each symbol with the FFT window ``delta`` [b] samples early."""
    b, T, N = spectrum.shape
    d = delta.double().reshape(b, 1, 1)

    def delayed(spec, by):  # the cyclic band-limited symbol delayed by ``by`` samples [b, 1, 1]
        return torch.fft.ifft(spec * torch.exp(-2j * math.pi * k * by / N).to(torch.complex64), dim=-1)

    r = delayed(spectrum, d)
    n = torch.arange(N, dtype=torch.float64, device=spectrum.device)
    since_start = n - d  # [b, 1, N]: window sample time from the nominal window start
    late = since_start >= N  # beyond the symbol's end: the next symbol's CP
    if bool(late.any()):
        nxt = torch.zeros_like(spectrum)
        nxt[:, :-1] = spectrum[:, 1:]
        r = torch.where(late, delayed(nxt, d + N + cp), r)
    early = since_start < -cp  # before the symbol's CP: the previous symbol's tail
    if bool(early.any()):
        prv = torch.zeros_like(spectrum)
        prv[:, 1:] = spectrum[:, :-1]
        r = torch.where(early, delayed(prv, d - N - cp), r)
    return r


def oscillator_phase(imp: Impairments, rows: slice, b: int, T: int, N: int, cp: int, scs_hz: float,
                     device) -> torch.Tensor | None:
    """Returns the receiver's oscillator phase [b, T, N] float64 (rad) at each window sample, or ``None`` without CFO and phase noise.

    ``2 pi f_cfo t + phi_pn(t)`` at ``t = (s (N + N_cp) + N_cp + n) Ts``; ``phi_pn`` the Wiener phase of the
    module docstring, starting at 0 on the frame's first sample.
    """
    if imp.cfo_hz is None and imp.phase_noise_linewidth_hz is None:
        return None
    ts = 1.0 / (N * scs_hz)
    index = (torch.arange(T, device=device, dtype=torch.float64)[:, None] * (N + cp) + cp
             + torch.arange(N, device=device, dtype=torch.float64))  # [T, N] absolute sample index
    phase = torch.zeros(b, T, N, dtype=torch.float64, device=device)
    if imp.cfo_hz is not None:
        phase += 2 * math.pi * imp.cfo_hz[rows].to(device).double().reshape(b, 1, 1) * ts * index
    if imp.phase_noise_linewidth_hz is not None:
        sigma = torch.sqrt(2 * math.pi * imp.phase_noise_linewidth_hz[rows].to(device).double() * ts).reshape(b, 1)
        steps = phase_noise_increments(imp, rows, T * (N + cp) - 1, device) * sigma
        walk = torch.cat([torch.zeros(b, 1, dtype=torch.float64, device=device), steps.cumsum(1)], 1)
        phase += walk[:, index.long().reshape(-1)].reshape(b, T, N)
    return phase


def phase_noise_increments(imp: Impairments, rows: slice, length: int, device) -> torch.Tensor:
    """Returns the standard-normal Wiener increments [rows, length] float64 of frames ``rows`` of the batch.

    Drawn from ``imp.generator`` in blocks of rows fixed by the batch size alone (:data:`_PHASE_NOISE_ROWS`,
    split evenly), whichever blocks the time-domain path propagates, so a frame's phase noise does not depend
    on the path's chunking. ``rows`` come in increasing order; blocks behind them are dropped.
    """
    n = len(imp.phase_noise_linewidth_hz)
    most = _PHASE_NOISE_ROWS if torch.device(device).type == "cpu" else _PHASE_NOISE_ROWS_GPU
    size = -(-n // -(-n // most))  # the fewest blocks of at most ``most`` rows, evenly
    blocks = imp._drawn.setdefault("blocks", {})  # first row -> [rows, length]
    start, stop = rows.start or 0, min(rows.stop, n)
    while imp._drawn.get("next", 0) < stop:
        first = imp._drawn.get("next", 0)
        blocks[first] = torch.randn(min(size, n - first), length, generator=imp.generator, device=device,
                                    dtype=torch.float64)
        imp._drawn["next"] = first + size
    for first in [f for f in blocks if f + size <= start]:
        del blocks[first]
    if min(blocks, default=start + 1) > start:
        raise RuntimeError(f"phase-noise increments of rows {start}.. were requested after their block was dropped")
    parts = [blocks[f][max(start - f, 0):stop - f] for f in sorted(blocks) if f < stop and f + size > start]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


# ---- closed forms ----

def cfo_attenuation(epsilon, fft_size: int):
    """Returns ``|sin(pi eps) / (N sin(pi eps / N))|^2``: the desired term's power under a CFO of ``eps`` subcarrier spacings."""
    e = np.asarray(epsilon, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(e == 0, 1.0, np.sin(np.pi * e) / (fft_size * np.sin(np.pi * e / fft_size)))
    return a ** 2


def cfo_ici_power(epsilon, fft_size: int):
    """Returns the ICI power per RE of a CFO of ``eps`` subcarrier spacings on a flat unit-power channel, all bins loaded."""
    return 1.0 - cfo_attenuation(epsilon, fft_size)


def cfo_common_phase_rad(ofdm: OFDMConfig, cfo_hz: float, symbol: int) -> float:
    """Returns the common phase rotation of symbol ``symbol`` (rad, unwrapped): ``2 pi f_cfo`` times its window's mean sample time."""
    n, cp = ofdm.time_sampling()
    ts = 1.0 / (n * ofdm.subcarrier_spacing_hz)
    return 2 * math.pi * cfo_hz * ts * (symbol * (n + cp) + cp + (n - 1) / 2)


def phase_noise_cpe_variance(ofdm: OFDMConfig, linewidth_hz: float, symbol: int) -> float:
    """Returns the variance (rad^2) of symbol ``symbol``'s common phase error ``mean_n phi_pn``, the phase starting at 0."""
    n, cp = ofdm.time_sampling()
    sigma2 = 2 * math.pi * linewidth_hz / (n * ofdm.subcarrier_spacing_hz)
    return sigma2 * (symbol * (n + cp) + cp + (n - 1) * (2 * n - 1) / (6 * n))


def phase_noise_ici_power(ofdm: OFDMConfig, linewidth_hz: float) -> float:
    """Returns ``1 - (1/N^2) sum_{m,n} exp(-sigma^2 |m - n| / 2)``, ``sigma^2 = 2 pi beta / f_s``: the ICI power of Wiener phase noise."""
    n = ofdm.time_sampling()[0]
    sigma2 = 2 * math.pi * linewidth_hz / (n * ofdm.subcarrier_spacing_hz)
    d = np.arange(1, n)
    kept = (n + 2 * np.sum((n - d) * np.exp(-sigma2 * d / 2))) / n ** 2
    return float(1.0 - kept)


def timing_coefficient(ofdm: OFDMConfig, delta_samples: float) -> torch.Tensor:
    """Returns ``c_k`` [F] complex128 with ``E[Y_k | X, H] = c_k H X_k`` for a flat channel under a timing offset.

    ``0 <= delta <= N_cp``: the ramp ``exp(-j 2 pi k delta / N)``; an integer ``delta < 0`` (late window):
    ``(N + delta) / N`` times the ramp, an integer ``delta > N_cp`` (early beyond the CP): ``(N - delta + N_cp) / N``
    times the ramp, the lost samples being ISI (symbols with a neighbour on that side). Other offsets raise ``ValueError``.
    """
    n, cp = ofdm.time_sampling()
    k = signed_bins(ofdm, n)[:ofdm.num_subcarriers]
    ramp = torch.exp(-2j * math.pi * k * delta_samples / n)
    if 0 <= delta_samples <= cp:
        return ramp
    if delta_samples < 0 and float(delta_samples).is_integer():
        return ramp * (n + delta_samples) / n
    if delta_samples > cp and float(delta_samples).is_integer():
        return ramp * (n - delta_samples + cp) / n
    raise ValueError("closed form for 0 <= delta <= N_cp or an integer delta < 0 only")
