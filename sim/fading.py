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


def _phasor_steps(draws: SinusoidDraws, start_s: float, step_s: float, num_times: int
                  ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Returns the factors of :func:`_sinusoid_phasors` laid out by tap, [B, L, N] complex64 each (the draws' layout):
    ``exp(j(w c_n start_s + phi_n))`` and the anchors ``z^k`` of its doubling steps, ``z = exp(j w c_n step_s)``.

    :func:`_double` makes the [T, B, L, N] phasors from them: those of :func:`_sinusoid_phasors` for ``start_s`` 0,
    and within a float32 rounding of the start phase for the ``start_s`` within a symbol of 0 that it is used with.
    """
    cosines, phi, fd = draws.cosines, draws.phases_rad, draws.doppler_hz
    B, L, N = cosines.shape
    dev, f64 = cosines.device, torch.float64
    nu = torch.mul(fd.double().reshape(B, 1, 1).mul_(_constant(2 * math.pi, f64, dev)), cosines.double())  # rad/s
    # nu start_s rounded once, then the sum with the drawn phase once: for a start within a symbol of 0 (the time-domain
    # path's first symbol centre, 38 us) |nu start_s| <= 2 pi f_d start_s is 0.24 rad at 1000 Hz, where the sum stays
    # below 8 rad, in the binade of an angle reduced to [0, 2 pi) (half an ulp: 2.4e-7 rad), and 3.6 rad at 15 kHz,
    # where it reaches 9.9 rad, one binade up (4.8e-7 rad)
    arg = torch.mul(nu, _constant(start_s, f64, dev)).float().add_(phi)
    start = torch.complex(torch.cos(arg), torch.sin(arg))
    z = _phasor(nu * _constant(step_s, f64, dev))  # exp(j nu step), complex128
    anchors, n = [], 1
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
_CHUNK_ICI = 16  # frames per block of the time-domain path's ICI terms on CPU: their FFT blocks stay in L2
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

    The gains are the sums of sinusoids of :func:`tap_gains`, evaluated at the samples through a
    Chebyshev series in time about each symbol's centre: with ``u`` the time from the centre in
    units of ``T_u = 1/scs`` (``|u| <= 1/2``) and ``y = w c T_u``,
    ``exp(j w c (t_c + u T_u)) = exp(j w c t_c) sum_p j^p eps_p J_p(y / 2) T_p(2 u)`` (Jacobi-Anger;
    ``eps_0 = 1``, ``eps_p = 2``). Its coefficients are those of the Taylor polynomial
    ``sum_{q < Q} (j y u)^q / q!`` re-expanded on ``T_p(2 u)`` by a fixed matrix; a sinusoid's
    error is at most the Taylor remainder and its Chebyshev coefficients, ``2 e^x x^Q / Q!``
    together, plus the Chebyshev terms left out (``|J_p(z)| <= (z/2)^p / p!``), at most
    ``2 e^(x/2) (x/2)^P / P!``, with ``x = pi f_d / scs``
    (:meth:`_series_terms` takes the fewest terms that keep the sum below 1e-8, under float32
    round-off: P = 6 Chebyshev terms at 1000 Hz and 15 kHz where the Taylor series needs 7;
    1 at 0 Hz). On the basis ``B_0 = 1``, ``B_p = T_p(2u) - mean_n T_p(2u_n)`` (:func:`_centred_basis`),
    ``sum_l a_l(t) IFFT(E_l X)(t) = IFFT(H_avg X) + sum_{p >= 1} B_p(u) IFFT(H_p X)``, with ``H_avg``
    the label below and ``H_p`` the frequency response of the taps' p-th coefficients, so
    ``Y = H_avg X + FFT(sum_{p >= 1} B_p IFFT(H_p X))``: P - 1 IFFTs and one FFT per symbol instead of
    one IFFT per tap, and the same numbers as the direct sum (a test holds the gains to the float64
    sum of sinusoids at every sample time). Each sinusoid's coefficients (the Taylor powers of its
    ``y`` times a fixed [Q, P] matrix, ``j^p``, the means and the tap amplitude folded in) multiply its
    phasors at the symbol centres in one [P, S] @ [S, T] product per tap.

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
        return symbol_times_s(self.ofdm)[:, None] + (self.cp_samples + torch.arange(self.fft_size)) * ts

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
        # within a run, blocks small enough that the ICI terms' [b, P, T, N] FFT blocks stay in cache on CPU.
        run = _blocks(B, _CHUNK_ICI_RUN if cpu else _CHUNK_ICI_GPU)
        for r0 in range(0, B, run):
            n = min(run, B - r0)
            # each run takes the terms its own largest Doppler needs
            d = self._coefficients(self._series_inputs(slice(r0, r0 + n)), scratch)  # [n, L, P, T]
            # Subcarrier i sits on bin i rather than on its offset's bin (see _propagate): the F bins of the grid
            e = delay_phasors(self.tau_s[r0:r0 + n], first_hz, spacing_hz, F)
            c = _blocks(n, _CHUNK_ICI if cpu else n)
            for s in range(0, n, c):
                rows = slice(r0 + s, r0 + min(s + c, n))  # it writes these rows of h and y
                self._propagate(x[rows], rows, d[s:s + c], e[s:s + c], scratch, h[rows], y[rows], impairments)
        return h, y

    def gains_at_samples(self) -> torch.Tensor:
        """Returns the tap gains [B, L, T, N] complex64 at every useful sample (:meth:`sample_times_s`), from the series."""
        d = self._series_coefficients(slice(0, len(self)))  # [B, L, P, T]
        basis = _centred_basis(d.shape[2], self.fft_size, d.device)[0]  # 1, then T_p(2 u) less its mean [P, N]
        return torch.einsum("blpt,pn->bltn", d, basis.to(d.dtype))

    def _series_terms(self, rows: slice) -> tuple[int, int]:
        """Returns (P, Q): the Chebyshev terms and the Taylor terms they come from for the frames ``rows``.

        The fewest with ``2 e^(x/2) (x/2)^P / P! + 2 e^x x^Q / Q!`` below 1e-8 (half each),
        ``x = pi f_d / scs`` at the rows' largest Doppler: ``|y u| <= x`` (see the class docstring).
        """
        fd = self.draws.doppler_hz[rows]
        x = math.pi * float(fd.max()) / self.ofdm.subcarrier_spacing_hz if fd.numel() else 0.0
        P, term = 1, 2 * math.exp(x / 2) * (x / 2)
        while term >= _SERIES_TOL / 2:
            P += 1
            term *= (x / 2) / P
        Q, term = 1, 2 * math.exp(x) * x
        while term >= _SERIES_TOL / 2:
            Q += 1
            term *= x / Q
        return P, max(P, Q)

    def _series_coefficients(self, rows: slice, terms: tuple[int, int] | None = None) -> torch.Tensor:
        """Returns ``D`` [b, L, P, T] complex64 with ``a_l(t_c,m + u T_u) = sum_p D[l, p, m] B_p(u)`` for ``|u| <= 1/2``.

        ``B_0 = 1`` and ``B_p = T_p(2 u) - mean(T_p)`` for ``p >= 1``, the mean over the symbol's N
        samples (:func:`_centred_basis`): ``D[l, 0]`` is then tap ``l``'s gain averaged over the
        symbol (the label's taps), and ``D[l, p] = j^p c_p`` for ``p >= 1`` are the Chebyshev
        coefficients of the class docstring. ``terms`` (P, Q) defaults to :meth:`_series_terms` of ``rows``.
        """
        return self._coefficients(self._series_inputs(rows, terms))

    def _series_inputs(self, rows: slice, terms: tuple[int, int] | None = None) -> "_SeriesInputs":
        """Returns the per-sinusoid factors of :meth:`_series_coefficients` for the frames ``rows``."""
        o, prof, dr = self.ofdm, self.profile, self.draws.rows(rows)
        P, Q = self._series_terms(rows) if terms is None else terms
        cos_, fd = dr.cosines, dr.doppler_hz.float()
        b, L, S = cos_.shape
        dev = cos_.device
        t_u = 1.0 / o.subcarrier_spacing_hz
        w = 2 * math.pi * fd.reshape(b, 1, 1)
        # centre of symbol m's useful part: t_c0 + m T_sym, an equally spaced grid
        t_c0 = (self.cp_samples + (self.fft_size - 1) / 2) / (self.fft_size * o.subcarrier_spacing_hz)
        start, anchors = _phasor_steps(dr, t_c0, o.symbol_duration_s, o.num_symbols)  # [b, L, S] each
        # each sinusoid's coefficients: its Taylor powers y^q on the basis, j^p and the tap's amplitude
        # included, so that D is one complex product per tap, [P, S] @ [S, T], read straight from the phasors
        # A_l y^q [Q, b L S] by running products down the rows, the tap's amplitude A_l in row 0
        powers = torch.empty(Q, b, L, S, device=dev)
        powers[0] = _amplitudes(_profile_tuples(prof)[1], S, dev).reshape(1, L, 1)
        y = w * t_u * cos_  # [b, L, S]
        for q in range(1, Q):
            torch.mul(powers[q - 1], y, out=powers[q])
        # each coefficient is real (even p) or imaginary (odd p): one real [P, Q] @ [Q, b L S] product, then
        # written into its part (a [b L S, Q] @ [Q, 2 P] product of (re, im) pairs runs 5x slower on CPU)
        rows = torch.mm(_powers_to_basis_parts(P, Q, self.fft_size, dev), powers.view(Q, -1))  # [P, b L S]
        coef = torch.zeros(P, b, L, S, dtype=torch.complex64, device=dev)
        parts = torch.view_as_real(coef).view(P, -1, 2)
        parts[0::2, :, 0].copy_(rows[0::2])
        parts[1::2, :, 1].copy_(rows[1::2])
        los = None
        if prof.is_los:
            t_c = t_c0 + symbol_times_s(o).to(dev)  # [T] float64
            arg0 = w.reshape(b, 1).double() * prof.los_cos_aoa * t_c + dr.los_phase_rad.double()  # [b, T]
            y0 = (2 * math.pi * t_u * prof.los_cos_aoa) * fd  # [b]
            coef0 = _powers(y0, Q).to(torch.complex64) @ _powers_to_basis(P, Q, self.fft_size, dev)  # [b, P]
            los = math.sqrt(prof.los_power) * coef0.unsqueeze(-1) * _phasor(arg0).to(torch.complex64).unsqueeze(1)
        return _SeriesInputs(start, anchors, coef, los)

    def _coefficients(self, series: "_SeriesInputs", scratch: _Scratch | None = None) -> torch.Tensor:
        """Returns :meth:`_series_coefficients`' ``D`` [b, L, P, T] from ``series``.

        ``scratch`` holds the temporaries when given (``D`` then lives in it until its next ``"coefficients"``).
        """
        P, b, L, S = series.coef.shape
        T, dev = self.ofdm.num_symbols, series.coef.device
        shape = (T, b, L, S)
        if scratch is None:
            g = torch.empty(shape, dtype=torch.complex64, device=dev)
            steps = _doubling_views(g)
        else:
            g = scratch.take("phasors", shape, torch.complex64, dev)
            steps = scratch.views("phasors", shape, _doubling_views)
        g[0].copy_(series.start)
        _double(g, series.anchors, steps)
        out = (torch.empty(b * L, P, T, dtype=torch.complex64, device=dev) if scratch is None
               else scratch.take("coefficients", (b * L, P, T), torch.complex64, dev))
        torch.bmm(series.coef.view(P, b * L, S).transpose(0, 1), g.view(T, b * L, S).permute(1, 2, 0), out=out)
        d = out.view(b, L, P, T)
        if series.los is not None:
            d[:, 0] += series.los
        return d

    def _propagate(self, x: torch.Tensor, rows: slice, d: torch.Tensor, e: torch.Tensor, scratch: _Scratch,
                   h_out: torch.Tensor, y_out: torch.Tensor, impairments=None) -> None:
        """Writes the label and the received grid of the frames ``rows`` (``x`` [b, F, T]) into ``h_out`` and ``y_out`` [b, F, T].

        ``d`` [b, L, P, T]: their series coefficients (:meth:`_coefficients`); ``e`` [b, N, L] (or [b, F, L] when
        P = 1): their delay phasors, at bin ``i`` the subcarrier ``i`` of :func:`subcarrier_offsets_hz` and past F
        the same grid continued.

        With the basis of :meth:`_series_coefficients`, ``y = h X + sum_{p >= 1} FFT(B_p IFFT(H_p X))``: the
        label ``h`` (the taps' symbol averages through the delay phasors) is the p = 0 term, exactly, and
        the P - 1 others are the ICI.
        """
        o, n_fft = self.ofdm, self.fft_size
        b, F, T = x.shape
        L, P = d.shape[1], d.shape[2]
        # Subcarrier i sits on bin i rather than on its offset's bin: a shift by whole bins multiplies
        # the time signal by exp(j 2 pi k0 n / N), which commutes with the weighting in time and is
        # undone by the FFT, so y is the same, without a scatter and a gather.
        torch.bmm(e[:, :F], d[:, :, 0], out=h_out)  # the label [b, F, T]
        if P == 1 and impairments is None:
            torch.mul(h_out, x, out=y_out)
            return
        if P == 1:  # impaired at 0 Hz: no ICI
            spectrum = torch.zeros(b, T, n_fft, dtype=torch.complex64, device=x.device)
        else:  # the ICI's bins [b, T, N]
            # H_p on the F occupied bins only (X is zero past them), then H_p X on the N bins, zero-padded
            z = scratch.take("terms", (b, (P - 1) * T, F), torch.complex64, x.device)
            torch.bmm(d[:, :, 1:].reshape(b, L, (P - 1) * T).transpose(1, 2), e[:, :F].transpose(1, 2), out=z)
            xt = scratch.take("grid", (b, 1, T, F), torch.complex64, x.device)
            xt.copy_(x.transpose(1, 2).unsqueeze(1))
            zp = scratch.take("padded", (b, P - 1, T, n_fft), torch.complex64, x.device)
            zp[..., F:].zero_()
            torch.mul(z.view(b, P - 1, T, F), xt, out=zp[..., :F])
            # unnormalised inverse: the 1/N is in the weights (exact for a power of two)
            signal = torch.fft.ifft(zp, dim=-1, norm="forward")
            weights = _centred_basis(P, n_fft, x.device)[1]  # B_p / N [P - 1, 1, 2 N] on (re, im) pairs
            torch.view_as_real(signal).view(b, P - 1, T, 2 * n_fft).mul_(weights)
            spectrum = torch.fft.fft(signal.sum(1), dim=-1)  # [b, T, N]
        if impairments is not None:
            spectrum[..., :F] += (h_out * x).transpose(1, 2)
            y_out.transpose(1, 2).copy_(apply_impairments(impairments, rows, spectrum, o, self.cp_samples))
            return
        torch.mul(h_out, x, out=y_out)
        y_out.transpose(1, 2).add_(spectrum[..., :F])


@dataclass(frozen=True)
class _SeriesInputs:
    """The per-sinusoid factors of :meth:`TimeVaryingChannel._series_coefficients` for a run of b frames.

    ``start`` [b, L, S] complex64: each sinusoid's phasor at the first symbol's centre; ``anchors``: the
    steps ``z^n`` [b, L, S] complex64 of the doubling recurrence (:func:`_phasor_steps`); ``coef``
    [P, b, L, S] complex64: each sinusoid's coefficients on ``B_p``, its tap's amplitude included; ``los``
    [b, P, T] complex64: the LoS path's coefficients on tap 0, or ``None``.
    """

    start: torch.Tensor
    anchors: list[torch.Tensor]
    coef: torch.Tensor
    los: torch.Tensor | None


def _powers(y: torch.Tensor, num_powers: int) -> torch.Tensor:
    """Returns ``y^q`` [n, Q] of ``y`` [n] for ``q < Q``, by running products."""
    out = torch.ones(y.shape[0], num_powers, dtype=y.dtype, device=y.device)
    if num_powers > 1:
        torch.cumprod(y.unsqueeze(1).expand(-1, num_powers - 1), 1, out=out[:, 1:])
    return out


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
def _powers_to_basis(num_terms: int, num_powers: int, fft_size: int, device: torch.device) -> torch.Tensor:
    """Returns ``K`` [Q, P] complex64: ``exp(j y u) = sum_p (sum_q y^q K[q, p]) B_p(u)`` to the series' accuracy.

    ``B_p`` of :func:`_centred_basis`. Column ``p >= 1`` is ``j^p M[p, q] / q!`` (the Taylor
    powers on ``T_p(2 u)``, :func:`_monomials_to_chebyshev`); column 0 is the sum over p of those
    columns times the mean of ``T_p``: the average over the symbol. Computed in float64, rounded once.
    """
    m = _monomials_to_chebyshev(num_terms, num_powers, torch.device("cpu"), dtype=torch.float64)  # [P, Q]
    m = m / torch.tensor([math.factorial(q) for q in range(num_powers)], dtype=torch.float64)
    jp = torch.tensor([1, 1j, -1, -1j], dtype=torch.complex128)[torch.arange(num_terms) % 4]
    k = (jp.reshape(-1, 1) * m).T.contiguous()  # [Q, P]
    means = torch.tensor(_sample_basis(num_terms, fft_size, torch.device("cpu"))[1], dtype=torch.float64)
    means[1::2] = 0.0  # odd T_p are odd about the centre: their mean is 0 (float64 sums leave ~1e-17)
    k[:, 0] = k @ means.to(torch.complex128)
    return k.to(torch.complex64).to(device)


@lru_cache(maxsize=64)
def _powers_to_basis_parts(num_terms: int, num_powers: int, fft_size: int, device: torch.device) -> torch.Tensor:
    """Returns ``K^T`` [P, Q] float32 of :func:`_powers_to_basis` by its nonzero parts: row ``p`` the real part of
    column ``p`` for even ``p``, the imaginary part for odd ``p`` (``j^p`` times a real column)."""
    k = _powers_to_basis(num_terms, num_powers, fft_size, torch.device("cpu")).T
    odd = torch.arange(num_terms) % 2 == 1
    return torch.where(odd.unsqueeze(1), k.imag, k.real).contiguous().to(device)


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


@lru_cache(maxsize=64)
def _monomials_to_chebyshev(num_terms: int, num_powers: int, device: torch.device,
                            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Returns ``M`` [P, Q] of ``dtype``: ``j^q u^q = sum_p j^p M[p, q] T_p(2 u)`` for ``q < Q``, cut at ``p < P``.

    ``u^q = 2^-q (2u)^q`` on the Chebyshev basis (numpy's ``poly2cheb``) has terms of the parity of
    ``q`` only, so ``j^(q - p) = (-1)^((q - p) / 2)`` is real.
    """
    m = np.zeros((num_terms, num_powers))
    for q in range(num_powers):
        cheb = np.polynomial.chebyshev.poly2cheb(np.eye(num_powers)[q]) / 2.0 ** q
        for p in range(min(num_terms, q + 1)):
            if (q - p) % 2 == 0:
                m[p, q] = cheb[p] * (-1) ** ((q - p) // 2)
    return torch.as_tensor(m, dtype=dtype, device=device)
