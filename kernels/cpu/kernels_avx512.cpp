// The AVX-512 build of the row and attention kernels (kernels/cpu/
// simd_kernels.inc, simd_attention.inc): 16 floats per register, masked loads
// and stores for row tails.
// GCC 12 reports its own _mm512_undefined_* helpers as uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/kernel_table.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx2")

namespace xlmr {
namespace cpu {
namespace avx512 {

#include "kernels/cpu/simd_avx512.inc"

#include "kernels/cpu/simd_kernels.inc"
#include "kernels/cpu/simd_attention.inc"

const KernelTable& table() {
  static const KernelTable t{embed_rows, residual_rows, cast_range, attention_item, quantize_rows, quantize_rows_u8, dequantize_rows};
  return t;
}

}  // namespace avx512
}  // namespace cpu
}  // namespace xlmr

#pragma GCC pop_options
