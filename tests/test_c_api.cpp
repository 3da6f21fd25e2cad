// The C API (engine/engine_c.h): same numbers as the C++ API, every failure a
// status and a message, never a crash.
#include <catch2/catch.hpp>

#include "engine/engine.h"
#include "engine/engine_c.h"
#include "test_support.h"
#include "tiny_model.h"

using Catch::Matchers::Contains;

TEST_CASE("C API: texts and ids give the C++ API's numbers", "[c-api]") {
  const std::string model = test::binary_path("demo.xlmr");
  xlmr_engine* e = xlmr_engine_create();
  REQUIRE(e);
  xlmr_params p = xlmr_default_params();
  p.threads = 1;
  REQUIRE(xlmr_engine_load(e, model.c_str(), &p) == XLMR_OK);
  CHECK(std::string(xlmr_engine_last_error(e)).empty());
  const int E = xlmr_engine_hidden_size(e), C = xlmr_engine_num_labels(e);
  REQUIRE(E > 0);
  REQUIRE(C > 0);
  CHECK(xlmr_engine_has_tokenizer(e) == 1);

  const char* texts[] = {"Hello world", "How are you!", ""};
  std::vector<float> emb(3 * size_t(E)), logits(3 * size_t(C));
  std::vector<int32_t> n_tokens(3);
  xlmr_encode_params ep = xlmr_default_encode_params();
  ep.pooling = XLMR_POOLING_MEAN;
  REQUIRE(xlmr_encode_texts(e, texts, 3, &ep, emb.data(), logits.data(), n_tokens.data()) == XLMR_OK);

  xlmr::EngineOptions o;
  o.threads = 1;
  auto cpp = xlmr::Engine::load(model, o);
  xlmr::EncodeOptions enc;
  enc.pooling = xlmr::Pooling::mean;
  const auto want = cpp->encode_texts({"Hello world", "How are you!", ""}, enc);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(n_tokens[i] == want[i].n_tokens);
    CHECK(std::vector<float>(emb.begin() + i * E, emb.begin() + (i + 1) * E) == want[i].embedding);
    CHECK(std::vector<float>(logits.begin() + i * C, logits.begin() + (i + 1) * C) == want[i].logits);
  }

  // The same sequences as ids.
  std::vector<int32_t> ids;
  std::vector<size_t> offsets = {0};
  for (const auto& r : want) {
    ids.insert(ids.end(), r.ids.begin(), r.ids.end());
    offsets.push_back(ids.size());
  }
  std::vector<float> emb2(3 * size_t(E));
  REQUIRE(xlmr_encode_ids(e, ids.data(), offsets.data(), 3, &ep, emb2.data(), nullptr) == XLMR_OK);
  CHECK(emb2 == emb);
  CHECK(std::string(xlmr_version()) == XLMR_VERSION);
  xlmr_engine_destroy(e);
}

TEST_CASE("C API: failures are statuses with a message", "[c-api][errors]") {
  CHECK(xlmr_engine_load(nullptr, "x", nullptr) == XLMR_ERROR_INVALID_ARGUMENT);
  CHECK_THAT(xlmr_engine_last_error(nullptr), Contains("NULL"));
  xlmr_engine_destroy(nullptr);

  xlmr_engine* e = xlmr_engine_create();
  const char* t[] = {"hi"};
  CHECK(xlmr_encode_texts(e, t, 1, nullptr, nullptr, nullptr, nullptr) == XLMR_ERROR_NOT_LOADED);
  CHECK(xlmr_engine_hidden_size(e) == 0);
  CHECK(xlmr_engine_load(e, "/nonexistent/model.xlmr", nullptr) == XLMR_ERROR_LOAD);
  CHECK_THAT(xlmr_engine_last_error(e), Contains("/nonexistent/model.xlmr"));
  xlmr_params p = xlmr_default_params();
  p.dtype = 42;
  CHECK(xlmr_engine_load(e, "m.xlmr", &p) == XLMR_ERROR_INVALID_ARGUMENT);

  const std::string model = test::scratch("c_api") + "/tiny.xlmr";
  test::write_tiny_model(model);
  REQUIRE(xlmr_engine_load(e, model.c_str(), nullptr) == XLMR_OK);
  const int32_t ids[] = {0, 5, 99, 2};
  const size_t offsets[] = {0, 4};
  std::vector<float> emb(16);
  CHECK(xlmr_encode_ids(e, ids, offsets, 1, nullptr, emb.data(), nullptr) == XLMR_ERROR_INVALID_ARGUMENT);
  CHECK_THAT(xlmr_engine_last_error(e), Contains("outside the vocabulary"));
  const size_t bad_offsets[] = {0, 3, 2};
  CHECK(xlmr_encode_ids(e, ids, bad_offsets, 2, nullptr, emb.data(), nullptr) == XLMR_ERROR_INVALID_ARGUMENT);
  CHECK(xlmr_encode_texts(e, t, 1, nullptr, emb.data(), nullptr, nullptr) == XLMR_ERROR_RUNTIME);
  CHECK_THAT(xlmr_engine_last_error(e), Contains("no tokenizer"));
  xlmr_encode_params ep = xlmr_default_encode_params();
  ep.pooling = 9;
  const int32_t good[] = {0, 5, 2};
  const size_t good_off[] = {0, 3};
  CHECK(xlmr_encode_ids(e, good, good_off, 1, &ep, emb.data(), nullptr) == XLMR_ERROR_INVALID_ARGUMENT);
  ep.pooling = XLMR_POOLING_CLS;
  CHECK(xlmr_encode_ids(e, good, good_off, 1, &ep, emb.data(), nullptr) == XLMR_OK);
  CHECK(std::string(xlmr_engine_last_error(e)).empty());
  xlmr_engine_destroy(e);
}
