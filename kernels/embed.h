// Embedding gather + position + token type + LayerNorm, one output row per token:
//   out[t] = LN(word[ids[t]] + pos[positions[t]] + type0) * gamma + beta
// Size letters: N tokens, E hidden, V vocab, P position rows.
#pragma once

#include <cstddef>
#include <cstdint>

namespace xlmr {

struct EmbedArgs {
  float* out;              // [N, E]
  const int32_t* ids;      // [N]   model ids, already checked to be < V
  const int32_t* positions;// [N]   rows of pos, already checked to be < P
  const float* word;       // [V, E]
  const float* pos;        // [P, E]
  const float* type0;      // [E]   token-type row 0, or nullptr when the model has none
  const float* gamma;      // [E]
  const float* beta;       // [E]
  int n_tokens;            // N
  int hidden;              // E
  float eps;
};

namespace ref {
void embed_layernorm(const EmbedArgs& a);
}

}  // namespace xlmr
