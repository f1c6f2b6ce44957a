"""Kill a sweep with SIGKILL at random moments, rerun it, and compare with an uninterrupted run.

    python scripts/kill_resume_check.py --trials 10 [--min-bit-errors 20000] [--work /tmp/killcheck]

Runs ``wavefront sweep`` (7 SNR points, 4 estimators, 400 frames in batches of 50 by default)
once without interruption, then, per trial, starts it in a fresh folder, kills it with
SIGKILL at a random moment mid-run (once k of its batches are stored, k uniform in
1 .. total-1, plus a uniform part of one batch's time), reruns the same command to completion, and compares every row of results.json
with the uninterrupted run's: frames, bit errors and bits, MSE, its SE, NMSE, BER and the
bound, exactly (==, not approximately). Prints one line per trial and the count that matched.
Exit 0 when all matched.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SWEEP = ["--estimators", "ls-linear,lmmse-robust,lmmse-genie,mmse-bayes", "--snr-db", "0:30:5", "--frames", "400",
         "--batch-size", "50", "--device", "cpu", "--no-progress"]
EXACT = ("estimator", "axis_value", "frames", "bit_errors", "bits", "mse_db", "mse_se_db", "nmse_db", "ber", "bound_db")


def rows(folder: Path) -> list[dict]:
    """Returns the compared fields of every row of ``folder/results.json``."""
    return [{k: r[k] for k in EXACT} for r in json.loads((folder / "results.json").read_text())["rows"]]


def batches_on_disk(folder: Path) -> int:
    return sum(1 for _ in (folder / "progress").glob("point-*/batch-*.json"))


def start(argv: list[str], out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wavefront", "sweep", *argv, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_first_batch(proc: subprocess.Popen, out: Path) -> None:  # noqa: D103
    """Returns once ``out`` holds a stored batch or the process ended (start-up, imports, set-up are over)."""
    while proc.poll() is None and batches_on_disk(out) == 0:
        time.sleep(0.005)


def run(argv: list[str], out: Path) -> tuple[float, float]:
    """Runs the sweep to completion in ``out``; returns its wall time and the part after its first stored batch [s]."""
    t = time.perf_counter()
    proc = start(argv, out)
    wait_first_batch(proc, out)
    t_first = time.perf_counter()
    if proc.wait() != 0:
        raise SystemExit(f"the sweep failed (exit {proc.returncode})")
    end = time.perf_counter()
    return end - t, end - t_first


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--min-bit-errors", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--work", type=Path, default=Path("/tmp/kill_resume_check"))
    args = p.parse_args()
    argv = SWEEP + (["--min-bit-errors", str(args.min_bit_errors)] if args.min_bit_errors else [])
    shutil.rmtree(args.work, ignore_errors=True)
    ref_time, compute_time = run(argv, args.work / "whole")
    ref = rows(args.work / "whole")
    total = batches_on_disk(args.work / "whole")
    print(f"uninterrupted: {ref_time:.1f} s ({compute_time:.1f} s after the first batch was stored), {total} batches, "
          f"{len(ref)} rows, frames per point {[r['frames'] for r in ref[::len(ref) // len(set(r['axis_value'] for r in ref))]]}"
          + (f", --min-bit-errors {args.min_bit_errors}" if args.min_bit_errors else ""))
    rng = random.Random(args.seed)
    matched = 0
    for trial in range(args.trials):
        out = args.work / f"trial-{trial}"
        # The moment: once k of the run's batches are stored (k uniform in 1 .. total - 1), plus a
        # uniform part of one batch's time, so every kill lands mid-run whatever the machine's load
        # (a kill during the imports would test nothing).
        k = rng.randint(1, total - 1)
        delay = rng.uniform(0.0, compute_time / total)
        proc = start(argv, out)
        while proc.poll() is None and batches_on_disk(out) < k:
            time.sleep(0.005)
        try:
            proc.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            finished = False
        kept = batches_on_disk(out)
        had_results = (out / "results.json").exists()
        resume_time, _ = run(argv, out)
        same = rows(out) == ref
        matched += same
        print(f"trial {trial}: killed {delay:4.2f} s after batch {k} was stored{' (had finished)' if finished else ''}, {kept}/{total} batches "
              f"on disk, results.json {'present' if had_results else 'absent'} at the kill; resumed in "
              f"{resume_time:.1f} s: {'identical' if same else 'DIFFERENT'}")
    print(f"{matched} of {args.trials} resumed runs equal the uninterrupted run exactly")
    return 0 if matched == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
