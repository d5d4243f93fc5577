#!/usr/bin/env bash
# Everything a GPU user runs, measured in one command that fits in 10 minutes on a bare GPU machine.
#
#   bash scripts/gpu_check.sh            # writes $OUT/gpu_report.md (OUT defaults to gpu_report/)
#
# What it needs beside this repository, and how it travels to an offline machine:
#   - Photos: the tutorial's layout in .data/cats_dogs_tutorial/ (an ignored folder), e.g.
#       mkdir -p .data && cp -r ../shared/data/cats_dogs_tutorial .data/
#     or set GPU_CHECK_DATA to another folder with train.csv and val.csv.
#   - Python packages the machine may lack (SwanLab, scikit-learn, psutil, …): wheels in .whl/ (an ignored
#     folder), made here with `bash scripts/gpu_wheels.sh` and installed by this script with pip --no-index.
#   Ignore both folders (echo /.data/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude) and carry them.
# Without them it stops at once with one line saying what is missing, not a traceback.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-gpu_report}
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/gpu_report.md"
DATA=${GPU_CHECK_DATA:-.data/cats_dogs_tutorial}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing the wheels in .whl/ failed (see pip's message above)"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

"$PY" - <<'PYEOF' || exit 1
import importlib, sys
missing = []
for module in ("torch", "torchvision", "numpy", "PIL", "tqdm", "matplotlib", "psutil", "swanlab", "sklearn"):
    try:
        importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 -- a broken install counts as missing too
        missing.append(f"{module} ({type(error).__name__})")
if missing:
    sys.exit("gpu_check: missing Python packages: " + ", ".join(missing)
             + ". Make wheels with `bash scripts/gpu_wheels.sh` and carry .whl/.")
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: PyTorch sees no CUDA GPU here (torch " + torch.__version__ + ").")
print("gpu_check: " + torch.cuda.get_device_name(0) + ", torch " + torch.__version__)
PYEOF
[ -f "$DATA/train.csv" ] && [ -f "$DATA/val.csv" ] || {
  echo "gpu_check: no photos at $DATA (train.csv and val.csv). Copy the tutorial's photos there and carry the folder."
  exit 1
}

{
  echo "# gpu_check.sh, $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
  echo
} > "$REPORT"

# step NAME TIMEOUT COMMAND...: runs one measurement, appends its output to the report, and goes on if it fails.
step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  { echo "## $name"; echo; echo '```'; echo "\$ $*"; } >> "$REPORT"
  timeout "$limit" "$@" 2>&1 | grep -v '^\s*$' | tail -n 60 >> "$REPORT"
  local status=${PIPESTATUS[0]}
  { echo '```'; [ "$status" -ne 0 ] && echo "**failed: exit $status**"; echo; } >> "$REPORT"
}

BENCH=(bench/bench.py --data-dir "$DATA" --device cuda --batch-size 64 --image-size 224 --steps 40 --warmup 5 --freeze-epochs 0)
step "training bench, batch 64, 224², bf16, channels-last" 150 "$PY" "${BENCH[@]}" --photos 40
step "training bench, the same with torch.compile" 200 "$PY" "${BENCH[@]}" --photos 30 --train-compile
step "loader bench, batch 64, 256²" 90 "$PY" bench/bench.py --data-dir "$DATA" --device cuda --loader --batch-size 64
RUN=(--data-dir "$DATA" --weights none --swanlab-mode disabled --output-dir "$OUT_DIR/run")
step "train.py, 2 epochs on the tutorial photos (bf16)" 120 "$PY" train.py "${RUN[@]}" --epochs 2
# GPUs without bf16 (before Ampere) train in fp16 with a GradScaler: the same run with bf16 reported missing.
step "train.py, 1 epoch in fp16 with GradScaler" 90 "$PY" -c "import runpy, sys, torch
torch.cuda.is_bf16_supported = lambda *args, **kwargs: False
sys.argv = ['train.py'] + sys.argv[1:]
runpy.run_path('train.py', run_name='__main__')" "${RUN[@]}" --epochs 1 --output-dir "$OUT_DIR/run-fp16"
step "evaluate.py on val.csv" 60 "$PY" evaluate.py --checkpoint "$OUT_DIR/run/best_checkpoint.pth" \
  --csv "$DATA/val.csv" --out "$OUT_DIR/eval" --device cuda
echo "gpu_check: wrote $REPORT"
