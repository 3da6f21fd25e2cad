// Attention with bf16 products on AMX (cpu::varlen_attention with
// AttentionProducts::bf16): the same work items, key tiles and online softmax
// as the fp32 kernel (simd_attention.inc), but Q.K^T and P.V run as AMX tile
// products - TDPBF16PS multiplies a 16x32 bf16 tile by a 32x16 one into a
// 16x16 fp32 tile - and the softmax works along rows, the layout the tiles
// produce. The softmax, its running max and sum, the rescaling and the output
// stay fp32. Its own translation unit, so that nothing else is compiled for
// CPU features the AVX-512 build cannot assume.
//
// Per item (sequence, head, query rows [row0, row1)), after packing (bf16,
// zero padding):
//   Kt [D/2][Np] the keys as B tiles of Q.K^T: element (p, j) is the pair
//                (K[j][2p], K[j][2p+1]); Np = keys rounded up to 32
//   Vb [Np/2][D] the values as B tiles of P.V: element (q, d) is the pair
//                (V[2q][d], V[2q+1][d])
// per block of R = 32 query rows, as two halves of 16 (tile rows):
//   Qb [R][D]    queries x 1/sqrt(D), bf16, zero past the block's rows
//   S  [R][B]    scores of the key tile, fp32
//   P  [R][B]    probabilities, bf16 (the A tiles of P.V)
//   O  [R][D]    running, unnormalised outputs, fp32
// Tile registers: 0-3 accumulators (4 key groups of 16 for S, 4 head-dim
// groups of 16 for O), 4 the A operand, 5 the B operand. A key tile shorter
// than B (the last of a sequence) computes only the key groups it has, and
// P.V only the 32-key halves it has: short sequences do not pay for 64.
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
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,amx-tile,amx-bf16,fma,avx2")

namespace xlmr {
namespace cpu {
namespace amx {

namespace {

#include "kernels/cpu/simd_avx512.inc"

constexpr int R = kAttentionRowBlock, B = kAttentionKeyBlock, T = 16;
static_assert(R == 2 * T && B == 4 * T, "the AMX attention layout assumes 32-row blocks and 64-key tiles");
constexpr float kNegBig = -1e30f;
// Rows of Q, K and V are 3E floats apart, a stride the hardware prefetchers
// do not follow: loads of row r ask for row r + kAhead.
constexpr int kAhead = 8;

// The compiler does not know that tile loads read memory (GCC's tileloadd
// has no memory operand): this keeps every store before it in place.
inline void memory_fence_for_tiles() { __asm__ volatile("" ::: "memory"); }

struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "AMX tile configuration is 64 bytes");

// Tiles 0-5: 16 rows of 64 bytes (16 fp32 or 32 bf16).
constexpr TileConfig tile_config() {
  TileConfig c{};
  c.palette = 1;
  for (int i = 0; i < 6; ++i) {
    c.colsb[i] = 64;
    c.rows[i] = T;
  }
  return c;
}
// A constant in memory: GCC's _tile_loadconfig tells the compiler that it
// reads 8 bytes of its argument, so stores to a local configuration may be
// dropped as dead.
alignas(64) constexpr TileConfig kTileConfig = tile_config();

}  // namespace

void begin_tiles() { _tile_loadconfig(&kTileConfig); }

void end_tiles() { _tile_release(); }

namespace {

// 32 bf16 (round to nearest even): lo's 16 values, then hi's.
inline __m512i to_bf16(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

// 16 lanes, lane i the bf16 pair (lo[i], hi[i]), lo in the low half.
inline __m512i bf16_pairs(__m512 lo, __m512 hi) {
  const __m512i l = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
  const __m512i h = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi));
  return _mm512_or_si512(l, _mm512_slli_epi32(h, 16));
}

// 16 floats from p, lanes at or past n replaced by `fill` (and not read).
inline __m512 load_or(const float* p, int n, float fill) {
  if (n >= T) return _mm512_loadu_ps(p);
  if (n <= 0) return _mm512_set1_ps(fill);
  return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), V::mask(n), p);
}

// Kt and Vb from the head's strided key and value rows; Np is n_kv rounded up
// to 32, and the padding is zero so that it adds nothing to any product.
void pack_kv(const float* kbase, const float* vbase, size_t ld, int n_kv, int Np, int D, uint32_t* Kt, uint32_t* Vb) {
  const __m512i rows16 = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(Np));
  for (int j = 0; j < n_kv; ++j) {
    const float* kr = kbase + size_t(j) * ld;
    if (j + kAhead < n_kv)
      for (int d = 0; d < D; d += T) {
        _mm_prefetch(reinterpret_cast<const char*>(kr + kAhead * ld + d), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(vbase + size_t(j + kAhead) * ld + d), _MM_HINT_T0);
      }
    for (int d = 0; d < D; d += 2 * T) {
      // pairs d/2 .. d/2 + 15 of key j go down column j of Kt
      const __m512i pairs = to_bf16(_mm512_loadu_ps(kr + d), _mm512_loadu_ps(kr + d + T));
      _mm512_i32scatter_epi32(Kt + size_t(d / 2) * Np + j, rows16, pairs, 4);
    }
  }
  for (int p = 0; p < D / 2; ++p) std::fill(Kt + size_t(p) * Np + n_kv, Kt + size_t(p + 1) * Np, 0u);
  for (int q = 0; q < Np / 2; ++q) {
    const int j = 2 * q;
    for (int d = 0; d < D; d += T) {
      const __m512 lo = j < n_kv ? _mm512_loadu_ps(vbase + size_t(j) * ld + d) : V::zero();
      const __m512 hi = j + 1 < n_kv ? _mm512_loadu_ps(vbase + size_t(j + 1) * ld + d) : V::zero();
      _mm512_storeu_si512(Vb + size_t(q) * D + d, bf16_pairs(lo, hi));
    }
  }
}

// S[half rows][0, 16 ng) = Qb[half rows] . Kt[:, j0 .. j0 + 16 ng), in D/32
// steps; ng <= 4 key groups of 16.
inline void score_half(const uint16_t* Qh, const uint32_t* Kt, int Np, int j0, int D, int ng, float* Sh) {
  _tile_zero(0);
  if (ng > 1) _tile_zero(1);
  if (ng > 2) _tile_zero(2);
  if (ng > 3) _tile_zero(3);
  const long kstride = long(Np) * 4;
  for (int dk = 0; dk < D; dk += 2 * T) {
    _tile_loadd(4, Qh + dk, long(D) * 2);
    const uint32_t* kt = Kt + size_t(dk / 2) * Np + j0;
    _tile_loadd(5, kt, kstride);
    _tile_dpbf16ps(0, 4, 5);
    if (ng > 1) {
      _tile_loadd(5, kt + T, kstride);
      _tile_dpbf16ps(1, 4, 5);
    }
    if (ng > 2) {
      _tile_loadd(5, kt + 2 * T, kstride);
      _tile_dpbf16ps(2, 4, 5);
    }
    if (ng > 3) {
      _tile_loadd(5, kt + 3 * T, kstride);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  _tile_stored(0, Sh, long(B) * 4);
  if (ng > 1) _tile_stored(1, Sh + T, long(B) * 4);
  if (ng > 2) _tile_stored(2, Sh + 2 * T, long(B) * 4);
  if (ng > 3) _tile_stored(3, Sh + 3 * T, long(B) * 4);
}

// O[half rows][dc .. dc + 16 n) += P[half rows] . Vb[j0/2 ..][dc ..], n <= 4
// head-dim groups of 16, over nk <= 2 A tiles of 32 keys.
inline void pv_half(const uint16_t* Ph, const uint32_t* Vt, int D, int dc, int n, int nk, float* Oh) {
  const long ostride = long(D) * 4, vstride = long(D) * 4;
  float* o = Oh + dc;
  const uint32_t* v = Vt + dc;
  memory_fence_for_tiles();
  _tile_loadd(0, o, ostride);
  if (n > 1) _tile_loadd(1, o + T, ostride);
  if (n > 2) _tile_loadd(2, o + 2 * T, ostride);
  if (n > 3) _tile_loadd(3, o + 3 * T, ostride);
  for (int kk = 0; kk < nk; ++kk) {
    _tile_loadd(4, Ph + kk * 2 * T, long(B) * 2);
    const uint32_t* vk = v + size_t(kk) * T * D;  // pair rows j0/2 + 16 kk ...
    _tile_loadd(5, vk, vstride);
    _tile_dpbf16ps(0, 4, 5);
    if (n > 1) {
      _tile_loadd(5, vk + T, vstride);
      _tile_dpbf16ps(1, 4, 5);
    }
    if (n > 2) {
      _tile_loadd(5, vk + 2 * T, vstride);
      _tile_dpbf16ps(2, 4, 5);
    }
    if (n > 3) {
      _tile_loadd(5, vk + 3 * T, vstride);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  _tile_stored(0, o, ostride);
  if (n > 1) _tile_stored(1, o + T, ostride);
  if (n > 2) _tile_stored(2, o + 2 * T, ostride);
  if (n > 3) _tile_stored(3, o + 3 * T, ostride);
}

struct Scratch {
  uint16_t* Qb;  // [R][D]
  float* S;      // [R][B]
  uint16_t* P;   // [R][B]
  float* O;      // [R][D]
  float *m, *l;  // [R]
  uint32_t *Kt, *Vb;
};

// Rows [0, nr) (nr <= R) of one block: `q0` is the first query row's head
// slice in the QKV rows (ld floats apart), `out`/`out16` the first output
// row's (out_ld apart).
void attention_block(const float* q0, size_t ld, int n_kv, int Np, int D, int nr, float* out, uint16_t* out16,
                     size_t out_ld, const Scratch& s) {
  const int halves = nr > T ? 2 : 1, rows = halves * T;  // tile rows: whole halves
  const __m512 vscale = _mm512_set1_ps(1.0f / std::sqrt(float(D)));
  for (int r = 0; r < rows; ++r) {
    const float* q = q0 + size_t(r) * ld;
    if (r + kAhead < nr)
      for (int d = 0; d < D; d += T) _mm_prefetch(reinterpret_cast<const char*>(q + kAhead * ld + d), _MM_HINT_T0);
    for (int d = 0; d < D; d += 2 * T) {
      const __m512i v = r < nr ? to_bf16(_mm512_mul_ps(_mm512_loadu_ps(q + d), vscale),
                                         _mm512_mul_ps(_mm512_loadu_ps(q + d + T), vscale))
                               : _mm512_setzero_si512();
      _mm512_storeu_si512(s.Qb + size_t(r) * D + d, v);
    }
    // Rows past nr stay zero in P, so also in O: no row of the block's
    // tiles is ever uninitialised, and none past nr is computed.
    std::fill(s.O + size_t(r) * D, s.O + size_t(r + 1) * D, 0.0f);
    if (r >= nr) std::fill(s.P + size_t(r) * B, s.P + size_t(r + 1) * B, uint16_t(0));
    s.m[r] = kNegBig;
    s.l[r] = 0.0f;
  }

  for (int j0 = 0; j0 < n_kv; j0 += B) {
    const int jn = std::min(B, n_kv - j0);
    const int groups = (jn + T - 1) / T, halves_k = (jn + 2 * T - 1) / (2 * T);
    memory_fence_for_tiles();
    for (int h = 0; h < halves; ++h)
      score_half(s.Qb + size_t(h) * T * D, s.Kt, Np, j0, D, groups, s.S + size_t(h) * T * B);

    // Online softmax along each row; keys past jn count as -inf, so their
    // probabilities are 0.
    for (int r = 0; r < nr; ++r) {
      const float* sr = s.S + size_t(r) * B;
      __m512 x[4];
      for (int k = 0; k < 4; ++k) x[k] = load_or(sr + k * T, jn - k * T, kNegBig);
      const float mx = V::hmax(V::max(V::max(x[0], x[1]), V::max(x[2], x[3])));
      const float m_new = std::max(s.m[r], mx);
      const float corr = std::exp(s.m[r] - m_new);
      const __m512 vm = _mm512_set1_ps(m_new);
      for (int k = 0; k < 4; ++k) x[k] = V::exp(_mm512_sub_ps(x[k], vm));
      const float sum = V::hsum(_mm512_add_ps(_mm512_add_ps(x[0], x[1]), _mm512_add_ps(x[2], x[3])));
      s.l[r] = s.l[r] * corr + sum;
      s.m[r] = m_new;
      uint16_t* pr = s.P + size_t(r) * B;
      _mm512_storeu_si512(pr, to_bf16(x[0], x[1]));
      _mm512_storeu_si512(pr + 2 * T, to_bf16(x[2], x[3]));
      if (j0 > 0) {  // the first tile starts from O = 0: nothing to rescale
        float* o = s.O + size_t(r) * D;
        const __m512 vc = _mm512_set1_ps(corr);
        for (int d = 0; d < D; d += T) _mm512_storeu_ps(o + d, _mm512_mul_ps(_mm512_loadu_ps(o + d), vc));
      }
    }

    const uint32_t* vt = s.Vb + size_t(j0 / 2) * D;
    for (int h = 0; h < halves; ++h)
      for (int dc = 0; dc < D; dc += 4 * T)
        pv_half(s.P + size_t(h) * T * B, vt, D, dc, std::min(4, (D - dc) / T), halves_k, s.O + size_t(h) * T * D);
  }

  for (int r = 0; r < nr; ++r) {
    float* dst = out + size_t(r) * out_ld;
    uint16_t* dst16 = out16 ? out16 + size_t(r) * out_ld : nullptr;
    const __m512 inv = _mm512_set1_ps(s.l[r] > 0.0f ? 1.0f / s.l[r] : 0.0f);
    for (int d = 0; d < D; d += T) {
      const __m512 y = _mm512_mul_ps(_mm512_loadu_ps(s.O + size_t(r) * D + d), inv);
      _mm512_storeu_ps(dst + d, y);
      if (dst16) V::store_bf16n(dst16 + d, y, T);
    }
  }
}

}  // namespace

// The calling thread's tiles must be configured (begin_tiles).
void attention_item(const VarlenAttentionArgs& a, const AttentionWorkspace::Item& it, float* scratch) {
  const int E = a.hidden, H = a.heads, D = E / H;
  const size_t ld = size_t(3) * E;
  const int base = a.cu_seqlens[it.seq];
  const int rows_in_seq = a.cu_seqlens[it.seq + 1] - base;
  const int n_kv = a.kv_lens ? a.kv_lens[it.seq] : rows_in_seq;
  const int Np = (n_kv + 2 * T - 1) / (2 * T) * (2 * T);

  // Carved from the per-thread slice the workspace sizes for the fp32
  // kernel (cpu_kernels.cpp): every part here is no larger than its
  // counterpart there, with P and Np's padding in the extra it reserves.
  Scratch s;
  s.Qb = reinterpret_cast<uint16_t*>(scratch);             // R x D bf16
  s.S = scratch + size_t(R) * D / 2;                       // R x B
  s.P = reinterpret_cast<uint16_t*>(s.S + size_t(R) * B);  // R x B bf16
  s.O = s.S + size_t(R) * B + size_t(R) * B / 2;           // R x D
  s.m = s.O + size_t(R) * D;
  s.l = s.m + R;
  s.Kt = reinterpret_cast<uint32_t*>(s.l + R);  // D/2 x Np
  s.Vb = s.Kt + size_t(D / 2) * Np;             // Np/2 x D

  const float* kbase = a.qkv + size_t(base) * ld + E + size_t(it.head) * D;
  pack_kv(kbase, kbase + E, ld, n_kv, Np, D, s.Kt, s.Vb);

  for (int row0 = it.row0; row0 < it.row1; row0 += R) {
    const size_t row = size_t(base + row0), col = size_t(it.head) * D;
    attention_block(a.qkv + row * ld + col, ld, n_kv, Np, D, std::min(R, it.row1 - row0), a.out + row * E + col,
                    a.out_bf16 ? a.out_bf16 + row * E + col : nullptr, size_t(E), s);
  }
}

}  // namespace amx
}  // namespace cpu
}  // namespace xlmr

#pragma GCC pop_options
