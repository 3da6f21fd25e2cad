#include "weights/schema.h"

namespace xlmr {

std::string layer_tensor(int layer, const char* leaf) { return "layers." + std::to_string(layer) + "." + leaf; }

std::vector<SchemaEntry> model_schema(const ModelConfig& c) {
  const int64_t V = c.vocab_size, E = c.hidden, F = c.ffn, P = c.max_positions;
  std::vector<SchemaEntry> s = {
      {"emb.word", {V, E}},
      {"emb.pos", {P, E}},
  };
  if (c.type_vocab_size > 0) s.push_back({"emb.type", {c.type_vocab_size, E}});
  if (c.norm == Norm::post) {
    s.push_back({"emb.ln.weight", {E}});
    s.push_back({"emb.ln.bias", {E}});
  }
  for (int i = 0; i < c.layers; ++i) {
    s.push_back({layer_tensor(i, "attn.qkv.weight"), {3 * E, E}});
    s.push_back({layer_tensor(i, "attn.qkv.bias"), {3 * E}});
    s.push_back({layer_tensor(i, "attn.out.weight"), {E, E}});
    s.push_back({layer_tensor(i, "attn.out.bias"), {E}});
    s.push_back({layer_tensor(i, "ln1.weight"), {E}});
    s.push_back({layer_tensor(i, "ln1.bias"), {E}});
    s.push_back({layer_tensor(i, "ffn1.weight"), {F, E}});
    s.push_back({layer_tensor(i, "ffn1.bias"), {F}});
    s.push_back({layer_tensor(i, "ffn2.weight"), {E, F}});
    s.push_back({layer_tensor(i, "ffn2.bias"), {E}});
    s.push_back({layer_tensor(i, "ln2.weight"), {E}});
    s.push_back({layer_tensor(i, "ln2.bias"), {E}});
  }
  if (c.norm == Norm::pre) {
    s.push_back({"final_ln.weight", {E}});
    s.push_back({"final_ln.bias", {E}});
  }
  if (c.has_pooler) {
    s.push_back({"pooler.dense.weight", {E, E}});
    s.push_back({"pooler.dense.bias", {E}});
  }
  if (c.num_labels > 0) {
    s.push_back({"head.dense.weight", {E, E}});
    s.push_back({"head.dense.bias", {E}});
    s.push_back({"head.out.weight", {c.num_labels, E}});
    s.push_back({"head.out.bias", {c.num_labels}});
  }
  return s;
}

}  // namespace xlmr
