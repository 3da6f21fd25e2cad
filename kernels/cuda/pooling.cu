// Sentence-level steps of the CUDA backend on the packed rows [N, E]:
// the first token of each sequence (CLS pooling, the input of the pooler and
// the classification head), the mean over each sequence's rows in fp32, and
// the in-place tanh / ReLU of the pooler and the head.
//
// A sequence with no rows (cu_seqlens[s] == cu_seqlens[s + 1]) gives a zero
// row, like ref::mean_rows, and is never read from.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/half_bits.cuh"
#include "kernels/cuda/launch.cuh"

namespace xlmr::cuda {
namespace {

using detail::Bf16Bits;
using detail::F16Bits;

constexpr int kThreads = 128;

// grid S, block 128: block s copies row cu_seqlens[s] of x to row s of out.
// A bit copy, the same for both 16-bit types (0 bits are +0 in both).
__global__ void gather_first_kernel(uint16_t* __restrict__ out,      // [S, E]
                                    const uint16_t* __restrict__ x,  // [N, E]
                                    const int32_t* __restrict__ cu_seqlens, int E) {
  const int s = blockIdx.x;
  const int start = cu_seqlens[s];
  const bool empty = cu_seqlens[s + 1] == start;
  const uint16_t* src = x + size_t(start) * E;
  uint16_t* dst = out + size_t(s) * E;
  for (int e = threadIdx.x; e < E; e += blockDim.x) dst[e] = empty ? uint16_t(0) : src[e];
}

// grid (S, ceil(E / 128)), block 128: thread e of block (s, j) sums column
// 128 j + e down the rows of sequence s (coalesced across the block).
template <typename Bits>
__global__ void mean_pool_kernel(float* __restrict__ out,          // [S, E]
                                 const uint16_t* __restrict__ x,  // [N, E]
                                 const int32_t* __restrict__ cu_seqlens, int E) {
  const int s = blockIdx.x;
  const int e = blockIdx.y * blockDim.x + threadIdx.x;
  if (e >= E) return;
  const int start = cu_seqlens[s];
  const int len = cu_seqlens[s + 1] - start;
  const uint16_t* col = x + size_t(start) * E + e;
  float acc = 0.f;
  for (int r = 0; r < len; ++r) acc += Bits::to_float(col[size_t(r) * E]);
  out[size_t(s) * E + e] = len > 0 ? acc / float(len) : 0.f;
}

// In place over n elements, grid-stride. ReLU as ref::linear's: NaN -> 0.
template <typename Bits, bool kTanh>
__global__ void activation_kernel(uint16_t* x, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = Bits::to_float(x[i]);
    x[i] = Bits::from_float(kTanh ? tanhf(v) : (v > 0.f ? v : 0.f));
  }
}

void check_sizes(const char* what, int n_seqs, int hidden) {
  XLMR_CHECK(n_seqs >= 0 && hidden > 0, std::string(what) + ": bad sizes (" + std::to_string(n_seqs) +
                                            " sequences, hidden " + std::to_string(hidden) + ")");
}

}  // namespace

void gather_first(Half16, void* out, const void* x, const int32_t* cu_seqlens, int n_seqs, int hidden, Stream s) {
  check_sizes("gather_first", n_seqs, hidden);
  if (n_seqs == 0) return;
  XLMR_LAUNCH(unsigned(n_seqs), kThreads, 0, static_cast<cudaStream_t>(s), gather_first_kernel)(
      static_cast<uint16_t*>(out), static_cast<const uint16_t*>(x), cu_seqlens, hidden);
  detail::check_launch("gather_first");
}

void mean_pool(Half16 t, float* out, const void* x, const int32_t* cu_seqlens, int n_seqs, int hidden, Stream s) {
  check_sizes("mean_pool", n_seqs, hidden);
  if (n_seqs == 0) return;
  const dim3 grid(unsigned(n_seqs), unsigned((hidden + kThreads - 1) / kThreads));
  const auto stream = static_cast<cudaStream_t>(s);
  const auto* in = static_cast<const uint16_t*>(x);
  if (t == Half16::f16)
    XLMR_LAUNCH(grid, kThreads, 0, stream, mean_pool_kernel<F16Bits>)(out, in, cu_seqlens, hidden);
  else
    XLMR_LAUNCH(grid, kThreads, 0, stream, mean_pool_kernel<Bf16Bits>)(out, in, cu_seqlens, hidden);
  detail::check_launch("mean_pool");
}

void activation(Half16 t, void* x, size_t n, bool tanh_not_relu, Stream s) {
  if (n == 0) return;
  constexpr int kBlock = 256;
  const unsigned blocks = unsigned(std::min<size_t>((n + kBlock - 1) / kBlock, size_t(1) << 16));
  const auto stream = static_cast<cudaStream_t>(s);
  auto* p = static_cast<uint16_t*>(x);
  if (t == Half16::f16) {
    if (tanh_not_relu)
      XLMR_LAUNCH(blocks, kBlock, 0, stream, activation_kernel<F16Bits, true>)(p, n);
    else
      XLMR_LAUNCH(blocks, kBlock, 0, stream, activation_kernel<F16Bits, false>)(p, n);
  } else {
    if (tanh_not_relu)
      XLMR_LAUNCH(blocks, kBlock, 0, stream, activation_kernel<Bf16Bits, true>)(p, n);
    else
      XLMR_LAUNCH(blocks, kBlock, 0, stream, activation_kernel<Bf16Bits, false>)(p, n);
  }
  detail::check_launch("activation");
}

}  // namespace xlmr::cuda
