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


def parse_range(field: str, text: str, forms: str = "v,a:b,a:b:step", scale: float = 1.0,
                minimum: float | None = None) -> tuple[float, float, float | None]:
    """Returns ``(low, high, step)`` from ``"v"``, ``"low:high"`` or ``"low:high:step"``, each number times ``scale``.

    The one parser of ranges on the command line. ``forms`` lists the accepted forms
    (``"v"``: a fixed value, returned as ``(v, v, None)``; ``"a:b"``: a range, step None;
    ``"a:b:step"``). Every number must be finite, ``low <= high``, ``step > 0``, and at least
    ``minimum`` (in the scaled unit) when given. Anything else raises :class:`ConfigError`
    naming ``field``, the text and the accepted forms.
    """
    allowed = forms.split(",")
    rule = "must be " + (", ".join(allowed[:-1]) + " or " if len(allowed) > 1 else "") + allowed[-1] + " (numbers)"
    parts = str(text).strip().split(":")
    form = {1: "v", 2: "a:b", 3: "a:b:step"}.get(len(parts))
    try:
        vals = [float(v) for v in parts]
    except ValueError:
        raise ConfigError(field, text, rule) from None
    if form not in allowed:
        raise ConfigError(field, text, rule)
    if not all(math.isfinite(v) for v in vals):
        raise ConfigError(field, text, "values must be finite")
    low, high = vals[0] * scale, vals[min(1, len(vals) - 1)] * scale
    step = vals[2] * scale if len(vals) == 3 else None
    if low > high:
        raise ConfigError(field, text, "needs low <= high")
    if step is not None and not step > 0:
        raise ConfigError(field, text, "the step must be > 0")
    if minimum is not None and low < minimum:
        raise ConfigError(field, text, f"must be >= {minimum / scale:g}")
    return low, high, step


def parse_values(field: str, text: str, max_points: int = 1000) -> list[float]:
    """Returns the points of ``text``: ``"v"``, ``"a,b,c"`` or an inclusive range ``"start:stop:step"``.

    ``"0:30:5"`` gives 0, 5, ..., 30. A malformed value raises :class:`ConfigError` naming ``field``.
    """
    text = str(text).strip()
    if ":" in text:
        start, stop, step = parse_range(field, text, "a:b:step")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        if n > max_points:
            raise ConfigError(field, text, f"at most {max_points} points")
        return [round(start + i * step, 12) for i in range(n)]
    try:
        vals = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(field, text, "must be a number, a list a,b,c or a range start:stop:step") from None
    if not vals:
        raise ConfigError(field, text, "needs at least one value")
    if any(not math.isfinite(v) for v in vals):
        raise ConfigError(field, text, "values must be finite")
    return vals


def read_text_file(field: str, path: str | Path, not_found: str, is_folder: str) -> str:
    """Returns the text of the file ``path``, or raises a one-line ConfigError naming ``field`` and the path.

    ``not_found`` and ``is_folder`` are the rules stated when the file is missing or is a folder;
    any other read failure (permissions, not UTF-8) is named by its exception class.
    """
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(field, str(path), not_found) from None
    except IsADirectoryError:
        raise ConfigError(field, str(path), is_folder) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(field, str(path), f"cannot be read ({exc.__class__.__name__})") from None


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


def job_ranks(rank: int | None = None, world: int | None = None) -> tuple[int, int, bool]:
    """Returns ``(rank, world_size, array_job)`` for a command's ``--rank``/``--world`` flags or torchrun's environment.

    Given both flags, this process is array job ``rank`` of ``world`` (no process group;
    ``array_job`` is True). Without them, torchrun's ``RANK``/``WORLD_SIZE`` (``(0, 1)``
    outside torchrun). Raises ConfigError for one flag alone, ``world < 1``, ``rank`` outside
    ``0 .. world-1``, or the flags under torchrun.
    """
    try:
        env_rank, env_world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ConfigError("RANK/WORLD_SIZE", os.environ.get("RANK"), "must be integers") from None
    if rank is None and world is None:
        return env_rank, env_world, False
    if world is None:
        raise ConfigError("world", None, "--rank needs --world (the number of array jobs)")
    if rank is None:
        raise ConfigError("rank", None, "--world needs --rank (this job's index, 0 .. world-1)")
    if world < 1:
        raise ConfigError("world", world, "must be a positive integer")
    if not 0 <= rank < world:
        raise ConfigError("rank", rank, f"must satisfy 0 <= rank < world={world}")
    if env_world > 1:
        raise ConfigError("world", world, f"--rank/--world are for array jobs; under torchrun (WORLD_SIZE={env_world}) "
                                          "the ranks come from torchrun")
    return rank, world, True


class process_group:
    """Context manager: under torchrun (``WORLD_SIZE > 1``), runs its process group; yields ``(rank, world_size, device)``.

    The backend follows the device: ``nccl`` for CUDA (each rank on ``cuda:LOCAL_RANK`` unless
    ``device`` names an index), ``gloo`` for CPU. The group is destroyed on exit if it was
    started here. Outside torchrun: ``(0, 1, device)`` and no group.
    """

    def __init__(self, device: str = "auto"):
        self.device, self.started = device, False

    def __enter__(self) -> tuple[int, int, str]:
        rank, world, _ = job_ranks()
        if world == 1:
            return 0, 1, self.device
        import torch.distributed as dist

        dev = resolve_device(self.device)
        if dev.type == "cuda" and (self.device in ("auto", "cuda") or self.device is None):
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            self.started = True
        return dist.get_rank(), dist.get_world_size(), str(dev)

    def __exit__(self, *exc) -> None:
        if self.started:
            import torch.distributed as dist

            dist.destroy_process_group()
