#!/usr/bin/env bash
# Every GPU check of the pipeline in one command, for a machine with an NVIDIA GPU:
#
#   benchmarks/gpu_check.sh [OUTDIR] [ARCHIVE.tgz]   (default: gpu-check; GPU_CHECK_SECONDS=600)
#
# About 9 minutes on an H200 with 16 cores (2026-12-04); README "On a GPU" has the figures.
# It installs the project from this working tree (offline from the wheels in $WHEELS, default
# .whl/, where that folder exists; else into the current Python where ptxseg is not importable),
# then runs each step below under its own time limit, all within GPU_CHECK_SECONDS, and writes
# every figure and log into OUTDIR (steps.txt: each step's exit status and seconds), and all of it
# into ARCHIVE.tgz where given (one file to bring back):
#   tiny-dag   configs/tiny.yaml end to end with runtime.device: cuda and profiles/local (GPU
#              rules ask for gpu: 1), to a validated submission; its scores.csv and submission.csv
#   resume     benchmarks/gpu_resume.py: a segmenter fold killed after its first epoch, rerun
#              (run beside tiny-dag: both are small jobs)
#   predict    benchmarks/bench_onnx.py on the tiny run's ensemble: PyTorch on the GPU, and
#              onnxruntime's CUDA provider where the installed onnxruntime has it
#   memory     benchmarks/gpu_memory.py: peak GPU memory of every training job of configs/full.yaml
#   bench      benchmarks/bench_gpu.py at 512 and 1024: bf16 + channels_last against fp32 under the
#              EfficientNet preset (EMA, drop path), MFU, and the loader's workers
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=$(mkdir -p "${1:-gpu-check}" && cd "${1:-gpu-check}" && pwd)
ARCHIVE=${2:-}
cd "$ROOT"
export NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda} # cpu: a dry rehearsal of this script on a machine without a GPU
WHEELS=${WHEELS:-.whl}
DEADLINE=$(($(date +%s) + ${GPU_CHECK_SECONDS:-600}))
: >"$OUT_DIR/steps.txt"

# step NAME LIMIT COMMAND...: COMMAND under `timeout` (LIMIT seconds, cut to what is left before
# the deadline), its output in NAME.log, its status and time in steps.txt.
step() {
  local name=$1 limit=$2 start left rc
  shift 2
  start=$(date +%s)
  left=$((DEADLINE - start - 5))
  ((left < limit)) && limit=$left
  if ((limit < 10)); then
    echo "$name skipped: no time left" | tee -a "$OUT_DIR/steps.txt"
    return 1
  fi
  timeout -k 10 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $(($(date +%s) - start))s (limit ${limit}s)" | tee -a "$OUT_DIR/steps.txt"
  return $rc
}

# Installs in this shell (a function, so not under `timeout`: pip has its own limits).
install() {
  if [[ -d $WHEELS ]]; then
    # No registry on the machine: the dependencies it lacks come as wheels, beside its own packages.
    local site=${TMPDIR:-/tmp}/ptxseg-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$WHEELS"/*.whl || return 1
    export PYTHONPATH="$site:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
  elif ! "$PY" -c "import ptxseg" 2>/dev/null; then
    "$PY" -m pip install -q -e "$ROOT" || return 1
  fi
  "$PY" -c "import ptxseg, snakemake, segmentation_models_pytorch, albumentations; print('ptxseg', ptxseg.__file__)"
}

{
  date -u +%FT%TZ
  git -C "$ROOT" rev-parse --short HEAD 2>/dev/null
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nproc
  free -g | head -2
} >"$OUT_DIR/machine.txt" 2>&1
started=$(date +%s)
install >"$OUT_DIR/install.log" 2>&1
rc=$?
echo "install rc=$rc $(($(date +%s) - started))s" | tee -a "$OUT_DIR/steps.txt"
((rc == 0)) || exit 1
"$PY" - >>"$OUT_DIR/machine.txt" 2>&1 <<'EOF'
import onnxruntime, torch, timm, segmentation_models_pytorch as smp, snakemake
print("python", __import__("sys").version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version(), "timm", timm.__version__, "smp", smp.__version__,
      "snakemake", snakemake.__version__)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
EOF

# The tiny DAG on the GPU through the local profile, and the resume check beside it.
cat >"$OUT_DIR/gpu.yaml" <<EOF
runtime: {device: $DEVICE, num_workers: 2}
resources:
  pretrain: {gpu: 1}
  train: {gpu: 1}
  predict: {gpu: 1}
EOF
TINY=${TMPDIR:-/tmp}/ptxseg-gpu-tiny
rm -rf "$TINY"
step resume 240 "$PY" benchmarks/gpu_resume.py "${TMPDIR:-/tmp}/ptxseg-gpu-resume" \
  --json "$OUT_DIR/resume.json" --device "$DEVICE" &
resume_pid=$!
step tiny-dag 300 "$PY" -m snakemake --snakefile "$ROOT/Snakefile" --directory "$TINY" \
  --profile profiles/local --configfile configs/tiny.yaml "$OUT_DIR/gpu.yaml"
tiny_rc=$?
wait $resume_pid
for file in ensemble/scores.csv ensemble/ensemble.json submission.csv; do
  cp "$TINY/results/$file" "$OUT_DIR/tiny-$(basename "$file")" 2>/dev/null
done
cp -r "$TINY/results/benchmarks" "$TINY/results/logs" "$OUT_DIR/" 2>/dev/null
grep -rh "device: \|GPU" "$TINY"/results/logs 2>/dev/null | sed 's/^[0-9-]* [0-9:,]* //' | sort |
  uniq -c >"$OUT_DIR/tiny-device-lines.txt"

# Prediction on the GPU with the tiny run's ensemble (PyTorch; onnxruntime's CUDA provider if any).
if ((tiny_rc == 0)); then
  backends=(torch)
  if "$PY" -c "import onnxruntime, sys; sys.exit('CUDAExecutionProvider' not in onnxruntime.get_available_providers())"; then
    backends+=(onnx)
  fi
  step predict 120 "$PY" benchmarks/bench_onnx.py "$TINY/results" --images 48 --batch-size 8 \
    --device "$DEVICE" --providers CUDAExecutionProvider CPUExecutionProvider \
    --backends "${backends[@]}" --json "$OUT_DIR/predict.json"
fi

step memory 120 "$PY" benchmarks/gpu_memory.py --config configs/full.yaml \
  --csv "$OUT_DIR/gpu_memory.csv"
step bench 240 "$PY" benchmarks/bench_gpu.py --sizes 512 1024 --batch 16 8 --steps 15 \
  --cudnn-benchmark --json "$OUT_DIR/bench_gpu.json"
nvidia-smi >"$OUT_DIR/nvidia-smi-end.txt" 2>&1
cat "$OUT_DIR/steps.txt"
[[ -n $ARCHIVE ]] && tar czf "$ARCHIVE" -C "$(dirname "$OUT_DIR")" "$(basename "$OUT_DIR")"
# The exit status: how many steps failed or were skipped.
exit "$(grep -c 'rc=[1-9]\|skipped' "$OUT_DIR/steps.txt")"
