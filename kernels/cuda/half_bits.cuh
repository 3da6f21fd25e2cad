// Internal to kernels/cuda: 16-bit elements moved as raw uint16_t words and
// converted to and from fp32 (round to nearest even), one struct per type so
// kernels can be templated on it. Host and device.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace xlmr::cuda::detail {

struct F16Bits {
  static __host__ __device__ __forceinline__ float to_float(uint16_t u) {
    __half_raw r;
    r.x = u;
    return __half2float(__half(r));
  }
  static __host__ __device__ __forceinline__ uint16_t from_float(float x) {
    const __half_raw r = __float2half_rn(x);
    return r.x;
  }
};

struct Bf16Bits {
  static __host__ __device__ __forceinline__ float to_float(uint16_t u) {
    __nv_bfloat16_raw r;
    r.x = u;
    return __bfloat162float(__nv_bfloat16(r));
  }
  static __host__ __device__ __forceinline__ uint16_t from_float(float x) {
    const __nv_bfloat16_raw r = __float2bfloat16_rn(x);
    return r.x;
  }
};

}  // namespace xlmr::cuda::detail
