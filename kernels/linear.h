// Dense layers in the weight layout of every source format ([out, in]):
//   out[m, o] = sum_i in[m, i] * w[o, i] + bias[o]
#pragma once

#include <cstddef>
#include <cstdint>

namespace xlmr {

enum class Epilogue { none, gelu, relu, tanh };

namespace ref {
// out: [M, O], in: [M, I], w: [O, I], bias: [O] or nullptr.
void linear(float* out, const float* in, const float* w, const float* bias, int M, int O, int I,
            Epilogue epilogue = Epilogue::none);
// Exact erf GELU: 0.5 x (1 + erf(x / sqrt 2)).
float gelu(float x);

// int8 GEMMs (kernels/cpu/gemm.h). Weights: row r of x[M, K] becomes
// q = round(x * qmax / max|x_r|) (to nearest even, within +-qmax) with
// scale[r] = max|x_r| / qmax (a row of zeros: scale 0, q 0).
void quantize_rows_s8(int8_t* q, float* scale, const float* x, int M, int K, float qmax = 127);
// Activations: row r over its range [lo, hi] (lo <= 0 <= hi) to uint8:
// scale = (hi - lo) / 255, zero = round(-lo * 255 / (hi - lo)),
// q = clamp(round(fma(x, 255 / (hi - lo), zero)), 0, 255); x ~ (q - zero) * scale.
// A row with an infinity or a NaN gets scale NaN and zero 0, so that its
// results are NaN, as in f32 (its q is then unspecified). With col_mul, the
// row quantized is x * col_mul (one rounding per value).
void quantize_rows_u8(uint8_t* q, float* scale, int32_t* zero, const float* x, int M, int K,
                      const float* col_mul = nullptr);
// y[m, n] = fma(float(acc[m, n] - row_zero[m] * col_sum[n]) * col_scale[n], row_scale[m], bias[n]),
// then the epilogue. y may be acc's memory.
void dequantize_rows(float* y, const int32_t* acc, const float* row_scale, const int32_t* row_zero,
                     const float* col_scale, const int32_t* col_sum, const float* bias, int M, int N,
                     Epilogue epilogue);
}

}  // namespace xlmr
