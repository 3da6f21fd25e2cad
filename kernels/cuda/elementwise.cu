// Element-wise kernels of the CUDA backend: the GEMM epilogue for when
// cuBLASLt offers no fused one (kernels/cuda/gemm.cu), and the 16-bit -> fp32
// conversion of results. Grid-stride loops: the grid is capped and each
// thread takes every (grid x block)-th element.
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

constexpr int kThreads = 256;
constexpr size_t kMaxBlocks = size_t(1) << 16;

unsigned blocks_for(size_t n) { return unsigned(std::min((n + kThreads - 1) / kThreads, kMaxBlocks)); }

// d[m, o] = act(d[m, o] + bias[o]) over total = M * O elements. GELU in its
// exact erf form, as ref::gelu.
template <typename Bits, bool kGelu>
__global__ void bias_act_kernel(uint16_t* __restrict__ d, const float* __restrict__ bias, size_t total, int O) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    float v = Bits::to_float(d[i]) + bias[i % size_t(O)];
    if (kGelu) v = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    d[i] = Bits::from_float(v);
  }
}

template <typename Bits>
__global__ void to_f32_kernel(float* __restrict__ out, const uint16_t* __restrict__ in, size_t n) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = Bits::to_float(in[i]);
}

}  // namespace

void bias_activation(Half16 t, void* d, const float* bias, int rows, int cols, bool gelu, Stream s) {
  XLMR_CHECK(rows >= 0 && cols > 0,
             "bias_activation: bad shape " + std::to_string(rows) + " x " + std::to_string(cols));
  const size_t total = size_t(rows) * size_t(cols);
  if (total == 0) return;
  XLMR_CHECK(d && bias, "bias_activation: null device pointer");
  const auto stream = static_cast<cudaStream_t>(s);
  auto* p = static_cast<uint16_t*>(d);
  const unsigned blocks = blocks_for(total);
  if (t == Half16::f16) {
    if (gelu)
      XLMR_LAUNCH(blocks, kThreads, 0, stream, bias_act_kernel<F16Bits, true>)(p, bias, total, cols);
    else
      XLMR_LAUNCH(blocks, kThreads, 0, stream, bias_act_kernel<F16Bits, false>)(p, bias, total, cols);
  } else {
    if (gelu)
      XLMR_LAUNCH(blocks, kThreads, 0, stream, bias_act_kernel<Bf16Bits, true>)(p, bias, total, cols);
    else
      XLMR_LAUNCH(blocks, kThreads, 0, stream, bias_act_kernel<Bf16Bits, false>)(p, bias, total, cols);
  }
  detail::check_launch("bias_activation");
}

void convert_to_f32(Half16 t, float* dst, const void* src, size_t n, Stream s) {
  if (n == 0) return;
  const auto stream = static_cast<cudaStream_t>(s);
  const auto* in = static_cast<const uint16_t*>(src);
  if (t == Half16::f16)
    XLMR_LAUNCH(blocks_for(n), kThreads, 0, stream, to_f32_kernel<F16Bits>)(dst, in, n);
  else
    XLMR_LAUNCH(blocks_for(n), kThreads, 0, stream, to_f32_kernel<Bf16Bits>)(dst, in, n);
  detail::check_launch("convert_to_f32");
}

}  // namespace xlmr::cuda
