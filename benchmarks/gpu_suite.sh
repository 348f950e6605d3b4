#!/usr/bin/env bash
# The GPU measurements of the README in one call (a lent GPU machine has no network: the
# dependencies the image lacks travel as wheels in .whl/). Writes logs and JSON under $OUT.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_suite.sh            # on the GPU machine
#   QUICK=1 DEVICE=cpu OUT=/tmp/gpu bash benchmarks/gpu_suite.sh   # a dry run of every step on CPU
#
# Steps (each under its own time limit, so that one slow step cannot take the others' time):
# the environment; the training step of the paper's mmnist and minerl_navigate models with each
# option (fp32 NCHW, channels-last, bf16, compile_parts), the loss of the initial weights with each;
# host reads per training / acting step (and the CUDA syncs the driver reports) and the step time
# with train.sync_every 1 vs 50; the step eager vs one CUDA graph (train.cuda_graph); imagination and planning speed (plain and compiled into CUDA graphs).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
DEADLINE=$(( $(date +%s) + ${SUITE_SECONDS:-560} ))  # steps that would end after it are skipped
REPO=$(pwd)
mkdir -p "$OUT"
log() { echo "== $(date +%T) $*" | tee -a "$OUT/suite.log"; }
run() {  # run LIMIT NAME CMD...: output to $OUT/NAME.log, the tail shown
    local limit=$1 name=$2; shift 2
    local left=$(( DEADLINE - $(date +%s) ))
    if [ "$left" -lt 20 ]; then log "$name: skipped (${left}s left)"; return 0; fi
    [ "$limit" -gt "$left" ] && limit=$left
    log "$name (limit ${limit}s)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log" | cut -c1-220
    log "$name: exit $rc"
    return 0
}

if [ -d .whl ] && [ "$DEVICE" = cuda ]; then  # the missing dependencies, and the package laid out as installed
    bash benchmarks/device_site.sh /tmp/site || exit 2
    export PYTHONPATH=/tmp/site
fi
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/env.txt"
fi
cd /tmp || exit 2
python3 - <<EOF 2>&1 | tee -a "$OUT/env.txt" || exit 3
import torch, cwworld, cwworld.agents, cwworld.envs
from cwworld.train import Trainer
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", "$DEVICE",
      torch.cuda.get_device_name() if "$DEVICE" == "cuda" else "")
cfg = cwworld.load_config("quickstart", ["train.device=$DEVICE", "train.tensorboard=false", "model.cnn_depth=4",
                                         "train.batch_size=2", "train.seq_len=8", "data.num_videos=4"])
import tempfile
with tempfile.TemporaryDirectory() as tmp:
    t = Trainer(cfg, tmp, progress=False)
    m = t.read_metrics(t.train_step(next(t.batches())))
    print("smoke: one training step on", t.device, "loss", round(m["loss"], 2))
    t.close()
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { log "smoke failed"; exit 3; }
cd "$REPO"

if [ "$QUICK" = 1 ]; then
    SIZES_MM="--batch 2 --seq-len 12 --warmup 1 --steps 1"; SIZES_MR="$SIZES_MM"
    IMAG="--batches 1 4 --horizons 15 --repeats 1"; IMAG_G="$IMAG"; PLAN="--batches 1 --decisions 2"; SYNC_STEPS=4
    LOOP_STEPS=3; LOOP_SIZE="train.batch_size=2 train.seq_len=12 eval.horizon=8 eval.num_videos=2"; SWEEP=""
else
    SIZES_MM="--batch 50 --seq-len 100 --warmup 3 --steps 10"; SIZES_MR="--batch 50 --seq-len 100 --warmup 3 --steps 10"
    IMAG="--batches 1 64 1024 --horizons 15 100 1000 --repeats 2"; IMAG_G="--batches 1 64 --horizons 15 100 1000"
    PLAN="--batches 1 16"; SYNC_STEPS=100; LOOP_STEPS=60; LOOP_SIZE=""; SWEEP="100 200 400"
fi
TS="python3 benchmarks/train_step.py --device $DEVICE"
# in order of what the README needs most; the deadline cuts from the end
run 90 mmnist_fp32_nchw $TS --preset mmnist $SIZES_MM --no-channels-last --json "$OUT/mmnist_fp32_nchw.json"
run 90 mmnist_fp32 $TS --preset mmnist $SIZES_MM --json "$OUT/mmnist_fp32.json"
run 90 mmnist_bf16 $TS --preset mmnist $SIZES_MM --bf16 --json "$OUT/mmnist_bf16.json"
run 90 minerl_fp32 $TS --preset minerl_navigate $SIZES_MR --json "$OUT/minerl_fp32.json"
run 90 minerl_bf16 $TS --preset minerl_navigate $SIZES_MR --bf16 --json "$OUT/minerl_bf16.json"
for B in $SWEEP; do  # the batch sweep: how far the step is from compute-bound
    run 60 minerl_bf16_b$B $TS --preset minerl_navigate --batch $B --seq-len 100 --warmup 2 --steps 5 --bf16 \
        --json "$OUT/minerl_bf16_b$B.json"
done
run 90 host_sync python3 benchmarks/host_sync.py --device $DEVICE --time-steps $SYNC_STEPS --json "$OUT/host_sync.json"
run 90 host_sync_lazy python3 benchmarks/host_sync.py --device $DEVICE --json "$OUT/host_sync_lazy.json" \
    train.sync_every=50
[ "$DEVICE" = cuda ] && run 120 cuda_graph python3 benchmarks/cuda_graph.py
# the whole training loop (generated data through the loader, pinned memory, logging) on the paper's mmnist model
(cd /tmp && run 100 train_loop python3 -m cwworld.cli train --config mmnist --run-dir /tmp/loop --no-progress \
    train.device=$DEVICE train.precision=bf16 train.sync_every=10 train.steps=$LOOP_STEPS train.log_every=10 \
    train.save_every=100000 train.sample_every=100000 train.tensorboard=false data.workers=4 $LOOP_SIZE)
cp /tmp/loop/metrics.jsonl "$OUT/train_loop_metrics.jsonl" 2>/dev/null
run 90 imagine python3 benchmarks/imagine.py --device $DEVICE --presets mmnist minerl_navigate $IMAG --max-seconds 2
run 40 planning python3 benchmarks/planning.py --device $DEVICE $PLAN
run 130 mmnist_bf16_compiled $TS --preset mmnist $SIZES_MM --bf16 --compile-parts --json "$OUT/mmnist_bf16_compiled.json"
run 60 imagine_graphs python3 benchmarks/imagine.py --device $DEVICE --presets mmnist $IMAG_G --max-seconds 2 \
    --compile reduce-overhead

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print(f"{'run':28} {'median step s':>13} {'frames/s':>10} {'peak GiB':>9} {'initial loss':>14} {'rel. to fp32 NCHW':>18}")
base = {}
for path in sorted(out.glob("*.json")):
    if path.name.startswith("host_sync"):
        continue
    r = json.loads(path.read_text())
    steps = sorted(r["step_s"])
    key = r["config"]["preset"]
    if path.stem.endswith("fp32_nchw") or (key not in base and "fp32" in path.stem and "compiled" not in path.stem):
        base.setdefault(key, r["first_loss"])
for path in sorted(out.glob("*.json")):
    if path.name.startswith("host_sync"):
        continue
    r = json.loads(path.read_text())
    steps = sorted(r["step_s"])
    ref = base.get(r["config"]["preset"])
    rel = abs(r["first_loss"] - ref) / abs(ref) if ref else float("nan")
    print(f"{path.stem:28} {steps[len(steps) // 2]:13.4f} {r['frames_per_s']:10.0f} "
          f"{r.get('peak_cuda_mib', 0) / 1024:9.2f} {r['first_loss']:14.6g} {rel:18.2e}")
EOF
log done
# a lent machine sends back at most 8 files: everything else travels in one archive
ARCHIVE=$(mktemp /tmp/gpu_suite.XXXXXX.tgz)  # written outside OUT: tar refuses a folder that changes
tar czf "$ARCHIVE" -C "$OUT" --exclude=summary.txt --exclude=suite.log . &&
    find "$OUT" -maxdepth 1 -type f ! -name summary.txt ! -name suite.log -delete &&
    mv "$ARCHIVE" "$OUT/all.tgz"
