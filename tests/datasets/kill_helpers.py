"""Interrupting ``wavefront generate`` for real: a child process SIGKILLed while it writes shards."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from wavefront.datasets.shards import shard_name, verify_content


def kill_generate_midway(argv: list[str], out: Path, once_shard: int, timeout_s: float = 120.0) -> list[Path]:
    """Runs ``python -m wavefront *argv --out out`` in a child process, SIGKILLs it as soon as shard ``once_shard``
    exists (that many shards done, the next under way), and returns the ``shard-*.h5`` files it left, each checked
    complete (``verify_content``: whatever looks complete is complete)."""
    proc = subprocess.Popen([sys.executable, "-m", "wavefront", *argv, "--out", str(out)],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while not (out / shard_name(once_shard)).exists():
        assert proc.poll() is None, "generation finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("shard-*.h5"))
    for p in done:
        verify_content(p)
    return done
