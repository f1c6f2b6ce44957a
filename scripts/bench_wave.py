"""Wave front-end cost: raw deepwave against wavefront's region recording, time and peak memory, in one run.

On the OpenFWI scale (70 x 70 cells, dx 10 m, 15 Hz Ricker, velocity 1500-4500 m/s, PML 20,
1000 steps) and for each recording region (``line``: the co-design surface line; ``box``: an
800-cell 2-D box; ``model``: all 4900 cells) it times, side by side and round-robin:

- ``deepwave_int``: raw deepwave with K integer receivers (the speed to match);
- ``deepwave_region``: raw deepwave recording every cell of the region (what any
  record-then-interpolate front end must at least pay);
- ``wavefront_fwd``: :func:`record_region` plus K learnable receivers (forward only);
- ``wavefront_fwd_bwd``: the same with the backward pass to the receiver positions;
- ``deepwave_hicks_fwd_bwd`` (line only): deepwave's own off-grid receivers with gradients.

It also measures the peak memory each forward call adds above what was allocated before it,
and divides it by the size of the recorded field (shots x nt x region cells x 4 bytes). On
CPU the peak is the process's resident high-water mark (reset through
``/proc/self/clear_refs``, measured in a child process with a fixed malloc mmap threshold
so freed blocks go back to the system); on CUDA it is ``torch.cuda.max_memory_allocated``.

    python scripts/bench_wave.py --device cpu --shots 50 --threads 1 --json runs/bench_wave_cpu.json
    python scripts/bench_wave.py --device cuda --shots 50 500 --json runs/bench_wave_cuda.json

A column that runs out of device memory is reported as null instead of ending the run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from wavefront.imaging.wave import LearnableReceivers, Region, cpu_flush_to_zero, propagate, record_region, ricker
from wavefront.utils import resolve_device

NY = NX = 70
DX_M, DT_S, FREQ_HZ, PML = 10.0, 0.001, 15.0, 20
# Candidate regions; the recording region adds the kernel's support (3 cells for the sinc).
CANDIDATES = {
    "line": Region(2, 3, 4, 66),  # the co-design surface line: records 1 x 68 cells
    "box": Region(33, 47, 18, 52),  # records 20 x 40 = 800 cells
    "model": Region(3, 67, 3, 67),  # records all 70 x 70 = 4900 cells
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _out_of_memory(fn) -> bool:
    """Runs ``fn`` once; returns True (and frees the cache) if the device ran out of memory."""
    try:
        fn()
        return False
    except (torch.cuda.OutOfMemoryError, MemoryError):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return True


def _time_round_robin(fns: dict, device: torch.device, repeats: int) -> dict:
    """Returns the median seconds of each function (None if it ran out of memory), timed in turn."""
    oom = [name for name, fn in fns.items() if _out_of_memory(fn)]  # warm-up: deepwave loads kernels first
    fns = {name: fn for name, fn in fns.items() if name not in oom}
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()} | {name: None for name in oom}


def _rss_kib(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _peak_bytes(fn, device: torch.device) -> int:
    """Returns the peak memory (bytes) ``fn()`` adds above what is allocated when it starts."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - base
    Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark to the current RSS
    base = _rss_kib("VmRSS")
    fn()
    return (_rss_kib("VmHWM") - base) * 1024


def _setup(region: str, shots: int, args, device: torch.device) -> dict:
    """Returns the velocity, sources, receivers and the benchmark functions for one region."""
    v = torch.linspace(1500.0, args.v_max, NY).reshape(-1, 1).expand(NY, NX).contiguous().to(device)
    rx = LearnableReceivers(args.receivers, CANDIDATES[region], (NY, NX), kernel=args.kernel).to(device)
    rec = rx.recording
    amp = ricker(FREQ_HZ, args.nt, DT_S).reshape(1, 1, -1).repeat(shots, 1, 1).to(device)
    src = torch.stack([torch.full((shots,), 1), torch.linspace(5, 64, shots).long()], -1).unsqueeze(1).to(device)
    int_rec = rx.positions().detach().round().long().unsqueeze(0).expand(shots, -1, -1).contiguous()
    region_rec = rec.cells().to(device).unsqueeze(0).expand(shots, -1, -1).contiguous()
    probe = torch.randn(shots, args.receivers, args.nt, device=device)
    kw = dict(pml_width=PML, freq_hz=FREQ_HZ)

    def deepwave_int():
        propagate(v, DX_M, DT_S, amp, src, int_rec, **kw)

    def deepwave_region():
        propagate(v, DX_M, DT_S, amp, src, region_rec, **kw)

    spc = dict(shots_per_call=args.shots_per_call)

    def wavefront_fwd():
        with torch.no_grad():
            rx(record_region(v, DX_M, DT_S, amp, src, rec, **spc, **kw))

    def wavefront_fwd_bwd():
        rx.zero_grad(set_to_none=True)
        (rx(record_region(v, DX_M, DT_S, amp, src, rec, **spc, **kw)) * probe).sum().backward()

    fns = {"deepwave_int": deepwave_int, "deepwave_region": deepwave_region,
           "wavefront_fwd": wavefront_fwd, "wavefront_fwd_bwd": wavefront_fwd_bwd}
    if region == "line" and args.hicks:
        # Hicks receivers need 4 cells of margin, so they sit two rows deeper than the line.
        hicks_pos = rx.positions().detach().clone() + torch.tensor([2.0, 0.0], device=device)

        def deepwave_hicks_fwd_bwd():
            pos = hicks_pos.unsqueeze(0).expand(shots, -1, -1).clone().requires_grad_()
            (propagate(v, DX_M, DT_S, amp, src, pos, **kw) * probe).sum().backward()

        fns["deepwave_hicks_fwd_bwd"] = deepwave_hicks_fwd_bwd
    field_bytes = shots * args.nt * rec.shape[0] * rec.shape[1] * 4
    return {"fns": fns, "field_bytes": field_bytes, "recording": rec}


def _measure_memory(region: str, shots: int, args, device: torch.device) -> dict:
    """Returns {name: peak bytes} for the forward functions (and fwd+bwd) of one region."""
    setup = _setup(region, shots, args, device)
    out = {}
    with cpu_flush_to_zero():
        for name, fn in setup["fns"].items():
            if name.startswith("deepwave_hicks"):
                continue
            if _out_of_memory(fn):  # warm-up, so one-off library allocations are not counted
                out[name] = None
                continue
            out[name] = _peak_bytes(fn, device)
    return out


def _memory_in_child(region: str, shots: int, argv: list[str]) -> dict:
    """Runs :func:`_measure_memory` in a fresh CPU process with a fixed malloc mmap threshold."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    cmd = [sys.executable, __file__, *argv, "--memory-child", f"{region}:{shots}"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--shots", type=int, nargs="+", default=[50])
    p.add_argument("--regions", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--receivers", type=int, default=8)
    p.add_argument("--nt", type=int, default=1000)
    p.add_argument("--v-max", type=float, default=4500.0,
                   help="deepest velocity (m/s); above ~3500 deepwave takes 2 internal steps per dt")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads; 1 on a shared machine")
    p.add_argument("--kernel", default="sinc", choices=["bilinear", "sinc"])
    p.add_argument("--shots-per-call", type=int, default=None,
                   help="record_region's shots per deepwave call; default: its memory-bounded choice")
    p.add_argument("--no-hicks", dest="hicks", action="store_false", help="skip the deepwave Hicks column")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.memory_child:
        region, shots = args.memory_child.split(":")
        print(json.dumps(_measure_memory(region, int(shots), args, device)))
        return 0
    parent_argv = [a for a in argv if a != "--memory-child"]
    rows = []
    for shots in args.shots:
        for region in args.regions:
            setup = _setup(region, shots, args, device)
            with cpu_flush_to_zero():  # backward passes run outside propagate(); keep every column alike
                medians = _time_round_robin(setup["fns"], device, args.repeats)
            rec = setup["recording"]
            row = {"device": str(device), "threads": args.threads, "shots": shots, "region": region,
                   "shots_per_call": args.shots_per_call, "v_max": args.v_max,
                   "recorded_cells": rec.shape[0] * rec.shape[1], "receivers": args.receivers, "nt": args.nt,
                   "kernel": args.kernel, "field_MB": round(setup["field_bytes"] / 2 ** 20, 1), "seconds": {},
                   "time_over_deepwave_int": {}}
            for name, seconds in medians.items():  # None: out of memory
                row["seconds"][name] = None if seconds is None else round(seconds, 4)
                row["time_over_deepwave_int"][name] = (None if seconds is None or medians["deepwave_int"] is None
                                                       else round(seconds / medians["deepwave_int"], 3))
            if args.memory:
                if device.type == "cuda":
                    peaks = _measure_memory(region, shots, args, device)
                else:
                    peaks = _memory_in_child(region, shots, parent_argv)
                row["peak_MB"] = {k: None if b is None else round(b / 2 ** 20, 1) for k, b in peaks.items()}
                row["peak_over_field"] = {k: None if b is None else round(b / setup["field_bytes"], 2)
                                          for k, b in peaks.items()}
            print(json.dumps(row), flush=True)
            rows.append(row)
            del setup
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
