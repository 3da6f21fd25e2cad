// A small random model written straight through the .xlmr writer: enough to
// test the file format, the loader and engine-level behaviour without
// PyTorch. (Numbers against PyTorch come from the fixtures instead.)
#pragma once

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/config.h"
#include "weights/schema.h"
#include "weights/xlmr_file.h"

namespace test {

inline xlmr::ModelConfig tiny_config() {
  xlmr::ModelConfig c;
  c.family = xlmr::Family::xlmr;
  c.vocab_size = 40;
  c.hidden = 16;
  c.ffn = 24;
  c.heads = 2;
  c.layers = 2;
  c.max_positions = 20;
  c.position_offset = 2;
  c.type_vocab_size = 1;
  c.num_labels = 3;
  c.head_activation = xlmr::HeadActivation::relu;
  c.has_pooler = true;
  c.max_length = 18;
  return c;
}

inline std::vector<xlmr::TensorToWrite> tiny_tensors(const xlmr::ModelConfig& c, unsigned seed = 7, float stddev = 0.4f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, stddev);
  std::vector<xlmr::TensorToWrite> ts;
  for (const xlmr::SchemaEntry& s : xlmr::model_schema(c)) {
    xlmr::TensorToWrite t;
    t.name = s.name;
    t.shape = s.shape;
    t.dtype = xlmr::DType::f32;
    size_t n = 1;
    for (int64_t d : s.shape) n *= size_t(d);
    t.data.resize(n * 4);
    for (size_t i = 0; i < n; ++i) {
      float v = nd(rng);
      if (s.name.find("ln") != std::string::npos && s.name.find(".weight") != std::string::npos) v += 1.0f;
      std::memcpy(t.data.data() + 4 * i, &v, 4);
    }
    ts.push_back(std::move(t));
  }
  return ts;
}

inline void write_tiny_model(const std::string& path, const std::string& spm = "", unsigned seed = 7) {
  xlmr::ModelConfig c = tiny_config();
  xlmr::write_xlmr_file(path, c.to_json(), tiny_tensors(c, seed), spm);
}

}  // namespace test
