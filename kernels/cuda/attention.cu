// Variable-length multi-head self-attention over packed QKV rows, the CUDA
// twin of ref::attention_padded without the padding.
//
// Rows are packed: sequence s owns rows [cu_seqlens[s], cu_seqlens[s+1]) of
// qkv [N, 3E] and out [N, E]; a query sees exactly the keys of its own
// sequence. Nothing of size N x N is ever stored.
//
// head_dim 64 and 32, tensor cores (flash-attention-2 scheme): one CTA per
// (64-query tile, head, sequence), 4 warps x 16 query rows. K/V tiles of 64 keys are
// staged in shared memory with cp.async (double-buffered, zero-filled past the
// sequence end); S = Q K^T and O += P V are mma.sync m16n8k16 products with
// fp32 accumulators; the softmax is the online one, kept in registers, in the
// exp2 domain (scores pre-multiplied by log2(e) / sqrt(D)).
//
// Other head dims (multiples of 8 up to 128): a plain fp32 kernel, one warp
// per (query, head), keys 32 at a time.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"

// mma.m16n8k16 and cp.async need sm_80. Device code compiled for an older
// target (CMAKE_CUDA_ARCHITECTURES below 80) keeps the tensor-core entry point
// but runs the plain per-row path inside it, so results stay right.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define XLMR_ATTENTION_NO_MMA 1
#endif

namespace xlmr::cuda {
namespace {

// ---- 16-bit element helpers ----------------------------------------------
// Kernels move raw 16-bit words (uint16_t); the element type only decides how
// a word converts to and from fp32 and which mma variant runs.
template <typename T>
struct Elem;

template <>
struct Elem<__half> {
  static __device__ __forceinline__ float to_float(uint16_t u) { return __half2float(__ushort_as_half(u)); }
  static __device__ __forceinline__ uint16_t from_float(float x) { return __half_as_ushort(__float2half_rn(x)); }
  // lo goes to the low 16 bits (the lower column / k index of a fragment pair).
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &h, sizeof(u));
    return u;
  }
  // d += a * b for one m16n8k16 tile (row-major A, column-major B).
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifndef XLMR_ATTENTION_NO_MMA
    ptx::mma_m16n8k16_f16(d, a, b0, b1);
#endif
  }
};

template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ float to_float(uint16_t u) { return __uint_as_float(uint32_t(u) << 16); }
  static __device__ __forceinline__ uint16_t from_float(float x) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &h, sizeof(u));
    return u;
  }
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifndef XLMR_ATTENTION_NO_MMA
    ptx::mma_m16n8k16_bf16(d, a, b0, b1);
#endif
  }
};

#ifndef XLMR_ATTENTION_NO_MMA
using ptx::cp_async_16;
using ptx::cp_async_commit;
using ptx::cp_async_wait;

__device__ __forceinline__ uint32_t lds32(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }
#endif

// ---- the plain path: one warp computes one (query, head) in fp32 ------------
constexpr int kMaxD = 128;

// Lanes first score one key each of a chunk of 32 (a full dot product over
// D), the chunk updates the online softmax, then lanes switch to owning head
// columns lane, lane+32, ... to accumulate P V. q_s: D floats of shared memory
// owned by this warp. Every lane of the warp must call it with the same row.
template <typename T>
__device__ void attend_row_plain(uint16_t* __restrict__ out,        // [N, E]
                                 const uint16_t* __restrict__ qkv,  // [N, 3E]
                                 int start, int len, int i, int h, int heads, int D, float scale, float* q_s) {
  const int lane = threadIdx.x % 32;
  const int E = heads * D;
  const size_t row_stride = size_t(3) * E;
  const uint16_t* seq_base = qkv + size_t(start) * row_stride + size_t(h) * D;  // Q of row 0
  __syncwarp();  // earlier readers of q_s are done
  {
    const uint16_t* qrow = seq_base + size_t(i) * row_stride;
    for (int d = lane; d < D; d += 32) q_s[d] = Elem<T>::to_float(qrow[d]) * scale;
  }
  __syncwarp();

  float m_run = -INFINITY, l_run = 0.f;
  float o[kMaxD / 32] = {0.f, 0.f, 0.f, 0.f};  // columns lane + 32c
  for (int j0 = 0; j0 < len; j0 += 32) {
    const int j = j0 + lane;
    float sc = -INFINITY;
    if (j < len) {
      // Row stride 6HD bytes and column offset 2(E + hD) bytes are multiples of
      // 16 since D % 8 == 0, so 8-element vector loads are aligned.
      const uint16_t* krow = seq_base + size_t(j) * row_stride + E;
      float dot = 0.f;
      for (int d = 0; d < D; d += 8) {
        const uint4 w = *reinterpret_cast<const uint4*>(krow + d);
        const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          dot += q_s[d + 2 * e] * Elem<T>::to_float(uint16_t(words[e] & 0xffffu));
          dot += q_s[d + 2 * e + 1] * Elem<T>::to_float(uint16_t(words[e] >> 16));
        }
      }
      sc = dot;
    }
    float cmax = sc;
#pragma unroll
    for (int off = 16; off > 0; off /= 2) cmax = fmaxf(cmax, __shfl_xor_sync(0xffffffffu, cmax, off));
    // Lane 0's key j0 < len is real, so cmax and m_new are finite.
    const float m_new = fmaxf(m_run, cmax);
    const float alpha = expf(m_run - m_new);  // 0 on the first chunk
    const float p = j < len ? expf(sc - m_new) : 0.f;
    float psum = p;
#pragma unroll
    for (int off = 16; off > 0; off /= 2) psum += __shfl_xor_sync(0xffffffffu, psum, off);
    l_run = l_run * alpha + psum;
    m_run = m_new;
#pragma unroll
    for (int c = 0; c < kMaxD / 32; ++c) o[c] *= alpha;

    const int n_valid = min(32, len - j0);
    for (int jj = 0; jj < n_valid; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      const uint16_t* vrow = seq_base + size_t(j0 + jj) * row_stride + 2 * size_t(E);
#pragma unroll
      for (int c = 0; c < kMaxD / 32; ++c) {
        const int d = lane + 32 * c;
        if (d < D) o[c] += pj * Elem<T>::to_float(vrow[d]);
      }
    }
  }

  const float inv = 1.f / l_run;  // l_run >= 1: the max key contributes exp(0)
  uint16_t* orow = out + (size_t(start) + i) * E + size_t(h) * D;
#pragma unroll
  for (int c = 0; c < kMaxD / 32; ++c) {
    const int d = lane + 32 * c;
    if (d < D) orow[d] = Elem<T>::from_float(o[c] * inv);
  }
}

// Other head dims. grid (ceil(max_seqlen / 4), H, S), block 128: one warp
// per (query, head).
constexpr int kFbWarps = 4;  // query rows per CTA

template <typename T>
__global__ void __launch_bounds__(kFbWarps * 32)
    attention_generic_kernel(uint16_t* __restrict__ out,        // [N, E]
                             const uint16_t* __restrict__ qkv,  // [N, 3E]
                             const int32_t* __restrict__ cu_seqlens, int heads, int D, float scale) {
  __shared__ float q_s[kFbWarps][kMaxD];
  const int warp = threadIdx.x / 32;
  const int start = cu_seqlens[blockIdx.z];
  const int len = cu_seqlens[blockIdx.z + 1] - start;
  const int i = blockIdx.x * kFbWarps + warp;
  if (i >= len) return;  // whole warp; only warp-level sync inside
  attend_row_plain<T>(out, qkv, start, len, i, blockIdx.y, heads, D, scale, q_s[warp]);
}

// ---- head_dim 64 and 32: tensor-core kernel ----------------------------------
// D, the head dim, is a template parameter: 64 (XLM-R base/large, bge-m3,
// e5-base/large) or 32 (multilingual-e5-small). Q, two K and two V tiles of
// 64 x (D + 8) 16-bit elements fit the 48 KiB of static shared memory up to
// D = 64.
constexpr bool tensor_core_head_dim(int d) { return d == 64 || d == 32; }
constexpr int kBlockM = 64;   // query rows per CTA (4 warps x 16)
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

#ifndef XLMR_ATTENTION_NO_MMA
constexpr int kBlockN = 64;  // keys per K/V tile
// Shared row stride in elements: D + 8 (144 bytes for D = 64, 80 for 32)
// keeps every row 16-byte aligned for cp.async and makes the fragment loads
// below bank-conflict free (row r starts at bank 36r resp. 20r mod 32: 8 rows
// start on 8 different multiples of 4, so 8 rows x 4 words cover all 32 banks).
template <int D>
constexpr int kLdsOf = D + 8;

// Stages rows [r0, r0 + 64) of one D-wide column slice (src points at row 0
// of the sequence, slice start) into dst [64][D + 8]; rows >= len become zero.
template <int D>
__device__ __forceinline__ void load_tile(uint16_t* dst, const uint16_t* src, int r0, int len, size_t row_stride,
                                          int tid) {
  constexpr int kLds = kLdsOf<D>;
  constexpr int kChunksPerRow = D / 8;  // 16-byte chunks
  static_assert(kBlockN * kChunksPerRow % kThreads == 0, "tile chunks must split evenly over the threads");
#pragma unroll
  for (int i = 0; i < kBlockN * kChunksPerRow / kThreads; ++i) {
    const int c = tid + i * kThreads;
    const int r = c / kChunksPerRow, ch = c % kChunksPerRow;
    const bool valid = r0 + r < len;
    const uint16_t* g = valid ? src + size_t(r0 + r) * row_stride + ch * 8 : src;
    cp_async_16(dst + r * kLds + ch * 8, g, valid);
  }
}
#endif

// grid (ceil(max_seqlen / 64), H, S), block 128.
// Fragments of mma.m16n8k16 as in kernels/cuda/ptx.cuh (g = lane / 4,
// t = lane % 4): A regs (row g | g+8, k 2t.. | 2t+8..), B regs (k 2t.. |
// 2t+8.., col g), C (row g | g+8, cols 2t, 2t+1).
// Three CTAs per SM: the register budget (<= 170) then holds Q fragments,
// scores and the output accumulator without spilling.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 3)
    attention_mma_kernel(uint16_t* __restrict__ out,        // [N, E]
                         const uint16_t* __restrict__ qkv,  // [N, 3E]
                         const int32_t* __restrict__ cu_seqlens, int heads, float scale_log2) {
  static_assert(D == 64 || D == 32, "head dims the tensor-core kernel is built for (tensor_core_head_dim)");
  constexpr int kD = D;
#ifdef XLMR_ATTENTION_NO_MMA
  constexpr float kScale = D == 64 ? 0.125f : 0.17677669529663688f;  // 1 / sqrt(D)
  // Pre-sm_80 device code: each warp runs its 16 rows through the plain path.
  __shared__ float q_rows[kWarps][kD];
  const int start = cu_seqlens[blockIdx.z];
  const int len = cu_seqlens[blockIdx.z + 1] - start;
  const int warp = threadIdx.x / 32;
  for (int r = 0; r < 16; ++r) {
    const int i = blockIdx.x * kBlockM + warp * 16 + r;
    if (i < len) attend_row_plain<T>(out, qkv, start, len, i, blockIdx.y, heads, kD, kScale, q_rows[warp]);
  }
  (void)scale_log2;
#else
  constexpr int kLds = kLdsOf<D>;
  __shared__ __align__(16) uint16_t q_s[kBlockM * kLds];
  __shared__ __align__(16) uint16_t k_s[2][kBlockN * kLds];
  __shared__ __align__(16) uint16_t v_s[2][kBlockN * kLds];

  const int m0 = blockIdx.x * kBlockM;
  const int h = blockIdx.y;
  const int seq = blockIdx.z;
  const int start = cu_seqlens[seq];
  const int len = cu_seqlens[seq + 1] - start;
  if (m0 >= len) return;  // whole CTA: no barrier reached yet

  const int E = heads * kD;
  const size_t row_stride = size_t(3) * E;
  const uint16_t* q_src = qkv + size_t(start) * row_stride + size_t(h) * kD;
  const uint16_t* k_src = q_src + E;
  const uint16_t* v_src = q_src + 2 * size_t(E);

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int n_tiles = (len + kBlockN - 1) / kBlockN;

  // Group 0: the Q tile; group 1: K/V tile 0.
  load_tile<D>(q_s, q_src, m0, len, row_stride, tid);
  cp_async_commit();
  load_tile<D>(k_s[0], k_src, 0, len, row_stride, tid);
  load_tile<D>(v_s[0], v_src, 0, len, row_stride, tid);
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();

  // This warp's 16 query rows as A fragments, D / 16 k-steps of 16 over D.
  uint32_t qf[kD / 16][4];
  {
    const uint16_t* q0 = q_s + (warp * 16 + g) * kLds + 2 * t;
    const uint16_t* q8 = q0 + 8 * kLds;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      qf[kk][0] = lds32(q0 + kk * 16);
      qf[kk][1] = lds32(q8 + kk * 16);
      qf[kk][2] = lds32(q0 + kk * 16 + 8);
      qf[kk][3] = lds32(q8 + kk * 16 + 8);
    }
  }

  // Per thread: rows g and g+8 of the warp's 16; o[dt] covers head columns
  // dt*8 + 2t, +1. m is the running max (log2 domain), l this thread's partial
  // sum of p over its columns (completed across the quad at the end).
  float o[kD / 8][4];
#pragma unroll
  for (int dt = 0; dt < kD / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.f, 0.f};

  for (int j = 0; j < n_tiles; ++j) {
    const int buf = j & 1;
    // Prefetch tile j+1 into the other buffer. Its last readers finished in
    // iteration j-1, before that iteration's closing barrier.
    if (j + 1 < n_tiles) {
      load_tile<D>(k_s[buf ^ 1], k_src, (j + 1) * kBlockN, len, row_stride, tid);
      load_tile<D>(v_s[buf ^ 1], v_src, (j + 1) * kBlockN, len, row_stride, tid);
      cp_async_commit();
      cp_async_wait<1>();  // everything but tile j+1 has landed
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    // S = Q K^T for 16 rows x 64 keys: 8 n-tiles of 8 keys.
    // B[k][n] = K[key n][dim k], so b0/b1 are two adjacent dims of one key row.
    const uint16_t* ks = k_s[buf];
    float s[kBlockN / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt) {
        const uint16_t* kp = ks + (nt * 8 + g) * kLds + kk * 16 + 2 * t;
        Elem<T>::mma(s[nt], qf[kk], lds32(kp), lds32(kp + 8));
      }
    }

    // Scale into the log2 domain; keys past the sequence end get -inf.
    const int n0 = j * kBlockN;
    const bool partial = n0 + kBlockN > len;
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = n0 + nt * 8 + 2 * t + (e & 1);
        s[nt][e] = (partial && key >= len) ? -INFINITY : s[nt][e] * scale_log2;
      }
    }

    // Row maxima over the tile, completed across the 4 threads of a quad
    // (lanes 4g..4g+3 hold the same two rows).
    float mx[2] = {m_run[0], m_run[1]};
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
      mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    }
    // Every tile holds at least one real key, so mx is finite; the guard only
    // keeps -inf - -inf from ever producing NaN.
    float base[2], alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      base[r] = mx[r] == -INFINITY ? 0.f : mx[r];
      alpha[r] = exp2f(m_run[r] - base[r]);  // 0 on the first tile
      m_run[r] = mx[r];
    }

    float rsum[2] = {0.f, 0.f};
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
      s[nt][0] = exp2f(s[nt][0] - base[0]);
      s[nt][1] = exp2f(s[nt][1] - base[0]);
      s[nt][2] = exp2f(s[nt][2] - base[1]);
      s[nt][3] = exp2f(s[nt][3] - base[1]);
      rsum[0] += s[nt][0] + s[nt][1];
      rsum[1] += s[nt][2] + s[nt][3];
    }
    l_run[0] = l_run[0] * alpha[0] + rsum[0];
    l_run[1] = l_run[1] * alpha[1] + rsum[1];
#pragma unroll
    for (int dt = 0; dt < kD / 8; ++dt) {
      o[dt][0] *= alpha[0];
      o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1];
      o[dt][3] *= alpha[1];
    }

    // O += P V. The C fragments of n-tiles 2kc and 2kc+1 are exactly the A
    // fragment of keys [16kc, 16kc+16): (row g, keys 2t..) = s[2kc][0..1],
    // (row g+8) = s[2kc][2..3], keys +8 = s[2kc+1][..].
    // B[k][n] = V[key k][dim n]: b0 = V[2t][n], V[2t+1][n]; b1 = rows +8.
    const uint16_t* vs = v_s[buf];
#pragma unroll
    for (int kc = 0; kc < kBlockN / 16; ++kc) {
      uint32_t pa[4];
      pa[0] = Elem<T>::pack(s[2 * kc][0], s[2 * kc][1]);
      pa[1] = Elem<T>::pack(s[2 * kc][2], s[2 * kc][3]);
      pa[2] = Elem<T>::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]);
      pa[3] = Elem<T>::pack(s[2 * kc + 1][2], s[2 * kc + 1][3]);
      const uint16_t* vrow = vs + (kc * 16 + 2 * t) * kLds + g;
#pragma unroll
      for (int dt = 0; dt < kD / 8; ++dt) {
        const uint16_t* vp = vrow + dt * 8;
        const uint32_t b0 = uint32_t(vp[0]) | (uint32_t(vp[kLds]) << 16);
        const uint32_t b1 = uint32_t(vp[8 * kLds]) | (uint32_t(vp[9 * kLds]) << 16);
        Elem<T>::mma(o[dt], pa, b0, b1);
      }
    }
    __syncthreads();  // all reads of buffer `buf` done before it is refilled
  }

  // Complete the row sums across the quad; every row saw at least one real
  // key whose p is exp2(0) = 1 at its max, so l >= 1.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
  const float inv0 = 1.f / l_run[0], inv1 = 1.f / l_run[1];
  const int row0 = m0 + warp * 16 + g;  // and row0 + 8
  uint16_t* dst = out + size_t(start) * E + size_t(h) * kD + 2 * t;
  if (row0 < len) {
    uint16_t* p = dst + size_t(row0) * E;
#pragma unroll
    for (int dt = 0; dt < kD / 8; ++dt)
      *reinterpret_cast<uint32_t*>(p + dt * 8) = Elem<T>::pack(o[dt][0] * inv0, o[dt][1] * inv0);
  }
  if (row0 + 8 < len) {
    uint16_t* p = dst + size_t(row0 + 8) * E;
#pragma unroll
    for (int dt = 0; dt < kD / 8; ++dt)
      *reinterpret_cast<uint32_t*>(p + dt * 8) = Elem<T>::pack(o[dt][2] * inv1, o[dt][3] * inv1);
  }
#endif
}

template <typename T>
void launch(void* out, const void* qkv, const int32_t* cu_seqlens, int n_seqs, int max_seqlen, int heads,
            int head_dim, cudaStream_t stream) {
  auto* o = static_cast<uint16_t*>(out);
  const auto* in = static_cast<const uint16_t*>(qkv);
  if (tensor_core_head_dim(head_dim)) {
    const float scale_log2 = float(1.4426950408889634 / std::sqrt(double(head_dim)));  // log2(e) / sqrt(D)
    const dim3 grid(unsigned((max_seqlen + kBlockM - 1) / kBlockM), unsigned(heads), unsigned(n_seqs));
    if (head_dim == 64)
      XLMR_LAUNCH(grid, kThreads, 0, stream, attention_mma_kernel<T, 64>)(o, in, cu_seqlens, heads, scale_log2);
    else
      XLMR_LAUNCH(grid, kThreads, 0, stream, attention_mma_kernel<T, 32>)(o, in, cu_seqlens, heads, scale_log2);
  } else {
    const float scale = float(1.0 / std::sqrt(double(head_dim)));
    const dim3 grid(unsigned((max_seqlen + kFbWarps - 1) / kFbWarps), unsigned(heads), unsigned(n_seqs));
    XLMR_LAUNCH(grid, kFbWarps * 32, 0, stream, attention_generic_kernel<T>)(o, in, cu_seqlens, heads, head_dim,
                                                                            scale);
  }
}

}  // namespace

void varlen_attention(Half16 t, void* out, const void* qkv, const int32_t* cu_seqlens, int n_seqs, int max_seqlen,
                      int heads, int head_dim, Stream s) {
  XLMR_CHECK(n_seqs >= 0 && max_seqlen >= 0, "varlen_attention: negative sequence count or length");
  if (n_seqs == 0 || max_seqlen == 0) return;
  XLMR_CHECK(head_dim > 0 && head_dim % 8 == 0 && head_dim <= kMaxD,
             "varlen_attention: head size must be a multiple of 8 up to 128, got " + std::to_string(head_dim));
  // Grid y and z carry heads and sequences.
  XLMR_CHECK(heads > 0 && heads <= 65535 && n_seqs <= 65535,
             "varlen_attention: " + std::to_string(heads) + " heads x " + std::to_string(n_seqs) +
                 " sequences is outside the supported range (1..65535 each)");
  XLMR_CHECK(reinterpret_cast<uintptr_t>(out) % 16 == 0 && reinterpret_cast<uintptr_t>(qkv) % 16 == 0,
             "varlen_attention: qkv and out must be 16-byte aligned device pointers");
  const auto stream = static_cast<cudaStream_t>(s);
  if (t == Half16::f16)
    launch<__half>(out, qkv, cu_seqlens, n_seqs, max_seqlen, heads, head_dim, stream);
  else
    launch<__nv_bfloat16>(out, qkv, cu_seqlens, n_seqs, max_seqlen, heads, head_dim, stream);
  detail::check_launch("varlen_attention");
}

}  // namespace xlmr::cuda
