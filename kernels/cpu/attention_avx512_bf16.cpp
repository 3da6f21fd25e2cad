// Attention with bf16 products on AVX512_BF16 (cpu::varlen_attention with
// AttentionProducts::bf16 on Bf16Unit::avx512_bf16), for CPUs that have the
// instruction but no AMX (AMD Zen 4 and later, Intel Cooper Lake): the
// skeleton, the packing and the softmax are attention_bf16.inc's; here
// Q.K^T and P.V run as VDPBF16PS, which adds the two products of a bf16
// pair into each fp32 lane - twice the multiplies of an FMA, and on Zen 4
// issued at the FMA's rate. Its own translation unit, so that nothing else
// is compiled for CPU features the AVX-512 build cannot assume.
//
// Register blocking: 4 query rows at a time, against up to 4 groups of 16
// keys (scores) or head dims (P.V) in 16 accumulators; each step broadcasts
// one bf16 pair per row (of Q, or of P) against one pair row (of Kt, or of
// Vb) per group.

// GCC 12 reports its own _mm512_undefined_* helpers as uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/kernel_table.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma,avx2")

namespace xlmr {
namespace cpu {
namespace avx512_bf16 {

namespace {

#include "kernels/cpu/simd_avx512.inc"
#include "kernels/cpu/attention_bf16.inc"

constexpr int kRows = 4;  // query rows per register block

// The bf16 pair at p (two adjacent uint16), in every lane.
inline __m512i broadcast_pair(const uint16_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm512_set1_epi32(int(v));
}

inline __m512 dot(__m512 acc, __m512i a, __m512i b) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b); }

// Both products have one form: for 4 rows r and NG groups g of 16 columns,
//   C[r][16g ..] (+)= sum over steps k of pair(A[r][2k], A[r][2k+1]) . Bp[k][16g ..]
// with A bf16 rows lda apart and Bp rows of pairs ldb apart. Scores: A = Qb,
// Bp = Kt from key j0, C = S, from zero. P.V: A = P, Bp = Vb from key pair
// j0/2 and head-dim column dc, C = O from column dc, added to.
template <int NG, bool kAccumulate>
void rows_block(const uint16_t* A, size_t lda, const uint32_t* Bp, size_t ldb, int steps, float* C, size_t ldc) {
  __m512 acc[kRows][NG];
  for (int r = 0; r < kRows; ++r)
    for (int g = 0; g < NG; ++g)
      acc[r][g] = kAccumulate ? _mm512_loadu_ps(C + size_t(r) * ldc + g * T) : _mm512_setzero_ps();
  for (int k = 0; k < steps; ++k) {
    const uint32_t* b = Bp + size_t(k) * ldb;
    __m512i bv[NG];
    for (int g = 0; g < NG; ++g) bv[g] = _mm512_loadu_si512(b + g * T);
    for (int r = 0; r < kRows; ++r) {
      const __m512i a = broadcast_pair(A + size_t(r) * lda + 2 * k);
      for (int g = 0; g < NG; ++g) acc[r][g] = dot(acc[r][g], a, bv[g]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int g = 0; g < NG; ++g) _mm512_storeu_ps(C + size_t(r) * ldc + g * T, acc[r][g]);
}

// rows_block with NG = groups (1 to 4) chosen at run time.
template <bool kAccumulate>
void rows_block(int groups, const uint16_t* A, size_t lda, const uint32_t* Bp, size_t ldb, int steps, float* C,
                size_t ldc) {
  switch (groups) {
    case 1: rows_block<1, kAccumulate>(A, lda, Bp, ldb, steps, C, ldc); break;
    case 2: rows_block<2, kAccumulate>(A, lda, Bp, ldb, steps, C, ldc); break;
    case 3: rows_block<3, kAccumulate>(A, lda, Bp, ldb, steps, C, ldc); break;
    default: rows_block<4, kAccumulate>(A, lda, Bp, ldb, steps, C, ldc); break;
  }
}

// The AVX512_BF16 Products policy of attention_bf16.inc.
struct DotProducts {
  static constexpr int kRowQuantum = kRows;
  // D/2 pair steps of Q against the key pairs.
  static void scores(const Scratch& s, int rows, int D, int Np, int j0, int groups) {
    for (int r = 0; r < rows; r += kRows)
      rows_block<false>(groups, s.Qb + size_t(r) * D, size_t(D), s.Kt + j0, size_t(Np), D / 2, s.S + size_t(r) * B,
                        size_t(B));
  }
  // Keys [j0, j0 + jn) are pairs [j0/2, j0/2 + ceil(jn/2)); an odd last key's
  // partner is zero in both P (probability 0) and Vb (padding).
  static void values(const Scratch& s, int rows, int D, int j0, int jn) {
    const int pairs = (jn + 1) / 2;
    for (int r = 0; r < rows; r += kRows)
      for (int dc = 0; dc < D; dc += 4 * T)
        rows_block<true>(std::min(4, (D - dc) / T), s.P + size_t(r) * B, size_t(B), s.Vb + size_t(j0 / 2) * D + dc,
                         size_t(D), pairs, s.O + size_t(r) * D + dc, size_t(D));
  }
};

}  // namespace

void attention_item(const VarlenAttentionArgs& a, const AttentionWorkspace::Item& it, float* scratch) {
  attention_item_with<DotProducts>(a, it, scratch);
}

}  // namespace avx512_bf16
}  // namespace cpu
}  // namespace xlmr

#pragma GCC pop_options
