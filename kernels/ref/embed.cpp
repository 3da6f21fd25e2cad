// Reference embedding: gather, add, then LayerNorm - plain loops, the oracle.
#include "kernels/embed.h"

#include "kernels/layernorm.h"

namespace xlmr::ref {

void embed_layernorm(const EmbedArgs& a) {
  const int E = a.hidden;
  for (int t = 0; t < a.n_tokens; ++t) {
    float* out = a.out + size_t(t) * E;
    float* row = a.raw ? a.raw + size_t(t) * E : out;
    const float* w = a.word + size_t(a.ids[t]) * E;
    const float* p = a.pos + size_t(a.positions[t]) * E;
    for (int e = 0; e < E; ++e) row[e] = w[e] + p[e] + (a.type0 ? a.type0[e] : 0.0f);
    layernorm_row(out, row, a.gamma, a.beta, E, a.eps);
  }
}

}  // namespace xlmr::ref
