// Reference LayerNorm (biased variance, as torch.nn.LayerNorm), accumulated
// in double so the oracle is at least as accurate as anything tested against it.
#include "kernels/layernorm.h"

#include <cmath>

namespace xlmr::ref {

void layernorm_row(float* out, const float* in, const float* gamma, const float* beta, int n, float eps) {
  double mean = 0.0;
  for (int i = 0; i < n; ++i) mean += in[i];
  mean /= n;
  double var = 0.0;
  for (int i = 0; i < n; ++i) {
    const double d = in[i] - mean;
    var += d * d;
  }
  var /= n;
  const double inv = 1.0 / std::sqrt(var + double(eps));
  for (int i = 0; i < n; ++i) out[i] = float((in[i] - mean) * inv) * gamma[i] + beta[i];
}

void add_bias_residual_layernorm(const ResidualLayerNormArgs& a) {
  const int E = a.hidden;
  for (int t = 0; t < a.n_tokens; ++t) {
    float* x = a.x + size_t(t) * E;
    const float* y = a.y + size_t(t) * E;
    for (int e = 0; e < E; ++e) x[e] = x[e] + (y[e] + a.bias[e]);
    layernorm_row(a.normed ? a.normed + size_t(t) * E : x, x, a.gamma, a.beta, E, a.eps);
  }
}

}  // namespace xlmr::ref
