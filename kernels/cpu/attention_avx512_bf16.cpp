// Attention with bf16 products on AVX512_BF16 (cpu::varlen_attention with
// AttentionProducts::bf16 on Bf16Unit::avx512_bf16), for CPUs that have the
// instruction but no AMX (AMD Zen 4 and later, Intel Cooper Lake): the
// skeleton, the packing and the softmax are attention_bf16.inc's; here
// Q.K^T and P.V run as VDPBF16PS, which adds the two products of a bf16
// pair into each fp32 lane - twice the multiplies of an FMA, and on Zen 4
// issued at the FMA's rate. Its own translation unit, so that nothing else
// is compiled for CPU features the AVX-512 build cannot assume.
//
// Register blocking: 4 query rows at a time. Scores: 4 rows x up to 4 key
// groups of 16 in 16 accumulators; each step broadcasts one (Q[2p],
// Q[2p+1]) pair per row against one Kt pair row per key group. P.V: 4 rows x
// up to 4 head-dim groups of 16; each step broadcasts one probability pair
// per row against one Vb pair row per group.

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

// S[4 rows][0, 16 NG) = Q[4 rows] . Kt[:, j0 ..): D/2 pair steps.
template <int NG>
void scores_block(const uint16_t* Q, const uint32_t* Kt, int Np, int j0, int D, float* S) {
  __m512 acc[kRows][NG];
  for (int r = 0; r < kRows; ++r)
    for (int g = 0; g < NG; ++g) acc[r][g] = _mm512_setzero_ps();
  for (int p = 0; p < D / 2; ++p) {
    const uint32_t* kt = Kt + size_t(p) * Np + j0;
    __m512i k[NG];
    for (int g = 0; g < NG; ++g) k[g] = _mm512_loadu_si512(kt + g * T);
    for (int r = 0; r < kRows; ++r) {
      const __m512i q = broadcast_pair(Q + size_t(r) * D + 2 * p);
      for (int g = 0; g < NG; ++g) acc[r][g] = dot(acc[r][g], q, k[g]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int g = 0; g < NG; ++g) _mm512_storeu_ps(S + size_t(r) * B + g * T, acc[r][g]);
}

// O[4 rows][0, 16 ND) += P[4 rows][0, 2 pairs) . Vt[0, pairs)[0, 16 ND):
// Vt and O start at the head-dim group, D apart.
template <int ND>
void values_block(const uint16_t* P, const uint32_t* Vt, int D, int pairs, float* O) {
  __m512 acc[kRows][ND];
  for (int r = 0; r < kRows; ++r)
    for (int g = 0; g < ND; ++g) acc[r][g] = _mm512_loadu_ps(O + size_t(r) * D + g * T);
  for (int q = 0; q < pairs; ++q) {
    const uint32_t* vt = Vt + size_t(q) * D;
    __m512i v[ND];
    for (int g = 0; g < ND; ++g) v[g] = _mm512_loadu_si512(vt + g * T);
    for (int r = 0; r < kRows; ++r) {
      const __m512i pr = broadcast_pair(P + size_t(r) * B + 2 * q);
      for (int g = 0; g < ND; ++g) acc[r][g] = dot(acc[r][g], pr, v[g]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int g = 0; g < ND; ++g) _mm512_storeu_ps(O + size_t(r) * D + g * T, acc[r][g]);
}

// The AVX512_BF16 Products policy of attention_bf16.inc.
struct DotProducts {
  static constexpr int kRowQuantum = kRows;
  static void scores(const Scratch& s, int rows, int D, int Np, int j0, int groups) {
    for (int r = 0; r < rows; r += kRows) {
      const uint16_t* q = s.Qb + size_t(r) * D;
      float* sr = s.S + size_t(r) * B;
      switch (groups) {
        case 1: scores_block<1>(q, s.Kt, Np, j0, D, sr); break;
        case 2: scores_block<2>(q, s.Kt, Np, j0, D, sr); break;
        case 3: scores_block<3>(q, s.Kt, Np, j0, D, sr); break;
        default: scores_block<4>(q, s.Kt, Np, j0, D, sr); break;
      }
    }
  }
  // Keys [j0, j0 + jn) are pairs [j0/2, j0/2 + ceil(jn/2)); an odd last key's
  // partner is zero in both P (probability 0) and Vb (padding).
  static void values(const Scratch& s, int rows, int D, int j0, int jn) {
    const int pairs = (jn + 1) / 2;
    for (int r = 0; r < rows; r += kRows)
      for (int dc = 0; dc < D; dc += 4 * T) {
        const uint16_t* p = s.P + size_t(r) * B;
        const uint32_t* vt = s.Vb + size_t(j0 / 2) * D + dc;
        float* o = s.O + size_t(r) * D + dc;
        switch (std::min(4, (D - dc) / T)) {
          case 1: values_block<1>(p, vt, D, pairs, o); break;
          case 2: values_block<2>(p, vt, D, pairs, o); break;
          case 3: values_block<3>(p, vt, D, pairs, o); break;
          default: values_block<4>(p, vt, D, pairs, o); break;
        }
      }
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
