// Model configuration: everything the engine needs to run a model, read from
// the JSON section of a .xlmr file (written by the converter, keys listed in
// docs/weights-format.md) and checked for consistency before use.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "weights/dtype.h"

namespace xlmr {

// xlmr: XLM-R / RoBERTa layout, positions start at pad_id + 1 = 2.
// bert: BERT layout with the XLM-R tokenizer (multilingual-e5-small,
//       paraphrase-multilingual-MiniLM), positions start at 0.
enum class Family { xlmr, bert };
enum class HeadActivation { relu, tanh };
// Where each layer's LayerNorms sit. post: XLM-R base/large, BERT:
//   x = LN1(x + attn(x)); x = LN2(x + ffn(x)), after an embedding LayerNorm.
// pre: XLM-R XL and XXL (no embedding LayerNorm, one after the last layer):
//   x = x + attn(LN1(x)); x = x + ffn(LN2(x)); out = LNf(x).
enum class Norm { post, pre };
enum class Pooling { cls, mean, none, pooler };
// Compute precision of the fused backends' GEMMs (LayerNorm, softmax and
// accumulation stay fp32 in every mode). CPU: f32, bf16 or int8; CUDA: f16
// or bf16. int8: the layers' four GEMMs on int8 operands - weights per
// output channel, activations per token, both symmetric and quantized at run
// time - with int32 sums scaled back to fp32 (kernels/cpu/gemm.h).
enum class Precision { f32, bf16, f16, int8 };

const char* to_string(Family f);
const char* to_string(HeadActivation a);
const char* to_string(Norm n);
const char* to_string(Pooling p);
bool parse_pooling(const std::string& s, Pooling* out);
const char* to_string(Precision p);
// The inverse of to_string(Precision): "f32", "bf16", "f16" or "int8"; false otherwise.
bool parse_precision(const std::string& s, Precision* out);

struct ModelConfig {
  Family family = Family::xlmr;
  int vocab_size = 0;     // V
  int hidden = 0;         // E
  int ffn = 0;            // F
  int heads = 0;          // H
  int layers = 0;         // L
  int max_positions = 0;  // rows of the position table
  int position_offset = 2;  // position of the first token (2 for XLM-R, 0 for BERT)
  int type_vocab_size = 0;  // 0 when the checkpoint has no token-type table
  float layer_norm_eps = 1e-5f;
  Norm norm = Norm::post;
  bool has_pooler = false;
  int num_labels = 0;       // 0 when there is no classification head
  HeadActivation head_activation = HeadActivation::tanh;
  std::vector<std::string> labels;  // optional names of the logits
  Pooling default_pooling = Pooling::cls;
  bool default_normalize = false;
  DType dtype = DType::f32;  // dtype of the matrices in the file

  // Tokenizer ids (fairseq dictionary of XLM-R, SPEC §3).
  int bos_id = 0, pad_id = 1, eos_id = 2, unk_id = 3;
  int max_length = 0;  // most tokens one sequence may have, specials included

  int head_dim() const { return heads ? hidden / heads : 0; }

  // Throws xlmr::Error when a key is missing or a value is out of range.
  static ModelConfig from_json(const nlohmann::json& j);
  // The "model" and "tokenizer" objects of the file's JSON section.
  nlohmann::json to_json() const;
};

// Which LayerNorm a fused residual step applies, and where its output goes:
// every backend runs the embedding, then per layer attention and the FFN,
// each ending in one "(add residual,) LayerNorm" step. Post-norm: the step's
// LayerNorm output replaces the residual stream. Pre-norm: the stream keeps
// the sum (keep_sum) and the LayerNorm output, the next sublayer's input, goes
// to a second buffer, except after the last layer, where the final LayerNorm
// makes the output.
struct NormStep {
  enum Which { emb, ln1, ln2, final } which;
  int layer;      // for ln1 / ln2
  bool keep_sum;  // pre-norm: the stream keeps the sum, the LayerNorm goes elsewhere
};
NormStep norm_after_embedding(const ModelConfig& c);
NormStep norm_after_attention(const ModelConfig& c, int layer);
NormStep norm_after_ffn(const ModelConfig& c, int layer);

}  // namespace xlmr
