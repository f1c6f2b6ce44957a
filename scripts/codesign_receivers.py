"""Receiver co-design recipe: learned vs fixed K-receiver arrays (line, source patch) for source localisation, 5 seeds.

Same as ``wavefront codesign receivers``; writes results.json, receivers_seed*.png and
checkpoint_seed*.pt under --out (default runs/receivers).

    python scripts/codesign_receivers.py --receivers 8 --epochs 30
"""
import sys

from wavefront.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", "runs/receivers"]
    raise SystemExit(main(["codesign", "receivers", *args]))
