// xlmr-infer and xlmr-convert as a user runs them: output contract, input
// order, and one clear error line with a non-zero exit for bad input.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "engine/engine.h"
#include "engine/tools/infer_input.h"
#include "engine/tools/infer_stream.h"
#include "engine/tools/windows.h"
#include "test_support.h"
#include "tiny_model.h"
#include "tokenizer/tokenizer.h"
#include "weights/convert.h"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

std::string infer() { return "'" + test::binary_path("xlmr-infer") + "'"; }
std::string convert() { return "'" + test::binary_path("xlmr-convert") + "'"; }

// Several test cases use it; each process writes its own copy (test::scratch).
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
      {"--model '" + m + "' --input-format ids --gpu 1", "0 2\n", "a GPU index goes with --device cuda"},
      {"--model '" + m + "' --input-format ids --gpu -1", "0 2\n", "the GPU index must be 0 or more"},
      {"--model '" + m + "' --pooling max", "0 2\n", "--pooling must be"},
      {"--model '" + m + "' --attention f8", "0 2\n", "--attention must be auto, f32, bf16 or f16"},
      {"--model '" + m + "' --input-format ids --attention bf16", "0 2\n", "bf16 attention runs with bf16 or int8 GEMMs"},
      {"--model '" + m + "' --input-format ids --dtype int4", "0 2\n", "--dtype must be f32, bf16, f16 or int8"},
      {"--model '" + m + "' --input-format ids --dtype int8 --device cuda", "0 2\n",
       "int8 GEMMs run on the CPU's fused path; on CUDA use --dtype f16 or bf16"},
      {"--model '" + m + "' --input-format ids --dtype int8 --path reference", "0 2\n",
       "the reference path computes in f32 only (use the fused path for bf16 or int8)"},
      {"--model '" + m + "' --pooling pooler --input-format ids --max-length 99", "0 2\n", "exceeds the model's limit"},
      {"--model '" + m + "' --input-format ids /nonexistent.txt", "", "cannot open input '/nonexistent.txt'"},
      {"--model '" + m + "' --input-format ids '" + test::scratch("cli") + "'", "", "it is a folder"},
      {"--model '" + m + "' --input-format ids --max-line-mib 1", "0 2\n" + std::string(3 << 19, '5') + "\n",
       "<stdin>:2: a line longer than 1 MiB (--max-line-mib raises the limit)"},
      {"--model '" + m + "' --input-format ids --max-line-mib 0", "0 2\n", "--max-line-mib must be in [1, 1048576]"},
  };
  for (const Case& c : cases) {
    INFO(c.args);
    const auto r = test::run(infer() + " " + c.args, c.input);
    CHECK(r.status != 0);
    CHECK_THAT(r.err, StartsWith("xlmr-infer: error: "));
    CHECK_THAT(r.err, Contains(c.message));
    CHECK(test::lines(r.err).size() == 1);
  }
  // An output that is an input or the model would be truncated before it is read.
  {
    const std::string dir = test::scratch("cli-same");
    test::write_file(dir + "/in.txt", "0 5 2\n");
    test::write_file(dir + "/m.xlmr", test::read_file(m));
    for (const std::string& out : {dir + "/in.txt", dir + "/m.xlmr", dir + "/./in.txt"}) {
      INFO(out);
      const auto r = test::run(infer() + " --model '" + dir + "/m.xlmr' --input-format ids '" + dir + "/in.txt' -o '" +
                               out + "'");
      CHECK(r.status != 0);
      CHECK_THAT(r.err, Contains("which this run reads: write elsewhere"));
      CHECK(test::lines(r.err).size() == 1);
    }
    CHECK(test::read_file(dir + "/in.txt") == "0 5 2\n");
    CHECK(test::read_file(dir + "/m.xlmr") == test::read_file(m));
    const auto r = test::run(infer() + " --model '" + m + "' --input-format ids -o '" + dir + "'", "0 2\n");
    CHECK(r.status != 0);
    CHECK_THAT(r.err, Contains("is not a regular file but a folder"));
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

TEST_CASE("xlmr-infer: a bf16 file on a CPU without bf16 instructions runs in f32, with one note", "[cli][bf16]") {
  const std::string dir = test::scratch("cli-bf16");
  const auto conv = test::run(convert() + " '" + test::fixture("smoke/hf") + "' '" + dir + "/m.xlmr' --dtype bf16");
  REQUIRE(conv.status == 0);
  const std::string m = "--model '" + dir + "/m.xlmr' --input-format ids";
  const std::string input = "0 5 6 7 2\n0 9 2\n";
  // DNNL_MAX_CPU_ISA=AVX512_CORE hides AVX512_BF16 and AMX from oneDNN, so
  // this is such a CPU on any machine.
  const std::string capped = "DNNL_MAX_CPU_ISA=AVX512_CORE " + infer() + " " + m;
  const auto dflt = test::run(capped, input);
  REQUIRE(dflt.status == 0);
  REQUIRE(test::lines(dflt.err).size() == 1);
  CHECK_THAT(dflt.err, StartsWith("xlmr-infer: note: computing in f32, not the file's bf16"));
  // What it ran is --dtype f32, exactly.
  const auto f32 = test::run(capped + " --dtype f32", input);
  REQUIRE(f32.status == 0);
  CHECK(f32.err.empty());
  CHECK(f32.out == dflt.out);
  // Asked for bf16 there, it runs bf16, and says it is slow.
  if (__builtin_cpu_supports("avx512bw")) {
    const auto bf16 = test::run(capped + " --dtype bf16", input);
    REQUIRE(bf16.status == 0);
    CHECK(test::lines(bf16.err).size() == 1);
    CHECK_THAT(bf16.err, StartsWith("xlmr-infer: note: --dtype bf16: this CPU has neither AVX512_BF16 nor AMX-BF16"));
    CHECK(bf16.out != f32.out);
  }
}

TEST_CASE("xlmr-infer --dtype int8: the demo's records close to f32's", "[cli][demo][int8]") {
  const std::string demo = test::binary_path("demo.xlmr");
  const std::string input = test::source_path("scripts/demo/input.txt");
  const auto f32 = test::run(infer() + " --model '" + demo + "' --pooling mean '" + input + "'");
  const auto q8 = test::run(infer() + " --model '" + demo + "' --pooling mean --dtype int8 '" + input + "'");
  REQUIRE(f32.status == 0);
  REQUIRE(q8.status == 0);
  for (const std::string& l : test::lines(q8.err))  // none on a CPU with VNNI
    CHECK_THAT(l, StartsWith("xlmr-infer: note: --dtype int8 without VNNI"));
  const auto a = test::lines(f32.out), b = test::lines(q8.out);
  REQUIRE(a.size() == 12);
  REQUIRE(b.size() == a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const auto ja = nlohmann::json::parse(a[i]), jb = nlohmann::json::parse(b[i]);
    CHECK(jb["n_tokens"] == ja["n_tokens"]);
    const auto ea = ja["embedding"].get<std::vector<float>>(), eb = jb["embedding"].get<std::vector<float>>();
    INFO("line " << i);
    CHECK(test::cosine(ea, eb) >= 0.995);
    CHECK(eb != ea);  // quantized: not the f32 numbers
  }
  const auto d = test::run(infer() + " --model '" + demo + "' --dtype int8 --describe");
  REQUIRE(d.status == 0);
  CHECK(nlohmann::json::parse(d.out)["engine"].get<std::string>().find("int8") != std::string::npos);

  // Another int8 variant: each record within cosine 0.99 of f32's; its output.
  auto variant_close_to_f32 = [&](const std::string& flags) {
    const auto v = test::run(infer() + " --model '" + demo + "' --pooling mean " + flags + " '" + input + "'");
    INFO(flags);
    REQUIRE(v.status == 0);
    const auto r = test::lines(v.out);
    REQUIRE(r.size() == a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      const auto ea = nlohmann::json::parse(a[i])["embedding"].get<std::vector<float>>();
      CHECK(test::cosine(ea, nlohmann::json::parse(r[i])["embedding"].get<std::vector<float>>()) >= 0.99);
    }
    return v.out;
  };

  // --no-equalize: the GEMMs' inputs quantized as they come; other numbers, and said so.
  CHECK(variant_close_to_f32("--dtype int8 --no-equalize") != q8.out);
  const auto pd = test::run(infer() + " --model '" + demo + "' --dtype int8 --no-equalize --describe");
  REQUIRE(pd.status == 0);
  CHECK_THAT(nlohmann::json::parse(pd.out)["engine"].get<std::string>(), Contains("not equalized"));
  const auto bad = test::run(infer() + " --model '" + demo + "' --no-equalize", "hello\n");
  CHECK(bad.status == 1);
  CHECK(bad.err == "xlmr-infer: error: --no-equalize applies to --dtype int8 only\n");

  // --attention bf16 with int8 GEMMs: where bf16 mode's default takes bf16
  // attention, int8 takes it when asked, on the same unit, with outputs close
  // to f32's; elsewhere one error line.
  const auto b16 = test::run(infer() + " --model '" + demo + "' --dtype bf16 --describe");
  const std::string b16_engine = b16.status == 0 ? nlohmann::json::parse(b16.out)["engine"].get<std::string>() : "";
  const size_t on = b16_engine.find("bf16 attention on ");
  const auto i8b = test::run(infer() + " --model '" + demo + "' --dtype int8 --attention bf16 --describe");
  if (on != std::string::npos) {
    REQUIRE(i8b.status == 0);
    const std::string unit = b16_engine.substr(on, b16_engine.find_first_of(",)", on) - on);
    CHECK_THAT(nlohmann::json::parse(i8b.out)["engine"].get<std::string>(), Contains("int8") && Contains(unit));
    // (not checked to differ from int8's: on AMX the demo's lines, all under
    // 32 tokens, keep the f32 kernel)
    variant_close_to_f32("--dtype int8 --attention bf16");
  } else {
    CHECK(i8b.status == 1);
    CHECK_THAT(i8b.err, StartsWith("xlmr-infer: error: bf16 attention needs AVX512_BF16 or AMX-BF16"));
  }

  // Without VNNI (oneDNN held to AVX2) 8-bit weights would let oneDNN's 16-bit
  // pair sums saturate: the weights take 7 bits, a note says so, and the
  // GEMMs still give the exact integer product (with 8-bit weights there 65
  // of the GEMM test's checks fail).
  const auto no_vnni = test::run("DNNL_MAX_CPU_ISA=AVX2 " + infer() + " --model '" + demo +
                                 "' --pooling mean --dtype int8 '" + input + "'");
  REQUIRE(no_vnni.status == 0);
  CHECK_THAT(no_vnni.err, StartsWith("xlmr-infer: note: --dtype int8 without VNNI"));
  const auto c = test::lines(no_vnni.out);
  REQUIRE(c.size() == a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const auto ea = nlohmann::json::parse(a[i])["embedding"].get<std::vector<float>>();
    CHECK(test::cosine(ea, nlohmann::json::parse(c[i])["embedding"].get<std::vector<float>>()) >= 0.995);
  }
  const auto gemm = test::run("DNNL_MAX_CPU_ISA=AVX2 '" + test::binary_path("xlmr-tests") + "' '[int8][gemm]'");
  CHECK(gemm.status == 0);
  CHECK_THAT(gemm.out, Contains("All tests passed"));
}

TEST_CASE("xlmr-infer --describe prints the configuration, the engine and its notes, and reads no input", "[cli]") {
  const std::string m = tiny_model();
  // Standard input would be an error (no tokenizer, and not ids): it is never read.
  const auto r = test::run(infer() + " --model '" + m + "' --describe --threads 1", "not ids at all\n");
  REQUIRE(r.status == 0);
  CHECK(r.err.empty());
  const nlohmann::json d = nlohmann::json::parse(r.out);
  const auto e = xlmr::Engine::load(m, [] {
    xlmr::EngineOptions o;
    o.threads = 1;
    return o;
  }());
  CHECK(d["engine"] == e->describe());
  CHECK(d["config"]["hidden"] == e->config().hidden);
  CHECK(d["config"]["layers"] == e->config().layers);
  CHECK(d["max_length"] == e->max_length());
  CHECK(d["notes"].empty());
  CHECK(d["tokenizer"]["embedded"] == false);
  // The options shape what it describes, notes included.
  const auto many = test::run(infer() + " --model '" + m + "' --describe --threads 100000 --path reference");
  REQUIRE(many.status == 0);
  CHECK(nlohmann::json::parse(many.out)["engine"] == "reference (scalar, f32, padded)");
  const auto over = test::run(infer() + " --model '" + m + "' --describe --threads 100000");
  REQUIRE(over.status == 0);
  const nlohmann::json od = nlohmann::json::parse(over.out);
  REQUIRE(od["notes"].size() == 1);
  CHECK_THAT(od["notes"][0].get<std::string>(), Contains("100000 threads on"));
  // Options the engine refuses fail as they would for a run.
  const auto bad = test::run(infer() + " --model '" + m + "' --describe --device cuda");
  CHECK(bad.status != 0);
  CHECK(bad.out.empty());
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

TEST_CASE("xlmr-convert reports progress per tensor; --progress always draws it into a log", "[cli]") {
  const std::string src = test::fixture("smoke/hf");
  const std::string out = test::scratch("cli-convert") + "/progress.xlmr";
  // The library's callback: one call a tensor, counts rising to the totals.
  std::vector<xlmr::ConvertProgress> calls;
  xlmr::ConvertOptions o;
  o.progress = [&](const xlmr::ConvertProgress& p) { calls.push_back(p); };
  const xlmr::ConvertReport r = xlmr::convert_checkpoint(src, out, o);
  REQUIRE(calls.size() == r.n_tensors);
  for (size_t i = 0; i < calls.size(); ++i) {
    CHECK(calls[i].tensors_done == i + 1);
    CHECK(calls[i].tensors_total == r.n_tensors);
    CHECK(calls[i].bytes_total == r.bytes);
    if (i > 0) CHECK(calls[i].bytes_done > calls[i - 1].bytes_done);
  }
  CHECK(calls.back().bytes_done == r.bytes);

  // Not a terminal: the first count, then at most a line a second, and the
  // last; --quiet keeps the summary out but not an asked-for progress line.
  const auto a = test::run(convert() + " '" + src + "' '" + out + "' --progress always --quiet");
  REQUIRE(a.status == 0);
  const std::string total = std::to_string(r.n_tensors);
  CHECK_THAT(a.err, StartsWith("xlmr-convert: 1/" + total + " tensors, "));
  CHECK_THAT(a.err, Contains("xlmr-convert: " + total + "/" + total + " tensors, "));
  CHECK_THAT(a.err, Contains(" MB, "));
  // auto: only on a terminal; never: never.
  for (const char* mode : {"auto", "never"}) {
    const auto b = test::run(convert() + " '" + src + "' '" + out + "' --progress " + mode + " --quiet");
    REQUIRE(b.status == 0);
    CHECK_THAT(b.err, !Contains("tensors, "));
  }
  const auto bad = test::run(convert() + " '" + src + "' '" + out + "' --progress sometimes");
  CHECK(bad.status == 1);
  CHECK_THAT(bad.err, Contains("--progress must be auto, always or never"));
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

// ---- input formats, pairs, prefixes, long inputs, npy, progress ------------

namespace {

std::string demo() { return "'" + test::binary_path("demo.xlmr") + "'"; }

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> v;
  for (const std::string& l : test::lines(out)) v.push_back(nlohmann::json::parse(l));
  return v;
}

std::vector<float> floats(const nlohmann::json& j) {
  std::vector<float> v;
  for (const auto& x : j) v.push_back(x.get<float>());
  return v;
}

// The error cases of the new options: one line, "xlmr-infer: error: ", exit 1.
struct ErrorCase {
  std::string args, input, message;
};

void check_errors(const std::vector<ErrorCase>& cases) {
  for (const ErrorCase& c : cases) {
    INFO(c.args << " <<< " << c.input);
    const auto r = test::run(infer() + " " + c.args, c.input);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, StartsWith("xlmr-infer: error: "));
    CHECK_THAT(r.err, Contains(c.message));
    CHECK(test::lines(r.err).size() == 1);
  }
}

// A .npy file read back by hand: the C++ side of the format check.
struct Npy {
  std::string descr, shape_text;
  bool fortran = true;
  size_t header_size = 0;
  std::vector<size_t> shape;
  std::vector<float> data;   // '<f4'
  std::vector<int64_t> ints;  // '<i8'
};

Npy read_npy(const std::string& path) {
  const std::string b = test::read_file(path);
  Npy n;
  REQUIRE(b.size() >= 10);
  REQUIRE(b.compare(0, 6, "\x93NUMPY") == 0);
  REQUIRE(b[6] == 1);
  REQUIRE(b[7] == 0);
  const size_t len = size_t((unsigned char)b[8]) | size_t((unsigned char)b[9]) << 8;
  n.header_size = 10 + len;
  REQUIRE(b.size() >= n.header_size);
  const std::string dict = b.substr(10, len);
  REQUIRE(dict.back() == '\n');
  auto value = [&](const std::string& key) {
    const size_t k = dict.find("'" + key + "': ");
    REQUIRE(k != std::string::npos);
    const size_t start = k + key.size() + 4;
    const size_t end = key == "shape" ? dict.find(')', start) + 1 : dict.find(',', start);
    return dict.substr(start, end - start);
  };
  n.descr = value("descr");
  n.fortran = value("fortran_order") == "True";
  n.shape_text = value("shape");
  std::string dims = n.shape_text.substr(1, n.shape_text.size() - 2);
  size_t p = 0;
  while (p < dims.size()) {
    size_t q = dims.find(',', p);
    if (q == std::string::npos) q = dims.size();
    const std::string d = dims.substr(p, q - p);
    if (d.find_first_not_of(' ') != std::string::npos) n.shape.push_back(std::stoul(d));
    p = q + 1;
  }
  size_t count = 1;
  for (size_t d : n.shape) count *= d;
  const size_t width = n.descr == "'<i8'" ? 8 : 4;
  REQUIRE(b.size() == n.header_size + width * count);
  for (size_t i = 0; i < count; ++i) {
    const auto* q = reinterpret_cast<const unsigned char*>(b.data() + n.header_size + width * i);
    uint64_t u = 0;
    for (size_t k = 0; k < width; ++k) u |= uint64_t(q[k]) << (8 * k);
    if (width == 8) {
      n.ints.push_back(int64_t(u));
    } else {
      const uint32_t u32 = uint32_t(u);
      float f;
      std::memcpy(&f, &u32, 4);
      n.data.push_back(f);
    }
  }
  return n;
}

const char* kTexts[] = {"The morning was cool and the sky over the harbour turned pale blue.", "", "Bonjour à tous",
                        "東京の夏はとても暑いです。", "x"};

std::string text_input() {
  std::string s;
  for (const char* t : kTexts) s += std::string(t) + "\n";
  return s;
}

}  // namespace

TEST_CASE("the line reader returns every line exactly, across its buffer, up to the length limit", "[cli][lines]") {
  const std::string dir = test::scratch("cli-lines");
  // Lengths around the reader's 64 KiB pieces, an empty line, a CRLF line,
  // and a last line without its line break.
  const std::vector<size_t> lengths = {0, 1, 65534, 65535, 65536, 65537, 131071, 131072, 200000, 3};
  std::string file;
  std::vector<std::string> want;
  for (size_t i = 0; i < lengths.size(); ++i) {
    std::string line(lengths[i], char('a' + i));
    want.push_back(line);
    file += line + (i == 2 ? "\r\n" : i + 1 == lengths.size() ? "" : "\n");
  }
  test::write_file(dir + "/lines.txt", file);
  auto read_all = [&](size_t limit) {
    xlmr::tools::LineReader r({dir + "/lines.txt"}, limit);
    std::vector<xlmr::tools::Line> got, chunk;
    while (r.next(3, &chunk)) got.insert(got.end(), chunk.begin(), chunk.end());
    return got;
  };
  const auto got = read_all(200000);  // the longest line exactly
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("line " << i + 1);
    CHECK(got[i].text == want[i]);
    CHECK(got[i].where == dir + "/lines.txt:" + std::to_string(i + 1));
  }
  CHECK_THROWS_WITH(read_all(199999), Contains("lines.txt:9: a line longer than 199999 bytes"));
  // An empty input has no lines; a lone line break has one, empty.
  test::write_file(dir + "/empty.txt", "");
  std::vector<xlmr::tools::Line> chunk;
  CHECK(!xlmr::tools::LineReader({dir + "/empty.txt"}).next(5, &chunk));
  test::write_file(dir + "/one.txt", "\n");
  xlmr::tools::LineReader one({dir + "/one.txt"});
  REQUIRE(one.next(5, &chunk));
  CHECK(chunk.size() == 1);
  CHECK(chunk[0].text.empty());
  CHECK(!one.next(5, &chunk));
}

TEST_CASE("split_windows covers the tokens with the requested overlap", "[cli][window]") {
  using xlmr::tools::split_windows;
  using W = std::vector<std::pair<size_t, size_t>>;
  CHECK(split_windows(0, 4, 1) == W{{0, 0}});
  CHECK(split_windows(3, 4, 1) == W{{0, 3}});
  CHECK(split_windows(4, 4, 1) == W{{0, 4}});
  CHECK(split_windows(5, 4, 1) == W{{0, 4}, {3, 5}});
  CHECK(split_windows(10, 4, 2) == W{{0, 4}, {2, 6}, {4, 8}, {6, 10}});
  CHECK(split_windows(9, 3, 0) == W{{0, 3}, {3, 6}, {6, 9}});
  CHECK(split_windows(5, 1, 0).size() == 5);
  CHECK(split_windows(5, 4, 4).empty());  // invalid: refused, not an endless loop
  for (size_t n : {1, 7, 100, 513}) {
    const W w = split_windows(n, 10, 3);
    CHECK(w.front().first == 0);
    CHECK(w.back().second == n);
    for (size_t i = 1; i < w.size(); ++i) CHECK(w[i].first == w[i - 1].second - 3);
  }
}

TEST_CASE("xlmr-infer --input-format jsonl takes the text from a field", "[cli][demo][jsonl]") {
  const auto ref = test::run(infer() + " --model " + demo() + " --pooling mean", text_input());
  REQUIRE(ref.status == 0);
  std::string jl;
  for (const char* t : kTexts)
    jl += nlohmann::json({{"id", 7}, {"body", t}, {"text", "decoy"}}).dump() + "\n";
  const auto r = test::run(infer() + " --model " + demo() + " --pooling mean --input-format jsonl --text-field body", jl);
  REQUIRE(r.status == 0);
  CHECK(r.err.empty());
  CHECK(r.out == ref.out);
  // \u escapes decode to the same text
  const auto r2 = test::run(infer() + " --model " + demo() + " --pooling mean --input-format jsonl",
                            "{\"text\": \"Bonjour \\u00e0 tous\"}\n");
  REQUIRE(r2.status == 0);
  CHECK(json_lines(r2.out).at(0)["embedding"] == json_lines(ref.out).at(2)["embedding"]);
}

TEST_CASE("xlmr-infer jsonl: a bad line names FILE:LINE", "[cli][demo][jsonl][errors]") {
  const std::string m = "--model " + demo() + " --input-format jsonl";
  const std::string ok = "{\"text\": \"fine\"}\n";
  check_errors({
      {m, ok + "{\"text\": \"a\"\n", "<stdin>:2: not valid JSON: "},
      {m, ok + "not json\n", "<stdin>:2: not valid JSON: "},
      {m, ok + ok + "\n", "<stdin>:3: empty line"},
      {m, "[\"text\"]\n", "<stdin>:1: the JSON value is an array, not an object"},
      {m, "\"text\"\n", "<stdin>:1: the JSON value is a string, not an object"},
      {m, "42\n", "<stdin>:1: the JSON value is a number, not an object"},
      {m, "{\"body\": \"a\"}\n", "<stdin>:1: no \"text\" field in the JSON object"},
      {m, "{\"text\": 3}\n", "<stdin>:1: field \"text\" is a number, not a string"},
      {m, "{\"text\": null}\n", "<stdin>:1: field \"text\" is null, not a string"},
      {m, "{\"text\": [\"a\"]}\n", "<stdin>:1: field \"text\" is an array, not a string"},
      {m + " --pair-field b", "{\"text\": \"a\"}\n", "<stdin>:1: no \"b\" field"},
      {m + " --pair-field b", "{\"text\": \"a\", \"b\": false}\n", "<stdin>:1: field \"b\" is a boolean, not a string"},
      {m + " --text-field ''", ok, "--text-field must not be empty"},
      {"--model " + demo() + " --text-field body", "a\n", "--text-field and --pair-field apply to --input-format jsonl"},
      {"--model " + demo() + " --pair-field b", "a\n", "--text-field and --pair-field apply to --input-format jsonl"},
      {"--model " + demo() + " --input-format xml", "a\n", "--input-format must be text, ids, jsonl or tsv-pairs"},
  });
  // A named file: its name and line number.
  const std::string f = test::scratch("cli") + "/bad.jsonl";
  test::write_file(f, ok + ok + ok + "{oops}\n");
  check_errors({{m + " '" + f + "'", "", f + ":4: not valid JSON"}});
}

TEST_CASE("xlmr-infer runs pairs from tsv-pairs and jsonl --pair-field", "[cli][demo][pairs]") {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"what is the weather", "Сегодня в городе тепло и солнечно."}, {"", "only B"}, {"only A", ""}, {"a b", "c d"}};
  std::string tsv, jl;
  for (const auto& [a, b] : pairs) {
    tsv += a + "\t" + b + "\n";
    jl += nlohmann::json({{"q", a}, {"d", b}}).dump() + "\n";
  }
  const auto r1 = test::run(infer() + " --model " + demo() + " --input-format tsv-pairs", tsv);
  const auto r2 = test::run(infer() + " --model " + demo() + " --input-format jsonl --text-field q --pair-field d", jl);
  REQUIRE(r1.status == 0);
  REQUIRE(r2.status == 0);
  CHECK(r1.out == r2.out);
  // The same numbers as Engine::encode_pairs.
  auto engine = xlmr::Engine::load(test::binary_path("demo.xlmr"));
  const auto expect = engine->encode_pairs(pairs, {});
  const auto got = json_lines(r1.out);
  REQUIRE(got.size() == pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    INFO(i);
    CHECK(got[i]["index"] == i);
    CHECK(got[i]["n_tokens"] == expect[i].n_tokens);
    CHECK(floats(got[i]["embedding"]) == expect[i].embedding);
    CHECK(floats(got[i]["logits"]) == expect[i].logits);
  }
  // A pair differs from the concatenated single text (it has the </s></s> separator).
  const auto single = test::run(infer() + " --model " + demo(), "a b c d\n");
  CHECK(json_lines(single.out).at(0)["n_tokens"] != got[3]["n_tokens"]);

  // Too long for --max-length: cut longest-first, and warned about.
  const std::string long_pair = std::string(400, 'a') + " z\t" + std::string(300, 'b') + " y\nshort\tpair\n";
  const auto r3 = test::run(infer() + " --model " + demo() + " --input-format tsv-pairs --max-length 20", long_pair);
  REQUIRE(r3.status == 0);
  CHECK(json_lines(r3.out).at(0)["n_tokens"] == 20);
  CHECK_THAT(r3.err, Contains("warning: 1 input(s) longer than 20 tokens were truncated (first: <stdin>:1)"));

  const std::string t = "--model " + demo() + " --input-format tsv-pairs";
  check_errors({
      {t, "a\tb\nno tab here\n", "<stdin>:2: no tab"},
      {t, "a\tb\tc\n", "<stdin>:1: more than one tab"},
      {t, "\n", "<stdin>:1: no tab"},
      {t + " --max-length 3", "a\tb\n", "at least 4 for pairs"},
      {t + " --long window", "a\tb\n", "--long window works on single texts, not on pairs"},
  });
}

TEST_CASE("xlmr-infer --prefix and --pair-prefix go before the texts", "[cli][demo][prefix]") {
  std::string prefixed;
  for (const char* t : kTexts) prefixed += std::string("query: ") + t + "\n";
  const auto ref = test::run(infer() + " --model " + demo(), prefixed);
  const auto r = test::run(infer() + " --model " + demo() + " --prefix 'query: '", text_input());
  REQUIRE(ref.status == 0);
  REQUIRE(r.status == 0);
  CHECK(r.out == ref.out);
  const auto plain = test::run(infer() + " --model " + demo(), text_input());
  CHECK(plain.out != r.out);
  // jsonl too
  const auto rj = test::run(infer() + " --model " + demo() + " --input-format jsonl --prefix 'query: '",
                            "{\"text\": \"x\"}\n");
  CHECK(json_lines(rj.out).at(0)["embedding"] == json_lines(ref.out).at(4)["embedding"]);
  // pairs: --prefix on the first text, --pair-prefix on the second
  const auto rp = test::run(infer() + " --model " + demo() +
                                " --input-format tsv-pairs --prefix 'query: ' --pair-prefix 'passage: '",
                            "a\tb\n");
  const auto rq = test::run(infer() + " --model " + demo() + " --input-format tsv-pairs", "query: a\tpassage: b\n");
  REQUIRE(rp.status == 0);
  CHECK(rp.out == rq.out);

  const std::string m = "--model " + demo();
  check_errors({
      {m + " --input-format ids --prefix 'query: '", "0 2\n", "--prefix and --pair-prefix apply to text input"},
      {m + " --pair-prefix 'passage: '", "a\n", "--pair-prefix applies to pairs only"},
  });
}

TEST_CASE("xlmr-infer --long window averages overlapping windows", "[cli][demo][window]") {
  auto engine = xlmr::Engine::load(test::binary_path("demo.xlmr"));
  const xlmr::Tokenizer& tok = engine->tokenizer();
  std::string long_text;
  for (int i = 0; i < 12; ++i) long_text += "Le train de nuit arrive à Lyon avant le lever du soleil. ";
  const std::vector<std::string> texts = {long_text, "short one", "", long_text + "今天的天气很好"};
  std::string input;
  for (const auto& t : texts) input += t + "\n";
  const int max_len = 24, stride = 5, room = max_len - 2;

  for (const bool normalize : {false, true}) {
    INFO("normalize " << normalize);
    const auto r = test::run(infer() + " --model " + demo() + " --pooling mean --long window --max-length " +
                                 std::to_string(max_len) + " --stride " + std::to_string(stride) +
                                 (normalize ? " --normalize" : ""),
                             input);
    REQUIRE(r.status == 0);
    CHECK(r.err.empty());  // nothing truncated
    const auto got = json_lines(r.out);
    REQUIRE(got.size() == texts.size());
    // Expected, built independently: windows of the pieces, run as ids.
    xlmr::EngineOptions eo;
    eo.max_length = max_len;
    auto e24 = xlmr::Engine::load(test::binary_path("demo.xlmr"), eo);
    for (size_t i = 0; i < texts.size(); ++i) {
      INFO("line " << i);
      const std::vector<int32_t> p = tok.pieces(texts[i]);
      std::vector<std::vector<int32_t>> seqs;
      for (size_t b = 0;; b += room - stride) {
        const size_t e = std::min(p.size(), b + room);
        std::vector<int32_t> ids = {0};
        ids.insert(ids.end(), p.begin() + long(b), p.begin() + long(e));
        ids.push_back(2);
        seqs.push_back(ids);
        if (e == p.size()) break;
      }
      xlmr::EncodeOptions enc;
      enc.pooling = xlmr::Pooling::mean;
      enc.normalize = false;
      const auto win = e24->encode_ids(seqs, enc);
      std::vector<float> emb(win[0].embedding.size()), logits(win[0].logits.size());
      for (const auto& w : win) {
        for (size_t k = 0; k < emb.size(); ++k) emb[k] += w.embedding[k] / float(win.size());
        for (size_t k = 0; k < logits.size(); ++k) logits[k] += w.logits[k] / float(win.size());
      }
      if (normalize) {
        double ss = 0;
        for (float x : emb) ss += double(x) * x;
        for (float& x : emb) x = float(x / std::sqrt(ss));
      }
      CHECK(got[i]["index"] == i);
      CHECK(got[i]["n_tokens"] == p.size() + 2);
      CHECK(got[i]["n_windows"] == seqs.size());
      CHECK(test::max_abs_diff(floats(got[i]["embedding"]), std::vector<double>(emb.begin(), emb.end())) < 1e-5);
      CHECK(test::max_abs_diff(floats(got[i]["logits"]), std::vector<double>(logits.begin(), logits.end())) < 1e-5);
      if (normalize) {
        double ss = 0;
        for (float x : floats(got[i]["embedding"])) ss += double(x) * x;
        CHECK(std::fabs(ss - 1.0) < 1e-5);
      }
    }
    CHECK(got[0]["n_windows"].get<int>() > 2);
    CHECK(got[1]["n_windows"] == 1);
    CHECK(got[2]["n_windows"] == 1);
  }
  // A text that fits: the same as truncate mode. Default stride works.
  const auto w = test::run(infer() + " --model " + demo() + " --long window --normalize", text_input());
  const auto t = test::run(infer() + " --model " + demo() + " --normalize", text_input());
  REQUIRE(w.status == 0);
  const auto wj = json_lines(w.out), tj = json_lines(t.out);
  REQUIRE(wj.size() == tj.size());
  for (size_t i = 0; i < wj.size(); ++i) {
    CHECK(wj[i]["n_windows"] == 1);
    CHECK(wj[i]["n_tokens"] == tj[i]["n_tokens"]);
    CHECK(test::max_abs_diff(floats(wj[i]["embedding"]), test::flatten(tj[i]["embedding"])) < 1e-6);
  }
  // Truncate mode (the default) warns with a count and points at window mode.
  const auto tr = test::run(infer() + " --model " + demo() + " --max-length 24", input);
  REQUIRE(tr.status == 0);
  CHECK_THAT(tr.err, Contains("warning: 2 input(s) longer than 24 tokens were truncated (first: <stdin>:1)"));
  CHECK_THAT(tr.err, Contains("--long window"));

  const std::string m = "--model " + demo();
  check_errors({
      {m + " --long window --hidden", "a\n", "--long window and --hidden cannot be combined"},
      {m + " --long window --input-format ids", "0 2\n", "--long window splits text, not token ids"},
      {m + " --long window --stride 22 --max-length 24", "a\n", "--stride must be in [0, 22) for --max-length 24"},
      {m + " --long window --stride -1", "a\n", "--stride must be >= 0"},
      {m + " --long window --max-length 2", "a\n", "--long window needs --max-length of at least 3"},
      {m + " --stride 3", "a\n", "--stride applies to --long window only"},
      {m + " --long slide", "a\n", "--long must be truncate or window"},
      {m + " --stride abc --long window", "a\n", "--stride"},
  });
}

TEST_CASE("xlmr-infer npy output reads back as a float32 matrix", "[cli][demo][npy]") {
  const std::string dir = test::scratch("cli-npy");
  const auto ref = test::run(infer() + " --model " + demo(), text_input());
  REQUIRE(ref.status == 0);
  const auto refj = json_lines(ref.out);

  const std::string f = dir + "/emb.npy";
  const auto r = test::run(infer() + " --model " + demo() + " --output '" + f + "'", text_input());
  REQUIRE(r.status == 0);
  CHECK(r.out.empty());
  const Npy n = read_npy(f);
  CHECK(n.header_size == 128);
  CHECK(n.header_size % 64 == 0);
  CHECK(n.descr == "'<f4'");
  CHECK(!n.fortran);
  REQUIRE(n.shape == std::vector<size_t>{refj.size(), 64});
  for (size_t i = 0; i < refj.size(); ++i) {
    const std::vector<float> row(n.data.begin() + long(i * 64), n.data.begin() + long((i + 1) * 64));
    CHECK(row == floats(refj[i]["embedding"]));  // shortest round-trip decimals: exact
  }

  // Logits, an explicit format with another extension, and an empty input.
  const std::string g = dir + "/logits.bin";
  REQUIRE(test::run(infer() + " --model " + demo() + " --output-format npy --npy-values logits -o '" + g + "'",
                    text_input())
              .status == 0);
  const Npy nl = read_npy(g);
  REQUIRE(nl.shape == std::vector<size_t>{refj.size(), 2});
  for (size_t i = 0; i < refj.size(); ++i)
    CHECK(std::vector<float>(nl.data.begin() + long(2 * i), nl.data.begin() + long(2 * i + 2)) ==
          floats(refj[i]["logits"]));
  const std::string e = dir + "/empty.npy";
  REQUIRE(test::run(infer() + " --model " + demo() + " -o '" + e + "'", "").status == 0);
  CHECK(read_npy(e).shape == std::vector<size_t>{0, 64});
  // More rows than one chunk, and the jsonl format wins when asked for.
  std::string many;
  for (int i = 0; i < 700; ++i) many += "line " + std::to_string(i) + "\n";
  REQUIRE(test::run(infer() + " --model " + demo() + " -o '" + f + "'", many).status == 0);
  CHECK(read_npy(f).shape == std::vector<size_t>{700, 64});
  const std::string j = dir + "/really-jsonl.npy";
  REQUIRE(test::run(infer() + " --model " + demo() + " --output-format jsonl -o '" + j + "'", "a\n").status == 0);
  CHECK(json_lines(test::read_file(j)).size() == 1);

  // numpy itself, where it is installed (not required).
  if (std::system("python3 -c 'import numpy' > /dev/null 2>&1") == 0) {
    const auto py = test::run("python3 -c \"import numpy as np; a = np.load('" + f +
                              "'); print(a.dtype, a.shape, a.flags['C_CONTIGUOUS'])\"");
    CHECK(py.out == "float32 (700, 64) True\n");
  }

  // An error half-way leaves a valid file with the rows written before it.
  const std::string h = dir + "/half.npy";
  std::string half;
  for (int i = 0; i < 300; ++i) half += "{\"text\": \"row\"}\n";
  half += "broken\n";
  const auto rh = test::run(infer() + " --model " + demo() + " --input-format jsonl -o '" + h + "'", half);
  CHECK(rh.status == 1);
  CHECK(read_npy(h).shape == std::vector<size_t>{256, 64});

  // A model without a classification head cannot give logits.
  xlmr::ModelConfig c = test::tiny_config();
  c.num_labels = 0;
  const std::string headless = dir + "/headless.xlmr";
  xlmr::write_xlmr_file(headless, c.to_json(), test::tiny_tensors(c), "");

  const std::string m = "--model " + demo();
  check_errors({
      {m + " --output-format npy", "a\n", "npy output needs a file (--output X.npy)"},
      {m + " --output-format npy -o -", "a\n", "npy output needs a file"},
      {m + " -o '" + dir + "/x.npy' --hidden", "a\n", "--hidden cannot be written as npy"},
      {m + " -o '" + dir + "/x.npy' --pooling none", "a\n", "npy output of embeddings needs pooling"},
      {m + " -o /dev/null --output-format npy", "a\n", "'/dev/null' is not a regular file"},
      {m + " -o '" + dir + "' --output-format npy", "a\n", "is not a regular file"},
      {m + " -o '" + dir + "/no/such/dir/x.npy'", "a\n", "cannot write"},
      {m + " --npy-values logits", "a\n", "--npy-values applies to npy output only"},
      {m + " -o '" + dir + "/x.npy' --npy-values tokens", "a\n", "--npy-values must be embedding, logits or hidden"},
      {m + " --output-format csv", "a\n", "--output-format must be jsonl or npy"},
      {"--model '" + headless + "' --input-format ids --npy-values logits -o '" + dir + "/x.npy'", "0 2\n",
       "this model has no classification head"},
  });
}

TEST_CASE("xlmr-infer --npy-values hidden: every token's row, and where each line's rows start", "[cli][demo][npy]") {
  const std::string dir = test::scratch("cli-npy-hidden");
  std::string many = text_input();
  for (int i = 0; i < 600; ++i) many += "line " + std::to_string(i) + std::string(size_t(i % 40), 'z') + "\n";
  const auto ref = test::run(infer() + " --model " + demo() + " --hidden", many);
  REQUIRE(ref.status == 0);
  const auto refj = json_lines(ref.out);

  const std::string f = dir + "/h.npy";
  const auto r = test::run(infer() + " --model " + demo() + " --npy-values hidden --pooling none -o '" + f + "'", many);
  REQUIRE(r.status == 0);
  const Npy h = read_npy(f), off = read_npy(dir + "/h.offsets.npy");
  CHECK(h.descr == "'<f4'");
  CHECK(off.descr == "'<i8'");
  CHECK(off.shape_text == "(" + std::to_string(refj.size() + 1) + ",)");
  REQUIRE(off.ints.size() == refj.size() + 1);
  REQUIRE(h.shape.size() == 2);
  CHECK(h.shape[1] == 64);
  CHECK(off.ints.front() == 0);
  CHECK(uint64_t(off.ints.back()) == h.shape[0]);
  for (size_t i = 0; i < refj.size(); ++i) {
    INFO("line " << i);
    const auto& hid = refj[i]["hidden"];
    REQUIRE(off.ints[i + 1] - off.ints[i] == int64_t(hid.size()));
    for (size_t t = 0; t < hid.size(); ++t) {
      const size_t row = size_t(off.ints[i]) + t;
      CHECK(std::vector<float>(h.data.begin() + long(row * 64), h.data.begin() + long((row + 1) * 64)) ==
            floats(hid[t]));
    }
  }
  // Another extension: the offsets go next to it, the name extended.
  const std::string g = dir + "/h.bin";
  REQUIRE(test::run(infer() + " --model " + demo() + " --output-format npy --npy-values hidden -o '" + g + "'", "a\n")
              .status == 0);
  const auto one = test::run(infer() + " --model " + demo(), "a\n");
  const int64_t n = json_lines(one.out).at(0)["n_tokens"].get<int64_t>();
  CHECK(read_npy(dir + "/h.bin.offsets.npy").ints == std::vector<int64_t>{0, n});
  CHECK(read_npy(g).shape == std::vector<size_t>{size_t(n), 64});
  if (std::system("python3 -c 'import numpy' > /dev/null 2>&1") == 0) {
    const auto py = test::run("python3 -c \"import numpy as np; h = np.load('" + f + "'); o = np.load('" + dir +
                              "/h.offsets.npy'); print(h.dtype, o.dtype, len(o) - 1, o[-1] == len(h))\"");
    CHECK(py.out == "float32 int64 " + std::to_string(refj.size()) + " True\n");
  }
  // The offsets file must not be an input either.
  test::write_file(dir + "/in.offsets.npy", "a\n");
  const std::string m = "--model " + demo();
  check_errors({
      {m + " -o '" + dir + "/in.npy' --npy-values hidden '" + dir + "/in.offsets.npy'", "",
       "which this run reads: write elsewhere"},
      {m + " -o '" + dir + "/x.npy' --npy-values hidden --long window", "a\n",
       "--long window and --npy-values hidden cannot be combined"},
      {m + " -o '" + dir + "/x.npy' --hidden", "a\n", "or --npy-values hidden for every token's hidden state"},
  });
  CHECK(test::read_file(dir + "/in.offsets.npy") == "a\n");
}

TEST_CASE("xlmr-infer --progress: on stderr only, never in the records", "[cli][demo][progress]") {
  std::string input;
  for (int i = 0; i < 600; ++i) input += "progress line " + std::to_string(i) + "\n";
  const auto r = test::run(infer() + " --model " + demo() + " --progress always", input);
  REQUIRE(r.status == 0);
  const auto out = json_lines(r.out);  // every stdout line still parses
  REQUIRE(out.size() == 600);
  CHECK(out.back()["index"] == 599);
  CHECK_THAT(r.err, Contains("600 lines"));
  CHECK_THAT(r.err, Contains("lines/s"));
  CHECK_THAT(r.err, Contains("tokens/s"));
  CHECK(r.err.back() == '\n');
  // The input size is known for a file: a percentage.
  const std::string f = test::scratch("cli") + "/progress.txt";
  test::write_file(f, input);
  const auto rf = test::run(infer() + " --model " + demo() + " --progress always '" + f + "'");
  CHECK_THAT(rf.err, Contains("(100.0%)"));
  // Not a terminal: auto stays quiet, as does never.
  for (const std::string mode : {"", " --progress auto", " --progress never"}) {
    const auto q = test::run(infer() + " --model " + demo() + mode, input);
    CHECK(q.status == 0);
    CHECK(q.err.empty());
  }
  // An error after progress output still ends with the one error line.
  const auto re = test::run(infer() + " --model " + demo() + " --progress always --input-format jsonl", "oops\n");
  CHECK(re.status == 1);
  CHECK_THAT(test::lines(re.err).back(), StartsWith("xlmr-infer: error: <stdin>:1: not valid JSON"));
  check_errors({{"--model " + demo() + " --progress sometimes", "a\n", "--progress must be auto, always or never"}});
}

TEST_CASE("xlmr-infer overlaps its stages but keeps records and errors in input order", "[cli][demo][pipeline]") {
  // 700 lines: chunks of 256 lines are tokenized, run and written by
  // different threads at once; the records are those of a one-line-at-a-time
  // run, byte for byte.
  std::vector<std::string> texts;
  std::string input;
  for (int i = 0; i < 700; ++i) {
    texts.push_back(i % 7 == 0 ? "" : "line " + std::to_string(i) + std::string(size_t(i % 13), 'x') + " du soleil");
    input += texts.back() + "\n";
  }
  const auto all = test::run(infer() + " --model " + demo() + " --pooling mean --progress always", input);
  REQUIRE(all.status == 0);
  const auto out = test::lines(all.out);
  REQUIRE(out.size() == 700);
  CHECK_THAT(all.err, Contains("busy time by stage (they overlap): read "));
  const auto serial = test::run(infer() + " --model " + demo() + " --pooling mean --no-overlap", input);
  REQUIRE(serial.status == 0);
  CHECK(serial.out == all.out);
  // Records formatted by several threads, in waves of runs of records.
  const auto hid1 = test::run(infer() + " --model " + demo() + " --hidden", input);
  const auto hid3 = test::run(infer() + " --model " + demo() + " --hidden --host-threads 3", input);
  REQUIRE(hid1.status == 0);
  REQUIRE(hid3.status == 0);
  CHECK(test::lines(hid3.out).size() == 700);
  CHECK(hid3.out == hid1.out);
  // Lines tokenized by several threads (parts of a chunk joined in order),
  // plain and in window mode, where each line's windows are indexed.
  const auto tok3 = test::run(infer() + " --model " + demo() + " --pooling mean --host-threads 3", input);
  REQUIRE(tok3.status == 0);
  CHECK(tok3.out == all.out);
  const std::string win = " --long window --max-length 6 --stride 1";
  const auto win1 = test::run(infer() + " --model " + demo() + win, input);
  const auto win3 = test::run(infer() + " --model " + demo() + win + " --host-threads 3", input);
  REQUIRE(win1.status == 0);
  CHECK(win3.out == win1.out);
  check_errors({{"--model " + demo() + " --host-threads 0", "a\n", "--host-threads must be in [1, 64]"}});
  for (size_t i : {size_t(0), size_t(1), size_t(255), size_t(256), size_t(511), size_t(512), size_t(699)}) {
    INFO("line " << i);
    const auto one = test::run(infer() + " --model " + demo() + " --pooling mean", texts[i] + "\n");
    REQUIRE(one.status == 0);
    auto j = nlohmann::json::parse(test::lines(one.out).at(0));
    j["index"] = i;
    CHECK(nlohmann::json::parse(out[i]) == j);
  }

  // Bad lines in the third chunk: the first two chunks' records are all
  // written, then the one error line, for the first bad line (also when
  // the chunk's lines are tokenized in parts on several threads).
  std::string jl;
  for (int i = 0; i < 600; ++i)
    jl += i == 530 || i == 589 ? "{\"text\": 5}\n" : nlohmann::json({{"text", texts[size_t(i)]}}).dump() + "\n";
  for (const std::string threads : {"", " --host-threads 4"}) {
    INFO("options:" << threads);
    const auto bad = test::run(infer() + " --model " + demo() + " --input-format jsonl" + threads, jl);
    CHECK(bad.status == 1);
    CHECK(test::lines(bad.err) == std::vector<std::string>{"xlmr-infer: error: <stdin>:531: field \"text\" is a "
                                                           "number, not a string"});
    const auto got = test::lines(bad.out);
    REQUIRE(got.size() == 512);
    CHECK(nlohmann::json::parse(got.back())["index"] == 511);
  }

  // The same for an error of the reader (a line over --max-line-mib): it
  // waits for its chunk's turn although the reader met it a chunk early.
  std::string big = input.substr(0, input.find("line 300"));
  big += std::string((1 << 20) + 10, 'a') + "\n" + "more\n";
  const auto over = test::run(infer() + " --model " + demo() + " --max-line-mib 1", big);
  CHECK(over.status == 1);
  CHECK(test::lines(over.err) ==
        std::vector<std::string>{"xlmr-infer: error: <stdin>:301: a line longer than 1 MiB (--max-line-mib raises "
                                 "the limit)"});
  CHECK(test::lines(over.out).size() == 256);

  // An output that fails (a full disk) is reported once, from the writer's thread.
  if (::access("/dev/full", W_OK) == 0) {
    const auto full = test::run(infer() + " --model " + demo() + " -o /dev/full", input);
    CHECK(full.status == 1);
    CHECK(test::lines(full.err) == std::vector<std::string>{"xlmr-infer: error: failed writing the output"});
  }
}

namespace {

// A process written to through one pipe and read through another, the way a
// program drives xlmr-infer as a coprocess. Reads have a deadline, so a
// process that waits for more input than it was given fails the test
// instead of hanging it.
class Coprocess {
 public:
  // Standard error goes to the file err_path.
  explicit Coprocess(const std::string& cmd, const std::string& err_path = "/dev/null") {
    const std::string exec = "exec " + cmd;  // the shell becomes the command: signals reach it
    int in[2], out[2];
    REQUIRE(::pipe(in) == 0);
    REQUIRE(::pipe(out) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::dup2(in[0], STDIN_FILENO);
      ::dup2(out[1], STDOUT_FILENO);
      const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (err >= 0) ::dup2(err, STDERR_FILENO);
      for (int fd : {in[0], in[1], out[0], out[1]}) ::close(fd);
      ::execl("/bin/sh", "sh", "-c", exec.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to_ = in[1];
    from_ = out[0];
  }
  ~Coprocess() {
    close_input();
    if (from_ >= 0) ::close(from_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Coprocess(const Coprocess&) = delete;
  Coprocess& operator=(const Coprocess&) = delete;

  void write(const std::string& text) { REQUIRE(::write(to_, text.data(), text.size()) == ssize_t(text.size())); }
  // The next line written by the process, or "" when none came within `seconds`.
  std::string read_line(double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
      const size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "";
      pollfd p{from_, POLLIN, 0};
      if (::poll(&p, 1, int(left.count())) <= 0) continue;
      char chunk[4096];
      const ssize_t got = ::read(from_, chunk, sizeof chunk);
      if (got <= 0) return "";
      buf_.append(chunk, size_t(got));
    }
  }
  void close_input() {
    if (to_ >= 0) ::close(to_);
    to_ = -1;
  }
  void signal(int sig) { REQUIRE(::kill(pid_, sig) == 0); }
  // Closes the process's input and returns its exit status, or minus the
  // signal that ended it.
  int wait() {
    close_input();
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? -WTERMSIG(status) : -1000;
  }

 private:
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  std::string buf_;
};

}  // namespace

TEST_CASE("the stream's chunks: lines on CPU, tokens on CUDA and with hidden states", "[cli][pipeline]") {
  using xlmr::Device;
  using namespace xlmr::tools;
  const ChunkPlan cpu = plan_chunks(Device::cpu, false, 8192);
  CHECK(cpu.max_lines == kChunkLines);
  CHECK(cpu.max_tokens == 0);
  CHECK(next_chunk_lines(cpu, 0, 0) == kChunkLines);
  CHECK(next_chunk_lines(cpu, 5000, 10) == kChunkLines);
  // Hidden states: a chunk near 32k tokens, judged from the one before.
  const ChunkPlan hid = plan_chunks(Device::cpu, true, 8192);
  CHECK(hid.max_lines == kChunkLines);
  CHECK(hid.max_tokens == kChunkTokens);
  CHECK(next_chunk_lines(hid, 0, 0) == 64);            // first chunk: 512-token lines assumed
  CHECK(next_chunk_lines(hid, 2560, 256) == 256);      // 10-token lines: the line bound
  CHECK(next_chunk_lines(hid, 512 * 30, 30) == 64);    // 512-token lines
  CHECK(next_chunk_lines(hid, 100000, 10) == 16);      // never fewer than 16 lines
  // CUDA: short texts fill whole batches; a larger budget, larger chunks.
  const ChunkPlan gpu = plan_chunks(Device::cuda, false, 8192);
  CHECK(gpu.max_lines == kChunkLinesCuda);
  CHECK(gpu.max_tokens == kChunkTokens);
  CHECK(next_chunk_lines(gpu, 0, 0) == 64);
  CHECK(next_chunk_lines(gpu, 640, 64) == 3276);       // 10-token lines: 32,760 tokens
  CHECK(next_chunk_lines(gpu, 4 * 4096, 4096) == kChunkLinesCuda);
  CHECK(plan_chunks(Device::cuda, false, 65536).max_tokens == 131072);
  CHECK(plan_chunks(Device::cuda, true, 65536).max_tokens == kChunkTokens);  // hidden: memory first
  CHECK(next_chunk_lines(ChunkPlan{8, 1000}, 10, 10) == 8);  // a line bound under 16 holds

  // run_stream reads the chunks the plan says: a token plan runs 600 short
  // lines in fewer chunks than one of 256 lines, and the records are the same.
  std::string input;
  for (int i = 0; i < 600; ++i) input += "ligne " + std::to_string(i) + " du soleil\n";
  const std::string in_path = test::scratch("cli") + "/chunks.txt";
  {
    std::ofstream f(in_path, std::ios::binary);
    f << input;
  }
  xlmr::EngineOptions eo;
  eo.max_batch_tokens = 65536;  // a batch per chunk
  auto engine = xlmr::Engine::load(test::binary_path("demo.xlmr"), eo);
  CHECK(engine->batch_budget() == 65536);
  eo.max_batch_tokens = 100;  // under the model's 128-token limit: a batch still holds the longest input
  CHECK(xlmr::Engine::load(test::binary_path("demo.xlmr"), eo)->batch_budget() == 128);
  Preparer prep;
  prep.tok = &engine->tokenizer();
  prep.max_length = engine->max_length();
  auto run = [&](const ChunkPlan& plan, int64_t* batches) {
    LineReader reader({in_path});
    FILE* out = std::tmpfile();
    REQUIRE(out);
    Sink sink;
    sink.out = out;
    sink.E = size_t(engine->config().hidden);
    Progress progress(stderr, false, 0, false);
    StreamStats st;
    engine->profiler().reset();
    engine->profiler().enable(true);
    run_stream(*engine, prep, reader, plan, true, &sink, progress, &st);
    engine->profiler().enable(false);
    *batches = engine->profiler().stats(xlmr::Kernel::embed_layernorm).calls;
    CHECK(st.counts.lines == 600);
    std::string text(size_t(std::ftell(out)), '\0');
    std::rewind(out);
    REQUIRE(std::fread(&text[0], 1, text.size(), out) == text.size());
    std::fclose(out);
    return text;
  };
  int64_t by_lines = 0, by_tokens = 0;
  const std::string a = run(cpu, &by_lines);
  const std::string b = run(gpu, &by_tokens);
  CHECK(by_lines == 3);   // 256 + 256 + 88 lines
  CHECK(by_tokens == 2);  // 64 lines, then the other 536 (16 tokens each) in one chunk
  CHECK(test::lines(a).size() == 600);
  CHECK(a == b);
}

TEST_CASE("xlmr-infer answers each line a program writes before it waits for the next", "[cli][demo][pipeline]") {
  ::signal(SIGPIPE, SIG_IGN);  // a process that died fails a check instead of killing the tests
  for (const std::string extra : {"", " --no-overlap"}) {
    INFO("options:" << extra);
    Coprocess p(infer() + " --model " + demo() + extra);
    // One line at a time: the record comes back before the next line is written.
    for (int i = 0; i < 3; ++i) {
      p.write(std::string(kTexts[i]) + "\n");
      const std::string line = p.read_line(60);
      REQUIRE(!line.empty());
      CHECK(nlohmann::json::parse(line)["index"] == i);
    }
    // Many lines at once still come back whole and in order.
    std::string many;
    for (int i = 0; i < 300; ++i) many += "line number " + std::to_string(i) + "\n";
    p.write(many);
    for (int i = 0; i < 300; ++i) {
      const std::string line = p.read_line(60);
      REQUIRE(!line.empty());
      CHECK(nlohmann::json::parse(line)["index"] == i + 3);
    }
    CHECK(p.wait() == 0);
  }
}

TEST_CASE("xlmr-infer answers each line written to a named pipe given as INPUT before it waits for the next",
          "[cli][demo][pipeline]") {
  ::signal(SIGPIPE, SIG_IGN);
  const std::string dir = test::scratch("cli-fifo");
  const std::string fifo = dir + "/in.fifo", after = dir + "/after.txt";
  std::remove(fifo.c_str());
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  test::write_file(after, "after one\nafter two\n");  // a regular file read once the pipe ends
  Coprocess p(infer() + " --model " + demo() + " '" + fifo + "' '" + after + "'");
  // Opening the pipe's write end fails (ENXIO) until xlmr-infer has opened it
  // for reading; a deadline instead of a blocking open keeps a failed start
  // from hanging the test.
  int w = -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK)) < 0 && std::chrono::steady_clock::now() < deadline)
    ::usleep(10 * 1000);
  REQUIRE(w >= 0);
  const auto put = [w](const std::string& text) {
    REQUIRE(::write(w, text.data(), text.size()) == ssize_t(text.size()));
  };
  for (int i = 0; i < 3; ++i) {
    put(std::string(kTexts[i]) + "\n");
    const std::string line = p.read_line(60);
    REQUIRE(!line.empty());
    CHECK(nlohmann::json::parse(line)["index"] == i);
  }
  std::string many;
  for (int i = 0; i < 300; ++i) many += "line number " + std::to_string(i) + "\n";
  put(many);
  for (int i = 0; i < 300; ++i) {
    const std::string line = p.read_line(60);
    REQUIRE(!line.empty());
    CHECK(nlohmann::json::parse(line)["index"] == i + 3);
  }
  ::close(w);  // the pipe's end: the next input follows
  for (int i = 0; i < 2; ++i) {
    const std::string line = p.read_line(60);
    REQUIRE(!line.empty());
    CHECK(nlohmann::json::parse(line)["index"] == 303 + i);
  }
  CHECK(p.wait() == 0);
}

TEST_CASE("xlmr-infer stops on SIGINT or SIGTERM with every written record complete", "[cli][demo][pipeline][signals]") {
  ::signal(SIGPIPE, SIG_IGN);
  const std::string dir = test::scratch("cli-signals");
  // Waiting for input: every record is already on disk, the .npy header
  // included, and the signal ends the process at once.
  {
    const std::string f = dir + "/wait.npy";
    std::remove(f.c_str());  // a file left by an earlier run must not end the wait below
    Coprocess p(infer() + " --model " + demo() + " -o '" + f + "'");
    std::string lines;
    for (int i = 0; i < 300; ++i) lines += "line " + std::to_string(i) + "\n";
    p.write(lines);
    const size_t want = 128 + 300 * 64 * 4;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (test::read_file(f).size() != want && std::chrono::steady_clock::now() < deadline)
      ::usleep(20 * 1000);
    REQUIRE(test::read_file(f).size() == want);
    CHECK(read_npy(f).shape == std::vector<size_t>{300, 64});  // valid before the signal
    p.signal(SIGINT);
    CHECK(p.wait() == -SIGINT);
    CHECK(read_npy(f).shape == std::vector<size_t>{300, 64});
  }
  // Running: the chunk in progress is finished and written, then the process
  // ends by the signal. (On a machine fast enough to finish the input first,
  // the run is simply whole.)
  std::string big;
  for (int i = 0; i < 40000; ++i) big += "the signal test line " + std::to_string(i) + " du soleil\n";
  const std::string in = dir + "/big.txt";
  test::write_file(in, big);
  for (const int sig : {SIGINT, SIGTERM}) {
    INFO("signal " << sig);
    const std::string out = dir + "/run.jsonl", err = dir + "/run.err";
    std::remove(out.c_str());  // records appear once the stream runs, its handlers installed
    Coprocess p(infer() + " --model " + demo() + " --threads 1 '" + in + "' -o '" + out + "'", err);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (test::read_file(out).empty() && std::chrono::steady_clock::now() < deadline) ::usleep(5 * 1000);
    p.signal(sig);
    const int status = p.wait();
    const std::string text = test::read_file(out);
    REQUIRE(!text.empty());
    CHECK(text.back() == '\n');
    const auto recs = json_lines(text);
    for (size_t i = 0; i < recs.size(); ++i) REQUIRE(recs[i]["index"] == i);
    if (status == 0) {
      CHECK(recs.size() == 40000);
    } else {
      CHECK(status == -sig);
      CHECK(recs.size() % 256 == 0);  // whole chunks
      const std::string e = test::read_file(err);
      CHECK_THAT(e, Contains("xlmr-infer: stopping after the chunk in progress"));
      CHECK_THAT(e, Contains("xlmr-infer: interrupted by " + std::string(sig == SIGINT ? "SIGINT" : "SIGTERM") +
                             ": stopped after " + std::to_string(recs.size()) + " lines"));
    }
  }
}

TEST_CASE("xlmr-infer --help and --version", "[cli]") {
  const auto h = test::run(infer() + " --help");
  CHECK(h.status == 0);
  for (const char* opt :
       {"--model", "--device", "--path", "--dtype", "--attention", "--padded", "--isa", "--threads", "--batch-tokens", "--no-verify",
        "--input-format", "--text-field", "--pair-field", "--prefix", "--pair-prefix", "--max-length", "--long",
        "--stride", "--pooling", "--normalize", "--hidden", "--output", "--output-format", "--npy-values",
        "--progress", "--no-overlap", "--host-threads", "--version", "tsv-pairs", "jsonl"})
    CHECK_THAT(h.out, Contains(opt));
  for (const char* def : {"--input-format FORMAT=text", "--long MODE=truncate", "--progress WHEN=auto",
                          "--npy-values WHAT=embedding", "--text-field NAME=text", "--batch-tokens N=8192"})
    CHECK_THAT(h.out, Contains(def));
  const auto v = test::run(infer() + " --version");
  CHECK(v.status == 0);
  CHECK_THAT(v.out, Contains(std::string("xlmr-engine ") + XLMR_VERSION));
  CHECK_THAT(v.out, Contains("format version " + std::to_string(xlmr::kXlmrFormatVersion)));
}

TEST_CASE("xlmr-infer: command-line mistakes get one error line too", "[cli][errors]") {
  check_errors({
      {"--input-format ids", "0 2\n", "--model is required"},
      {"--model x --bogus", "", "--bogus"},
      {"--model x --threads many", "", "--threads"},
      {"--model x --long", "", "--long"},
  });
}

TEST_CASE("xlmr-infer reads several inputs as one stream", "[cli][demo]") {
  const std::string dir = test::scratch("cli");
  test::write_file(dir + "/a.txt", "one\ntwo\n");
  test::write_file(dir + "/b.txt", "three");  // no final line break
  test::write_file(dir + "/c.jsonl", "{\"text\": \"x\"}\n{\"text\": 1}\n");
  const auto r = test::run(infer() + " --model " + demo() + " '" + dir + "/a.txt' - '" + dir + "/b.txt'", "stdin\n");
  REQUIRE(r.status == 0);
  const auto j = json_lines(r.out);
  REQUIRE(j.size() == 4);
  for (size_t i = 0; i < 4; ++i) CHECK(j[i]["index"] == i);
  check_errors({{"--model " + demo() + " --input-format jsonl - '" + dir + "/c.jsonl'", "{\"text\": \"ok\"}\n",
                 dir + "/c.jsonl:2: field \"text\" is a number"}});
}

#if defined(__SANITIZE_ADDRESS__)
constexpr const char* kRssSlackMib = "100000";  // ASan's quarantine holds freed memory: RSS says nothing
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr const char* kRssSlackMib = "100000";
#else
constexpr const char* kRssSlackMib = "8";
#endif
#else
constexpr const char* kRssSlackMib = "8";
#endif

TEST_CASE("xlmr-infer load test: order, count and flat memory (scripts/load_test.sh)", "[cli][demo][load]") {
  const auto r = test::run("bash '" + test::source_path("scripts/load_test.sh") + "' --lines 20000 --build '" +
                           test::binary_path("") + "' --rss-slack-mib " + kRssSlackMib + " -- --threads 1");
  INFO(r.out << r.err);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Contains("OK: 20000 records in order"));
}
