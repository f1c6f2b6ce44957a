"""Timing helpers for the benchmark scripts: one timing loop, side-by-side rounds, and the machine's description.

Foundation layer: imports torch and the standard library only.
"""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Waits for the queued work of ``device`` (CUDA, MPS); a no-op on CPU and for ``None``."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev is not None and dev.type == "mps":
        torch.mps.synchronize()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def seconds_per_call(fn: Callable[[], object], seconds: float = 2.0, min_calls: int = 3, warmup: int = 1,
                     device: torch.device | str | None = None, clock: str = "wall") -> float:
    """Returns the seconds per call of ``fn``: ``warmup`` calls, then calls until both ``min_calls`` and ``seconds``.

    ``clock``: ``"wall"`` (elapsed time) or ``"cpu"`` (this process's CPU time, all threads: on a
    CPU shared with other jobs it leaves out the time the process waits for a core, so ratios
    hold under load; meaningless for GPU work). The device is synchronised before the clock
    starts and before it is read, so queued GPU work counts.
    """
    now = CLOCKS[clock]
    for _ in range(warmup):
        fn()
    synchronize(device)
    n, t0 = 0, now()
    while True:
        fn()
        n += 1
        if n >= min_calls:
            synchronize(device)
            elapsed = now() - t0
            if elapsed >= seconds:
                return elapsed / n


def best_seconds_per_call(fns: dict[str, Callable[[], object]], seconds: float = 2.0, rounds: int = 3,
                          min_calls: int = 3, device: torch.device | str | None = None,
                          clock: str = "wall") -> dict[str, float]:
    """Returns each function's best :func:`seconds_per_call` over ``rounds`` rounds, timed in turn within each round.

    Side by side: on a machine shared with other jobs, load comes and goes; timing the
    functions in turn, round after round, and keeping each one's least disturbed round makes
    their ratios comparable (each round of each function lasts at least ``seconds``).
    """
    best = {name: float("inf") for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], seconds_per_call(fn, seconds, min_calls, warmup=1 if r == 0 else 0,
                                                          device=device, clock=clock))
    return best


def cpu_model() -> str:
    """Returns the CPU's model name (from ``/proc/cpuinfo`` where there is one) and its logical core count."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical cores"


def machine_description(device: torch.device | str = "cpu") -> str:
    """Returns one line: the device (CPU model, or the GPU's name), torch's thread count and version."""
    dev = torch.device(device)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model()
    return f"{dev.type}: {where}; {torch.get_num_threads()} torch thread(s); torch {torch.__version__}"
