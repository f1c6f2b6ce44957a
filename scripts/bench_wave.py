"""Wave front-end throughput: raw deepwave vs wavefront's learnable receivers, in one run.

Reports model cell-steps per second (shots x ny x nx x nt / wall time, PML cells not
counted) on the OpenFWI scale (70 x 70, dx 10 m, 15 Hz Ricker, PML 20, 1000 steps) for:

- ``deepwave int``: raw deepwave with K integer receivers (the speed to match);
- ``wavefront``: record the candidate line with integer receivers, then interpolate K
  learnable receivers (forward, and forward + backward to the receiver positions);
- ``deepwave hicks``: deepwave's own off-grid receivers with gradients to positions.

    python scripts/bench_wave.py --device cpu --shots 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

from wavefront.imaging.wave import LearnableReceivers, Region, WaveFrontEnd, flush_denormals, propagate, ricker
from wavefront.utils import resolve_device


def _time_round_robin(fns: dict, device, repeats: int) -> dict:
    """Returns the median seconds of each function, timed in turn so load swings hit all alike."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for fn in fns.values():  # warm-up: deepwave loads kernels and plans on the first call
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--shots", type=int, nargs="+", default=[5])
    p.add_argument("--receivers", type=int, default=8)
    p.add_argument("--nt", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kernel", default="bilinear", choices=["bilinear", "sinc"])
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ny = nx = 70
    dx, dt, f = 10.0, 0.001, 15.0
    v = torch.linspace(1500.0, 4500.0, ny).reshape(-1, 1).expand(ny, nx).contiguous().to(device)
    rx = LearnableReceivers(args.receivers, Region(2, 3, 4, 66), (ny, nx), kernel=args.kernel).to(device)
    front = WaveFrontEnd(rx, dx, dt, f)
    rows = []
    for shots in args.shots:
        amp = ricker(f, args.nt, dt).reshape(1, 1, -1).repeat(shots, 1, 1).to(device)
        src = torch.stack([torch.full((shots,), 1), torch.linspace(5, 64, shots).long()], -1).unsqueeze(1).to(device)
        int_rec = rx.positions().detach().round().long().unsqueeze(0).expand(shots, -1, -1).contiguous()
        # Hicks receivers need 4 cells of margin, so they sit one row deeper than the line (row 4).
        hicks_pos = rx.positions().detach().clone() + torch.tensor([2.0, 0.0], device=device)
        probe = torch.randn(shots, args.receivers, args.nt, device=device)

        def raw():
            propagate(v, dx, dt, amp, src, int_rec, freq_hz=f)

        def ours_fwd():
            with torch.no_grad():
                front(v, amp, src)

        def ours_fwd_bwd():
            rx.zero_grad(set_to_none=True)
            (front(v, amp, src) * probe).sum().backward()

        def hicks_fwd_bwd():
            pos = hicks_pos.unsqueeze(0).expand(shots, -1, -1).clone().requires_grad_()
            (propagate(v, dx, dt, amp, src, pos, freq_hz=f) * probe).sum().backward()

        cells = shots * ny * nx * args.nt
        row = {"device": str(device), "shots": shots, "receivers": args.receivers, "nt": args.nt}
        fns = {"deepwave_int_fwd": raw, "wavefront_fwd": ours_fwd,
               "wavefront_fwd_bwd_positions": ours_fwd_bwd, "deepwave_hicks_fwd_bwd_positions": hicks_fwd_bwd}
        # Backward passes through deepwave run outside propagate(), so keep subnormals flushed
        # for the whole timing (see flush_denormals); raw and wavefront get the same setting.
        with flush_denormals():
            medians = _time_round_robin(fns, device, args.repeats)
        for name, seconds in medians.items():
            row[name] = {"s": round(seconds, 4), "Gcell_steps_per_s": round(cells / seconds / 1e9, 4)}
        row["wavefront_fwd_over_raw"] = round(row["wavefront_fwd"]["s"] / row["deepwave_int_fwd"]["s"], 3)
        row["wavefront_fwd_bwd_over_raw"] = round(row["wavefront_fwd_bwd_positions"]["s"] / row["deepwave_int_fwd"]["s"], 3)
        print(json.dumps(row))
        rows.append(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
