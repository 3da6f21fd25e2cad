// The row buckets the CUDA GEMMs are planned for (kernels/cuda/gemm.cu).
//
// A ragged batch's token count M changes from batch to batch, so a GEMM plan
// per exact M would mean a heuristic query and a new cache entry for nearly
// every batch. Instead each GEMM is planned at load for a fixed list of row
// counts, and a call with M rows takes the plan of the smallest bucket that
// holds M: the algorithm chosen for the bucket's upper end runs every M in
// the bucket.
//
// The list: every count 1..16 (small batches, where a few rows are a large
// share of the work), then four steps per doubling of the row count, each
// 2^(1/4) (about 19%) above the last and rounded up to a multiple of 8,
// ending exactly at max_rows. So a bucket spans at most a fifth of its upper
// end or 8 rows, whichever is more, and max_rows = 16384 needs 54 buckets
// (finer steps would add planning work at load for algorithms that hardly
// differ). The steps use integer arithmetic, so the list is the same on
// every machine.
//
// Plain C++ (no CUDA headers): tested on any machine (tests/test_cuda_plan.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/error.h"

namespace xlmr::cuda {

// Sorted, strictly increasing row counts covering 1..max_rows; the last is
// max_rows. Throws xlmr::Error for max_rows < 1.
inline std::vector<int> gemm_row_buckets(int max_rows) {
  XLMR_CHECK(max_rows >= 1, "gemm_row_buckets: max rows must be at least 1 (got " + std::to_string(max_rows) + ")");
  constexpr int kDense = 16;  // every row count up to here is its own bucket
  constexpr int64_t kMultiple = 8;
  // 2^(j/4) for j = 1..4 in units of 1/1024, rounded up.
  constexpr int64_t kStep[4] = {1218, 1449, 1723, 2048};

  std::vector<int> b;
  for (int m = 1; m <= std::min(kDense, max_rows); ++m) b.push_back(m);
  for (int64_t base = kDense; b.back() < max_rows; base *= 2) {
    for (const int64_t step : kStep) {
      int64_t v = (base * step + 1023) / 1024;
      v = (v + kMultiple - 1) / kMultiple * kMultiple;
      v = std::min<int64_t>(v, max_rows);
      if (v > b.back()) b.push_back(int(v));
    }
  }
  return b;
}

// Index of the smallest bucket >= M; M must lie in 1..buckets.back().
// Binary search, no allocation.
inline int gemm_bucket_index(const std::vector<int>& buckets, int M) {
  XLMR_CHECK(!buckets.empty() && M >= 1 && M <= buckets.back(),
             "gemm_bucket_index: " + std::to_string(M) + " rows, outside the planned 1.." +
                 std::to_string(buckets.empty() ? 0 : buckets.back()));
  return int(std::lower_bound(buckets.begin(), buckets.end(), M) - buckets.begin());
}

}  // namespace xlmr::cuda
