#!/usr/bin/env bash
# Keep a nice'd training run going in the background (every session should):
#
#   [MINUTES=120] [RUN=NAME [FROM=CKPT]] scripts/train_background.sh MODEL [extra trainer flags]
#
# Resumes runs/RUN.pt (RUN defaults to MODEL) if it exists (a new intra run starts from the
# shipped weights, or from a copy of FROM), logs to runs/RUN.log, and refuses to start a
# second run on the same checkpoint. A finishing run before shipping (weights/README.md):
#   RUN=intra_fin FROM=runs/intra.pt scripts/train_background.sh intra --lr 1e-5 ...
# Stop it with `kill <pid>` (printed below): it checkpoints and exits within a step.
set -euo pipefail
MODEL=${1:?usage: [MINUTES=120] scripts/train_background.sh MODEL [trainer flags]}
shift
MINUTES=${MINUTES:-120}
RUN=${RUN:-$MODEL}
cd "$(dirname "$0")/.."
mkdir -p runs
CKPT=runs/$RUN.pt
LOG=runs/$RUN.log
PIDFILE=runs/$RUN.pid
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "error: run $RUN is already going (pid $(cat "$PIDFILE"), log $LOG)" >&2
  exit 1
fi
if [ -n "${FROM:-}" ] && [ ! -f "$CKPT" ]; then
  # fork: a copy, so that the run FROM belongs to (maybe still going) is never touched;
  # copied under a temporary name first, so a failed copy is not taken for a checkpoint
  [ -f "$FROM" ] || { echo "error: $FROM: no such checkpoint" >&2; exit 1; }
  cp "$FROM" "$CKPT.fork" && mv "$CKPT.fork" "$CKPT"
  echo "forked $FROM -> $CKPT"
fi
INIT_ARGS=()
if [ ! -f "$CKPT" ] && [ "$MODEL" = intra ]; then INIT_ARGS=(--init elic_small_vr); fi
# A trainer that dies of a signal it did not ask for (SIGSEGV 139, SIGABRT 134: seen once inside
# libtorch, not reproducible) is resumed from its checkpoint, up to 3 times; a clean stop or an
# error exit is final. `kill PID` reaches the trainer through the wrapper's trap.
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
T_END=$(( $(date +%s) + MINUTES * 60 ))
nohup nice -n 19 bash -c '
  t_end=$1; shift
  trap "kill -TERM \$child 2>/dev/null; wait \$child; exit 0" TERM INT
  for try in 1 2 3 4; do
    left=$(( (t_end - $(date +%s)) / 60 )); [ "$left" -ge 1 ] || exit 0
    "$@" --minutes "$left" & child=$!
    wait $child; rc=$?
    case $rc in 134|139) echo "trainer died (exit $rc); resuming its checkpoint" ;; *) exit $rc ;; esac
  done' _ "$T_END" ${PYTHON:-python} -m svcodec.train "$MODEL" --ckpt "$CKPT" --device cpu "${INIT_ARGS[@]}" "$@" \
  >>"$LOG" 2>&1 &
echo $! >"$PIDFILE"
echo "started $RUN ($MODEL, pid $!, $MINUTES min, checkpoint $CKPT, log $LOG)"
