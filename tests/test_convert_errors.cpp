// The converter refuses hostile, truncated and inconsistent checkpoints with
// a message naming the problem, and never crashes on them.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "engine/error.h"
#include "test_support.h"
#include "tiny_model.h"
#include "weights/convert.h"
#include "weights/xlmr_file.h"

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

uint32_t le_at(const std::string& s, size_t at, int bytes) {
  REQUIRE(at + size_t(bytes) <= s.size());
  uint32_t v = 0;
  for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | uint8_t(s[at + size_t(k)]);
  return v;
}

// Marks the storage records of a torch.save zip (stored, small, not zip64)
// as deflated and makes each one's data a deflate stream that promises
// 65535 bytes and ends sooner: the zip directory stays valid, so only
// reading the tensor finds its bytes missing. Returns how many it changed.
int cut_storages_short(std::string* zip) {
  const size_t eocd = zip->rfind(std::string("PK\x05\x06", 4));
  REQUIRE(eocd != std::string::npos);
  size_t at = le_at(*zip, eocd + 16, 4);
  int changed = 0;
  for (uint32_t i = 0, n = le_at(*zip, eocd + 10, 2); i < n; ++i) {
    REQUIRE(le_at(*zip, at, 4) == 0x02014b50u);
    const uint32_t size = le_at(*zip, at + 24, 4), nlen = le_at(*zip, at + 28, 2);
    const uint32_t local = le_at(*zip, at + 42, 4);
    const std::string name = zip->substr(at + 46, nlen);
    if (name.find("/data/") != std::string::npos && size > 16 && size < 65535) {
      (*zip)[at + 10] = (*zip)[local + 8] = 8;  // method: deflate, in the directory and the local header
      const size_t data = local + 30 + le_at(*zip, local + 26, 2) + le_at(*zip, local + 28, 2);
      zip->replace(data, 5, std::string("\x00\xff\xff\x00\x00", 5));  // a stored block of 65535 bytes
      ++changed;
    }
    at += 46 + nlen + le_at(*zip, at + 30, 2) + le_at(*zip, at + 32, 2);
  }
  return changed;
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

TEST_CASE("tensor bytes found missing only when read still fail the conversion cleanly", "[convert][errors][lazy]") {
  namespace fs = std::filesystem;
  const std::string dir = test::scratch("convert-errors") + "/lazy-sharded";
  fs::remove_all(dir);
  fs::copy(test::fixture("smoke/hf_fp16_sharded"), dir);
  const std::string shard = dir + "/pytorch_model-00002-of-00002.bin";
  std::string zip = test::read_file(shard);
  REQUIRE(cut_storages_short(&zip) > 4);
  test::write_file(shard, zip);

  // An earlier file at the output path survives, and no temporary is left.
  const std::string out = test::scratch("convert-errors") + "/lazy.xlmr";
  test::write_file(out, "earlier");
  std::string msg = "(no error)";
  try {
    xlmr::convert_checkpoint(dir, out, {});
  } catch (const xlmr::Error& e) {
    msg = e.what();
  }
  CHECK_THAT(msg, Contains(shard) && Contains("zip entry 'pytorch_model-00002-of-00002/data/"));
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(test::read_file(out) == "earlier");
  CHECK_FALSE(fs::exists(out + ".tmp"));

  // A safetensors file shorter than its header says is caught when opened.
  const std::string st = safetensors_bytes(tiny_hf());
  const std::string cut = test::scratch("convert-errors") + "/short.safetensors";
  test::write_file(cut, st.substr(0, st.size() - 7));
  CHECK_THAT(convert_error(cut), Contains(cut) && Contains("past the data buffer"));
}

TEST_CASE("the writer streams produced tensors into the same bytes", "[convert][format]") {
  namespace fs = std::filesystem;
  const std::string dir = test::scratch("convert-errors");
  const xlmr::ModelConfig c = test::tiny_config();
  const std::vector<xlmr::TensorToWrite> in_memory = test::tiny_tensors(c);
  xlmr::write_xlmr_file(dir + "/memory.xlmr", c.to_json(), in_memory, "tok");

  // Each tensor made only when the writer reaches it, in file order.
  std::vector<xlmr::TensorToWrite> produced;
  size_t next = 0;
  for (size_t i = 0; i < in_memory.size(); ++i) {
    xlmr::TensorToWrite t = in_memory[i];
    t.data.clear();
    t.produce = [&in_memory, &next, i](std::vector<uint8_t>& buf) {
      CHECK(next++ == i);
      CHECK(buf.empty());
      buf = in_memory[i].data;
    };
    produced.push_back(std::move(t));
  }
  xlmr::write_xlmr_file(dir + "/streamed.xlmr", c.to_json(), produced, "tok");
  CHECK(next == in_memory.size());
  CHECK(test::read_file(dir + "/streamed.xlmr") == test::read_file(dir + "/memory.xlmr"));

  // A producer that fails, or makes the wrong number of bytes, abandons the
  // file: the earlier one stays, the temporary goes.
  const std::string out = dir + "/abandoned.xlmr";
  test::write_file(out, "earlier");
  auto failing = produced;
  failing[3].produce = [](std::vector<uint8_t>&) { XLMR_THROW("source went away"); };
  next = 0;
  CHECK_THROWS_WITH(xlmr::write_xlmr_file(out, c.to_json(), failing, ""), Contains("source went away"));
  CHECK(test::read_file(out) == "earlier");
  CHECK_FALSE(fs::exists(out + ".tmp"));
  auto short_one = produced;
  short_one.back().produce = [](std::vector<uint8_t>& buf) { buf.assign(4, 0); };
  next = 0;
  CHECK_THROWS_WITH(xlmr::write_xlmr_file(out, c.to_json(), short_one, ""),
                    Contains("produced 4 bytes, its shape and dtype need"));
  CHECK(test::read_file(out) == "earlier");
  CHECK_FALSE(fs::exists(out + ".tmp"));
}

TEST_CASE("the output may be neither a folder nor a file the conversion reads", "[convert][errors]") {
  const std::string dir = test::scratch("convert-out") + "/hf";
  std::filesystem::remove_all(dir);
  std::filesystem::copy(test::fixture("smoke/hf"), dir, std::filesystem::copy_options::recursive);
  CHECK_THROWS_WITH(xlmr::convert_checkpoint(dir, dir, {}), Catch::Contains("is a folder: give the .xlmr file to write"));
  const std::string weights = dir + "/model.safetensors";
  const std::string before = test::read_file(weights);
  for (const std::string& out : {weights, dir + "/config.json", dir + "/./model.safetensors"}) {
    INFO(out);
    CHECK_THROWS_WITH(xlmr::convert_checkpoint(dir, out, {}), Catch::Contains("which the conversion reads"));
  }
  CHECK_THROWS_WITH(xlmr::convert_checkpoint(weights, weights, {}), Catch::Contains("which the conversion reads"));
  CHECK(test::read_file(weights) == before);  // untouched
  CHECK(!std::filesystem::exists(weights + ".tmp"));
  // Elsewhere in the folder is fine.
  CHECK_NOTHROW(xlmr::convert_checkpoint(dir, dir + "/model.xlmr", {}));
}
