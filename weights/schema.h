// The canonical tensor schema of a .xlmr file: every name, and the shape it
// must have for a given config. The converter writes exactly this set and the
// loader accepts exactly this set, so both sides use this one list.
//
//   emb.word [V,E]   emb.pos [P,E]   emb.type [T,E]?   emb.ln.{weight,bias} [E]  (post-norm only)
//   layers.{i}.attn.qkv.weight [3E,E] (rows: Q, then K, then V)   .bias [3E]
//   layers.{i}.attn.out.{weight [E,E], bias [E]}
//   layers.{i}.ln1.{weight,bias} [E]   (post: after attention; pre: before it)
//   layers.{i}.ffn1.{weight [F,E], bias [F]}   layers.{i}.ffn2.{weight [E,F], bias [E]}
//   layers.{i}.ln2.{weight,bias} [E]   (post: after the FFN; pre: before it)
//   final_ln.{weight,bias} [E]                        (pre-norm only: after the last layer)
//   pooler.dense.{weight [E,E], bias [E]}?            (HF pooler)
//   head.dense.{weight [E,E], bias [E]}?  head.out.{weight [C,E], bias [C]}?
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/config.h"

namespace xlmr {

struct SchemaEntry {
  std::string name;
  std::vector<int64_t> shape;
};

std::string layer_tensor(int layer, const char* leaf);  // "layers.{i}.{leaf}"

// Every tensor a model with this config has, in file order.
std::vector<SchemaEntry> model_schema(const ModelConfig& c);

}  // namespace xlmr
