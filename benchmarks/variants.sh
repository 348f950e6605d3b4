#!/usr/bin/env bash
# Train several variants of a preset side by side on a many-core machine, evaluate each on its
# held-out videos (the model's means and its samples, with the baselines) and bring back every
# metrics.json: a sweep of the quickstart's data/recipe choices in one call. Each variant trains a
# fixed number of steps (the preset's train.steps), so its quality does not depend on the
# machine's speed; only its minutes do. One variant per line of VARIANTS: NAME OVERRIDES...
#
#   OUT=/tmp/sweep PRESET=quickstart THREADS=2 VARIANTS=$'base\nsquares data.kind=squares' \
#       bash benchmarks/variants.sh
#
# $OUT/NAME/{train.log, mean.json, samples.json}; HORIZON (default 100) frames are predicted.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
PRESET=${PRESET:-quickstart}
THREADS=${THREADS:-2}
HORIZON=${HORIZON:-100}
mkdir -p "$OUT"
cd /tmp || exit 2  # not the repository root: `python3 -m cwworld.cli` imports the installed package
run_variant() {  # NAME OVERRIDES...
    local name=$1; shift
    local run=/tmp/variants/$name dir="$OUT/$name"
    mkdir -p "$dir"
    local started=$(date +%s)
    OMP_NUM_THREADS=$THREADS python3 -m cwworld.cli train --config "$PRESET" --run-dir "$run" --no-progress \
        train.device=cpu train.tensorboard=false train.sample_every=1000000 data.workers=0 "$@" > "$dir/train.log" 2>&1
    echo "train exit $? after $(( $(date +%s) - started )) s" >> "$dir/train.log"
    for mode in mean samples; do
        local flag=(); [ "$mode" = mean ] && flag=(--mean --samples 1)
        OMP_NUM_THREADS=$THREADS python3 -m cwworld.cli eval "$run" --device cpu --horizon "$HORIZON" "${flag[@]}" \
            --no-progress --out "/tmp/variants/eval_${name}_$mode" >> "$dir/eval.log" 2>&1 &&
            cp "/tmp/variants/eval_${name}_$mode/metrics.json" "$dir/$mode.json"
    done
    echo "done after $(( $(date +%s) - started )) s" >> "$dir/train.log"
}
while read -r name overrides; do
    [ -z "$name" ] && continue
    # shellcheck disable=SC2086
    run_variant "$name" $overrides &
done <<< "${VARIANTS:?set VARIANTS}"
wait
