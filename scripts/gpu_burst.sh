#!/usr/bin/env bash
# One training burst, as ONE command, on any machine (made for a lent CUDA machine):
#
#   OUT=/some/dir scripts/gpu_burst.sh MODEL [extra trainer flags]
#   OUT=/some/dir scripts/gpu_burst.sh ablation     (paper Fig. 5a: every variant, equal steps)
#   OUT=/some/dir scripts/gpu_burst.sh intra+inter  (both at once on the one GPU, see below)
#
# 1. installs the carried wheels (runs/wheels/*.whl) when the trainer's imports are missing,
# 2. trains MODEL on the pack (runs/pack) from the carried checkpoint ($CKPT, if present),
#    else from the committed weights (--init), until BUDGET_MIN minutes of wall time
#    since the script started are nearly used (a reserve is kept for export and copying),
# 3. exports the weights and copies checkpoint, weights and log to $OUT.
#
# Environment (defaults for a CUDA burst):
#   OUT         where results go (required)
#   DEVICE      cuda | cpu                  (cuda)
#   BUDGET_MIN  wall minutes for the whole script   (8.5)
#   MINUTES     training minutes; overrides the BUDGET_MIN arithmetic
#   DATA        data dir or pack            (runs/pack)
#   CKPT        checkpoint to resume/write  (runs/burst/MODEL.pt)
#   INIT        weights for a new run       (elic_small_vr for intra, hdc_small_vr for inter)
#   BATCH CROP LR   trainer batch (per GPU), crop and learning rate (cuda: 32, 256, 1e-4)
#   FINISH      share of the training minutes spent at LR/10 at the end (0.25; 0: none).
#               Why: at a constant LR the weights wander around the optimum; 2,500 intra
#               steps at 1e-5 after 1e-4 gained 12-18 % BD-rate on every dev clip (CPU, 5th
#               session), more than the 8,000 steps at 1e-4 before them.
#   PYTHON      interpreter                 (python3)
#   NPROC       processes (GPUs) for torchrun (1: plain python)
#   COPY_CKPT   1: copy the checkpoint to $OUT (default); 0: weights and log only
#   CODEC_CHECK 1: first run scripts/gpu_codec_check.py (the sample encoded and decoded on the CPU
#               and on this device, ~1 min; $OUT/codec_check.json); needs constriction, carried as
#               a wheel in runs/wheels beside the others. 0: no check (default)
#   INTRA_ARGS, INTER_ARGS   trainer flags for that model in intra+inter (after the others: they win)
# intra+inter trains both models at the same time, each in its own process with its results in
# $OUT/intra and $OUT/inter and without checkpoints (at most 8 files come back). Why: the P-frame
# trainer computes optical flow on the CPU and the intra trainer decodes crops in loader
# processes, so neither keeps an H100 busy alone, and a lent GPU is rarer than its minutes.
# Checkpoints above 15 MiB are split into 15 MiB parts in $OUT (its files come back only up
# to 16 MiB each): `cat MODEL.pt.part* > MODEL.pt` joins them.
set -euo pipefail
T0=$(date +%s)
MODEL=${1:?usage: OUT=DIR scripts/gpu_burst.sh MODEL [trainer flags]}
shift
: "${OUT:?set OUT to the directory the results go to}"
DEVICE=${DEVICE:-cuda}
BUDGET_MIN=${BUDGET_MIN:-8.5}
DATA=${DATA:-runs/pack}
CKPT=${CKPT:-runs/burst/$MODEL.pt}
PYTHON=${PYTHON:-python3}
NPROC=${NPROC:-1}
if [ "$DEVICE" = cuda ]; then BATCH=${BATCH:-32}; CROP=${CROP:-256}; THREADS=${THREADS:-4};
else BATCH=${BATCH:-8}; CROP=${CROP:-128}; THREADS=${THREADS:-2}; fi
LR=${LR:-1e-4}
FINISH=${FINISH:-0.25}
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"  # for intra+inter, which runs itself once per model
cd "$(dirname "$0")/.."
COPY_CKPT=${COPY_CKPT:-1}
mkdir -p "$OUT" "$(dirname "$CKPT")"
PAIR=0; [[ "$MODEL" == *+* ]] && PAIR=1
LOG="$OUT/$MODEL.burst.log"
# in intra+inter each model's process keeps its own log ('+' is not a name that comes back)
[ "$PAIR" = 1 ] || exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

echo "== burst $MODEL on $DEVICE: $(date -u +%FT%TZ), host $(hostname), $($PYTHON --version 2>&1)"
if [ "$DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; fi
[ -d "$DATA" ] || { echo "error: $DATA: no data dir or pack (build it: python -m svcodec.train.pack --out runs/pack)"; exit 2; }

# 1. wheels, only when an import the trainer (or the codec check) needs is missing
CODEC_CHECK=${CODEC_CHECK:-0}
NEEDS="compressai, pytorch_msssim"; [ "$CODEC_CHECK" = 1 ] && NEEDS="$NEEDS, constriction"
if ! $PYTHON -c "import $NEEDS" >/dev/null 2>&1; then
  ls runs/wheels/*.whl >/dev/null 2>&1 || { echo "error: compressai is not installed and runs/wheels/ has no wheels"; exit 2; }
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/svc_site runs/wheels/*.whl
  export PYTHONPATH=/tmp/svc_site${PYTHONPATH:+:$PYTHONPATH}
  echo "installed carried wheels: $(cd runs/wheels && ls *.whl | tr '\n' ' ')"
fi
$PYTHON -c "import torch, compressai; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'compressai', compressai.__version__)"
if [ "$CODEC_CHECK" = 1 ]; then  # before training, and only once (the pair's processes get 0)
  $PYTHON scripts/gpu_codec_check.py --out "$OUT" --device "$DEVICE" || echo "codec check: exit $? (see above)"
  export CODEC_CHECK=0
fi

# 2a. several models at once: one process each, the budget that is left shared in time
if [ "$PAIR" = 1 ]; then
  LEFT=$($PYTHON -c "import time; print(round($BUDGET_MIN - (time.time() - $T0) / 60, 2))")
  PIDS=()
  for M in ${MODEL//+/ }; do
    EXTRA_VAR="${M^^}_ARGS"
    # shellcheck disable=SC2086  # the per-model flags are a word list
    OUT="$OUT/$M" COPY_CKPT=0 BUDGET_MIN="$LEFT" CKPT="runs/burst/$M.pt" "$SELF" "$M" "$@" ${!EXTRA_VAR:-} &
    PIDS+=($!)
  done
  RC=0
  for P in "${PIDS[@]}"; do wait "$P" || RC=$?; done
  echo "== $MODEL done in $(( $(date +%s) - T0 )) s (exit $RC); \$OUT holds: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
  exit "$RC"
fi

# 2b. the ablation: the full model trains first for its share of the budget, every other
#     variant then the same number of steps; only the weights (7 files) and the log come
#     back, the evaluation runs on the CPU afterwards (the log prints its command).
if [ "$MODEL" = ablation ]; then
  VARIANTS=${VARIANTS:-backbone,fer-only,em-only,full,literal,noscore,noshift}
  NVAR=$(echo "$VARIANTS" | tr ',' '\n' | grep -c .)
  # the full model is the slowest; the others take about as long each (less without HDC-FER)
  PER=$($PYTHON -c "import time; print(round(max(0.2, ($BUDGET_MIN - (time.time() - $T0) / 60 - 1.0) / ($NVAR + 0.5 * $NVAR) ), 2))")
  echo "ablation on $DEVICE: $NVAR variants, the full model trains $PER min"
  $PYTHON scripts/ablation.py --skip-eval --out runs/burst/ablation --copy-to "$OUT" --device "$DEVICE" \
    --variants "$VARIANTS" --minutes-per-variant "$PER" --threads "$THREADS" --data "$DATA" \
    -- --batch "$BATCH" --crop "$CROP" --lr "$LR" "$@"
  # (no extra file: 7 weights + this log is all that can come back)
  echo "steps per variant: $(cat runs/burst/ablation/steps.txt); evaluate with: python scripts/ablation.py --skip-train --out DIR_WITH_THE_WEIGHTS --steps $(cat runs/burst/ablation/steps.txt)"
  echo "== done in $(( $(date +%s) - T0 )) s; \$OUT holds: $(cd "$OUT" && ls | tr '\n' ' ')"
  exit 0
fi

# 2. train
INIT_ARGS=()
if [ -f "$CKPT" ]; then
  echo "resuming $CKPT"
else
  INIT=${INIT:-$(case "$MODEL" in intra) echo elic_small_vr ;; inter) echo hdc_small_vr ;; esac)}
  [ -n "$INIT" ] && INIT_ARGS=(--init "$INIT")
fi
if [ -z "${MINUTES:-}" ]; then
  # what is left of the budget, less a reserve for export/copy (1 min) and start-up (0.5 min)
  MINUTES=$($PYTHON -c "import time; print(round(max(0.2, $BUDGET_MIN - (time.time() - $T0) / 60 - 1.5), 2))")
fi
LAUNCH=($PYTHON -m svcodec.train)
[ "$NPROC" -gt 1 ] && LAUNCH=($PYTHON -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m svcodec.train)
# the main phase at LR, then the finishing phase at LR/10 (the second call resumes the first's
# checkpoint, optimizer state included)
read -r MAIN_MIN FIN_MIN FIN_LR < <($PYTHON -c "m, f, lr = $MINUTES, $FINISH, $LR; print(round(m * (1 - f), 2), round(m * f, 2), lr / 10)")
train() {  # minutes lr [extra flags]
  local minutes=$1 lr=$2; shift 2
  echo "training $MODEL for $minutes min: batch $BATCH x ${CROP}px, lr $lr, data $DATA ${INIT_ARGS[*]}"
  "${LAUNCH[@]}" "$MODEL" --ckpt "$CKPT" --minutes "$minutes" --device "$DEVICE" --data "$DATA" \
    "${INIT_ARGS[@]}" --batch "$BATCH" --crop "$CROP" --lr "$lr" --threads "$THREADS" \
    --log-seconds 20 --save-minutes 2 "$@"
}
if ! awk "BEGIN { exit !($FINISH > 0) }"; then
  train "$MINUTES" "$LR" "$@"
else
  train "$MAIN_MIN" "$LR" "$@"
  INIT_ARGS=()  # the checkpoint exists now
  train "$FIN_MIN" "$FIN_LR" "$@"
fi

# 3. export and copy
if [ "$MODEL" = intra ]; then
  $PYTHON -m svcodec.train.export "$CKPT" "$OUT/elic_small_vr.safetensors" --data "$DATA" \
    --note "gpu_burst.sh on $DEVICE, $(date -u +%F)"
elif [ "$MODEL" = inter ]; then
  $PYTHON -m svcodec.train.export_inter "$CKPT" "$OUT/hdc_small_vr.safetensors" \
    --note "gpu_burst.sh on $DEVICE, $(date -u +%F)"
else
  echo "no exporter for $MODEL yet: only the checkpoint is copied"
fi
SIZE=$(stat -c %s "$CKPT")
if [ "$COPY_CKPT" = 0 ]; then
  echo "checkpoint $CKPT ($SIZE bytes) stays on this machine (COPY_CKPT=0)"
else
  if [ "$SIZE" -gt $((90 * 1024 * 1024)) ]; then
    # at most 8 files come back: beside the weights and the log, six 15 MiB parts. A larger
    # checkpoint (the P-frame model's Adam moments) comes back without its optimizer state;
    # resuming from it starts the optimizer afresh.
    SLIM="${CKPT%.pt}.model_only.pt"
    $PYTHON -c "import torch, sys; s = torch.load(sys.argv[1], map_location='cpu', weights_only=False); [s.pop(k, None) for k in ('opt', 'aux_opt')]; torch.save(s, sys.argv[2])" "$CKPT" "$SLIM"
    echo "checkpoint $SIZE bytes: copying it without the optimizer state ($(stat -c %s "$SLIM") bytes)"
    CKPT=$SLIM; SIZE=$(stat -c %s "$CKPT")
  fi
  if [ "$SIZE" -gt $((15 * 1024 * 1024)) ]; then
    split -b 15M -d -a 1 "$CKPT" "$OUT/$(basename "$CKPT").part"
    echo "checkpoint $SIZE bytes split into $(ls "$OUT" | grep -c '\.part') parts (cat $(basename "$CKPT").part* > $(basename "$CKPT"))"
  else
    cp "$CKPT" "$OUT/"
  fi
fi
echo "== done in $(( $(date +%s) - T0 )) s; \$OUT holds: $(cd "$OUT" && ls | tr '\n' ' ')"
