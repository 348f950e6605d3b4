#!/usr/bin/env bash
# One call on a lent GPU machine (16 cores): a GPU training run of mmnist_small evaluated there,
# beside the quickstart variants of benchmarks/variants.sh on the machine's CPU cores.
set -u
OUT=${OUT:?set OUT}
S=/tmp/site2  # the package laid out as installed, for the CPU variants (gpu_train.sh makes /tmp/site)
bash benchmarks/device_site.sh $S || exit 2
mkdir -p "$OUT/gpu"
(
    OUT=$OUT/gpu PRESET=${GPU_PRESET:-mmnist_small} MINUTES=${GPU_MINUTES:-6} SECONDS_TOTAL=${GPU_SECONDS:-400} \
        WORKERS=4 bash benchmarks/gpu_train.sh ${GPU_OVERRIDES:-}
    cd /tmp && for mode in mean samples; do
        flag=(); [ "$mode" = mean ] && flag=(--mean --samples 1)
        PYTHONPATH=$S python3 -m cwworld.cli eval /tmp/gpu_run "${flag[@]}" --no-progress --out /tmp/ge_$mode \
            >> "$OUT/gpu/eval.log" 2>&1 && cp /tmp/ge_$mode/metrics.json "$OUT/gpu/$mode.json"
    done
) &
PYTHONPATH=$S OUT=$OUT/q bash benchmarks/variants.sh
wait
