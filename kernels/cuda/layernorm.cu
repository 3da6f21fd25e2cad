// The two LayerNorm kernels of the CUDA backend, each fused with what feeds
// it so that a row is read once and written once:
//   embed_layernorm:             out = LN(word[id] + pos[position] + type0)
//   add_bias_residual_layernorm: x   = LN(x + (y + bias))            (in place)
// Pre-norm models (XLM-R XL/XXL) keep the sum as their residual stream: with
// `sum_out` set, the row before LayerNorm goes there (rounded to 16 bits) and
// the LayerNorm, the next sublayer's input, to `out`.
// followed by * gamma + beta, as torch.nn.LayerNorm: biased variance, eps
// inside the square root, both moments in fp32 and in two passes (mean, then
// the mean of squared deviations) over the row held in registers or shared
// memory. The result is rounded once, to the 16-bit type.
//
// Hidden sizes up to 1024 (XLM-R base and large): one warp per row, the row in
// registers, no shared memory and no block barrier. Larger rows (up to 8192):
// one block per row with the row in shared memory. Rows whose width is a multiple of 8 on
// 16-byte aligned buffers move 8 elements per 16-byte load; others go element
// by element.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

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

// W consecutive 16-bit elements -> fp32. W is 8 (one 16-byte load; p must be
// 16-byte aligned) or 1.
template <typename Bits, int W>
__device__ __forceinline__ void load16(const uint16_t* p, float (&v)[W]) {
  if constexpr (W == 8) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const uint32_t words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = Bits::to_float(uint16_t(words[k] & 0xffffu));
      v[2 * k + 1] = Bits::to_float(uint16_t(words[k] >> 16));
    }
  } else {
    static_assert(W == 1, "8 or 1 elements per load");
    v[0] = Bits::to_float(*p);
  }
}

template <typename Bits, int W>
__device__ __forceinline__ void store16(uint16_t* p, const float (&v)[W]) {
  if constexpr (W == 8) {
    uint32_t words[4];
#pragma unroll
    for (int k = 0; k < 4; ++k)
      words[k] = uint32_t(Bits::from_float(v[2 * k])) | (uint32_t(Bits::from_float(v[2 * k + 1])) << 16);
    *reinterpret_cast<uint4*>(p) = make_uint4(words[0], words[1], words[2], words[3]);
  } else {
    static_assert(W == 1, "8 or 1 elements per store");
    *p = Bits::from_float(v[0]);
  }
}

// W consecutive fp32 values (two 16-byte loads when W is 8).
template <int W>
__device__ __forceinline__ void load32(const float* p, float (&v)[W]) {
  if constexpr (W == 8) {
    const float4 a = *reinterpret_cast<const float4*>(p);
    const float4 b = *reinterpret_cast<const float4*>(p + 4);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
    v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    static_assert(W == 1, "8 or 1 values per load");
    v[0] = *p;
  }
}

// ---- what each kernel normalises: the fp32 row before LayerNorm -------------
// load<W>(row, c, v) fills v with columns [c, c + W) of row `row`.

template <typename Bits>
struct EmbedRows {
  const int32_t* ids;        // [N]
  const int32_t* positions;  // [N]
  const uint16_t* word;      // [V, E]
  const uint16_t* pos;       // [P, E]
  const uint16_t* type0;     // [E] or nullptr
  int E;

  template <int W>
  __device__ __forceinline__ void load(int row, int c, float (&v)[W]) const {
    float p[W];
    load16<Bits, W>(word + size_t(ids[row]) * E + c, v);
    load16<Bits, W>(pos + size_t(positions[row]) * E + c, p);
#pragma unroll
    for (int i = 0; i < W; ++i) v[i] += p[i];
    if (type0) {
      load16<Bits, W>(type0 + c, p);
#pragma unroll
      for (int i = 0; i < W; ++i) v[i] += p[i];
    }
  }
};

template <typename Bits>
struct ResidualRows {
  const uint16_t* x;  // [N, E], also the output (each element is read before it is written, by the same thread)
  const uint16_t* y;  // [N, E]
  const float* bias;  // [E]
  int E;

  template <int W>
  __device__ __forceinline__ void load(int row, int c, float (&v)[W]) const {
    float yv[W], b[W];
    load16<Bits, W>(x + size_t(row) * E + c, v);
    load16<Bits, W>(y + size_t(row) * E + c, yv);
    load32<W>(bias + c, b);
#pragma unroll
    for (int i = 0; i < W; ++i) v[i] += yv[i] + b[i];
  }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the block; every thread gets the total. red: 32 floats of shared
// memory. The leading barrier lets one call follow another on the same red.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int n_warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  return warp_sum(lane < n_warps ? red[lane] : 0.f);
}

// Normalises v (W values at column c) and stores them to out_row.
template <typename Bits, int W>
__device__ __forceinline__ void finish(uint16_t* out_row, int c, const float (&v)[W], float mean, float inv,
                                       const float* gamma, const float* beta) {
  float g[W], b[W], o[W];
  load32<W>(gamma + c, g);
  load32<W>(beta + c, b);
#pragma unroll
  for (int i = 0; i < W; ++i) o[i] = (v[i] - mean) * inv * g[i] + b[i];
  store16<Bits, W>(out_row + c, o);
}

constexpr int kWarpMaxHidden = 1024;
constexpr int kRowsPerBlock = 4;  // warps (rows) per block of the warp kernel
constexpr int kBlockThreads = 256;
// The fp32 row plus the 128-byte reduction buffer must fit the default 48 KiB
// of shared memory; 8192 covers every XLM-R size (XXL: 4096).
constexpr int kBlockMaxHidden = 8192;

// grid ceil(N / 4), block 128: warp w of block b owns row 4b + w. Lane l holds
// chunks l, l + 32, ... of W columns each.
template <typename Bits, int W, typename Rows>
__global__ void __launch_bounds__(kRowsPerBlock * 32)
    layernorm_warp_kernel(uint16_t* out, uint16_t* sum_out, Rows rows, const float* __restrict__ gamma,
                          const float* __restrict__ beta, int n_rows, int E, float eps) {
  constexpr int kChunks = kWarpMaxHidden / (32 * W);
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  if (row >= n_rows) return;  // whole warp; only warp-level operations below
  const int lane = threadIdx.x % 32;
  const int n_chunks = E / W;

  float v[kChunks][W];
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int c = lane + 32 * k;
    if (c < n_chunks) {
      rows.template load<W>(row, c * W, v[k]);
      if (sum_out) store16<Bits, W>(sum_out + size_t(row) * E + c * W, v[k]);
#pragma unroll
      for (int i = 0; i < W; ++i) sum += v[k][i];
    }
  }
  const float mean = warp_sum(sum) / float(E);
  float sq = 0.f;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    if (lane + 32 * k < n_chunks) {
#pragma unroll
      for (int i = 0; i < W; ++i) {
        const float d = v[k][i] - mean;
        sq += d * d;
      }
    }
  }
  const float inv = 1.f / sqrtf(warp_sum(sq) / float(E) + eps);
  uint16_t* out_row = out + size_t(row) * E;
#pragma unroll
  for (int k = 0; k < kChunks; ++k) {
    const int c = lane + 32 * k;
    if (c < n_chunks) finish<Bits, W>(out_row, c * W, v[k], mean, inv, gamma, beta);
  }
}

// grid N, block 256, E floats of dynamic shared memory: block b owns row b.
// Each thread re-reads only the shared entries it wrote itself.
template <typename Bits, int W, typename Rows>
__global__ void __launch_bounds__(kBlockThreads)
    layernorm_block_kernel(uint16_t* out, uint16_t* sum_out, Rows rows, const float* __restrict__ gamma,
                           const float* __restrict__ beta, int E, float eps) {
  float* row_s = detail::dynamic_shared<float>();  // [E]
  __shared__ float red[32];
  const int row = blockIdx.x;
  const int n_chunks = E / W;

  float sum = 0.f;
  for (int c = threadIdx.x; c < n_chunks; c += blockDim.x) {
    float v[W];
    rows.template load<W>(row, c * W, v);
    if (sum_out) store16<Bits, W>(sum_out + size_t(row) * E + c * W, v);
#pragma unroll
    for (int i = 0; i < W; ++i) {
      row_s[c * W + i] = v[i];
      sum += v[i];
    }
  }
  const float mean = block_sum(sum, red) / float(E);
  float sq = 0.f;
  for (int c = threadIdx.x; c < n_chunks; c += blockDim.x) {
#pragma unroll
    for (int i = 0; i < W; ++i) {
      const float d = row_s[c * W + i] - mean;
      sq += d * d;
    }
  }
  const float inv = 1.f / sqrtf(block_sum(sq, red) / float(E) + eps);
  uint16_t* out_row = out + size_t(row) * E;
  for (int c = threadIdx.x; c < n_chunks; c += blockDim.x) {
    float v[W];
#pragma unroll
    for (int i = 0; i < W; ++i) v[i] = row_s[c * W + i];
    finish<Bits, W>(out_row, c * W, v, mean, inv, gamma, beta);
  }
}

template <typename Bits, int W, typename Rows>
void launch_width(uint16_t* out, uint16_t* sum_out, const Rows& rows, const float* gamma, const float* beta, int N,
                  int E, float eps, cudaStream_t stream) {
  if (E <= kWarpMaxHidden) {
    const unsigned blocks = unsigned((N + kRowsPerBlock - 1) / kRowsPerBlock);
    XLMR_LAUNCH(blocks, kRowsPerBlock * 32, 0, stream, layernorm_warp_kernel<Bits, W, Rows>)(out, sum_out, rows, gamma,
                                                                                           beta, N, E, eps);
  } else {
    const size_t smem = size_t(E) * sizeof(float);
    XLMR_LAUNCH(unsigned(N), kBlockThreads, smem, stream, layernorm_block_kernel<Bits, W, Rows>)(out, sum_out, rows,
                                                                                               gamma, beta, E, eps);
  }
}

template <typename Bits, typename Rows>
void launch(uint16_t* out, uint16_t* sum_out, const Rows& rows, const float* gamma, const float* beta, int N, int E,
            float eps, bool vectorised, cudaStream_t stream) {
  if (vectorised)
    launch_width<Bits, 8>(out, sum_out, rows, gamma, beta, N, E, eps, stream);
  else
    launch_width<Bits, 1>(out, sum_out, rows, gamma, beta, N, E, eps, stream);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void check_sizes(const char* what, int n_tokens, int hidden) {
  XLMR_CHECK(n_tokens >= 0, std::string(what) + ": negative token count " + std::to_string(n_tokens));
  XLMR_CHECK(hidden > 0 && hidden <= kBlockMaxHidden, std::string(what) + ": hidden size " + std::to_string(hidden) +
                                                          " is outside the supported 1.." +
                                                          std::to_string(kBlockMaxHidden));
}

}  // namespace

void embed_layernorm(Half16 t, void* out, const int32_t* ids, const int32_t* positions, const void* word,
                     const void* pos, const void* type0, const float* gamma, const float* beta, int n_tokens,
                     int hidden, float eps, Stream s, void* raw) {
  check_sizes("embed_layernorm", n_tokens, hidden);
  if (n_tokens == 0) return;
  XLMR_CHECK(out && ids && positions && word && pos && gamma && beta, "embed_layernorm: null device pointer");
  XLMR_CHECK(raw != out, "embed_layernorm: raw and out must be different buffers");
  const bool vec = hidden % 8 == 0 && aligned16(out) && aligned16(word) && aligned16(pos) &&
                   (!type0 || aligned16(type0)) && aligned16(gamma) && aligned16(beta) && (!raw || aligned16(raw));
  auto* o = static_cast<uint16_t*>(out);
  auto* r = static_cast<uint16_t*>(raw);
  const auto* w = static_cast<const uint16_t*>(word);
  const auto* p = static_cast<const uint16_t*>(pos);
  const auto* t0 = static_cast<const uint16_t*>(type0);
  const auto stream = static_cast<cudaStream_t>(s);
  if (t == Half16::f16)
    launch<F16Bits>(o, r, EmbedRows<F16Bits>{ids, positions, w, p, t0, hidden}, gamma, beta, n_tokens, hidden, eps,
                    vec, stream);
  else
    launch<Bf16Bits>(o, r, EmbedRows<Bf16Bits>{ids, positions, w, p, t0, hidden}, gamma, beta, n_tokens, hidden, eps,
                     vec, stream);
  detail::check_launch("embed_layernorm");
}

void add_bias_residual_layernorm(Half16 t, void* x, const void* y, const float* bias, const float* gamma,
                                 const float* beta, int n_tokens, int hidden, float eps, Stream s, void* normed) {
  check_sizes("add_bias_residual_layernorm", n_tokens, hidden);
  if (n_tokens == 0) return;
  XLMR_CHECK(x && y && bias && gamma && beta, "add_bias_residual_layernorm: null device pointer");
  XLMR_CHECK(normed != x, "add_bias_residual_layernorm: normed and x must be different buffers");
  const bool vec = hidden % 8 == 0 && aligned16(x) && aligned16(y) && aligned16(bias) && aligned16(gamma) &&
                   aligned16(beta) && (!normed || aligned16(normed));
  auto* xo = static_cast<uint16_t*>(x);
  const auto* yi = static_cast<const uint16_t*>(y);
  // Post-norm: the LayerNorm replaces x. Pre-norm: x takes the sum, normed the LayerNorm.
  uint16_t* out = normed ? static_cast<uint16_t*>(normed) : xo;
  uint16_t* sum_out = normed ? xo : nullptr;
  const auto stream = static_cast<cudaStream_t>(s);
  if (t == Half16::f16)
    launch<F16Bits>(out, sum_out, ResidualRows<F16Bits>{xo, yi, bias, hidden}, gamma, beta, n_tokens, hidden, eps, vec,
                    stream);
  else
    launch<Bf16Bits>(out, sum_out, ResidualRows<Bf16Bits>{xo, yi, bias, hidden}, gamma, beta, n_tokens, hidden, eps,
                     vec, stream);
  detail::check_launch("add_bias_residual_layernorm");
}

}  // namespace xlmr::cuda
