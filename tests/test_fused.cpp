// The fused CPU path end to end against the reference path, on a random model
// large enough to cross the kernels' block sizes (64-key tiles, 32-row items,
// row tails of 16-lane vectors): outputs, layouts, thread counts, ISAs, bf16.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <thread>

#include "engine/backend.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "kernels/cpu/cpu_kernels.h"
#include "test_support.h"
#include "tiny_model.h"
#include "weights/convert.h"

using Catch::Matchers::Contains;

namespace {

// A random 2-layer model with 300 positions and a 2-class head, written once
// per name into the test scratch folder.
std::string model_file(const std::string& name, int hidden, int ffn, int heads, uint64_t seed, float stddev) {
  const std::string p = test::scratch("fused") + "/" + name + ".xlmr";
  xlmr::ModelConfig c = test::tiny_config();
  c.vocab_size = 60;
  c.hidden = hidden;
  c.ffn = ffn;
  c.heads = heads;
  c.layers = 2;
  c.max_positions = 302;
  c.max_length = 300;
  c.num_labels = 2;
  xlmr::write_xlmr_file(p, c.to_json(), test::tiny_tensors(c, seed, stddev), "");
  return p;
}

// hidden 72 (not a multiple of 16), 4 heads of 18. Weights of std 0.4
// stress the arithmetic; 0.05 is closer to trained models.
std::string mid_model(float stddev = 0.4f) { return model_file("mid_" + std::to_string(stddev), 72, 100, 4, 11, stddev); }

// hidden 64 in 2 heads of 32: a head dim the bf16 attention kernels take.
std::string bf16_attention_model() { return model_file("d32", 64, 96, 2, 12, 0.05f); }

std::vector<std::vector<int32_t>> mixed_batch() {
  std::mt19937 rng(3);
  std::vector<std::vector<int32_t>> seqs;
  for (int len : {1, 2, 5, 31, 32, 33, 64, 65, 129, 300, 7, 3, 17}) {
    std::vector<int32_t> s(static_cast<size_t>(len));
    for (auto& id : s) id = int32_t(4 + rng() % 56);
    seqs.push_back(s);
  }
  return seqs;
}

std::vector<xlmr::Result> run(const std::string& model, const xlmr::EngineOptions& o, xlmr::Pooling pooling,
                              bool normalize = false) {
  auto e = xlmr::Engine::load(model, o);
  xlmr::EncodeOptions enc;
  enc.hidden = true;
  enc.pooling = pooling;
  enc.normalize = normalize;
  return e->encode_ids(mixed_batch(), enc);
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::abs(a[i] - b[i])));
  return d;
}

}  // namespace

TEST_CASE("fused path matches the reference path on every output", "[fused]") {
  const std::string m = mid_model();
  xlmr::EngineOptions ref;
  ref.path = xlmr::Path::reference;
  for (xlmr::Pooling pooling : {xlmr::Pooling::cls, xlmr::Pooling::mean, xlmr::Pooling::pooler}) {
    for (bool normalize : {false, true}) {
      if (normalize && pooling != xlmr::Pooling::mean) continue;
      const auto want = run(m, ref, pooling, normalize);
      for (const char* isa : {"avx512", "avx2"}) {
        if (std::string(isa) == "avx512" && !__builtin_cpu_supports("avx512bw")) continue;
        xlmr::EngineOptions o;
        o.isa = isa;
        const auto got = run(m, o, pooling, normalize);
        for (size_t i = 0; i < want.size(); ++i) {
          INFO("sequence " << i << " (" << want[i].n_tokens << " tokens) isa " << isa << " pooling "
                           << xlmr::to_string(pooling) << " normalize " << normalize);
          CHECK(max_diff(got[i].hidden, want[i].hidden) <= 1e-4);
          CHECK(max_diff(got[i].embedding, want[i].embedding) <= 1e-4);
          CHECK(max_diff(got[i].logits, want[i].logits) <= 1e-4);
        }
      }
    }
  }
}

TEST_CASE("ragged and padded layouts give the same outputs", "[fused]") {
  const std::string m = mid_model();
  xlmr::EngineOptions ragged, padded;
  padded.padded = true;
  const auto a = run(m, ragged, xlmr::Pooling::mean);
  const auto b = run(m, padded, xlmr::Pooling::mean);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("sequence " << i);
    CHECK(max_diff(a[i].hidden, b[i].hidden) <= 1e-6);
    CHECK(max_diff(a[i].embedding, b[i].embedding) <= 1e-6);
    CHECK(max_diff(a[i].logits, b[i].logits) <= 1e-6);
  }
}

TEST_CASE("results do not depend on the thread count or the batch split", "[fused]") {
  const std::string m = mid_model();
  xlmr::EngineOptions o;
  o.threads = 1;
  const auto one = run(m, o, xlmr::Pooling::cls);
  for (int threads : {2, 3, 4}) {
    o.threads = threads;
    const auto many = run(m, o, xlmr::Pooling::cls);
    for (size_t i = 0; i < one.size(); ++i) {
      INFO("threads " << threads << " sequence " << i);
      CHECK(max_diff(one[i].hidden, many[i].hidden) <= 1e-6);
      CHECK(max_diff(one[i].logits, many[i].logits) <= 1e-6);
    }
  }
  o.threads = 2;
  o.max_batch_tokens = 310;  // several batches; the 300-token one alone
  const auto split = run(m, o, xlmr::Pooling::cls);
  for (size_t i = 0; i < one.size(); ++i) CHECK(max_diff(one[i].hidden, split[i].hidden) <= 1e-6);
}

TEST_CASE("bf16 GEMMs stay within cosine 0.999 of fp32", "[fused][bf16]") {
  if (!__builtin_cpu_supports("avx512bw")) {
    WARN("no AVX-512 on this CPU: bf16 not run");
    return;
  }
  const std::string m = mid_model(0.05f);
  xlmr::EngineOptions f32, bf16;
  bf16.precision = xlmr::Precision::bf16;
  const auto a = run(m, f32, xlmr::Pooling::cls);
  const auto b = run(m, bf16, xlmr::Pooling::cls);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("sequence " << i);
    const size_t E = 72;
    for (int t = 0; t < a[i].n_tokens; ++t) {
      std::vector<float> x(a[i].hidden.begin() + t * E, a[i].hidden.begin() + (t + 1) * E);
      std::vector<float> y(b[i].hidden.begin() + t * E, b[i].hidden.begin() + (t + 1) * E);
      CHECK(test::cosine(x, y) >= 0.999);
    }
    // bf16 really ran: the outputs are close but not identical.
    CHECK(max_diff(a[i].hidden, b[i].hidden) > 0);
  }
}

// The mid model (weights of std 0.15) with a few FFN channels 100x larger than the rest in every
// token (their FFN1 rows and bias 100x, their FFN2 columns 1/100, so the
// layer's output stays as it was): the pattern of "outlier dimensions" in
// trained BERT-family models, which per-token int8 quantization handles badly.
std::string ffn_outlier_model() {
  const std::string p = test::scratch("fused") + "/ffn_outliers.xlmr";
  xlmr::ModelConfig c = test::tiny_config();
  c.vocab_size = 60;
  c.hidden = 72;
  c.ffn = 100;
  c.heads = 4;
  c.layers = 2;
  c.max_positions = 302;
  c.max_length = 300;
  c.num_labels = 2;
  auto ts = test::tiny_tensors(c, 11, 0.15f);
  const float gain = 100.0f;
  auto at = [](xlmr::TensorToWrite& t, size_t i) -> float& { return reinterpret_cast<float*>(t.data.data())[i]; };
  for (auto& t : ts) {
    for (int ch : {5, 50, 90}) {
      if (t.name.find("ffn1.weight") != std::string::npos)
        for (int e = 0; e < c.hidden; ++e) at(t, size_t(ch) * c.hidden + e) *= gain;
      if (t.name.find("ffn1.bias") != std::string::npos) at(t, size_t(ch)) = gain / 4;
      if (t.name.find("ffn2.weight") != std::string::npos)
        for (int e = 0; e < c.hidden; ++e) at(t, size_t(e) * c.ffn + ch) /= gain;
    }
  }
  xlmr::write_xlmr_file(p, c.to_json(), ts, "");
  return p;
}

// The worst token cosine of b's hidden states to a's.
double worst_token_cosine(const std::vector<xlmr::Result>& a, const std::vector<xlmr::Result>& b, size_t E) {
  double worst = 1.0;
  for (size_t i = 0; i < a.size(); ++i) {
    for (int t = 0; t < a[i].n_tokens; ++t) {
      std::vector<float> x(a[i].hidden.begin() + t * E, a[i].hidden.begin() + (t + 1) * E);
      std::vector<float> y(b[i].hidden.begin() + t * E, b[i].hidden.begin() + (t + 1) * E);
      worst = std::min(worst, test::cosine(x, y));
    }
  }
  return worst;
}

TEST_CASE("int8: equalization keeps a few large channels from costing the others their precision",
          "[fused][int8]") {
  // Each mode's worst token cosine to the f32 fused path (itself held to
  // PyTorch elsewhere), on the mid model and on its outlier twin.
  xlmr::EngineOptions f32, int8, plain;
  int8.precision = plain.precision = xlmr::Precision::int8;
  plain.int8_equalize = false;
  for (const std::string& m : {mid_model(0.15f), ffn_outlier_model()}) {
    const auto a = run(m, f32, xlmr::Pooling::cls);
    const double equalized = worst_token_cosine(a, run(m, int8, xlmr::Pooling::cls), 72);
    const double unequalized = worst_token_cosine(a, run(m, plain, xlmr::Pooling::cls), 72);
    INFO(m << ": worst token cosine to f32, equalized " << equalized << ", not " << unequalized);
    if (std::getenv("XLMR_PRINT_COSINE"))
      std::printf("%s: equalized %.6f, not %.6f\n", m.c_str(), equalized, unequalized);
    // Measured: 0.99942 and 0.99951 equalized; unequalized 0.99956 without
    // the outliers, 0.934 with them.
    CHECK(equalized >= 0.999);
    if (m.find("outlier") != std::string::npos) CHECK(unequalized < 0.97);  // what equalization is for
  }
}

TEST_CASE("bf16 attention: by default with bf16 GEMMs where it runs, asked for with int8 ones, within cosine "
          "0.999 of f32 attention",
          "[fused][bf16]") {
  const std::string m = bf16_attention_model();
  xlmr::EngineOptions o;
  // Asked for where it cannot run: one clear error each.
  o.attention = xlmr::Precision::bf16;
  CHECK_THROWS_WITH(xlmr::Engine::load(m, o), Contains("bf16 attention runs with bf16 or int8 GEMMs"));
  o.path = xlmr::Path::reference;
  CHECK_THROWS_WITH(xlmr::Engine::load(m, o), Contains("attention precision is a choice of the fused path"));
  o.path = xlmr::Path::fused;
  // With a GPU: bf16 products do not match CUDA's default f16 GEMMs for an
  // f32 file (tests/test_cuda_engine.cpp); without one, for want of it.
  o.device = xlmr::Device::cuda;
  CHECK_THROWS_AS(xlmr::Engine::load(m, o), xlmr::Error);
  if (!__builtin_cpu_supports("avx512bw")) {
    WARN("no AVX-512 on this CPU: bf16 not run");
    return;
  }
  o = {};
  o.precision = xlmr::Precision::bf16;
  o.attention = xlmr::Precision::bf16;
  CHECK_THROWS_WITH(xlmr::Engine::load(mid_model(), o), Contains("head dim of 32, 64, 96 or 128 (this model's is 18)"));
  o.attention = xlmr::Precision::f16;
  CHECK_THROWS_WITH(xlmr::Engine::load(m, o), Contains("attention precision must be f32 or bf16"));

  xlmr::EngineOptions by_default, fp32_attention;
  by_default.precision = fp32_attention.precision = xlmr::Precision::bf16;
  fp32_attention.attention = xlmr::Precision::f32;
  CHECK_THAT(xlmr::Engine::load(m, fp32_attention)->describe(), !Contains("bf16 attention"));
  o.attention = xlmr::Precision::bf16;
  // The engine takes the best unit here: AMX, else AVX512_BF16.
  const xlmr::cpu::Bf16Unit unit = xlmr::cpu::best_bf16_unit(xlmr::cpu::Isa::avx512, 32);
  const bool native = unit != xlmr::cpu::Bf16Unit::none;
  try {
    xlmr::Engine::load(m, o);
    CHECK(native);
  } catch (const xlmr::Error& e) {
    CHECK_FALSE(native);
    CHECK_THAT(e.what(), Contains("needs AVX512_BF16 or AMX-BF16"));
    WARN("this CPU (or its OS) has neither AVX512_BF16 nor AMX-BF16: bf16 attention not run (" << e.what() << ")");
  }
  // With bf16 GEMMs by default; with int8 ones when asked for.
  const std::string on_unit = std::string("bf16 attention on ") + xlmr::cpu::to_string(unit);
  xlmr::EngineOptions int8_default;
  int8_default.precision = xlmr::Precision::int8;
  CHECK_THAT(xlmr::Engine::load(m, int8_default)->describe(), !Contains("bf16 attention"));
  for (const xlmr::Precision gemms : {xlmr::Precision::bf16, xlmr::Precision::int8}) {
    INFO("GEMMs in " << xlmr::to_string(gemms));
    xlmr::EngineOptions with_bf16 = by_default;
    with_bf16.precision = fp32_attention.precision = gemms;
    if (gemms == xlmr::Precision::int8) with_bf16.attention = xlmr::Precision::bf16;
    if (!native) {
      if (gemms == xlmr::Precision::bf16)
        CHECK_THAT(xlmr::Engine::load(m, with_bf16)->describe(), !Contains("bf16 attention"));
      continue;
    }
    CHECK_THAT(xlmr::Engine::load(m, with_bf16)->describe(), Contains(on_unit));
    const auto a = run(m, fp32_attention, xlmr::Pooling::cls);
    const auto b = run(m, with_bf16, xlmr::Pooling::cls);
    for (size_t i = 0; i < a.size(); ++i) {
      INFO("sequence " << i << " (" << a[i].n_tokens << " tokens)");
      const size_t E = 64;
      double worst = 1.0;
      for (int t = 0; t < a[i].n_tokens; ++t) {
        std::vector<float> x(a[i].hidden.begin() + t * E, a[i].hidden.begin() + (t + 1) * E);
        std::vector<float> y(b[i].hidden.begin() + t * E, b[i].hidden.begin() + (t + 1) * E);
        worst = std::min(worst, test::cosine(x, y));
      }
      CHECK(worst >= 0.999);
      // The bf16 kernel really ran from bf16_min_keys tokens on; shorter
      // sequences keep the f32 kernel, bit for bit.
      if (a[i].n_tokens >= xlmr::cpu::bf16_min_keys(unit))
        CHECK(max_diff(a[i].hidden, b[i].hidden) > 0);
      else
        CHECK(max_diff(a[i].hidden, b[i].hidden) == 0);
    }
  }
}

TEST_CASE("fused path options are checked", "[fused][errors]") {
  const std::string m = mid_model();
  xlmr::EngineOptions o;
  o.isa = "sse2";
  CHECK_THROWS_WITH(xlmr::Engine::load(m, o), Contains("unknown instruction set 'sse2'"));
  o = {};
  o.path = xlmr::Path::reference;
  o.precision = xlmr::Precision::bf16;
  CHECK_THROWS_WITH(xlmr::Engine::load(m, o), Contains("reference path computes in f32 only"));
  o.precision.reset();
  o.padded = true;
  CHECK_THROWS_WITH(xlmr::Engine::load(m, o), Contains("reference path is always padded"));
  o = {};
  o.isa = "avx2";
  o.precision = xlmr::Precision::bf16;
  CHECK_THROWS_WITH(xlmr::Engine::load(m, o), Contains("bf16 compute needs AVX-512"));
  o = {};
  o.threads = -1;
  CHECK_THROWS_WITH(xlmr::Engine::load(m, o), Contains("threads must be >= 0"));
  // Turning off int8's equalization means nothing for other GEMMs: refused.
  for (const auto& [path, precision] : {std::pair{xlmr::Path::fused, xlmr::Precision::f32},
                                        std::pair{xlmr::Path::fused, xlmr::Precision::bf16},
                                        std::pair{xlmr::Path::reference, xlmr::Precision::f32}}) {
    o = {};
    o.path = path;
    o.precision = precision;
    o.int8_equalize = false;
    CHECK_THROWS_WITH(xlmr::Engine::load(m, o), Contains("int8_equalize = false (--no-equalize) applies to int8"));
  }
  o = {};
  o.int8_equalize = false;  // the default precision, f32 for this file
  CHECK_THROWS_WITH(xlmr::Engine::load(m, o), Contains("applies to int8 GEMMs"));
  o.precision = xlmr::Precision::int8;
  CHECK_THAT(xlmr::Engine::load(m, o)->describe(), Contains("not equalized"));
  // A fused engine describes itself.
  auto e = xlmr::Engine::load(m);
  CHECK_THAT(e->describe(), Contains("cpu-fused"));
  CHECK(e->notes().empty());
  // More threads than logical CPUs: allowed, with a note.
  o = {};
  o.threads = int(std::thread::hardware_concurrency()) + 1;
  auto over = xlmr::Engine::load(m, o);
  REQUIRE(over->notes().size() == 1);
  CHECK_THAT(over->notes()[0], Contains(std::to_string(o.threads) + " threads on "));
  // bf16 GEMMs where a bf16 attention kernel runs, but a head dim it lacks
  // (this model's 18): attention stays f32, and the note says why.
  if (__builtin_cpu_supports("avx512bw")) {
    o = {};
    o.precision = xlmr::Precision::bf16;
    const auto b = xlmr::Engine::load(m, o);
    const bool native = xlmr::cpu::has_bf16_attention(xlmr::cpu::Isa::avx512, 64);
    const bool said = std::any_of(b->notes().begin(), b->notes().end(), [](const std::string& n) {
      return n.find("the bf16 kernels take head dims 32, 64, 96 and 128, this model's is 18") != std::string::npos;
    });
    CHECK(said == native);
  }
}

TEST_CASE("a bf16 file computes in bf16 only where the CPU has bf16 instructions, else in f32 with a note",
          "[fused][bf16]") {
  const std::string file = test::scratch("fused") + "/hf_bf16.xlmr";
  xlmr::ConvertOptions co;
  co.dtype = xlmr::DType::bf16;
  xlmr::convert_checkpoint(test::fixture("smoke/hf"), file, co);
  const bool native = xlmr::cpu_has_native_bf16_gemm();
  // oneDNN's answer agrees with the CPU's flags (unless DNNL_MAX_CPU_ISA caps it).
  if (!std::getenv("DNNL_MAX_CPU_ISA"))
    CHECK(native == (__builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16")));

  const std::vector<std::vector<int32_t>> ids = {{0, 5, 6, 7, 2}, {0, 9, 10, 11, 12, 13, 2}};
  xlmr::EncodeOptions enc;
  enc.hidden = true;
  auto by_default = xlmr::Engine::load(file);
  xlmr::EngineOptions same;
  same.precision = native ? xlmr::Precision::bf16 : xlmr::Precision::f32;
  auto explicit_engine = xlmr::Engine::load(file, same);
  INFO(by_default->describe());
  if (native) {
    CHECK_THAT(by_default->describe(), Contains(", bf16, "));
    CHECK(by_default->notes().empty());
  } else {
    CHECK_THAT(by_default->describe(), Contains(", f32, "));
    REQUIRE(by_default->notes().size() == 1);
    CHECK_THAT(by_default->notes()[0], Contains("computing in f32, not the file's bf16: this CPU has neither"));
    CHECK_THAT(by_default->notes()[0], Contains("--dtype bf16 keeps them bf16"));
  }
  // The default is exactly the precision it names: the same outputs, bit for bit.
  const auto a = by_default->encode_ids(ids, enc);
  const auto b = explicit_engine->encode_ids(ids, enc);
  for (size_t i = 0; i < ids.size(); ++i) CHECK(max_diff(a[i].hidden, b[i].hidden) == 0);
  CHECK(explicit_engine->notes().empty());

  // Asked for bf16 where it is emulated: it runs, with a note saying so.
  if (__builtin_cpu_supports("avx512bw")) {
    xlmr::EngineOptions bf16;
    bf16.precision = xlmr::Precision::bf16;
    auto e = xlmr::Engine::load(file, bf16);
    CHECK_THAT(e->describe(), Contains(", bf16, "));
    if (native) {
      CHECK(e->notes().empty());
    } else {
      REQUIRE(e->notes().size() == 1);
      CHECK_THAT(e->notes()[0], Contains("--dtype bf16: this CPU has neither AVX512_BF16 nor AMX-BF16"));
    }
  }
  // --isa avx2 has no bf16 GEMMs at all: f32 by default, said once, on any CPU.
  xlmr::EngineOptions avx2;
  avx2.isa = "avx2";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    auto e = xlmr::Engine::load(file, avx2);
    CHECK_THAT(e->describe(), Contains("avx2, f32, "));
    REQUIRE(e->notes().size() == 1);
    CHECK_THAT(e->notes()[0], Contains("--isa avx2 has no bf16 GEMMs"));
    CHECK_THAT(e->notes()[0], !Contains("--dtype bf16 keeps"));
  }
  // An f32 file, and the reference path, have nothing to say.
  CHECK(xlmr::Engine::load(mid_model())->notes().empty());
  xlmr::EngineOptions ref;
  ref.path = xlmr::Path::reference;
  CHECK(xlmr::Engine::load(file, ref)->notes().empty());
}

TEST_CASE("a bf16 file's matrices are widened only for packing, then freed", "[fused]") {
  // The BERT-arch fixture has a pooler; stored in bf16, its matrices are
  // widened to f32 at load for packing, then released.
  const std::string file = test::scratch("fused") + "/bert_bf16.xlmr";
  xlmr::ConvertOptions co;
  co.dtype = xlmr::DType::bf16;
  xlmr::convert_checkpoint(test::fixture("smoke/bert"), file, co);

  auto model = xlmr::Model::load(file);
  const xlmr::ModelWeights& w = model->weights();
  REQUIRE(w.layers.at(0).qkv_w);
  REQUIRE(w.pooler_w);
  model->release_matrices();
  CHECK(w.layers.at(0).qkv_w == nullptr);
  CHECK(w.layers.at(1).ffn2_w == nullptr);
  CHECK(w.pooler_w == nullptr);
  CHECK(w.word != nullptr);  // the embedding kernel still reads these
  CHECK(w.layers.at(0).ln1_g != nullptr);
  // A backend made now reads the matrices from the file instead.
  auto backend = xlmr::make_cpu_backend(*model, {});
  CHECK_NOTHROW(backend->reserve(64, 32));

  // Loaded without widening (as the Engine does for the fused and CUDA
  // paths), the matrices are never widened up front; the tensors read the same.
  auto lazy = xlmr::Model::load(file, {}, false);
  CHECK(lazy->weights().layers.at(0).qkv_w == nullptr);
  CHECK(lazy->weights().word != nullptr);
  std::vector<float> a;
  const auto full = xlmr::Model::load(file);
  const size_t n = size_t(3) * 64 * 64;  // the fixture's qkv matrix: [3E, E], E = 64
  REQUIRE(lazy->config().hidden == 64);
  const float* wl = lazy->tensor_f32("layers.0.attn.qkv.weight", &a);
  CHECK(std::vector<float>(wl, wl + n) ==
        std::vector<float>(full->weights().layers[0].qkv_w, full->weights().layers[0].qkv_w + n));

  // Through the Engine (which releases after packing), every output, the
  // pooler's included, is still the reference path's.
  const std::vector<std::vector<int32_t>> ids = {{0, 5, 6, 7, 2}, {0, 9, 2}};
  xlmr::EngineOptions fused, ref;
  fused.precision = xlmr::Precision::f32;
  ref.path = xlmr::Path::reference;
  xlmr::EncodeOptions enc;
  enc.pooling = xlmr::Pooling::pooler;
  enc.hidden = true;
  const auto got = xlmr::Engine::load(file, fused)->encode_ids(ids, enc);
  const auto want = xlmr::Engine::load(file, ref)->encode_ids(ids, enc);
  for (size_t i = 0; i < ids.size(); ++i) {
    CHECK(test::max_abs_diff(got[i].embedding, std::vector<double>(want[i].embedding.begin(), want[i].embedding.end())) < 1e-4);
    CHECK(test::max_abs_diff(got[i].hidden, std::vector<double>(want[i].hidden.begin(), want[i].hidden.end())) < 1e-4);
  }
}
