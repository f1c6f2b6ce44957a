"""Device and seed helpers shared by every subsystem."""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from wavefront.errors import ConfigError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Returns the torch device for ``"auto" | "cpu" | "cuda" | "cuda:N"``.

    ``"auto"`` picks CUDA when present, else CPU. Asking for CUDA on a machine
    without it is a :class:`ConfigError`, not a late failure inside torch.
    """
    if device is None or device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ConfigError("device", device, "must be auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device", str(device), "CUDA is not available on this machine; use auto or cpu")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Returns a torch.Generator on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def derive_seed(*parts: int) -> int:
    """Returns a 63-bit seed mixed from integers (e.g. (seed, shard_index)).

    Uses SplitMix64 steps, so neighbouring inputs give unrelated streams.
    """
    mask = (1 << 64) - 1
    z = 0x9E3779B97F4A7C15
    for p in parts:
        z = (z + (int(p) & mask) + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
    return z & ((1 << 63) - 1)


def parse_values(field: str, text: str, max_points: int = 1000) -> list[float]:
    """Returns the points of ``text``: ``"v"``, ``"a,b,c"`` or an inclusive range ``"start:stop:step"``.

    ``"0:30:5"`` gives 0, 5, ..., 30. A malformed value raises :class:`ConfigError` naming ``field``.
    """
    text = str(text).strip()
    try:
        parts = [float(p) for p in text.split(":" if ":" in text else ",") if p.strip()]
    except ValueError:
        raise ConfigError(field, text, "must be a number, a list a,b,c or a range start:stop:step") from None
    if ":" in text:
        if len(parts) != 3:
            raise ConfigError(field, text, "a range is start:stop:step")
        start, stop, step = parts
        if not step > 0:
            raise ConfigError(field, text, "range step must be > 0 (write start:stop:step with start <= stop)")
        if stop < start:
            raise ConfigError(field, text, "range stop must be >= start")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        if n > max_points:
            raise ConfigError(field, text, f"at most {max_points} points")
        vals = [round(start + i * step, 12) for i in range(n)]
    else:
        vals = parts
    if not vals:
        raise ConfigError(field, text, "needs at least one value")
    if any(not math.isfinite(v) for v in vals):
        raise ConfigError(field, text, "values must be finite")
    return vals


def check_output_folder(field: str, path: str | Path) -> Path:
    """Returns ``path`` as a Path if a folder can be written there; raises ConfigError otherwise.

    Refuses an existing file, a path under a file, and a folder this user cannot write. Called
    before any work starts, so a bad ``--out`` never costs a run its results.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(field, str(path), "is a file, not a folder; give a folder path")
    anc = p
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise ConfigError(field, str(path), f"{anc} is a file, so no folder can be made under it")
    if anc.exists() and not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(field, str(path), f"{anc} is not writable by this user")
    return p
