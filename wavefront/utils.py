"""Device and seed helpers shared by every subsystem."""
from __future__ import annotations

import argparse
import contextlib
import csv
import decimal
import errno
import functools
import io
import json
import math
import os
import shutil
import signal
import threading
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


def constant(value: float, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Returns ``value`` as a 0-dim tensor of ``dtype`` on ``device``, cached: an operand, never to be written to.

    An elementwise op given a Python number wraps it in a new tensor on every call, which on a
    CPU costs about 2.5 us more than the same op on tensors: at batch 1 a frame takes a dozen such
    ops. A Python number meets a tensor of ``dtype`` rounded to ``dtype``, as ``value`` is here,
    so the results are the same bits.
    """
    return _constant(float(value), dtype, torch.device(device) if isinstance(device, str) else device)


@functools.lru_cache(maxsize=256)
def _constant(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


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
    repeated = next((v for i, v in enumerate(vals) if v in vals[:i]), None)
    if repeated is not None:  # a point twice would be simulated twice and fill two rows of one table with it
        raise ConfigError(field, text, f"repeats {repeated:g}; give each point once")
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


def check_output_folder(field: str, path: str | Path, need_bytes: int = 0) -> Path:
    """Returns ``path`` as a Path if a folder can be written there; raises ConfigError otherwise.

    Refuses an existing file, a path under a file, and a place where no file can be created:
    a real probe file is written (and removed) in ``path`` or, when it does not exist yet, in
    its nearest existing ancestor, since permission bits lie (root, read-only mounts, /proc).
    ``need_bytes``: free space the command will need there (0: no check). Called before any
    work starts, so a bad ``--out`` never costs a run its results.
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
    probe = anc / f".wavefront-probe-{os.getpid()}"
    try:
        # An empty file: it proves a file can be made there; the space is asked of statvfs below, so a
        # full disk is told apart from an unwritable place (and a resumable job may still finish there).
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        where = "" if anc == p else f" (its existing parent {anc})"
        raise ConfigError(field, str(path), f"cannot be written{where}: {os_reason(exc)}") from None
    if need_bytes > 0:
        free = shutil.disk_usage(anc).free
        if free < need_bytes:
            raise ConfigError(field, str(path), f"not enough free space: about {need_bytes / 1e6:.1f} MB needed, "
                                                f"{free / 1e6:.1f} MB free")
    return p


def os_reason(exc: BaseException) -> str:
    """Returns an OS error in words with its code, e.g. ``No space left on device (ENOSPC)``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{os.strerror(exc.errno)} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return f"{type(exc).__name__}: {exc}"


class SaveError(ConfigError):
    """A result file could not be written: names the file and the OS's reason (one line, exit 2)."""

    def __init__(self, path: str | Path, exc: BaseException, hint: str = ""):
        self.path, self.exc = Path(path), exc
        super().__init__("save", str(path), f"cannot be written: {os_reason(exc)}" + (f"; {hint}" if hint else ""))


def fsync_dir(folder: Path) -> None:
    """Flushes ``folder``'s entries (a rename inside it) to disk where the file system allows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` all or nothing: a temporary file in the same folder, fsync, rename; returns ``path``.

    A crash leaves the old file (or none) and at most a hidden ``.NAME.PID.tmp``; never a
    truncated file under the real name. Any OS failure (full disk, permissions) removes the
    temporary file and raises :class:`SaveError` naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise SaveError(path, exc) from None
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`); returns ``path``."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj, **dumps_kwargs) -> Path:
    """Writes ``obj`` as JSON (``json.dumps`` keywords) plus a newline to ``path`` atomically; returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def atomic_write_csv(path: str | Path, rows: list[dict]) -> Path:
    """Writes ``rows`` (dicts sharing the first row's keys) as CSV with a header to ``path`` atomically."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def atomic_savefig(fig, path: str | Path, **savefig_kwargs) -> Path:
    """Saves a matplotlib figure to ``path`` atomically (rendered in memory, then written); returns ``path``.

    The format follows the suffix (``.png``, ``.pdf``, ``.svg``).
    """
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def finish_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Lays ``fig`` out, saves it to ``path`` atomically (:func:`atomic_savefig`) and closes it; returns ``path``."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        return atomic_savefig(fig, path, dpi=dpi)
    finally:
        plt.close(fig)


def available_memory_bytes(device: torch.device | str = "cpu") -> int | None:
    """Returns the bytes free for new tensors on ``device`` (CUDA: free device memory; CPU: MemAvailable), None if unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(field: str, value, need_bytes: float, device: torch.device | str = "cpu",
                 hint: str = "lower it") -> None:
    """Raises ConfigError naming ``field`` when tensors of about ``need_bytes`` would not fit ``device``'s free memory.

    Called before allocating, so an absurd size is one line instead of an allocator traceback.
    """
    free = available_memory_bytes(device)
    if free is not None and need_bytes > free:
        raise ConfigError(field, value, f"needs about {need_bytes / 1e9:.3g} GB of {torch.device(device).type} memory "
                                        f"at once, {free / 1e9:.3g} GB available; {hint}")


# argparse types: every number is checked at the door (NaN and inf included), one line, exit 2.
def _number(text: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text.strip()}")
    return v


def finite_float(text: str) -> float:
    """argparse type: a finite float (NaN and inf refused)."""
    return _number(text)


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    v = _number(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {_shown(v)}")
    return v


def nonnegative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    v = _number(text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {_shown(v)}")
    return v


def _shown(v: float) -> str:
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)


def _integer(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        pass
    _number(text)  # "1e6" is a count too, if it is a whole number (NaN and inf are not)
    exact = decimal.Decimal(str(text).strip())
    if exact != exact.to_integral_value():
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text.strip()}")
    return int(exact)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``1e6`` accepted as 1000000; NaN, inf and fractions refused)."""
    v = _integer(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse formatter that shows each option's default, except where there is none to show (required options,
    ``None``, on/off flags), so ``--help`` never prints ``(default: None)``."""

    def _get_help_string(self, action):
        if action.required or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def refuse_to_replace(field: str, out: Path, names: tuple[str, ...], overwrite: bool, what: str = "results",
                      advice: str = "add --overwrite to replace them, or give another --out") -> None:
    """Raises ConfigError when ``out`` holds one of ``names`` (an earlier run's outputs) and ``overwrite`` is off.

    For commands that write their outputs afresh rather than resuming: rerun into the same ``--out``, they
    would silently replace what took minutes or hours to compute. Called before any work starts.
    ``advice`` ends the message: what the user can do instead.
    """
    held = [n for n in names if (Path(out) / n).exists()]
    if held and not overwrite:
        raise ConfigError(field, str(out), f"holds {what} of an earlier run ({held[0]}); {advice}")


def refuse_results_without_progress(out: Path, progress: Path, overwrite: bool) -> None:
    """Raises ConfigError when ``out`` holds a ``results.json`` but ``progress`` holds no run, unless ``overwrite``.

    For the commands that resume from ``progress/`` (sweep, evaluate): its fingerprint is how a rerun knows
    it is the same run. Without one (``wavefront merge-results`` writes none; a user may have removed it),
    the results there may be another run's, and writing this run's would silently replace them.
    """
    if not overwrite and (Path(out) / "results.json").exists() and not (Path(progress) / "fingerprint.json").exists():
        raise ConfigError("out", str(out), "holds results.json of an earlier run but no progress/ of it (a merge-results "
                                           "output, or its progress/ was removed), so this run cannot tell whether it "
                                           "is the same one; add --overwrite to replace it, or give another --out")


def refuse_other_results(out: Path, same, what: str) -> None:
    """Raises ConfigError when ``out/results.json`` exists and ``same(its content)`` is False (or it is unreadable).

    For ``merge-results``, which has no progress to resume: merging the same partial files again writes
    the same results and passes; another run's results are never silently replaced. ``what``: this
    run, as the message names it (e.g. ``"this sweep"``).
    """
    path = Path(out) / "results.json"
    if not path.exists():
        return
    try:
        held = json.loads(path.read_text())
    except (OSError, ValueError):
        held = None
    if not isinstance(held, dict) or not same(held):
        raise ConfigError("out", str(out), f"holds results.json of another run than {what}; give another OUT folder, "
                                           "or remove that results.json to replace it")


def cpu_quota(root: str | os.PathLike = "/sys/fs/cgroup", self_cgroup: str | os.PathLike = "/proc/self/cgroup"
              ) -> float | None:
    """Returns the CPUs this process's cgroup may use (its CFS quota over its period), or None without a quota.

    Reads cgroup v2's ``cpu.max`` (``"200000 100000"``: 2 CPUs; ``"max 100000"``: no quota), else cgroup v1's
    ``cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` (quota ``-1``: none), in every folder from this process's
    own cgroup (``self_cgroup``: ``0::/user.slice/job.scope`` for v2, the ``cpu`` controller's line for v1) up to
    ``root``, and returns the smallest: a systemd ``CPUQuota`` or a Kubernetes limit sits on a parent, and a
    container started with ``--cpus 2`` on a 64-core host (64 cores seen) at its own root. Anything unreadable or
    malformed counts as no quota.
    """
    base = Path(root)
    v2, v1 = "/", "/"
    try:
        for line in Path(self_cgroup).read_text().splitlines():
            hier, controllers, path = (line.split(":", 2) + ["", ""])[:3]
            if hier == "0" and controllers == "":
                v2 = path or "/"
            elif "cpu" in controllers.split(","):
                v1 = path or "/"
    except OSError:
        pass
    quotas = []
    for rel, folder, names in ((v2, base, ("cpu.max",)),
                               (v1, base / "cpu", ("cpu.cfs_quota_us", "cpu.cfs_period_us"))):
        parts = [p for p in rel.split("/") if p and p not in (".", "..")]
        for depth in range(len(parts), -1, -1):  # own cgroup first, then each parent up to the root
            q = _quota_in(folder.joinpath(*parts[:depth]), names)
            if q is not None:
                quotas.append(q)
    return min(quotas) if quotas else None


def _quota_in(folder: Path, names: tuple[str, ...]) -> float | None:
    """Returns one cgroup folder's quota in CPUs from ``cpu.max`` (v2) or the v1 quota and period files, else None."""
    try:
        fields = [t for n in names for t in (folder / n).read_text().split()]
    except OSError:
        return None
    try:
        quota, period = float(fields[0]), float(fields[1])
    except (IndexError, ValueError):  # "max" (v2) or damaged text: no quota
        return None
    if not (quota > 0 and period > 0 and math.isfinite(quota) and math.isfinite(period)):
        return None  # v1 says -1 for none
    return quota / period


def usable_cpus(root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """Returns the CPUs this process can keep busy: its affinity mask, capped by its cgroup's quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cap_threads_to_cpus(root: str | os.PathLike = "/sys/fs/cgroup") -> int | None:
    """Lowers torch's CPU threads to :func:`usable_cpus` when its default is higher; returns the new count or None.

    torch starts one thread per core it sees, and a container's CPU quota is not among what it sees: 64
    threads sharing a 2-CPU quota are throttled in turn, and spin while they wait. Never raises the count,
    and leaves it alone when ``OMP_NUM_THREADS`` is set (the user's or torchrun's choice). A command's
    ``--threads`` is applied after this and wins.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    quota = cpu_quota(root)
    if quota is None:  # torch's default already follows the affinity mask: nothing to do, and no torch import
        return None
    cpus = usable_cpus(root)
    import torch

    if torch.get_num_threads() <= cpus:
        return None
    torch.set_num_threads(cpus)
    return cpus


def thread_count(text: str) -> int:
    """argparse type: torch CPU threads, 1 .. 4 x this machine's CPUs (more only slows torch; 1e6 ran out of memory
    starting them)."""
    return _at_most_4x_cpus(positive_int(text))


def worker_count(text: str) -> int:
    """argparse type: DataLoader worker processes, 0 .. 4 x this machine's CPUs (``--workers 1000`` started a
    thousand processes on 2 CPUs)."""
    return _at_most_4x_cpus(nonnegative_int(text))


def _at_most_4x_cpus(v: int) -> int:
    """Returns ``v``, or raises argparse's error when it exceeds 4 x this machine's CPUs (threads or processes)."""
    cpus = os.cpu_count() or 1
    if v > 4 * cpus:
        raise argparse.ArgumentTypeError(f"must be at most {4 * cpus} (4 x this machine's {cpus} CPUs), got {v}")
    return v


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0 (``1e6`` accepted)."""
    v = _integer(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


SEED_LIMIT = 2 ** 63  # seeds mix into 64-bit streams (derive_seed) and torch.manual_seed's int64


def seed_int(text: str) -> int:
    """argparse type: a seed, an integer in [0, 2**63) (``1e6`` accepted).

    ``derive_seed`` keeps a seed's low 64 bits, so ``2**64`` would draw seed 0's frames, and
    ``torch.manual_seed`` overflows on it: refused at the door.
    """
    v = _integer(text)
    if not 0 <= v < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63), got {v}")
    return v


def any_int(text: str) -> int:
    """argparse type: any integer (``1e6`` accepted; NaN, inf and fractions refused)."""
    return _integer(text)


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


# ---- Ctrl-C ---------------------------------------------------------------------------------
_SIGINT_PENDING = threading.Event()


def check_interrupt() -> None:
    """Raises KeyboardInterrupt if a Ctrl-C (SIGINT) arrived within :func:`deferred_interrupt`; a no-op otherwise."""
    if interrupt_pending():
        raise KeyboardInterrupt


def interrupt_pending() -> bool:
    """Returns True, once, if a Ctrl-C (SIGINT) arrived within :func:`deferred_interrupt`: the caller then stops
    at its own safe point (``train`` saves a resumable checkpoint there) instead of raising."""
    if _SIGINT_PENDING.is_set():
        _SIGINT_PENDING.clear()
        return True
    return False


@contextlib.contextmanager
def deferred_interrupt():
    """Within it, a first Ctrl-C is noted and raised by the next :func:`check_interrupt` (between batches), or
    answered by :func:`interrupt_pending`.

    Python's own handler raises KeyboardInterrupt in whatever Python code runs next. Between
    h5py and torch calls that is often a weakref callback (h5py's object registry), where the
    exception is printed as "Exception ignored" and dropped, and generation ran on to the end. A
    second Ctrl-C raises at once. One pending at the end is raised there, once the work is
    done. Only in the main thread, and only over Python's default handler (a caller's stays).
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def note(signum, frame):
        if _SIGINT_PENDING.is_set():
            raise KeyboardInterrupt
        _SIGINT_PENDING.set()

    _SIGINT_PENDING.clear()
    signal.signal(signal.SIGINT, note)
    try:
        yield
    except BaseException:
        _SIGINT_PENDING.clear()  # leaving with an error anyway: nothing stays pending for a later run
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    check_interrupt()
