// Reference attention on the padded layout: the unfused "slow path".
// For every (sequence, head, query) it materialises one row of scores over
// the sequence's real keys, takes a max-subtracted softmax, and sums V.
#include "kernels/attention.h"

#include <cmath>
#include <cstring>

namespace xlmr::ref {

void attention_padded(float* out, const float* qkv, const int32_t* lengths, float* scores, int S, int L,
                      int heads, int head_dim) {
  const int E = heads * head_dim;
  const size_t row = size_t(3) * E;  // qkv row stride: Q, then K, then V
  const double scale = 1.0 / std::sqrt(double(head_dim));
  for (int s = 0; s < S; ++s) {
    const int n = lengths[s];
    const float* base = qkv + size_t(s) * L * row;
    float* obase = out + size_t(s) * L * E;
    std::memset(obase, 0, sizeof(float) * size_t(L) * E);  // padding rows stay zero
    for (int h = 0; h < heads; ++h) {
      const int qc = h * head_dim, kc = E + h * head_dim, vc = 2 * E + h * head_dim;
      for (int i = 0; i < n; ++i) {
        const float* q = base + size_t(i) * row + qc;
        double mx = -INFINITY;
        for (int j = 0; j < n; ++j) {
          const float* k = base + size_t(j) * row + kc;
          double dot = 0.0;
          for (int d = 0; d < head_dim; ++d) dot += double(q[d]) * double(k[d]);
          scores[j] = float(dot * scale);
          if (scores[j] > mx) mx = scores[j];
        }
        double sum = 0.0;
        for (int j = 0; j < n; ++j) {
          const double p = std::exp(double(scores[j]) - mx);
          scores[j] = float(p);
          sum += p;
        }
        float* o = obase + size_t(i) * E + qc;
        for (int d = 0; d < head_dim; ++d) {
          double acc = 0.0;
          for (int j = 0; j < n; ++j) acc += double(scores[j]) * double(base[size_t(j) * row + vc + d]);
          o[d] = float(acc / sum);
        }
      }
    }
  }
}

}  // namespace xlmr::ref
