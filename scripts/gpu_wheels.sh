#!/usr/bin/env bash
# Wheels for scripts/gpu_check.sh on a bare, offline GPU machine (Python 3.12, x86-64, PyTorch already there):
# the packages train.py, evaluate.py and bench.py import beyond PyTorch, with their own dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl "swanlab==0.10.3" "scikit-learn==1.9.1" psutil
rm -f .whl/torch-*.whl .whl/torchvision-*.whl .whl/nvidia_*.whl .whl/triton-*.whl  # the machine's own stay
echo "wheels in .whl/: $(ls .whl | wc -l) files, $(du -sh .whl | cut -f1)"
