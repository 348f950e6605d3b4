#!/usr/bin/env bash
# Lay out cwworld as installed in SITE (default /tmp/site) on a lent GPU machine, which has no
# network: the dependencies its image lacks come from the wheels in .whl/, and the package is
# copied with agents/, envs/ and configs/ inside it. Run from the repository root, then
# `export PYTHONPATH=SITE`. Used by gpu_suite.sh, gpu_train.sh and device_sweep.sh.
set -u
SITE=${1:-/tmp/site}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl &&
    rm -rf "$SITE/cwworld" && cp -r cwworld "$SITE/cwworld" && cp -r agents "$SITE/cwworld/agents" &&
    cp -r envs "$SITE/cwworld/envs" && cp -r configs "$SITE/cwworld/configs"
