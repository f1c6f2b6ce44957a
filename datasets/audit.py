"""Repeated channel realizations within and across dataset folders: what ``wavefront audit`` reports.

Why it exists: the AdaFortiTran reference generator builds a new ``nrTDLChannel`` per frame
without setting its seed, so every frame with the same (delay spread, Doppler) replays the same
fading realization, in the training set and in every test set. A model told the conditions is
then told which channel it sees, and beats the MMSE bound by up to 15 dB. Nothing in the frames'
metadata shows it; the channels do.

**Same realization.** Frames ``A`` and ``B`` ([F, T] complex) hold the same realization when,
each scaled to unit energy, ``min over phi, alpha of ||A - B exp(j (phi + alpha f))||^2 <= tol``:
equal up to a gain, a common phase ``phi`` and a linear phase ramp ``alpha`` across subcarriers
``f`` (a timing offset, which the reference generator draws per frame). The residual is reported
in dB (``10 log10``; 0 dB is the energy of one frame).

**Method** (linear in the number of frames, not quadratic):

1. *Signature*: ``x = |H| / ||H||_F`` [F T] float64. It is exactly invariant to the gain, the
   common phase and the ramp, so no phase has to be estimated before hashing.
2. *Buckets*: ``x`` is projected on ``TABLES`` x ``DIMS`` orthonormal directions (a fixed
   seed) and quantised with step ``q = 4 sqrt(tol)`` and a random offset per direction; each
   table's key tuple is a bucket. Two frames within ``tol`` differ by at most ``sqrt(tol)`` in
   ``x`` (``||A| - |B'|| <= |A - B'|`` per element) and so, the projection being a contraction,
   by at most ``sqrt(tol)`` in every table: they share a bucket unless a quantisation boundary
   falls between them, which two tables make rare at the tolerance and, for copies equal to
   rounding (about 1e-8 apart), practically impossible.
3. *Exact check* inside each bucket: greedy leaders. Each frame is aligned to each leader of its
   bucket: the ramp is the angle of the lag-1 (subcarrier) autocorrelation of ``D = A conj(B)``,
   exact for a true copy, then the phase of ``<A, B'>``; the residual is ``2 - 2 |<A, B'>|``.
   A frame that matches no leader becomes one.
4. Matches are graph edges; the connected components (scipy) are the realizations.

**MIMO folders** (``h_true`` [N, R, U, F, T]) are audited per (antenna, user) pair: each pair's
[F, T] channel is one entry ("frame" in the report), so a realization a train and a test folder
share is found whichever antenna or user carries it. Two antennas of one user are correlated
(``rho^|i-j|``) but not copies: neighbouring antennas at rho = 0.7 measured -2 to -9 dB on the
default 120 x 14 grid, far above the tolerance (a residual of -60 dB would need rho within about
1e-6 of 1).

**Tolerance** (default ``-60 dB``): copies of one realization differ by float rounding only
(below -120 dB, float32 storage included), while distinct TDL-A realizations on the paper's
training grid come no closer than about -47 dB even at its least selective corner (25 ns,
50 Hz, 1.1 million pairs measured). -60 dB sits 13 dB below the closest distinct pair and 60 dB
above rounding. Channels with almost no frequency or time selectivity (delay spread and Doppler
near 0) have nearly one normalised shape; they can fall within any tolerance, and the report
names their conditions.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from wavefront.datasets.matfiles import mat_folders, parse_mat_name, read_mat_h
from wavefront.errors import ConfigError

DEFAULT_TOLERANCE_DB = -60.0
TABLES = 2          # independent hash tables: a pair split in one is almost never split in both
DIMS = 24           # projected directions per table
_SIGNATURE_SEED = 20240516
_CHUNK = 4096       # frames read and hashed at a time
_CHECK_BLOCK = 2048  # frames aligned to a leader at a time (complex128 temporaries)


# ---- frame sets ---------------------------------------------------------------------------
@dataclass
class FrameSet:
    """The frames of one audited folder (a dataset folder or tree, one shard, or a tree of ``.mat`` files).

    ``snr_db``, ``delay_spread_s``, ``doppler_hz``: [N] float64 (dB, s, Hz). ``read(idx)``
    returns frames ``idx`` (sorted int64 [M]) as [M, F, T] complex64; ``label(i)`` names frame ``i``.
    """

    name: str
    kind: str  # "hdf5" | "mat"
    grid: tuple[int, int]
    snr_db: np.ndarray
    delay_spread_s: np.ndarray
    doppler_hz: np.ndarray
    read: Callable[[np.ndarray], np.ndarray]
    label: Callable[[int], str]

    def __len__(self) -> int:
        return len(self.snr_db)


def _hdf5_set(path: Path, name: str) -> FrameSet:
    import h5py

    from wavefront.datasets.folders import check_listed, find_shards
    from wavefront.datasets.shards import H5_ERRORS, ShardError

    shards = find_shards(path, "dir")
    meta = {k: [] for k in ("snr_db", "delay_spread_s", "doppler_hz")}
    shape = None
    for s in shards:
        check_listed(s)
        try:
            with h5py.File(s.path, "r") as f:
                g = tuple(f["h_true"].shape[1:])
                for k in meta:
                    meta[k].append(f[k][()].astype(np.float64))
        except H5_ERRORS as exc:
            raise ShardError(s.path, f"cannot read it ({exc.__class__.__name__}: {exc})") from None
        if shape is not None and g != shape:
            raise ConfigError("dir", str(path), f"{s.path} has a {g} grid, other shards {shape}; audit one grid at a time")
        shape = g
    grid = shape[-2:]
    # MIMO shards ([N, R, U, F, T]): every (frame, antenna, user) pair's channel is one audited entry
    users = shape[1] if len(shape) == 4 else 1
    pairs = shape[0] * users if len(shape) == 4 else 1
    offsets = np.cumsum([0] + [s.frames * pairs for s in shards])

    def read(idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx),) + grid, np.complex64)
        k = np.searchsorted(offsets, idx, side="right") - 1
        for sh in np.unique(k):
            sel = np.nonzero(k == sh)[0]
            local = (idx[sel] - offsets[sh]) // pairs  # the frames (sorted, maybe repeated)
            pair = (idx[sel] - offsets[sh]) % pairs
            try:
                with h5py.File(shards[sh].path, "r") as f:
                    ds = f["h_true"]
                    lo, hi = int(local[0]), int(local[-1]) + 1
                    # a contiguous slice is one sequential read; fancy indexing pays per frame
                    if pairs == 1:
                        out[sel] = ds[lo:hi][local - lo] if len(local) * 4 >= hi - lo else ds[local]
                    else:
                        frames, at = np.unique(local, return_inverse=True)
                        h = ds[lo:hi][frames - lo] if len(frames) * 4 >= hi - lo else ds[frames]
                        out[sel] = h.reshape(len(frames), pairs, *grid)[at, pair]
            except H5_ERRORS as exc:
                raise ShardError(shards[sh].path, f"cannot read its channels ({exc.__class__.__name__}: {exc}); "
                                                  "run `wavefront verify` on it") from None
        return out

    def label(i: int) -> str:
        sh = int(np.searchsorted(offsets, i, side="right") - 1)
        if pairs == 1:
            return f"{shards[sh].path.name}[{i - offsets[sh]}]"
        frame, pair = divmod(int(i - offsets[sh]), pairs)
        return f"{shards[sh].path.name}[{frame}] antenna {pair // users} user {pair % users}"

    return FrameSet(name, "hdf5" if pairs == 1 else "hdf5-pairs", grid,
                    *(np.repeat(np.concatenate(meta[k]), pairs) for k in meta), read, label)


def _mat_set(path: Path, name: str) -> FrameSet:
    files = [f for group in mat_folders(path).values() for f in group]
    metas = [parse_mat_name(f) for f in files]
    grid = read_mat_h(files[0]).shape[:2]

    def read(idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx),) + grid, np.complex64)
        for j, i in enumerate(idx):
            H = read_mat_h(files[i])
            if H.shape[:2] != grid:
                raise ConfigError("mat", str(files[i]), f"H has a {H.shape[:2]} grid, {files[0].name} has {grid}")
            out[j] = H[:, :, 0]
        return out

    return FrameSet(name, "mat", grid, *(np.asarray([m[k] for m in metas], np.float64)
                                         for k in ("snr_db", "delay_spread_s", "doppler_hz")),
                    read, lambda i: str(files[i].relative_to(path)))


def open_frame_set(path: str | Path, name: str | None = None) -> FrameSet:
    """Returns the frames under ``path``: HDF5 shards (a shard, a dataset folder or a tree), or a tree of ``.mat`` files."""
    p = Path(path)
    name = name or str(path)
    if not p.exists():
        raise ConfigError("dir", str(path), "no such file or folder")
    if p.is_file():
        if p.suffix != ".h5":
            raise ConfigError("dir", str(path), "is a file but not a shard (.h5); give a dataset folder, a shard "
                                                  "or a folder of .mat files")
        return _hdf5_set(p, name)
    has_h5 = (p / "manifest.json").exists() or next(p.rglob("manifest.json"), None) is not None
    has_mat = next(p.rglob("*.mat"), None) is not None
    if has_h5 and has_mat:
        raise ConfigError("dir", str(path), "holds both dataset folders (manifest.json) and .mat files; "
                                              "audit them as separate folders")
    if has_h5:
        return _hdf5_set(p, name)
    if has_mat:
        return _mat_set(p, name)
    raise ConfigError("dir", str(path), "holds no dataset folder (no manifest.json) and no .mat files")


# ---- the two primitives: signature and aligned residual -----------------------------------
def signature(h: np.ndarray) -> np.ndarray:
    """Returns ``|H| / ||H||_F`` flattened, [N, F*T] float64, from ``h`` [N, F, T] complex.

    Invariant to a gain, a common phase and a linear phase ramp across subcarriers (timing offset).
    """
    x = np.abs(h).reshape(len(h), -1).astype(np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def unit_energy(h: np.ndarray) -> np.ndarray:
    """Returns ``h`` [..., F, T] as complex128 scaled to unit energy per frame (all-zero frames stay zero)."""
    h = np.asarray(h, np.complex128)
    norm = np.sqrt(np.sum(h.real ** 2 + h.imag ** 2, axis=(-2, -1), keepdims=True))
    return h / np.where(norm > 0, norm, 1.0)


def aligned_residual(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Returns ``min over phi, alpha of ||a - b exp(j (phi + alpha f))||^2`` [M] float64, linear (0..2).

    ``a`` [F, T] and ``b`` [M, F, T] complex, each of unit energy (:func:`unit_energy`); ``f`` is
    the subcarrier index (axis -2). The ramp ``alpha`` (rad per subcarrier) is the angle of the
    lag-1 autocorrelation across subcarriers of ``a conj(b)``, exact when ``a`` is a ramped copy
    of ``b``; the common phase then follows in closed form, leaving ``2 - 2 |<a, b'>|``.
    """
    d = a[None] * np.conj(b)                                                # [M, F, T]
    alpha = np.angle(np.sum(d[:, 1:] * np.conj(d[:, :-1]), axis=(1, 2)))   # [M]
    ramp = np.exp(-1j * alpha[:, None] * np.arange(a.shape[0])[None, :])   # [M, F]
    c = np.abs(np.einsum("mft,mf->m", d, ramp))
    return np.maximum(2.0 - 2.0 * c, 0.0)


def tolerance_linear(tolerance_db: float) -> float:
    """Returns the residual tolerance in linear scale; refuses values outside [-150, -10] dB."""
    if not (isinstance(tolerance_db, (int, float)) and math.isfinite(tolerance_db) and -150 <= tolerance_db <= -10):
        raise ConfigError("tolerance_db", tolerance_db, "must be a number of dB in [-150, -10] (residual energy "
                                                        "relative to one frame; default -60)")
    return 10.0 ** (tolerance_db / 10)


def _projection(size: int) -> np.ndarray:
    """Returns [size, TABLES * DIMS] float64 orthonormal columns (fixed seed), so projection is a contraction."""
    rng = np.random.default_rng(_SIGNATURE_SEED)
    q, _ = np.linalg.qr(rng.standard_normal((size, TABLES * DIMS)))
    return q


# ---- the report ---------------------------------------------------------------------------
@dataclass
class SetSummary:
    """One folder: its frames, distinct realizations, and frames that share theirs with another frame of the folder."""

    name: str
    kind: str
    frames: int
    realizations: int
    repeating_frames: int
    repeat_fraction: float
    largest_group: int


@dataclass
class Overlap:
    """Two folders that share realizations: how many, and how many frames of each hold one of them."""

    a: str
    b: str
    shared_realizations: int
    frames_a: int
    fraction_a: float
    frames_b: int
    fraction_b: float


@dataclass
class Group:
    """A realization held by several frames: where they are and under which conditions."""

    frames: int
    per_set: dict
    conditions: list          # [[delay spread ns, Doppler Hz, frames], ...] (up to 5)
    snr_db: list              # [min, max]
    examples: list            # frame labels (up to 3)


@dataclass
class AuditReport:
    """What :func:`audit` found (JSON-ready through ``dataclasses.asdict``)."""

    tolerance_db: float
    frames: int
    realizations: int
    sets: list[SetSummary]
    overlaps: list[Overlap]
    groups: list[Group]
    repeated_realizations: int = 0    # realizations held by more than one frame
    candidates: int = 0               # frames that shared a bucket with another frame
    comparisons: int = 0              # aligned residuals computed
    max_match_db: float | None = None  # the loosest match accepted
    min_nonmatch_db: float | None = None  # the closest pair checked and refused
    seconds: float = 0.0
    method: str = ("normalised channels equal after removing a gain, a common phase and a linear phase ramp "
                   "across subcarriers; |H| signatures hashed into buckets, exact aligned check inside them")
    labels: np.ndarray | None = field(default=None, repr=False)  # [frames] int64 realization id (not in JSON)

    @property
    def has_overlap(self) -> bool:
        return bool(self.overlaps)

    @property
    def has_repeats(self) -> bool:
        return any(s.repeating_frames for s in self.sets)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("labels")
        return d


def audit(paths: list, tolerance_db: float = DEFAULT_TOLERANCE_DB, names: list[str] | None = None,
          max_groups: int = 10, progress=None) -> AuditReport:
    """Returns the repeated channel realizations within and across ``paths`` (folders, shards or ``.mat`` trees).

    ``tolerance_db``: largest aligned residual [dB] still counted as the same realization (see
    the module docstring). ``names``: how the report calls each path (default: the path).
    ``progress``: a tqdm-like object updated with frames processed (two passes), or None.

    Three steps: signatures hashed into buckets (:func:`_bucket_frames`, one pass), the exact
    aligned check inside buckets (:class:`_Matcher`, a second pass over the candidates only),
    and realizations as connected components of the match graph (:func:`_realizations`).
    """
    tol = tolerance_linear(tolerance_db)
    t0 = time.perf_counter()
    sets = _open_sets(paths, names)
    offsets = np.cumsum([0] + [len(s) for s in sets])
    total = int(offsets[-1])
    if progress is not None:
        progress.reset(total=2 * total)
    bucket, sizes = _bucket_frames(sets, offsets, tol, progress)
    shared = np.zeros(total, bool)
    for s_t in sizes:
        shared |= s_t > 1
    candidates = np.nonzero(shared)[0]
    if progress is not None:
        progress.update(total - len(candidates))
    matcher = _Matcher(tol)
    matcher.match(sets, offsets, candidates, bucket, sizes, progress)
    n_real, labels = _realizations(matcher, total)
    report = _summarise(sets, offsets, labels, n_real, tolerance_db, max_groups)
    report.candidates, report.comparisons = int(len(candidates)), matcher.comparisons
    report.max_match_db = _db(matcher.max_match) if matcher.max_match >= 0 else None
    report.min_nonmatch_db = _db(matcher.min_nonmatch) if math.isfinite(matcher.min_nonmatch) else None
    report.seconds = time.perf_counter() - t0
    return report


def _open_sets(paths: list, names: list[str] | None) -> list[FrameSet]:
    """Returns the frame sets of ``paths``, refusing none, a folder given twice or inside another, and mixed grids."""
    if not paths:
        raise ConfigError("dir", "", "give at least one folder")
    resolved = [Path(p).resolve() for p in paths]
    for i, a in enumerate(resolved):
        for j, b in enumerate(resolved):
            if i != j and (a == b or b in a.parents):
                raise ConfigError("dir", str(paths[j]), f"is {'the same as' if a == b else 'inside'} {paths[i]}; "
                                                          "give each folder once, none inside another")
    sets = [open_frame_set(p, n) for p, n in zip(paths, names or [str(p) for p in paths])]
    grids = {s.grid for s in sets}
    if len(grids) > 1:
        raise ConfigError("dir", ", ".join(map(str, paths)), f"the folders have different grids {sorted(grids)}; "
                                                               "audit folders of one grid together")
    return sets


def _bucket_frames(sets: list[FrameSet], offsets: np.ndarray, tol: float, progress) -> tuple[list, list]:
    """Returns ``(bucket, sizes)``: per hash table, each frame's bucket id [N] and its bucket's size [N] (one pass)."""
    grid = sets[0].grid
    total = int(offsets[-1])
    proj = _projection(grid[0] * grid[1])
    step = 4.0 * math.sqrt(tol)
    shift = np.random.default_rng(_SIGNATURE_SEED + 1).uniform(0.0, step, TABLES * DIMS)
    keys = np.empty((total, TABLES * DIMS), np.int64)
    for k, s in enumerate(sets):
        for lo in range(0, len(s), _CHUNK):
            idx = np.arange(lo, min(lo + _CHUNK, len(s)))
            z = signature(s.read(idx)) @ proj
            keys[offsets[k] + idx] = np.floor((z + shift) / step).astype(np.int64)
            if progress is not None:
                progress.update(len(idx))
    bucket, sizes = [], []
    for t in range(TABLES):
        _, inv, cnt = np.unique(keys[:, t * DIMS:(t + 1) * DIMS], axis=0, return_inverse=True, return_counts=True)
        bucket.append(inv.reshape(-1))
        sizes.append(cnt[inv.reshape(-1)])
    return bucket, sizes


class _Matcher:
    """The exact check inside buckets: greedy leaders, streaming over the candidates in frame order.

    Collects the match edges (``edges_a[i]`` matches ``edges_b[i]``, global frame indices) and
    the residual statistics the report states (comparisons, largest match, smallest non-match).
    """

    def __init__(self, tol: float):
        self.tol = tol
        self.leader_frames: dict[int, np.ndarray] = {}
        self.edges_a: list[np.ndarray] = []
        self.edges_b: list[np.ndarray] = []
        self.comparisons, self.max_match, self.min_nonmatch = 0, -1.0, math.inf

    def check(self, leader: int, members: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Returns which of ``frames`` (global indices ``members``) match ``leader``; records the edges."""
        res = np.concatenate([aligned_residual(self.leader_frames[leader], frames[s:s + _CHECK_BLOCK])
                              for s in range(0, len(frames), _CHECK_BLOCK)])
        hit = res <= self.tol
        self.comparisons += len(res)
        if hit.any():
            self.edges_a.append(np.full(int(hit.sum()), leader))
            self.edges_b.append(members[hit])
            self.max_match = max(self.max_match, float(res[hit].max()))
        if (~hit).any():
            self.min_nonmatch = min(self.min_nonmatch, float(res[~hit].min()))
        return hit

    def match(self, sets, offsets, candidates, bucket, sizes, progress) -> None:
        """Checks every candidate against its buckets' leaders; an unmatched one leads its bucket from then on."""
        grid = sets[0].grid
        leaders: list[dict[int, list[int]]] = [dict() for _ in range(TABLES)]
        for lo in range(0, len(candidates), _CHUNK):
            gidx = candidates[lo:lo + _CHUNK]
            k_of = np.searchsorted(offsets, gidx, side="right") - 1
            frames = np.empty((len(gidx),) + grid, np.complex128)
            for k in np.unique(k_of):
                sel = np.nonzero(k_of == k)[0]
                frames[sel] = unit_energy(sets[k].read(gidx[sel] - offsets[k]))
            for t in range(TABLES):
                live = sizes[t][gidx] > 1
                b_ids = bucket[t][gidx[live]]
                pos_live = np.nonzero(live)[0]
                order = np.argsort(b_ids, kind="stable")
                uniq, starts = np.unique(b_ids[order], return_index=True)
                for u, (s, e) in zip(uniq.tolist(), zip(starts, list(starts[1:]) + [len(order)])):
                    pos = pos_live[order[s:e]]  # positions in this chunk, in frame order
                    for leader in leaders[t].get(u, []):
                        if len(pos) == 0:
                            break
                        pos = pos[~self.check(leader, gidx[pos], frames[pos])]
                    while len(pos):
                        new = int(gidx[pos[0]])
                        self.leader_frames.setdefault(new, frames[pos[0]].copy())
                        leaders[t].setdefault(u, []).append(new)
                        pos = pos[1:]
                        if len(pos):
                            pos = pos[~self.check(new, gidx[pos], frames[pos])]
            if progress is not None:
                progress.update(len(gidx))


def _realizations(matcher: _Matcher, total: int) -> tuple[int, np.ndarray]:
    """Returns ``(number of realizations, label [total] int64)``: connected components of the match graph."""
    a = np.concatenate(matcher.edges_a) if matcher.edges_a else np.zeros(0, np.int64)
    b = np.concatenate(matcher.edges_b) if matcher.edges_b else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(total, total))
    n_real, labels = connected_components(graph, directed=False)
    return int(n_real), labels.astype(np.int64)


def _pct(fraction: float) -> str:
    """Returns a fraction as a percentage that never rounds a partial share to 0 % or 100 %."""
    p = 100 * fraction
    if 0 < p < 0.1:
        return "<0.1%"
    if 99.9 < p < 100:
        return ">99.9%"
    return f"{p:.1f}%"


def _db(x: float) -> float:
    return round(10 * math.log10(max(x, 1e-30)), 2)


def _summarise(sets: list[FrameSet], offsets: np.ndarray, labels: np.ndarray, n_real: int, tolerance_db: float,
               max_groups: int) -> AuditReport:
    per = [labels[offsets[k]:offsets[k + 1]] for k in range(len(sets))]
    summaries = []
    for s, lab in zip(sets, per):
        u, cnt = np.unique(lab, return_counts=True)
        rep = int(cnt[cnt > 1].sum())
        summaries.append(SetSummary(s.name, s.kind, len(s), len(u), rep, round(rep / max(len(s), 1), 6),
                                    int(cnt.max()) if len(cnt) else 0))
    overlaps = []
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            common = np.intersect1d(per[i], per[j])
            if len(common):
                fa, fb = int(np.isin(per[i], common).sum()), int(np.isin(per[j], common).sum())
                overlaps.append(Overlap(sets[i].name, sets[j].name, len(common), fa, round(fa / len(sets[i]), 6),
                                        fb, round(fb / len(sets[j]), 6)))
    u, cnt = np.unique(labels, return_counts=True)
    big = u[cnt > 1][np.argsort(-cnt[cnt > 1], kind="stable")][:max_groups]
    groups = []
    set_of = np.searchsorted(offsets, np.arange(len(labels)), side="right") - 1
    for g in big:
        members = np.nonzero(labels == g)[0]
        ks = set_of[members]
        per_set = {sets[k].name: int((ks == k).sum()) for k in np.unique(ks)}
        ds = np.concatenate([sets[k].delay_spread_s[members[ks == k] - offsets[k]] for k in np.unique(ks)])
        fd = np.concatenate([sets[k].doppler_hz[members[ks == k] - offsets[k]] for k in np.unique(ks)])
        snr = np.concatenate([sets[k].snr_db[members[ks == k] - offsets[k]] for k in np.unique(ks)])
        cond, ccnt = np.unique(np.stack([np.round(ds * 1e9, 3), np.round(fd, 3)], 1), axis=0, return_counts=True)
        top = np.argsort(-ccnt, kind="stable")[:5]
        groups.append(Group(len(members), per_set, [[float(cond[c, 0]), float(cond[c, 1]), int(ccnt[c])] for c in top],
                            [float(snr.min()), float(snr.max())],
                            [f"{sets[set_of[m]].name}:{sets[set_of[m]].label(int(m - offsets[set_of[m]]))}"
                             for m in members[:3]]))
    return AuditReport(tolerance_db, int(offsets[-1]), int(n_real), summaries, overlaps, groups,
                       repeated_realizations=int((cnt > 1).sum()), labels=labels)


def format_report(rep: AuditReport) -> str:
    """Returns the report as text: one line per folder, the overlaps, the largest groups and how the check went."""
    w = max([len("folder")] + [len(s.name) for s in rep.sets])
    lines = [f"audit of {len(rep.sets)} folder(s), {rep.frames} frames: {rep.realizations} distinct channel "
             f"realization(s); same realization = aligned residual <= {rep.tolerance_db:g} dB "
             "(gain, common phase and timing ramp removed)",
             f"{'folder':<{w}}  {'frames':>8}  {'realizations':>12}  {'repeating frames':>18}  {'largest group':>13}"]
    if any(s.kind == "hdf5-pairs" for s in rep.sets):
        lines.insert(1, "MIMO folders are audited per (antenna, user) pair: each pair's channel counts as one frame")
    for s in rep.sets:
        lines.append(f"{s.name:<{w}}  {s.frames:>8}  {s.realizations:>12}  "
                     f"{f'{s.repeating_frames} ({_pct(s.repeat_fraction)})':>18}  {s.largest_group:>13}")
    if len(rep.sets) > 1:
        if rep.overlaps:
            lines.append("overlap between folders (frames whose realization also occurs in the other folder):")
            for o in rep.overlaps:
                lines.append(f"  {o.a} <-> {o.b}: {o.shared_realizations} shared realization(s); "
                             f"{o.frames_a} of {o.a} ({_pct(o.fraction_a)}), {o.frames_b} of {o.b} "
                             f"({_pct(o.fraction_b)})")
        else:
            lines.append("overlap between folders: none")
    if rep.groups:
        lines.append(f"largest groups of frames with one realization ({len(rep.groups)} of "
                     f"{rep.repeated_realizations} shown):")
        for g in rep.groups:
            where = ", ".join(f"{k} {v}" for k, v in g.per_set.items())
            cond = "; ".join(f"{c[0]:g} ns / {c[1]:g} Hz x{c[2]}" for c in g.conditions)
            lines.append(f"  {g.frames} frames ({where}): {cond}; SNR {g.snr_db[0]:g}..{g.snr_db[1]:g} dB; "
                         f"e.g. {', '.join(g.examples[:2])}")
    lines.append(f"checked {rep.candidates} frame(s) that shared a bucket, {rep.comparisons} aligned comparison(s), "
                 f"in {rep.seconds:.1f} s; loosest match "
                 f"{'-' if rep.max_match_db is None else f'{rep.max_match_db:g} dB'}, closest non-match "
                 f"{'-' if rep.min_nonmatch_db is None else f'{rep.min_nonmatch_db:g} dB'}")
    return "\n".join(lines)


def warning_lines(rep: AuditReport, limit: int = 3) -> list[str]:
    """Returns one-line warnings with the figures: folders that repeat realizations, folders that share them."""
    out = []
    rep_sets = sorted((s for s in rep.sets if s.repeating_frames), key=lambda s: -s.repeat_fraction)
    if rep_sets:
        parts = [f"{s.name}: {s.frames} frames hold {s.realizations} distinct channel realization(s), "
                 f"{_pct(s.repeat_fraction)} of frames repeat one" for s in rep_sets[:limit]]
        more = f" (and {len(rep_sets) - limit} more folder(s))" if len(rep_sets) > limit else ""
        out.append("repeated channel realizations (the reference generator's unseeded channel?): "
                   + "; ".join(parts) + more)
    if rep.overlaps:
        ov = sorted(rep.overlaps, key=lambda o: -max(o.fraction_a, o.fraction_b))
        parts = [f"{o.a} and {o.b} share {o.shared_realizations} realization(s) ({_pct(o.fraction_a)} of "
                 f"{o.a}, {_pct(o.fraction_b)} of {o.b})" for o in ov[:limit]]
        more = f" (and {len(ov) - limit} more pair(s))" if len(ov) > limit else ""
        out.append("folders share channel realizations, so results across them are not held out: "
                   + "; ".join(parts) + more + "; see `wavefront audit`")
    return out
