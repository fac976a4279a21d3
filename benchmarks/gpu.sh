#!/usr/bin/env bash
# The GPU bench in one command (issue 12, item 6): needs this checkout, torch, transformers, tokenizers, safetensors,
# accelerate and tqdm (geep's training loop places the model with accelerate; not `datasets`),
# and benchmarks/gpu-pack/ (made beforehand on a development machine by `make gpu-pack`). Nothing is installed.
# Writes benchmarks/results/gpu/gpu.json and gpu.md. Extra flags go to benchmarks/gpu_bench.py (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" benchmarks/gpu_bench.py "$@"
