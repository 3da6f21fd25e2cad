#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (H100/H200): build with CUDA
# for sm_90, run the GPU tests (also under compute-sanitizer), the CUDA
# benchmark (with and without CUDA graphs), the PyTorch comparison on the same
# card, the tensor-core attention against the plain kernel at head sizes 64,
# 80 and 128, xlmr-infer with its stages overlapped and not, and leave logs
# and JSON in OUT.
#
#   scripts/gpu-check.sh [OUT]          OUT defaults to $OUT, else ./gpu-check-out
#   scripts/gpu-check.sh --pack         (on a build machine) build build-gpu/, strip its
#                                       four programs and copy the shared libraries they
#                                       need from Debian's packages into build-gpu/lib,
#                                       for a GPU machine without those packages (the
#                                       CUDA 13 libraries are taken from the GPU machine)
#
# A GPU machine without the -dev packages gets the carried programs: carry
#   build-gpu/xlmr-tests build-gpu/xlmr-bench build-gpu/xlmr-infer
#   build-gpu/xlmr-convert build-gpu/lib
# (57.5 MiB at the last --pack; it prints the total; the working tree adds
# ~5.6 MiB of the 64 MiB a device call may carry, so there is under 1 MiB to
# spare). Only the programs see build-gpu/lib
# (LD_LIBRARY_PATH is set for them alone), so Python and PyTorch keep their own
# libraries.
#
# Everything is bounded so the whole run fits in about 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=build-gpu

configure_and_build() {
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DXLMR_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DXLMR_TESTS=ON -DXLMR_BENCHMARKS=ON -DXLMR_EMULATED_TESTS=OFF >/dev/null &&
    cmake --build "$build" -j "$(nproc)"
}

if [[ "${1:-}" == "--pack" ]]; then
  configure_and_build || exit 1
  rm -rf "$build/lib"
  mkdir -p "$build/lib/cxx"
  programs=("$build"/xlmr-tests "$build"/xlmr-bench "$build"/xlmr-infer "$build"/xlmr-convert)
  for bin in "${programs[@]}"; do
    [[ -x $bin ]] || { echo "gpu-check: $bin was not built" >&2; exit 1; }
    strip --strip-unneeded "$bin"
    # Debian's libraries and what they pull in (oneDNN needs the OpenCL
    # loader; libzip needs bz2, zlib and libcrypto); not glibc, and not
    # CUDA's (the GPU machine has CUDA 13). GCC 12's C++ runtime goes to
    # lib/cxx, used there only if the machine's own is too old: it needs
    # glibc 2.36, which an older machine lacks.
    ldd "$bin" | awk '/=>/ {print $3}' |
      grep -E 'dnnl|sentencepiece|protobuf|libzip|xxhash|gomp|OpenCL|libbz2|libz\.|libcrypto' |
      while read -r lib; do cp -Lu "$lib" "$build/lib/"; done
    ldd "$bin" | awk '/=>/ {print $3}' | grep -E 'libstdc\+\+|libgcc_s' |
      while read -r lib; do cp -Lu "$lib" "$build/lib/cxx/"; done
  done
  ls -la "$build/lib" "$build/lib/cxx"
  echo "carry: ${programs[*]} $build/lib ($(du -cb "${programs[@]}" "$build/lib" | tail -1 | awk '{printf "%.1f MiB", $1 / 1048576}'))"
  exit 0
fi

out=${1:-${OUT:-$root/gpu-check-out}}
mkdir -p "$out"
log() { echo "[gpu-check $(date +%H:%M:%S)] $*" | tee -a "$out/summary.txt"; }
status=0

log "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi unavailable')"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1

# 1. Build (or use a carried build when this machine lacks the -dev packages).
if pkg-config --exists sentencepiece libzip libxxhash 2>/dev/null && [[ -e /usr/include/oneapi/dnnl/dnnl.hpp ]]; then
  log "building with CUDA (sm_90)"
  if ! timeout 300 bash -c "$(declare -f configure_and_build); build=$build; configure_and_build" >"$out/build.log" 2>&1; then
    log "BUILD FAILED (see build.log)"; tail -30 "$out/build.log"; exit 1
  fi
elif [[ -x $build/xlmr-tests ]]; then
  log "no -dev packages here: using the carried $build (libraries in $build/lib)"
  libs="$root/$build/lib"
else
  log "cannot build (missing -dev packages) and no carried $build/: run scripts/gpu-check.sh --pack first"; exit 1
fi
bin=$root/$build
# The programs run under `env LD_LIBRARY_PATH="$libpath"`: the carried
# libraries (if any) are visible to them alone.
libpath="${libs:+$libs:}${LD_LIBRARY_PATH:-}"
if [[ -n ${libs:-} ]]; then  # carried programs: CUDA 13's libraries from this machine
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [[ -d $d ]] && libpath="$libpath:$d"; done
  if ! env LD_LIBRARY_PATH="$libpath" "$bin/xlmr-tests" --list-test-names-only >/dev/null 2>&1; then
    libpath="$libs/cxx:$libpath"  # this machine's C++ runtime is older than GCC 12's
    log "the programs do not load with this machine's C++ runtime: using the carried one"
  fi
  if ! env LD_LIBRARY_PATH="$libpath" "$bin/xlmr-tests" --list-test-names-only >/dev/null 2>&1; then
    log "the carried programs do not load here:"
    env LD_LIBRARY_PATH="$libpath" ldd "$bin/xlmr-tests" 2>&1 | grep -E "not found|GLIBC" | tee -a "$out/summary.txt"
    exit 1
  fi
fi
# Test models are written here and fixtures read from this checkout, not from
# build-machine paths that may not exist here (carried programs keep them).
XLMR_TEST_SCRATCH=$(mktemp -d)
XLMR_TEST_FIXTURES=$root/tests/fixtures
export XLMR_TEST_SCRATCH XLMR_TEST_FIXTURES

# 2. GPU tests, then the whole suite (CPU tests too), then compute-sanitizer.
log "GPU tests"
timeout 120 env LD_LIBRARY_PATH="$libpath" "$bin/xlmr-tests" "[cuda]" --durations yes >"$out/tests-cuda.txt" 2>&1 || { status=1; log "GPU TESTS FAILED"; }
tail -3 "$out/tests-cuda.txt" | tee -a "$out/summary.txt"
log "GPU error paths (out of memory etc.)"
timeout 60 env LD_LIBRARY_PATH="$libpath" "$bin/xlmr-tests" "[cuda-errors]" >"$out/tests-cuda-errors.txt" 2>&1 || { status=1; log "GPU ERROR-PATH TESTS FAILED"; }
tail -3 "$out/tests-cuda-errors.txt" | tee -a "$out/summary.txt"
log "GPU end-to-end tests"
timeout 120 env LD_LIBRARY_PATH="$libpath" "$bin/xlmr-tests" "[cuda-e2e]" >"$out/tests-cuda-e2e.txt" 2>&1 || { status=1; log "GPU E2E TESTS FAILED"; }
tail -3 "$out/tests-cuda-e2e.txt" | tee -a "$out/summary.txt"
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [[ -x $sanitizer ]]; then
  log "compute-sanitizer (memcheck) on the GPU kernel tests"
  timeout 150 env LD_LIBRARY_PATH="$libpath" "$sanitizer" --tool memcheck --error-exitcode 9 "$bin/xlmr-tests" "[cuda]" >"$out/sanitizer.txt" 2>&1
  rc=$?
  case $rc in
    0) ;;
    124) status=1; log "COMPUTE-SANITIZER RAN OUT OF TIME (150 s): no verdict" ;;
    9) status=1; log "COMPUTE-SANITIZER REPORTED ERRORS" ;;
    *) status=1; log "COMPUTE-SANITIZER RUN FAILED (exit $rc: a test failed under it?)" ;;
  esac
  grep -E "ERROR SUMMARY|passed|failed" "$out/sanitizer.txt" | tail -3 | tee -a "$out/summary.txt"
else
  log "compute-sanitizer not found: skipped"
fi

# 3. Benchmarks: XLM-R large on CUDA, bf16: the 16k-token ragged batch of
# lengths 16..512, batch 1 x 128 tokens (graphs on, then off), lognormal.
log "xlmr-bench on CUDA"
timeout 150 env LD_LIBRARY_PATH="$libpath" "$bin/xlmr-bench" --synthetic large --device cuda --dtype bf16 --path fused --layout ragged --vocab 250002 \
  --workload range:16-512:16384 --workload uniform:128x1 --workload lognormal:64 --iters 20 --min-time 1 \
  --json "$out/bench-cuda.json" >"$out/bench-cuda.txt" 2>&1 || { status=1; log "CUDA BENCH FAILED"; }
grep -E "^summary|^== " "$out/bench-cuda.txt" | tee -a "$out/summary.txt"
timeout 60 env LD_LIBRARY_PATH="$libpath" "$bin/xlmr-bench" --synthetic large --device cuda --dtype bf16 --path fused --layout ragged --vocab 250002 \
  --workload uniform:128x1 --iters 50 --min-time 1 --cuda-graphs off \
  --json "$out/bench-cuda-nographs.json" >"$out/bench-cuda-nographs.txt" 2>&1 || { status=1; log "CUDA BENCH (no graphs) FAILED"; }
grep -E "^summary" "$out/bench-cuda-nographs.txt" | sed 's/^/graphs off: /' | tee -a "$out/summary.txt"

# 4. PyTorch on the same card: nn.TransformerEncoder fastpath (padded and
# nested) and Hugging Face SDPA, outputs checked, then timed.
if python3 -c "import torch, transformers; assert torch.cuda.is_available()" 2>/dev/null; then
  log "PyTorch comparison on CUDA"
  timeout 240 python3 scripts/compare_pytorch_cuda.py --build-dir "$bin" --size large --dtype bf16 \
    --workload range:16-512:16384 --workload uniform:128x1 --workload lognormal:64 --iters 10 --min-time 1 \
    --markdown --json "$out/compare-cuda.json" >"$out/compare-cuda.txt" 2>&1 ||
    { status=1; log "PYTORCH COMPARISON FAILED"; }
  tail -22 "$out/compare-cuda.txt" | tee -a "$out/summary.txt"
else
  log "PyTorch comparison skipped: python3 cannot import torch + transformers with CUDA here"
fi

# 5. The attention kernels against each other: tensor cores and the plain
# fp32 kernel (--attention both) at head size 64 (large), 80 (a 4-layer
# XL) and 128 (a 2-layer XXL), each pair in one process.
# Last, and only while the run is within its 8 minutes (SECONDS: bash's
# count since the script started).
log "xlmr-bench on CUDA: tensor-core against plain attention, head sizes 64, 80, 128"
for spec in "large:0" "xl:4" "xxl:2"; do
  size=${spec%%:*} layers=${spec##*:}
  if (( SECONDS > 420 )); then log "attention bench ($size) skipped: ${SECONDS} s into the run"; continue; fi
  extra=()
  [[ $layers != 0 ]] && extra=(--layers "$layers")
  timeout 90 env LD_LIBRARY_PATH="$libpath" "$bin/xlmr-bench" --synthetic "$size" "${extra[@]}" --device cuda \
    --dtype bf16 --path fused --layout ragged --attention both --workload range:16-512:16384 --workload lognormal:64 \
    --iters 5 --min-time 0.3 --json "$out/bench-cuda-attention-$size.json" >"$out/bench-cuda-attention-$size.txt" 2>&1 ||
    { status=1; log "CUDA ATTENTION BENCH ($size) FAILED"; }
  grep -E "^summary|bf16 attention" "$out/bench-cuda-attention-$size.txt" | tee -a "$out/summary.txt"
done

# 6. xlmr-infer over text on CUDA: the host's work (tokenizing, writing JSON)
# overlapped with the model, against --no-overlap, and with four threads
# tokenizing and formatting JSON, alternated, on XLM-R large with the demo tokenizer; the
# busy-time line of each run says which stage bounds it.
if (( SECONDS > 470 )); then
  log "xlmr-infer overlap check skipped: ${SECONDS} s into the run"
else
  log "xlmr-infer on CUDA: stages overlapped against one after another"
  large=$XLMR_TEST_SCRATCH/large-tok.xlmr text=$XLMR_TEST_SCRATCH/text.txt
  for _ in $(seq 100); do cat scripts/demo/corpus.txt; done >"$text"
  if timeout 90 env LD_LIBRARY_PATH="$libpath" "$bin/xlmr-bench" --synthetic large --vocab 250002 \
      --tokenizer scripts/demo/model/sentencepiece.bpe.model --save-synthetic "$large" --device cuda --dtype bf16 \
      --path fused --layout ragged --workload uniform:16x1 --iters 1 --warmup 0 --min-time 0 --quiet >/dev/null 2>"$out/infer-cuda.txt"; then
    for mode in overlap no-overlap host-threads-4 overlap no-overlap host-threads-4; do
      flag=()
      [[ $mode == no-overlap ]] && flag=(--no-overlap)
      [[ $mode == host-threads-4 ]] && flag=(--host-threads 4)
      timeout 60 env LD_LIBRARY_PATH="$libpath" "$bin/xlmr-infer" --model "$large" --device cuda --dtype bf16 \
        "${flag[@]}" --progress always -o "$XLMR_TEST_SCRATCH/records.jsonl" "$text" 2>"$XLMR_TEST_SCRATCH/run.txt" ||
        { status=1; log "XLMR-INFER ON CUDA FAILED ($mode)"; }
      cat "$XLMR_TEST_SCRATCH/run.txt" >>"$out/infer-cuda.txt"
      grep -E "busy time" "$XLMR_TEST_SCRATCH/run.txt" | sed "s/^/$mode: /" | tee -a "$out/summary.txt"
    done
  else
    status=1; log "writing the large model for xlmr-infer FAILED"
  fi
  rm -f "$large" "$XLMR_TEST_SCRATCH/records.jsonl"
fi

log "done, status $status; results in $out"
exit $status
