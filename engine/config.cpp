#include "engine/config.h"

#include <limits>

#include "engine/error.h"
#include "weights/file_io.h"

namespace xlmr {

const char* to_string(Family f) { return f == Family::xlmr ? "xlmr" : "bert"; }
const char* to_string(HeadActivation a) { return a == HeadActivation::relu ? "relu" : "tanh"; }
const char* to_string(Norm n) { return n == Norm::pre ? "pre" : "post"; }
const char* to_string(Pooling p) {
  switch (p) {
    case Pooling::cls: return "cls";
    case Pooling::mean: return "mean";
    case Pooling::none: return "none";
    case Pooling::pooler: return "pooler";
  }
  return "?";
}

const char* to_string(Precision p) {
  switch (p) {
    case Precision::bf16: return "bf16";
    case Precision::f16: return "f16";
    case Precision::int8: return "int8";
    case Precision::f32: break;
  }
  return "f32";
}

bool parse_pooling(const std::string& s, Pooling* out) {
  for (Pooling p : {Pooling::cls, Pooling::mean, Pooling::none, Pooling::pooler})
    if (s == to_string(p)) {
      *out = p;
      return true;
    }
  return false;
}

bool parse_precision(const std::string& s, Precision* out) {
  for (Precision p : {Precision::f32, Precision::bf16, Precision::f16, Precision::int8})
    if (s == to_string(p)) {
      *out = p;
      return true;
    }
  return false;
}

namespace {

const nlohmann::json& need(const nlohmann::json& obj, const char* key, const char* section) {
  auto it = obj.find(key);
  XLMR_CHECK(it != obj.end(), std::string("model config: missing \"") + section + "." + key + "\"");
  return *it;
}

int need_int(const nlohmann::json& obj, const char* key, const char* section, int lo, int hi) {
  const nlohmann::json& v = need(obj, key, section);
  XLMR_CHECK(v.is_number_integer(), std::string("model config: \"") + section + "." + key + "\" is not an integer");
  const int64_t x = v.get<int64_t>();
  XLMR_CHECK(x >= lo && x <= hi, std::string("model config: \"") + section + "." + key + "\" = " +
                                     std::to_string(x) + " is out of range [" + std::to_string(lo) + ", " +
                                     std::to_string(hi) + "]");
  return int(x);
}

std::string need_string(const nlohmann::json& obj, const char* key, const char* section) {
  const nlohmann::json& v = need(obj, key, section);
  XLMR_CHECK(v.is_string(), std::string("model config: \"") + section + "." + key + "\" is not a string");
  return v.get<std::string>();
}

// Optional keys: absent gives the default; present must have the right type
// (nlohmann's value() would throw its own exception type, or convert a float
// into an int with undefined behaviour).
int opt_int(const nlohmann::json& obj, const char* key, const char* section, int dflt, int lo, int hi) {
  return obj.contains(key) ? need_int(obj, key, section, lo, hi) : dflt;
}

bool opt_bool(const nlohmann::json& obj, const char* key, const char* section, bool dflt) {
  auto it = obj.find(key);
  if (it == obj.end()) return dflt;
  XLMR_CHECK(it->is_boolean(), std::string("model config: \"") + section + "." + key + "\" is not true or false");
  return it->get<bool>();
}

std::string opt_string(const nlohmann::json& obj, const char* key, const char* section, const char* dflt) {
  return obj.contains(key) ? need_string(obj, key, section) : std::string(dflt);
}

// Strings from the file, quoted in messages.
std::string quoted(const std::string& s) { return "\"" + detail::printable(s, 64) + "\""; }

}  // namespace

ModelConfig ModelConfig::from_json(const nlohmann::json& j) {
  XLMR_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(),
             "model config: no \"model\" object in the file's JSON section");
  const nlohmann::json& m = j["model"];
  ModelConfig c;
  const std::string fam = need_string(m, "family", "model");
  if (fam == "xlmr") c.family = Family::xlmr;
  else if (fam == "bert") c.family = Family::bert;
  else XLMR_THROW("model config: unknown family " + quoted(fam) + " (expected xlmr or bert)");
  c.vocab_size = need_int(m, "vocab_size", "model", 4, 1 << 24);
  c.hidden = need_int(m, "hidden", "model", 1, 1 << 16);
  c.ffn = need_int(m, "ffn", "model", 1, 1 << 18);
  c.heads = need_int(m, "heads", "model", 1, 1024);
  c.layers = need_int(m, "layers", "model", 0, 1024);
  c.max_positions = need_int(m, "max_positions", "model", 1, 1 << 20);
  c.position_offset = need_int(m, "position_offset", "model", 0, 1 << 20);
  c.type_vocab_size = need_int(m, "type_vocab_size", "model", 0, 1 << 16);
  const nlohmann::json& eps = need(m, "layer_norm_eps", "model");
  XLMR_CHECK(eps.is_number() && eps.get<double>() > 0 && eps.get<double>() < 1,
             "model config: \"model.layer_norm_eps\" must be a number in (0, 1)");
  c.layer_norm_eps = eps.get<float>();
  const std::string norm = opt_string(m, "norm", "model", "post");
  if (norm == "post") c.norm = Norm::post;
  else if (norm == "pre") c.norm = Norm::pre;
  else XLMR_THROW("model config: unknown norm " + quoted(norm) + " (expected post or pre)");
  c.has_pooler = opt_bool(m, "has_pooler", "model", false);
  c.num_labels = need_int(m, "num_labels", "model", 0, 1 << 20);
  const std::string act = opt_string(m, "head_activation", "model", "tanh");
  if (act == "relu") c.head_activation = HeadActivation::relu;
  else if (act == "tanh") c.head_activation = HeadActivation::tanh;
  else XLMR_THROW("model config: unknown head_activation " + quoted(act) + " (expected relu or tanh)");
  if (m.contains("labels") && m["labels"].is_array())
    for (const auto& l : m["labels"]) c.labels.push_back(l.is_string() ? l.get<std::string>() : l.dump());
  XLMR_CHECK(!c.num_labels || c.labels.empty() || int(c.labels.size()) == c.num_labels,
             "model config: \"labels\" has a different count than num_labels");
  const std::string pool = opt_string(m, "pooling", "model", "cls");
  XLMR_CHECK(parse_pooling(pool, &c.default_pooling), "model config: unknown pooling " + quoted(pool));
  c.default_normalize = opt_bool(m, "normalize", "model", false);
  const std::string dt = need_string(m, "dtype", "model");
  XLMR_CHECK(parse_dtype(dt, &c.dtype), "model config: unknown dtype " + quoted(dt));

  XLMR_CHECK(c.hidden % c.heads == 0, "model config: hidden size " + std::to_string(c.hidden) +
                                          " is not a multiple of the head count " + std::to_string(c.heads));
  XLMR_CHECK(c.position_offset < c.max_positions,
             "model config: position_offset leaves no room in the position table");

  const nlohmann::json& t = j.contains("tokenizer") ? j["tokenizer"] : nlohmann::json::object();
  XLMR_CHECK(t.is_object(), "model config: \"tokenizer\" is not an object");
  const int id_max = std::numeric_limits<int>::max();
  c.bos_id = opt_int(t, "bos_id", "tokenizer", 0, 0, id_max);
  c.pad_id = opt_int(t, "pad_id", "tokenizer", 1, 0, id_max);
  c.eos_id = opt_int(t, "eos_id", "tokenizer", 2, 0, id_max);
  c.unk_id = opt_int(t, "unk_id", "tokenizer", 3, 0, id_max);
  for (int id : {c.bos_id, c.pad_id, c.eos_id, c.unk_id})
    XLMR_CHECK(id >= 0 && id < c.vocab_size, "model config: a special token id is outside the vocabulary");
  const int room = c.max_positions - c.position_offset;
  c.max_length = opt_int(t, "max_length", "tokenizer", room, std::numeric_limits<int>::min(), id_max);
  XLMR_CHECK(c.max_length >= 2 && c.max_length <= room,
             "model config: tokenizer.max_length " + std::to_string(c.max_length) +
                 " does not fit the position table (" + std::to_string(room) + " usable rows)");
  return c;
}

nlohmann::json ModelConfig::to_json() const {
  nlohmann::json m = {
      {"family", to_string(family)},
      {"vocab_size", vocab_size},
      {"hidden", hidden},
      {"ffn", ffn},
      {"heads", heads},
      {"layers", layers},
      {"max_positions", max_positions},
      {"position_offset", position_offset},
      {"type_vocab_size", type_vocab_size},
      {"layer_norm_eps", layer_norm_eps},
      {"norm", to_string(norm)},
      {"activation", "gelu"},
      {"has_pooler", has_pooler},
      {"num_labels", num_labels},
      {"head_activation", to_string(head_activation)},
      {"pooling", to_string(default_pooling)},
      {"normalize", default_normalize},
      {"dtype", dtype_name(dtype)},
  };
  if (!labels.empty()) m["labels"] = labels;
  nlohmann::json t = {{"type", "sentencepiece"}, {"id_mapping", "fairseq"}, {"bos_id", bos_id},
                      {"pad_id", pad_id},       {"eos_id", eos_id},         {"unk_id", unk_id},
                      {"max_length", max_length}};
  return {{"model", m}, {"tokenizer", t}};
}

NormStep norm_after_embedding(const ModelConfig& c) {
  if (c.norm == Norm::post) return {NormStep::emb, 0, false};
  return c.layers > 0 ? NormStep{NormStep::ln1, 0, true} : NormStep{NormStep::final, 0, false};
}

NormStep norm_after_attention(const ModelConfig& c, int layer) {
  return c.norm == Norm::post ? NormStep{NormStep::ln1, layer, false} : NormStep{NormStep::ln2, layer, true};
}

NormStep norm_after_ffn(const ModelConfig& c, int layer) {
  if (c.norm == Norm::post) return {NormStep::ln2, layer, false};
  return layer + 1 < c.layers ? NormStep{NormStep::ln1, layer + 1, true} : NormStep{NormStep::final, 0, false};
}

}  // namespace xlmr
