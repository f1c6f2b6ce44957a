"""The progress of an experiment kept on disk, so that a killed sweep, evaluation or leaderboard resumes.

A :class:`ProgressStore` is a folder (``--out/progress/``) holding

- ``fingerprint.json``: what the run is (the command's spec: config, estimators, seed, frames,
  batch size, conditions, device, ...). A store opened with another fingerprint is refused,
  naming the first field that differs, unless ``overwrite``: a batch's counts mean something
  only for the run that drew them.
- ``point-KKKK/batch-IIIIII.json``: the counts of batch ``IIIIII`` of the run's point ``KKKK``
  (its position in the run's point list), exactly the record the experiment engine computes
  per batch (:func:`wavefront.sim.experiment._batch_counts`: float64 sums and int64 counts;
  JSON keeps a float64 exactly). Each is written atomically (temporary file, fsync, rename)
  as its batch finishes, so a kill leaves only whole records.

The engine (:func:`wavefront.sim.experiment.run_experiment` and
:func:`~wavefront.sim.experiment.run_partial`, argument ``store``) replays the stored batches of
a point in batch order, with the same ``min_bit_errors`` stop, and computes only the batches
that are missing. Frames are seeded by (seed, point, batch index), so the missing batches are
the frames an uninterrupted run would have drawn, and the results are equal, not just close.
A batch's counts do not depend on how many processes computed the run, so a store filled by
array jobs (each writes its own batches) or torchrun's rank 0 resumes in one process and back.

Using it from a new command (e.g. a leaderboard)::

    store = open_progress(out / "progress", {"command": "leaderboard", "spec": spec_dict}, overwrite=args.overwrite)
    rows = run_experiment(points, estimators, frames=..., store=store)

The fingerprint is any JSON-ready dict; put in it everything that changes a batch's counts.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from wavefront.errors import ConfigError
from wavefront.utils import atomic_write_json

PROGRESS_FORMAT = "wavefront-progress/1"
FINGERPRINT = "fingerprint.json"


def first_difference(have, want, path: str = "") -> tuple[str, object, object] | None:
    """Returns ``(dotted key, value in have, value in want)`` of the first place two JSON values differ, or None."""
    if isinstance(have, dict) and isinstance(want, dict):
        for k in sorted(set(have) | set(want), key=str):
            d = first_difference(have.get(k), want.get(k), f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    if isinstance(have, list) and isinstance(want, list) and len(have) == len(want):
        for i, (a, b) in enumerate(zip(have, want)):
            d = first_difference(a, b, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if have == want else (path or "fingerprint", have, want)


def _shown(value):
    """Returns a JSON value as a message shows it: floats to 12 significant digits, inside lists too."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


class ProgressStore:
    """Per-batch counts of one run, in ``folder`` (see the module docstring). Open it with :func:`open_progress`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _point_dir(self, point: int) -> Path:
        return self.folder / f"point-{point:04d}"

    def batches(self, point: int) -> dict[int, tuple[list[float], list[int]]]:
        """Returns ``{batch index: (floats, ints)}`` of the stored batches of point ``point`` (position in the run)."""
        out = {}
        d = self._point_dir(point)
        if not d.is_dir():
            return out
        for f in d.glob("batch-*.json"):
            try:
                rec = json.loads(f.read_text())
                out[int(rec["index"])] = ([float(v) for v in rec["floats"]], [int(v) for v in rec["ints"]])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a whole record (only a foreign hand could make one): the batch is recomputed
        return out

    def put(self, point: int, index: int, floats: list[float], ints: list[int]) -> None:
        """Stores batch ``index`` of point ``point`` atomically (a full disk raises SaveError, one line)."""
        atomic_write_json(self._point_dir(point) / f"batch-{index:06d}.json",
                          {"index": int(index), "floats": [float(v) for v in floats], "ints": [int(v) for v in ints]})

    def num_batches(self) -> int:
        """Returns how many batch records the store holds (all points)."""
        return sum(1 for _ in self.folder.glob("point-*/batch-*.json"))


def open_progress(folder: str | Path, fingerprint: dict, overwrite: bool = False) -> ProgressStore:
    """Returns the store in ``folder`` for the run ``fingerprint``, creating it if new.

    A folder holding another run's progress raises ConfigError naming the first field that
    differs (``progress.<field>``), unless ``overwrite``, which empties it first.
    """
    folder = Path(folder)
    want = {"format": PROGRESS_FORMAT, **json.loads(json.dumps(fingerprint, default=str))}
    path = folder / FINGERPRINT
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (OSError, ValueError):
            have = None
        diff = first_difference(have, want) if isinstance(have, dict) else ("fingerprint", "unreadable", "")
        if diff and not overwrite:
            key, a, b = diff
            if _shown(a) != _shown(b):  # 3e-07, not the 3.0000000000000004e-07 that 300 ns is in seconds
                a, b = _shown(a), _shown(b)
            raise ConfigError(f"progress.{key}", b, f"differs from the run whose progress {folder} holds "
                                                    f"({json.dumps(a)[:80]} there); rerun that command to resume it, "
                                                    "use another --out, or add --overwrite to start afresh")
        if diff:
            shutil.rmtree(folder)
        else:
            return ProgressStore(folder)
    elif folder.exists() and overwrite:
        shutil.rmtree(folder)
    atomic_write_json(path, want, indent=1, sort_keys=True)
    return ProgressStore(folder)
