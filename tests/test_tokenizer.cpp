// The tokenizer against the Python SentencePiece library (ids from
// scripts/make_tokenizer_cases.py), truncation, pairs and invalid UTF-8.
#include <catch2/catch.hpp>

#include <random>

#include "test_support.h"
#include "tokenizer/tokenizer.h"

using Catch::Matchers::Contains;

namespace {
const std::string& demo_spm() {
  static const std::string bytes = test::read_file(test::source_path("scripts/demo/model/sentencepiece.bpe.model"));
  return bytes;
}
}  // namespace

TEST_CASE("token ids match Python SentencePiece with the fairseq mapping", "[tokenizer]") {
  xlmr::Tokenizer tok(demo_spm());
  const nlohmann::json j = test::read_json(test::fixture("tokenizer/demo_cases.json"));
  CHECK(tok.spm_size() == j["spm_pieces"].get<int>());
  for (const auto& c : j["cases"]) {
    INFO(c["text"].get<std::string>());
    const auto e = tok.encode(c["text"].get<std::string>(), 100000);
    CHECK(e.ids == c["ids"].get<std::vector<int32_t>>());
    CHECK(!e.truncated);
  }
  for (const auto& c : j["pairs"]) {
    const auto e = tok.encode_pair(c["a"].get<std::string>(), c["b"].get<std::string>(), 100000);
    CHECK(e.ids == c["ids"].get<std::vector<int32_t>>());
  }
}

TEST_CASE("truncation keeps the specials and reports itself", "[tokenizer]") {
  xlmr::Tokenizer tok(demo_spm());
  const auto full = tok.encode("the sky over the harbour turned pale blue", 1000);
  REQUIRE(full.ids.size() > 6);
  const auto cut = tok.encode("the sky over the harbour turned pale blue", 6);
  CHECK(cut.truncated);
  REQUIRE(cut.ids.size() == 6);
  CHECK(cut.ids.front() == 0);
  CHECK(cut.ids.back() == 2);
  CHECK(std::equal(cut.ids.begin(), cut.ids.end() - 1, full.ids.begin()));
  const auto pair = tok.encode_pair("the sky over the harbour", "pale blue", 8);
  CHECK(pair.truncated);
  CHECK(pair.ids.size() == 8);
  CHECK_THROWS_WITH(tok.encode("x", 1), Contains("at least 2"));
}

TEST_CASE("invalid UTF-8 is replaced, reported, and never crashes", "[tokenizer][errors]") {
  xlmr::Tokenizer tok(demo_spm());
  std::string clean;
  CHECK(xlmr::sanitize_utf8("ok \xff \xc3\x28 \xed\xa0\x80 \xf0\x9f\x8c", &clean));
  CHECK(clean == "ok \xEF\xBF\xBD \xEF\xBF\xBD( \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD");
  CHECK(!xlmr::sanitize_utf8("plain ascii and 日本語", &clean));
  const auto e = tok.encode("bad \xff\xfe bytes", 512);
  CHECK(e.invalid_utf8);
  CHECK(e.ids.front() == 0);
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) {
    std::string s(size_t(rng() % 64), '\0');
    for (char& ch : s) ch = char(rng());
    const auto r = tok.encode(s, 512);
    for (int32_t id : r.ids) CHECK((id >= 0 && id <= tok.max_model_id()));
  }
}

TEST_CASE("a damaged tokenizer model is refused", "[tokenizer][errors]") {
  CHECK_THROWS_WITH(xlmr::Tokenizer(""), Contains("carries no tokenizer"));
  CHECK_THROWS_WITH(xlmr::Tokenizer("definitely not a protobuf"), Contains("cannot load the SentencePiece"));
}
