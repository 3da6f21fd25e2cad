// Sentence-level outputs from per-token hidden states: pooling (CLS, mean),
// L2 normalisation, and the classification head
//   logits = out_proj(act(dense(x0)))   (act: ReLU for torchtext, tanh for HF/fairseq)
// and the HF pooler tanh(dense(x0)).
#pragma once

#include "kernels/linear.h"

namespace xlmr {

namespace ref {
// out: [E] = mean of rows of x: [n, E]
void mean_rows(float* out, const float* x, int n, int E);
// In place; a zero vector stays zero.
void l2_normalize(float* x, int n);
// logits: [C] from x0: [E]; tmp: scratch of E floats.
void classification_head(float* logits, const float* x0, const float* dense_w, const float* dense_b,
                         const float* out_w, const float* out_b, int E, int C, Epilogue act, float* tmp);
}

}  // namespace xlmr
