// xlmr-infer and xlmr-convert as a user runs them: output contract, input
// order, and one clear error line with a non-zero exit for bad input.
#include <catch2/catch.hpp>

#include "test_support.h"
#include "tiny_model.h"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

std::string infer() { return "'" + test::binary_path("xlmr-infer") + "'"; }
std::string convert() { return "'" + test::binary_path("xlmr-convert") + "'"; }

std::string tiny_model() {
  const std::string p = test::scratch("cli") + "/tiny.xlmr";
  test::write_tiny_model(p);
  return p;
}

}  // namespace

TEST_CASE("xlmr-infer writes one JSON object per input, in input order", "[cli]") {
  const std::string m = tiny_model();
  const std::string input = "0 5 6 2\n0 7 8 9 10 11 12 2\n4\n0 2\n";
  const auto r = test::run(infer() + " --model '" + m + "' --input-format ids --hidden --pooling mean", input);
  REQUIRE(r.status == 0);
  const auto out = test::lines(r.out);
  REQUIRE(out.size() == 4);
  const int n_tokens[] = {4, 8, 1, 2};
  for (int i = 0; i < 4; ++i) {
    const auto j = nlohmann::json::parse(out[size_t(i)]);
    CHECK(j["index"] == i);
    CHECK(j["n_tokens"] == n_tokens[i]);
    CHECK(j["embedding"].size() == 16);
    CHECK(j["logits"].size() == 3);
    CHECK(j["hidden"].size() == size_t(n_tokens[i]));
    CHECK(j["hidden"][0].size() == 16);
  }
  // --pooling none drops the embedding; no --hidden drops hidden
  const auto r2 = test::run(infer() + " --model '" + m + "' --input-format ids --pooling none", "0 5 2\n");
  REQUIRE(r2.status == 0);
  const auto j2 = nlohmann::json::parse(test::lines(r2.out).at(0));
  CHECK(!j2.contains("embedding"));
  CHECK(!j2.contains("hidden"));
  CHECK(j2.contains("logits"));
}

TEST_CASE("xlmr-infer: bad input gets one error line and a non-zero exit", "[cli][errors]") {
  const std::string m = tiny_model();
  struct Case {
    std::string args, input, message;
  };
  const std::vector<Case> cases = {
      {"--model /nonexistent.xlmr --input-format ids", "0 2\n", "cannot open model file"},
      {"--model '" + m + "' --input-format ids", "0 5 x 2\n", "<stdin>:1: 'x' is not a token id"},
      {"--model '" + m + "' --input-format ids", "0 2\n0 400 2\n", "<stdin>:2: token id 400 is outside the vocabulary"},
      {"--model '" + m + "' --input-format ids", "0 2\n\n", "<stdin>:2: empty line"},
      {"--model '" + m + "' --input-format ids", std::string(200, '5') + "\n", "is not a token id"},
      {"--model '" + m + "' --input-format ids --max-length 4", "0 5 6 7 8 2\n", "more than the limit of 4"},
      {"--model '" + m + "' --input-format text", "hello\n", "carries no tokenizer"},
      {"--model '" + m + "' --device cuda", "0 2\n", "--device cuda"},
      {"--model '" + m + "' --device tpu", "0 2\n", "--device must be cpu or cuda"},
      {"--model '" + m + "' --pooling max", "0 2\n", "--pooling must be"},
      {"--model '" + m + "' --pooling pooler --input-format ids --max-length 99", "0 2\n", "exceeds the model's limit"},
      {"--model '" + m + "' --input-format ids /nonexistent.txt", "", "cannot open input '/nonexistent.txt'"},
  };
  for (const Case& c : cases) {
    INFO(c.args);
    const auto r = test::run(infer() + " " + c.args, c.input);
    CHECK(r.status != 0);
    CHECK_THAT(r.err, StartsWith("xlmr-infer: error: "));
    CHECK_THAT(r.err, Contains(c.message));
    CHECK(test::lines(r.err).size() == 1);
  }
  // A damaged model file.
  std::string bytes = test::read_file(m);
  bytes.resize(bytes.size() - 10);
  const std::string bad = test::scratch("cli") + "/cut.xlmr";
  test::write_file(bad, bytes);
  const auto r = test::run(infer() + " --model '" + bad + "' --input-format ids", "0 2\n");
  CHECK(r.status != 0);
  CHECK_THAT(r.err, Contains("truncated"));
}

TEST_CASE("xlmr-convert: bad sources get one error line and a non-zero exit", "[cli][errors]") {
  const std::string dir = test::scratch("cli-convert");
  test::write_file(dir + "/garbage.bin", "this is not a checkpoint at all");
  test::write_file(dir + "/empty.pt", "");
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"/nonexistent.pt out.xlmr", "no such file or folder"},
      {"'" + dir + "/garbage.bin' '" + dir + "/o.xlmr'", "not a recognised checkpoint"},
      {"'" + dir + "/empty.pt' '" + dir + "/o.xlmr'", ""},
      {"'" + dir + "' '" + dir + "/o.xlmr'", "no weights found"},
      {"'" + dir + "/garbage.bin' '" + dir + "/o.xlmr' --dtype f8", "--dtype must be f32, f16 or bf16"},
  };
  for (const Case& c : cases) {
    INFO(c.args);
    const auto r = test::run(convert() + " " + c.args);
    CHECK(r.status != 0);
    CHECK_THAT(r.err, StartsWith("xlmr-convert: error: "));
    CHECK_THAT(r.err, Contains(c.message));
    CHECK(test::lines(r.err).size() == 1);
  }
}

TEST_CASE("xlmr-infer runs the demo model on text, warning on truncation and bad UTF-8", "[cli][demo]") {
  const std::string demo = test::binary_path("demo.xlmr");
  const auto r = test::run(infer() + " --model '" + demo + "' '" + test::source_path("scripts/demo/input.txt") + "'");
  REQUIRE(r.status == 0);
  const auto out = test::lines(r.out);
  REQUIRE(out.size() == 12);
  for (size_t i = 0; i < out.size(); ++i) {
    const auto j = nlohmann::json::parse(out[i]);
    CHECK(j["index"] == i);
    CHECK(j["logits"].size() == 2);
  }
  const std::string hostile = "bad \xff\xfe bytes\n\n" + std::string(3000, 'a') + " b\n";
  const auto r2 = test::run(infer() + " --model '" + demo + "' --pooling mean --normalize", hostile);
  REQUIRE(r2.status == 0);
  REQUIRE(test::lines(r2.out).size() == 3);
  CHECK(nlohmann::json::parse(test::lines(r2.out)[1])["n_tokens"] == 2);  // empty line: <s></s>
  CHECK_THAT(r2.err, Contains("invalid UTF-8"));
  CHECK_THAT(r2.err, Contains("truncated"));
}
