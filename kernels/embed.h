// Embedding gather + position + token type + LayerNorm, one output row per token:
//   out[t] = LN(word[ids[t]] + pos[positions[t]] + type0) * gamma + beta
// Pre-norm models keep the sum itself as the residual stream: with `raw` set,
//   raw[t] = word[ids[t]] + pos[positions[t]] + type0, out[t] = LN(raw[t])
// (the first layer's LN1 as gamma/beta), so the row is read once.
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
  float* raw = nullptr;    // [N, E] pre-norm: the sum before LayerNorm, or nullptr
};

namespace ref {
void embed_layernorm(const EmbedArgs& a);
}

}  // namespace xlmr
