// A loaded model: the validated .xlmr file, its config, and named fp32
// pointers to every weight. f32 files are used in place (the mapping);
// f16/bf16 matrices are widened once, at load, into buffers the model owns.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/config.h"
#include "weights/xlmr_file.h"

namespace xlmr {

struct LayerWeights {
  const float* qkv_w;   // [3E, E] rows Q, K, V
  const float* qkv_b;   // [3E]
  const float* out_w;   // [E, E]
  const float* out_b;   // [E]
  const float* ln1_g;   // [E]
  const float* ln1_b;   // [E]
  const float* ffn1_w;  // [F, E]
  const float* ffn1_b;  // [F]
  const float* ffn2_w;  // [E, F]
  const float* ffn2_b;  // [E]
  const float* ln2_g;   // [E]
  const float* ln2_b;   // [E]
};

struct ModelWeights {
  const float* word = nullptr;      // [V, E]
  const float* pos = nullptr;       // [P, E]
  const float* type0 = nullptr;     // [E] token-type row 0, or nullptr
  const float* emb_ln_g = nullptr;  // [E] post-norm models, else nullptr
  const float* emb_ln_b = nullptr;  // [E]
  std::vector<LayerWeights> layers;
  const float* final_ln_g = nullptr;  // [E] pre-norm models, else nullptr
  const float* final_ln_b = nullptr;  // [E]
  const float* pooler_w = nullptr;  // [E, E] or nullptr
  const float* pooler_b = nullptr;  // [E]
  const float* head_dense_w = nullptr;  // [E, E] or nullptr
  const float* head_dense_b = nullptr;  // [E]
  const float* head_out_w = nullptr;    // [C, E]
  const float* head_out_b = nullptr;    // [C]
};

// The gamma and beta of a NormStep (engine/config.h).
struct NormParams {
  const float* gamma;
  const float* beta;
};
NormParams norm_params(const ModelWeights& w, const NormStep& step);

class Model {
 public:
  // Opens, validates (config, tensor set, shapes) and maps the weights.
  // widen_matrices false: the layer, pooler and head matrices of an f16/bf16
  // file are not widened up front (their pointers in weights() stay nullptr),
  // for a backend that reads each once, through tensor_f32(), to pack or
  // upload it; the peak memory of a load then stays near the file's size.
  static std::unique_ptr<Model> load(const std::string& path, const LoadOptions& opts = {},
                                     bool widen_matrices = true);

  // The f32 values of any tensor of the file: a pointer into the mapping for
  // f32 data, else widened into *scratch (valid while scratch is unchanged).
  const float* tensor_f32(const std::string& name, std::vector<float>* scratch) const;

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const XlmrFile& file() const { return *file_; }

  // For a backend that keeps its own copy of the weight matrices (packed for
  // oneDNN, or on the GPU): frees the widened f32 copies of the layer,
  // pooler and head matrices of an f16/bf16 file (about twice the file's
  // size) and sets their pointers in weights() to nullptr. Embeddings,
  // biases and LayerNorm parameters stay; tensor_f32() still reads any.
  void release_matrices();

 private:
  Model() = default;
  const float* f32(const std::string& name);
  const float* matrix(const std::string& name);  // f32(), or nullptr when matrices are not widened
  bool widen_matrices_ = true;

  std::unique_ptr<XlmrFile> file_;
  ModelConfig config_;
  ModelWeights weights_;
  std::map<std::string, std::vector<float>> owned_;  // widened copies of f16/bf16 tensors, by name
};

}  // namespace xlmr
