// Attention with bf16 products on AMX (cpu::varlen_attention with
// AttentionProducts::bf16 on Bf16Unit::amx): the skeleton, the packing and
// the softmax are attention_bf16.inc's; here Q.K^T and P.V run as AMX tile
// products - TDPBF16PS multiplies a 16x32 bf16 tile by a 32x16 one into a
// 16x16 fp32 tile - on 16-row halves of a block. Its own translation unit,
// so that nothing else is compiled for CPU features the AVX-512 build cannot
// assume.
//
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
#include "kernels/cpu/attention_bf16.inc"

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

// The AMX Products policy of attention_bf16.inc: 16-row halves.
struct AmxProducts {
  static constexpr int kRowQuantum = T;
  static void scores(const Scratch& s, int rows, int D, int Np, int j0, int groups) {
    memory_fence_for_tiles();
    for (int h = 0; h < rows / T; ++h)
      score_half(s.Qb + size_t(h) * T * D, s.Kt, Np, j0, D, groups, s.S + size_t(h) * T * B);
  }
  static void values(const Scratch& s, int rows, int D, int j0, int jn) {
    const int halves_k = (jn + 2 * T - 1) / (2 * T);
    const uint32_t* vt = s.Vb + size_t(j0 / 2) * D;
    for (int h = 0; h < rows / T; ++h)
      for (int dc = 0; dc < D; dc += 4 * T)
        pv_half(s.P + size_t(h) * T * B, vt, D, dc, std::min(4, (D - dc) / T), halves_k, s.O + size_t(h) * T * D);
  }
};

}  // namespace

// The calling thread's tiles must be configured (begin_tiles).
void attention_item(const VarlenAttentionArgs& a, const AttentionWorkspace::Item& it, float* scratch) {
  attention_item_with<AmxProducts>(a, it, scratch);
}

}  // namespace amx
}  // namespace cpu
}  // namespace xlmr

#pragma GCC pop_options
