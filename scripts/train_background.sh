#!/usr/bin/env bash
# Keep a nice'd training run going in the background (every session should):
#
#   [MINUTES=120] scripts/train_background.sh MODEL [extra trainer flags]
#
# Resumes runs/MODEL.pt if it exists (a new intra run starts from the shipped weights),
# logs to runs/MODEL.log, and refuses to start a second run on the same checkpoint.
# Stop it with `kill <pid>` (printed below): it checkpoints and exits within a step.
set -euo pipefail
MODEL=${1:?usage: [MINUTES=120] scripts/train_background.sh MODEL [trainer flags]}
shift
MINUTES=${MINUTES:-120}
cd "$(dirname "$0")/.."
mkdir -p runs
CKPT=runs/$MODEL.pt
LOG=runs/$MODEL.log
PIDFILE=runs/$MODEL.pid
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "error: a run of $MODEL is already going (pid $(cat "$PIDFILE"), log $LOG)" >&2
  exit 1
fi
INIT_ARGS=()
if [ ! -f "$CKPT" ] && [ "$MODEL" = intra ]; then INIT_ARGS=(--init elic_small_vr); fi
PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore nohup nice -n 19 ${PYTHON:-python} -m svcodec.train "$MODEL" \
  --ckpt "$CKPT" --minutes "$MINUTES" --device cpu "${INIT_ARGS[@]}" "$@" >>"$LOG" 2>&1 &
echo $! >"$PIDFILE"
echo "started $MODEL (pid $!, $MINUTES min, checkpoint $CKPT, log $LOG)"
