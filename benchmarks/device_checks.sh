#!/usr/bin/env bash
# The GPU checks and benchmarks of the photos issue, as one script for a session that is lent the device
# machine (one H100/H200, 16 cores): run it from the repository root there. Results land in $OUT (or
# benchmarks/results): the CUDA test's log, input_pipeline.csv and train_throughput.csv at 224x224.
# About 6-8 minutes after the install; each part has its own time limit so one stall cannot eat the rest.
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
python3 -m venv .venv >/dev/null 2>&1 || true
.venv/bin/pip install -q -e '.[test]' >"$out/device_install.log" 2>&1
nvidia-smi --query-gpu=name,memory.total --format=csv >"$out/device_gpu.txt" 2>&1
timeout 300 .venv/bin/python -m pytest -q tests/test_train.py -k cuda -rs 2>&1 | tail -5 | tee "$out/device_cuda_test.log"
timeout 420 .venv/bin/python benchmarks/input_pipeline.py --device cuda --consumer-resolution 224 \
    --images 150 --steps 10 --out "$out/input_pipeline.csv" 2>&1 | tail -20
timeout 600 .venv/bin/python benchmarks/train_throughput.py --device cuda --resolution 224 --steps 8 \
    --shared-seconds 0 --out "$out/train_throughput.csv" 2>&1 | tail -20
