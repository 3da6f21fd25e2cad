#include "weights/convert.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "engine/config.h"
#include "engine/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_json.h"
#include "weights/schema.h"
#include "weights/xlmr_file.h"

namespace xlmr {
namespace {

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool is_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}
std::string dirname_of(const std::string& p) {
  const size_t k = p.find_last_of('/');
  return k == std::string::npos ? "." : p.substr(0, k == 0 ? 1 : k);
}
std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  XLMR_CHECK(f, "cannot read '" + path + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
nlohmann::json read_json(const std::string& path) {
  try {
    return nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    XLMR_THROW("'" + path + "' is not valid JSON: " + e.what());
  }
}
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }
std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t k = s.find(from); k != std::string::npos; k = s.find(from, k + to.size())) s.replace(k, from.size(), to);
  return s;
}
std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// ---- finding the source files ----------------------------------------------

struct Sources {
  std::vector<std::string> weight_files;
  std::string config_json;  // "" when none
  std::string tokenizer;    // "" when none
  std::string dir;          // the folder of a folder source, else ""
};

// A sentence-transformers folder says how its embeddings are made: modules.json
// lists a Pooling module (its config.json names the mode) and, for models such
// as multilingual-e5 and bge-m3, a Normalize module. Read into the file's
// defaults so that plain `xlmr-infer` gives the model's own embeddings.
void sentence_transformers_defaults(const std::string& dir, ModelConfig* c, std::vector<std::string>* notes) {
  const std::string modules_path = join(dir, "modules.json");
  if (dir.empty() || !is_file(modules_path)) return;
  const nlohmann::json modules = read_json(modules_path);
  XLMR_CHECK(modules.is_array(), "'" + modules_path + "' is not a list of modules");
  for (const nlohmann::json& m : modules) {
    if (!m.is_object() || !m.contains("type") || !m["type"].is_string()) continue;
    const std::string type = m["type"].get<std::string>();
    if (ends_with(type, ".Normalize")) {
      c->default_normalize = true;
    } else if (ends_with(type, ".Pooling")) {
      const std::string sub = m.contains("path") && m["path"].is_string() ? m["path"].get<std::string>() : "";
      XLMR_CHECK(sub.find("..") == std::string::npos && (sub.empty() || sub[0] != '/'),
                 "'" + modules_path + "': module path '" + sub + "' must stay inside the folder");
      const std::string cfg_path = join(join(dir, sub), "config.json");
      if (!is_file(cfg_path)) {
        notes->push_back("'" + cfg_path + "' not found: the default pooling stays " +
                         std::string(to_string(c->default_pooling)));
        continue;
      }
      const nlohmann::json cfg = read_json(cfg_path);
      auto on = [&](const char* key) { return cfg.is_object() && cfg.value(key, false) == true; };
      std::vector<std::string> modes;
      for (const char* key : {"pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                              "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                              "pooling_mode_lasttoken"})
        if (on(key)) modes.push_back(key);
      if (modes.size() == 1 && modes[0] == "pooling_mode_cls_token") {
        c->default_pooling = Pooling::cls;
      } else if (modes.size() == 1 && modes[0] == "pooling_mode_mean_tokens") {
        c->default_pooling = Pooling::mean;
      } else {
        std::string list;
        for (const std::string& k : modes) list += (list.empty() ? "" : ", ") + k;
        notes->push_back("'" + cfg_path + "' asks for " + (list.empty() ? std::string("no pooling mode") : list) +
                         ", which the engine does not compute: the default pooling stays " +
                         std::string(to_string(c->default_pooling)) + " (choose one at run time)");
      }
    }
  }
}

std::vector<std::string> shards_from_index(const std::string& dir, const std::string& index) {
  const nlohmann::json j = read_json(index);
  XLMR_CHECK(j.contains("weight_map") && j["weight_map"].is_object(), "'" + index + "' has no \"weight_map\" object");
  std::vector<std::string> files;
  for (const auto& kv : j["weight_map"].items()) {
    XLMR_CHECK(kv.value().is_string(), "'" + index + "': weight_map entry '" + kv.key() + "' is not a file name");
    const std::string f = kv.value().get<std::string>();
    XLMR_CHECK(f.find('/') == std::string::npos && f.find("..") == std::string::npos,
               "'" + index + "': shard name '" + f + "' must be a plain file name");
    if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
  }
  XLMR_CHECK(!files.empty(), "'" + index + "' lists no shards");
  for (std::string& f : files) f = join(dir, f);
  return files;
}

Sources find_sources(const std::string& src, const ConvertOptions& opts) {
  Sources s;
  std::string dir;
  if (is_dir(src)) {
    dir = src;
    s.dir = src;
    if (is_file(join(dir, "config.json"))) s.config_json = join(dir, "config.json");
    for (const char* index : {"model.safetensors.index.json", "pytorch_model.bin.index.json"})
      if (s.weight_files.empty() && is_file(join(dir, index))) s.weight_files = shards_from_index(dir, join(dir, index));
    for (const char* single : {"model.safetensors", "pytorch_model.bin", "model.pt", "checkpoint.pt"})
      if (s.weight_files.empty() && is_file(join(dir, single))) s.weight_files.push_back(join(dir, single));
    XLMR_CHECK(!s.weight_files.empty(),
               "'" + src + "': no weights found (looked for model.safetensors[.index.json], "
               "pytorch_model.bin[.index.json], model.pt, checkpoint.pt)");
  } else {
    XLMR_CHECK(is_file(src), "'" + src + "': no such file or folder");
    dir = dirname_of(src);
    s.weight_files.push_back(src);
  }
  if (!opts.tokenizer_path.empty()) {
    XLMR_CHECK(is_file(opts.tokenizer_path), "tokenizer '" + opts.tokenizer_path + "': no such file");
    s.tokenizer = opts.tokenizer_path;
  } else if (is_file(join(dir, "sentencepiece.bpe.model"))) {
    s.tokenizer = join(dir, "sentencepiece.bpe.model");
  } else if (is_file(join(dir, "tokenizer.json"))) {
    s.tokenizer = join(dir, "tokenizer.json");  // rebuilt as a SentencePiece model below
  }
  return s;
}

// ---- naming ----------------------------------------------------------------

// A canonical tensor's source: one tensor, or Q, K, V to be stacked.
struct Source {
  std::vector<std::string> parts;
};

class Namer {
 public:
  explicit Namer(const std::vector<SourceTensor>& tensors) {
    for (const SourceTensor& t : tensors) by_name_[t.name] = &t;
  }
  const SourceTensor* get(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
  }
  bool has(const std::string& name) const { return get(name) != nullptr; }
  // The only name ending in `suffix`, or "" when none; two or more is an error.
  std::string unique_suffix(const std::string& suffix) const {
    std::string found;
    for (const auto& kv : by_name_)
      if (kv.first == suffix || ends_with(kv.first, "." + suffix)) {
        XLMR_CHECK(found.empty(), "checkpoint holds two candidates for '" + suffix + "': '" + found + "' and '" +
                                      kv.first + "' (convert one model at a time)");
        found = kv.first;
      }
    return found;
  }
  const std::map<std::string, const SourceTensor*>& all() const { return by_name_; }

 private:
  std::map<std::string, const SourceTensor*> by_name_;
};

struct Naming {
  std::string name;   // torchtext, torchtext-old, hf, hf-xl, fairseq
  std::string enc;    // prefix of encoder tensors
  std::string root;   // prefix of the whole model (heads live here)
  bool pre_norm = false;  // XLM-R XL/XXL layout: LayerNorm before each sublayer and after the last layer
};

Naming detect_naming(const Namer& n) {
  Naming r;
  std::string w;
  if (!(w = n.unique_suffix("token_embedding.weight")).empty()) {
    r.enc = w.substr(0, w.size() - std::strlen("token_embedding.weight"));
    r.name = n.has(r.enc + "layers.0.attention.input_projection.weight") ? "torchtext-old" : "torchtext";
    r.root = r.enc;
    for (const char* tail : {"encoder.transformer.", "transformer."})
      if (ends_with(r.root, tail)) {
        r.root = r.root.substr(0, r.root.size() - std::strlen(tail));
        break;
      }
  } else if (!(w = n.unique_suffix("sentence_encoder.embed_tokens.weight")).empty()) {
    r.name = "fairseq";
    r.enc = w.substr(0, w.size() - std::strlen("embed_tokens.weight"));
    r.root = r.enc.substr(0, r.enc.size() - std::strlen("sentence_encoder."));
    for (const char* tail : {"encoder.", "decoder."})
      if (ends_with(r.root, tail)) {
        r.root = r.root.substr(0, r.root.size() - std::strlen(tail));
        break;
      }
    // The XL/XXL releases (encoder_normalize_before): the same layer names,
    // applied before each sublayer, and a LayerNorm after the last layer.
    r.pre_norm = n.has(r.enc + "layer_norm.weight");
  } else if (!(w = n.unique_suffix("embeddings.word_embeddings.weight")).empty()) {
    r.name = "hf";
    r.enc = w.substr(0, w.size() - std::strlen("embeddings.word_embeddings.weight"));
    r.root = r.enc;
    if (!r.root.empty()) {  // "roberta." -> "", "model.bert." -> "model."
      const size_t k = r.root.find_last_of('.', r.root.size() - 2);
      r.root = k == std::string::npos ? "" : r.root.substr(0, k + 1);
    }
    // XLMRobertaXL (xlm-roberta-xl, -xxl): pre-LayerNorm layers.
    if (n.has(r.enc + "encoder.LayerNorm.weight") || n.has(r.enc + "encoder.layer.0.attention.self_attn_layer_norm.weight")) {
      r.name = "hf-xl";
      r.pre_norm = true;
    }
  } else {
    XLMR_THROW("cannot tell which model this checkpoint holds: no word-embedding tensor "
               "(looked for torchtext 'token_embedding.weight', Hugging Face "
               "'embeddings.word_embeddings.weight', fairseq 'sentence_encoder.embed_tokens.weight')");
  }
  return r;
}

// Source candidates for each canonical leaf, relative to the encoder prefix,
// "{i}" standing for the layer index. A candidate "a|b|c" is split Q/K/V.
struct LeafRule {
  const char* leaf;
  std::vector<std::string> candidates;
};

std::vector<LeafRule> layer_rules(const std::string& naming) {
  if (naming == "torchtext") {
    const std::string b = "layers.layers.{i}.";
    return {{"attn.qkv.weight", {b + "self_attn.in_proj_weight"}},
            {"attn.qkv.bias", {b + "self_attn.in_proj_bias"}},
            {"attn.out.weight", {b + "self_attn.out_proj.weight"}},
            {"attn.out.bias", {b + "self_attn.out_proj.bias"}},
            {"ln1.weight", {b + "norm1.weight"}},
            {"ln1.bias", {b + "norm1.bias"}},
            {"ffn1.weight", {b + "linear1.weight"}},
            {"ffn1.bias", {b + "linear1.bias"}},
            {"ffn2.weight", {b + "linear2.weight"}},
            {"ffn2.bias", {b + "linear2.bias"}},
            {"ln2.weight", {b + "norm2.weight"}},
            {"ln2.bias", {b + "norm2.bias"}}};
  }
  if (naming == "torchtext-old") {
    const std::string b = "layers.{i}.";
    return {{"attn.qkv.weight", {b + "attention.input_projection.weight"}},
            {"attn.qkv.bias", {b + "attention.input_projection.bias"}},
            {"attn.out.weight", {b + "attention.output_projection.weight"}},
            {"attn.out.bias", {b + "attention.output_projection.bias"}},
            {"ln1.weight", {b + "attention_layer_norm.weight"}},
            {"ln1.bias", {b + "attention_layer_norm.bias"}},
            {"ffn1.weight", {b + "residual_mlp.mlp.0.weight"}},
            {"ffn1.bias", {b + "residual_mlp.mlp.0.bias"}},
            {"ffn2.weight", {b + "residual_mlp.mlp.3.weight"}},
            {"ffn2.bias", {b + "residual_mlp.mlp.3.bias"}},
            {"ln2.weight", {b + "final_layer_norm.weight"}},
            {"ln2.bias", {b + "final_layer_norm.bias"}}};
  }
  if (naming == "hf" || naming == "hf-xl") {
    // XLMRobertaXL keeps its LayerNorms in other modules: before attention
    // and before the FFN (pre-norm), not in the output blocks.
    const bool xl = naming == "hf-xl";
    const std::string b = "encoder.layer.{i}.";
    const std::string a = b + "attention.self.";
    const std::string ln1 = b + (xl ? "attention.self_attn_layer_norm." : "attention.output.LayerNorm.");
    const std::string ln2 = b + (xl ? "LayerNorm." : "output.LayerNorm.");
    return {{"attn.qkv.weight", {a + "query.weight|" + a + "key.weight|" + a + "value.weight"}},
            {"attn.qkv.bias", {a + "query.bias|" + a + "key.bias|" + a + "value.bias"}},
            {"attn.out.weight", {b + "attention.output.dense.weight"}},
            {"attn.out.bias", {b + "attention.output.dense.bias"}},
            {"ln1.weight", {ln1 + "weight", ln1 + "gamma"}},
            {"ln1.bias", {ln1 + "bias", ln1 + "beta"}},
            {"ffn1.weight", {b + "intermediate.dense.weight"}},
            {"ffn1.bias", {b + "intermediate.dense.bias"}},
            {"ffn2.weight", {b + "output.dense.weight"}},
            {"ffn2.bias", {b + "output.dense.bias"}},
            {"ln2.weight", {ln2 + "weight", ln2 + "gamma"}},
            {"ln2.bias", {ln2 + "bias", ln2 + "beta"}}};
  }
  // fairseq: packed in_proj (older) or separate q/k/v projections (newer)
  const std::string b = "layers.{i}.";
  const std::string a = b + "self_attn.";
  return {{"attn.qkv.weight", {a + "in_proj_weight", a + "q_proj.weight|" + a + "k_proj.weight|" + a + "v_proj.weight"}},
          {"attn.qkv.bias", {a + "in_proj_bias", a + "q_proj.bias|" + a + "k_proj.bias|" + a + "v_proj.bias"}},
          {"attn.out.weight", {a + "out_proj.weight"}},
          {"attn.out.bias", {a + "out_proj.bias"}},
          {"ln1.weight", {b + "self_attn_layer_norm.weight"}},
          {"ln1.bias", {b + "self_attn_layer_norm.bias"}},
          {"ffn1.weight", {b + "fc1.weight"}},
          {"ffn1.bias", {b + "fc1.bias"}},
          {"ffn2.weight", {b + "fc2.weight"}},
          {"ffn2.bias", {b + "fc2.bias"}},
          {"ln2.weight", {b + "final_layer_norm.weight"}},
          {"ln2.bias", {b + "final_layer_norm.bias"}}};
}

// Non-layer tensors: canonical name -> candidates (absolute names).
std::vector<std::pair<std::string, std::vector<std::string>>> global_rules(const Naming& nm, const std::string& fairseq_head) {
  const std::string& e = nm.enc;
  const std::string& r = nm.root;
  if (nm.name == "torchtext" || nm.name == "torchtext-old") {
    return {{"emb.word", {e + "token_embedding.weight"}},
            {"emb.pos", {e + "positional_embedding.embedding.weight"}},
            {"emb.ln.weight", {e + "embedding_layer_norm.weight"}},
            {"emb.ln.bias", {e + "embedding_layer_norm.bias"}},
            {"head.dense.weight", {r + "head.dense.weight"}},
            {"head.dense.bias", {r + "head.dense.bias"}},
            {"head.out.weight", {r + "head.out_proj.weight"}},
            {"head.out.bias", {r + "head.out_proj.bias"}}};
  }
  if (nm.name == "hf" || nm.name == "hf-xl") {
    const std::string x = e + "embeddings.";
    std::vector<std::pair<std::string, std::vector<std::string>>> rules = {
        {"emb.word", {x + "word_embeddings.weight"}},
        {"emb.pos", {x + "position_embeddings.weight"}},
        {"emb.type", {x + "token_type_embeddings.weight"}}};
    if (nm.pre_norm) {  // XLMRobertaXL: no embedding LayerNorm, one after the last layer
      rules.push_back({"final_ln.weight", {e + "encoder.LayerNorm.weight"}});
      rules.push_back({"final_ln.bias", {e + "encoder.LayerNorm.bias"}});
    } else {
      rules.push_back({"emb.ln.weight", {x + "LayerNorm.weight", x + "LayerNorm.gamma"}});
      rules.push_back({"emb.ln.bias", {x + "LayerNorm.bias", x + "LayerNorm.beta"}});
    }
    rules.push_back({"pooler.dense.weight", {e + "pooler.dense.weight"}});
    rules.push_back({"pooler.dense.bias", {e + "pooler.dense.bias"}});
    rules.push_back({"head.dense.weight", {r + "classifier.dense.weight"}});
    rules.push_back({"head.dense.bias", {r + "classifier.dense.bias"}});
    rules.push_back({"head.out.weight", {r + "classifier.out_proj.weight"}});
    rules.push_back({"head.out.bias", {r + "classifier.out_proj.bias"}});
    return rules;
  }
  const std::string h = r + "classification_heads." + fairseq_head + ".";
  std::vector<std::pair<std::string, std::vector<std::string>>> rules = {{"emb.word", {e + "embed_tokens.weight"}},
                                                                         {"emb.pos", {e + "embed_positions.weight"}}};
  if (nm.pre_norm) {
    rules.push_back({"final_ln.weight", {e + "layer_norm.weight"}});
    rules.push_back({"final_ln.bias", {e + "layer_norm.bias"}});
  } else {
    rules.push_back({"emb.ln.weight", {e + "emb_layer_norm.weight", e + "layernorm_embedding.weight"}});
    rules.push_back({"emb.ln.bias", {e + "emb_layer_norm.bias", e + "layernorm_embedding.bias"}});
  }
  rules.push_back({"head.dense.weight", {h + "dense.weight"}});
  rules.push_back({"head.dense.bias", {h + "dense.bias"}});
  rules.push_back({"head.out.weight", {h + "out_proj.weight"}});
  rules.push_back({"head.out.bias", {h + "out_proj.bias"}});
  return rules;
}

// Tensors a checkpoint may carry that the encoder does not use.
bool ignorable(const std::string& name, const Naming& nm) {
  if (!starts_with(name, nm.root)) return true;  // outside the model: optimizer state and the like
  const std::string rel = name.substr(nm.root.size());
  for (const char* tail : {"position_ids", "token_type_ids", ".version", "_float_tensor"})
    if (ends_with(rel, tail)) return true;
  for (const char* head : {"lm_head.", "encoder.lm_head.", "decoder.lm_head.", "cls.", "classification_heads."})
    if (starts_with(rel, head)) return true;  // LM heads; fairseq heads other than the chosen one
  return false;
}

// ---- dtype conversion -----------------------------------------------------

// Element i of a source tensor's bytes (`p`, as SourceTensor::read gives them).
float src_value(const SourceTensor& t, const uint8_t* p, size_t i) {
  switch (t.dtype) {
    case SrcDType::f32: { float f; std::memcpy(&f, p + 4 * i, 4); return f; }
    case SrcDType::f64: { double d; std::memcpy(&d, p + 8 * i, 8); return float(d); }
    case SrcDType::f16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); return f16_to_f32(h); }
    case SrcDType::bf16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); return bf16_to_f32(h); }
    default: break;
  }
  XLMR_THROW("tensor '" + t.name + "' has dtype " + dtype_name(t.dtype) + ", expected a floating type");
}

// Room a source tensor needs at the end of the output while it is converted
// in place (append_converted): the larger of its size and its converted size.
uint64_t conversion_room(const SourceTensor& t, DType dt) {
  return std::max(t.nbytes(), uint64_t(t.numel()) * dtype_size(dt));
}

// Appends t, converted to dt, to *out. The source bytes are read straight
// into *out and converted there, so a tensor costs the larger of its source
// and converted sizes rather than both: the source goes at the end of that
// room, and element i is read before it is written, at or before where
// element i + 1 starts, so converting front to back never overwrites an
// element not yet read (whether dt is narrower, as wide or wider).
void append_converted(std::vector<uint8_t>* out, const SourceTensor& t, DType dt) {
  const size_t n = size_t(t.numel());
  const size_t at = out->size();
  const size_t room = size_t(conversion_room(t, dt));
  out->resize(at + room);
  uint8_t* dst = out->data() + at;
  uint8_t* src = dst + (room - size_t(t.nbytes()));
  t.read_into(src);
  for (size_t i = 0; i < n; ++i) {
    const float v = src_value(t, src, i);
    XLMR_CHECK(std::isfinite(v), "tensor '" + t.name + "' contains NaN or infinity at element " + std::to_string(i));
    if (dt == DType::f32) {
      std::memcpy(dst + 4 * i, &v, 4);
    } else {
      const uint16_t h = dt == DType::f16 ? f32_to_f16(v) : f32_to_bf16(v);
      XLMR_CHECK(dt != DType::f16 || (h & 0x7c00u) != 0x7c00u,
                 "tensor '" + t.name + "' has values too large for f16 (use --dtype bf16 or f32)");
      std::memcpy(dst + 2 * i, &h, 2);
    }
  }
  out->resize(at + n * dtype_size(dt));
}

int hf_int(const nlohmann::json& cfg, const char* key, int fallback) {
  if (cfg.is_object() && cfg.contains(key) && cfg[key].is_number_integer()) return cfg[key].get<int>();
  return fallback;
}

// A nested metadata lookup such as metadata["args"]["encoder_attention_heads"].
int meta_int(const nlohmann::json& meta, std::initializer_list<const char*> path) {
  const nlohmann::json* j = &meta;
  for (const char* k : path) {
    if (!j->is_object() || !j->contains(k)) return 0;
    j = &(*j)[k];
  }
  return j->is_number_integer() ? j->get<int>() : 0;
}

}  // namespace

ConvertReport convert_checkpoint(const std::string& src, const std::string& out_path, const ConvertOptions& opts) {
  ConvertReport rep;
  const Sources srcs = find_sources(src, opts);
  // The output must not be a folder, nor a file the conversion reads (it
  // would be replaced by the .xlmr only at the end, the source then gone).
  struct stat out_st;
  if (::stat(out_path.c_str(), &out_st) == 0) {
    XLMR_CHECK(!S_ISDIR(out_st.st_mode), "'" + out_path + "' is a folder: give the .xlmr file to write");
    std::vector<std::string> inputs = srcs.weight_files;
    if (!srcs.tokenizer.empty()) inputs.push_back(srcs.tokenizer);
    if (!srcs.config_json.empty()) inputs.push_back(srcs.config_json);
    for (const std::string& f : inputs) {
      struct stat in_st;
      XLMR_CHECK(::stat(f.c_str(), &in_st) != 0 || in_st.st_dev != out_st.st_dev || in_st.st_ino != out_st.st_ino,
                 "'" + out_path + "' is '" + f + "', which the conversion reads: write the .xlmr elsewhere");
    }
  }
  rep.source_files = srcs.weight_files;
  rep.tokenizer = srcs.tokenizer;
  const nlohmann::json hf = srcs.config_json.empty() ? nlohmann::json::object() : read_json(srcs.config_json);

  // Open every shard into one list: names, shapes and dtypes only. Each
  // tensor's bytes are read from its shard when it is converted, below.
  Checkpoint all;
  for (const std::string& f : srcs.weight_files) {
    Checkpoint ck = read_checkpoint_file(f);
    if (all.format.empty()) all.format = ck.format;
    else if (all.format != ck.format) all.format = "mixed";
    all.metadata.merge_patch(ck.metadata);
    for (SourceTensor& t : ck.tensors) all.tensors.push_back(std::move(t));
  }
  rep.source_format = all.format;
  XLMR_CHECK(!all.tensors.empty(), "'" + src + "' holds no tensors");
  {
    std::set<std::string> seen;
    for (const SourceTensor& t : all.tensors)
      XLMR_CHECK(seen.insert(t.name).second, "tensor '" + t.name + "' appears in two shards");
  }

  Namer namer(all.tensors);
  const Naming nm = detect_naming(namer);
  rep.naming = nm.name;

  // fairseq keeps named classification heads; pick one.
  std::string fairseq_head = opts.head_name;
  if (nm.name == "fairseq") {
    std::set<std::string> heads;
    const std::string pre = nm.root + "classification_heads.";
    for (const auto& kv : namer.all())
      if (starts_with(kv.first, pre)) heads.insert(kv.first.substr(pre.size(), kv.first.find('.', pre.size()) - pre.size()));
    if (fairseq_head.empty() && heads.size() == 1) fairseq_head = *heads.begin();
    if (fairseq_head.empty() && heads.size() > 1) {
      std::string list;
      for (const auto& h : heads) list += (list.empty() ? "" : ", ") + h;
      XLMR_THROW("the checkpoint has several classification heads (" + list + "): choose one with --head NAME");
    }
    XLMR_CHECK(fairseq_head.empty() || heads.count(fairseq_head),
               "no classification head named '" + fairseq_head + "' in the checkpoint");
  }

  // Map every canonical tensor to its sources.
  std::set<std::string> used;
  std::map<std::string, Source> mapped;
  std::vector<std::string> missing;
  auto resolve = [&](const std::string& canonical, const std::vector<std::string>& candidates, bool required) {
    for (const std::string& cand : candidates) {
      Source s;
      std::stringstream ss(cand);
      std::string part;
      while (std::getline(ss, part, '|')) s.parts.push_back(part);
      bool all_there = true;
      for (const std::string& p : s.parts) all_there = all_there && namer.has(p);
      if (all_there) {
        for (const std::string& p : s.parts) used.insert(p);
        mapped[canonical] = s;
        return true;
      }
    }
    if (required) missing.push_back(canonical + " (from '" + replace_all(candidates.front(), "|", "', '") + "')");
    return false;
  };

  int n_layers = 0;
  const std::vector<LeafRule> lrules = layer_rules(nm.name);
  auto layer_exists = [&](int i) {
    for (const LeafRule& r : lrules)
      for (const std::string& c : r.candidates) {
        const std::string first = c.substr(0, c.find('|'));
        if (namer.has(nm.enc + replace_all(first, "{i}", std::to_string(i)))) return true;
      }
    return false;
  };
  while (layer_exists(n_layers)) ++n_layers;
  for (int i = 0; i < n_layers; ++i)
    for (const LeafRule& r : lrules) {
      std::vector<std::string> cands;
      for (const std::string& c : r.candidates) {
        std::string full;
        std::stringstream ss(replace_all(c, "{i}", std::to_string(i)));
        std::string part;
        while (std::getline(ss, part, '|')) full += (full.empty() ? "" : "|") + nm.enc + part;
        cands.push_back(full);
      }
      resolve(layer_tensor(i, r.leaf), cands, true);
    }

  for (const auto& g : global_rules(nm, fairseq_head)) {
    const std::string& canonical = g.first;
    const bool optional = canonical == "emb.type" || starts_with(canonical, "pooler.") || starts_with(canonical, "head.");
    resolve(canonical, g.second, !optional);
  }
  // Heads and the pooler come whole or not at all.
  for (const char* group : {"head.", "pooler."}) {
    int have = 0, total = 0;
    for (const auto& g : global_rules(nm, fairseq_head))
      if (starts_with(g.first, group)) {
        ++total;
        have += mapped.count(g.first) ? 1 : 0;
      }
    XLMR_CHECK(have == 0 || have == total, std::string("the checkpoint has only part of the ") +
                                               (group[0] == 'h' ? "classification head" : "pooler") +
                                               " (" + std::to_string(have) + " of " + std::to_string(total) +
                                               " tensors)");
  }

  if (!missing.empty()) {
    std::string list;
    for (size_t k = 0; k < missing.size() && k < 8; ++k) list += (k ? "; " : "") + missing[k];
    if (missing.size() > 8) list += "; and " + std::to_string(missing.size() - 8) + " more";
    XLMR_THROW("the " + nm.name + " checkpoint lacks " + std::to_string(missing.size()) + " tensor(s): " + list);
  }

  std::vector<std::string> unknown;
  for (const auto& kv : namer.all()) {
    if (used.count(kv.first)) continue;
    if (ignorable(kv.first, nm) || !is_float(kv.second->dtype)) rep.ignored.push_back(kv.first);
    else unknown.push_back(kv.first);
  }
  if (!unknown.empty() && !opts.ignore_unknown) {
    std::string list;
    for (size_t k = 0; k < unknown.size() && k < 8; ++k) list += (k ? ", " : "") + unknown[k];
    if (unknown.size() > 8) list += ", and " + std::to_string(unknown.size() - 8) + " more";
    XLMR_THROW("the " + nm.name + " checkpoint has " + std::to_string(unknown.size()) +
               " tensor(s) this converter does not know: " + list + " (pass --ignore-unknown to drop them)");
  }
  for (const std::string& u : unknown) rep.ignored.push_back(u);

  // ---- config from shapes, config.json and the options ----
  auto src_of = [&](const std::string& canonical) { return namer.get(mapped.at(canonical).parts.front()); };
  auto dims = [&](const std::string& canonical) {
    const SourceTensor* t = src_of(canonical);
    XLMR_CHECK(t->shape.size() == 2, "tensor '" + t->name + "' has shape " + shape_str(t->shape) + ", expected 2 dimensions");
    return t->shape;
  };
  ModelConfig c;
  const std::string model_type = hf.is_object() ? hf.value("model_type", std::string()) : std::string();
  std::string family = opts.family;
  if (family.empty() && !model_type.empty()) {
    if (model_type == "bert") family = "bert";
    else if (model_type == "xlm-roberta" || model_type == "roberta" || model_type == "camembert" ||
             model_type == "xlm-roberta-xl")
      family = "xlmr";
    else XLMR_THROW("config.json model_type '" + model_type + "' is not an XLM-R-family encoder this engine runs "
                    "(xlm-roberta, xlm-roberta-xl, roberta, camembert, bert); override with --family if you are sure");
    XLMR_CHECK((model_type == "xlm-roberta-xl") == nm.pre_norm,
               "config.json says model_type '" + model_type + "' but the tensors are laid out as " +
                   (nm.pre_norm ? "XLM-R XL (pre-LayerNorm)" : "post-LayerNorm layers") +
                   "; the checkpoint and its config.json do not belong together");
  }
  if (family.empty()) family = nm.name == "hf" && ends_with(nm.enc, "bert.") && !ends_with(nm.enc, "roberta.") ? "bert" : "xlmr";
  XLMR_CHECK(family == "xlmr" || family == "bert", "--family must be xlmr or bert");
  c.family = family == "bert" ? Family::bert : Family::xlmr;
  c.norm = nm.pre_norm ? Norm::pre : Norm::post;

  const std::vector<int64_t> word = dims("emb.word"), pos = dims("emb.pos");
  c.vocab_size = int(word[0]);
  c.hidden = int(word[1]);
  c.max_positions = int(pos[0]);
  c.layers = n_layers;
  XLMR_CHECK(n_layers > 0, "the checkpoint has no encoder layers");
  c.ffn = int(dims(layer_tensor(0, "ffn1.weight"))[0]);
  c.type_vocab_size = mapped.count("emb.type") ? int(dims("emb.type")[0]) : 0;
  c.has_pooler = mapped.count("pooler.dense.weight") > 0;
  c.num_labels = mapped.count("head.out.weight") ? int(dims("head.out.weight")[0]) : 0;

  int heads = opts.heads;
  if (!heads) heads = hf_int(hf, "num_attention_heads", 0);
  if (!heads) heads = meta_int(all.metadata, {"args", "encoder_attention_heads"});
  if (!heads) heads = meta_int(all.metadata, {"cfg", "model", "encoder_attention_heads"});
  if (!heads) {
    // The checkpoint does not say (a bare state dict: torchtext's never
    // does). A wrong head count gives wrong numbers without any error, so
    // only the released shapes are assumed, and the assumption is reported.
    struct Known {
      Family family;
      Norm norm;
      int hidden, heads;
      const char* what;
    };
    static const Known kKnown[] = {
        {Family::xlmr, Norm::post, 768, 12, "XLM-R base"},
        {Family::xlmr, Norm::post, 1024, 16, "XLM-R large"},
        {Family::xlmr, Norm::pre, 2560, 32, "XLM-R XL"},
        {Family::xlmr, Norm::pre, 4096, 32, "XLM-R XXL"},
        {Family::bert, Norm::post, 384, 12, "multilingual-e5-small and multilingual MiniLM-L12"},
    };
    for (const Known& k : kKnown)
      if (k.family == c.family && k.norm == c.norm && k.hidden == c.hidden) {
        heads = k.heads;
        rep.notes.push_back("the checkpoint does not record its head count: assumed " + std::to_string(k.heads) +
                            ", the " + k.what + " shape (hidden " + std::to_string(k.hidden) +
                            "); pass --heads if this model differs");
      }
  }
  XLMR_CHECK(heads > 0, "cannot tell the number of attention heads: no config.json num_attention_heads, no fairseq "
                        "args, and hidden size " + std::to_string(c.hidden) +
                        " is not one of a released XLM-R-family shape; pass --heads");
  XLMR_CHECK(c.hidden % heads == 0, "hidden size " + std::to_string(c.hidden) + " is not divisible by " +
                                        std::to_string(heads) + " heads");
  c.heads = heads;

  c.layer_norm_eps = c.family == Family::bert ? 1e-12f : 1e-5f;
  if (hf.is_object() && hf.contains("layer_norm_eps") && hf["layer_norm_eps"].is_number())
    c.layer_norm_eps = hf["layer_norm_eps"].get<float>();
  const int hf_pad = hf_int(hf, "pad_token_id", 1);
  // XLM-R counts positions from pad + 1 (= 2); BERT-arch models from 0.
  c.position_offset = c.family == Family::xlmr ? hf_pad + 1 : 0;
  XLMR_CHECK(c.max_positions > c.position_offset + 1,
             "the position table has " + std::to_string(c.max_positions) + " rows, too few for this model family");
  c.max_length = c.max_positions - c.position_offset;

  std::string act = opts.head_activation;
  if (act.empty()) act = starts_with(nm.name, "torchtext") ? "relu" : "tanh";  // SPEC §6 trap 1
  XLMR_CHECK(act == "relu" || act == "tanh", "--head-activation must be relu or tanh");
  c.head_activation = act == "relu" ? HeadActivation::relu : HeadActivation::tanh;
  if (c.num_labels > 0 && hf.is_object() && hf.contains("id2label") && hf["id2label"].is_object() &&
      int(hf["id2label"].size()) == c.num_labels) {
    for (int k = 0; k < c.num_labels; ++k) {
      const std::string key = std::to_string(k);
      c.labels.push_back(hf["id2label"].contains(key) && hf["id2label"][key].is_string()
                             ? hf["id2label"][key].get<std::string>()
                             : key);
    }
  }
  c.default_pooling = c.family == Family::bert ? Pooling::mean : Pooling::cls;
  sentence_transformers_defaults(srcs.dir, &c, &rep.notes);
  c.dtype = opts.dtype;

  // ---- shapes against the schema ----
  const std::vector<SchemaEntry> schema = model_schema(c);
  for (const SchemaEntry& s : schema) {
    XLMR_CHECK(mapped.count(s.name), "internal: no source for '" + s.name + "'");
    const Source& m = mapped.at(s.name);
    std::vector<int64_t> shape;
    for (const std::string& p : m.parts) {
      const SourceTensor* t = namer.get(p);
      XLMR_CHECK(is_float(t->dtype), "tensor '" + p + "' has dtype " + dtype_name(t->dtype) + ", expected floats");
      if (shape.empty()) shape = t->shape;
      else if (!t->shape.empty() && t->shape.size() == shape.size()) shape[0] += t->shape[0];
    }
    if (shape != s.shape) {
      std::string names;
      for (const std::string& p : m.parts) names += (names.empty() ? "'" : ", '") + p + "' " + shape_str(namer.get(p)->shape);
      XLMR_THROW("tensor " + names + " does not fit " + s.name + " " + shape_str(s.shape) +
                 " of a model with hidden " + std::to_string(c.hidden) + ", ffn " + std::to_string(c.ffn) +
                 ", vocab " + std::to_string(c.vocab_size));
    }
  }

  // ---- tokenizer ----
  std::string spm;
  if (!srcs.tokenizer.empty()) {
    spm = read_text(srcs.tokenizer);
    if (looks_like_tokenizer_json(spm)) {
      RebuiltTokenizer rebuilt = rebuild_spm_model(spm, srcs.tokenizer);
      spm = std::move(rebuilt.spm_model);
      rep.tokenizer_rebuilt = true;
      rep.notes.insert(rep.notes.end(), rebuilt.notes.begin(), rebuilt.notes.end());
    }
    Tokenizer tok(spm);  // validates the model proto
    XLMR_CHECK(tok.max_model_id() < c.vocab_size,
               "tokenizer '" + srcs.tokenizer + "' has " + std::to_string(tok.spm_size()) +
                   " pieces; with the fairseq id shift it needs a vocabulary of at least " +
                   std::to_string(tok.max_model_id() + 1) + ", the model has " + std::to_string(c.vocab_size));
  }

  // ---- write ----
  nlohmann::json j = c.to_json();
  std::vector<std::string> basenames;
  for (const std::string& f : srcs.weight_files) basenames.push_back(f.substr(f.find_last_of('/') + 1));
  j["provenance"] = {{"source_format", all.format},
                     {"naming", nm.name},
                     {"source_files", basenames},
                     {"source_dtype", dtype_name(src_of("emb.word")->dtype)},
                     {"converter", std::string("xlmr-convert ") + XLMR_VERSION}};
  if (!model_type.empty()) j["provenance"]["model_type"] = model_type;
  if (!fairseq_head.empty()) j["provenance"]["fairseq_head"] = fairseq_head;
  if (!spm.empty()) j["provenance"]["tokenizer_source"] = rep.tokenizer_rebuilt ? "tokenizer.json" : "sentencepiece";

  // Memory: nothing so far has read a tensor's bytes (everything above used
  // names, shapes and dtypes). Each output tensor is made while the file is
  // written: its sources are read one at a time into the writer's buffer,
  // which is reused, and converted there. The peak is about the largest
  // tensor, source or converted, not the checkpoint (XLM-R XXL is 43 GB in
  // f32, its embedding 4.1 GB).
  ConvertProgress progress;
  progress.tensors_total = schema.size();
  for (const SchemaEntry& s : schema) {
    uint64_t numel = 1;
    for (int64_t d : s.shape) numel *= uint64_t(d);
    progress.bytes_total += numel * dtype_size(s.shape.size() == 2 ? opts.dtype : DType::f32);
  }
  std::vector<TensorToWrite> tensors;
  for (const SchemaEntry& s : schema) {
    TensorToWrite t;
    t.name = s.name;
    t.shape = s.shape;
    t.dtype = s.shape.size() == 2 ? opts.dtype : DType::f32;  // biases and LayerNorm stay f32
    std::vector<const SourceTensor*> parts;
    for (const std::string& p : mapped.at(s.name).parts) parts.push_back(namer.get(p));
    const DType dt = t.dtype;
    t.produce = [parts, dt, &progress, &opts](std::vector<uint8_t>& out) {
      // The writer reserved the converted size; a part converted in place
      // may need more for a moment (a wider source). Reserve that up front:
      // growing a filled buffer would copy it, holding both.
      uint64_t need = 0, at = 0;
      for (const SourceTensor* p : parts) {
        need = std::max(need, at + conversion_room(*p, dt));
        at += uint64_t(p->numel()) * dtype_size(dt);
      }
      if (out.capacity() < need) {
        std::vector<uint8_t>().swap(out);
        out.reserve(size_t(need));
      }
      for (const SourceTensor* p : parts) append_converted(&out, *p, dt);
      // Reported once converted; the writer writes it next.
      progress.tensors_done += 1;
      progress.bytes_done += out.size();
      if (opts.progress) opts.progress(progress);
    };
    tensors.push_back(std::move(t));
  }
  rep.bytes = progress.bytes_total;
  write_xlmr_file(out_path, j, tensors, spm);
  rep.config = j;
  rep.n_tensors = tensors.size();
  return rep;
}

}  // namespace xlmr
