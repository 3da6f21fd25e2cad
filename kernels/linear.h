// Dense layers in the weight layout of every source format ([out, in]):
//   out[m, o] = sum_i in[m, i] * w[o, i] + bias[o]
#pragma once

#include <cstddef>

namespace xlmr {

enum class Epilogue { none, gelu, relu, tanh };

namespace ref {
// out: [M, O], in: [M, I], w: [O, I], bias: [O] or nullptr.
void linear(float* out, const float* in, const float* w, const float* bias, int M, int O, int I,
            Epilogue epilogue = Epilogue::none);
// Exact erf GELU: 0.5 x (1 + erf(x / sqrt 2)).
float gelu(float x);
}

}  // namespace xlmr
