// Timing of one CPU kernel alone, two variants called in turn: the attention
// kernel with fp32 products against the one with bf16 products (on AMX or
// AVX512_BF16, whichever the engine would use), on a
// workload's sequence lengths. Calling them alternately, many times, and
// taking medians keeps the ratio honest on a machine whose speed drifts
// between one run and the next (a whole-model run of each cannot).
#pragma once

#include <cstdint>
#include <string>

#include "benchmarks/workloads.h"

namespace bench {

struct AttentionKernelTiming {
  std::string workload;
  int n_seqs = 0;
  int64_t n_tokens = 0;
  double flops = 0;       // per call: 4 x sum of squared lengths x hidden
  std::string unit;       // where the bf16 products ran: "AMX" or "AVX512_BF16"
  int pairs = 0;          // calls of each variant
  double f32_ms = 0;      // median
  double bf16_ms = 0;     // median

  double f32_gflops() const { return flops / (f32_ms * 1e6); }
  double bf16_gflops() const { return flops / (bf16_ms * 1e6); }
  double ratio() const { return f32_ms / bf16_ms; }  // above 1: bf16 products faster
};

// Random Q, K, V (normal, fixed seed) in the packed layout of a forward with
// w's lengths, hidden E in `heads` heads; one untimed call of each variant,
// then pairs (f32, bf16) until at least min_pairs pairs and min_time
// seconds. Throws xlmr::Error where bf16 products cannot run.
AttentionKernelTiming time_attention_kernels(const Workload& w, int hidden, int heads, int threads,
                                             int min_pairs, double min_time);

}  // namespace bench
