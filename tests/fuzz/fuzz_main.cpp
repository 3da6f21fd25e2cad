// One libFuzzer target per reader, all built from this file: CMake compiles
// it once for each target with XLMR_FUZZ_TARGET set to the target's name
// (xlmr, safetensors, torch, tokenizer, spm_model). The work, and the rule
// about which outcomes are failures, lives in fuzz_entry.cpp, which the
// regression test shares.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_entry.h"

#ifndef XLMR_FUZZ_TARGET
#error "XLMR_FUZZ_TARGET must name the fuzz target"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // xlmr::Error is caught inside (a normal rejection); anything else, a
  // fuzz::Violation included, escapes and libFuzzer records the input.
  xlmr::fuzz::run(xlmr::fuzz::Target::XLMR_FUZZ_TARGET, data, size);
  return 0;
}
