// Reference dense layer: one dot product per output, accumulated in double.
#include "kernels/linear.h"

#include <cmath>

namespace xlmr::ref {

float gelu(float x) { return float(0.5 * double(x) * (1.0 + std::erf(double(x) / std::sqrt(2.0)))); }

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
