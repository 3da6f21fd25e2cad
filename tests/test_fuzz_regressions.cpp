// Replays inputs through the fuzz entry points (tests/fuzz/fuzz_entry.h) in the
// ordinary build: every file saved under tests/fixtures/fuzz-regressions/<target>/
// (inputs that once crashed a reader or broke its contract, see
// docs/robustness.md), plus hostile variants of valid files made here. Each
// must be accepted or rejected with one clean xlmr::Error; the entry points
// let anything else escape, which fails the test.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "test_support.h"
#include "tiny_model.h"
#include "tests/fuzz/fuzz_entry.h"

namespace fs = std::filesystem;
namespace fz = xlmr::fuzz;

namespace {

fz::Outcome replay(fz::Target t, const std::string& bytes) {
  return fz::run(t, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// Runs `bytes` and requires that nothing but an xlmr::Error came out.
fz::Outcome survive(fz::Target t, const std::string& bytes, const std::string& label) {
  INFO(fz::target_name(t) << ": " << label << " (" << bytes.size() << " bytes)");
  fz::Outcome o;
  REQUIRE_NOTHROW(o = replay(t, bytes));
  CHECK(o.accepted + o.rejected >= 1);
  return o;
}

void require_accepted(fz::Target t, const std::string& bytes, const std::string& label) {
  const fz::Outcome o = survive(t, bytes, label);
  INFO(label << ": " << o.last_error);
  CHECK(o.accepted >= 1);
  CHECK(o.rejected == 0);
}

void require_rejected(fz::Target t, const std::string& bytes, const std::string& label) {
  const fz::Outcome o = survive(t, bytes, label);
  INFO(label);
  CHECK(o.rejected >= 1);
}

// Cuts at the start, around the first header bytes, in the middle and at the end.
std::vector<size_t> cut_points(size_t n) {
  std::vector<size_t> cuts = {0, 1, 7, 8, 9, 64, 127, 128, 129, n / 3, n / 2, n - n / 4, n - 9, n - 1};
  cuts.erase(std::remove_if(cuts.begin(), cuts.end(), [n](size_t c) { return c >= n; }), cuts.end());
  return cuts;
}

// Every truncation point above must be rejected, never crash.
void truncations(fz::Target t, const std::string& bytes, const std::string& label) {
  for (size_t cut : cut_points(bytes.size())) require_rejected(t, bytes.substr(0, cut), label + " cut at " + std::to_string(cut));
}

// Deterministic single-byte changes spread over the file: accepted or
// rejected, both fine, as long as nothing else happens.
void mutations(fz::Target t, const std::string& bytes, const std::string& label, size_t count = 48) {
  const uint8_t values[] = {0x00, 0xff, 0x7f, 0x80, 0x01, '\n', '"', '{'};
  for (size_t k = 0; k < count && !bytes.empty(); ++k) {
    const size_t pos = (k * 7919u + 13u) % bytes.size();
    std::string m = bytes;
    m[pos] = char(values[k % sizeof values]);
    survive(t, m, label + " byte " + std::to_string(pos) + " changed");
  }
}

const std::string& demo_spm() {
  static const std::string bytes = test::read_file(test::source_path("scripts/demo/model/sentencepiece.bpe.model"));
  return bytes;
}

}  // namespace

TEST_CASE("saved fuzz inputs are rejected or accepted cleanly", "[fuzz]") {
  const fs::path root = test::fixture("fuzz-regressions");
  int replayed = 0;
  for (fz::Target t : fz::all_targets()) {
    const fs::path dir = root / fz::target_name(t);
    if (!fs::is_directory(dir)) continue;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) {
      survive(t, test::read_file(f.string()), f.filename().string());
      ++replayed;
    }
  }
  CHECK(replayed > 0);
}

TEST_CASE("fuzz entry: hostile .xlmr files", "[fuzz]") {
  const std::string plain = fz::make_xlmr_seed(false, "");
  const std::string half = fz::make_xlmr_seed(true, "");
  const std::string with_tok = fz::make_xlmr_seed(false, demo_spm());
  require_accepted(fz::Target::xlmr, plain, "f32 seed");
  require_accepted(fz::Target::xlmr, half, "f16 seed");
  require_accepted(fz::Target::xlmr, with_tok, "seed with the demo tokenizer");
  truncations(fz::Target::xlmr, plain, "f32 seed");
  truncations(fz::Target::xlmr, with_tok, "seed with the demo tokenizer");
  // The entry point repairs checksums, so these reach the config, directory
  // and tokenizer parsers.
  mutations(fz::Target::xlmr, plain, "f32 seed", 200);
  mutations(fz::Target::xlmr, half, "f16 seed", 100);
  std::string garbage_tok = with_tok;
  for (size_t i = with_tok.size() - demo_spm().size(); i < garbage_tok.size(); i += 61) garbage_tok[i] = '\x8f';
  survive(fz::Target::xlmr, garbage_tok, "tokenizer section scrambled");
  require_rejected(fz::Target::xlmr, std::string(4096, '\0'), "zeros");
}

TEST_CASE("fuzz entry: .xlmr configs with wrong types and untrusted text", "[fuzz]") {
  const xlmr::ModelConfig c = test::tiny_config();
  const auto tensors = test::tiny_tensors(c);
  const std::string path = test::scratch("fuzz") + "/config.xlmr";
  auto variant = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = c.to_json();
    edit(j);
    xlmr::write_xlmr_file(path, j, tensors, "");
    return test::read_file(path);
  };
  require_accepted(fz::Target::xlmr, variant([](nlohmann::json&) {}), "unchanged");
  const std::vector<std::pair<std::string, std::function<void(nlohmann::json&)>>> bad = {
      {"string special id", [](nlohmann::json& j) { j["tokenizer"]["bos_id"] = "zero"; }},
      {"float special id", [](nlohmann::json& j) { j["tokenizer"]["eos_id"] = 1e300; }},
      {"huge special id", [](nlohmann::json& j) { j["tokenizer"]["pad_id"] = 4294967297LL; }},
      {"float max_length", [](nlohmann::json& j) { j["tokenizer"]["max_length"] = -1e300; }},
      {"string has_pooler", [](nlohmann::json& j) { j["model"]["has_pooler"] = "yes"; }},
      {"number head_activation", [](nlohmann::json& j) { j["model"]["head_activation"] = 5; }},
      {"array pooling", [](nlohmann::json& j) { j["model"]["pooling"] = nlohmann::json::array(); }},
      {"object normalize", [](nlohmann::json& j) { j["model"]["normalize"] = nlohmann::json::object(); }},
      {"control characters in family", [](nlohmann::json& j) { j["model"]["family"] = "x\n\x01y"; }},
      {"control characters in dtype", [](nlohmann::json& j) { j["model"]["dtype"] = "f\r32"; }},
      {"tokenizer not an object", [](nlohmann::json& j) { j["tokenizer"] = nlohmann::json::array(); }},
      {"model not an object", [](nlohmann::json& j) { j["model"] = 1; }},
      {"unknown norm", [](nlohmann::json& j) { j["model"]["norm"] = "middle"; }},
      {"number norm", [](nlohmann::json& j) { j["model"]["norm"] = 1; }},
      // The tensors are a post-norm model's: no final_ln, an emb.ln too many.
      {"pre norm without its tensors", [](nlohmann::json& j) { j["model"]["norm"] = "pre"; }},
  };
  for (const auto& b : bad) require_rejected(fz::Target::xlmr, variant(b.second), b.first);

  // A well-formed file with one tensor the schema does not know, named with
  // control characters: the message must escape the name.
  auto extra = tensors;
  xlmr::TensorToWrite t;
  t.name = "stray\n\x1b[31mname";
  t.shape = {1};
  t.data.assign(4, 0);
  extra.push_back(t);
  xlmr::write_xlmr_file(path, c.to_json(), extra, "");
  require_rejected(fz::Target::xlmr, test::read_file(path), "unexpected tensor with control characters");
}

TEST_CASE("fuzz entry: hostile safetensors files", "[fuzz]") {
  for (const char* name : {"handmade.safetensors", "model.safetensors"}) {
    const std::string bytes = test::read_file(test::fixture(std::string("readers/") + name));
    require_accepted(fz::Target::safetensors, bytes, name);
    truncations(fz::Target::safetensors, bytes, name);
    mutations(fz::Target::safetensors, bytes, name);
  }
  auto with_header = [](const std::string& json) {
    std::string len(8, '\0');
    for (size_t i = 0; i < 8; ++i) len[i] = char((uint64_t(json.size()) >> (8 * i)) & 0xff);
    return len + json;
  };
  require_accepted(fz::Target::safetensors, with_header("{}"), "empty header");
  require_rejected(fz::Target::safetensors, with_header("{\"a\x7f\x01\n\": 1}"), "control characters in a name");
  require_rejected(fz::Target::safetensors, with_header("{\"a\": {\"dtype\": \"F32\", \x7f}}"), "DEL in the JSON");
  require_rejected(fz::Target::safetensors, with_header(std::string(200, '[')), "deep nesting");
}

TEST_CASE("fuzz entry: hostile PyTorch checkpoints", "[fuzz]") {
  for (const char* name : {"state_zip.pt", "nested_legacy.pt", "handmade_zip.pt"}) {
    const std::string bytes = test::read_file(test::fixture(std::string("readers/") + name));
    require_accepted(fz::Target::torch, bytes, name);
    truncations(fz::Target::torch, bytes, name);
    mutations(fz::Target::torch, bytes, name);
  }
  require_rejected(fz::Target::torch, std::string("PK\x03\x04", 4) + std::string(100, '\0'), "zip magic only");
}

TEST_CASE("fuzz entry: hostile tokenizer input", "[fuzz]") {
  const std::vector<std::string> texts = {
      "",
      std::string("\x00", 1),
      "hello world",
      "\xc3\x28 \xa0\xa1 \xe2\x28\xa1 \xf0\x90\x28\xbc \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf",
      std::string(3000, 'a'),
      "first half\xff second half",
      "\xff\xff",
      "<s> </s> <pad> <unk> <mask>",
  };
  for (const std::string& t : texts) {
    for (uint8_t ctl : {0x00, 0x3f, 0x40, 0x41, 0x80, 0xc0, 0xff}) {
      require_accepted(fz::Target::tokenizer, std::string(1, char(ctl)) + t, "text with control byte " + std::to_string(ctl));
    }
  }
  require_accepted(fz::Target::tokenizer, "", "empty input");
}

TEST_CASE("fuzz entry: hostile SentencePiece models", "[fuzz]") {
  require_accepted(fz::Target::spm_model, demo_spm(), "demo model");
  require_rejected(fz::Target::spm_model, "", "empty model");
  require_rejected(fz::Target::spm_model, "not a protobuf at all", "text");
  for (size_t cut : {size_t(1), size_t(2), size_t(10), size_t(1000), demo_spm().size() / 2}) {
    survive(fz::Target::spm_model, demo_spm().substr(0, cut), "demo model cut at " + std::to_string(cut));
  }
  mutations(fz::Target::spm_model, demo_spm().substr(0, 4096), "demo model prefix", 16);
}

TEST_CASE("fuzz entry: hostile tokenizer.json files", "[fuzz]") {
  const std::string good = test::read_file(test::fixture("tokenizer/demo_tokenizer.json"));
  require_accepted(fz::Target::tokenizer_json, good, "demo tokenizer.json");
  require_rejected(fz::Target::tokenizer_json, "", "empty file");
  require_rejected(fz::Target::tokenizer_json, "{}", "empty object");
  require_rejected(fz::Target::tokenizer_json, "[1, 2, 3]", "array");
  require_rejected(fz::Target::tokenizer_json, std::string(100000, '[') + std::string(100000, ']'), "deep array");
  // Sequences nested past any real file's depth.
  std::string nested = "{\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\"}";
  for (int k = 0; k < 2000; ++k) nested = "{\"type\": \"Sequence\", \"pretokenizers\": [" + nested + "]}";
  const std::string vocab = "[[\"<s>\", 0], [\"<pad>\", 0], [\"</s>\", 0], [\"<unk>\", 0], [\"a\", -1]]";
  require_rejected(fz::Target::tokenizer_json,
                   "{\"model\": {\"type\": \"Unigram\", \"vocab\": " + vocab + "}, \"pre_tokenizer\": " + nested + "}",
                   "deeply nested pre-tokenizer");
  // A minimal valid file: four specials, one piece, a Metaspace.
  require_accepted(fz::Target::tokenizer_json,
                   "{\"model\": {\"type\": \"Unigram\", \"vocab\": " + vocab +
                       "}, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\xE2\x96\x81\"}}",
                   "minimal file");
  for (size_t cut : cut_points(good.size())) survive(fz::Target::tokenizer_json, good.substr(0, cut), "cut at " + std::to_string(cut));
  mutations(fz::Target::tokenizer_json, good, "demo tokenizer.json", 16);

  // The precompiled charsmap reaches SentencePiece as given: cut short or
  // overwritten, as base64 that still decodes.
  const std::string key = "\"precompiled_charsmap\": \"";
  const size_t at = good.find(key);
  REQUIRE(at != std::string::npos);
  const size_t begin = at + key.size(), end = good.find('"', begin);
  const std::string map = good.substr(begin, end - begin);
  auto with_map = [&](const std::string& m) { return good.substr(0, begin) + m + good.substr(end); };
  for (size_t len : {size_t(4), size_t(8), size_t(12), size_t(64), size_t(1000), map.size() / 2, map.size() - 4})
    survive(fz::Target::tokenizer_json, with_map(map.substr(0, len / 4 * 4)), "charsmap cut to " + std::to_string(len));
  std::string scrambled = map;
  for (size_t k = 0; k < scrambled.size(); k += 97) scrambled[k] = "AZaz09+/"[k % 8];
  survive(fz::Target::tokenizer_json, with_map(scrambled), "charsmap scrambled");
  survive(fz::Target::tokenizer_json, with_map("////" + map.substr(4)), "charsmap header overwritten");
  survive(fz::Target::tokenizer_json, with_map("AAAAAAAA" + map.substr(8)), "charsmap header zeroed");
}
