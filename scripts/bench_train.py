"""Benchmark: AdaFortiTran training samples/s and inference frames/s, one batched pass vs the official two passes.

Both variants run the same weights of the same architecture on random data (grid 120 x 14,
pilots 12 x 2 by default):

- ``two-pass``: the official computation: real parts, then imaginary parts, float32, eager;
- ``one-pass``: real and imaginary parts as one ``[2B]`` batch; on GPU also bf16 autocast, and
  ``torch.compile`` with ``--compile`` (``reduce-overhead`` at batch 1 for CUDA graphs).

Prints one table (and ``--json`` writes it) with the ratio one-pass / two-pass. Targets on GPU:
training >= 2x the two-pass version, inference >= 100k frames/s, batch-1 latency < 0.5 ms.

    python scripts/bench_train.py --device auto --batches 1 128 1024
    python scripts/bench_train.py --device cpu --batches 1 128 --max-seconds 20   # a small CPU
"""
from __future__ import annotations

import argparse
import json

import torch

from wavefront.bench import seconds_per_call
from wavefront.estimators import count_parameters, create
from wavefront.estimators.train import channel_mse
from wavefront.sim.config import preset
from wavefront.utils import resolve_device


def _timeit(fn, device, max_seconds: float, min_iters: int = 3) -> float:
    """Returns seconds per call: one warm-up call, then at least ``min_iters`` calls over at least a fifth of ``max_seconds``."""
    return seconds_per_call(fn, 0.2 * max_seconds, min_iters, warmup=1, device=device)


def bench(batch: int, variant: str, device, args, config, overrides) -> dict:
    """Returns train samples/s, inference frames/s and latency [ms] of one variant at one batch size."""
    torch.manual_seed(0)
    model = create("adafortitran", config, **overrides).to(device)
    pf, pt = config.ofdm.pilot_shape
    f, t = config.ofdm.grid_shape
    pilots = torch.randn(batch, pf, pt, dtype=torch.complex64, device=device)
    h = torch.randn(batch, f, t, dtype=torch.complex64, device=device)
    meta = {"snr_db": torch.rand(batch, device=device) * 25, "delay_spread_s": torch.rand(batch, device=device) * 3e-7,
            "doppler_hz": torch.rand(batch, device=device) * 1000}
    fast = variant == "one-pass"
    amp = fast and device.type == "cuda"
    fwd = model.forward if fast else model.forward_two_pass
    if fast and args.compile:
        fwd = torch.compile(model, mode="reduce-overhead" if batch == 1 and device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = channel_mse(fwd(pilots, meta).to(torch.complex64), h)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            fwd(pilots, meta)

    model.train()
    s_train = _timeit(train_step, device, args.max_seconds) if not args.inference_only else float("nan")
    model.eval()
    s_infer = _timeit(infer, device, args.max_seconds)
    return {"batch": batch, "variant": variant, "train_samples_per_s": batch / s_train, "infer_frames_per_s": batch / s_infer,
            "latency_ms": 1e3 * s_infer}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 128, 1024])
    p.add_argument("--max-seconds", type=float, default=10.0, help="time budget per measurement")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--compile", action="store_true", help="torch.compile the one-pass model")
    p.add_argument("--inference-only", action="store_true")
    p.add_argument("--preset", default="default")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model option, e.g. model_dim=32")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import yaml

    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    device = resolve_device(args.device)
    config = preset(args.preset)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"AdaFortiTran {count_parameters(create('adafortitran', config, **overrides)):,} parameters, "
          f"grid {config.ofdm.grid_shape}, pilots {config.ofdm.pilot_shape}, on {name}, torch {torch.__version__}")
    rows = []
    head = f"{'batch':>6} {'variant':>9} {'train samples/s':>16} {'infer frames/s':>15} {'latency ms':>11}"
    print(head)
    for b in args.batches:
        pair = {}
        for variant in ("two-pass", "one-pass"):
            r = bench(b, variant, device, args, config, overrides)
            pair[variant] = r
            rows.append(r)
            print(f"{b:>6} {variant:>9} {r['train_samples_per_s']:>16.1f} {r['infer_frames_per_s']:>15.1f} {r['latency_ms']:>11.2f}",
                  flush=True)
        ratio = {k: pair["one-pass"][k] / pair["two-pass"][k] for k in ("train_samples_per_s", "infer_frames_per_s")}
        rows.append({"batch": b, "variant": "ratio", **ratio})
        print(f"{b:>6} {'ratio':>9} {ratio['train_samples_per_s']:>15.2f}x {ratio['infer_frames_per_s']:>14.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "overrides": overrides, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
