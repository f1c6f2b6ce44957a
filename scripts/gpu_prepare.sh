#!/usr/bin/env bash
# Builds .gpu/, what scripts/gpu_run.py --setup .gpu installs on a bare GPU machine that has torch
# (and numpy, scipy, h5py, matplotlib, tqdm, safetensors) but not wavefront's other dependencies.
#
#   bash scripts/gpu_prepare.sh OFFICIAL_REPO      # OFFICIAL_REPO: a checkout of the official AdaFortiTran code
#
# Writes, in the repository's root (.gpu/ is git-ignored; about 45 MB, under the 64 MiB a device call carries
# together with the working tree):
#   .gpu/whl/*.whl          sionna-no-rt and pydantic with the dependencies the machine lacks, for CPython 3.12
#   .gpu/deepwave.tar.xz    deepwave's wheel unpacked and xz-compressed (the wheel is 100 MB, its .so 350 MB unpacked)
#   .gpu/official/          the official code's src/ and config/ (never committed here)
# Then, with a device lent (one call; the archive is one file, as $OUT returns at most 8):
#   python3 scripts/gpu_run.py --out /tmp/gpu-out --setup .gpu; tar czf $OUT/gpu-out.tgz -C /tmp gpu-out
# carrying .gpu.
set -euo pipefail
official=${1:?usage: bash scripts/gpu_prepare.sh OFFICIAL_REPO (a checkout of the official AdaFortiTran code)}
[ -d "$official/src/models" ] || { echo "$official: no src/models (not the official AdaFortiTran code)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.gpu"
mkdir -p "$dest/whl"
# The device runs CPython 3.12 on x86-64 Linux; the versions are those this project pins or was tested with.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$dest/whl" sionna-no-rt==2.2.0 importlib-resources==7.1.0 pydantic==2.14.4 pydantic-core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 deepwave==0.1.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mv "$dest"/whl/deepwave-*.whl "$work/"
(cd "$work" && python3 -m zipfile -e deepwave-*.whl unpacked && tar cf - -C unpacked . | xz -T0 -9 > "$dest/deepwave.tar.xz")
rm -rf "$dest/official"
mkdir -p "$dest/official"
cp -r "$official/src" "$official/config" "$dest/official/"
find "$dest/official" -name __pycache__ -prune -exec rm -rf {} +
du -sh "$dest" "$dest"/*
