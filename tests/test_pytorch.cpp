// End to end against PyTorch: checkpoints written by torch.save and
// save_pretrained (tests/fixtures/smoke, made by scripts/make_smoke_fixtures.py
// with the real torchtext and Hugging Face model code) are converted, run on
// every execution mode (reference, fused ragged/padded, thread counts, AVX2,
// bf16 with attention in bf16 (AMX or AVX512_BF16) and in f32, int8 with and without equalization),
// and compared on real (non-pad) positions.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "test_support.h"
#include "weights/convert.h"

namespace {

// Every way the engine can run a model: each is held to PyTorch.
struct Mode {
  const char* name;
  xlmr::EngineOptions opts;
  // 0: an fp32 mode, every value within atol. Else each token's hidden
  // vector at this cosine, at least, to PyTorch's fp32 one.
  double min_cosine;
  double min_mean_cosine;  // the mean over a sequence's tokens
  bool fp32() const { return min_cosine == 0; }
};

struct Cosines {
  double worst, mean;
};
constexpr Cosines kBf16Cosine{0.999, 0.999};
// int8 (weights per channel, activations per token, quantized at run time):
// on these fixtures (hidden 64: short dot products, which average little of
// the rounding away) the worst single token reads 0.9948 with the input
// channels equalized (the default), 0.9745 without; the worst mean over a
// sequence's tokens 0.9986 and 0.9979.
constexpr Cosines kInt8Cosine{0.99, 0.998};
constexpr Cosines kInt8UnequalizedCosine{0.97, 0.995};
// int8 GEMMs with bf16 attention: the worst token reads 0.9913 (0.9948 with
// f32 attention), the worst mean 0.9986.
constexpr Cosines kInt8Bf16AttentionCosine{0.985, 0.998};

std::vector<Mode> all_modes() {
  std::vector<Mode> m;
  auto add = [&](const char* name, auto set, Cosines cos = {0, 0}) {
    xlmr::EngineOptions o;
    set(o);
    m.push_back({name, o, cos.worst, cos.mean});
  };
  add("reference", [](xlmr::EngineOptions& o) { o.path = xlmr::Path::reference; });
  add("fused", [](xlmr::EngineOptions&) {});
  add("fused padded", [](xlmr::EngineOptions& o) { o.padded = true; });
  add("fused 1 thread", [](xlmr::EngineOptions& o) { o.threads = 1; });
  add("fused 3 threads", [](xlmr::EngineOptions& o) { o.threads = 3; });
  add("fused avx2", [](xlmr::EngineOptions& o) { o.isa = "avx2"; });
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
    // attention's products in bf16 where the CPU has AMX or AVX512_BF16 (the default), then in f32
    add("fused bf16", [](xlmr::EngineOptions& o) { o.precision = xlmr::Precision::bf16; }, kBf16Cosine);
    add("fused bf16, f32 attention", [](xlmr::EngineOptions& o) {
      o.precision = xlmr::Precision::bf16;
      o.attention = xlmr::Precision::f32;
    }, kBf16Cosine);
  }
  add("fused int8", [](xlmr::EngineOptions& o) { o.precision = xlmr::Precision::int8; }, kInt8Cosine);
  // ... and with attention's products in bf16, asked for (run where the CPU
  // and the model's head dim allow)
  add("fused int8, bf16 attention", [](xlmr::EngineOptions& o) {
    o.precision = xlmr::Precision::int8;
    o.attention = xlmr::Precision::bf16;
  }, kInt8Bf16AttentionCosine);
  add("fused int8 avx2", [](xlmr::EngineOptions& o) {
    o.precision = xlmr::Precision::int8;
    o.isa = "avx2";
  }, kInt8Cosine);
  add("fused int8, not equalized", [](xlmr::EngineOptions& o) {
    o.precision = xlmr::Precision::int8;
    o.int8_equalize = false;
  }, kInt8UnequalizedCosine);
  return m;
}

std::vector<float> to_floats(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// fp32 modes: every hidden value and logit within atol. bf16 and int8: each
// token's hidden vector at the mode's cosine to PyTorch's fp32 one.
void check_result(const xlmr::Result& r, const nlohmann::json& exp, size_t i, const Mode& mode, double atol) {
  const std::vector<double> hidden = test::flatten(exp["hidden"][i]);
  if (mode.fp32()) {
    CHECK(test::max_abs_diff(r.hidden, hidden) <= atol);
    if (exp.contains("logits")) CHECK(test::max_abs_diff(r.logits, test::flatten(exp["logits"][i])) <= atol);
    return;
  }
  const size_t E = hidden.size() / size_t(r.n_tokens);
  REQUIRE(r.hidden.size() == hidden.size());
  double worst = 1.0, mean = 0.0;
  for (int t = 0; t < r.n_tokens; ++t) {
    std::vector<float> a(r.hidden.begin() + t * E, r.hidden.begin() + (t + 1) * E);
    std::vector<float> b = to_floats(std::vector<double>(hidden.begin() + t * E, hidden.begin() + (t + 1) * E));
    const double c = test::cosine(a, b);
    worst = std::min(worst, c);
    mean += c / r.n_tokens;
  }
  INFO("worst token cosine " << worst << ", mean " << mean);
  CHECK(worst >= mode.min_cosine);
  CHECK(mean >= mode.min_mean_cosine);
  if (std::getenv("XLMR_PRINT_COSINE")) std::printf("%s: token cosine worst %.6f mean %.6f\n", mode.name, worst, mean);
}

void check_against_pytorch(const std::string& src, const std::string& name, int heads, xlmr::DType dtype,
                           double atol) {
  const nlohmann::json exp = test::read_json(test::fixture("smoke/" + name + "/expected.json"));
  const std::string out = test::scratch("pytorch") + "/" + name + "_" + xlmr::dtype_name(dtype) + ".xlmr";
  xlmr::ConvertOptions co;
  co.heads = heads;
  co.dtype = dtype;
  xlmr::convert_checkpoint(src, out, co);
  std::vector<std::vector<int32_t>> seqs = exp["ids"].get<std::vector<std::vector<int32_t>>>();
  for (const Mode& mode : all_modes()) {
    // A file stored in bf16 runs bf16 GEMMs by default; hold the fp32 modes to fp32.
    xlmr::EngineOptions o = mode.opts;
    if (!o.precision && o.path == xlmr::Path::fused) o.precision = xlmr::Precision::f32;
    std::unique_ptr<xlmr::Engine> engine;
    try {
      engine = xlmr::Engine::load(out, o);
    } catch (const xlmr::Error& e) {
      // bf16 attention asked for where this CPU or the model's head dim does
      // not allow it: refused at load, as it must be.
      const bool bf16_refused = o.attention == xlmr::Precision::bf16 &&
                                std::string(e.what()).find("bf16 attention needs") != std::string::npos;
      if (!bf16_refused) throw;
      WARN(name << ": mode '" << mode.name << "' not run: " << e.what());
      continue;
    }
    xlmr::EncodeOptions enc;
    enc.hidden = true;
    const auto res = engine->encode_ids(seqs, enc);
    REQUIRE(res.size() == seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      INFO(name << " sequence " << i << " dtype " << xlmr::dtype_name(dtype) << " mode " << mode.name << " ("
                << engine->describe() << ")");
      check_result(res[i], exp, i, mode, atol);
    }
  }
}

}  // namespace

TEST_CASE("torchtext torch.save checkpoint matches PyTorch within 1e-4", "[pytorch][convert]") {
  check_against_pytorch(test::fixture("smoke/torchtext/model.pt"), "torchtext", 2, xlmr::DType::f32, 1e-4);
}

TEST_CASE("Hugging Face safetensors folder matches PyTorch within 1e-4", "[pytorch][convert]") {
  check_against_pytorch(test::fixture("smoke/hf"), "hf", 0, xlmr::DType::f32, 1e-4);
}

TEST_CASE("f16 and bf16 storage stay close to the fp32 results", "[pytorch][convert][dtype]") {
  // Storage rounding only: loose absolute bounds, far below any real bug.
  check_against_pytorch(test::fixture("smoke/hf"), "hf", 0, xlmr::DType::f16, 2e-2);
  check_against_pytorch(test::fixture("smoke/hf"), "hf", 0, xlmr::DType::bf16, 1.5e-1);
}

TEST_CASE("the torchtext head activation is recorded as ReLU, Hugging Face as tanh", "[pytorch][convert]") {
  const std::string dir = test::scratch("pytorch");
  xlmr::ConvertOptions co;
  co.heads = 2;
  auto r1 = xlmr::convert_checkpoint(test::fixture("smoke/torchtext/model.pt"), dir + "/a.xlmr", co);
  CHECK(r1.naming == "torchtext");
  CHECK(r1.config["model"]["head_activation"] == "relu");
  CHECK(r1.config["model"]["type_vocab_size"] == 0);
  auto r2 = xlmr::convert_checkpoint(test::fixture("smoke/hf"), dir + "/b.xlmr", {});
  CHECK(r2.naming == "hf");
  CHECK(r2.config["model"]["head_activation"] == "tanh");
  CHECK(r2.config["model"]["type_vocab_size"] == 1);
  CHECK(r2.config["model"]["heads"] == 2);  // from config.json
  // Forcing the wrong activation must change the logits: the test above can fail.
  co.head_activation = "tanh";
  xlmr::convert_checkpoint(test::fixture("smoke/torchtext/model.pt"), dir + "/c.xlmr", co);
  auto e = xlmr::Engine::load(dir + "/c.xlmr");
  const nlohmann::json exp = test::read_json(test::fixture("smoke/torchtext/expected.json"));
  const auto res = e->encode_ids({exp["ids"][0].get<std::vector<int32_t>>()}, {});
  CHECK(test::max_abs_diff(res[0].logits, test::flatten(exp["logits"][0])) > 1e-3);
}

TEST_CASE("fairseq checkpoint (Namespace args, split q/k/v, LM head) matches PyTorch", "[pytorch][convert]") {
  // heads = 0: taken from the pickled args.encoder_attention_heads
  check_against_pytorch(test::fixture("smoke/fairseq/model.pt"), "fairseq", 0, xlmr::DType::f32, 1e-4);
  auto r = xlmr::convert_checkpoint(test::fixture("smoke/fairseq/model.pt"), test::scratch("pytorch") + "/fs.xlmr", {});
  CHECK(r.naming == "fairseq");
  CHECK(r.config["model"]["head_activation"] == "tanh");
  CHECK(r.config["model"]["heads"] == 2);
  CHECK(r.ignored.size() == 6);  // the LM head
}

TEST_CASE("BERT-arch model (positions from 0, eps 1e-12, pooler) matches PyTorch", "[pytorch][convert]") {
  const nlohmann::json exp = test::read_json(test::fixture("smoke/bert/expected.json"));
  const std::string out = test::scratch("pytorch") + "/bert.xlmr";
  auto r = xlmr::convert_checkpoint(test::fixture("smoke/bert"), out, {});
  CHECK(r.config["model"]["family"] == "bert");
  CHECK(r.config["model"]["position_offset"] == 0);
  CHECK(r.config["model"]["type_vocab_size"] == 2);
  const auto seqs = exp["ids"].get<std::vector<std::vector<int32_t>>>();
  for (const Mode& mode : all_modes()) {
    auto e = xlmr::Engine::load(out, mode.opts);
    xlmr::EncodeOptions enc;
    enc.hidden = true;
    enc.pooling = xlmr::Pooling::pooler;
    const auto res = e->encode_ids(seqs, enc);
    for (size_t i = 0; i < seqs.size(); ++i) {
      INFO("sequence " << i << " mode " << mode.name);
      check_result(res[i], exp, i, mode, 1e-4);
      if (mode.fp32()) CHECK(test::max_abs_diff(res[i].embedding, test::flatten(exp["pooler"][i])) <= 1e-4);
      CHECK(res[i].logits.empty());
    }
  }
  auto engine = xlmr::Engine::load(out);
  // mean pooling (the BERT-arch default) is the mean of the hidden rows
  const auto mean = engine->encode_ids({seqs[2]}, {});
  std::vector<double> want(64, 0.0);
  const auto rows = exp["hidden"][2];
  for (const auto& row : rows)
    for (size_t e = 0; e < 64; ++e) want[e] += row[e].get<double>() / double(rows.size());
  CHECK(test::max_abs_diff(mean[0].embedding, want) <= 1e-4);
}

TEST_CASE("older torchtext names in a legacy (pre-1.6) torch.save file match PyTorch", "[pytorch][convert]") {
  // Same weights as smoke/torchtext, renamed and written with the legacy serializer.
  check_against_pytorch(test::fixture("smoke/torchtext/model_oldnames_legacy.pt"), "torchtext", 2, xlmr::DType::f32,
                        1e-4);
  auto r = xlmr::convert_checkpoint(test::fixture("smoke/torchtext/model_oldnames_legacy.pt"),
                                    test::scratch("pytorch") + "/old.xlmr", [] {
                                      xlmr::ConvertOptions o;
                                      o.heads = 2;
                                      return o;
                                    }());
  CHECK(r.naming == "torchtext-old");
  CHECK(r.source_format == "torch-legacy");
  CHECK(r.config["model"]["head_activation"] == "relu");
}

TEST_CASE("sharded fp16 pytorch_model.bin folder matches PyTorch", "[pytorch][convert]") {
  check_against_pytorch(test::fixture("smoke/hf_fp16_sharded"), "hf_fp16_sharded", 0, xlmr::DType::f32, 1e-4);
  auto r = xlmr::convert_checkpoint(test::fixture("smoke/hf_fp16_sharded"), test::scratch("pytorch") + "/sh.xlmr", {});
  CHECK(r.source_files.size() == 2);
  CHECK(r.config["provenance"]["source_dtype"] == "f16");
}

TEST_CASE("XLM-R XL layout (pre-LayerNorm): Hugging Face and fairseq checkpoints match PyTorch", "[pytorch][convert]") {
  // transformers' XLMRobertaXLForSequenceClassification, save_pretrained.
  check_against_pytorch(test::fixture("smoke/hf_xl"), "hf_xl", 0, xlmr::DType::f32, 1e-4);
  // The same weights under fairseq's names, as the XL release stores them.
  check_against_pytorch(test::fixture("smoke/fairseq_xl/model.pt"), "fairseq_xl", 0, xlmr::DType::f32, 1e-4);

  const std::string dir = test::scratch("pytorch");
  auto r = xlmr::convert_checkpoint(test::fixture("smoke/hf_xl"), dir + "/xl.xlmr", {});
  CHECK(r.naming == "hf-xl");
  CHECK(r.config["model"]["norm"] == "pre");
  auto f = xlmr::convert_checkpoint(test::fixture("smoke/fairseq_xl/model.pt"), dir + "/xl_fs.xlmr", {});
  CHECK(f.naming == "fairseq");
  CHECK(f.config["model"]["norm"] == "pre");
  CHECK(f.config["model"]["heads"] == 2);  // from the Namespace args
  // The post-norm fixtures stay post-norm.
  CHECK(xlmr::convert_checkpoint(test::fixture("smoke/hf"), dir + "/post.xlmr", {}).config["model"]["norm"] == "post");
}
