#!/bin/bash
# Issue 27: static baselines (--num-layers) and a cascade (2L + 6L MiniLM) beside every dynamic policy of the 6-layer
# MiniLM, on bbc and tweets (benchmarks/results/static_cascade/, BENCHMARKS.md "Static baselines and cascades").
# Small training runs that fit a loaded 2-core CPU: bbc --max-train-samples 800 (dev: all of bbc:dev), tweets
# --max-train-samples 2000 (dev: 400 rows of tweets:dev); every model 3 passes over its rows.
# Usage: [SETS="bbc tweets"] benchmarks/static_cascade.sh [RUNS_DIR]   (geep on the path; RUNS_DIR default runs/c27;
# models already trained there are kept). The cascades are calibrated on all of the set's dev rows (temperatures).
set -euo pipefail
R=${1:-runs/c27}
G=${GEEP:-geep}
mkdir -p "$R"
for set in ${SETS:-bbc tweets}; do
  if [ $set = bbc ]; then SZ="--max-train-samples 800 --dev bbc:dev"; TEST="--data bbc:test";
  else SZ="--max-train-samples 2000 --dev tweets:dev --max-dev-samples 400"; TEST="--data tweets:test --max-samples 1000"; fi
  [ -f $R/$set-6L/config.json ] || $G train --model minilm --train $set:train $SZ --no-progress --output $R/$set-6L
  for k in 2 1 3 4; do
    [ -f $R/$set-${k}L/config.json ] || $G train --model minilm --train $set:train $SZ --num-layers $k \
      --objective fine-tune --epochs 3 --no-progress --output $R/$set-${k}L
  done
  [ -f $R/$set-2L-da/config.json ] || $G train --model minilm --train $set:train $SZ --num-layers 2 \
    --objective cascade-da --epochs 2 --distil-epochs 1 --no-progress --output $R/$set-2L-da
  for m in 2L 2L-da; do
    $G cascade --model $R/$set-$m --model $R/$set-6L --output $R/$set-cascade-$m --overwrite
    $G calibrate --model $R/$set-cascade-$m --dev $set:dev --max-accuracy-drop 1
  done
  $G bench --model $R/$set-6L --model $R/$set-1L --model $R/$set-2L --model $R/$set-3L --model $R/$set-4L \
    --model $R/$set-cascade-2L --model $R/$set-cascade-2L-da $TEST --batch-sizes 32 --timed-points 5 --repeats 5 \
    --threads 2 --no-progress --output $R/bench-$set --overwrite
done
