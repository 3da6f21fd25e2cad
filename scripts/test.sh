#!/usr/bin/env bash
# The test command: installs dependencies, builds from scratch (CUDA code
# too when nvcc is present) and runs the whole suite under CTest.
#   scripts/test.sh [BUILD_DIR]      (default: build-test)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-test}

scripts/install-deps.sh
rm -rf "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)"
