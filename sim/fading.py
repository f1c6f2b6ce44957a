"""Fading realizations: per-frame sum-of-sinusoids draws, tap gains, the grid channel and its time-domain (ICI) path.

What wavefront adds to Sionna's models is a **per-frame, recorded** delay spread and maximum
Doppler: Sionna's models take one delay spread per instance and draw their velocity internally
without returning it, so the path gains are drawn here, one Doppler per frame:

- a TDL tap is a sum of sinusoids (Zheng & Xiao) whose angles are drawn per frame, so its
  Doppler spectrum is Jakes';
- a CDL cluster is the sum of its 20 rays, each with a random phase and the Doppler
  ``f_d cos(angle between its arrival direction and the travel direction)``; the rays' arrival
  azimuths and zeniths are re-paired at random per frame and cluster (TR 38.901's random
  coupling, as Sionna's ``CDL`` does). With SISO omnidirectional antennas that is the whole of
  TR 38.901's CDL channel.

The frequency response is the sum of Sionna's ``cir_to_ofdm_channel`` (:func:`frequency_response`, at any
subcarriers and times; a test holds the two equal). On the resource grid, whose symbols and subcarriers are
equally spaced, :func:`grid_channel` computes it by phase recurrences instead of a sin/cos per grid point.
The second-order statistics of these realizations are in :mod:`~wavefront.sim.statistics`; which
random stream a frame's realization comes from (per frame or per condition) is
:mod:`~wavefront.sim.realizations`.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from wavefront.sim.config import OFDMConfig
from wavefront.sim.impairments import apply_impairments
from wavefront.sim.profiles import ChannelProfile, subcarrier_offsets_hz, symbol_times_s
from wavefront.utils import constant as _constant

_CHUNK = 128  # frames per block in the heavy loops on CPU: large enough to vectorise, small enough for cache
_CHUNK_GPU = 8192  # on a GPU the blocks only bound memory (about 0.2 GB of temporaries for TDL-A)
_CHUNK_GAINS = 32  # frames per block of the phase recurrence on CPU: its [T, N, b, L] powers fit in L2
# torch's at::internal::GRAIN_SIZE: an elementwise op on fewer elements runs on one thread
# (tests/sim/test_threads.py goes red if that stops holding)
_SERIAL_ELEMENTS = 32768


def _blocks(batch: int, most: int) -> int:
    """Returns the block size that splits ``batch`` frames into the fewest blocks of at most ``most``, evenly."""
    return -(-batch // -(-batch // most)) if batch else most


def _chunk(device: torch.device) -> int:
    return _CHUNK if device.type == "cpu" else _CHUNK_GPU


class _Scratch:
    """Temporaries reused by the blocks of one call: ``take(name, shape, dtype, device)`` returns a tensor, uninitialised.

    A block's temporaries are large (a TDL-A block's sinusoid phasors are 1.3 MB); allocated
    afresh for every block, they come back from the allocator as new pages, and on CPU the page
    faults cost more than the arithmetic. One buffer per name, as large as the largest request;
    a buffer taken again is overwritten, so a caller keeps nothing it took past its next take.
    """

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}
        self._views: dict[tuple, tuple[torch.Tensor, object]] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
        buf = self._buffers.get(name)
        hit = self._views.get((name, shape, None))
        if hit is not None and hit[0] is buf and buf.dtype == dtype:  # the view of the last call of this shape
            return hit[1]
        n = math.prod(shape)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != torch.device(device):
            buf = self._buffers[name] = torch.empty(n, dtype=dtype, device=device)
            self._views = {k: v for k, v in self._views.items() if k[0] != name}  # they hold the old buffer
        view = buf[:n].view(shape)
        self._views[(name, shape, None)] = (buf, view)
        return view

    def views(self, name: str, shape: tuple[int, ...], make):
        """Returns ``make(t)`` for ``t``, the tensor ``take(name, shape, ...)`` returned last: views of it, made once
        while its buffer stays (a slice costs about a microsecond on CPU; batch 1 takes a dozen per frame)."""
        buf = self._buffers[name]
        hit = self._views.get((name, shape, make))
        if hit is None or hit[0] is not buf:
            hit = self._views[(name, shape, make)] = (buf, make(buf[:math.prod(shape)].view(shape)))
        return hit[1]


_THREAD_SCRATCH = threading.local()


def _block_scratch(device: torch.device) -> _Scratch:
    """Returns the scratch for one call's blocks: on CPU this thread's, kept between calls (its buffers are
    block-sized, about 3 MB for TDL-A, and new pages for them on every call cost page faults); elsewhere a new one."""
    if device.type != "cpu":
        return _Scratch()
    scratch = getattr(_THREAD_SCRATCH, "scratch", None)
    if scratch is None:
        scratch = _THREAD_SCRATCH.scratch = _Scratch()
    return scratch


def _uniform_angles(shape: tuple[int, ...], scale: float, generator: torch.Generator, device) -> torch.Tensor:
    """Returns ``(r * 2 - 1) * scale`` float32 for ``r ~ U[0, 1)`` of ``shape``: uniform in ``(-scale, scale)``.

    Computed as ``(r - 1/2) * (2 scale)``: torch's float32 ``r`` is a multiple of 2^-24, so
    ``r - 1/2`` is exact, and doubling is exact, so these are the bits of the expression in one op fewer.
    """
    f32 = torch.float32
    r = torch.rand(shape, generator=generator, device=device)
    return r.sub_(_constant(0.5, f32, r.device)).mul_(_constant(2 * scale, f32, r.device))


@dataclass(frozen=True)
class SinusoidDraws:
    """The random part of a batch of sum-of-sinusoids channels, drawn once and evaluable at any times.

    ``doppler_hz`` [B] float32 (maximum Doppler per frame, Hz); ``cosines`` [B, L, N] float32
    (each sinusoid's Doppler cosine, so its frequency is ``doppler_hz * cosine``);
    ``phases_rad`` [B, L, N] float32; ``los_phase_rad`` [B, 1] float32 for a LoS profile, else ``None``.
    """

    doppler_hz: torch.Tensor
    cosines: torch.Tensor
    phases_rad: torch.Tensor
    los_phase_rad: torch.Tensor | None

    def rows(self, rows: slice) -> "SinusoidDraws":
        """Returns the draws of the frames ``rows`` (views, no copies)."""
        los = None if self.los_phase_rad is None else self.los_phase_rad[rows]
        return SinusoidDraws(self.doppler_hz[rows], self.cosines[rows], self.phases_rad[rows], los)


def draw_sinusoids(profile: ChannelProfile, doppler_hz: torch.Tensor, num_sinusoids: int,
                   generator: torch.Generator) -> SinusoidDraws:
    """Returns the per-frame random draws of :func:`tap_gains` (see there for the model), in its order.

    ``doppler_hz`` [B]; the draws are on its device. The frequency-domain path
    (:func:`ofdm_channel`) and the time-domain one (:class:`TimeVaryingChannel`) both start
    here, so one seed gives the same channel realisation, and the same generator state after it.
    """
    dev = doppler_hz.device
    B, L = doppler_hz.shape[0], len(profile.norm_delays)
    if not profile.is_cdl:
        N = num_sinusoids
        # (r * 2 - 1) * (pi / N) + 2 pi n / N, in place: the numbers of the expression, fewer tensors
        cosines = _uniform_angles((B, L, N), math.pi / N, generator, dev).add_(_sinusoid_angles(N, dev)).cos_()
    else:
        N = profile.ray_aoa_rad.shape[1]
        cos_az, sin_ze = (torch.as_tensor(v, dtype=torch.float32, device=dev).expand(B, L, N)
                          for v in profile.ray_direction_factors())
        cosines = (cos_az.gather(2, _random_permutations(B, L, N, generator, dev))
                   * sin_ze.gather(2, _random_permutations(B, L, N, generator, dev)))
    phi = _uniform_angles((B, L, N), math.pi, generator, dev)
    phi0 = _uniform_angles((B, 1), math.pi, generator, dev) if profile.is_los else None
    return SinusoidDraws(doppler_hz, cosines, phi, phi0)


@lru_cache(maxsize=16)
def _sinusoid_angles(num_sinusoids: int, device: torch.device) -> torch.Tensor:
    """Returns ``2 pi n / N`` [N] float32 for ``n = 1..N``: the TDL sinusoids' angles before their per-frame offset."""
    n = torch.arange(1, num_sinusoids + 1, device=device, dtype=torch.float32)
    return 2 * math.pi * n / num_sinusoids


def tap_gains(profile: ChannelProfile, doppler_hz: torch.Tensor, times_s: torch.Tensor,
              num_sinusoids: int, generator: torch.Generator) -> torch.Tensor:
    """Returns sum-of-sinusoids tap gains ``a`` [B, L, T] complex64 with ``E|a_l|^2 = P_l``.

    ``doppler_hz`` [B] float32 (one maximum Doppler per frame), ``times_s`` [T].
    Each tap is ``sqrt(P_l/N) sum_n exp(j(2 pi f_d t c_n + phi_n))``, ``phi_n ~ U(-pi, pi)``.
    TDL: ``c_n = cos(alpha_n)``, ``alpha_n = 2 pi n / N + theta_n``, ``theta_n ~ U(-pi/N, pi/N)``
    drawn per frame: averaging over ``theta`` makes the autocorrelation exactly
    ``J0(2 pi f_d dt)``. CDL: ``N`` is the cluster's ray count (``num_sinusoids`` is not used) and
    ``c_n = sin(ZoA_{pi(n)}) cos(AoA_{sigma(n)} - az)``, where ``sigma`` and ``pi`` are
    independent uniformly random permutations drawn per frame and per cluster: TR 38.901's
    random coupling of rays within a cluster, as Sionna 2.2's ``CDL._random_coupling`` does it
    (it shuffles AoA, AoD, ZoA and ZoD independently per link and cluster, by argsort of random
    numbers; with SISO omni antennas only the arrival pair AoA/ZoA sets the Doppler). The
    cluster's time correlation is then :func:`cdl_time_correlation`. A LoS path at tap 0 adds
    ``sqrt(P_los) exp(j(2 pi f_d t c_los + phi_0))``; its angles are fixed.
    """
    return evaluate_tap_gains(profile, draw_sinusoids(profile, doppler_hz, num_sinusoids, generator), times_s)


def evaluate_tap_gains(profile: ChannelProfile, draws: SinusoidDraws, times_s: torch.Tensor) -> torch.Tensor:
    """Returns the tap gains ``a`` [B, L, T] complex64 of ``draws`` at ``times_s`` [T] (s); see :func:`tap_gains`."""
    doppler_hz, cosines, phi = draws.doppler_hz, draws.cosines, draws.phases_rad
    dev = doppler_hz.device
    B, L, N = cosines.shape
    w = 2 * math.pi * doppler_hz.float().reshape(B, 1, 1, 1)  # rad/s
    t = times_s.to(dev, torch.float32).reshape(1, 1, 1, -1)
    a_re = torch.empty(B, L, t.shape[-1], device=dev)
    a_im = torch.empty_like(a_re)
    # Real cos/sin sums, then one complex tensor: about 3x faster on CPU than summing
    # torch.polar phasors. Chunks keep the [b, L, N, T] intermediates in cache; same numbers.
    c = _chunk(dev)
    for s in range(0, B, c):
        arg = (w[s:s + c] * t) * cosines[s:s + c].unsqueeze(-1) + phi[s:s + c].unsqueeze(-1)
        a_re[s:s + c] = torch.cos(arg).sum(2)
        a_im[s:s + c] = torch.sin(arg).sum(2)
    a = torch.complex(a_re, a_im)
    amp = torch.as_tensor(np.sqrt(profile.nlos_powers / N), dtype=torch.float32, device=dev)
    a = a * amp.reshape(1, L, 1)
    if profile.is_los:
        arg0 = w.reshape(B, 1) * profile.los_cos_aoa * t.reshape(1, -1) + draws.los_phase_rad
        a[:, 0] += math.sqrt(profile.los_power) * torch.polar(torch.ones_like(arg0), arg0)
    return a


_PROFILE_TUPLES: dict[int, tuple[ChannelProfile, tuple[float, ...], tuple[float, ...]]] = {}


def _profile_tuples(profile: ChannelProfile) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Returns (``norm_delays``, ``nlos_powers``) of ``profile`` as tuples (the keys of the caches below), once per profile.

    Kept by ``id``, the profile held alongside so that its ``id`` is not reused; profiles are few
    (one per generator), and the dict is cleared past 64.
    """
    hit = _PROFILE_TUPLES.get(id(profile))
    if hit is None or hit[0] is not profile:
        if len(_PROFILE_TUPLES) >= 64:
            _PROFILE_TUPLES.clear()
        hit = _PROFILE_TUPLES[id(profile)] = (profile, tuple(profile.norm_delays.tolist()),
                                             tuple(profile.nlos_powers.tolist()))
    return hit[1], hit[2]


def _random_permutations(B: int, L: int, N: int, generator: torch.Generator, device) -> torch.Tensor:
    """Returns [B, L, N] int64: an independent uniformly random permutation of ``0..N-1`` per (frame, cluster)."""
    return torch.rand(B, L, N, generator=generator, device=device).argsort(dim=-1)


def ofdm_channel(ofdm: OFDMConfig, profile: ChannelProfile, delay_spread_s: torch.Tensor, doppler_hz: torch.Tensor,
                 num_sinusoids: int, generator: torch.Generator) -> torch.Tensor:
    """Returns the channel on the resource grid, H [B, F, T] complex64, ``E|H|^2 = 1``.

    ``delay_spread_s`` [B] RMS delay spread in s and ``doppler_hz`` [B] maximum Doppler in Hz,
    one per frame. No per-frame energy normalisation: that would bias the time correlation
    and make the channel non-Gaussian. Both grids are equally spaced, so neither the tap gains
    (:func:`uniform_tap_gains`) nor the delay phasors (:func:`delay_phasors`) take a sin/cos
    per grid point; the sum over taps is one matrix product per frame.
    """
    norm_delays = _grid_axes(ofdm, _profile_tuples(profile)[0], doppler_hz.device)[2]
    draws = draw_sinusoids(profile, doppler_hz, num_sinusoids, generator)
    return grid_channel(ofdm, profile, draws, delay_spread_s.float().reshape(-1, 1) * norm_delays)


def tap_gains_and_phasors(ofdm: OFDMConfig, profile: ChannelProfile, delay_spread_s: torch.Tensor,
                          doppler_hz: torch.Tensor, num_sinusoids: int, generator: torch.Generator,
                          phasor_rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(a [B, L, T], P [B', F, L])`` complex64: the tap gains on the symbol grid and the delay phasors,
    so that ``P @ a`` is :func:`ofdm_channel`'s H from the same draws (the same random numbers, equal within
    float32 round-off). ``phasor_rows`` picks the rows whose phasors are built (e.g. one per frame when
    several channels share a frame's delay spread); linear maps across channels may act on ``a`` first.
    """
    norm_delays = _grid_axes(ofdm, _profile_tuples(profile)[0], doppler_hz.device)[2]
    draws = draw_sinusoids(profile, doppler_hz, num_sinusoids, generator)
    a = _uniform_tap_gains(profile, draws, 0.0, ofdm.symbol_duration_s, ofdm.grid_shape[1])
    first_hz, spacing_hz = _subcarrier_grid(ofdm)
    tau = delay_spread_s[phasor_rows].float().reshape(-1, 1) * norm_delays
    return a, delay_phasors(tau, first_hz, spacing_hz, ofdm.grid_shape[0])


def grid_channel(ofdm: OFDMConfig, profile: ChannelProfile, draws: SinusoidDraws, tau_s: torch.Tensor) -> torch.Tensor:
    """Returns H [B, F, T] complex64 on the resource grid of ``draws`` and the tap delays ``tau_s`` [B, L] float32 (s).

    What :func:`ofdm_channel` returns after its draws, bit for bit.
    """
    dev = tau_s.device
    first_hz, spacing_hz = _subcarrier_grid(ofdm)
    F, T = ofdm.grid_shape
    B = tau_s.shape[0]
    h = torch.empty(B, F, T, dtype=torch.complex64, device=dev)
    c = _blocks(B, _CHUNK_GAINS if dev.type == "cpu" else _CHUNK_GPU)
    scratch = _block_scratch(dev)
    # A block of frames at a time through gains, phasors and their product: on CPU every
    # intermediate then stays in cache, where whole-batch temporaries would stream through memory.
    if c >= B:  # one block: no slices (batch 1 pays per tensor)
        a = _uniform_tap_gains(profile, draws, 0.0, ofdm.symbol_duration_s, T, scratch)
        return torch.bmm(delay_phasors(tau_s, first_hz, spacing_hz, F), a, out=h)
    for s in range(0, B, c):
        a = _uniform_tap_gains(profile, draws.rows(slice(s, s + c)), 0.0, ofdm.symbol_duration_s, T, scratch)
        torch.bmm(delay_phasors(tau_s[s:s + c], first_hz, spacing_hz, F), a, out=h[s:s + c])
    return h


@lru_cache(maxsize=64)
def _subcarrier_grid(ofdm: OFDMConfig) -> tuple[float, float]:
    """Returns (the first subcarrier's offset, the spacing), both Hz: the grid of :func:`subcarrier_offsets_hz`."""
    f = subcarrier_offsets_hz(ofdm)
    return float(f[0]), float(ofdm.subcarrier_spacing_hz)


def uniform_tap_gains(profile: ChannelProfile, draws: SinusoidDraws, start_s: float, step_s: float,
                      num_times: int) -> torch.Tensor:
    """Returns the tap gains ``a`` [B, L, T] complex64 of ``draws`` at ``t_m = start_s + m step_s`` (s), ``m < num_times``.

    The numbers of :func:`evaluate_tap_gains` at those times, within float32 round-off (a test
    holds both to a float64 evaluation), by a phase recurrence instead of a sin/cos per sinusoid
    and time: on an equally spaced grid each sinusoid is ``q_n z_n^m``, with
    ``q_n = exp(j(w c_n t_0 + phi_n))`` and ``z_n = exp(j w c_n step)``. The powers are built by
    doubling, ``g[k:2k] = g[0:k] z^k``, from anchors ``z^(2^i)`` squared in float64 and rounded
    once: each value is at most ``1 + 2 ceil(log2 T)`` float32 roundings from exact (below 1.1e-6
    relative for T <= 16; the direct float32 evaluation is off by ``ulp(w c t + phi)``, about 1e-6
    at 10 rad). ``tests/sim/test_fading_recurrence.py`` holds it to that bound.
    """
    return _uniform_tap_gains(profile, draws, start_s, step_s, num_times)


def _uniform_tap_gains(profile: ChannelProfile, draws: SinusoidDraws, start_s: float, step_s: float, num_times: int,
                       scratch: _Scratch | None = None) -> torch.Tensor:
    """:func:`uniform_tap_gains`, its sinusoid phasors in ``scratch`` when given."""
    B, L, N = draws.cosines.shape
    g = _sinusoid_phasors(draws, start_s, step_s, num_times, scratch)  # [T, N, B, L]
    a = (g.sum(1) * _amplitudes(_profile_tuples(profile)[1], N, g.device)).permute(1, 2, 0)  # [B, L, T]
    if profile.is_los:  # B x T values: evaluated directly, in float64
        t = start_s + step_s * torch.arange(num_times, dtype=torch.float64, device=g.device)
        w = (2 * math.pi) * draws.doppler_hz.double().reshape(B, 1)
        arg0 = w * profile.los_cos_aoa * t + draws.los_phase_rad.double()
        a = a.contiguous()
        a[:, 0] += (math.sqrt(profile.los_power) * _phasor(arg0)).to(torch.complex64)
    return a


def _sinusoid_phasors(draws: SinusoidDraws, start_s: float, step_s: float, num_times: int,
                      scratch: _Scratch | None = None) -> torch.Tensor:
    """Returns ``exp(j(w c_n t_m + phi_n))`` [T, N, B, L] complex64 at ``t_m = start_s + m step_s``: every NLoS sinusoid.

    Sinusoids before frames and taps, so that a sum over them adds whole [B, L] blocks. The
    phase recurrence of :func:`uniform_tap_gains` (see there for its accuracy). Written into
    ``scratch``'s ``"phasors"`` when given.
    """
    cosines, phi, fd = draws.cosines, draws.phases_rad, draws.doppler_hz
    B, L, N = cosines.shape
    dev, f64 = cosines.device, torch.float64
    w = fd.double().reshape(1, B, 1).mul_(_constant(2 * math.pi, f64, dev))  # rad/s
    # [N, B, L] rad/s: each sinusoid's angular frequency (the float32 cosines promoted to float64), laid out as the cosines
    nu = torch.mul(w, cosines.permute(2, 0, 1).double())
    phi_t = phi.permute(2, 0, 1)
    shape = (num_times, N, B, L)
    g = (torch.empty(shape, dtype=torch.complex64, device=dev) if scratch is None
         else scratch.take("phasors", shape, torch.complex64, dev))
    if start_s == 0.0:  # the start phases are the drawn ones, exactly
        torch.complex(torch.cos(phi_t), torch.sin(phi_t), out=g[0])
    else:  # reduced to [0, 2 pi) in float64 before the one rounding, whatever the start time
        arg = torch.remainder(nu * _constant(start_s, f64, dev) + phi_t.double(), 2 * math.pi).float()
        torch.complex(torch.cos(arg), torch.sin(arg), out=g[0])
    z = _phasor(nu * _constant(step_s, f64, dev))  # exp(j nu step), complex128 [N, B, L]
    # g[n : 2n] = g[0 : n] z^n; the views of g, made once per buffer when g is a scratch's
    steps = _doubling_views(g) if scratch is None else scratch.views("phasors", shape, _doubling_views)
    for i, (src, dst) in enumerate(steps):
        if i:
            z = z * z  # z^n -> z^(2n), in float64: each anchor is rounded to float32 once
        torch.mul(src, z.to(torch.complex64), out=dst)
    return g


def _phasor_steps(draws: SinusoidDraws, start_s: float, step_s: float, num_times: int, reduce: bool = False
                  ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Returns the factors of :func:`_sinusoid_phasors` laid out by tap, [B, L, N] complex64 each (the draws' layout):
    ``exp(j(w c_n start_s + phi_n))`` and the anchors ``z^k`` of its doubling steps, ``z = exp(j w c_n step_s)``.

    :func:`_double` makes the [T, B, L, N] phasors from them: those of :func:`_sinusoid_phasors` for ``start_s`` 0,
    and within a float32 rounding of the start phase otherwise: ``w c_n start_s`` is rounded to float32 once and
    added to the drawn phase, or, with ``reduce``, first reduced to [0, 2 pi) in float64 (for a start whose
    angle may pass 8 - pi rad, where the sum would leave the binade of 2.4e-7 rad half-ulps).
    """
    cosines, phi, fd = draws.cosines, draws.phases_rad, draws.doppler_hz
    B, L, N = cosines.shape
    dev, f64 = cosines.device, torch.float64
    nu = torch.mul(fd.double().reshape(B, 1, 1).mul_(_constant(2 * math.pi, f64, dev)), cosines.double())  # rad/s
    # nu start_s rounded once, then the sum with the drawn phase once: at the time-domain path's first span centre
    # |nu start_s| <= 2 pi f_d start_s is 0.24 rad at 1000 Hz for single-symbol spans (38 us) and 3.2 rad for the
    # slot (0.5 ms), where the sum stays below 8 rad (half an ulp: 2.4e-7 rad, the binade of a reduced angle)
    arg = torch.mul(nu, _constant(start_s, f64, dev))
    arg = (torch.remainder(arg, 2 * math.pi) if reduce else arg).float().add_(phi)
    start = torch.complex(torch.cos(arg), torch.sin(arg))
    anchors, n = [], 1
    z = _phasor(nu * _constant(step_s, f64, dev)) if num_times > 1 else None  # exp(j nu step), complex128
    while n < num_times:
        if anchors:
            z = z * z  # z^n -> z^(2n), in float64: each anchor is rounded to float32 once
        anchors.append(z.to(torch.complex64))
        n *= 2
    return start, anchors


def _double(g: torch.Tensor, anchors: list[torch.Tensor],
            steps: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Fills ``g`` [T, B, ...] from ``g[0]``: ``g[n : n + k] = g[0 : k] z^n`` with the anchors ``z^n`` [B, ...] of
    :func:`_phasor_steps`.

    On CPU in pieces of frames that torch runs on one thread (see :func:`delay_phasors`: a complex product
    split across threads would make the numbers depend on the thread count).
    """
    B = g.shape[1]
    for (src, dst), z in zip(steps, anchors):
        rows = max(1, _SERIAL_ELEMENTS // (src[:, :1].numel() or 1)) if g.device.type == "cpu" else B
        if rows >= B:
            torch.mul(src, z, out=dst)
            continue
        for s in range(0, B, rows):
            torch.mul(src[:, s:s + rows], z[s:s + rows], out=dst[:, s:s + rows])
    return g


def _doubling_views(g: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Returns the (source, destination) views ``(g[0:k], g[n:n + k])`` of the doubling steps over ``g``'s first axis."""
    steps, n, T = [], 1, g.shape[0]
    while n < T:
        k = min(n, T - n)
        steps.append((g[:k], g[n:n + k]))
        n += k
    return steps


@lru_cache(maxsize=64)
def _amplitudes(nlos_powers: tuple[float, ...], num_sinusoids: int, device: torch.device) -> torch.Tensor:
    """Returns ``sqrt(P_l / N)`` [L] float32: each sinusoid's amplitude in tap ``l``."""
    return torch.as_tensor(np.sqrt(np.array(nlos_powers) / num_sinusoids), dtype=torch.float32, device=device)


def _phasor(angle_rad: torch.Tensor) -> torch.Tensor:
    """Returns ``exp(j angle)``, complex of ``angle``'s precision; several times faster on CPU than ``torch.polar``."""
    return torch.complex(torch.cos(angle_rad), torch.sin(angle_rad))


def delay_phasors(tau_s: torch.Tensor, first_hz: float, spacing_hz: float, num_freqs: int) -> torch.Tensor:
    """Returns ``exp(-j 2 pi f_k tau[b, l])`` [B, F, L] complex64 at ``f_k = first_hz + k spacing_hz`` (Hz), ``k < num_freqs``.

    ``tau_s`` [B, L] (s). A geometric sequence in ``k``: with ``k = K i + j``, it is the product of
    ``exp(-j 2 pi tau (first + K i spacing))`` and ``exp(-j 2 pi tau j spacing)``, each evaluated in
    float64 and rounded once to complex64, ``K ~ sqrt(F)``: about 2 sqrt(F) sin/cos per tap instead
    of F, every value within three complex64 roundings of exact (below 4e-7; a test holds it there),
    far below what a tap's sum of sinusoids carries already.
    """
    B, L = tau_s.shape
    freqs, I, K = _coarse_and_fine_rad_s(first_hz, spacing_hz, num_freqs, tau_s.device)  # freqs: -2 pi f [I + K, 1]
    angle = freqs * tau_s.double().reshape(B, 1, L)  # [B, I + K, L]
    e = torch.complex(torch.cos(angle).float(), torch.sin(angle).float())
    coarse, fine = e[:, :I].unsqueeze(2), e[:, I:].unsqueeze(1)  # [B, I, 1, L], [B, 1, K, L]
    if e.requires_grad:  # differentiated: one product (out= does not record gradients)
        return (coarse * fine).reshape(B, I * K, L)[:, :num_freqs]
    out = torch.empty(B, I, K, L, dtype=torch.complex64, device=tau_s.device)
    # One complex64 product per value (the float64 product rounded once cost twice the whole
    # function), in pieces that torch runs on one thread: a complex product on CPU rounds
    # differently in its vectorised and scalar code, and a split across threads moves the
    # boundary between them, so a larger product would make the frames depend on the thread count.
    rows = max(1, _SERIAL_ELEMENTS // (K * L))  # (frame, coarse frequency) rows per piece
    if rows >= I or tau_s.device.type != "cpu":
        step = B if tau_s.device.type != "cpu" else rows // I
        if step >= B:  # one piece: no slices
            torch.mul(coarse, fine, out=out)
        for s in range(0, B, step) if step < B else ():
            torch.mul(coarse[s:s + step], fine[s:s + step], out=out[s:s + step])
    else:
        for b in range(B):
            for r in range(0, I, rows):
                torch.mul(coarse[b, r:r + rows], fine[b], out=out[b, r:r + rows])
    return out.reshape(B, I * K, L)[:, :num_freqs]


@lru_cache(maxsize=64)
def _coarse_and_fine_rad_s(first_hz: float, spacing_hz: float, num_freqs: int, device: torch.device):
    """Returns ([I + K, 1] float64 rad/s: ``-2 pi`` times ``first + K i spacing`` (Hz) for ``i < I``, then times
    ``j spacing`` for ``j < K``; I; K)."""
    K = math.isqrt(max(num_freqs - 1, 0)) + 1
    I = -(-num_freqs // K)
    f = torch.cat([first_hz + K * spacing_hz * torch.arange(I, dtype=torch.float64),
                   spacing_hz * torch.arange(K, dtype=torch.float64)])
    return (-2 * math.pi) * f.reshape(-1, 1).to(device), I, K


@lru_cache(maxsize=64)
def _grid_axes(ofdm: OFDMConfig, norm_delays: tuple[float, ...], device: torch.device):
    """Returns (subcarrier offsets [F] float32 Hz, symbol times [T] float64 s, normalised delays [L] float32) on ``device``.

    Cached, so a training loop that draws frames on a GPU every step makes no host-to-device copies.
    """
    return (subcarrier_offsets_hz(ofdm).to(device, torch.float32), symbol_times_s(ofdm).to(device),
            torch.tensor(norm_delays, dtype=torch.float32, device=device))


def frequency_response(freqs_hz: torch.Tensor, a: torch.Tensor, tau_s: torch.Tensor) -> torch.Tensor:
    """Returns ``H[b, f, t] = sum_l a[b, l, t] exp(-j 2 pi f tau[b, l])`` [B, F, T] complex64.

    ``freqs_hz`` [F], ``a`` [B, L, T] complex64, ``tau_s`` [B, L]. The same sum as Sionna's
    ``cir_to_ofdm_channel`` (a test holds the two equal), with the phasors built from real
    cos/sin, about 3x faster on CPU than the complex ``exp`` Sionna uses.
    """
    B = a.shape[0]
    h = torch.empty(B, freqs_hz.shape[0], a.shape[2], dtype=torch.complex64, device=a.device)
    c = _chunk(a.device)
    for s in range(0, B, c):
        theta = (2 * math.pi) * tau_s[s:s + c].unsqueeze(-1) * freqs_hz  # [b, L, F]
        e = torch.complex(torch.cos(theta), -torch.sin(theta))
        h[s:s + c] = torch.einsum("blf,blt->bft", e, a[s:s + c])
    return h


_CHUNK_ICI_RUN = 32  # frames per run of the time-domain path on CPU: its delay phasors and series stay in L2
_CHUNK_ICI = 16  # frames per block of the ICI terms on CPU when spans are single symbols: FFT blocks stay in cache
_CHUNK_ICI_RUN_SLOT = 50  # frames per run on CPU when the span is the slot (its series is a few vectors a tap)
_CHUNK_ICI_SPAN = 13  # frames per block of the FFTs on CPU when the span is the slot
_CHUNK_ICI_GPU = 2048  # frames per block of the time-domain path on a GPU (its [b, P, T, N] FFT blocks)
_SERIES_TOL = 1e-8  # bound on a sinusoid's series error in time, below float32 round-off (6e-8 of a unit gain)


class TimeVaryingChannel:
    """A batch of channels that change within each OFDM symbol: the time-domain (ICI) path of ``channel.ici``.

    Holds the draws of :func:`draw_sinusoids` (the same as the frequency-domain path's for the
    same generator state) and the tap delays ``tau_s`` [B, L] float32 (s). :meth:`propagate`
    sends a grid through it as a time-domain simulator does, per frame and symbol:

    1. the grid's F subcarriers go on their bins of an N-point IFFT (N and the CP from
       :meth:`OFDMConfig.time_sampling`: 128 and 9 samples for 120 subcarriers and NR's CP);
    2. tap ``l`` delays the symbol by ``tau_l`` exactly: its signal is the IFFT of
       ``X_k exp(-j 2 pi f_k tau_l)``, the band-limited symbol with its cyclic prefix evaluated
       at ``t - tau_l`` (the ideal, untruncated form of the sinc interpolation of Sionna's
       ``cir_to_time_channel``; a test holds the two equal at whole-sample delays, where
       Sionna's is exact);
    3. the taps are weighted by their gains ``a_l(t)`` at each sample time
       ``t = m T_sym + (N_cp + n) Ts`` of the useful part (the receiver drops the CP samples),
       summed, and demodulated by an N-point FFT.

    **The gains in time.** Within symbol ``m`` a tap's gain is a series on a local basis of P
    functions of the time ``u`` from the symbol's centre (units of ``T_u = 1/scs``, ``|u| <= 1/2``):
    ``B_0 = 1``, ``B_p = T_p(2 u) - mean_n T_p(2 u_n)`` (Chebyshev polynomials less their mean over
    the N samples, :func:`_centred_basis`). P is the fewest terms whose Chebyshev tail for a
    sinusoid of the run's largest Doppler, ``2 e^(x/2) (x/2)^P / P!`` with ``x = pi f_d / scs``,
    stays below 5e-9 (``|J_p(z)| <= (z/2)^p / p!``): 6 at 1000 Hz on 15 kHz subcarriers, 1 at 0 Hz. Then
    ``sum_l a_l(t) IFFT(E_l X)(t) = IFFT(H_avg X) + sum_{p >= 1} B_p(u) IFFT(H_p X)``, with ``H_avg``
    the label below and ``H_p`` the frequency response of the taps' p-th local coefficients, so
    ``Y = H_avg X + FFT(sum_{p >= 1} B_p IFFT(H_p X))``: P - 1 IFFTs and one FFT per symbol instead
    of one IFFT per tap.

    The local coefficients come from a **span**: the whole slot of T symbols, or each symbol alone
    (:func:`_series_plan` counts the multiplications of each and takes the slot where it saves 15 %:
    up to about 3 kHz for TDL-A on 15 kHz subcarriers). Over a span of half-width ``h`` about its
    centre ``c`` each sinusoid ``exp(j (w t + phi))`` is
    ``exp(j (w c + phi)) sum_p j^p eps_p J_p(w h) T_p((t - c) / h)`` (Jacobi-Anger; ``eps_0 = 1``,
    ``eps_p = 2``), cut at ``P_s`` terms, with ``J_p(x v)`` (``v = f cos / f_ref`` in [-1, 1]) a
    Chebyshev series in ``v`` whose fixed [P_s, Q] matrix is computed once in float64
    (:func:`_bessel_chebyshev`), stable in float32 at any Doppler. Summed over a tap's sinusoids
    against their phasors at the span centres, then through the delay phasors, the span's terms give
    ``H`` over the span. For single symbols (one phasor a symbol, by a phase recurrence) each
    sinusoid's coefficients are one real [P, Q] @ [Q, b L S] product on its ``T_q(v)``, then one
    complex [P, S] @ [S, T] product per tap. For the slot (one phasor a sinusoid, at its centre) the
    tap's sums of ``T_q(v)`` times the phasor come first, one [2, S] @ [S, Q] product per tap, and
    the coefficients after, one [2 b L, Q] @ [Q, P_s] product. One fixed real matrix then
    re-expands the slot's terms on each symbol's local basis
    (:func:`_span_reexpansion`, the Chebyshev composition ``T_p(alpha_m + beta w)`` on ``T_q(w)``,
    exact in float64, cut at P): at 1000 Hz, 17 slot terms through the delay phasors once and
    re-expanded into 6 local ones per symbol, against 6 per symbol through the delay phasors, about
    half the multiplications (about 50 against 70 us a frame on one CPU thread). For single symbols the
    re-expansion is the centring alone, folded into the coefficient matrix.

    **Error** per sinusoid in time, before float32 rounding: the local cut (below 5e-9), plus, for
    the slot, ``2 P - 1`` times the slot series' own error (the span cut ``2 e^(x_s/2) (x_s/2)^P_s / P_s!``,
    ``x_s = 2 pi f_d h``, and the cut of the ``J_p`` series, each kept below ``5e-9 / (4 P)``: a
    local Chebyshev coefficient of an error ``e`` is at most ``2 e``); for single symbols, the ``J_p``
    series' cut (below 5e-9). Below 1e-8 in all: a test holds every sinusoid to it in float64 at every
    sample, and the gains to the float64 sum of sinusoids in float32. In float32 the slot's
    re-expansion sums 17 terms for each value: y's error against a float64 time-domain simulation is
    2.0e-7 RMS at 1000 Hz (single symbols: 1.6e-7), at most 8.7e-7 (6.3e-7); 2.9e-7 RMS at 3000 Hz.

    Intersymbol interference is not modelled: a tap delayed beyond the CP reads the current
    symbol's cyclic extension, as the frequency-domain path assumes (TDL-A at 300 ns ends at
    2.9 us, inside the 4.7 us CP).

    **Label.** ``Y_k = H_avg,k X_k + ICI_k`` exactly, with ``H_avg`` the channel averaged over the
    symbol's N useful samples: the coefficient a one-tap equaliser after the FFT sees. That average
    is the label ``h``: perfect-CSI equalisation then leaves ICI and noise only, and the split
    ``E|H_avg|^2 + E|ICI|^2 = 1`` is exact (:func:`ici_power`); the value at the symbol's centre
    misses that coefficient by a second-order term (about -47 dB at 1000 Hz) and its covariance
    with the received pilots has no Kronecker closed form of its own. The frequency-domain path's
    label is the value at the symbol start; the two agree at 0 Hz.
    """

    def __init__(self, ofdm: OFDMConfig, profile: ChannelProfile, draws: SinusoidDraws, tau_s: torch.Tensor):
        self.ofdm, self.profile, self.draws, self.tau_s = ofdm, profile, draws, tau_s
        self.fft_size, self.cp_samples = ofdm.time_sampling()

    @classmethod
    def draw(cls, ofdm: OFDMConfig, profile: ChannelProfile, delay_spread_s: torch.Tensor, doppler_hz: torch.Tensor,
             num_sinusoids: int, generator: torch.Generator) -> "TimeVaryingChannel":
        """Returns channels drawn as :func:`ofdm_channel` draws them (same arguments, same generator use)."""
        norm_delays = _grid_axes(ofdm, tuple(profile.norm_delays.tolist()), doppler_hz.device)[2]
        draws = draw_sinusoids(profile, doppler_hz, num_sinusoids, generator)
        return cls(ofdm, profile, draws, delay_spread_s.float().reshape(-1, 1) * norm_delays)

    def __len__(self) -> int:
        return self.tau_s.shape[0]

    def sample_offsets(self, device=None) -> torch.Tensor:
        """Returns ``u`` [N] float32: each useful sample's time from the symbol centre in units of ``T_u = 1/scs``."""
        n = self.fft_size
        return (torch.arange(n, device=device, dtype=torch.float64) - (n - 1) / 2).div(n).float()

    def sample_times_s(self) -> torch.Tensor:
        """Returns the time [T, N] float64 (s) of every useful sample: ``m T_sym + (N_cp + n) Ts``."""
        ts = 1.0 / (self.fft_size * self.ofdm.subcarrier_spacing_hz)
        return symbol_times_s(self.ofdm)[:, None] + (self.cp_samples + torch.arange(self.fft_size, dtype=torch.float64)) * ts

    def propagate(self, x: torch.Tensor, *, impairments=None,
                  out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(h, y)``: the label ``h`` [B, F, T] complex64 and the received grid ``y`` [B, F, T] complex64, noise-free.

        ``x`` [B, F, T] complex64: the transmitted grid. ``y - h x`` is the ICI.
        ``impairments``: an :class:`~wavefront.sim.impairments.Impairments` of the B frames (timing offset,
        CFO, phase noise), applied to each symbol's received samples (:func:`~wavefront.sim.impairments.apply_impairments`);
        the label ``h`` stays the channel without them: the impairment is part of what an estimator must cope with.
        ``out``: a [B, F, T] complex64 tensor to hold ``y``, ``x`` itself allowed (each block reads its rows of ``x``
        before it writes them); a new one when ``None``.
        """
        B = len(self)
        F, T = self.ofdm.grid_shape
        h = torch.empty(B, F, T, dtype=torch.complex64, device=x.device)
        y = torch.empty_like(h) if out is None else out
        cpu = x.device.type == "cpu"
        scratch = _block_scratch(x.device)
        first_hz, spacing_hz = _subcarrier_grid(self.ofdm)
        # Runs of frames share the series and the delay phasors (a few dozen small ops, once per run);
        # within a run, blocks small enough that the ICI terms' FFT blocks stay in cache on CPU.
        slot = B > 0 and self._plan(slice(0, B)).span > 1  # run sizes are tuning: a run's own plan may differ
        run = _blocks(B, (_CHUNK_ICI_RUN_SLOT if slot else _CHUNK_ICI_RUN) if cpu else _CHUNK_ICI_GPU)
        for r0 in range(0, B, run):
            n = min(run, B - r0)
            plan = self._plan(slice(r0, r0 + n))  # each run takes the terms its own largest Doppler needs
            d = self._span_coefficients(slice(r0, r0 + n), plan, scratch)  # [n, L, P_c, K]
            # Subcarrier i sits on bin i rather than on its offset's bin (see _propagate): the F bins of the grid
            e = delay_phasors(self.tau_s[r0:r0 + n], first_hz, spacing_hz, F)
            if plan.span == 1:  # each block: its taps through the delay phasors per symbol, then the FFTs
                c = _blocks(n, _CHUNK_ICI if cpu else n)
                for s in range(0, n, c):
                    rows = slice(r0 + s, r0 + min(s + c, n))  # it writes these rows of h and y
                    self._propagate(x[rows], rows, plan, d[s:s + c], e[s:s + c], scratch, h[rows], y[rows], impairments)
                continue
            # the slot: each block's slot terms through the delay phasors and re-expanded on each symbol, then
            # its FFTs, while its local terms are in cache
            c = _blocks(n, _CHUNK_ICI_SPAN if cpu else n)
            for s in range(0, n, c):
                rows = slice(r0 + s, r0 + min(s + c, n))
                local = self._local_terms(plan, d[s:s + c], e[s:s + c], scratch, h[rows])  # [b, P, T, F]
                self._ici(x[rows], rows, plan.terms, local[:, 1:], scratch, h[rows], y[rows], impairments)
        return h, y

    def gains_at_samples(self) -> torch.Tensor:
        """Returns the tap gains [B, L, T, N] complex64 at every useful sample (:meth:`sample_times_s`), from the series."""
        d = self._series_coefficients(slice(0, len(self)))  # [B, L, P, T]
        basis = _centred_basis(d.shape[2], self.fft_size, d.device)[0]  # 1, then T_p(2 u) less its mean [P, N]
        return torch.einsum("blpt,pn->bltn", d, basis.to(d.dtype))

    def _plan(self, rows: slice) -> "_SeriesPlan":
        """Returns the :class:`_SeriesPlan` of the frames ``rows``: the one of their largest Doppler, rounded up to
        a step of 2^(1/8) (at most 9 % more, so that runs of per-frame Dopplers share a few cached plans)."""
        fd = float(self.draws.doppler_hz[rows].max()) if self.draws.doppler_hz[rows].numel() else 0.0
        ref = 0.0 if fd <= 0 else 2.0 ** (math.ceil(8 * math.log2(fd)) / 8)
        L, S = self.draws.cosines.shape[1:]
        return _series_plan(self.ofdm, ref, L, S, self.tau_s.device)

    def _series_coefficients(self, rows: slice, plan: "_SeriesPlan | None" = None) -> torch.Tensor:
        """Returns ``D`` [b, L, P, T] complex64 with ``a_l(t_c,m + u T_u) = sum_p D[l, p, m] B_p(u)`` for ``|u| <= 1/2``.

        ``B_0 = 1`` and ``B_p = T_p(2 u) - mean(T_p)`` for ``p >= 1``, the mean over the symbol's N
        samples (:func:`_centred_basis`): ``D[l, 0]`` is then tap ``l``'s gain averaged over the
        symbol (the label's taps). ``plan`` defaults to :meth:`_plan` of ``rows``.
        """
        plan = self._plan(rows) if plan is None else plan
        d = self._span_coefficients(rows, plan)  # [b, L, P_c, K]
        if plan.span == 1:
            return d
        r = plan.reexpansion.view(plan.terms, plan.span, plan.span_terms).to(torch.complex64)  # [P, T, P_s]
        return torch.einsum("qmp,blp->blqm", r, d[..., 0])

    def _span_coefficients(self, rows: slice, plan: "_SeriesPlan", scratch: _Scratch | None = None) -> torch.Tensor:
        """Returns ``G`` [b, L, P_c, K] complex64: each tap's coefficients on span ``k``'s basis, its amplitude included.

        ``P_c`` is ``plan.span_terms`` on ``T_p((t - c_k) / h)``, or, for spans of one symbol, ``plan.terms`` on the
        local basis ``B_p`` (:meth:`_series_coefficients`' ``D``). ``scratch`` holds the temporaries when given
        (``G`` then lives in it until its next ``"coefficients"``).
        """
        prof, dr = self.profile, self.draws.rows(rows)
        cos_, fd = dr.cosines, dr.doppler_hz.float()
        b, L, S = cos_.shape
        dev = cos_.device
        P, Q, K = plan.coefficients.shape[0], plan.coefficients.shape[1], plan.spans
        take = (lambda name, shape, dtype: torch.empty(shape, dtype=dtype, device=dev)) if scratch is None else (
            lambda name, shape, dtype: scratch.take(name, shape, dtype, dev))
        # sigma_q T_q(v) [Q, b, L, S] of v = f cos / f_ref, times the tap's amplitude, sigma_q = (-1)^floor(q/2):
        # with those signs the Chebyshev recurrence is one multiply-add a step, W_q = (-1)^(q+1) 2 v W_(q-1) + W_(q-2)
        # (the signs are in the plan's signed coefficients)
        amp = _amplitudes(_profile_tuples(prof)[1], S, dev).reshape(1, L, 1)
        t = take("chebyshev", (Q, b, L, S), torch.float32)
        t[0].copy_(amp.expand(b, L, S))
        if Q > 1:
            v = (fd / plan.doppler_ref_hz).reshape(b, 1, 1) * cos_ if plan.doppler_ref_hz > 0 else torch.zeros_like(cos_)
            torch.mul(t[0], v, out=t[1])
            v2 = v.mul_(2.0)
            v2 = (v2, torch.neg(v2))  # 2 v, -2 v
            w = t.unbind(0)  # the Q rows as views, made once (an index is an op of its own)
            for q in range(2, Q):
                torch.addcmul(w[q - 2], v2[q % 2 == 0], w[q - 1], out=w[q])
        # each sinusoid's phasor at the K span centres [K, b, L, S]: the first, then a recurrence over the spans
        start, anchors = _phasor_steps(dr, plan.first_centre_s, plan.span_step_s, K, reduce=plan.reduce_start)
        g = take("phasors", (K, b, L, S), torch.complex64)
        g[0].copy_(start)
        if K > 1:
            steps = _doubling_views(g) if scratch is None else scratch.views("phasors", (K, b, L, S), _doubling_views)
            _double(g, anchors, steps)
        if plan.span == 1:
            # T phasors a sinusoid: its coefficients, real (even p) or imaginary (odd p), by one real [P, Q] @ [Q, b L S]
            # product written into their parts, so that D is one complex [P, S] @ [S, T] product per tap, read
            # straight from the phasors in their layout
            rows = torch.mm(plan.signed_coefficients, t.view(Q, -1), out=take("series rows", (P, b * L * S), torch.float32))
            coef = take("series", (P, b * L * S), torch.complex64)
            parts = torch.view_as_real(coef)
            parts[0::2, :, 1].zero_()
            parts[1::2, :, 0].zero_()
            parts[0::2, :, 0].copy_(rows[0::2])
            parts[1::2, :, 1].copy_(rows[1::2])
            out = take("coefficients", (b * L, P, K), torch.complex64)
            torch.bmm(coef.view(P, b * L, S).transpose(0, 1), g.view(K, b * L, S).permute(1, 2, 0), out=out)
            d = out.view(b, L, P, K)
        else:
            # one phasor a sinusoid (K = 1): each tap's sum over its sinusoids of W_q times the phasor's (re, im) pair,
            # [2, S] @ [S, Q] per tap, then the coefficients, one [2 b L, Q] @ [Q, P] product, each times its part's unit
            m = take("moments", (b * L, 2, Q), torch.float32)
            torch.bmm(torch.view_as_real(g).view(b * L, S, 2).transpose(1, 2), t.view(Q, b * L, S).permute(1, 2, 0), out=m)
            c = torch.mm(m.view(b * L * 2, Q), plan.signed_coefficients.T).view(b * L, 2, P)
            d = torch.complex(c[:, 0], c[:, 1]).mul_(plan.parts).view(b, L, P, 1)
        if prof.is_los:  # the specular path on tap 0: one more sinusoid, its own cosine and phase
            v0 = fd * (prof.los_cos_aoa / plan.doppler_ref_hz) if plan.doppler_ref_hz > 0 else torch.zeros_like(fd)
            t0 = _chebyshev_values(v0.double(), Q)  # [Q, b]
            c0 = (plan.coefficients.double() @ t0).T * plan.parts.to(torch.complex128)  # [b, P]
            w = 2 * math.pi * fd.double() * prof.los_cos_aoa
            times = plan.first_centre_s + plan.span_step_s * torch.arange(K, dtype=torch.float64, device=dev)
            arg = w.reshape(b, 1) * times + dr.los_phase_rad.double()  # [b, K]
            los = math.sqrt(prof.los_power) * c0.unsqueeze(-1) * _phasor(arg).unsqueeze(1)
            d[:, 0] += los.to(torch.complex64)
        return d

    def _propagate(self, x: torch.Tensor, rows: slice, plan: "_SeriesPlan", d: torch.Tensor, e: torch.Tensor,
                   scratch: _Scratch, h_out: torch.Tensor, y_out: torch.Tensor, impairments=None) -> None:
        """Writes the label and the received grid of the frames ``rows`` (``x`` [b, F, T]) into ``h_out`` and ``y_out``
        [b, F, T], for spans of one symbol.

        ``d`` [b, L, P, T]: their local series (:meth:`_series_coefficients`); ``e`` [b, F, L]: their delay
        phasors, at bin ``i`` the subcarrier ``i`` of :func:`subcarrier_offsets_hz`.
        """
        # Subcarrier i sits on bin i rather than on its offset's bin: a shift by whole bins multiplies
        # the time signal by exp(j 2 pi k0 n / N), which commutes with the weighting in time and is
        # undone by the FFT, so y is the same, without a scatter and a gather.
        b, F, T = x.shape
        L, P = d.shape[1], plan.terms
        torch.bmm(e, d[:, :, 0], out=h_out)  # the label [b, F, T]
        if P == 1:
            if impairments is None:
                torch.mul(h_out, x, out=y_out)
            else:  # impaired at 0 Hz: no ICI
                self._finish(x, rows, torch.zeros(b, T, self.fft_size, dtype=torch.complex64, device=x.device),
                             h_out, y_out, impairments)
            return
        # H_p on the F occupied bins [b, P - 1, T, F], in the layout the FFTs take
        z = scratch.take("terms", (b, (P - 1) * T, F), torch.complex64, x.device)
        torch.bmm(d[:, :, 1:].reshape(b, L, (P - 1) * T).transpose(1, 2), e.transpose(1, 2), out=z)
        self._ici(x, rows, P, z.view(b, P - 1, T, F), scratch, h_out, y_out, impairments)

    def _local_terms(self, plan: "_SeriesPlan", d: torch.Tensor, e: torch.Tensor, scratch: _Scratch,
                     h_out: torch.Tensor) -> torch.Tensor:
        """Returns each symbol's local terms ``H_q`` [b, P, T, F] complex64 of frames whose slot series is ``d``
        [b, L, P_s, 1] and delay phasors ``e`` [b, F, L]; writes their label (``q = 0``) into ``h_out`` [b, F, T].
        The result lives in ``scratch`` until its next ``"local terms"``.
        """
        b, F = e.shape[:2]
        Ps, P, T = plan.span_terms, plan.terms, plan.span
        hs = torch.bmm(d[..., 0].transpose(1, 2), e.transpose(1, 2))  # H over the slot [b, P_s, F]
        local = scratch.take("local terms", (b, P * T, 2 * F), torch.float32, e.device)
        # real: on (re, im) pairs; per frame, so that each frame's terms stay together for the FFTs
        torch.bmm(plan.reexpansion.expand(b, -1, -1), torch.view_as_real(hs).view(b, Ps, 2 * F), out=local)
        local = torch.view_as_complex(local.view(b, P, T, F, 2))
        h_out.copy_(local[:, 0].transpose(1, 2))  # the label
        return local

    def _ici(self, x: torch.Tensor, rows: slice, P: int, terms: torch.Tensor, scratch: _Scratch,
             h_out: torch.Tensor, y_out: torch.Tensor, impairments) -> None:
        """Writes ``y = h X + sum_{p >= 1} FFT(B_p IFFT(H_p X))`` of the frames ``rows`` into ``y_out`` [b, F, T].

        ``terms`` [b, P - 1, T, F]: ``H_p`` for ``p >= 1``; ``h_out`` [b, F, T]: the label.
        """
        b, F, T = x.shape
        N = self.fft_size
        # H_p X on the N bins, zero-padded; unnormalised inverse (the 1/N is in the weights: exact for a power of
        # two); each term weighted by B_p / N on (re, im) pairs; summed; one FFT
        grid = scratch.take("grid", (b, 1, T, F), torch.complex64, x.device)  # X [b, 1, T, F], F contiguous
        grid.copy_(x.transpose(1, 2).unsqueeze(1))
        zp = scratch.take("padded", (b, P - 1, T, N), torch.complex64, x.device)
        zp[..., F:].zero_()
        torch.mul(terms, grid, out=zp[..., :F])
        signal = torch.fft.ifft(zp, dim=-1, norm="forward")
        weights = _centred_basis(P, N, x.device)[1]  # B_p / N [P - 1, 1, 2 N] on (re, im) pairs
        torch.view_as_real(signal).view(b, P - 1, T, 2 * N).mul_(weights)
        spectrum = torch.fft.fft(signal.sum(1), dim=-1)  # [b, T, N]
        if impairments is not None:
            self._finish(x, rows, spectrum, h_out, y_out, impairments)
            return
        torch.mul(h_out, x, out=y_out)
        y_out.transpose(1, 2).add_(spectrum[..., :F])

    def _finish(self, x: torch.Tensor, rows: slice, spectrum: torch.Tensor, h_out: torch.Tensor,
                y_out: torch.Tensor, impairments) -> None:
        """Writes the impaired grid into ``y_out`` [b, F, T] from the ICI ``spectrum`` [b, T, N] (its own buffer)."""
        F = x.shape[1]
        spectrum[..., :F] += (h_out * x).transpose(1, 2)
        y_out.transpose(1, 2).copy_(apply_impairments(impairments, rows, spectrum, self.ofdm, self.cp_samples))


@dataclass(frozen=True)
class _SeriesPlan:
    """How :class:`TimeVaryingChannel` expands the tap gains of a run of frames in time (see there).

    ``terms`` P: the local basis functions per symbol; ``span`` s: symbols per span (1, or T: the slot);
    ``spans`` K = T / s; ``span_terms`` P_s: Chebyshev terms over a span (P when s = 1);
    ``doppler_ref_hz``: the Doppler that scales ``v = f cos / f_ref``; ``first_centre_s`` (s): the first span's
    centre from the slot start; ``span_step_s`` (s): from one span centre to the next; ``reduce_start``: whether
    the phasor at the first centre needs its angle reduced; ``coefficients`` [P_c, Q] float32: row p the
    Chebyshev series in ``v`` of ``j^p eps_p J_p(w h)`` (``h`` the span's half-width) by its one
    nonzero part, the real one for even p and the imaginary one for odd p (for s = 1: of the local basis'
    coefficients, the centring folded in), ``signed_coefficients`` the same with column q times
    ``(-1)^floor(q/2)`` (for the signed recurrence of :meth:`TimeVaryingChannel._span_coefficients`),
    ``parts`` [P_c] complex64 that part's unit (1 or j);
    ``reexpansion`` [P T, P_s] float32 for the slot: row ``(q, m)``, column p, the coefficient of ``B_q`` on
    symbol m of ``T_p`` (``None`` for single symbols). ``coefficients64`` and ``reexpansion64``: the same in
    float64 on the CPU, as computed.
    """

    terms: int
    span: int
    spans: int
    span_terms: int
    doppler_ref_hz: float
    first_centre_s: float
    span_step_s: float
    reduce_start: bool
    coefficients: torch.Tensor
    signed_coefficients: torch.Tensor
    parts: torch.Tensor
    reexpansion: torch.Tensor | None
    coefficients64: torch.Tensor
    reexpansion64: torch.Tensor | None


def _chebyshev_terms(x: float, tol: float) -> int:
    """Returns the fewest P with ``2 e^(x/2) (x/2)^P / P! < tol``: the Chebyshev terms of ``exp(j x tau)``,
    ``|tau| <= 1``, whose tail (``sum_{p >= P} 2 |J_p(x)|``, ``|J_p(x)| <= (x/2)^p / p!``) stays below ``tol``."""
    P, term = 1, 2 * math.exp(x / 2) * (x / 2)
    while term >= tol:
        P += 1
        term *= (x / 2) / P
    return P


def _bessel_chebyshev(x: float, num_terms: int, tol: float) -> np.ndarray:
    """Returns ``A`` [P, Q] float64: ``eps_p J_p(x v) = sum_q A[p, q] T_q(v)`` for ``|v| <= 1``, ``p < P``.

    ``eps_0 = 1``, ``eps_p = 2``. Q is the fewest columns whose cut leaves below ``tol`` in
    ``sum_p |eps_p J_p(x v) - sum_{q < Q} A[p, q] T_q(v)|`` (the sum of the coefficients left out).
    Interpolated at Chebyshev points in float64 (numpy's ``chebinterpolate``, scipy's ``jv``).
    """
    from scipy.special import jv

    deg = num_terms + int(2 * x) + 24
    a = np.stack([(1.0 if p == 0 else 2.0) * np.polynomial.chebyshev.chebinterpolate(
        lambda v, p=p: jv(p, x * v), deg) for p in range(num_terms)])
    tail = np.abs(a).sum(0)[::-1].cumsum()[::-1]  # [deg + 1]: the sum over p and the columns from q on
    return a[:, :max(1, int(np.argmax(np.append(tail, 0.0) < tol)))]


def _span_reexpansion(num_terms: int, span_terms: int, span: int, alpha_step: float, beta: float,
                      fft_size: int) -> np.ndarray:
    """Returns ``R`` [P s, P_s] float64: row ``(q, i)``, column ``p``: the coefficient of the local ``B_q`` in
    ``T_p(alpha_i + beta w)`` cut at ``q < P`` (``w = 2 u`` the local time, ``B`` of :func:`_centred_basis`).

    ``alpha_i = (i - (s - 1) / 2) alpha_step`` is symbol i's centre in the span's unit. ``T_p`` of an affine
    argument is a polynomial of degree p < P_s in ``w``: its Chebyshev coefficients, exactly, from its values
    at P_s Chebyshev points (a discrete cosine transform, float64); the mean of the ``T_q`` over the N samples
    goes to ``B_0``.
    """
    cheb = np.polynomial.chebyshev
    m = span_terms
    nodes = np.cos(np.pi * (np.arange(m) + 0.5) / m)  # [m]
    alpha = (np.arange(span) - (span - 1) / 2) * alpha_step
    values = cheb.chebvander(alpha[:, None] + beta * nodes, m - 1)  # T_p(alpha_i + beta w_j) [s, m, P_s]
    dct = cheb.chebvander(nodes, m - 1).T * (2.0 / m)  # [q, j]
    dct[0] /= 2
    c = np.einsum("qj,ijp->qip", dct, values)[:num_terms]  # [P, s, P_s]
    means = np.array(_sample_basis(num_terms, fft_size, torch.device("cpu"))[1])
    means[1::2] = 0.0
    c[0] = np.einsum("q,qip->ip", means[:len(c)], c)
    return c.reshape(num_terms * span, span_terms)


def _chebyshev_values(v: torch.Tensor, num_terms: int) -> torch.Tensor:
    """Returns ``T_q(v)`` [Q, *v.shape] by the recurrence, ``q < Q``."""
    out = [torch.ones_like(v), v]
    while len(out) < num_terms:
        out.append(2 * v * out[-1] - out[-2])
    return torch.stack(out[:num_terms])


@lru_cache(maxsize=128)
def _series_plan(ofdm: OFDMConfig, doppler_ref_hz: float, num_taps: int, num_sinusoids: int,
                 device: torch.device) -> _SeriesPlan:
    """Returns the :class:`_SeriesPlan` for Dopplers up to ``doppler_ref_hz``: single symbols or the slot.

    The local terms P keep the local cut below 5e-9 (:class:`TimeVaryingChannel`'s bound); over the slot the
    span terms P_s and the ``J_p`` series keep theirs below ``5e-9 / (4 P)``, so that through the re-expansion
    (``2 P - 1`` local coefficients, each at most twice the slot series' error) the total stays below 1e-8.
    The multiplications counted per frame: the sinusoids' coefficients and their sums against the span
    phasors, the taps through the F delay phasors per span, and, for the slot, the re-expansion to T local
    series. The slot is taken where its count is 15 % below the symbols' (measured: TDL-A at 3000 Hz, a count
    18 % lower, ran 4 % faster; TDL-D at 1400 Hz, 15 % lower, ran the same): up to 3150 Hz for TDL-A, 1300 Hz
    for TDL-D. ``num_taps`` and ``num_sinusoids`` enter the count only.
    """
    n_fft, cp = ofdm.time_sampling()
    T, F = ofdm.num_symbols, ofdm.num_subcarriers
    L, S = num_taps, num_sinusoids
    t_u, t_sym = 1.0 / ofdm.subcarrier_spacing_hz, ofdm.symbol_duration_s
    centre0 = (cp + (n_fft - 1) / 2) * t_u / n_fft  # the first symbol's useful centre
    P = _chebyshev_terms(math.pi * doppler_ref_hz * t_u, _SERIES_TOL / 2)
    best = None
    for s in ((1, T) if P > 1 and T > 1 else (1,)):  # the symbol or the slot (no ICI at P = 1: symbols)
        half = ((s - 1) * t_sym + t_u) / 2
        x = 2 * math.pi * doppler_ref_hz * half
        K = T // s
        if s == 1:
            Ps = P
            cost = (P + 1) * L * S * (2 * P + 2) + T * P * L * S * 8 + T * P * L * F * 8
        else:
            Ps = _chebyshev_terms(x, _SERIES_TOL / 2 / (4 * P))
            cost = (Ps + 1) * L * S * 6 + L * (Ps + 1) * Ps * 4 + Ps * L * F * 8 + T * P * Ps * F * 4
        if best is None or cost < 0.85 * best[0]:
            best = (cost, s, K, Ps, x, half)
    _, s, K, Ps, x, half = best
    if s == 1:  # the local basis: B_0's coefficient gathers the even terms times their means (odd means are 0)
        a = _bessel_chebyshev(x, P, _SERIES_TOL / 2)
        means = np.array(_sample_basis(P, n_fft, torch.device("cpu"))[1])
        a[0] = sum((-1) ** (p // 2) * means[p] * a[p] for p in range(0, P, 2))
        a[1:] *= (-1.0) ** (np.arange(1, P) // 2).reshape(-1, 1)  # j^p = (-1)^(p/2), or j (-1)^((p-1)/2)
        r = None
    else:
        a = _bessel_chebyshev(x, Ps, _SERIES_TOL / 2 / (4 * P))
        a *= (-1.0) ** (np.arange(Ps) // 2).reshape(-1, 1)
        r = _span_reexpansion(P, Ps, s, t_sym / half, t_u / 2 / half, n_fft)
    first = centre0 + (s - 1) / 2 * t_sym
    # the first centre's angle w c is rounded to float32 and added to the drawn phase: within 8 rad (half an
    # ulp: 2.4e-7 rad) while w c <= 8 - pi; beyond, it is reduced in float64 first
    reduce = 2 * math.pi * doppler_ref_hz * first > 8 - math.pi
    a64, r64 = torch.from_numpy(a), None if r is None else torch.from_numpy(r)
    return _SeriesPlan(
        terms=P, span=s, spans=K, span_terms=Ps, doppler_ref_hz=doppler_ref_hz, first_centre_s=first,
        span_step_s=s * t_sym, reduce_start=reduce,
        coefficients=a64.float().to(device),
        signed_coefficients=(a64 * (-1.0) ** (torch.arange(a64.shape[1]) // 2)).float().to(device), parts=torch.tensor([1, 1j])[torch.arange(len(a)) % 2].to(torch.complex64).to(device),
        reexpansion=None if r64 is None else r64.float().to(device), coefficients64=a64, reexpansion64=r64)


@lru_cache(maxsize=64)
def _centred_basis(num_terms: int, fft_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (``B_p(u)`` [P, N] float32, ``B_p(u) / N`` [P - 1, 1, 2 N] float32 for ``p >= 1``, each value twice:
    the weight of a complex sample's (re, im) pair) at each useful sample.

    ``B_0 = 1``; ``B_p = T_p(2 u) - mean_n T_p(2 u_n)`` for ``p >= 1`` (the odd ones have mean 0), with
    ``u`` [N] each useful sample's time from the symbol centre in units of ``T_u``, as
    :meth:`TimeVaryingChannel.sample_offsets`, and ``T_p`` the Chebyshev polynomials by their recurrence
    in float64, rounded once. The means are over the N samples: the average the FFT takes.
    """
    basis, means = _sample_basis(num_terms, fft_size, torch.device("cpu"), dtype=torch.float64)
    centred = basis - torch.tensor(means, dtype=torch.float64).reshape(-1, 1)
    centred[0] = 1.0
    pairs = (centred[1:] / fft_size).float().unsqueeze(-1).expand(-1, -1, 2).reshape(num_terms - 1, 1, 2 * fft_size)
    return centred.float().to(device), pairs.to(device)


@lru_cache(maxsize=64)
def _sample_basis(num_terms: int, fft_size: int, device: torch.device,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, list[float]]:
    """Returns (``T_p(2 u)`` [P, N] of ``dtype``, its means over the N samples, P floats) for ``p < P``.

    ``u`` [N]: each useful sample's time from the symbol centre in units of ``T_u``, as
    :meth:`TimeVaryingChannel.sample_offsets`; ``T_p`` the Chebyshev polynomials, by their recurrence in float64.
    """
    n = fft_size
    v = 2 * (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / n
    basis = [torch.ones_like(v), v]
    while len(basis) < num_terms:
        basis.append(2 * v * basis[-1] - basis[-2])
    basis = torch.stack(basis[:num_terms])
    return basis.to(device, dtype), basis.mean(1).tolist()
