"""Compressed convolutions: dense-assembled against separable execution, time and peak memory, in one run.

Runs the wave surrogate of the compression study (4 layers, 24 channels, k = 5, ranks
9/4/4/9; :class:`wavefront.imaging.compressed.WaveSurrogate`) and each of its layers in four
forms, on the same input:

- ``full``: the network with full ``nn.Conv2d`` kernels (31,273 conv parameters);
- ``dense``: the compressed network, kernels assembled to k x k and run by ``conv2d``;
- ``separable``: the same compressed network, every layer on its cheaper separable path
  (k x 1, 1 x k and 1 x 1 convolutions), whatever the multiply-adds say;
- ``auto``: each layer on the path :func:`cheapest_path` picks (the default).

The compressed forms compute the same function (their outputs agree to round-off, printed
as ``max_rel_diff``), so they have the same test error; the ``full`` network's test error
is the one the surrogate study reports beside them. Reported per form: median seconds of a
forward pass (inference, no gradients) and of forward + backward (a training step), and the
peak memory each adds (CPU: resident high-water mark in a child process; CUDA:
``max_memory_allocated``). Ratios are against ``dense``.

    python scripts/bench_compressed.py --device cpu --threads 1 --json runs/bench_compressed_cpu.json
    python scripts/bench_compressed.py --device cuda --batch 64 --size 32 128 --json runs/bench_compressed_cuda.json
    python scripts/bench_compressed.py --device cpu --single-layer 64 64 1 --size 64 --no-memory
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
from pathlib import Path

import torch

from wavefront.imaging.compressed import CompressedConv2d, WaveSurrogate, cheapest_path, path_macs
from wavefront.utils import resolve_device

FORMS = ("full", "dense", "separable", "auto")


def _separable_path(layer: CompressedConv2d) -> str:
    macs = path_macs(layer.in_channels, layer.out_channels, layer.kernel_size, layer.rank)
    return min(("spatial-first", "mix-first"), key=macs.get)


def build(args, device: torch.device) -> dict[str, torch.nn.Module]:
    """Returns the four networks (or, with ``--single-layer``, three forms of one layer); shared weights."""
    torch.manual_seed(0)
    if args.single_layer:
        c_in, c_out, rank = args.single_layer
        base = CompressedConv2d(c_in, c_out, args.kernel, rank).to(device)
        forms = {}
        for form in ("dense", "separable", "auto"):
            layer = CompressedConv2d(c_in, c_out, args.kernel, rank).to(device)
            layer.load_state_dict(base.state_dict())
            layer.path = {"dense": "dense", "separable": _separable_path(layer), "auto": "auto"}[form]
            forms[form] = layer
        return forms
    rank = args.rank[0] if len(args.rank) == 1 else tuple(args.rank)
    full = WaveSurrogate(args.channels, args.layers, args.kernel).to(device)
    compressed = WaveSurrogate(args.channels, args.layers, args.kernel, rank).to(device)
    nets = {"full": full}
    for form in ("dense", "separable", "auto"):
        net = WaveSurrogate(args.channels, args.layers, args.kernel, rank).to(device)
        net.load_state_dict(compressed.state_dict())
        for m in net.modules():
            if isinstance(m, CompressedConv2d):
                m.path = {"dense": "dense", "separable": _separable_path(m), "auto": "auto"}[form]
        nets[form] = net
    return nets


def _inputs(args, size: int, device: torch.device):
    g = torch.Generator().manual_seed(1)
    if args.single_layer:
        return [torch.randn(args.batch, args.single_layer[0], size, size, generator=g).to(device)]
    return [torch.randn(args.batch, size, size, generator=g).to(device) for _ in range(3)]


def _steps(net, x):
    def forward():
        with torch.no_grad():
            net(*x)

    def train_step():
        net.zero_grad(set_to_none=True)
        net(*x).square().mean().backward()

    return forward, train_step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_forms(nets, x, device, repeats: int) -> dict:
    """Returns {form: {"forward_s", "train_step_s"}} medians, timed round-robin."""
    fns = {}
    for form, net in nets.items():
        fwd, step = _steps(net, x)
        fns[(form, "forward_s")] = fwd
        fns[(form, "train_step_s")] = step
    for fn in fns.values():
        fn()
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[key].append(time.perf_counter() - t)
    out: dict = {}
    for (form, what), ts in times.items():
        out.setdefault(form, {})[what] = statistics.median(ts)
    return out


def _rss_kib(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


MIN_DENSE_MB = 0.25  # 64 pages: the smallest dense peak a memory ratio is taken over


def peak_bytes(fn, device) -> int:
    """Returns the peak memory (bytes) ``fn()`` adds above what is allocated when it starts."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - base
    Path("/proc/self/clear_refs").write_text("5")
    base = _rss_kib("VmRSS")
    fn()
    return (_rss_kib("VmHWM") - base) * 1024


def memory_forms(nets, x, device) -> dict:
    out = {}
    for form, net in nets.items():
        fwd, step = _steps(net, x)
        fwd(), step()  # warm-up: one-off allocations (and .grad buffers) are not counted
        out[form] = {"forward_MB": peak_bytes(fwd, device) / 2 ** 20, "train_step_MB": peak_bytes(step, device) / 2 ** 20}
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, nargs="+", default=[32, 128], help="field sizes H = W")
    p.add_argument("--channels", type=int, default=24)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--kernel", type=int, default=5)
    p.add_argument("--rank", type=int, nargs="+", default=[9, 4, 4, 9])
    p.add_argument("--single-layer", type=int, nargs=3, default=None, metavar=("C_IN", "C_OUT", "RANK"),
                   help="benchmark one CompressedConv2d layer (dense / separable / auto) instead of the surrogate")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="CPU threads; 1 on a shared machine")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.memory_child is not None:
        print(json.dumps(memory_forms(build(args, device), _inputs(args, args.memory_child, device), device)))
        return 0
    rows = []
    for size in args.size:
        nets = build(args, device)
        x = _inputs(args, size, device)
        with torch.no_grad():
            ref = nets["dense"](*x).float()
            diffs = {f: float((nets[f](*x) - ref).abs().max() / ref.abs().max()) for f in ("separable", "auto")}
        layers = [m for m in nets["dense"].modules() if isinstance(m, CompressedConv2d)]
        layers = [{"c_in": m.in_channels, "c_out": m.out_channels, "rank": m.rank,
                   "macs": path_macs(m.in_channels, m.out_channels, m.kernel_size, m.rank),
                   "auto_path": cheapest_path(m.in_channels, m.out_channels, m.kernel_size, m.rank)}
                  for m in layers]
        times = time_forms(nets, x, device, args.repeats)
        row = {"device": str(device), "threads": args.threads, "batch": args.batch, "size": size,
               "channels": args.channels, "kernel": args.kernel, "ranks": args.rank, "layers": layers,
               "max_rel_diff_vs_dense": diffs, "seconds": times,
               "time_over_dense": {f: {w: round(t[w] / times["dense"][w], 3) for w in t} for f, t in times.items()}}
        if args.memory:
            if device.type == "cuda":
                mem = memory_forms(nets, x, device)
            else:
                env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
                child = [a for a in argv if a != "--memory-child"] + ["--memory-child", str(size)]
                res = subprocess.run([sys.executable, __file__, *child], env=env, capture_output=True, text=True,
                                     check=True)
                mem = json.loads(res.stdout.strip().splitlines()[-1])
            row["peak_MB"] = {f: {w: round(b, 2) for w, b in m.items()} for f, m in mem.items()}
            # a ratio over a dense peak of a few pages is noise (the CPU figure is the RSS high-water mark, in
            # pages, and 0 MB gave ratios of 1e8): null below MIN_DENSE_MB
            row["memory_over_dense"] = {f: {w: round(m[w] / mem["dense"][w], 3) if mem["dense"][w] >= MIN_DENSE_MB
                                            else None for w in m} for f, m in mem.items()}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
