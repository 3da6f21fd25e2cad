#include "tokenizer/tokenizer_json.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "weights/file_io.h"

namespace xlmr {
namespace {

using nlohmann::json;

// ---- the few protobuf encodings a ModelProto needs -------------------------

void put_varint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out->push_back(char(uint8_t(v)));
}
void put_tag(std::string* out, int field, int wire_type) {
  put_varint(out, uint64_t(field) << 3 | uint64_t(wire_type));
}
void put_bytes(std::string* out, int field, const std::string& bytes) {
  put_tag(out, field, 2);
  put_varint(out, bytes.size());
  out->append(bytes);
}
void put_uint(std::string* out, int field, uint64_t v) {
  put_tag(out, field, 0);
  put_varint(out, v);
}
void put_float(std::string* out, int field, float f) {
  put_tag(out, field, 5);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  for (int k = 0; k < 4; ++k) out->push_back(char(uint8_t(bits >> (8 * k))));
}

// SentencePiece's field numbers and enum values (sentencepiece_model.proto).
enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3 };
constexpr int kModelPieces = 1, kModelTrainerSpec = 2, kModelNormalizerSpec = 3;
constexpr int kPiecePiece = 1, kPieceScore = 2, kPieceType = 3;
constexpr int kTrainerModelType = 3, kTrainerUnkId = 40, kTrainerBosId = 41, kTrainerEosId = 42;
constexpr int kUnigram = 1;
constexpr int kNormName = 1, kNormCharsmap = 2, kNormDummyPrefix = 3, kNormRemoveExtraSpaces = 4,
              kNormEscapeSpaces = 5;

std::string piece_message(const std::string& piece, float score, int type) {
  std::string m;
  put_bytes(&m, kPiecePiece, piece);
  put_float(&m, kPieceScore, score);
  put_uint(&m, kPieceType, uint64_t(type));
  return m;
}

// ---- base64 (the precompiled normalisation map) ----------------------------

bool base64_decode(const std::string& in, std::string* out) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  size_t n = in.size();
  while (n > 0 && in[n - 1] == '=') --n;
  if (in.size() % 4 != 0 || in.size() - n > 2) return false;
  out->clear();
  out->reserve(n * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    const int v = value(in[i]);
    if (v < 0) return false;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(char(uint8_t(acc >> bits)));
    }
  }
  return true;
}

// ---- reading the tokenizer.json --------------------------------------------

struct Reader {
  const std::string& what;

  [[noreturn]] void refuse(const std::string& why) const {
    XLMR_THROW("tokenizer '" + what + "': " + why +
               "; pass the model's SentencePiece file instead (--tokenizer sentencepiece.bpe.model)");
  }
  std::string type_of(const json& j, const std::string& where) const {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) refuse(where + " has no \"type\"");
    return j["type"].get<std::string>();
  }
};

// Sequences inside Sequences: real files have none; hostile ones must not
// exhaust the stack.
constexpr int kMaxNesting = 8;

struct Normalization {
  std::string charsmap;   // decoded precompiled_charsmap, "" for none
  bool collapse = false;  // runs of spaces become one (SentencePiece also strips the ends)
  bool dummy_prefix = true;
};

void read_normalizer(const Reader& r, const json& n, Normalization* out, int depth = 0) {
  if (n.is_null()) return;
  if (depth > kMaxNesting) r.refuse("its normalizer Sequences nest too deeply");
  const std::string type = r.type_of(n, "the normalizer");
  if (type == "Sequence") {
    if (!n.contains("normalizers") || !n["normalizers"].is_array()) r.refuse("the normalizer Sequence has no list");
    for (const json& m : n["normalizers"]) read_normalizer(r, m, out, depth + 1);
  } else if (type == "Precompiled") {
    const json& cm = n.contains("precompiled_charsmap") ? n["precompiled_charsmap"] : json();
    if (cm.is_null()) return;
    if (!cm.is_string() || !base64_decode(cm.get<std::string>(), &out->charsmap))
      r.refuse("the Precompiled normalizer's precompiled_charsmap is not base64");
  } else if (type == "Replace") {
    // SentencePiece's remove_extra_whitespaces, as Hugging Face's converters
    // write it: runs of spaces become one space, or one U+2581.
    const json& p = n.contains("pattern") ? n["pattern"] : json();
    const bool spaces = p.is_object() && p.contains("Regex") && p["Regex"] == " {2,}" && n.contains("content") &&
                        (n["content"] == " " || n["content"] == "\xE2\x96\x81");
    if (!spaces) r.refuse("its Replace normalizer is not the collapsing of spaces (\" {2,}\" -> \" \")");
    out->collapse = true;
  } else if (type == "Strip") {
    out->collapse = true;  // the other half of remove_extra_whitespaces: the ends
  } else {
    r.refuse("its normalizer '" + detail::one_line(type, 40) + "' has no SentencePiece equivalent");
  }
}

void read_pre_tokenizer(const Reader& r, const json& p, Normalization* out, bool* metaspace, int depth = 0) {
  if (p.is_null()) return;
  if (depth > kMaxNesting) r.refuse("its pre-tokenizer Sequences nest too deeply");
  const std::string type = r.type_of(p, "the pre-tokenizer");
  if (type == "Sequence") {
    if (!p.contains("pretokenizers") || !p["pretokenizers"].is_array())
      r.refuse("the pre-tokenizer Sequence has no list");
    for (const json& q : p["pretokenizers"]) read_pre_tokenizer(r, q, out, metaspace, depth + 1);
  } else if (type == "WhitespaceSplit") {
    out->collapse = true;
  } else if (type == "Metaspace") {
    if (!p.contains("replacement") || p["replacement"] != "\xE2\x96\x81")
      r.refuse("its Metaspace pre-tokenizer does not use U+2581 for spaces");
    if (p.contains("prepend_scheme") && p["prepend_scheme"].is_string())
      out->dummy_prefix = p["prepend_scheme"] != "never";
    else if (p.contains("add_prefix_space") && p["add_prefix_space"].is_boolean())
      out->dummy_prefix = p["add_prefix_space"].get<bool>();
    *metaspace = true;
  } else {
    r.refuse("its pre-tokenizer '" + detail::one_line(type, 40) + "' has no SentencePiece equivalent");
  }
}

RebuiltTokenizer rebuild(const Reader& r, const json& j) {
  if (!j.is_object() || !j.contains("model")) r.refuse("not a tokenizer.json (no \"model\")");
  const json& m = j["model"];
  const std::string type = r.type_of(m, "the model");
  if (type != "Unigram") r.refuse("its model is " + detail::one_line(type, 40) + ", not Unigram");
  if (m.contains("byte_fallback") && m["byte_fallback"] == true) r.refuse("its Unigram model uses byte fallback");
  if (!m.contains("vocab") || !m["vocab"].is_array()) r.refuse("its Unigram model has no vocab list");
  const json& vocab = m["vocab"];

  // Every entry a [piece, score] pair.
  std::vector<std::pair<std::string, float>> entries;
  entries.reserve(vocab.size());
  for (size_t i = 0; i < vocab.size(); ++i) {
    const json& e = vocab[i];
    if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number())
      r.refuse("vocab entry " + std::to_string(i) + " is not a [piece, score] pair");
    const float score = float(e[1].get<double>());
    if (!std::isfinite(score)) r.refuse("vocab entry " + std::to_string(i) + " has a score beyond float's range");
    entries.emplace_back(e[0].get<std::string>(), score);
  }

  // XLM-R's layout: <s> <pad> </s> <unk>, the SentencePiece pieces from its
  // fourth on, and <mask> last.
  static const char* const kSpecials[] = {"<s>", "<pad>", "</s>", "<unk>"};
  for (int k = 0; k < 4; ++k)
    if (int(entries.size()) <= k || entries[size_t(k)].first != kSpecials[k])
      r.refuse("its vocabulary does not start with XLM-R's <s> <pad> </s> <unk> (entry " + std::to_string(k) +
               (int(entries.size()) <= k ? " is missing"
                                         : " is '" + detail::one_line(entries[size_t(k)].first, 40) + "'") +
               ")");
  if (m.contains("unk_id") && m["unk_id"] != 3) r.refuse("its unk_id is not 3");
  size_t end = entries.size();
  if (end > 4 && entries[end - 1].first == "<mask>") --end;
  if (end <= 4) r.refuse("its vocabulary has no pieces besides the specials");

  Normalization norm;
  read_normalizer(r, j.contains("normalizer") ? j["normalizer"] : json(), &norm);
  bool metaspace = false;
  read_pre_tokenizer(r, j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json(), &norm, &metaspace);
  if (!metaspace) r.refuse("it has no Metaspace pre-tokenizer, so it is not a SentencePiece-style tokenizer");

  RebuiltTokenizer out;
  out.entries = int(entries.size());
  std::string& proto = out.spm_model;
  // SentencePiece's own order: <unk> <s> </s>, then the pieces (id k -> piece k - 1).
  put_bytes(&proto, kModelPieces, piece_message(entries[3].first, entries[3].second, kUnknown));
  put_bytes(&proto, kModelPieces, piece_message(entries[0].first, entries[0].second, kControl));
  put_bytes(&proto, kModelPieces, piece_message(entries[2].first, entries[2].second, kControl));
  for (size_t k = 4; k < end; ++k)
    put_bytes(&proto, kModelPieces, piece_message(entries[k].first, entries[k].second, kNormal));
  std::string trainer;
  put_uint(&trainer, kTrainerModelType, kUnigram);
  put_uint(&trainer, kTrainerUnkId, 0);
  put_uint(&trainer, kTrainerBosId, 1);
  put_uint(&trainer, kTrainerEosId, 2);
  put_bytes(&proto, kModelTrainerSpec, trainer);
  std::string normalizer;
  put_bytes(&normalizer, kNormName, norm.charsmap.empty() ? "identity" : "precompiled");
  if (!norm.charsmap.empty()) put_bytes(&normalizer, kNormCharsmap, norm.charsmap);
  put_uint(&normalizer, kNormDummyPrefix, norm.dummy_prefix);
  put_uint(&normalizer, kNormRemoveExtraSpaces, norm.collapse);
  put_uint(&normalizer, kNormEscapeSpaces, 1);
  put_bytes(&proto, kModelNormalizerSpec, normalizer);

  // Added tokens beyond the specials are matched whole by the fast
  // tokenizer; a SentencePiece model splits them like any text.
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const json& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string()) continue;
      const std::string c = a["content"].get<std::string>();
      if (c == "<s>" || c == "<pad>" || c == "</s>" || c == "<unk>" || c == "<mask>") continue;
      out.notes.push_back("tokenizer '" + r.what + "': added token '" + detail::one_line(c, 60) +
                          "' is not part of the SentencePiece model; texts containing it are split into pieces");
    }
  }
  return out;
}

}  // namespace

bool looks_like_tokenizer_json(const std::string& bytes) {
  for (char c : bytes) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    return c == '{';
  }
  return false;
}

RebuiltTokenizer rebuild_spm_model(const std::string& json_text, const std::string& what) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    XLMR_THROW("tokenizer '" + what + "' is not valid JSON: " + detail::one_line(e.what()));
  }
  return rebuild(Reader{what}, j);
}

}  // namespace xlmr
