// Random-weight models with the dimensions of real XLM-R checkpoints, so the
// engine can be timed without a converted checkpoint. The numbers they give
// mean nothing; their cost is that of the real model of that size.
//
//   size    E     H   F     L
//   small   256   4   1024  4
//   base    768   12  3072  12     (XLM-R base)
//   large   1024  16  4096  24     (XLM-R large)
//
// Every one has 514 positions (512 tokens), one token type and a torchtext-style
// classification head (dense + ReLU + 2 labels). Matrices, biases and
// embeddings are N(0, 0.02); LayerNorm weights 1 and biases 0. The values are
// a function of the seed only (not of the thread count).
#pragma once

#include <cstdint>
#include <string>

#include "engine/config.h"

namespace bench {

// small, base, large (post-LayerNorm, head size 64), xl, xxl (pre-LayerNorm,
// head sizes 80 and 128); layers > 0 replaces the size's layer count (a
// few layers of XL time its kernels without its 14 GB). Throws xlmr::Error
// for any other size.
xlmr::ModelConfig synthetic_config(const std::string& size, int vocab_size, int layers = 0);

// Writes the model to `path` (an .xlmr file) with `tokenizer_model` (the bytes
// of a SentencePiece model, or empty) embedded.
void write_synthetic_model(const std::string& path, const xlmr::ModelConfig& config,
                           const std::string& tokenizer_model, uint64_t seed);

}  // namespace bench
