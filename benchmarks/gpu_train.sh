#!/usr/bin/env bash
# Train a preset on a lent GPU machine for a fixed wall time and bring back the model as a small
# file (`cwworld export`), its metrics and config, in one call. The machine has no network: the
# dependencies its image lacks travel as wheels in .whl/ (see gpu_suite.sh).
#
#   OUT=/tmp/gpu PRESET=mmnist_small MINUTES=8 bash benchmarks/gpu_train.sh train.batch_size=64
#   QUICK=1 DEVICE=cpu OUT=/tmp/gpu bash benchmarks/gpu_train.sh   # a dry run on CPU
#
# The update is one CUDA graph (train.cuda_graph, metrics read every 50 steps). Should the graphed
# run stop with an error, the same run directory is resumed without the graph for the minutes left
# (train.max_minutes counts training time over resumes), so a failure costs at most its minutes.
# Files in $OUT: model_fp32.pt (exported weights, float32), train.log, metrics.jsonl, config.yaml,
# env.txt, samples_last.gif (the run's last predictions).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PRESET=${PRESET:-mmnist_small}
MINUTES=${MINUTES:-8}
RUN=${RUN:-/tmp/gpu_run}
START=$(date +%s)
DEADLINE=$(( START + ${SECONDS_TOTAL:-$(( ${MINUTES%.*} * 60 + 150 ))} ))  # both tries end by then
mkdir -p "$OUT"

if [ -d .whl ] && [ "$DEVICE" = cuda ]; then  # the missing dependencies, and the package laid out as installed
    bash benchmarks/device_site.sh /tmp/site || exit 2
    export PYTHONPATH=/tmp/site
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/env.txt"
fi
cd /tmp || exit 2
python3 -c "import torch, cwworld; print('torch', torch.__version__, 'cwworld', cwworld.__file__)" >> "$OUT/env.txt" 2>&1
nproc >> "$OUT/env.txt"

SIZE=()
[ "$QUICK" = 1 ] && SIZE=(train.batch_size=2 train.seq_len=16 model.cnn_depth=4 data.num_videos=8)
COMMON=(train.device=$DEVICE train.sync_every=50 train.log_every=100 train.save_every=500
        train.sample_every=1000000 train.tensorboard=false data.workers=${WORKERS:-4} "${SIZE[@]}" "$@")
train() {  # train MINUTES [OVERRIDES...]
    local minutes=$1; shift
    echo "== $(date +%T) train $PRESET for $minutes min: $*" | tee -a "$OUT/train.log"
    local left=$(( DEADLINE - $(date +%s) ))
    [ "$left" -lt 30 ] && { echo "no time left to train" | tee -a "$OUT/train.log"; return 1; }
    timeout "$left" python3 -m cwworld.cli train --config "$PRESET" --run-dir "$RUN" \
        --no-progress "${COMMON[@]}" train.max_minutes=$minutes "$@" >> "$OUT/train.log" 2>&1
}
if [ "$DEVICE" = cuda ]; then train "$MINUTES" train.cuda_graph=true; RC=$?; else RC=1; fi
if [ "$RC" != 0 ]; then  # resume without the graph (a CPU dry run starts here)
    [ -f "$OUT/train.log" ] && tail -n 30 "$OUT/train.log"
    train "$MINUTES" train.cuda_graph=false
    RC=$?
fi
echo "== $(date +%T) training exit $RC after $(( $(date +%s) - START )) s" | tee -a "$OUT/train.log"
tail -n 8 "$OUT/train.log"
python3 -m cwworld.cli export "$RUN" "$OUT/model_fp32.pt" --fp32 >> "$OUT/train.log" 2>&1 &&
    echo "exported $(du -h "$OUT/model_fp32.pt" | cut -f1)"
cp "$RUN/metrics.jsonl" "$RUN/config.yaml" "$OUT/" 2>/dev/null
LAST=$(ls "$RUN"/samples/*.gif 2>/dev/null | tail -n 1)
[ -n "$LAST" ] && cp "$LAST" "$OUT/samples_last.gif"
echo "== done after $(( $(date +%s) - START )) s" | tee -a "$OUT/train.log"
