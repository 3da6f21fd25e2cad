// Variable-length multi-head self-attention over packed QKV rows, the CUDA
// twin of ref::attention_padded without the padding.
//
// Rows are packed: sequence s owns rows [cu_seqlens[s], cu_seqlens[s+1]) of
// qkv [N, 3E] and out [N, E]; a query sees exactly the keys of its own
// sequence. Nothing of size N x N is ever stored.
//
// Head dims 32, 64, 80 and 128, tensor cores (flash-attention-2 scheme): one
// CTA per (64-query tile, head, sequence), 4 warps x 16 query rows. K/V tiles
// of 64 keys are staged in shared memory with cp.async (double-buffered,
// zero-filled past the sequence end); S = Q K^T and O += P V are mma.sync
// m16n8k16 products with fp32 accumulators, their K and V operands loaded
// by ldmatrix (V transposed on the way), one instruction for two products;
// the softmax is the online one,
// kept in registers, in the exp2 domain (scores pre-multiplied by
// log2(e) / sqrt(D)). 80 and 128 (XLM-R XL, XXL) need more than the 48 KiB of
// shared memory a kernel gets without an opt-in; attention_prepare opts in
// where the device allows it and otherwise picks the plain kernel.
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
using ptx::ldmatrix_x4;
using ptx::ldmatrix_x4_trans;

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

// ---- head dims 32, 64, 80, 128: tensor-core kernel ------------------------
// D, the head dim, is a template parameter: 64 (XLM-R base/large, bge-m3,
// e5-base/large), 32 (multilingual-e5-small), 80 (XLM-R XL), 128 (XLM-R XXL).
constexpr bool tensor_core_head_dim(int d) { return d == 32 || d == 64 || d == 80 || d == 128; }
constexpr int kBlockM = 64;  // query rows per CTA (4 warps x 16)
constexpr int kBlockN = 64;  // keys per K/V tile
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr size_t kDefaultSmem = size_t(48) << 10;  // dynamic shared memory a launch gets without an opt-in

// Shared row stride in elements: D + 8 (80, 144, 176, 272 bytes) keeps every
// row 16-byte aligned for cp.async and makes the fragment loads below
// bank-conflict free: row r starts at word (D + 8) r / 2, i.e. bank 20r, 36r,
// 44r, 68r mod 32, so 8 consecutive rows start on 8 different multiples of 4
// and 8 rows x 4 words cover all 32 banks.
constexpr int lds_of(int d) { return d + 8; }
// Dynamic shared memory of one CTA: the Q tile and two K and two V tiles, each
// 64 rows x (D + 8) 16-bit elements: 25 KiB (D 32), 45 KiB (64), 55 KiB (80),
// 85 KiB (128).
constexpr size_t mma_smem_bytes(int d) { return size_t(5) * kBlockM * size_t(lds_of(d)) * 2; }
static_assert(kBlockM == kBlockN, "the Q tile and the K/V tiles share one size in mma_smem_bytes");
static_assert(mma_smem_bytes(64) <= kDefaultSmem, "head dims up to 64 need no shared-memory opt-in");
// CTAs per SM the register budget is sized for: three keep the registers at
// <= 170 per thread, enough for the Q fragments, scores and output accumulator
// up to D = 80; D = 128 holds twice the accumulator of 64 and gets 255.
template <int D>
constexpr int kMinCtasOf = D <= 80 ? 3 : 2;

#ifndef XLMR_ATTENTION_NO_MMA
template <int D>
constexpr int kLdsOf = lds_of(D);

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

// grid (ceil(max_seqlen / 64), H, S), block 128, mma_smem_bytes(D) of
// dynamic shared memory.
// Fragments of mma.m16n8k16 as in kernels/cuda/ptx.cuh (g = lane / 4,
// t = lane % 4): A regs (row g | g+8, k 2t.. | 2t+8..), B regs (k 2t.. |
// 2t+8.., col g), C (row g | g+8, cols 2t, 2t+1).
template <typename T, int D>
__global__ void __launch_bounds__(kThreads, kMinCtasOf<D>)
    attention_mma_kernel(uint16_t* __restrict__ out,        // [N, E]
                         const uint16_t* __restrict__ qkv,  // [N, 3E]
                         const int32_t* __restrict__ cu_seqlens, int heads, float scale_log2) {
  static_assert(D == 32 || D == 64 || D == 80 || D == 128, "head dims the tensor-core kernel is built for");
  constexpr int kD = D;
#ifdef XLMR_ATTENTION_NO_MMA
  // Pre-sm_80 device code: each warp runs its 16 rows through the plain path.
  const float scale = scale_log2 * 0.6931471805599453f;  // back to 1 / sqrt(D)
  float* q_rows = detail::dynamic_shared<float>();       // [kWarps][D], within mma_smem_bytes(D)
  const int start = cu_seqlens[blockIdx.z];
  const int len = cu_seqlens[blockIdx.z + 1] - start;
  const int warp = threadIdx.x / 32;
  for (int r = 0; r < 16; ++r) {
    const int i = blockIdx.x * kBlockM + warp * 16 + r;
    if (i < len) attend_row_plain<T>(out, qkv, start, len, i, blockIdx.y, heads, kD, scale, q_rows + warp * kD);
  }
#else
  constexpr int kLds = kLdsOf<D>;
  constexpr int kTile = kBlockM * kLds;  // elements of one tile
  // Q | K0 | K1 | V0 | V1. Buffers are picked by arithmetic, not from an
  // array of pointers, which a runtime index would put in local memory.
  uint16_t* const q_s = detail::dynamic_shared<uint16_t>();
  auto k_s = [q_s](int b) { return q_s + (1 + b) * kTile; };
  auto v_s = [q_s](int b) { return q_s + (3 + b) * kTile; };

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
  load_tile<D>(k_s(0), k_src, 0, len, row_stride, tid);
  load_tile<D>(v_s(0), v_src, 0, len, row_stride, tid);
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
      load_tile<D>(k_s(buf ^ 1), k_src, (j + 1) * kBlockN, len, row_stride, tid);
      load_tile<D>(v_s(buf ^ 1), v_src, (j + 1) * kBlockN, len, row_stride, tid);
      cp_async_commit();
      cp_async_wait<1>();  // everything but tile j+1 has landed
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    // S = Q K^T for 16 rows x 64 keys: 8 n-tiles of 8 keys.
    // B[k][n] = K[key n][dim k]: b0 = (key g, dims 2t, 2t+1), b1 = dims +8,
    // exactly what ldmatrix gives of the 8 x 8 block (keys, dims) of K. One
    // x4 load serves n-tiles nt and nt+1: matrix m (lanes 8m..8m+7 name its
    // rows) is keys (nt + m / 2) * 8 + i, dims kk * 16 + (m % 2) * 8.
    const uint16_t* ks = k_s(buf);
    const uint16_t* k_row = ks + ((lane / 16) * 8 + lane % 8) * kLds + ((lane / 8) % 2) * 8;
    float s[kBlockN / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; nt += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, k_row + nt * 8 * kLds + kk * 16);
        Elem<T>::mma(s[nt], qf[kk], b[0], b[1]);
        Elem<T>::mma(s[nt + 1], qf[kk], b[2], b[3]);
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
    // B[k][n] = V[key k][dim n]: b0 = (keys 2t, 2t+1, dim g), b1 = keys +8:
    // the transposed 8 x 8 blocks (keys, dims) of V, which ldmatrix .trans
    // gives. One x4 load serves head-dim tiles dt and dt+1: matrix m is keys
    // kc * 16 + (m % 2) * 8 + i, dims (dt + m / 2) * 8.
    const uint16_t* vs = v_s(buf);
    const uint16_t* v_row = vs + (((lane / 8) % 2) * 8 + lane % 8) * kLds + (lane / 16) * 8;
    static_assert(kD % 16 == 0, "head-dim tiles go in pairs");
#pragma unroll
    for (int kc = 0; kc < kBlockN / 16; ++kc) {
      uint32_t pa[4];
      pa[0] = Elem<T>::pack(s[2 * kc][0], s[2 * kc][1]);
      pa[1] = Elem<T>::pack(s[2 * kc][2], s[2 * kc][3]);
      pa[2] = Elem<T>::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]);
      pa[3] = Elem<T>::pack(s[2 * kc + 1][2], s[2 * kc + 1][3]);
#pragma unroll
      for (int dt = 0; dt < kD / 8; dt += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, v_row + kc * 16 * kLds + dt * 8);
        Elem<T>::mma(o[dt], pa, b[0], b[1]);
        Elem<T>::mma(o[dt + 1], pa, b[2], b[3]);
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

template <typename T, int D>
const void* mma_kernel_symbol() {
  return reinterpret_cast<const void*>(&attention_mma_kernel<T, D>);
}

template <typename T>
void launch_mma(uint16_t* o, const uint16_t* in, const int32_t* cu_seqlens, const dim3& grid, int heads,
                int head_dim, float scale_log2, cudaStream_t stream) {
  const size_t smem = mma_smem_bytes(head_dim);
  switch (head_dim) {
    case 32:
      XLMR_LAUNCH(grid, kThreads, smem, stream, attention_mma_kernel<T, 32>)(o, in, cu_seqlens, heads, scale_log2);
      break;
    case 64:
      XLMR_LAUNCH(grid, kThreads, smem, stream, attention_mma_kernel<T, 64>)(o, in, cu_seqlens, heads, scale_log2);
      break;
    case 80:
      XLMR_LAUNCH(grid, kThreads, smem, stream, attention_mma_kernel<T, 80>)(o, in, cu_seqlens, heads, scale_log2);
      break;
    case 128:
      XLMR_LAUNCH(grid, kThreads, smem, stream, attention_mma_kernel<T, 128>)(o, in, cu_seqlens, heads, scale_log2);
      break;
    default:  // varlen_attention checked tensor_core_head_dim: a head dim added there needs its case here
      XLMR_THROW("varlen_attention: internal: no tensor-core kernel instantiated for head size " +
                 std::to_string(head_dim));
  }
}

template <typename T>
void launch(AttentionKernel k, void* out, const void* qkv, const int32_t* cu_seqlens, int n_seqs, int max_seqlen,
            int heads, int head_dim, cudaStream_t stream) {
  auto* o = static_cast<uint16_t*>(out);
  const auto* in = static_cast<const uint16_t*>(qkv);
  if (k == AttentionKernel::tensor_core) {
    const float scale_log2 = float(1.4426950408889634 / std::sqrt(double(head_dim)));  // log2(e) / sqrt(D)
    const dim3 grid(unsigned((max_seqlen + kBlockM - 1) / kBlockM), unsigned(heads), unsigned(n_seqs));
    launch_mma<T>(o, in, cu_seqlens, grid, heads, head_dim, scale_log2, stream);
  } else {
    const float scale = float(1.0 / std::sqrt(double(head_dim)));
    const dim3 grid(unsigned((max_seqlen + kFbWarps - 1) / kFbWarps), unsigned(heads), unsigned(n_seqs));
    XLMR_LAUNCH(grid, kFbWarps * 32, 0, stream, attention_generic_kernel<T>)(o, in, cu_seqlens, heads, head_dim,
                                                                            scale);
  }
}

void check_head_dim(const char* what, int head_dim) {
  XLMR_CHECK(head_dim > 0 && head_dim % 8 == 0 && head_dim <= kMaxD,
             std::string(what) + ": head size must be a multiple of 8 up to 128, got " + std::to_string(head_dim));
}

}  // namespace

const char* to_string(AttentionKernel k) { return k == AttentionKernel::tensor_core ? "tensor-core" : "plain"; }

AttentionKernel attention_prepare(Half16 t, int head_dim) {
  check_head_dim("attention_prepare", head_dim);
  if (!tensor_core_head_dim(head_dim)) return AttentionKernel::plain;
  // Only where mma.sync exists (sm_80; an older device would run the
  // kernel's plain fallback under the tensor-core name), and at 80 and 128
  // only where a block may have that much shared memory.
  const DeviceLimits dev = device_limits();
  if (dev.cc_major < 8) return AttentionKernel::plain;
  const size_t smem = mma_smem_bytes(head_dim);
  if (smem <= kDefaultSmem) return AttentionKernel::tensor_core;
  if (dev.smem_per_block_optin < smem) return AttentionKernel::plain;
  const bool bf16 = t == Half16::bf16;
  const void* kernel = head_dim == 80
                           ? (bf16 ? mma_kernel_symbol<__nv_bfloat16, 80>() : mma_kernel_symbol<__half, 80>())
                           : (bf16 ? mma_kernel_symbol<__nv_bfloat16, 128>() : mma_kernel_symbol<__half, 128>());
  allow_dynamic_smem(kernel, smem);
  return AttentionKernel::tensor_core;
}

void varlen_attention(Half16 t, AttentionKernel k, void* out, const void* qkv, const int32_t* cu_seqlens, int n_seqs,
                      int max_seqlen, int heads, int head_dim, Stream s) {
  XLMR_CHECK(n_seqs >= 0 && max_seqlen >= 0, "varlen_attention: negative sequence count or length");
  if (n_seqs == 0 || max_seqlen == 0) return;
  check_head_dim("varlen_attention", head_dim);
  XLMR_CHECK(k == AttentionKernel::plain || tensor_core_head_dim(head_dim),
             "varlen_attention: the tensor-core kernel takes head sizes 32, 64, 80 and 128, not " +
                 std::to_string(head_dim) + " (use the kernel attention_prepare chose)");
  // Grid y and z carry heads and sequences.
  XLMR_CHECK(heads > 0 && heads <= 65535 && n_seqs <= 65535,
             "varlen_attention: " + std::to_string(heads) + " heads x " + std::to_string(n_seqs) +
                 " sequences is outside the supported range (1..65535 each)");
  XLMR_CHECK(reinterpret_cast<uintptr_t>(out) % 16 == 0 && reinterpret_cast<uintptr_t>(qkv) % 16 == 0,
             "varlen_attention: qkv and out must be 16-byte aligned device pointers");
  const auto stream = static_cast<cudaStream_t>(s);
  if (t == Half16::f16)
    launch<__half>(k, out, qkv, cu_seqlens, n_seqs, max_seqlen, heads, head_dim, stream);
  else
    launch<__nv_bfloat16>(k, out, qkv, cu_seqlens, n_seqs, max_seqlen, heads, head_dim, stream);
  detail::check_launch("varlen_attention");
}

}  // namespace xlmr::cuda
