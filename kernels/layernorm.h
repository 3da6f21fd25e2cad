// The post-LN residual step of every layer, fused:
//   x = LN(x + y + bias) * gamma + beta      (row by row, in place on x)
#pragma once

#include <cstddef>

namespace xlmr {

struct ResidualLayerNormArgs {
  float* x;              // [N, E] residual in, normalised out
  const float* y;        // [N, E] sublayer output without its bias
  const float* bias;     // [E]
  const float* gamma;    // [E]
  const float* beta;     // [E]
  int n_tokens;          // N
  int hidden;            // E
  float eps;
};

namespace ref {
void add_bias_residual_layernorm(const ResidualLayerNormArgs& a);
// Plain LayerNorm of one row: out = LN(in) * gamma + beta (in == out allowed).
void layernorm_row(float* out, const float* in, const float* gamma, const float* beta, int n, float eps);
}

}  // namespace xlmr
