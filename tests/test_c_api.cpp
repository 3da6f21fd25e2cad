// The C API (engine/engine_c.h): same numbers as the C++ API, every failure a
// status and a message, never a crash.
#include <catch2/catch.hpp>

#include "engine/engine.h"
#include "engine/engine_c.h"
#include "test_support.h"
#include "tiny_model.h"
#include "weights/convert.h"

using Catch::Matchers::Contains;

namespace {

// The demo model through the C API on one thread (as the C++ engines the
// tests compare against).
xlmr_engine* load_demo_single_thread() {
  xlmr_engine* e = xlmr_engine_create();
  REQUIRE(e);
  xlmr_params p = xlmr_default_params();
  p.threads = 1;
  REQUIRE(xlmr_engine_load(e, test::binary_path("demo.xlmr").c_str(), &p) == XLMR_OK);
  return e;
}

}  // namespace

TEST_CASE("C API: texts and ids give the C++ API's numbers", "[c-api]") {
  const std::string model = test::binary_path("demo.xlmr");
  xlmr_engine* e = load_demo_single_thread();
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

TEST_CASE("C API: every engine option of xlmr_params reaches the engine", "[c-api]") {
  const std::string model = test::binary_path("demo.xlmr");
  xlmr_engine* e = xlmr_engine_create();
  REQUIRE(e);
  CHECK(std::string(xlmr_engine_describe(e)).empty());
  const xlmr_params d = xlmr_default_params();
  CHECK(d.cuda_graphs == 1);
  CHECK(d.attention == XLMR_DTYPE_AUTO);
  CHECK(d.gpu == 0);
  CHECK(d.padded == 0);
  CHECK(d.isa == nullptr);

  // Each field against the C++ engine loaded with the same option.
  xlmr_params p = d;
  p.threads = 1;
  p.padded = 1;
  p.isa = "avx2";
  p.attention = XLMR_DTYPE_F32;
  REQUIRE(xlmr_engine_load(e, model.c_str(), &p) == XLMR_OK);
  xlmr::EngineOptions o;
  o.threads = 1;
  o.padded = true;
  o.isa = "avx2";
  o.attention = xlmr::Precision::f32;
  auto cpp = xlmr::Engine::load(model, o);
  CHECK(std::string(xlmr_engine_describe(e)) == cpp->describe());
  CHECK_THAT(xlmr_engine_describe(e), Contains("avx2") && Contains("padded"));

  const char* texts[] = {"Hello world", "a longer second text to pad the first one"};
  const int E = xlmr_engine_hidden_size(e);
  std::vector<float> emb(2 * size_t(E));
  REQUIRE(xlmr_encode_texts(e, texts, 2, nullptr, emb.data(), nullptr, nullptr) == XLMR_OK);
  const auto want = cpp->encode_texts({texts[0], texts[1]}, {});
  CHECK(std::vector<float>(emb.begin(), emb.begin() + E) == want[0].embedding);
  CHECK(std::vector<float>(emb.begin() + E, emb.end()) == want[1].embedding);

  // Bad values are refused with the engine's own messages.
  struct Refusal {
    const char* what;
    void (*set)(xlmr_params&);
    int status;
    const char* message;
  };
  const Refusal refusals[] = {
      {"attention 7", [](xlmr_params& q) { q.attention = 7; }, XLMR_ERROR_INVALID_ARGUMENT, "attention"},
      {"isa sse9", [](xlmr_params& q) { q.isa = "sse9"; }, XLMR_ERROR_LOAD, "sse9"},
      {"bf16 attention with f32 GEMMs (it runs with bf16 or int8 GEMMs only)",
       [](xlmr_params& q) { q.dtype = XLMR_DTYPE_F32; q.attention = XLMR_DTYPE_BF16; }, XLMR_ERROR_LOAD,
       "bf16 or int8 GEMMs"},
      {"gpu 1 on the CPU (reaches the engine: a CUDA choice)", [](xlmr_params& q) { q.gpu = 1; }, XLMR_ERROR_LOAD,
       "a GPU index goes with --device cuda"},
      {"f16 attention on the CPU (a CUDA choice)", [](xlmr_params& q) { q.attention = XLMR_DTYPE_F16; },
       XLMR_ERROR_LOAD, "attention precision must be f32 or bf16"},
      {"int8 attention (int8 is a GEMM precision only)", [](xlmr_params& q) { q.attention = XLMR_DTYPE_INT8; },
       XLMR_ERROR_INVALID_ARGUMENT, "attention must be AUTO, F32, BF16 or F16"},
      {"int8 on CUDA (refused before any GPU is looked for)",
       [](xlmr_params& q) { q.dtype = XLMR_DTYPE_INT8; q.device = XLMR_DEVICE_CUDA; }, XLMR_ERROR_LOAD,
       "int8 GEMMs run on the CPU's fused path"},
      {"int8 on the reference path", [](xlmr_params& q) { q.dtype = XLMR_DTYPE_INT8; q.path = XLMR_PATH_REFERENCE; },
       XLMR_ERROR_LOAD, "the reference path computes in f32 only"},
  };
  for (const Refusal& r : refusals) {
    INFO(r.what);
    p = d;
    r.set(p);
    CHECK(xlmr_engine_load(e, model.c_str(), &p) == r.status);
    CHECK_THAT(xlmr_engine_last_error(e), Contains(r.message));
    CHECK(xlmr_engine_hidden_size(e) == 0);  // a failed load leaves no model
    CHECK(std::string(xlmr_engine_notes(e)).empty());
  }
  p = d;
  p.dtype = XLMR_DTYPE_INT8;
  REQUIRE(xlmr_engine_load(e, model.c_str(), &p) == XLMR_OK);
  CHECK_THAT(xlmr_engine_describe(e), Contains("int8"));

  // The engine's notes: none for this f32 file; for a bf16 file under --isa
  // avx2 (no bf16 GEMMs there), the one saying it computes in f32.
  p = d;
  REQUIRE(xlmr_engine_load(e, model.c_str(), &p) == XLMR_OK);
  CHECK(std::string(xlmr_engine_notes(e)).empty());
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    const std::string bf16 = test::scratch("c-api") + "/hf_bf16.xlmr";
    xlmr::ConvertOptions co;
    co.dtype = xlmr::DType::bf16;
    xlmr::convert_checkpoint(test::fixture("smoke/hf"), bf16, co);
    p.isa = "avx2";
    REQUIRE(xlmr_engine_load(e, bf16.c_str(), &p) == XLMR_OK);
    xlmr::EngineOptions avx2;
    avx2.isa = "avx2";
    const auto notes = xlmr::Engine::load(bf16, avx2)->notes();
    REQUIRE(notes.size() == 1);
    CHECK(std::string(xlmr_engine_notes(e)) == notes[0]);
    CHECK_THAT(xlmr_engine_notes(e), Contains("--isa avx2 has no bf16 GEMMs"));
  }
  xlmr_engine_destroy(e);
}

TEST_CASE("C API: pairs, tokenization and per-token hidden states", "[c-api]") {
  const std::string model = test::binary_path("demo.xlmr");
  xlmr_engine* e = load_demo_single_thread();
  xlmr::EngineOptions o;
  o.threads = 1;
  auto cpp = xlmr::Engine::load(model, o);
  const int E = xlmr_engine_hidden_size(e), C = xlmr_engine_num_labels(e);

  // Pairs: the C++ encode_pairs numbers.
  const char* a[] = {"what is the capital of France?", "hi"};
  const char* b[] = {"Paris is the capital of France.", "hello there"};
  std::vector<float> emb(2 * size_t(E)), logits(2 * size_t(C));
  std::vector<int32_t> n_tokens(2);
  REQUIRE(xlmr_encode_pairs(e, a, b, 2, nullptr, emb.data(), logits.data(), n_tokens.data()) == XLMR_OK);
  const auto want = cpp->encode_pairs({{a[0], b[0]}, {a[1], b[1]}}, {});
  for (size_t i = 0; i < 2; ++i) {
    CHECK(n_tokens[i] == want[i].n_tokens);
    CHECK(std::vector<float>(emb.begin() + i * E, emb.begin() + (i + 1) * E) == want[i].embedding);
    CHECK(std::vector<float>(logits.begin() + i * C, logits.begin() + (i + 1) * C) == want[i].logits);
  }
  const char* null_text[] = {nullptr};
  CHECK(xlmr_encode_pairs(e, a, null_text, 1, nullptr, emb.data(), nullptr, nullptr) == XLMR_ERROR_RUNTIME);
  CHECK_THAT(xlmr_engine_last_error(e), Contains("NULL"));

  // Tokenize two texts, then their per-token hidden states by id.
  const char* texts[] = {"Hello world", "Bonjour tout le monde"};
  std::vector<int32_t> ids;
  std::vector<size_t> offsets = {0};
  std::vector<int32_t> buf(size_t(xlmr_engine_max_length(e)));
  for (const char* t : texts) {
    size_t n = 0;
    REQUIRE(xlmr_tokenize(e, t, buf.data(), buf.size(), &n) == XLMR_OK);
    ids.insert(ids.end(), buf.begin(), buf.begin() + long(n));
    offsets.push_back(ids.size());
  }
  xlmr::EncodeOptions eo;
  eo.hidden = true;
  const auto hw = cpp->encode_texts({texts[0], texts[1]}, eo);
  CHECK(std::vector<int32_t>(ids.begin(), ids.begin() + long(offsets[1])) == hw[0].ids);
  CHECK(std::vector<int32_t>(ids.begin() + long(offsets[1]), ids.end()) == hw[1].ids);
  std::vector<float> hidden(ids.size() * size_t(E));
  REQUIRE(xlmr_encode_ids_hidden(e, ids.data(), offsets.data(), 2, hidden.data()) == XLMR_OK);
  CHECK(std::vector<float>(hidden.begin(), hidden.begin() + long(offsets[1] * E)) == hw[0].hidden);
  CHECK(std::vector<float>(hidden.begin() + long(offsets[1] * E), hidden.end()) == hw[1].hidden);

  // A capacity too small: the needed count comes back, nothing is written.
  size_t need = 0;
  int32_t small[2] = {-1, -1};
  CHECK(xlmr_tokenize(e, texts[1], small, 2, &need) == XLMR_ERROR_INVALID_ARGUMENT);
  CHECK(need == offsets[2] - offsets[1]);
  CHECK(small[0] == -1);
  CHECK_THAT(xlmr_engine_last_error(e), Contains("capacity"));
  // Over-long text: truncated to max_length.
  const std::string lng(20000, 'a');
  REQUIRE(xlmr_tokenize(e, (lng + " b c d e f").c_str(), buf.data(), buf.size(), &need) == XLMR_OK);
  CHECK(need <= buf.size());
  CHECK(xlmr_tokenize(e, nullptr, buf.data(), buf.size(), &need) == XLMR_ERROR_INVALID_ARGUMENT);
  const size_t bad_offsets[] = {1, 2};
  CHECK(xlmr_encode_ids_hidden(e, ids.data(), bad_offsets, 1, hidden.data()) == XLMR_ERROR_INVALID_ARGUMENT);
  xlmr_engine_destroy(e);

  // Without a tokenizer: a status and a message, for tokenize and pairs alike.
  xlmr_engine* t = xlmr_engine_create();
  const std::string tiny = test::scratch("c_api_pairs") + "/tiny.xlmr";
  test::write_tiny_model(tiny);
  REQUIRE(xlmr_engine_load(t, tiny.c_str(), nullptr) == XLMR_OK);
  size_t n = 0;
  CHECK(xlmr_tokenize(t, "hi", buf.data(), buf.size(), &n) == XLMR_ERROR_RUNTIME);
  CHECK_THAT(xlmr_engine_last_error(t), Contains("no tokenizer"));
  CHECK(xlmr_encode_pairs(t, a, b, 1, nullptr, nullptr, nullptr, nullptr) == XLMR_ERROR_RUNTIME);
  xlmr_engine_destroy(t);
}
