// The AVX2 build of the row and attention kernels (kernels/cpu/
// simd_kernels.inc, simd_attention.inc): 8 floats per register, for CPUs
// without AVX-512.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/kernel_table.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace xlmr {
namespace cpu {
namespace avx2 {

struct V {
  static constexpr int W = 8;
  static constexpr int kRegs = 16;  // vector registers (ymm0-15)
  using T = __m256;
  static inline __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline T zero() { return _mm256_setzero_ps(); }
  static inline T set1(float v) { return _mm256_set1_ps(v); }
  static inline T load(const float* p) { return _mm256_loadu_ps(p); }
  static inline T loadu(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static inline T loadn(const float* p, int n) { return n >= W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(n)); }
  static inline void storen(float* p, T v, int n) {
    if (n >= W) _mm256_storeu_ps(p, v); else _mm256_maskstore_ps(p, mask(n), v);
  }
  static inline T maskn(T v, int n) { return _mm256_and_ps(v, _mm256_castsi256_ps(mask(n))); }
  static inline T maskn_fill(T v, int n, float fill) {
    return _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(mask(n)));
  }
  static inline T add(T a, T b) { return _mm256_add_ps(a, b); }
  static inline T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static inline T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static inline T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static inline T max(T a, T b) { return _mm256_max_ps(a, b); }
  static inline T min(T a, T b) { return _mm256_min_ps(a, b); }
  static inline T div(T a, T b) { return _mm256_div_ps(a, b); }
  static inline T abs(T a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  // a where x < 0, else b.
  static inline T select_neg(T x, T a, T b) {
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
  }
  static inline float hsum(T v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static inline float hmax(T v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // Inputs below -80 give exactly 0 (no subnormal results, see kernels_avx512.cpp).
  static inline T exp(T x) {
    const __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-80.0f), _CMP_GT_OQ);
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3f)), _mm256_set1_ps(-80.0f));
    const T n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    T r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    T p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // 2^n through the exponent field; n is in [-126, 127] after the clamp.
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(live, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
  }
  static inline float exp_scalar(float x) { return std::exp(x); }
  static inline T gather(const float* p, int stride, int n) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, idx, _mm256_castsi256_ps(mask(n)), 4);
  }
  // The low n (at most 8) bytes of b to p.
  static inline void store_bytes8(void* p, __m128i b, int n) {
    if (n >= W) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(p), b);
    } else {
      alignas(16) uint8_t tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), b);
      std::memcpy(p, tmp, size_t(n));
    }
  }
  // The lanes rounded to nearest even (the MXCSR default), as saturated 16-bit words.
  static inline __m128i words(T v) {
    const __m256i i = _mm256_cvtps_epi32(v);
    return _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  }
  // The first n lanes as int8 / uint8, rounded to nearest even, saturating.
  static inline void store_s8n(int8_t* p, T v, int n) {
    const __m128i w = words(v);
    store_bytes8(p, _mm_packs_epi16(w, w), n);
  }
  static inline void store_u8n(uint8_t* p, T v, int n) {
    const __m128i w = words(v);
    store_bytes8(p, _mm_packus_epi16(w, w), n);
  }
  // float(acc[i] - k * col[i]) for the first n lanes (int32 arithmetic, exact while it fits).
  static inline T int_minus_k_times(const int32_t* acc, int32_t k, const int32_t* col, int n) {
    const __m256i m = mask(n);
    const __m256i a = _mm256_maskload_epi32(acc, m), c = _mm256_maskload_epi32(col, m);
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(a, _mm256_mullo_epi32(c, _mm256_set1_epi32(k))));
  }
  static inline void store_bf16n(uint16_t* p, T v, int n) {
    float tmp[8];
    _mm256_storeu_ps(tmp, v);
    for (int i = 0; i < n && i < W; ++i) {
      uint32_t b;
      std::memcpy(&b, &tmp[i], 4);
      b += 0x7FFFu + ((b >> 16) & 1u);
      p[i] = uint16_t(b >> 16);
    }
  }
};

#include "kernels/cpu/simd_kernels.inc"
#include "kernels/cpu/simd_attention.inc"

const KernelTable& table() {
  static const KernelTable t{embed_rows, residual_rows, cast_range, attention_item, quantize_rows, quantize_rows_u8, dequantize_rows};
  return t;
}

}  // namespace avx2
}  // namespace cpu
}  // namespace xlmr

#pragma GCC pop_options
