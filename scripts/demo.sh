#!/usr/bin/env bash
# The main job on a fresh machine: install dependencies, build, and run
# xlmr-infer on the shipped demo model over the example input.
#   scripts/demo.sh [xlmr-infer options...]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DXLMR_TESTS=OFF > /dev/null
cmake --build build -j "$(nproc)" --target xlmr-infer xlmr-convert demo-model
build/xlmr-infer --model build/demo.xlmr "$@" scripts/demo/input.txt
