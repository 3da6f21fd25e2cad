// The converter refuses hostile, truncated and inconsistent checkpoints with
// a message naming the problem, and never crashes on them.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include "engine/error.h"
#include "test_support.h"
#include "weights/convert.h"

using Catch::Matchers::Contains;

namespace {

xlmr::ConvertOptions one_head() {
  xlmr::ConvertOptions co;
  co.heads = 1;  // the hand-made models record no head count and are narrower than any released shape
  return co;
}

std::string convert_error(const std::string& src, xlmr::ConvertOptions co = one_head()) {
  try {
    xlmr::convert_checkpoint(src, test::scratch("convert-errors") + "/out.xlmr", co);
  } catch (const xlmr::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A minimal safetensors writer for hand-made checkpoints (f32 only).
struct St {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};
std::string safetensors_bytes(const std::vector<St>& ts) {
  nlohmann::json h = nlohmann::json::object();
  size_t off = 0;
  std::string data;
  for (const St& t : ts) {
    h[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {off, off + 4 * t.values.size()}}};
    data.append(reinterpret_cast<const char*>(t.values.data()), 4 * t.values.size());
    off += 4 * t.values.size();
  }
  const std::string hs = h.dump();
  std::string out(8, '\0');
  const uint64_t n = hs.size();
  std::memcpy(&out[0], &n, 8);
  return out + hs + data;
}

// A one-layer Hugging Face-named model, E=4 (or E), F=8, V=10, P=8.
std::vector<St> tiny_hf(int64_t E = 4) {
  auto t = [](const std::string& n, std::vector<int64_t> s) {
    size_t k = 1;
    for (auto d : s) k *= size_t(d);
    std::vector<float> v(k);
    for (size_t i = 0; i < k; ++i) v[i] = 0.01f * float(i % 17) - 0.05f;
    return St{n, s, v};
  };
  const std::string L = "roberta.encoder.layer.0.";
  return {t("roberta.embeddings.word_embeddings.weight", {10, E}),
          t("roberta.embeddings.position_embeddings.weight", {8, E}),
          t("roberta.embeddings.LayerNorm.weight", {E}), t("roberta.embeddings.LayerNorm.bias", {E}),
          t(L + "attention.self.query.weight", {E, E}), t(L + "attention.self.query.bias", {E}),
          t(L + "attention.self.key.weight", {E, E}), t(L + "attention.self.key.bias", {E}),
          t(L + "attention.self.value.weight", {E, E}), t(L + "attention.self.value.bias", {E}),
          t(L + "attention.output.dense.weight", {E, E}), t(L + "attention.output.dense.bias", {E}),
          t(L + "attention.output.LayerNorm.weight", {E}), t(L + "attention.output.LayerNorm.bias", {E}),
          t(L + "intermediate.dense.weight", {8, E}), t(L + "intermediate.dense.bias", {8}),
          t(L + "output.dense.weight", {E, 8}), t(L + "output.dense.bias", {E}),
          t(L + "output.LayerNorm.weight", {E}), t(L + "output.LayerNorm.bias", {E})};
}

std::string write_st(const std::string& name, const std::vector<St>& ts) {
  const std::string p = test::scratch("convert-errors") + "/" + name;
  test::write_file(p, safetensors_bytes(ts));
  return p;
}

}  // namespace

TEST_CASE("hostile pickles are refused, never executed", "[convert][errors][pickle]") {
  CHECK_THAT(convert_error(test::fixture("hostile/os_system.pt")), Contains("refusing to unpickle global 'os.system'"));
  CHECK_THAT(convert_error(test::fixture("hostile/builtins_eval.pt")), Contains("builtins.eval"));
  CHECK_THAT(convert_error(test::fixture("hostile/unknown_opcode.pt")), Contains("unsupported pickle opcode 0xff"));
  CHECK_THAT(convert_error(test::fixture("hostile/truncated_pickle.pt")), Contains("truncated"));
}

TEST_CASE("truncated checkpoints are refused at every cut", "[convert][errors]") {
  for (const std::string src : {"smoke/torchtext/model.pt", "smoke/hf/model.safetensors"}) {
    const std::string good = test::read_file(test::fixture(src));
    const std::string p = test::scratch("convert-errors") + "/cut.bin";
    for (size_t n = 0; n < good.size(); n += 4099) {
      INFO(src << " cut at " << n);
      test::write_file(p, good.substr(0, n));
      xlmr::ConvertOptions co;
      co.heads = 2;
      CHECK(convert_error(p, co) != "(no error)");
    }
  }
}

TEST_CASE("inconsistent checkpoints are refused by name", "[convert][errors]") {
  CHECK(convert_error(write_st("ok.safetensors", tiny_hf())) == "(no error)");

  auto ts = tiny_hf();
  ts.erase(ts.begin() + 16);  // output.dense.weight
  CHECK_THAT(convert_error(write_st("missing.safetensors", ts)),
             Contains("lacks 1 tensor(s): layers.0.ffn2.weight (from 'roberta.encoder.layer.0.output.dense.weight')"));

  ts = tiny_hf();
  ts[14] = {"roberta.encoder.layer.0.intermediate.dense.weight", {8, 5}, std::vector<float>(40, 0.1f)};
  CHECK_THAT(convert_error(write_st("shape.safetensors", ts)), Contains("does not fit layers.0.ffn1.weight [8, 4]"));

  ts = tiny_hf();
  ts.push_back({"roberta.encoder.layer.0.mystery.weight", {2}, {1, 2}});
  CHECK_THAT(convert_error(write_st("unknown.safetensors", ts)),
             Contains("does not know: roberta.encoder.layer.0.mystery.weight"));
  xlmr::ConvertOptions co = one_head();
  co.ignore_unknown = true;
  CHECK(convert_error(write_st("unknown.safetensors", ts), co) == "(no error)");

  ts = tiny_hf();
  ts[4].values[3] = NAN;
  CHECK_THAT(convert_error(write_st("nan.safetensors", ts)), Contains("contains NaN or infinity"));

  ts = tiny_hf();
  ts.push_back({"classifier.dense.weight", {4, 4}, std::vector<float>(16, 0.1f)});
  CHECK_THAT(convert_error(write_st("halfhead.safetensors", ts)), Contains("only part of the classification head"));

  ts = tiny_hf();
  ts.erase(ts.begin());  // no word embeddings: naming cannot be told
  CHECK_THAT(convert_error(write_st("noemb.safetensors", ts)), Contains("cannot tell which model"));

  ts = tiny_hf();
  CHECK_THAT(convert_error(write_st("f16big.safetensors", ts), [] {
               xlmr::ConvertOptions o;
               o.heads = 3;
               return o;
             }()),
             Contains("not divisible by 3 heads"));
}

TEST_CASE("without a recorded head count only released shapes are assumed, and said", "[convert][errors]") {
  const std::string dir = test::scratch("convert-errors");
  // XLM-R base's width: 12 heads, with a note saying it was assumed.
  const auto r = xlmr::convert_checkpoint(write_st("base-width.safetensors", tiny_hf(768)), dir + "/bw.xlmr", {});
  CHECK(r.config["model"]["heads"] == 12);
  REQUIRE(r.notes.size() == 1);
  CHECK_THAT(r.notes[0], Contains("assumed 12") && Contains("XLM-R base") && Contains("--heads"));
  // Any other width is refused rather than guessed (128 / 64 = 2 heads might be wrong).
  CHECK_THAT(convert_error(write_st("odd-width.safetensors", tiny_hf(128)), {}),
             Contains("cannot tell the number of attention heads") && Contains("--heads"));
  // --heads settles it, with no note.
  xlmr::ConvertOptions co;
  co.heads = 4;
  const auto given = xlmr::convert_checkpoint(write_st("odd-width.safetensors", tiny_hf(128)), dir + "/ow.xlmr", co);
  CHECK(given.config["model"]["heads"] == 4);
  CHECK(given.notes.empty());
}
