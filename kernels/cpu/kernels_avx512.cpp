// The AVX-512 build of the row kernels (kernels/cpu/simd_kernels.inc): 16
// floats per register, masked loads and stores for row tails.
// GCC 12 reports its own _mm512_undefined_* helpers as uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/kernel_table.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx2")

namespace xlmr {
namespace cpu {
namespace avx512 {

struct V {
  static constexpr int W = 16;
  using T = __m512;
  static inline __mmask16 mask(int n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }
  static inline T zero() { return _mm512_setzero_ps(); }
  static inline T set1(float v) { return _mm512_set1_ps(v); }
  static inline T load(const float* p) { return _mm512_loadu_ps(p); }
  static inline T loadu(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static inline T loadn(const float* p, int n) { return n >= W ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask(n), p); }
  static inline void storen(float* p, T v, int n) {
    if (n >= W) _mm512_storeu_ps(p, v); else _mm512_mask_storeu_ps(p, mask(n), v);
  }
  static inline T maskn(T v, int n) { return _mm512_maskz_mov_ps(mask(n), v); }
  static inline T maskn_fill(T v, int n, float fill) { return _mm512_mask_blend_ps(mask(n), _mm512_set1_ps(fill), v); }
  static inline T add(T a, T b) { return _mm512_add_ps(a, b); }
  static inline T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static inline T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static inline T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static inline T max(T a, T b) { return _mm512_max_ps(a, b); }
  static inline float hsum(T v) { return _mm512_reduce_add_ps(v); }
  static inline float hmax(T v) { return _mm512_reduce_max_ps(v); }
  // exp(x) = 2^n * p(r), x = n ln2 + r, |r| <= ln2 / 2; relative error ~1e-7.
  // Inputs below -80 give exactly 0: smaller results would be subnormal, and
  // subnormal arithmetic is slow on x86 (and the softmax cannot see them).
  static inline T exp(T x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-80.0f), _CMP_GT_OQ);
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3f)), _mm512_set1_ps(-80.0f));
    const T n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    T r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    T p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(p, n));
  }
  static inline float exp_scalar(float x) { return std::exp(x); }
  static inline T gather(const float* p, int stride, int n) {
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(stride));
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask(n), idx, p, 4);
  }
  // Round to nearest even, then the upper 16 bits (inputs are finite).
  static inline void store_bf16n(uint16_t* p, T v, int n) {
    __m512i b = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    b = _mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    const __m256i h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(b, 16));
    if (n >= W) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
    else _mm256_mask_storeu_epi16(p, mask(n), h);
  }
};

#define XLMR_SIMD_WIDTH 16
#include "kernels/cpu/simd_kernels.inc"
#undef XLMR_SIMD_WIDTH

const KernelTable& table() {
  static const KernelTable t{embed_rows, residual_rows, cast_range, attention_item};
  return t;
}

}  // namespace avx512
}  // namespace cpu
}  // namespace xlmr

#pragma GCC pop_options
