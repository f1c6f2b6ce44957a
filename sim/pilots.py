"""Pilot layouts: any set of (subcarrier, symbol) positions on the resource grid.

A :class:`PilotLayout` is a set of ``P`` distinct 0-based positions ``(subcarrier, symbol)``
on the ``F x T`` grid, kept sorted subcarrier-major: ``(f, t)`` before ``(f, t')`` for
``t < t'``, and before ``(f', .)`` for ``f < f'``. Two kinds, one type:

- **Kronecker** (the fast path): the positions are a product ``S_f x S_t`` of ``P_f``
  subcarriers and ``P_t`` symbols. Pilots are ``[B, P_f, P_t]`` and their subcarrier-major
  flattening is ``[B, P]``, the same order as the positions. Estimators stay separable
  (LS ``A_f P A_t^T``, LMMSE by Kronecker terms), bit for bit as before layouts existed.
- **scattered**: anything else. Pilots are ``[B, P]`` in position order; LS interpolates over
  the layout's Delaunay triangulation (:mod:`wavefront.sim.interpolation`) and the LMMSE uses a
  dense ``[F T, P]`` filter whose covariances are the Kronecker terms of
  :func:`wavefront.sim.statistics.covariance_terms` evaluated at the positions' own rows and
  columns and multiplied elementwise.

Where a layout comes from:

- ``OFDMConfig`` fields: ``pilot_subcarrier_offset/spacing x pilot_symbols`` (Kronecker), or
  ``pilot_positions`` (any set; it overrides the other three);
- a preset name (:data:`PILOT_PRESETS`) or a JSON file ``{"positions": [[subcarrier, symbol],
  ...]}`` (0-based), applied to a config by :func:`apply_pilots` (``--pilots`` on the command
  line). A file is validated: inside the grid, distinct, at least one position.

Presets (on the config's grid; the default is 120 x 14):

- ``block-12x2``: every 10th subcarrier from 0 on OFDM symbols 2 and 11 (0-based): the default.
- ``adafortitran-paper``: every 3rd subcarrier on symbols 2 and 11 (40 x 2).
- ``lattice-4x6``: symbols 0, 4, 8, 12, six subcarriers each, 20 apart, starting at 0 on
  symbols 0 and 8 and at 5 on symbols 4 and 12 (24 pilots, staggered).
- ``lattice-3x8``: symbols 1, 6, 11, eight subcarriers each, 15 apart, starting at 0, 5, 10.
- ``nr-dmrs-type{1,2}-pos{0,1,2,3}``: NR PDSCH DM-RS, TS 38.211 7.4.1.1.2, mapping type A,
  single-symbol DM-RS, ``dmrs-TypeA-Position`` l0 = 2, antenna port 1000 (CDM group 0,
  Delta = 0), ``dmrs-AdditionalPosition`` 0..3, on a 14-symbol slot (l_d = 14, Table
  7.4.1.1.2-3: l-bar = {2}, {2, 11}, {2, 7, 11}, {2, 5, 8, 11}). Type 1 occupies the
  subcarriers ``4n + 2k'`` (every even subcarrier), type 2 ``6n + k'`` (0, 1, 6, 7, ...),
  ``k' = 0, 1``, over the whole grid (F must be a multiple of 12: whole resource blocks).
  The positions come from Sionna's NR DM-RS grid (``PUSCHConfig.dmrs_grid``, whose
  Table 6.4.1.1.3-3 agrees with Table 7.4.1.1.2-3 for this case); a test holds them to the
  TS 38.211 tables.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch

from wavefront.errors import ConfigError
from wavefront.utils import atomic_write_json, read_text_file


@dataclass(frozen=True)
class PilotLayout:
    """A set of pilot positions on an ``F x T`` grid (see the module docstring).

    ``positions``: ``((subcarrier, symbol), ...)``, 0-based, distinct, sorted subcarrier-major.
    ``grid_shape``: ``(F, T)``. Build with :meth:`from_positions` (validates and sorts) or
    :meth:`kronecker`.
    """

    positions: tuple[tuple[int, int], ...]
    grid_shape: tuple[int, int]

    @classmethod
    def from_positions(cls, positions, grid_shape, field: str = "pilot_positions") -> "PilotLayout":
        """Returns the validated, sorted layout of ``positions`` (``[[subcarrier, symbol], ...]``).

        Raises a one-line :class:`ConfigError` naming ``field`` (with the entry's index) for an
        entry that is not two integers, lies outside the grid or repeats, and for an empty set.
        """
        F, T = (int(v) for v in grid_shape)
        if isinstance(positions, (str, bytes, dict)) or not hasattr(positions, "__len__"):
            raise ConfigError(field, _short(positions), f"must be a list of [subcarrier, symbol] pairs, "
                                                       f"not a {type(positions).__name__}")
        if len(positions) == 0:
            raise ConfigError(field, [], "needs at least one position")
        seen: dict[tuple[int, int], int] = {}
        for i, p in enumerate(positions):
            ok = (isinstance(p, (list, tuple, np.ndarray)) and len(p) == 2
                  and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in p))
            if not ok:
                raise ConfigError(f"{field}[{i}]", _short(p), "must be a pair of integers [subcarrier, symbol] (0-based)")
            f, t = int(p[0]), int(p[1])
            if not (0 <= f < F and 0 <= t < T):
                raise ConfigError(f"{field}[{i}]", [f, t], f"outside the {F}x{T} grid (subcarrier 0..{F - 1}, "
                                                           f"symbol 0..{T - 1}, 0-based)")
            if (f, t) in seen:
                raise ConfigError(f"{field}[{i}]", [f, t], f"repeats position {seen[(f, t)]}; positions must be distinct")
            seen[(f, t)] = i
        return cls(tuple(sorted(seen)), (F, T))

    @classmethod
    def kronecker(cls, subcarriers, symbols, grid_shape) -> "PilotLayout":
        """Returns the product layout ``subcarriers x symbols`` (each a list of 0-based indices)."""
        return cls.from_positions([(int(f), int(t)) for f in subcarriers for t in symbols], grid_shape)

    # ---- shape -------------------------------------------------------------------------
    @property
    def num_pilots(self) -> int:
        """``P``."""
        return len(self.positions)

    @cached_property
    def subcarrier_indices(self) -> np.ndarray:
        """[P] int64: each pilot's subcarrier, in position order."""
        return np.asarray([f for f, _ in self.positions], dtype=np.int64)

    @cached_property
    def symbol_indices(self) -> np.ndarray:
        """[P] int64: each pilot's OFDM symbol, in position order."""
        return np.asarray([t for _, t in self.positions], dtype=np.int64)

    @cached_property
    def _axes(self) -> tuple[list[int], list[int]]:
        return sorted(set(self.subcarrier_indices.tolist())), sorted(set(self.symbol_indices.tolist()))

    @cached_property
    def is_kronecker(self) -> bool:
        """Whether the positions are exactly ``S_f x S_t`` (then the separable fast path applies)."""
        sf, st = self._axes
        return len(sf) * len(st) == self.num_pilots

    @property
    def kron_subcarriers(self) -> list[int]:
        """``S_f`` [P_f], the pilot subcarriers of a Kronecker layout (ConfigError if scattered)."""
        self._need_kronecker("kron_subcarriers")
        return self._axes[0]

    @property
    def kron_symbols(self) -> list[int]:
        """``S_t`` [P_t], the pilot symbols of a Kronecker layout (ConfigError if scattered)."""
        self._need_kronecker("kron_symbols")
        return self._axes[1]

    def _need_kronecker(self, what: str) -> None:
        if not self.is_kronecker:
            raise ConfigError("pilots", self.describe(), f"{what} needs a Kronecker (subcarriers x symbols) layout")

    @property
    def pilot_shape(self) -> tuple[int, ...]:
        """``(P_f, P_t)`` for a Kronecker layout, ``(P,)`` for a scattered one: the per-frame pilot tensor shape."""
        if self.is_kronecker:
            return (len(self._axes[0]), len(self._axes[1]))
        return (self.num_pilots,)

    def covariance_columns(self) -> tuple[list[int], list[int]]:
        """Returns the subcarrier and symbol index lists to evaluate covariance blocks on.

        Kronecker: ``(S_f, S_t)``; blocks combine by ``kron``. Scattered: each pilot's own
        subcarrier and symbol ``[P]``; blocks combine elementwise (``R_p[i, j] =
        sum_k R_f^(k)[f_i, f_j] R_t^(k)[t_i, t_j]``).
        """
        if self.is_kronecker:
            return list(self._axes[0]), list(self._axes[1])
        return self.subcarrier_indices.tolist(), self.symbol_indices.tolist()

    def mask(self) -> np.ndarray:
        """[F, T] bool: True at the pilots."""
        m = np.zeros(self.grid_shape, dtype=bool)
        m[self.subcarrier_indices, self.symbol_indices] = True
        return m

    def describe(self) -> str:
        """Returns the layout in words, e.g. ``12x2: subcarriers 0::10, symbols 2,11`` or ``24 scattered pilots on 13 symbols``."""
        if self.is_kronecker:
            sf, st = self._axes
            step = {b - a for a, b in zip(sf, sf[1:])}
            sub = f"{sf[0]}::{step.pop()}" if len(step) == 1 else ",".join(map(str, sf[:6])) + f",...,{sf[-1]}"
            return f"{len(sf)}x{len(st)}: subcarriers {sub}, symbols {','.join(map(str, st))}"
        n_sym = len(self._axes[1])
        return f"{self.num_pilots} scattered pilots on {n_sym} symbol{'s' * (n_sym != 1)}"

    def to_json(self) -> dict:
        """Returns ``{"positions": [[subcarrier, symbol], ...]}``, the file format of ``--pilots``."""
        return {"positions": [list(p) for p in self.positions]}


def _short(v) -> object:
    text = repr(v)
    return v if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------------------
# Pilot tensors: [B, P_f, P_t] (Kronecker) and [B, P] (any layout)
# ---------------------------------------------------------------------------------------
def flat_pilots(pilots: torch.Tensor, layout: PilotLayout, field: str = "pilots") -> torch.Tensor:
    """Returns pilots ``[B, P]`` (position order) from ``[B, *layout.pilot_shape]`` or ``[B, P]``.

    Raises ConfigError naming ``field`` for any other shape.
    """
    shape = tuple(pilots.shape[1:]) if torch.is_tensor(pilots) else None
    if shape == (layout.num_pilots,):
        return pilots
    if shape == tuple(layout.pilot_shape):
        return pilots.reshape(pilots.shape[0], layout.num_pilots)
    got = tuple(pilots.shape) if torch.is_tensor(pilots) else type(pilots).__name__
    want = ", ".join(map(str, layout.pilot_shape))
    raise ConfigError(field, got, f"must be [B, {want}] or [B, {layout.num_pilots}] for the layout "
                                  f"({layout.describe()})")


def shaped_pilots(pilots: torch.Tensor, layout: PilotLayout, field: str = "pilots") -> torch.Tensor:
    """Returns pilots ``[B, *layout.pilot_shape]`` from either accepted shape (see :func:`flat_pilots`)."""
    return flat_pilots(pilots, layout, field).reshape(pilots.shape[0], *layout.pilot_shape)


# ---------------------------------------------------------------------------------------
# Presets and files
# ---------------------------------------------------------------------------------------
def _lattice(symbols, offsets, spacing, count):
    def build(F, T):
        return [(o + spacing * k, t) for t, o in zip(symbols, offsets) for k in range(count) if o + spacing * k < F]
    return build


def _nr_dmrs(config_type: int, additional_position: int):
    def build(F, T):
        if T != 14:
            raise ConfigError("pilots", f"nr-dmrs-type{config_type}-pos{additional_position}",
                              f"the DM-RS table used is for a 14-symbol slot; the grid has {T} symbols")
        if F % 12:
            raise ConfigError("pilots", f"nr-dmrs-type{config_type}-pos{additional_position}",
                              f"needs whole resource blocks: {F} subcarriers is not a multiple of 12")
        mask = nr_dmrs_mask(config_type, additional_position, F // 12)
        return [tuple(map(int, p)) for p in np.argwhere(mask)]
    return build


@lru_cache(maxsize=16)
def nr_dmrs_mask(config_type: int, additional_position: int, num_resource_blocks: int) -> np.ndarray:
    """Returns [12 N_RB, 14] bool: the REs of DM-RS port 1000 (CDM group 0), mapping type A, l0 = 2, single symbol.

    Read from Sionna's NR DM-RS grid (``sionna.phy.nr.PUSCHConfig``), not re-typed here.
    """
    from sionna.phy.nr import PUSCHConfig

    c = PUSCHConfig()
    c.carrier.n_size_grid = num_resource_blocks
    c.mapping_type = "A"
    c.dmrs.config_type = config_type
    c.dmrs.additional_position = additional_position
    c.dmrs.type_a_position = 2
    c.dmrs.length = 1
    c.dmrs.dmrs_port_set = [0]
    return np.abs(np.asarray(c.dmrs_grid)[0]) > 0


_KRON = {"block-12x2": {"pilot_subcarrier_offset": 0, "pilot_subcarrier_spacing": 10, "pilot_symbols": (2, 11)},
         "adafortitran-paper": {"pilot_subcarrier_offset": 0, "pilot_subcarrier_spacing": 3, "pilot_symbols": (2, 11)}}
_POSITIONS = {
    "lattice-4x6": _lattice((0, 4, 8, 12), (0, 5, 0, 5), 20, 6),
    "lattice-3x8": _lattice((1, 6, 11), (0, 5, 10), 15, 8),
    **{f"nr-dmrs-type{c}-pos{a}": _nr_dmrs(c, a) for c in (1, 2) for a in range(4)},
}
PILOT_PRESETS: tuple[str, ...] = tuple(_KRON) + tuple(_POSITIONS)
PILOTS_HELP = ("pilot layout: a preset (" + ", ".join(PILOT_PRESETS[:4]) + ", nr-dmrs-type{1,2}-pos{0..3}) or a "
               'JSON file {"positions": [[subcarrier, symbol], ...]} (0-based); default: the config\'s')


def preset_fields(name: str, grid_shape: tuple[int, int]) -> dict:
    """Returns the ``OFDMConfig`` pilot fields of preset ``name`` on an ``F x T`` grid."""
    if name in _KRON:
        return {**_KRON[name], "pilot_positions": None}
    if name in _POSITIONS:
        positions = _POSITIONS[name](*grid_shape)
        try:  # a lattice's rows sit on fixed symbols (lattice-4x6: 0, 4, 8, 12), which a shorter grid lacks
            PilotLayout.from_positions(positions, grid_shape, field="positions")
        except ConfigError as exc:
            raise ConfigError("pilots", name, f"does not fit the grid: {exc.field}={exc.value!r}: {exc.rule}") from None
        return {"pilot_positions": tuple(positions)}
    raise ConfigError("pilots", name, f"unknown preset; choose one of {', '.join(PILOT_PRESETS)}, or give a .json file")


def read_layout_file(path: str | Path, grid_shape: tuple[int, int]) -> PilotLayout:
    """Returns the layout in a JSON file ``{"positions": [[subcarrier, symbol], ...]}`` (0-based).

    Other keys (e.g. the bound table ``wavefront pilots optimise`` writes) are ignored, except
    ``grid`` (``[F, T]``, which ``wavefront pilots optimise`` records): a layout designed for
    another grid is refused, since its positions may well fit this one and mean another layout.
    Bad files raise a one-line ConfigError naming ``pilots``, the file and the rule.
    """
    path = Path(path)
    text = read_text_file("pilots", path, "file not found (give a preset name or a .json layout file)",
                          "is a folder; give a .json layout file (e.g. DIR/layout.json)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("pilots", str(path), f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or "positions" not in data:
        raise ConfigError("pilots", str(path), 'must be a JSON object {"positions": [[subcarrier, symbol], ...]}')
    grid = data.get("grid")
    if grid is not None and _grid_pair(grid) != tuple(int(v) for v in grid_shape):
        F, T = grid_shape
        rule = ("must be [subcarriers, symbols]" if _grid_pair(grid) is None else
                f"the layout was made for that grid, the config's is [{F}, {T}]; design it on this grid")
        raise ConfigError("pilots", str(path), f"grid={_short(grid)!r}: {rule}")
    try:
        return PilotLayout.from_positions(data["positions"], grid_shape, field="positions")
    except ConfigError as exc:
        raise ConfigError("pilots", str(path), f"{exc.field}={exc.value!r}: {exc.rule}") from None


def _grid_pair(grid) -> tuple[int, int] | None:
    """Returns a file's ``grid`` as ``(F, T)``, or None where it is not two integers."""
    if isinstance(grid, list) and len(grid) == 2 and all(type(v) in (int, float) and float(v).is_integer() for v in grid):
        return tuple(int(v) for v in grid)
    return None


def write_layout_file(path: str | Path, layout: PilotLayout, **extra) -> Path:
    """Writes ``{"positions": ..., **extra}`` to ``path`` and returns it."""
    return atomic_write_json(path, {**layout.to_json(), **extra}, indent=1)


def pilot_fields(spec: str, grid_shape: tuple[int, int]) -> dict:
    """Returns the ``OFDMConfig`` pilot fields of ``spec``: a preset name or a ``.json`` layout file."""
    spec = str(spec)
    if spec in PILOT_PRESETS:
        return preset_fields(spec, grid_shape)
    if spec.endswith(".json") or Path(spec).exists():
        return {"pilot_positions": read_layout_file(spec, grid_shape).positions}
    return preset_fields(spec, grid_shape)  # raises: unknown preset


def apply_pilots(config, spec: str | None):
    """Returns ``config`` (a SystemConfig) with the pilot layout ``spec`` (preset or file); ``None`` keeps it."""
    if spec is None:
        return config
    return config.updated(ofdm=pilot_fields(spec, config.ofdm.grid_shape))


def layouts_equal(a, b) -> bool:
    """Returns whether two OFDMConfigs have the same grid and the same pilot positions."""
    return tuple(a.grid_shape) == tuple(b.grid_shape) and a.pilot_layout.positions == b.pilot_layout.positions


def is_arithmetic(values: list[int]) -> bool:
    """Returns whether ``values`` are equally spaced (one or two values count)."""
    return len({b - a for a, b in zip(values, values[1:])}) <= 1


__all__ = ["PilotLayout", "PILOT_PRESETS", "apply_pilots", "flat_pilots", "shaped_pilots", 
           "read_layout_file", "write_layout_file", "pilot_fields", "preset_fields", "nr_dmrs_mask", "layouts_equal"]
