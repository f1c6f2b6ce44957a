"""Batched, seeded OFDM frames over TDL fading: the true channel, received pilots and data.

A frame is one resource grid ``[F, T]``. Pilots are unit-modulus QPSK at the config's pilot
layout (:class:`~wavefront.sim.pilots.PilotLayout`): the Kronecker grid ``pilot_subcarriers x
pilot_symbols`` (pilot tensors ``[B, P_f, P_t]``) or any set of ``P`` positions (``[B, P]``, in
position order); every other resource element carries QAM data
of unit average power (Sionna's Gray-labelled constellations). The receiver sees
``y = H x + n`` with ``n ~ CN(0, sigma^2)``, ``sigma^2 = 10^(-snr_db/10)``: the SNR is per
resource element, ``E|H x|^2 / sigma^2``, because ``E|H|^2 = E|x|^2 = 1``.

With ``channel.ici`` the channel changes within each symbol and the grid goes through the
time-domain path (:class:`~wavefront.sim.fading.TimeVaryingChannel`): ``y = H_avg x + ICI + n``,
``H`` (the label) is each symbol's average channel, and the same seed draws the same channel,
noise and bits as without it. ICI needs the data around the pilots, so frames drawn without
data still carry it in their pilots. Without ``channel.ici``, a warning says when the ICI left
out exceeds the noise.

Receiver impairments (``channel.cfo_hz``, ``phase_noise_linewidth_hz``, ``timing_offset_samples``;
:mod:`~wavefront.sim.impairments`) also take the time-domain path, act on the received samples,
and are drawn per frame from their own stream of the seed: the channel, noise and bits stay those
of the same seed without them, and the label ``h`` stays the channel. All off (the default), frames
are bit-identical to a config without the fields.

Determinism: the same (config, seed, batch size, device) gives bit-identical frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cached_property, lru_cache

import torch

from wavefront.errors import ConfigError
from wavefront.sim.config import SYSTEM_LEVEL_PROFILES, SystemConfig
from wavefront.sim.fading import TimeVaryingChannel, _block_scratch, ofdm_channel
from wavefront.sim.impairments import IMPAIRMENT_FIELDS, draw_impairments
from wavefront.sim.profiles import channel_profile
from wavefront.sim.realizations import per_condition_channel
from wavefront.sim.sparse import sparse_channel
from wavefront.sim.statistics import warn_unmodelled_ici, warn_unmodelled_isi
from wavefront.utils import constant, make_generator, resolve_device

_PILOT_SEED = 0x5EED  # the pilot sequence is part of the system, not of a frame
_NOISE_BUFFER_MAX = 1 << 22  # floats (16 MB): larger batches draw their noise into a new tensor
_PLACE_BLOCK = 32  # frames per block when the grid is gathered from bytes: the [b, F*T] codes stay in cache
_GROUPED_MIN_BATCH = 8  # from this batch on a regular layout's grid is placed by block copies (fewer passes, more ops)


@dataclass
class Frames:
    """A batch of frames. Shapes: B frames, F subcarriers, T symbols, P_f x P_t pilots.

    With a scattered layout every ``[.., P_f, P_t]`` below is ``[.., P]`` (position order).

    - ``h`` [B, F, T] complex64: true channel.
    - ``y`` [B, F, T] complex64: received grid (pilots and data); ``None`` without data.
    - ``pilots_rx`` [B, P_f, P_t] complex64: received pilots.
    - ``pilot_symbols`` [P_f, P_t] complex64: the known transmitted pilots (unit modulus).
    - ``pilots_ls`` [B, P_f, P_t] complex64: LS estimate at the pilots, ``pilots_rx / pilot_symbols``.
    - ``bits`` [B, K] float32 (0/1): transmitted information bits, ``K = N_data * bits_per_symbol``
      uncoded, ``K = round(rate * N_data * bits_per_symbol)`` with LDPC; ``None`` without data.
    - ``codewords`` [B, N_data * bits_per_symbol] float32: the mapped bits (LDPC codewords, or
      ``bits`` itself when uncoded); ``None`` without data.
    - ``snr_db``, ``delay_spread_s``, ``doppler_hz``, ``noise_var`` [B] float32: per-frame conditions.
    - ``profile``: TDL profile letter; ``seed``: the seed the batch was drawn from.
    - ``path_delays_s``, ``path_doppler_hz``, ``path_powers`` [B, N] float32: ``profile: sparse``
      only, each frame's paths (the support; :func:`~wavefront.sim.sparse.sparse_channel`);
      ``None`` otherwise. ``meta`` carries them when set.
    - ``cfo_hz``, ``phase_noise_linewidth_hz``, ``timing_offset_samples`` [B] float32: each frame's
      receiver impairments (:mod:`~wavefront.sim.impairments`) when the config sets them, else ``None``;
      ``meta`` carries those that are set. ``h`` stays the channel without them.
    - ``pilots_dmrs`` [B, R, U, N_f, N_t] complex64: MIMO with NR DM-RS pilots only, every user's raw
      group observations ``conj(r_g) y`` (:mod:`wavefront.sim.dmrs`); ``meta`` carries them as
      ``"dmrs_rx"`` when set. ``None`` otherwise.
    - ``rx_correlation`` [B] float32: MIMO with a ``mimo.rx_correlation`` range only, each frame's
      drawn rho; ``meta`` carries it as ``"rx_correlation"``. ``None`` otherwise (the config's rho).
    """

    h: torch.Tensor
    y: torch.Tensor | None
    pilots_rx: torch.Tensor
    pilot_symbols: torch.Tensor
    pilots_ls: torch.Tensor
    bits: torch.Tensor | None
    codewords: torch.Tensor | None
    snr_db: torch.Tensor
    delay_spread_s: torch.Tensor
    doppler_hz: torch.Tensor
    noise_var: torch.Tensor
    profile: str
    seed: int
    path_delays_s: torch.Tensor | None = None
    path_doppler_hz: torch.Tensor | None = None
    path_powers: torch.Tensor | None = None
    cfo_hz: torch.Tensor | None = None
    phase_noise_linewidth_hz: torch.Tensor | None = None
    timing_offset_samples: torch.Tensor | None = None
    pilots_dmrs: torch.Tensor | None = None
    rx_correlation: torch.Tensor | None = None

    @property
    def meta(self) -> dict[str, torch.Tensor]:
        """Per-frame conditions as a dict of [B] float32 tensors (what estimators receive), and the sparse support [B, N] when set."""
        meta = {"snr_db": self.snr_db, "delay_spread_s": self.delay_spread_s,
                "doppler_hz": self.doppler_hz, "noise_var": self.noise_var}
        if self.path_delays_s is not None:
            meta.update(path_delays_s=self.path_delays_s, path_doppler_hz=self.path_doppler_hz, path_powers=self.path_powers)
        for name in IMPAIRMENT_FIELDS:
            if getattr(self, name) is not None:
                meta[name] = getattr(self, name)
        if self.pilots_dmrs is not None:
            meta["dmrs_rx"] = self.pilots_dmrs
        if self.rx_correlation is not None:
            meta["rx_correlation"] = self.rx_correlation
        return meta

    def __len__(self) -> int:
        return self.h.shape[0]

    def to(self, device) -> "Frames":
        """Returns a copy with every tensor on ``device``."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return Frames(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()})


def _draw(value, n: int, g: torch.Generator, device, points: list[float] | None = None) -> torch.Tensor:
    """Returns [n] float32: ``value`` repeated, uniform draws in ``(low, high)``, or uniform picks from ``points``."""
    if points is not None:
        idx = torch.randint(0, len(points), (n,), generator=g, device=device)
        return torch.tensor(points, dtype=torch.float64, device=device)[idx].float()
    if isinstance(value, tuple):
        lo, hi = value
        return torch.rand(n, generator=g, device=device, dtype=torch.float64).mul_(hi - lo).add_(lo).float()
    return torch.full((n,), float(value), device=device, dtype=torch.float32)


def _noise_buffer(shape: tuple[int, ...], device: torch.device) -> torch.Tensor | None:
    """Returns where to draw a batch's noise: on CPU this thread's buffer, kept between calls up to
    :data:`_NOISE_BUFFER_MAX` floats (new pages for a grid-sized temporary on every call cost page
    faults); otherwise ``None``, a new tensor."""
    if device.type != "cpu" or math.prod(shape) > _NOISE_BUFFER_MAX:
        return None
    return _block_scratch(device).take("noise", shape, torch.float32, device)


def _random_bytes(n_frames: int, n_bits: int, g: torch.Generator, device) -> torch.Tensor:
    """Returns [n_frames, 4 W] int64: the bytes (low first) of ``W = ceil(n_bits / 32)`` random 32-bit words per frame.

    One random draw per 32 bits: about 2.5x faster on CPU than ``randint(0, 2)`` per bit. Bit
    ``k`` of word ``i`` is bit ``32 i + k`` of the frame, so byte ``j`` holds bits ``8 j .. 8 j + 7``.
    """
    words = torch.randint(0, 1 << 32, (n_frames, -(-n_bits // 32)), generator=g, device=device, dtype=torch.int64)
    return ((words.unsqueeze(-1) >> _byte_shifts(words.device)) & constant(255, torch.int64, words.device)).reshape(n_frames, -1)


def _random_bits(n_frames: int, n_bits: int, g: torch.Generator, device) -> torch.Tensor:
    """Returns [n_frames, n_bits] float32 fair bits: those of :func:`_random_bytes`, least significant first."""
    return _unpack(_random_bytes(n_frames, n_bits, g, device), n_bits)


def _unpack(byte_values: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Returns [n, n_bits] float32: the bits of ``byte_values`` [n, K] int64, least significant first, through a table."""
    n = byte_values.shape[0]
    table = _bit_table(byte_values.device)
    return table.index_select(0, byte_values.reshape(-1)).reshape(n, -1)[:, :n_bits]


@lru_cache(maxsize=8)
def _byte_shifts(device: torch.device) -> torch.Tensor:
    return torch.tensor([0, 8, 16, 24], device=device)


@lru_cache(maxsize=8)
def _bit_table(device: torch.device) -> torch.Tensor:
    """Returns [256, 8] float32: the bits of every byte value, least significant first."""
    return ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).float().to(device)


@lru_cache(maxsize=32)
def _label_table(bits_per_symbol: int, device: torch.device) -> torch.Tensor:
    """Returns [256, 8 / k] int64: the k-bit labels (first bit most significant) a byte's bits make, in stream order."""
    k = bits_per_symbol
    bits = (torch.arange(256)[:, None] >> torch.arange(8)) & 1  # [256, 8], stream order
    weights = 2 ** torch.arange(k - 1, -1, -1)
    return (bits.reshape(256, 8 // k, k) * weights).sum(-1).to(device)


class FrameGenerator:
    """Draws batches of OFDM frames for a :class:`SystemConfig` on any device.

    ``generate(batch_size, seed, with_data=True) -> Frames``. Delay spread, Doppler and SNR
    are drawn per frame from ``config.channel`` (fixed values, uniform ranges or discrete grids);
    the fading realization per frame, or per (delay spread, Doppler) with
    ``channel.realization = "per-condition"`` (the AdaFortiTran reference protocol).
    ``ldpc_rate``: encode each frame's data as one 5G NR LDPC codeword of that rate (Sionna's
    encoder, rate-matched to the frame's data capacity); ``None`` sends uncoded bits.
    """

    def __init__(self, config: SystemConfig, device: str | torch.device = "cpu", ldpc_rate: float | None = None):
        if ldpc_rate is not None and not (0.0 < ldpc_rate < 1.0):
            raise ConfigError("ldpc_rate", ldpc_rate, "must be in (0, 1)")
        self.ldpc_rate = ldpc_rate
        if config.mimo.is_mimo:
            raise ConfigError("mimo", f"{config.mimo.num_rx_antennas} antennas x {config.mimo.num_users} users",
                              "this path is single-antenna: MIMO frames come from wavefront.sim.mimo.frame_generator "
                              "(sweep, generate; train takes a MIMO config per pair)")
        if config.channel.profile in SYSTEM_LEVEL_PROFILES:
            raise ConfigError("channel.profile", config.channel.profile, "is drawn through Sionna's system-level model "
                                                                         "for several antennas or users only (give "
                                                                         "--rx-antennas and --users)")
        self.config = config
        self.ofdm = config.ofdm
        self.device = resolve_device(device)
        self.profile = channel_profile(config.channel.profile, config.channel.travel_azimuth_deg)
        o = self.ofdm
        self.layout = o.pilot_layout
        if self.layout.is_kronecker:
            self.pilot_f = torch.tensor(o.pilot_subcarriers, device=self.device)
            self.pilot_t = torch.tensor(o.pilot_symbol_indices, device=self.device)
            mask = torch.zeros(o.grid_shape, dtype=torch.bool)
            mask[torch.tensor(o.pilot_subcarriers)[:, None], torch.tensor(o.pilot_symbol_indices)[None, :]] = True
            # [P_f, 1] x [1, P_t] indexes the [P_f, P_t] pilot grid
            self.pilot_index = (self.pilot_f[:, None], self.pilot_t[None, :])
        else:
            self.pilot_f = torch.as_tensor(self.layout.subcarrier_indices, device=self.device)
            self.pilot_t = torch.as_tensor(self.layout.symbol_indices, device=self.device)
            mask = torch.from_numpy(self.layout.mask())
            self.pilot_index = (self.pilot_f, self.pilot_t)  # [P] pairs: the positions, in order
        self.pilot_mask = mask.to(self.device)  # [F, T]
        # Flat positions (f * T + t) of the pilots, in pilot order, and of the data, in grid
        # order: one index_copy / index_select each where a boolean mask would search the grid.
        T = o.num_symbols
        self._pilot_flat = (self.pilot_index[0] * T + self.pilot_index[1]).reshape(-1)
        self._data_flat = (~self.pilot_mask).reshape(-1).nonzero().squeeze(1)
        # The grid's sizes, read once: the config computes them on every access.
        self._num_data_res, self._grid_shape, self._pilot_shape = o.num_data_res, o.grid_shape, o.pilot_shape
        g = make_generator(_PILOT_SEED)
        q = torch.randint(0, 4, o.pilot_shape, generator=g).double()
        self.pilot_symbols = torch.polar(torch.ones_like(q), (2 * q + 1) * torch.pi / 4).to(torch.complex64).to(self.device)
        if not config.channel.time_domain:
            warn_unmodelled_ici(config, self.profile)
        warn_unmodelled_isi(config, self.profile)  # neither path simulates ISI

    @cached_property
    def mapper(self):
        from sionna.phy.mapping import Mapper

        return Mapper("qam", self.ofdm.bits_per_symbol, device=str(self.device))

    @cached_property
    def _constellation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (Sionna's constellation points [2^k] complex64, the label weights [k] float32, MSB first)."""
        k = self.ofdm.bits_per_symbol
        points = self.mapper.constellation().to(torch.complex64)
        return points, 2.0 ** torch.arange(k - 1, -1, -1, dtype=torch.float32, device=self.device)

    @cached_property
    def _byte_symbols(self) -> torch.Tensor:
        """Returns [256, 8 / k] complex64: the constellation points of the k-bit labels a byte's bits make, in stream order."""
        labels = _label_table(self.ofdm.bits_per_symbol, self.device)
        return self._symbols(labels)

    @cached_property
    def _byte_grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns what :meth:`_grid_from_bytes` reads: per grid position (flat ``f * T + t``), [F*T] int64 each,
        the byte column, the multiplier and the offset of its code, and the table of codes [C] int64.

        The table holds ``_byte_symbols`` (code ``S byte + s`` is symbol ``s`` of ``byte``, ``S = 8 / k``)
        and after them the pilot symbols (code ``256 S + j`` is pilot ``j``), viewed as int64 so that
        the gather copies bits. A data position's code is ``S byte[column] + s``; a pilot's has
        multiplier 0 and offset ``256 S + j``.
        """
        symbols = self._byte_symbols  # [256, S]
        S = symbols.shape[1]
        table = torch.cat([symbols.reshape(-1), self.pilot_symbols.reshape(-1)]).view(torch.int64)
        n = self._grid_shape[0] * self._grid_shape[1]
        column = torch.zeros(n, dtype=torch.int64, device=self.device)
        scale = torch.zeros_like(column)
        offset = torch.empty_like(column)
        m = torch.arange(self._num_data_res, device=self.device)  # data symbol m is symbol m % S of byte m // S
        column[self._data_flat], scale[self._data_flat], offset[self._data_flat] = m // S, S, m % S
        offset[self._pilot_flat] = 256 * S + torch.arange(self._pilot_flat.numel(), device=self.device)
        return column, scale, offset, table

    def _grid_from_bytes(self, byte_values: torch.Tensor) -> torch.Tensor:
        """Returns the transmitted grid x [B, F*T] complex64 of uncoded ``byte_values`` [B, K] int64: data and pilots.

        One gather from a table per position instead of mapping the data and scattering it between
        the pilots: the same symbols, with no grid-sized temporary (blocks of frames keep the codes in cache).
        """
        if byte_values.shape[0] >= _GROUPED_MIN_BATCH and self._grid_groups is not None:
            return self._grid_by_groups(byte_values)
        column, scale, offset, table = self._byte_grid
        B, n = byte_values.shape[0], column.shape[0]
        x = torch.empty(B, n, dtype=torch.complex64, device=self.device)
        bits = x.view(torch.int64)
        c = _PLACE_BLOCK
        if B <= c:  # one block: no slices
            code = torch.gather(byte_values, 1, column.expand(B, n)).mul_(scale).add_(offset)
            torch.index_select(table, 0, code.view(-1), out=bits.view(-1))
            return x
        for s in range(0, B, c):
            b = min(c, B - s)
            code = torch.gather(byte_values[s:s + c], 1, column.expand(b, n)).mul_(scale).add_(offset)
            torch.index_select(table, 0, code.view(-1), out=bits[s:s + c].view(-1))
        return x

    @cached_property
    def _grid_groups(self) -> tuple | None:
        """Returns how a regular Kronecker layout splits the grid into equal groups of subcarriers, or ``None``.

        Regular: the pilot subcarriers are ``off, off + D, ...`` up to F with ``D`` dividing F, so the
        grid is ``G = F / D`` groups of ``D`` subcarriers, each with its pilot row at ``off``, and the
        data stream (grid order) is ``G`` equal runs of ``D T - P_t`` symbols. Returns ``(G, D, off,
        the data runs (t0, t1) of a pilot row, the pilot symbol indices [P_t] int64)``.
        """
        o = self.ofdm
        if not self.layout.is_kronecker or 8 % o.bits_per_symbol or self.ldpc_rate is not None:
            return None
        F, T = self._grid_shape
        ps, pt = list(o.pilot_subcarriers), sorted(o.pilot_symbol_indices)
        D = ps[1] - ps[0] if len(ps) > 1 else F
        if D < 1 or F % D or ps != list(range(ps[0], F, D)) or ps[0] >= D:
            return None
        runs, t0 = [], 0
        for t in pt + [T]:
            if t > t0:
                runs.append((t0, t))
            t0 = t + 1
        return F // D, D, ps[0], runs, torch.tensor(pt, device=self.device)

    def _grid_by_groups(self, byte_values: torch.Tensor) -> torch.Tensor:
        """:meth:`_grid_from_bytes` on a regular layout (:attr:`_grid_groups`): the data symbols of whole bytes
        in one gather of table rows, then a handful of block copies into the groups and the pilots in one
        assignment, every frame at once (the per-position gather costs four passes over the grid)."""
        G, D, off, runs, pilot_t = self._grid_groups
        B, T = byte_values.shape[0], self._grid_shape[1]
        rows = self._byte_symbols.view(torch.int64)  # [256, S]: a byte's S symbols, as bits
        per = D * T - pilot_t.numel()
        sym = rows.index_select(0, byte_values.reshape(-1)).view(B, -1)[:, :self._num_data_res].view(B, G, per)
        x = torch.empty(B, G * D * T, dtype=torch.complex64, device=self.device)
        xi = x.view(torch.int64).view(B, G, D, T)
        a = off * T
        if off:
            xi[:, :, :off] = sym[:, :, :a].view(B, G, off, T)
        for t0, t1 in runs:
            xi[:, :, off, t0:t1] = sym[:, :, a:a + t1 - t0]
            a += t1 - t0
        xi[:, :, off, pilot_t] = self.pilot_symbols.view(torch.int64)  # [P_f = G, P_t]
        if off + 1 < D:
            xi[:, :, off + 1:] = sym[:, :, a:].view(B, G, D - off - 1, T)
        return x

    def _labels(self, codewords: torch.Tensor) -> torch.Tensor:
        """Returns the constellation labels [B, N_data] int64 of ``codewords`` [B, N_data * k] (0/1 float32), MSB first."""
        weights = self._constellation[1]
        return (codewords.reshape(codewords.shape[0], -1, weights.shape[0]) * weights).sum(-1).long()

    def _map(self, codewords: torch.Tensor) -> torch.Tensor:
        """Returns the QAM symbols [B, N_data] complex64 of ``codewords`` [B, N_data * k] (0/1 float32).

        Sionna's ``Mapper`` (the label of k bits, MSB first, indexes its constellation) as one
        gather: the same symbols, without its int32 shifts.
        """
        return self._symbols(self._labels(codewords))

    def _symbols(self, labels: torch.Tensor) -> torch.Tensor:
        """Returns the constellation points [B, N] complex64 of ``labels`` [B, N] int64."""
        return self._constellation[0].index_select(0, labels.reshape(-1)).reshape(labels.shape)

    @cached_property
    def codeword_length(self) -> int:
        """Bits mapped per frame: data resource elements x bits per symbol."""
        return self.ofdm.num_data_res * self.ofdm.bits_per_symbol

    @cached_property
    def info_bits(self) -> int:
        """Information bits per frame (``codeword_length`` when uncoded)."""
        n = self.codeword_length
        return n if self.ldpc_rate is None else int(round(self.ldpc_rate * n))

    @cached_property
    def encoder(self):
        from sionna.phy.fec.ldpc import LDPC5GEncoder

        try:
            return LDPC5GEncoder(self.info_bits, self.codeword_length, num_bits_per_symbol=self.ofdm.bits_per_symbol,
                                 device=str(self.device))
        except (ValueError, AssertionError) as exc:
            raise ConfigError("ldpc_rate", self.ldpc_rate, f"no 5G LDPC code for k={self.info_bits}, "
                              f"n={self.codeword_length}: {exc}") from None

    @cached_property
    def decoder(self):
        from sionna.phy.fec.ldpc import LDPC5GDecoder

        return LDPC5GDecoder(self.encoder, hard_out=True, device=str(self.device))
    def generate(self, batch_size: int, seed: int, with_data: bool = True) -> Frames:
        """Returns ``batch_size`` frames drawn from ``seed`` (see :class:`Frames` for shapes)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError("batch_size", batch_size, "must be a positive integer")
        dev, o, ch = self.device, self.ofdm, self.config.channel
        g = make_generator(seed, dev)
        snr_db = _draw(ch.snr_db, batch_size, g, dev, ch.grid_points("snr_db"))
        ds = _draw(ch.delay_spread_s, batch_size, g, dev, ch.grid_points("delay_spread_s"))
        fd = _draw(ch.doppler_hz, batch_size, g, dev, ch.grid_points("doppler_hz"))
        noise_var = self.config.noise_variance(snr_db)
        support = {}
        if self.profile.is_sparse:  # a few paths per frame (no ICI, per-condition or MIMO: the config refuses them)
            h, support = sparse_channel(o, ch.sparse_num_paths, ds, fd, g)
        elif ch.time_domain:  # the same draws; the label and y come from the time-domain path below
            channel = TimeVaryingChannel.draw(o, self.profile, ds, fd, ch.num_sinusoids, g)
        elif ch.realization == "per-condition":  # the reference protocol: one channel per (delay spread, Doppler)
            h = per_condition_channel(o, self.profile, ds, fd, ch.num_sinusoids)
        else:
            h = ofdm_channel(o, self.profile, ds, fd, ch.num_sinusoids, g)  # [B, F, T]
        F, T = self._grid_shape
        noise = torch.randn(batch_size, F, T, 2, generator=g, device=dev, out=_noise_buffer((batch_size, F, T, 2), dev))
        # scaled as real pairs: the numbers of a complex-by-real product, without promoting the scale to complex
        noise = torch.view_as_complex(noise.mul_(torch.sqrt(noise_var.div(constant(2.0, noise_var.dtype, dev))).reshape(-1, 1, 1, 1)))

        pf, pt = self.pilot_index
        bits = codewords = y = None
        if with_data or ch.time_domain:
            byte_values = _random_bytes(batch_size, self.info_bits, g, dev)
            bits = _unpack(byte_values, self.info_bits)
            k = o.bits_per_symbol
            if self.ldpc_rate is None and 8 % k == 0:  # uncoded: the symbols straight from the bytes
                codewords = bits
                x = self._grid_from_bytes(byte_values)
            else:
                codewords = bits if self.ldpc_rate is None else self.encoder(bits)
                x = torch.empty(batch_size, F * T, dtype=torch.complex64, device=dev)
                x.index_copy_(1, self._data_flat, self._map(codewords))
                x[:, self._pilot_flat] = self.pilot_symbols.reshape(-1)
            x = x.view(batch_size, F, T)
            if ch.time_domain:
                # impairments from their own stream: the channel, noise and bits stay those of the seed
                imp = draw_impairments(ch, batch_size, seed, dev, _draw)
                if imp is not None:
                    support.update(imp.as_dict())
                h, hx = channel.propagate(x, impairments=imp, out=x)  # y over x, as the frequency path does
                y = hx.add_(noise)
            else:
                y = torch.mul(h, x, out=x).add_(noise)
            pilots_rx = y.view(batch_size, -1).index_select(1, self._pilot_flat).view(batch_size, *self._pilot_shape)
            if not with_data:
                bits = codewords = y = None
        else:
            h_p = h[:, pf, pt]
            pilots_rx = h_p * self.pilot_symbols + noise[:, pf, pt]
        return Frames(h=h, y=y, pilots_rx=pilots_rx, pilot_symbols=self.pilot_symbols,
                      pilots_ls=pilots_rx / self.pilot_symbols, bits=bits, codewords=codewords, snr_db=snr_db,
                      delay_spread_s=ds, doppler_hz=fd, noise_var=noise_var,
                      profile=ch.profile, seed=int(seed), **support)
