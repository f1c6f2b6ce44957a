"""Layout co-design recipe: learned vs regular and foveated 16x16 sensors on the stripe-glyph task, 5 seeds.

Same as ``wavefront codesign layout``; writes results.json, layout_seed*.png and
checkpoint_seed*.pt under --out (default runs/layout_<layout>, runs/layout_<task>_<layout> for
another task than stripe-glyph).

    python scripts/codesign_layout.py --layout rectangular --epochs 30 --threads 1
    python scripts/codesign_layout.py --task two-site-glyph --layout rectangular --epochs 30 --threads 1

Results depend on the torch thread count (the training path does); results.json records it.
"""
import sys

from wavefront.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        layout = args[args.index("--layout") + 1] if "--layout" in args else "rectangular"
        task = args[args.index("--task") + 1] if "--task" in args else "stripe-glyph"
        args += ["--out", f"runs/layout_{layout}" if task == "stripe-glyph" else f"runs/layout_{task}_{layout}"]
    raise SystemExit(main(["codesign", "layout", *args]))
