#!/bin/bash
# The models benchmarks/tasks.py reads (BENCHMARKS.md, issue 21): small enough for a loaded 2-core machine.
# Run from the repository root; the models go to runs/tasks/.
set -e
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src
mkdir -p runs/tasks
G="${PYTHON:-.venv/bin/python} -m geep.cli.main"
$G train --model minilm --train lee:train --dev lee:dev --text-pair-column text_pair --exit-module lte \
  --objective berxit --epochs 2 --no-progress --output runs/tasks/lee --overwrite > runs/tasks/lee.log 2>&1
$G train --model minilm --train bbc:train --dev bbc:dev --exit-module lte --max-train-samples 600 \
  --objective pabee --epochs 1 --no-progress --output runs/tasks/bbc --overwrite > runs/tasks/bbc.log 2>&1
$G train --model minilm --train tweets:train --dev tweets:dev --exit-module lte --max-train-samples 1500 \
  --max-dev-samples 500 --objective pabee --epochs 1 --no-progress --output runs/tasks/tweets --overwrite \
  > runs/tasks/tweets.log 2>&1
echo done > runs/tasks/train.done
