// The tokenizer against the Python SentencePiece library (ids from
// scripts/make_tokenizer_cases.py), truncation, pairs and invalid UTF-8.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

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

namespace {

// The whole text in one SentencePiece call, mapped to model ids as the
// tokenizer maps them: what parts must reproduce.
std::vector<int32_t> whole_text_ids(const std::string& spm_model, const std::string& text) {
  sentencepiece::SentencePieceProcessor sp;
  REQUIRE(sp.LoadFromSerializedProto(spm_model).ok());
  std::vector<int> ids;
  REQUIRE(sp.Encode(text, &ids).ok());
  std::vector<int32_t> out;
  for (int p : ids) out.push_back(p == 0 ? 3 : p == 1 ? 0 : p == 2 ? 2 : p + 1);
  return out;
}

// Where two id lists first differ ("equal" when they do not), for messages
// that stay short.
std::string first_difference(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  if (i == n && a.size() == b.size()) return "equal";
  return "differ at id " + std::to_string(i) + " of " + std::to_string(a.size()) + " / " + std::to_string(b.size());
}

// About `bytes` of the demo corpus's words in random order, joined by
// random whitespace (one or more spaces, tabs, newlines).
std::string long_text(size_t bytes, uint32_t seed) {
  const std::string corpus = test::read_file(test::source_path("scripts/demo/corpus.txt"));
  std::vector<std::string> words;
  std::string w;
  for (char c : corpus + " ") {
    if (c == ' ' || c == '\n') {
      if (!w.empty()) words.push_back(w);
      w.clear();
    } else {
      w += c;
    }
  }
  std::mt19937 rng(seed);
  const char* gaps[] = {" ", " ", " ", " ", "  ", "\t", " \n ", "   "};
  std::string t;
  while (t.size() < bytes) t += words[rng() % words.size()] + gaps[rng() % 8];
  return t;
}

// Compares parts' ids with the whole text's word by word (a word: a piece
// starting with U+2581 and the pieces after it). Where they differ, SentencePiece's
// float sums must explain it: over a long text its running score grows
// large, and segmentations of a word within rounding of each other can swap.
// Returns the number of words that differ; fails if a differing word's
// segmentations are not within `tie` of each other or the parts' one scores lower.
size_t differing_words(const std::string& spm_model, const std::vector<int32_t>& parts,
                       const std::vector<int32_t>& whole, double tie) {
  sentencepiece::SentencePieceProcessor sp;
  REQUIRE(sp.LoadFromSerializedProto(spm_model).ok());
  auto words = [&](const std::vector<int32_t>& ids) {
    std::vector<std::vector<int>> w;
    for (int32_t m : ids) {
      const int p = m == 3 ? 0 : m == 0 ? 1 : m == 2 ? 2 : m - 1;  // back to SentencePiece ids
      if (w.empty() || sp.IdToPiece(p).rfind("\xE2\x96\x81", 0) == 0) w.emplace_back();
      w.back().push_back(p);
    }
    return w;
  };
  const auto a = words(parts), b = words(whole);
  REQUIRE(a.size() == b.size());
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == b[i]) continue;
    ++n;
    double sa = 0, sb = 0;
    for (int p : a[i]) sa += sp.GetScore(p);
    for (int p : b[i]) sb += sp.GetScore(p);
    INFO("word " << i << ": parts score " << sa << ", whole text " << sb);
    CHECK(sa >= sb - 1e-6);
    CHECK(sa - sb <= tie);
  }
  return n;
}

}  // namespace

TEST_CASE("long texts are tokenized in parts, with the whole text's ids", "[tokenizer][long]") {
  xlmr::Tokenizer tok(demo_spm());
  REQUIRE(tok.space_splits_exactly());
  for (uint32_t seed : {1u, 2u, 3u}) {
    const std::string text = long_text(200000 + 7919 * seed, seed);
    INFO("seed " << seed << ", " << text.size() << " bytes");
    // It really is cut, before a space, into several parts.
    size_t parts = 0, first_end = 0;
    for (size_t from = 0; from < text.size(); ++parts) {
      const size_t end = tok.part_end(text, from);
      REQUIRE(end > from);
      if (end < text.size()) {
        CHECK(text[end] == ' ');
        CHECK(end - from >= xlmr::Tokenizer::kPartBytes);
      }
      if (from == 0) first_end = end;
      from = end;
    }
    CHECK(parts >= 5);
    const std::vector<int32_t> whole = whole_text_ids(demo_spm(), text);
    const std::vector<int32_t> got = tok.pieces(text);
    // The first part's ids are the whole text's, bit for bit (the same sums).
    const size_t first = tok.pieces(text.substr(0, first_end)).size();
    CHECK(first_difference(std::vector<int32_t>(got.begin(), got.begin() + first),
                           std::vector<int32_t>(whole.begin(), whole.begin() + first)) == "equal");
    // Later, only words SentencePiece's float sums cannot tell apart differ
    // (a handful of 20000), and the parts pick the better-scored one.
    const size_t n = differing_words(demo_spm(), got, whole, 0.1);
    CHECK(n * 1000 < got.size());
    // Truncated: only the first part is read, and the ids are the whole text's first.
    const auto e = tok.encode(text, 512);
    CHECK(e.truncated);
    REQUIRE(e.ids.size() == 512);
    CHECK(std::equal(e.ids.begin() + 1, e.ids.end() - 1, whole.begin()));
    // A pair of long texts, longest first, as from their whole ids.
    const std::string other = long_text(90000, seed + 10);
    const std::vector<int32_t> whole_b = whole_text_ids(demo_spm(), other);
    const auto pair = tok.encode_pair(text, other, 300);
    CHECK(pair.truncated);
    REQUIRE(pair.ids.size() == 300);
    const size_t na = 148, nb = 148;  // both sides longer than half the room
    CHECK(std::equal(pair.ids.begin() + 1, pair.ids.begin() + 1 + na, whole.begin()));
    CHECK(std::equal(pair.ids.begin() + 3 + na, pair.ids.begin() + 3 + na + nb, whole_b.begin()));
  }
  // Up to kWholeTextBytes a text is one part.
  const std::string mid = long_text(xlmr::Tokenizer::kWholeTextBytes - 100, 9);
  CHECK(tok.part_end(mid, 0) == mid.size());
}

TEST_CASE("a long stretch without spaces is cut at a character boundary", "[tokenizer][long]") {
  xlmr::Tokenizer tok(demo_spm());
  // 3-byte characters and a 2-byte one, so kMaxPartBytes falls inside a character.
  std::string text;
  while (text.size() < xlmr::Tokenizer::kMaxPartBytes + 300000) text += "日本語é";
  const size_t end = tok.part_end(text, 0);
  CHECK(end <= xlmr::Tokenizer::kMaxPartBytes);
  CHECK(end + 3 > xlmr::Tokenizer::kMaxPartBytes);
  CHECK((uint8_t(text[end]) & 0xC0) != 0x80);  // a character starts there
  CHECK(tok.part_end(text, end) == text.size());
  const auto e = tok.encode(text, 64);
  CHECK(e.truncated);
  CHECK(e.ids.size() == 64);
  const std::vector<int32_t> all = tok.pieces(text);
  CHECK(std::all_of(all.begin(), all.end(), [&](int32_t id) { return id >= 0 && id <= tok.max_model_id(); }));
}

TEST_CASE("a model whose pieces may span a space is cut only every kMaxPartBytes", "[tokenizer][long]") {
  // Models trained here on the demo corpus, each breaking one condition.
  const std::string dir = test::scratch("tokenizer");
  const std::string corpus = test::source_path("scripts/demo/corpus.txt");
  auto train = [&](const std::string& name, const std::string& flags) {
    const auto st = sentencepiece::SentencePieceTrainer::Train("--input=" + corpus + " --model_prefix=" + dir + "/" +
                                                               name + " --vocab_size=600 --character_coverage=0.98 " +
                                                               "--minloglevel=2 " + flags);
    INFO(st.ToString());
    REQUIRE(st.ok());
    return test::read_file(dir + "/" + name + ".model");
  };
  // A piece across a word boundary: here cutting before a space would
  // change the ids, which is why such a model is not cut there.
  const std::string spans = train("spans", "--user_defined_symbols=of\xE2\x96\x81the");
  xlmr::Tokenizer tok(spans);
  CHECK(!tok.space_splits_exactly());
  std::vector<int32_t> cut = tok.pieces("a cup of"), rest = tok.pieces(" the tea");
  cut.insert(cut.end(), rest.begin(), rest.end());
  CHECK(cut != tok.pieces("a cup of the tea"));
  const std::string text = long_text(300000, 4);
  CHECK(tok.part_end(text, 0) == text.size());  // one part: under kMaxPartBytes
  CHECK(first_difference(tok.pieces(text), whole_text_ids(spans, text)) == "equal");
  // Whitespace kept as it is, or marking word ends: not cut before a space either.
  CHECK(!xlmr::Tokenizer(train("keep_spaces", "--remove_extra_whitespaces=false")).space_splits_exactly());
  CHECK(!xlmr::Tokenizer(train("suffix", "--treat_whitespace_as_suffix=true")).space_splits_exactly());
  // The control: the same training with the defaults is cut before spaces.
  CHECK(xlmr::Tokenizer(train("plain", "")).space_splits_exactly());
}
