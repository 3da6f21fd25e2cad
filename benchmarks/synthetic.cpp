#include "benchmarks/synthetic.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "engine/error.h"
#include "weights/schema.h"
#include "weights/xlmr_file.h"

namespace bench {
namespace {

// Values are drawn in chunks, each from its own generator, so that chunks
// can be filled in parallel and still give the same bytes on any machine.
constexpr size_t kChunk = size_t(1) << 20;

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// "emb.ln.weight", "layers.3.ln1.bias": the last-but-one name component
// starts with "ln".
bool is_layernorm(const std::string& name, bool* is_weight) {
  const size_t last = name.rfind('.');
  if (last == std::string::npos) return false;
  const size_t prev = name.rfind('.', last - 1);
  const std::string part = name.substr(prev == std::string::npos ? 0 : prev + 1, last - (prev + 1));
  *is_weight = name.compare(last + 1, std::string::npos, "weight") == 0;
  return part.compare(0, 2, "ln") == 0;
}

struct Job {
  float* data;
  size_t n;
  uint64_t seed;
};

}  // namespace

xlmr::ModelConfig synthetic_config(const std::string& size, int vocab_size, int layers) {
  xlmr::ModelConfig c;
  if (size == "small") {
    c.hidden = 256, c.heads = 4, c.ffn = 1024, c.layers = 4;
  } else if (size == "base") {
    c.hidden = 768, c.heads = 12, c.ffn = 3072, c.layers = 12;
  } else if (size == "large") {
    c.hidden = 1024, c.heads = 16, c.ffn = 4096, c.layers = 24;
  } else if (size == "xl") {  // XLM-R XL and XXL: pre-LayerNorm, head sizes 80 and 128
    c.hidden = 2560, c.heads = 32, c.ffn = 10240, c.layers = 36, c.norm = xlmr::Norm::pre;
  } else if (size == "xxl") {
    c.hidden = 4096, c.heads = 32, c.ffn = 16384, c.layers = 48, c.norm = xlmr::Norm::pre;
  } else {
    XLMR_THROW("--synthetic must be small, base, large, xl or xxl, not '" + size + "'");
  }
  XLMR_CHECK(vocab_size > 4, "the synthetic model's vocabulary must be larger than 4");
  XLMR_CHECK(layers >= 0, "--layers must be positive");
  if (layers > 0) c.layers = layers;
  c.family = xlmr::Family::xlmr;
  c.vocab_size = vocab_size;
  c.max_positions = 514;
  c.position_offset = 2;
  c.type_vocab_size = 1;
  c.layer_norm_eps = 1e-5f;
  c.has_pooler = false;
  c.num_labels = 2;
  c.head_activation = xlmr::HeadActivation::relu;
  c.default_pooling = xlmr::Pooling::cls;
  c.dtype = xlmr::DType::f32;
  c.max_length = c.max_positions - c.position_offset;
  return c;
}

void write_synthetic_model(const std::string& path, const xlmr::ModelConfig& config,
                           const std::string& tokenizer_model, uint64_t seed) {
  const std::vector<xlmr::SchemaEntry> schema = xlmr::model_schema(config);
  std::vector<xlmr::TensorToWrite> tensors(schema.size());
  std::vector<Job> jobs;
  for (size_t i = 0; i < schema.size(); ++i) {
    xlmr::TensorToWrite& t = tensors[i];
    t.name = schema[i].name;
    t.shape = schema[i].shape;
    t.dtype = xlmr::DType::f32;
    size_t n = 1;
    for (int64_t d : t.shape) n *= size_t(d);
    t.data.resize(n * sizeof(float));
    float* f = reinterpret_cast<float*>(t.data.data());
    bool weight = false;
    if (is_layernorm(t.name, &weight)) {
      for (size_t k = 0; k < n; ++k) f[k] = weight ? 1.0f : 0.0f;
      continue;
    }
    for (size_t k = 0; k < n; k += kChunk)
      jobs.push_back({f + k, std::min(kChunk, n - k), splitmix64(seed ^ splitmix64((uint64_t(i) << 32) | (k / kChunk)))});
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t j = 0; j < jobs.size(); ++j) {
    std::mt19937_64 rng(jobs[j].seed);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (size_t k = 0; k < jobs[j].n; ++k) jobs[j].data[k] = normal(rng);
  }
  xlmr::write_xlmr_file(path, config.to_json(), tensors, tokenizer_model);
}

}  // namespace bench
