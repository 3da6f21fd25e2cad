// A Hugging Face tokenizer.json rebuilt as a SentencePiece model: the demo
// tokenizer converted by transformers (scripts/make_tokenizer_json.py) must
// give the ids Python SentencePiece gives on the original model
// (demo_cases.json), in the file layout of today's transformers and in the
// older one; what a SentencePiece model cannot express is refused.
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_json.h"
#include "weights/convert.h"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

const nlohmann::json& demo_json() {
  static const nlohmann::json j = test::read_json(test::fixture("tokenizer/demo_tokenizer.json"));
  return j;
}

// Every case of demo_cases.json through a tokenizer rebuilt from `j`.
void check_cases(const nlohmann::json& j) {
  const xlmr::RebuiltTokenizer rt = xlmr::rebuild_spm_model(j.dump(), "demo_tokenizer.json");
  xlmr::Tokenizer tok(rt.spm_model);
  const nlohmann::json cases = test::read_json(test::fixture("tokenizer/demo_cases.json"));
  CHECK(tok.spm_size() == cases["spm_pieces"].get<int>());
  CHECK(rt.entries == cases["spm_pieces"].get<int>() + 2);  // + <pad> and <mask>
  for (const auto& c : cases["cases"]) {
    INFO(c["text"].get<std::string>());
    CHECK(tok.encode(c["text"].get<std::string>(), 100000).ids == c["ids"].get<std::vector<int32_t>>());
  }
  for (const auto& c : cases["pairs"])
    CHECK(tok.encode_pair(c["a"].get<std::string>(), c["b"].get<std::string>(), 100000).ids ==
          c["ids"].get<std::vector<int32_t>>());
}

std::string refusal(const nlohmann::json& j) {
  try {
    xlmr::rebuild_spm_model(j.dump(), "t.json");
  } catch (const xlmr::Error& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

TEST_CASE("tokenizer.json: the rebuilt model gives SentencePiece's ids", "[tokenizer]") {
  // As transformers writes it now: Precompiled + Strip + Replace(" {2,}"),
  // Metaspace with prepend_scheme.
  check_cases(demo_json());
  CHECK(xlmr::rebuild_spm_model(demo_json().dump(), "x").notes.empty());
  CHECK(xlmr::looks_like_tokenizer_json(" \n" + demo_json().dump()));
  CHECK_FALSE(xlmr::looks_like_tokenizer_json(
      test::read_file(test::source_path("scripts/demo/model/sentencepiece.bpe.model"))));
}

TEST_CASE("tokenizer.json: the older layout (Precompiled alone, WhitespaceSplit + Metaspace)", "[tokenizer]") {
  nlohmann::json j = demo_json();
  const nlohmann::json precompiled = j["normalizer"]["normalizers"][0];
  REQUIRE(precompiled["type"] == "Precompiled");
  j["normalizer"] = precompiled;
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "WhitespaceSplit"}},
                          {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"add_prefix_space", true}}}}};
  check_cases(j);

  // The settings are honoured, not ignored: without the dummy prefix the
  // first word's ids change.
  j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = false;
  xlmr::Tokenizer tok(xlmr::rebuild_spm_model(j.dump(), "x").spm_model);
  const nlohmann::json cases = test::read_json(test::fixture("tokenizer/demo_cases.json"));
  const auto& c0 = cases["cases"][0];
  CHECK(tok.encode(c0["text"].get<std::string>(), 1000).ids != c0["ids"].get<std::vector<int32_t>>());
}

TEST_CASE("tokenizer.json: what a SentencePiece model cannot express is refused", "[tokenizer][errors]") {
  const nlohmann::json good = demo_json();
  auto with = [&](auto&& edit) {
    nlohmann::json j = good;
    edit(j);
    return refusal(j);
  };
  CHECK_THAT(refusal(nlohmann::json::array()), Contains("not a tokenizer.json"));
  CHECK_THROWS_WITH(xlmr::rebuild_spm_model(good.dump().substr(0, 5000), "t.json"),
                    Contains("'t.json' is not valid JSON"));
  CHECK_THAT(with([](auto& j) { j["model"]["type"] = "BPE"; }), Contains("BPE, not Unigram"));
  CHECK_THAT(with([](auto& j) { j["model"]["byte_fallback"] = true; }), Contains("byte fallback"));
  CHECK_THAT(with([](auto& j) { j["model"]["vocab"][1][0] = "<other>"; }), Contains("<s> <pad> </s> <unk>"));
  CHECK_THAT(with([](auto& j) {
               j["model"]["vocab"] = nlohmann::json::array({{"<s>", 0.0}});
             }),
             Contains("entry 1 is missing"));
  CHECK_THAT(with([](auto& j) { j["model"]["vocab"][7] = "x"; }), Contains("vocab entry 7 is not a [piece, score]"));
  CHECK_THAT(with([](auto& j) { j["model"]["vocab"][7][1] = 1e300; }), Contains("beyond float"));
  CHECK_THAT(with([](auto& j) { j["model"]["unk_id"] = 0; }), Contains("unk_id"));
  CHECK_THAT(with([](auto& j) {
               j["normalizer"]["normalizers"].push_back({{"type", "Lowercase"}});
             }),
             Contains("normalizer 'Lowercase' has no SentencePiece equivalent"));
  CHECK_THAT(with([](auto& j) { j["normalizer"]["normalizers"][0]["precompiled_charsmap"] = "AB$="; }),
             Contains("not base64"));
  CHECK_THAT(with([](auto& j) {
               j["pre_tokenizer"] = {{"type", "ByteLevel"}};
             }),
             Contains("pre-tokenizer 'ByteLevel'"));
  CHECK_THAT(with([](auto& j) { j["pre_tokenizer"] = nullptr; }), Contains("no Metaspace"));
  CHECK_THAT(with([](auto& j) { j["pre_tokenizer"]["replacement"] = "_"; }), Contains("U+2581"));
  // Every refusal says what to do instead.
  CHECK_THAT(with([](auto& j) { j["model"]["type"] = "WordPiece"; }),
             Contains("--tokenizer sentencepiece.bpe.model"));

  // Duplicate pieces get past the JSON checks; SentencePiece itself refuses them.
  nlohmann::json dup = good;
  dup["model"]["vocab"][8] = dup["model"]["vocab"][7];
  const auto rt = xlmr::rebuild_spm_model(dup.dump(), "d.json");
  CHECK_THROWS_WITH(xlmr::Tokenizer(rt.spm_model), Contains("cannot load the SentencePiece tokenizer"));

  // An added token the SentencePiece model cannot carry is a note.
  nlohmann::json added = good;
  added["added_tokens"].push_back({{"id", 1002}, {"content", "<ent>"}, {"special", true}});
  const auto with_note = xlmr::rebuild_spm_model(added.dump(), "a.json");
  REQUIRE(with_note.notes.size() == 1);
  CHECK_THAT(with_note.notes[0], Contains("<ent>"));
}

TEST_CASE("xlmr-convert: a folder with tokenizer.json and no SentencePiece file", "[tokenizer][convert]") {
  const fs::path dir = fs::path(test::scratch("tokenizer-json")) / "hf";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(test::source_path(std::string("scripts/demo/model/") + f), dir / f);
  fs::copy_file(test::fixture("tokenizer/demo_tokenizer.json"), dir / "tokenizer.json");
  const std::string out = dir.string() + ".xlmr";
  const xlmr::ConvertReport r = xlmr::convert_checkpoint(dir.string(), out, {});
  CHECK(r.tokenizer_rebuilt);
  CHECK_THAT(r.tokenizer, Contains("tokenizer.json"));
  CHECK(r.config["provenance"]["tokenizer_source"] == "tokenizer.json");

  // The same ids and numbers as the demo model converted with its
  // sentencepiece.bpe.model.
  xlmr::EngineOptions o;
  o.threads = 1;
  auto got = xlmr::Engine::load(out, o);
  auto want = xlmr::Engine::load(test::binary_path("demo.xlmr"), o);
  const std::vector<std::string> texts = {"The sky over the harbour turned pale blue.", "Le café est très chaud",
                                          "  two  spaces  ", ""};
  const auto a = got->encode_texts(texts, {}), b = want->encode_texts(texts, {});
  for (size_t i = 0; i < texts.size(); ++i) {
    CHECK(a[i].ids == b[i].ids);
    CHECK(a[i].embedding == b[i].embedding);
  }

  // An explicit --tokenizer that is a broken tokenizer.json stops the conversion.
  xlmr::ConvertOptions bad;
  bad.tokenizer_path = dir.string() + "/broken.json";
  test::write_file(bad.tokenizer_path, "{\"model\": {\"type\": \"BPE\"}}");
  CHECK_THROWS_WITH(xlmr::convert_checkpoint(dir.string(), out + ".bad", bad), Contains("BPE, not Unigram"));
}
