// Reference dense layer: one dot product per output, accumulated in double.
#include "kernels/linear.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstring>

namespace xlmr::ref {

float gelu(float x) { return float(0.5 * double(x) * (1.0 + std::erf(double(x) / std::sqrt(2.0)))); }

void quantize_rows_s8(int8_t* q, float* scale, const float* x, int M, int K, float qmax) {
  for (int r = 0; r < M; ++r) {
    const float* xr = x + size_t(r) * K;
    float absmax = 0.0f;
    for (int i = 0; i < K; ++i) absmax = std::max(absmax, std::fabs(xr[i]));
    const float inv = absmax > 0.0f ? qmax / absmax : 0.0f;
    scale[r] = absmax / qmax;
    for (int i = 0; i < K; ++i) {
      const float v = std::min(std::max(xr[i] * inv, -qmax), qmax);
      q[size_t(r) * K + i] = int8_t(std::nearbyint(v));
    }
  }
}

void quantize_rows_u8(uint8_t* q, float* scale, int32_t* zero, const float* x, int M, int K, const float* col_mul) {
  for (int r = 0; r < M; ++r) {
    const float* xr = x + size_t(r) * K;
    auto at = [&](int i) { return col_mul ? xr[i] * col_mul[i] : xr[i]; };
    float lo = 0.0f, hi = 0.0f;
    bool finite = true;
    for (int i = 0; i < K; ++i) {
      lo = std::min(lo, at(i));
      hi = std::max(hi, at(i));
      finite = finite && std::isfinite(at(i));
    }
    float range = hi - lo;
    if (!finite) range = std::numeric_limits<float>::quiet_NaN();  // NaN results, as in f32
    const float inv = range > 0.0f ? 255.0f / range : 0.0f;
    const float z = range > 0.0f ? std::nearbyint(-lo * inv) : 0.0f;
    scale[r] = range / 255.0f;
    zero[r] = int32_t(z);
    for (int i = 0; i < K; ++i) {
      const float v = std::min(std::max(std::fma(at(i), inv, z), 0.0f), 255.0f);
      q[size_t(r) * K + i] = finite ? uint8_t(std::nearbyint(v)) : uint8_t(0);
    }
  }
}

void dequantize_rows(float* y, const int32_t* acc, const float* row_scale, const int32_t* row_zero,
                     const float* col_scale, const int32_t* col_sum, const float* bias, int M, int N,
                     Epilogue epilogue) {
  for (int r = 0; r < M; ++r) {
    for (int n = 0; n < N; ++n) {
      const size_t at = size_t(r) * N + n;
      int32_t a;
      std::memcpy(&a, acc + at, sizeof a);  // y may be acc's memory
      const float t = float(a - row_zero[r] * col_sum[n]) * col_scale[n];
      float v = std::fma(t, row_scale[r], bias ? bias[n] : 0.0f);
      switch (epilogue) {
        case Epilogue::none: break;
        case Epilogue::gelu: v = gelu(v); break;
        case Epilogue::relu: v = v > 0.0f ? v : 0.0f; break;
        case Epilogue::tanh: v = std::tanh(v); break;
      }
      std::memcpy(y + at, &v, sizeof v);
    }
  }
}

void linear(float* out, const float* in, const float* w, const float* bias, int M, int O, int I,
            Epilogue epilogue) {
  for (int m = 0; m < M; ++m) {
    const float* x = in + size_t(m) * I;
    for (int o = 0; o < O; ++o) {
      const float* wr = w + size_t(o) * I;
      double acc = bias ? bias[o] : 0.0;
      for (int i = 0; i < I; ++i) acc += double(x[i]) * double(wr[i]);
      float y = float(acc);
      switch (epilogue) {
        case Epilogue::none: break;
        case Epilogue::gelu: y = gelu(y); break;
        case Epilogue::relu: y = y > 0.0f ? y : 0.0f; break;
        case Epilogue::tanh: y = std::tanh(y); break;
      }
      out[size_t(m) * O + o] = y;
    }
  }
}

}  // namespace xlmr::ref
