#include "kernels/pooling.h"

#include <algorithm>
#include <cmath>

namespace xlmr::ref {

void mean_rows(float* out, const float* x, int n, int E) {
  for (int e = 0; e < E; ++e) {
    double acc = 0.0;
    for (int t = 0; t < n; ++t) acc += x[size_t(t) * E + e];
    out[e] = n > 0 ? float(acc / n) : 0.0f;
  }
}

void l2_normalize(float* x, int n) {
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  // Same guard as torch.nn.functional.normalize: divide by max(norm, 1e-12).
  const double norm = std::max(std::sqrt(ss), 1e-12);
  for (int i = 0; i < n; ++i) x[i] = float(x[i] / norm);
}

void classification_head(float* logits, const float* x0, const float* dense_w, const float* dense_b,
                         const float* out_w, const float* out_b, int E, int C, Epilogue act, float* tmp) {
  linear(tmp, x0, dense_w, dense_b, 1, E, E, act);
  linear(logits, tmp, out_w, out_b, 1, C, E, Epilogue::none);
}

}  // namespace xlmr::ref
