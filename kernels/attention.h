// Multi-head self-attention over packed QKV rows. Each row of qkv holds
// [Q | K | V], each E wide; head h owns feature columns [h*D, (h+1)*D) of each.
// A token attends to the tokens of its own sequence only:
//   out = softmax(Q K^T / sqrt(D)) V
#pragma once

#include <cstdint>

namespace xlmr {

namespace ref {
// Padded layout: sequence s occupies rows [s*L, s*L + lengths[s]) of a
// [S*L, .] matrix; rows past lengths[s] are padding, their output is zeroed.
// out: [S*L, E], qkv: [S*L, 3E], lengths: [S], scores: scratch of L floats.
void attention_padded(float* out, const float* qkv, const int32_t* lengths, float* scores, int S, int L,
                      int heads, int head_dim);
}

}  // namespace xlmr
