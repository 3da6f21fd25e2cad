// The residual step of every layer, fused with the LayerNorm that follows it:
//   post-norm (normed == nullptr): x = LN(x + y + bias) * gamma + beta   (in place on x)
//   pre-norm:  x = x + y + bias; normed = LN(x) * gamma + beta
// (pre-norm: the next sublayer's LayerNorm, whose output feeds its GEMM while
// x carries the residual stream on).
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
  float* normed = nullptr;  // [N, E] pre-norm: LN(x) goes here and x keeps the sum
};

namespace ref {
void add_bias_residual_layernorm(const ResidualLayerNormArgs& a);
// Plain LayerNorm of one row: out = LN(in) * gamma + beta (in == out allowed).
void layernorm_row(float* out, const float* in, const float* gamma, const float* beta, int n, float eps);
}

}  // namespace xlmr
