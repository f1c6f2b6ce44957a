"""Reading dataset folders: the manifest, the shards it lists, and their checks.

A dataset folder (written by :func:`wavefront.datasets.generate.generate_dataset`) holds
``shard-NNNNN.h5`` files and ``manifest.json``, its table of contents. Readers take the shard
list and frame counts from the manifest, never from a directory listing:

- :func:`find_shards`: the shards of one file, one folder, or a tree of folders;
- :func:`check_listed` (cheap: attributes against the manifest entry) and
  :func:`verify_listed` (size and SHA-256, every chunk's Fletcher-32, the content checksum);
- :func:`verify_folder` (``wavefront verify``).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from wavefront.datasets.shards import ShardError, file_checksum, probe_shard, read_attrs, verify_content
from wavefront.errors import ConfigError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "wavefront-dataset"


def read_manifest(out: Path, field: str = "out") -> dict | None:
    """Returns the parsed manifest of ``out``, or None when there is none.

    ``field``: the option that named the folder, for the error: ``out`` where a command writes it,
    ``data`` where one reads it.
    """
    p = Path(out) / MANIFEST
    if not p.exists():
        return None
    try:
        man = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(field, str(out), f"{p} is unreadable or not valid JSON ({exc.__class__.__name__}); "
                                           "move it away and rerun the generating command to rebuild it") from None
    if not isinstance(man, dict) or man.get("format") != MANIFEST_FORMAT:
        raise ConfigError(field, str(out), f"{p} is not a wavefront dataset manifest; "
                                           + ("use a new --out folder" if field == "out" else "give a dataset folder"))
    return man


def manifest_entries(man: dict | None) -> dict[int, dict]:
    """Returns ``{shard index: entry}`` of a parsed manifest (empty for None)."""
    return {e["index"]: e for e in (man or {}).get("shards", []) if isinstance(e, dict) and "index" in e}


def check_file(path: Path, entry: dict) -> str:
    """Returns the file's SHA-256 after checking it and the size against a manifest ``entry``."""
    size = path.stat().st_size
    if size != entry.get("bytes"):
        raise ShardError(path, f"{size} bytes, the manifest says {entry.get('bytes')}")
    digest = file_checksum(path)
    if digest != entry["file_sha256"]:
        raise ShardError(path, "its SHA-256 differs from the manifest's: the file is corrupt")
    return digest


# ---- reading folders --------------------------------------------------------------------
@dataclass(frozen=True)
class ShardEntry:
    """One shard a reader should read: its ``path``, ``frames`` and manifest ``entry`` (None for a lone file)."""

    path: Path
    frames: int
    entry: dict | None


def dataset_folders(root: str | Path, field_name: str = "data") -> list[Path]:
    """Returns the dataset folders (those with a manifest) at or under ``root``, sorted.

    Refuses a folder that holds shards but no manifest: its frame count would be a guess.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(field_name, str(root), "no such folder" if not root.exists() else "is a file, not a folder")
    if (root / MANIFEST).exists():
        return [root]
    dirs = sorted(p.parent for p in root.rglob(MANIFEST))
    orphans = sorted({p.parent for p in root.rglob("shard-*.h5")} - set(dirs))
    if orphans:
        raise ConfigError(field_name, str(orphans[0]), f"holds shard files but no {MANIFEST}; rerun the generating "
                                                       "command on it to rebuild the manifest")
    if not dirs:
        raise ConfigError(field_name, str(root), f"holds no dataset folder (no {MANIFEST} found)")
    return dirs


def manifest_shards(folder: str | Path, warn_incomplete: bool = True) -> list[ShardEntry]:
    """Returns the shards the manifest of ``folder`` lists, in index order, with their frame counts."""
    folder = Path(folder)
    man = read_manifest(folder, "data")
    if man is None:
        raise ConfigError("data", str(folder), f"has no {MANIFEST}")
    if warn_incomplete and not man.get("complete", False):
        warnings.warn(f"{folder}: the manifest says generation is not complete; reading the "
                      f"{len(man.get('shards', []))} shard(s) it lists", stacklevel=3)
    out = []
    for e in sorted(manifest_entries(man).values(), key=lambda e: e["index"]):
        name = e.get("file", "")
        if not isinstance(name, str) or Path(name).name != name or not name:
            raise ConfigError("data", str(folder / MANIFEST), f"lists a bad shard file name {name!r}")
        out.append(ShardEntry(folder / name, int(e["frames"]), e))
    return out


def find_shards(path: str | Path, field_name: str = "path") -> list[ShardEntry]:
    """Returns the shards of one shard file, a dataset folder, or a tree of dataset folders."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(field_name, str(p), "no such file or folder")
    if p.is_file():
        return [ShardEntry(p, int(read_attrs(p)["num_frames"]), None)]
    return [s for d in dataset_folders(p, field_name) for s in manifest_shards(d)]


def check_listed(s: ShardEntry) -> dict:
    """Returns the attrs of a listed shard after checking them against its manifest entry (cheap)."""
    a = read_attrs(s.path)
    if a["num_frames"] != s.frames:
        raise ShardError(s.path, f"holds {a['num_frames']} frames, the manifest says {s.frames}")
    if s.entry is not None:
        if s.entry.get("content_sha256") not in (None, a.get("content_sha256")):
            raise ShardError(s.path, "its content checksum differs from the manifest's")
        if a.get("shard_index") not in (None, s.entry["index"]):
            raise ShardError(s.path, f"is shard {a.get('shard_index')}, the manifest lists it as {s.entry['index']}")
    return a


def verify_listed(s: ShardEntry) -> dict:
    """Returns the attrs of a listed shard after the full check: size and SHA-256 against the
    manifest (before HDF5 opens it), attributes against the entry, every chunk's Fletcher-32
    and the content checksum. Raises :class:`ShardError` naming the file."""
    e = s.entry or {}
    if e.get("file_sha256"):
        check_file(s.path, e)
        verify_content(s.path)
    else:  # nothing vouches for the bytes: HDF5 reads them in a child process
        probe_shard(s.path, full=True)
    return check_listed(s)


@dataclass
class VerifyReport:
    shards: int = 0
    frames: int = 0
    bytes: int = 0
    bad: list[ShardError] = field(default_factory=list)


def verify_folder(root: str | Path, progress=None) -> VerifyReport:
    """Checks every shard the manifests under ``root`` list with :func:`verify_listed`.

    Returns the counts and the problems found (each a :class:`ShardError` naming its file).
    ``progress``: a tqdm-like object updated with frames checked, or None.
    """
    rep = VerifyReport()
    for s in find_shards(root, "data"):
        try:
            a = verify_listed(s)
            rep.bytes += s.path.stat().st_size
            rep.frames += a["num_frames"]
        except ShardError as exc:
            rep.bad.append(exc)
        rep.shards += 1
        if progress is not None:
            progress.update(s.frames)
    return rep
