#!/usr/bin/env bash
# Wheels for scripts/gpu_check.sh on a bare, offline GPU machine (Python 3.12, x86-64, PyTorch already there):
# the packages train.py, evaluate.py and bench/bench.py import beyond PyTorch, with their own dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
# Some of SwanLab's dependencies are published as source only: build those into wheels first (pure Python).
python3 -m pip wheel -q --no-deps -w .whl pwinput
python3 -m pip download -q --only-binary=:all: --find-links .whl --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl "swanlab==0.10.3" "scikit-learn==1.9.1" psutil
# What the lent GPU machines already have stays theirs (device tool's KINDS.md), and the rest fits its 64 MiB.
for have in torch torchvision nvidia_ triton numpy scipy scikit_learn psutil protobuf pyyaml requests urllib3 \
  certifi idna charset_normalizer click cloudpickle jinja2 markupsafe joblib threadpoolctl markdown_it_py mdurl \
  narwhals pygments rich setuptools simplejson typing_extensions wrapt; do
  rm -f .whl/"$have"-*.whl
done
echo "wheels in .whl/: $(ls .whl | wc -l) files, $(du -sh .whl | cut -f1)"
