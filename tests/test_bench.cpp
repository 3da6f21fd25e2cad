// xlmr-bench as a user runs it: the JSON document has the documented fields,
// --dump-workload writes the ids that were run, and a bad argument gets one
// error line. No assertion is made on any time (benchmarks measure, tests judge).
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "test_support.h"
#ifdef XLMR_HAVE_ONEDNN
#include "kernels/cpu/cpu_kernels.h"
#endif

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

std::string bench() { return "'" + test::binary_path("xlmr-bench") + "'"; }

bool have_bench() {
  struct stat st;
  if (::stat(test::binary_path("xlmr-bench").c_str(), &st) == 0) return true;
  WARN("xlmr-bench was not built (XLMR_BENCHMARKS=OFF?): skipped");
  return false;
}

struct BenchRun {
  test::RunResult r;
  nlohmann::json doc;  // the JSON it wrote to standard output
};

// Runs xlmr-bench with `args`, which must send the JSON to standard output
// (--json -); the run must succeed.
BenchRun bench_json(const std::string& args) {
  BenchRun b{test::run(bench() + " " + args), {}};
  INFO(b.r.err);
  REQUIRE(b.r.status == 0);
  b.doc = nlohmann::json::parse(b.r.out);
  return b;
}

}  // namespace

TEST_CASE("xlmr-bench --json - writes one JSON document with the documented fields", "[bench][cli]") {
  if (!have_bench()) return;
  const std::string dump = test::scratch("bench") + "/ids.json";
  std::remove(dump.c_str());
  const auto [r, doc] = bench_json("--synthetic small --workload uniform:8x2 --iters 1 --warmup 0 --min-time 0"
                                   " --path reference --json - --dump-workload '" + dump + "'");
  INFO(r.err);
  CHECK_THAT(r.err, Contains("summary: uniform:8x2 | reference padded f32"));  // the report went to stderr

  for (const char* key : {"cpu", "cores", "threads", "isa"}) CHECK(doc["machine"].contains(key));
  CHECK(doc["gemm_peak_gflops"].contains("f32"));
  CHECK(doc["gemm_peak_gflops"].contains("bf16"));
  CHECK(doc["gemm_peak_gflops"]["int8"].is_null());  // measured only for int8 runs
  CHECK(doc.contains("mem_bandwidth_gbs"));
  REQUIRE(doc["weight_bytes"].is_number());
  // small: 4 layers of E256/F1024 (+ head, positions, LayerNorms), f32
  CHECK(doc["weight_bytes"].get<double>() > 4 * 4.0 * (4 * 256 * 256 + 2 * 256 * 1024));

  REQUIRE(doc["runs"].size() == 1);
  const auto& run = doc["runs"][0];
  for (const char* key : {"workload", "path", "layout", "dtype", "device", "threads", "n_seqs", "n_tokens",
                          "padded_tokens", "iters", "latency_ms", "tokens_per_s", "gemm_gflops",
                          "gemm_fraction_of_peak", "non_gemm_share", "kernels"})
    CHECK(run.contains(key));
  CHECK(run["workload"] == "uniform:8x2");
  CHECK(run["path"] == "reference");
  CHECK(run["layout"] == "padded");
  CHECK(run["dtype"] == "f32");
  CHECK(run["device"] == "cpu");
  CHECK(run["n_seqs"] == 2);
  CHECK(run["n_tokens"] == 16);
  CHECK(run["padded_tokens"] == 16);
  CHECK(run["iters"] == 1);
  for (const char* key : {"mean", "p50", "p99", "min"}) CHECK(run["latency_ms"][key].get<double>() > 0);
  CHECK(run["tokens_per_s"].get<double>() > 0);
  CHECK(run["kernels"].is_array());
  for (const auto& k : run["kernels"])
    for (const char* key : {"name", "calls", "total_ms", "mean_us", "share", "gflops", "gbs"}) CHECK(k.contains(key));

  // --dump-workload: the ids that were run, <s> r... </s>
  const auto ids = test::read_json(dump);
  REQUIRE(ids["workloads"].size() == 1);
  CHECK(ids["workloads"][0]["name"] == "uniform:8x2");
  REQUIRE(ids["workloads"][0]["seqs"].size() == 2);
  for (const auto& s : ids["workloads"][0]["seqs"]) {
    REQUIRE(s.size() == 8);
    CHECK(s[0] == 0);
    CHECK(s[7] == 2);
    for (size_t i = 1; i < 7; ++i) CHECK(s[i].get<int>() >= 4);
  }
}

TEST_CASE("xlmr-bench --attention both: one bf16 or int8 run per attention precision, and their ratio",
          "[bench][cli]") {
  if (!have_bench()) return;
  if (!__builtin_cpu_supports("avx512bw")) {
    WARN("no AVX-512 on this CPU: no bf16 runs to compare");
    return;
  }
  const auto [r, doc] = bench_json("--synthetic small --workload uniform:40x2 --iters 1 --warmup 0 --min-time 0"
                                   " --path fused --layout ragged --dtype bf16,int8 --attention both --json -");
  INFO(r.err);
  REQUIRE(doc["runs"].size() >= 2);
  CHECK(doc["runs"][0]["attention"] == "f32");
  CHECK_THAT(r.err, Contains("fused ragged bf16 attn-f32"));
  CHECK_THAT(r.err, Contains("fused ragged int8 attn-f32"));
#ifdef XLMR_HAVE_ONEDNN
  const std::string unit = xlmr::cpu::to_string(xlmr::cpu::best_bf16_unit(xlmr::cpu::Isa::avx512, 32));
#else
  const std::string unit = "none";  // no fused CPU path in this build
#endif
  if (unit == "none") {  // the bf16-attention runs are skipped with a warning, not failed
    CHECK(doc["runs"].size() == 2);
    CHECK_THAT(r.err, Contains("needs AVX512_BF16 or AMX-BF16"));
    return;
  }
  REQUIRE(doc["runs"].size() == 4);  // bf16 GEMMs, then int8, each with f32 then bf16 attention
  for (int i : {1, 3}) {
    CHECK(doc["runs"][i]["attention"] == "bf16");
    CHECK_THAT(doc["runs"][i]["backend"].get<std::string>(), Contains("bf16 attention on " + unit));
  }
  CHECK_THAT(doc["runs"][3]["backend"].get<std::string>(), Contains("int8"));
  CHECK_THAT(r.err, Contains("bf16 attention         fused ragged bf16 attn-bf16 / fused ragged bf16 attn-f32"));
  CHECK_THAT(r.err, Contains("bf16 attention         fused ragged int8 attn-bf16 / fused ragged int8 attn-f32"));
  // and the kernel alone, both variants called in turn
  CHECK_THAT(r.err, Contains("== attention kernel alone"));
  REQUIRE(doc["attention_kernel"].size() == 1);
  const auto& k = doc["attention_kernel"][0];
  CHECK(k["workload"] == "uniform:40x2");
  CHECK(k["n_tokens"] == 80);
  CHECK(k["pairs"].get<int>() >= 1);
  CHECK(k["unit"] == unit);
  for (const char* key : {"f32_ms", "bf16_ms", "f32_gflops", "bf16_gflops", "ratio"}) CHECK(k[key].get<double>() > 0);
}

TEST_CASE("xlmr-bench --dtype f32,int8: both runs in one process, and their ratio", "[bench][cli][int8]") {
  if (!have_bench()) return;
  const auto [r, doc] = bench_json("--synthetic small --workload uniform:40x2 --iters 1 --warmup 0 --min-time 0"
                                   " --path fused --layout ragged --dtype f32,int8 --json -");
  INFO(r.err);
  REQUIRE(doc["runs"].size() == 2);
  CHECK(doc["runs"][0]["dtype"] == "f32");
  CHECK(doc["runs"][1]["dtype"] == "int8");
  CHECK_THAT(doc["runs"][1]["backend"].get<std::string>(), Contains("int8"));
  // int8 runs are set against an int8 peak (uint8 x int8 -> int32), measured in the same process.
  REQUIRE(doc["gemm_peak_gflops"]["int8"].is_number());
  CHECK(doc["gemm_peak_gflops"]["int8"].get<double>() > 0);
  REQUIRE(doc["runs"][1]["gemm_fraction_of_peak"].is_number());
  CHECK(doc["runs"][1]["gemm_fraction_of_peak"].get<double>() > 0);
  CHECK_THAT(r.err, Contains(", int8 "));  // the peaks line
  CHECK_THAT(r.err, Contains("int8/f32               fused ragged int8      / fused ragged f32"));
}

TEST_CASE("xlmr-bench --synthetic xl --layers 1: XL's shape, pre-LayerNorm, one layer", "[bench][cli]") {
  if (!have_bench()) return;
  const auto [r, doc] = bench_json("--synthetic xl --layers 1 --workload uniform:4x1 --iters 1 --warmup 0"
                                   " --min-time 0 --path fused --layout ragged --dtype f32 --json - --quiet");
  INFO(r.err);
  CHECK(doc["model"]["hidden"] == 2560);
  CHECK(doc["model"]["heads"] == 32);
  CHECK(doc["model"]["ffn"] == 10240);
  CHECK(doc["model"]["layers"] == 1);
  REQUIRE(doc["runs"].size() == 1);
  CHECK(doc["runs"][0]["n_tokens"] == 4);
}

TEST_CASE("xlmr-bench --tokenizer: the saved synthetic model carries it, and xlmr-infer runs text on it",
          "[bench][cli]") {
  if (!have_bench()) return;
  const std::string m = test::scratch("bench") + "/synthetic-tok.xlmr";
  const std::string spm = test::source_path("scripts/demo/model/sentencepiece.bpe.model");
  const auto r = test::run(bench() + " --synthetic small --layers 1 --tokenizer '" + spm + "' --save-synthetic '" + m +
                           "' --workload uniform:4x1 --iters 1 --warmup 0 --min-time 0 --path fused --layout ragged "
                           "--dtype f32 --quiet");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto inf = test::run("'" + test::binary_path("xlmr-infer") + "' --model '" + m + "'", "Hello world\n");
  INFO(inf.err);
  REQUIRE(inf.status == 0);
  const auto j = nlohmann::json::parse(test::lines(inf.out).at(0));
  CHECK(j["n_tokens"].get<int>() > 2);
  CHECK(j["embedding"].size() == 256);
}

TEST_CASE("xlmr-bench: bad arguments get one error line and exit 1", "[bench][cli][errors]") {
  if (!have_bench()) return;
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"--synthetic small --workload bogus", "--workload 'bogus': unknown workload"},
      {"--synthetic small --workload uniform:8", "expected uniform:LxB"},
      {"--synthetic small --workload lognormal:0", "the sequence count must be"},
      {"--synthetic small --workload file:/nonexistent.txt", "cannot open '/nonexistent.txt'"},
      {"--synthetic small --workload uniform:600x1", "exceeds the model's limit of 512"},
      {"--synthetic huge", "--synthetic must be small, base, large, xl or xxl"},
      {"--synthetic small --layers -1", "--layers must be positive"},
      {"--synthetic small --gpu -1", "--gpu must be 0 or more"},
      {"--synthetic small --gpu 1", "--gpu goes with --device cuda"},
      {"--model x.xlmr --layers 2", "--layers goes with --synthetic"},
      {"--synthetic small --path slow", "--path must be reference, fused or both"},
      {"--synthetic small --iters 0", "--iters must be >= 1"},
      {"--synthetic small --attention fp8", "--attention must be f32, bf16 or both"},
      {"--synthetic small --path reference --dtype bf16", "nothing to run"},
      {"--synthetic small --dtype f32,int4", "--dtype must be f32, bf16, both, f16 or int8, or a comma-separated list"},
      {"--synthetic small --dtype int8 --device cuda", "int8 GEMMs run on the CPU's fused path"},
      {"--model /nonexistent.xlmr", "cannot open model file"},
      {"--workload tutorial-short", "give a model"},
      {"--synthetic small --no-such-option", "--no-such-option"},
      {"--synthetic small --tokenizer /nonexistent.model", "cannot open --tokenizer '/nonexistent.model'"},
      {"--model x.xlmr --tokenizer t.model", "--tokenizer goes with --synthetic"},
  };
  for (const Case& c : cases) {
    INFO(c.args);
    const auto r = test::run(bench() + " " + c.args + " --quiet");
    CHECK(r.status == 1);
    CHECK_THAT(r.err, StartsWith("xlmr-bench: error: "));
    CHECK_THAT(r.err, Contains(c.message));
    CHECK(test::lines(r.err).size() == 1);
    CHECK(r.out.empty());
  }
}
