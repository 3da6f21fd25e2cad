// xlmr-bench: times whole encode calls of the engine on reproducible
// workloads, in every requested combination of compute path (fused or the
// reference "slow path"), layout (ragged or padded) and GEMM precision, and
// puts the numbers next to what the machine can do, measured in the same
// process: the oneDNN matmul peak and the memory read bandwidth.
//
// Each run loads its own Engine with a token budget that holds the whole
// workload as one batch, warms it up, times un-profiled encode_ids calls
// (latency and tokens/s come from these only), then runs a shorter profiled
// pass for the per-kernel table. docs/bench.md explains every column.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "benchmarks/kernel_timing.h"
#include "benchmarks/machine.h"
#include "benchmarks/synthetic.h"
#include "benchmarks/workloads.h"
#include "engine/cpu_threads.h"
#include "engine/engine.h"
#include "kernels/cuda/device.h"
#include "tokenizer/tokenizer.h"
#include "weights/xlmr_file.h"

namespace {

using json = nlohmann::ordered_json;  // keys in the documented order
using Clock = std::chrono::steady_clock;

constexpr size_t kBandwidthBytes = size_t(1) << 30;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string strf(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < int(sizeof buf)) return std::string(buf, size_t(std::max(n, 0)));
  std::string s(size_t(n) + 1, '\0');
  va_start(ap, fmt);
  std::vsnprintf(&s[0], s.size(), fmt, ap);
  va_end(ap);
  s.resize(size_t(n));
  return s;
}

// "1 seq", "2 seqs"
std::string count(int64_t n, const char* noun) { return strf("%lld %s%s", (long long)n, noun, n == 1 ? "" : "s"); }

std::string fmt_ms(double ms) { return ms < 1 ? strf("%.3f", ms) : ms < 100 ? strf("%.2f", ms) : strf("%.1f", ms); }

std::string fmt_bytes(double b) {
  if (b >= 1e9) return strf("%.2f GB", b * 1e-9);
  if (b >= 1e6) return strf("%.1f MB", b * 1e-6);
  return strf("%.1f kB", b * 1e-3);
}

json opt_json(const std::optional<double>& v) { return v && std::isfinite(*v) ? json(*v) : json(nullptr); }

// ---- the temporary synthetic model ---------------------------------------

// The path of a temporary model file, removed at exit and on a terminating
// signal (Ctrl-C, kill, a closed pipe).
// A signal handler can only reach it through a static buffer.
char g_temp_model[4096];

void remove_temp_model() {
  if (g_temp_model[0]) {
    ::unlink(g_temp_model);
    g_temp_model[0] = '\0';
  }
}

void on_signal(int sig) {
  if (g_temp_model[0]) ::unlink(g_temp_model);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

struct TempModelGuard {
  ~TempModelGuard() { remove_temp_model(); }
};

std::string make_temp_model_path() {
  const char* dir = std::getenv("TMPDIR");
  std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/xlmr-bench-XXXXXX.xlmr";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  const int fd = ::mkstemps(buf.data(), 5);
  XLMR_CHECK(fd >= 0, "cannot create a temporary file in '" + std::string(dir && *dir ? dir : "/tmp") +
                          "': " + std::strerror(errno));
  ::close(fd);
  XLMR_CHECK(std::strlen(buf.data()) < sizeof g_temp_model, "temporary file path too long");
  std::strcpy(g_temp_model, buf.data());
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) std::signal(sig, on_signal);
  return buf.data();
}

// ---- what a run is --------------------------------------------------------

struct Combo {
  xlmr::Path path = xlmr::Path::fused;
  bool padded = false;
  xlmr::Precision dtype = xlmr::Precision::f32;
  // Fused path: attention's products, when --attention names one (CPU with
  // bf16 or int8 GEMMs: f32 or bf16; CUDA: f32, the plain kernel, or the
  // GEMMs' type, tensor cores). Unset: the engine's default.
  std::optional<xlmr::Precision> attention;

  const char* path_name() const { return path == xlmr::Path::fused ? "fused" : "reference"; }
  const char* layout_name() const { return padded ? "padded" : "ragged"; }
  const char* dtype_name() const { return xlmr::to_string(dtype); }
  std::string label() const {
    std::string s = strf("%s %s %s", path_name(), layout_name(), dtype_name());
    if (attention) s += strf(" attn-%s", xlmr::to_string(*attention));
    return s;
  }
};

struct KernelRow {
  std::string name;
  bool gemm = false;
  double calls = 0;     // per forward
  double ms = 0;        // per forward
  double mean_us = 0;   // per call
  double share = 0;     // of the profiled forward's wall time
  std::optional<double> gflops, gbs;
};

struct RunResult {
  std::string workload;
  Combo combo;
  std::string device, backend;
  int threads = 0;
  int64_t n_seqs = 0, n_tokens = 0, padded_tokens = 0;  // padded_tokens: 0 for ragged
  int warmup = 0, iters = 0, profiled_iters = 0;
  double lat_mean = 0, lat_p50 = 0, lat_p99 = 0, lat_min = 0;  // ms
  double tokens_per_s = 0;
  std::optional<double> gemm_gflops, gemm_fraction, non_gemm_share;
  double outside_ms = 0, outside_share = 0, profiled_ms = 0;  // per forward
  std::vector<KernelRow> kernels;
  double gemm_flops = 0;                  // per forward, useful (no padding), from the model's shapes
  std::optional<double> weight_stream_ms;  // the weights at this precision / read bandwidth
  xlmr::BackendStats stats;                // CUDA graph replays, overlapped uploads
};

// Machine and model facts every run is set against.
struct Baseline {
  bench::MachineInfo machine;
  int threads = 0;
  std::optional<double> peak_f32, peak_bf16;  // GFLOP/s
  std::optional<double> peak_int8;            // GOP/s, measured when an int8 run is asked for
  std::optional<double> bandwidth;            // GB/s
  size_t bandwidth_bytes = 0;
  double weight_bytes = 0;                    // file bytes, all tensors but the word embeddings
  double weight_bytes_f32 = 0, weight_bytes_bf16 = 0;  // the same with the matrices at that precision

  std::optional<double> peak(xlmr::Precision p) const {
    if (p == xlmr::Precision::int8) return peak_int8;
    return p == xlmr::Precision::bf16 ? peak_bf16 : peak_f32;
  }
  std::optional<double> stream_ms(xlmr::Precision p) const {
    if (!bandwidth) return std::nullopt;
    // The matrices' share at 4, 2 or 1 bytes a value: f32 - bf16 bytes is half of it in f32.
    const double bytes = p == xlmr::Precision::bf16   ? weight_bytes_bf16
                         : p == xlmr::Precision::int8 ? weight_bytes_f32 - 1.5 * (weight_bytes_f32 - weight_bytes_bf16)
                                                      : weight_bytes_f32;
    return bytes / (*bandwidth * 1e9) * 1e3;
  }
};

double percentile(std::vector<double> v, double q) {  // nearest rank
  std::sort(v.begin(), v.end());
  const size_t rank = size_t(std::ceil(q * double(v.size())));
  return v[std::min(v.size(), std::max<size_t>(rank, 1)) - 1];
}

// GEMM work of one forward over n tokens: QKV, out-proj, FFN1, FFN2.
double gemm_flops(const xlmr::ModelConfig& c, int64_t n_tokens) {
  const double E = c.hidden, F = c.ffn;
  return double(n_tokens) * c.layers * 2.0 * (3 * E * E + E * E + 2 * E * F);
}

RunResult time_run(xlmr::Engine& engine, const bench::Workload& w, const Combo& combo, const Baseline& base,
                   int warmup, int iters, double min_time) {
  const xlmr::EncodeOptions enc;
  RunResult r;
  r.workload = w.name;
  r.combo = combo;
  r.backend = engine.describe().empty() ? engine.backend_name() : engine.describe();
  r.threads = base.threads;
  r.n_seqs = int64_t(w.seqs.size());
  r.n_tokens = w.n_tokens();
  r.padded_tokens = combo.padded ? w.padded_tokens() : 0;
  r.warmup = warmup;
  r.gemm_flops = gemm_flops(engine.config(), r.n_tokens);

  xlmr::Profiler& prof = engine.profiler();
  prof.enable(false);
  for (int i = 0; i < warmup; ++i) engine.encode_ids(w.seqs, enc);

  // Timed pass, un-profiled: at least `iters` calls and `min_time` seconds.
  std::vector<double> lat;
  const Clock::time_point start = Clock::now();
  while (int(lat.size()) < iters || seconds_since(start) < min_time) {
    const Clock::time_point t0 = Clock::now();
    engine.encode_ids(w.seqs, enc);
    lat.push_back(seconds_since(t0) * 1e3);
  }
  r.iters = int(lat.size());
  double sum = 0;
  for (double x : lat) sum += x;
  r.lat_mean = sum / double(lat.size());
  r.lat_p50 = percentile(lat, 0.50);
  r.lat_p99 = percentile(lat, 0.99);
  r.lat_min = *std::min_element(lat.begin(), lat.end());
  r.tokens_per_s = double(r.n_tokens) / (r.lat_mean * 1e-3);

  // Profiled pass: about half of min_time, between 1 and `iters` calls.
  const double want = 0.5 * min_time / (r.lat_mean * 1e-3);
  r.profiled_iters = int(std::clamp(std::ceil(want), 1.0, double(iters)));
  prof.reset();
  prof.enable(true);
  const Clock::time_point p0 = Clock::now();
  for (int i = 0; i < r.profiled_iters; ++i) engine.encode_ids(w.seqs, enc);
  const double wall = seconds_since(p0);
  prof.enable(false);

  const double np = r.profiled_iters;
  r.profiled_ms = wall * 1e3 / np;
  double kernel_s = 0, gemm_s = 0, gemm_fl = 0;
  for (int k = 0; k < xlmr::Profiler::kKernels; ++k) {
    const auto kernel = static_cast<xlmr::Kernel>(k);
    const xlmr::KernelStats& st = prof.stats(kernel);
    if (st.calls == 0) continue;
    KernelRow row;
    row.name = xlmr::kernel_name(kernel);
    row.gemm = xlmr::kernel_is_gemm(kernel);
    row.calls = double(st.calls) / np;
    row.ms = st.seconds * 1e3 / np;
    row.mean_us = st.seconds / double(st.calls) * 1e6;
    row.share = wall > 0 ? st.seconds / wall : 0;
    if (st.seconds > 0) {
      if (st.flops > 0) row.gflops = st.flops / st.seconds * 1e-9;
      if (st.bytes > 0) row.gbs = st.bytes / st.seconds * 1e-9;
    }
    kernel_s += st.seconds;
    if (row.gemm) {
      gemm_s += st.seconds;
      gemm_fl += st.flops;
    }
    r.kernels.push_back(row);
  }
  if (!r.kernels.empty() && wall > 0) {
    r.outside_ms = std::max(0.0, wall - kernel_s) * 1e3 / np;
    r.outside_share = std::max(0.0, wall - kernel_s) / wall;
    r.non_gemm_share = 1.0 - gemm_s / wall;
    if (gemm_s > 0 && gemm_fl > 0) r.gemm_gflops = gemm_fl / gemm_s * 1e-9;
  }
  return r;
}

// ---- human-readable output ------------------------------------------------

void print_table(FILE* out, const RunResult& r) {
  std::fprintf(out, "\n== %s | %s | %s, %s | %s\n", r.workload.c_str(), r.combo.label().c_str(), r.device.c_str(),
               count(r.threads, "thread").c_str(), r.backend.c_str());
  if (r.kernels.empty()) {
    std::fprintf(out, "   (no per-kernel timings: this backend records nothing in the profiler)\n");
  } else {
    std::fprintf(out, "   per forward, from a profiled pass of %d call%s:\n", r.profiled_iters,
                 r.profiled_iters == 1 ? "" : "s");
    std::fprintf(out, "   %-22s %9s %10s %10s %7s %16s\n", "kernel", "calls", "total ms", "mean us", "% fwd",
                 "throughput");
    for (const KernelRow& k : r.kernels) {
      const std::string calls = k.calls == std::floor(k.calls) ? strf("%.0f", k.calls) : strf("%.1f", k.calls);
      std::string rate = "-";
      if (k.gflops) rate = strf("%.1f GFLOP/s", *k.gflops);
      else if (k.gbs) rate = strf("%.2f GB/s", *k.gbs);
      std::fprintf(out, "   %-22s %9s %10s %10.1f %6.1f%% %16s\n", k.name.c_str(), calls.c_str(), fmt_ms(k.ms).c_str(),
                   k.mean_us, 100 * k.share, rate.c_str());
    }
    std::fprintf(out, "   %-22s %9s %10s %10s %6.1f%%\n", "(outside kernels)", "", fmt_ms(r.outside_ms).c_str(), "",
                 100 * r.outside_share);
    std::fprintf(out, "   %-22s %9s %10s %10s %6.1f%%\n", "forward (profiled)", "", fmt_ms(r.profiled_ms).c_str(), "",
                 100.0);
  }
  std::string line = strf("summary: %s | %s | %s | %s, %s", r.workload.c_str(), r.combo.label().c_str(),
                          count(r.threads, "thread").c_str(), count(r.n_seqs, "seq").c_str(),
                          count(r.n_tokens, "token").c_str());
  if (r.padded_tokens) line += strf(" (%lld padded)", (long long)r.padded_tokens);
  line += strf(" | latency ms mean %s p50 %s p99 %s (%s) | %.0f tokens/s", fmt_ms(r.lat_mean).c_str(),
               fmt_ms(r.lat_p50).c_str(), fmt_ms(r.lat_p99).c_str(), count(r.iters, "iter").c_str(), r.tokens_per_s);
  line += r.gemm_gflops ? strf(" | GEMM %.1f GFLOP/s", *r.gemm_gflops) : std::string(" | GEMM -");
  if (r.gemm_fraction) line += strf(" = %.0f%% of peak", 100 * *r.gemm_fraction);
  line += r.non_gemm_share ? strf(" | non-GEMM %.1f%%", 100 * *r.non_gemm_share) : std::string(" | non-GEMM -");
  if (r.stats.graph_captures || r.stats.graph_replays || r.stats.prefetched_batches)
    line += strf(" | CUDA graphs %llu captured, %llu replays; %llu overlapped uploads",
                 (unsigned long long)r.stats.graph_captures, (unsigned long long)r.stats.graph_replays,
                 (unsigned long long)r.stats.prefetched_batches);
  std::fprintf(out, "%s\n", line.c_str());
}

struct Comparison {
  std::string workload, what, numerator, denominator;
  double ratio = 0;
  std::string detail;
};

// The run of `workload` with this path, layout and dtype: with `attention`,
// the one that forced that attention precision; without, the first.
const RunResult* find_run(const std::vector<RunResult>& runs, const std::string& workload, xlmr::Path path,
                          bool padded, xlmr::Precision dtype, std::optional<xlmr::Precision> attention = {}) {
  for (const RunResult& r : runs)
    if (r.workload == workload && r.combo.path == path && r.combo.padded == padded && r.combo.dtype == dtype &&
        (!attention || r.combo.attention == attention))
      return &r;
  return nullptr;
}

// A run is bound by streaming the weights when its GEMM work, done at the
// measured peak, would take less time than reading the weights once.
bool weight_bound(const RunResult& r, const Baseline& base) {
  if (r.n_seqs == 1) return true;
  const auto peak = base.peak(r.combo.dtype);
  const auto stream = base.stream_ms(r.combo.dtype);
  return peak && stream && r.gemm_flops / (*peak * 1e9) * 1e3 < *stream;
}

std::vector<Comparison> compare(const std::vector<RunResult>& runs, const std::vector<bench::Workload>& workloads,
                                const Baseline& base, bool cuda) {
  using xlmr::Path;
  using xlmr::Precision;
  std::vector<Comparison> out;
  for (const bench::Workload& w : workloads) {
    const RunResult* ref = find_run(runs, w.name, Path::reference, true, Precision::f32);
    for (const RunResult& r : runs) {
      if (r.workload != w.name || r.combo.path != Path::fused || !ref) continue;
      out.push_back({w.name, "fastpath speed-up", r.combo.label(), ref->combo.label(),
                     r.tokens_per_s / ref->tokens_per_s, ""});
    }
    for (Precision p : {Precision::f32, Precision::bf16, Precision::int8}) {
      const RunResult* rag = find_run(runs, w.name, Path::fused, false, p);
      const RunResult* pad = find_run(runs, w.name, Path::fused, true, p);
      if (rag && pad)
        out.push_back({w.name, "sparsity", rag->combo.label(), pad->combo.label(), rag->tokens_per_s / pad->tokens_per_s,
                       strf("padding is %.0f%% of the padded batch",
                            100.0 * (1.0 - double(w.n_tokens()) / double(w.padded_tokens())))});
    }
    for (bool padded : {false, true}) {
      const RunResult* b = find_run(runs, w.name, Path::fused, padded, Precision::bf16);
      const RunResult* f = find_run(runs, w.name, Path::fused, padded, Precision::f32);
      if (b && f) out.push_back({w.name, "bf16/f32", b->combo.label(), f->combo.label(), b->tokens_per_s / f->tokens_per_s, ""});
      const RunResult* q = find_run(runs, w.name, Path::fused, padded, Precision::int8);
      if (q && f)
        out.push_back({w.name, "int8/f32", q->combo.label(), f->combo.label(), q->tokens_per_s / f->tokens_per_s,
                       "dynamic quantization: outputs differ from f32 (docs/BENCHMARKS.md)"});
      for (Precision p : {Precision::bf16, Precision::f16, Precision::int8}) {
        const Precision p16 = p == Precision::int8 ? Precision::bf16 : p;  // int8 GEMMs: bf16 attention
        const RunResult* ab = find_run(runs, w.name, Path::fused, padded, p, p16);
        const RunResult* af = find_run(runs, w.name, Path::fused, padded, p, Precision::f32);
        if (ab && af)
          out.push_back({w.name, strf("%s attention", xlmr::to_string(p16)), ab->combo.label(), af->combo.label(),
                         ab->tokens_per_s / af->tokens_per_s,
                         cuda ? strf("tensor cores against the plain fp32 kernel, both with %s GEMMs",
                                     xlmr::to_string(p))
                              : strf("bf16 products (AMX or AVX512_BF16) against fp32 FMAs, both with %s GEMMs",
                                     xlmr::to_string(p))});
      }
    }
    for (const RunResult& r : runs) {
      if (r.workload != w.name || !r.weight_stream_ms || !weight_bound(r, base)) continue;
      out.push_back({w.name, "latency/weight-stream", r.combo.label(), "weights stream time", r.lat_mean / *r.weight_stream_ms,
                     strf("%s ms vs %s ms", fmt_ms(r.lat_mean).c_str(), fmt_ms(*r.weight_stream_ms).c_str())});
    }
  }
  return out;
}

void print_comparisons(FILE* out, const std::vector<Comparison>& cmp, const std::vector<bench::Workload>& workloads) {
  std::fprintf(out, "\n== comparison (ratios of tokens/s; latency/weight-stream: mean latency over the time to read the weights once)\n");
  if (cmp.empty()) {
    std::fprintf(out, "   (nothing to compare: run more than one path, layout or dtype)\n");
    return;
  }
  for (const bench::Workload& w : workloads) {
    bool header = false;
    for (const Comparison& c : cmp) {
      if (c.workload != w.name) continue;
      if (!header) {
        std::fprintf(out, "   %s (%s, %s)\n", w.name.c_str(), count(int64_t(w.seqs.size()), "seq").c_str(),
                     count(w.n_tokens(), "token").c_str());
        header = true;
      }
      std::string line = strf("     %-22s %-22s / %-22s %7.2fx", c.what.c_str(), c.numerator.c_str(),
                              c.denominator.c_str(), c.ratio);
      if (!c.detail.empty()) line += "   (" + c.detail + ")";
      std::fprintf(out, "%s\n", line.c_str());
    }
  }
}

// ---- JSON -----------------------------------------------------------------

json run_json(const RunResult& r) {
  json kernels = json::array();
  for (const KernelRow& k : r.kernels)
    kernels.push_back({{"name", k.name},
                       {"calls", k.calls == std::floor(k.calls) ? json(int64_t(k.calls)) : json(k.calls)},
                       {"total_ms", k.ms},
                       {"mean_us", k.mean_us},
                       {"share", k.share},
                       {"gflops", opt_json(k.gflops)},
                       {"gbs", opt_json(k.gbs)}});
  return {{"workload", r.workload},
          {"path", r.combo.path_name()},
          {"layout", r.combo.layout_name()},
          {"dtype", r.combo.dtype_name()},
          {"attention", r.combo.attention ? json(xlmr::to_string(*r.combo.attention)) : json(nullptr)},
          {"device", r.device},
          {"backend", r.backend},
          {"threads", r.threads},
          {"n_seqs", r.n_seqs},
          {"n_tokens", r.n_tokens},
          {"padded_tokens", r.padded_tokens ? json(r.padded_tokens) : json(nullptr)},
          {"warmup", r.warmup},
          {"iters", r.iters},
          {"profiled_iters", r.profiled_iters},
          {"latency_ms", {{"mean", r.lat_mean}, {"p50", r.lat_p50}, {"p99", r.lat_p99}, {"min", r.lat_min}}},
          {"tokens_per_s", r.tokens_per_s},
          {"graph_captures", r.stats.graph_captures},
          {"graph_replays", r.stats.graph_replays},
          {"prefetched_batches", r.stats.prefetched_batches},
          {"gemm_gflops", opt_json(r.gemm_gflops)},
          {"gemm_fraction_of_peak", opt_json(r.gemm_fraction)},
          {"non_gemm_share", opt_json(r.non_gemm_share)},
          {"outside_kernels_share", r.kernels.empty() ? json(nullptr) : json(r.outside_share)},
          {"weight_stream_ms", opt_json(r.weight_stream_ms)},
          {"kernels", kernels}};
}

void print_attention_timings(FILE* out, const std::vector<bench::AttentionKernelTiming>& ts) {
  if (ts.empty()) return;
  std::fprintf(out,
               "\n== attention kernel alone (random Q, K, V at each workload's lengths; f32 and bf16 products "
               "called in turn; medians)\n");
  for (const auto& t : ts)
    std::fprintf(out,
                 "   %-22s %3d seqs %6lld tokens | f32 %s ms %6.1f GFLOP/s | bf16 (%s) %s ms %6.1f GFLOP/s | %5.2fx  "
                 "(%d pairs)\n",
                 t.workload.c_str(), t.n_seqs, static_cast<long long>(t.n_tokens), fmt_ms(t.f32_ms).c_str(),
                 t.f32_gflops(), t.unit.c_str(), fmt_ms(t.bf16_ms).c_str(), t.bf16_gflops(), t.ratio(), t.pairs);
}

// ---- options --------------------------------------------------------------

struct Args {
  std::string model, synthetic, device = "cpu", path = "both", layout = "both", dtype = "f32", attention = "auto";
  std::vector<std::string> workloads;
  int threads = 0, warmup = 2, iters = 10, vocab = 0, layers = 0, gpu = 0;
  double min_time = 1.0;
  uint64_t seed = 0;
  std::string json_out, dump_workload, save_synthetic, tokenizer;
  std::string cuda_graphs = "on";
  bool quiet = false;
};

std::vector<std::string> expand(const std::string& value, const char* option, std::vector<std::string> choices) {
  if (value == "both") return choices;
  for (const std::string& c : choices)
    if (value == c) return {c};
  XLMR_THROW(std::string(option) + " must be " + choices[0] + ", " + choices[1] + " or both, not '" + value + "'");
}

// The combinations to run, in report order (the baseline first), and notes on
// what was folded or left out.
std::vector<Combo> plan_combos(const Args& a, std::vector<std::string>* notes) {
  const auto paths = expand(a.path, "--path", {"reference", "fused"});
  const auto layouts = expand(a.layout, "--layout", {"ragged", "padded"});
  // "both" means f32 and bf16; f16 (CUDA) and int8 (CPU) are named, alone or
  // in a comma-separated list ("f32,int8").
  std::vector<std::string> dtypes;
  for (size_t at = 0; at <= a.dtype.size();) {
    const size_t comma = std::min(a.dtype.find(',', at), a.dtype.size());
    const std::string d = a.dtype.substr(at, comma - at);
    at = comma + 1;
    if (d == "f16" || d == "int8") {
      dtypes.push_back(d);
      continue;
    }
    XLMR_CHECK(d == "f32" || d == "bf16" || d == "both",
               "--dtype must be f32, bf16, both, f16 or int8, or a comma-separated list of them, not '" + d + "'");
    for (const std::string& e : expand(d, "--dtype", {"f32", "bf16"}))
      if (std::find(dtypes.begin(), dtypes.end(), e) == dtypes.end()) dtypes.push_back(e);
  }
  const bool want_f32 = std::find(dtypes.begin(), dtypes.end(), "f32") != dtypes.end();
  // Attention's products: on the CPU f32 or bf16 (with bf16 GEMMs); on CUDA
  // f32 (the plain kernel) or the GEMMs' 16-bit type (tensor cores).
  const bool cuda = a.device == "cuda";
  XLMR_CHECK(!cuda || std::find(dtypes.begin(), dtypes.end(), "int8") == dtypes.end(),
             "--dtype int8: int8 GEMMs run on the CPU's fused path; on CUDA use f16 or bf16");
  if (a.attention != "auto" && !(cuda && a.attention == "f16"))
    expand(a.attention, "--attention", {"f32", "bf16"});  // a bad value is an error anyway
  std::vector<Combo> combos;
  for (const std::string& p : paths) {
    if (p == "reference") {
      if (!want_f32) {
        notes->push_back("the reference path computes in f32 only: no reference run for --dtype " + a.dtype);
        continue;
      }
      combos.push_back({xlmr::Path::reference, true, xlmr::Precision::f32, std::nullopt});
      if (layouts.size() > 1 || layouts[0] != "padded" || dtypes.size() > 1)
        notes->push_back("the reference path is f32 and padded by nature: it runs once per workload, labelled "
                         "'reference padded f32'");
      continue;
    }
    for (const std::string& d : dtypes)
      for (const std::string& l : layouts) {
        xlmr::Precision dt = xlmr::Precision::f32;
        XLMR_CHECK(xlmr::parse_precision(d, &dt), "--dtype: unknown type '" + d + "'");  // checked above
        const bool choosable =
            cuda ? dt != xlmr::Precision::f32 : dt == xlmr::Precision::bf16 || dt == xlmr::Precision::int8;
        if (a.attention == "auto" || !choosable) {
          combos.push_back({xlmr::Path::fused, l == "padded", dt, std::nullopt});
          continue;
        }
        // The 16-bit attention: the GEMMs' type on CUDA, bf16 on the CPU.
        const xlmr::Precision a16 = cuda ? dt : xlmr::Precision::bf16;
        for (const std::string& at : expand(a.attention, "--attention", {"f32", xlmr::to_string(a16)}))
          combos.push_back({xlmr::Path::fused, l == "padded", dt, at == "f32" ? xlmr::Precision::f32 : a16});
      }
  }
  if (a.attention != "auto" && !cuda && std::find(dtypes.begin(), dtypes.end(), "bf16") == dtypes.end() &&
      std::find(dtypes.begin(), dtypes.end(), "int8") == dtypes.end())
    notes->push_back("--attention " + a.attention +
                     " applies to the fused CPU path with --dtype bf16 or int8: ignored here");
  return combos;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Time an XLM-R-family encoder on reproducible workloads: every requested combination of compute\n"
      "path x layout x GEMM precision, each as one batch of whole encode calls, with a per-kernel table,\n"
      "a summary line per run, and ratios between the runs. The oneDNN matmul peak and the memory read\n"
      "bandwidth are measured in the same process. See docs/bench.md for every column.",
      "xlmr-bench"};
  Args a;
  auto* model_opt = app.add_option("--model,-m", a.model, "the .xlmr model file to time")->type_name("M.xlmr");
  auto* synth_opt = app.add_option("--synthetic", a.synthetic,
                                   "time a random-weight model of XLM-R dimensions instead: small (E256 L4), "
                                   "base (E768 L12), large (E1024 L24), xl (E2560 L36, head size 80, "
                                   "pre-LayerNorm) or xxl (E4096 L48, head size 128)")
                        ->type_name("SIZE");
  model_opt->excludes(synth_opt);
  app.add_option("--device", a.device, "cpu or cuda")->type_name("DEV")->default_str("cpu");
  app.add_option("--gpu", a.gpu, "--device cuda: which GPU, 0-based among the visible ones")
      ->type_name("N")
      ->default_str("0");
  app.add_option("--workload,-w", a.workloads,
                 "tutorial-short, tutorial-long, uniform:LxB, lognormal:N, range:LO-HI:TOKENS or file:PATH; repeat for several "
                 "(default: tutorial-short tutorial-long lognormal:64)")
      ->type_name("W");
  app.add_option("--path", a.path, "fused, reference (the plain padded slow path) or both")
      ->type_name("P")
      ->default_str("both");
  app.add_option("--layout", a.layout, "fused path: ragged (no padding), padded, or both")
      ->type_name("L")
      ->default_str("both");
  app.add_option("--dtype", a.dtype,
                 "GEMM precision of the fused path: f32, bf16, both (f32 and bf16) or int8 (CPU); f16 or bf16 "
                 "(CUDA); or a comma-separated list, e.g. f32,int8")
      ->type_name("T")
      ->default_str("f32");
  app.add_option("--attention", a.attention,
                 "attention's products on the fused path: f32, the 16-bit type, both, or auto (the engine's "
                 "default). CPU with --dtype bf16 or int8: f32 FMAs or bf16 products on AMX tiles or AVX512_BF16 "
                 "(auto: with bf16 GEMMs bf16 where the CPU has either, with int8 f32). CUDA: f32 is the plain "
                 "kernel, the --dtype the tensor-core one (auto: tensor cores where the card and head size allow)")
      ->type_name("A")
      ->default_str("auto");
  app.add_option("--threads,-t", a.threads, "CPU threads (default: the engine's, one per physical core within the cgroup CPU quota)")->type_name("N");
  app.add_option("--warmup", a.warmup, "untimed calls before timing")->type_name("N")->default_str("2");
  app.add_option("--iters", a.iters, "timed calls, at least")->type_name("N")->default_str("10");
  app.add_option("--min-time", a.min_time, "seconds of timed calls, at least")->type_name("SEC")->default_str("1.0");
  app.add_option("--seed", a.seed, "seed of the random ids and the synthetic weights")->type_name("N")->default_str("0");
  auto* json_opt = app.add_option("--json", a.json_out,
                                  "write the results as one JSON document to FILE ('-' or no FILE: standard output, "
                                  "the human-readable report then goes to standard error)")
                       ->type_name("[FILE|-]")
                       ->expected(0, 1);
  bool padded_flag = false;
  app.add_flag("--padded", padded_flag, "the same as --layout padded");
  app.add_option("--dump-workload", a.dump_workload,
                 "write the token ids of every workload to FILE ('-': standard output) as JSON, then go on")
      ->type_name("FILE|-");
  app.add_option("--vocab", a.vocab,
                 "--synthetic: vocabulary size (default: what the demo tokenizer needs, or 32000 without it)")
      ->type_name("N");
  app.add_option("--layers", a.layers, "--synthetic: this many layers instead of the size's")->type_name("N");
  app.add_option("--save-synthetic", a.save_synthetic, "--synthetic: keep the model in this file")->type_name("PATH");
  app.add_option("--tokenizer", a.tokenizer,
                 "--synthetic: the SentencePiece model the synthetic model carries (default: the source tree's "
                 "demo tokenizer when it is there)")
      ->type_name("SPM");
  app.add_option("--cuda-graphs", a.cuda_graphs,
                 "CUDA: replay repeated batch shapes from captured graphs (on) or launch every kernel (off)")
      ->type_name("on|off")
      ->default_str("on");
  app.add_flag("--quiet,-q", a.quiet, "no progress lines on standard error");
  app.set_version_flag("--version", std::string("xlmr-bench ") + XLMR_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "xlmr-bench: error: %s\n", e.what());
    return 1;
  }

  TempModelGuard temp_guard;
  try {
    if (json_opt->count() > 0 && a.json_out.empty()) a.json_out = "-";
    if (padded_flag) {
      XLMR_CHECK(a.layout == "both" || a.layout == "padded", "--padded contradicts --layout " + a.layout);
      a.layout = "padded";
    }
    // ---- check the options before anything slow happens
    XLMR_CHECK(!a.model.empty() || !a.synthetic.empty(), "give a model: --model M.xlmr or --synthetic small|base|large");
    XLMR_CHECK(a.device == "cpu" || a.device == "cuda", "--device must be cpu or cuda, not '" + a.device + "'");
    XLMR_CHECK(a.cuda_graphs == "on" || a.cuda_graphs == "off",
               "--cuda-graphs must be on or off, not '" + a.cuda_graphs + "'");
    XLMR_CHECK(a.threads >= 0, "--threads must be >= 0");
    XLMR_CHECK(a.warmup >= 0, "--warmup must be >= 0");
    XLMR_CHECK(a.iters >= 1, "--iters must be >= 1");
    XLMR_CHECK(a.min_time >= 0 && std::isfinite(a.min_time), "--min-time must be >= 0");
    XLMR_CHECK(a.layers == 0 || !a.synthetic.empty(), "--layers goes with --synthetic");
    XLMR_CHECK(a.layers >= 0, "--layers must be positive");
    XLMR_CHECK(a.gpu >= 0, "--gpu must be 0 or more");
    XLMR_CHECK(a.gpu == 0 || a.device == "cuda", "--gpu goes with --device cuda");
    XLMR_CHECK(a.synthetic.empty() || a.synthetic == "small" || a.synthetic == "base" || a.synthetic == "large" ||
                   a.synthetic == "xl" || a.synthetic == "xxl",
               "--synthetic must be small, base, large, xl or xxl, not '" + a.synthetic + "'");
    XLMR_CHECK(a.vocab == 0 || !a.synthetic.empty(), "--vocab goes with --synthetic");
    XLMR_CHECK(a.vocab >= 0, "--vocab must be > 4");
    XLMR_CHECK(a.save_synthetic.empty() || !a.synthetic.empty(), "--save-synthetic goes with --synthetic");
    XLMR_CHECK(a.tokenizer.empty() || !a.synthetic.empty(), "--tokenizer goes with --synthetic");
    XLMR_CHECK(!(a.json_out == "-" && a.dump_workload == "-"),
               "--json - and --dump-workload - cannot both write to standard output");
    std::vector<std::string> notes;
    const std::vector<Combo> combos = plan_combos(a, &notes);
    XLMR_CHECK(!combos.empty(), "nothing to run: " + (notes.empty() ? std::string("no combination") : notes[0]));
    if (a.workloads.empty()) a.workloads = bench::default_workload_specs();
    std::vector<bench::WorkloadSpec> specs;
    for (const std::string& s : a.workloads) specs.push_back(bench::parse_workload_spec(s));

    FILE* human = a.json_out == "-" ? stderr : stdout;
    auto progress = [&](const std::string& msg) {
      if (!a.quiet) std::fprintf(stderr, "xlmr-bench: %s\n", msg.c_str());
    };
    const xlmr::Device device = a.device == "cuda" ? xlmr::Device::cuda : xlmr::Device::cpu;

    Baseline base;
    base.machine = bench::probe_machine();
    base.threads = a.threads > 0 ? a.threads : xlmr::cpu_thread_budget().threads;

    // ---- the model: a file, or a synthetic one written now
    std::string model_path = a.model, model_desc;
    std::string tokenizer_note;
    if (!a.synthetic.empty()) {
      std::string spm;
      const std::string spm_path = a.tokenizer.empty()
                                       ? std::string(XLMR_SOURCE_DIR) + "/scripts/demo/model/sentencepiece.bpe.model"
                                       : a.tokenizer;
      int vocab = a.vocab > 0 ? a.vocab : 32000;
      std::ifstream f{spm_path, std::ios::binary};
      XLMR_CHECK(f || a.tokenizer.empty(), "cannot open --tokenizer '" + a.tokenizer + "'");
      if (f) {
        spm.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
        const xlmr::Tokenizer tok(spm);
        const int need = tok.max_model_id() + 1;
        XLMR_CHECK(a.vocab == 0 || a.vocab >= need, "--vocab " + std::to_string(a.vocab) +
                                                        " is too small for the tokenizer, which needs " +
                                                        std::to_string(need));
        vocab = a.vocab > 0 ? a.vocab : need;
        tokenizer_note = a.tokenizer.empty() ? "demo tokenizer" : "tokenizer " + a.tokenizer;
      } else {
        tokenizer_note = "no tokenizer (random ids stand in for text)";
      }
      XLMR_CHECK(vocab > 4, "--vocab must be > 4");
      const xlmr::ModelConfig cfg = bench::synthetic_config(a.synthetic, vocab, a.layers);
      model_path = a.save_synthetic.empty() ? make_temp_model_path() : a.save_synthetic;
      progress("writing the synthetic " + a.synthetic + " model");
      bench::write_synthetic_model(model_path, cfg, spm, a.seed);
      model_desc = "synthetic " + a.synthetic;
    } else {
      model_desc = a.model;
    }

    // Read the file once (checksums checked here, so the engines can skip them).
    xlmr::ModelConfig cfg;
    std::unique_ptr<xlmr::Tokenizer> tokenizer;
    double file_bytes = 0;
    {
      xlmr::LoadOptions lo;
      lo.verify_checksums = a.synthetic.empty();
      const auto file = xlmr::XlmrFile::open(model_path, lo);
      cfg = xlmr::ModelConfig::from_json(file->config());
      const std::string spm = file->tokenizer_model();
      if (!spm.empty()) {
        xlmr::TokenizerIds ids;
        ids.bos = cfg.bos_id, ids.pad = cfg.pad_id, ids.eos = cfg.eos_id, ids.unk = cfg.unk_id;
        tokenizer.reset(new xlmr::Tokenizer(spm, ids));
      }
      if (a.synthetic.empty()) tokenizer_note = tokenizer ? "with tokenizer" : "no tokenizer (random ids stand in for text)";
      for (const xlmr::TensorInfo& t : file->tensors()) {
        file_bytes += double(t.nbytes);
        if (t.name == "emb.word") continue;
        base.weight_bytes += double(t.nbytes);
        const bool matrix = t.shape.size() == 2 && t.name.compare(0, 4, "emb.") != 0;
        base.weight_bytes_f32 += matrix ? 4.0 * double(t.numel()) : double(t.nbytes);
        base.weight_bytes_bf16 += matrix ? 2.0 * double(t.numel()) : double(t.nbytes);
      }
    }
    if (!a.synthetic.empty())
      progress(strf("synthetic model written to %s (%s)%s", model_path.c_str(), fmt_bytes(file_bytes).c_str(),
                    a.save_synthetic.empty() ? ", removed at exit" : ""));

    // ---- workloads
    bench::WorkloadContext wctx;
    wctx.tokenizer = tokenizer.get();
    wctx.vocab_size = cfg.vocab_size;
    wctx.max_length = cfg.max_length;
    wctx.bos_id = cfg.bos_id;
    wctx.eos_id = cfg.eos_id;
    wctx.seed = a.seed;
    std::vector<bench::Workload> workloads;
    for (const bench::WorkloadSpec& s : specs) workloads.push_back(bench::make_workload(s, wctx));
    if (!a.dump_workload.empty()) {
      const std::string text = bench::workloads_to_json(workloads).dump() + "\n";
      if (a.dump_workload == "-") {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      } else {
        std::ofstream f(a.dump_workload, std::ios::binary);
        f << text;
        XLMR_CHECK(f.good(), "cannot write '" + a.dump_workload + "': " + std::strerror(errno));
        progress("workload ids written to " + a.dump_workload);
      }
    }

    // ---- what the machine can do
    progress("measuring the oneDNN matmul peak and the memory bandwidth");
    std::string why;
    double g = bench::gemm_peak_gflops(bench::PeakType::f32, base.threads, &why);
    if (g > 0) base.peak_f32 = g;
    if (base.machine.avx512_core) {
      g = bench::gemm_peak_gflops(bench::PeakType::bf16, base.threads, &why);
      if (g > 0) base.peak_bf16 = g;
    }
    const bool any_int8 = std::any_of(combos.begin(), combos.end(),
                                      [](const Combo& c) { return c.dtype == xlmr::Precision::int8; });
    std::string why_int8;
    if (any_int8) {
      g = bench::gemm_peak_gflops(bench::PeakType::int8, base.threads, &why_int8);
      if (g > 0) base.peak_int8 = g;
    }
    const double bw = bench::read_bandwidth_gbs(kBandwidthBytes, base.threads, &base.bandwidth_bytes);
    if (bw > 0) base.bandwidth = bw;

    // ---- header
    std::string features;
    for (const std::string& f : base.machine.features) features += (features.empty() ? "" : " ") + f;
    std::fprintf(human, "xlmr-bench %s\n", XLMR_VERSION);
    std::fprintf(human, "machine   %s | %s, %s | %s%s | %s\n", base.machine.cpu.c_str(),
                 count(base.machine.cores, "core").c_str(), count(base.machine.logical_cpus, "logical CPU").c_str(),
                 base.machine.isa().c_str(), features.empty() ? "" : (" (" + features + ")").c_str(),
                 count(base.threads, "thread").c_str());
    std::fprintf(human, "model     %s: E%d H%d F%d L%d, vocab %d, max length %d, %s, %s\n", model_desc.c_str(),
                 cfg.hidden, cfg.heads, cfg.ffn, cfg.layers, cfg.vocab_size, cfg.max_length,
                 xlmr::dtype_name(cfg.dtype), tokenizer_note.c_str());
    std::string peaks = strf("peaks     oneDNN matmul %dx%dx%d (MxKxN): f32 ", bench::kPeakM, bench::kPeakK, bench::kPeakN);
    peaks += base.peak_f32 ? strf("%.1f GFLOP/s", *base.peak_f32) : "n/a (" + why + ")";
    peaks += base.peak_bf16 ? strf(", bf16 %.1f GFLOP/s", *base.peak_bf16)
                            : base.machine.avx512_core ? ", bf16 n/a" : ", bf16 n/a (no AVX-512)";
    if (base.peak_int8) peaks += strf(", int8 %.1f GOP/s", *base.peak_int8);
    else if (any_int8) peaks += ", int8 n/a (" + why_int8 + ")";
    peaks += base.bandwidth ? strf(" | memory read %.1f GB/s (%.0f MiB buffer)", *base.bandwidth,
                                   double(base.bandwidth_bytes) / (1 << 20))
                            : std::string(" | memory read n/a");
    std::fprintf(human, "%s\n", peaks.c_str());
    std::string wline = strf("weights   %s without the word embeddings", fmt_bytes(base.weight_bytes).c_str());
    if (base.bandwidth)
      wline += strf("; read once in %s ms (f32 matrices), %s ms (bf16)", fmt_ms(*base.stream_ms(xlmr::Precision::f32)).c_str(),
                    fmt_ms(*base.stream_ms(xlmr::Precision::bf16)).c_str());
    std::fprintf(human, "%s\n", wline.c_str());
    for (const bench::Workload& w : workloads)
      std::fprintf(human, "workload  %s: %s, %s, longest %d, %s\n", w.name.c_str(),
                   count(int64_t(w.seqs.size()), "seq").c_str(), count(w.n_tokens(), "token").c_str(), w.longest(),
                   w.tokenized ? "tokenized text" : "random ids");
    for (const std::string& n : notes) std::fprintf(human, "note: %s\n", n.c_str());

    // ---- what this machine cannot run: one warning each, then skipped
    std::map<std::string, std::string> unavailable;  // combo label -> why
    if (device == xlmr::Device::cuda) {
      std::string why_not, name;
      if (!xlmr::cuda::device_available(&why_not, &name, a.gpu)) {
        std::fprintf(stderr, "xlmr-bench: warning: --device cuda: %s: every run skipped\n", why_not.c_str());
        for (const Combo& c : combos) unavailable[c.label()] = why_not;
      }
    } else if (!base.machine.avx512_core) {
      for (const Combo& c : combos)
        if (c.dtype == xlmr::Precision::bf16 && !unavailable.count(c.label())) {
          unavailable[c.label()] = "no AVX-512";
          std::fprintf(stderr, "xlmr-bench: warning: %s needs AVX-512 (F, BW, DQ, VL), which this CPU lacks: skipped\n",
                       c.label().c_str());
        }
    }

    // ---- the runs
    std::vector<RunResult> runs;
    std::set<std::string> noted;  // engine notes already shown
    const size_t total = workloads.size() * combos.size();
    size_t index = 0;
    for (const bench::Workload& w : workloads) {
      for (const Combo& c : combos) {
        ++index;
        if (unavailable.count(c.label())) continue;
        const int64_t budget = c.padded ? w.padded_tokens() : w.n_tokens();
        XLMR_CHECK(budget <= INT_MAX, "workload '" + w.name + "' is too large for one batch");
        xlmr::EngineOptions eo;
        eo.device = device;
        eo.path = c.path;
        eo.threads = base.threads;
        eo.max_batch_tokens = int(budget);
        eo.verify_checksums = false;
        eo.cuda_graphs = a.cuda_graphs == "on";
        eo.gpu = a.gpu;
        if (c.path == xlmr::Path::fused) {
          eo.precision = c.dtype;
          eo.padded = c.padded;
          eo.attention = c.attention;
        }
        progress(strf("[%zu/%zu] %s | %s", index, total, w.name.c_str(), c.label().c_str()));
        std::unique_ptr<xlmr::Engine> engine;
        try {
          engine = xlmr::Engine::load(model_path, eo);
        } catch (const xlmr::Error& e) {
          unavailable[c.label()] = e.what();
          std::fprintf(stderr, "xlmr-bench: warning: %s: %s: skipped\n", c.label().c_str(), e.what());
          continue;
        }
        for (const std::string& n : engine->notes())
          if (noted.insert(n).second) std::fprintf(human, "note: %s: %s\n", c.label().c_str(), n.c_str());
        RunResult r;
        try {
          r = time_run(*engine, w, c, base, a.warmup, a.iters, a.min_time);
        } catch (const std::exception& e) {
          XLMR_THROW(w.name + " | " + c.label() + ": " + e.what());
        }
        r.device = a.device;
        r.stats = engine->backend_stats();
        if (device == xlmr::Device::cpu) {
          const auto peak = base.peak(c.dtype);
          if (r.gemm_gflops && peak) r.gemm_fraction = *r.gemm_gflops / *peak;
          r.weight_stream_ms = base.stream_ms(c.dtype);
        }
        print_table(human, r);
        std::fflush(human);
        runs.push_back(std::move(r));
      }
    }
    XLMR_CHECK(!runs.empty(), "no run could be made (see the warnings above)");

    const std::vector<Comparison> cmp = compare(runs, workloads, base, device == xlmr::Device::cuda);
    print_comparisons(human, cmp, workloads);
    std::fflush(human);

    // ---- --attention both: the attention kernel alone, both variants in turn
    std::vector<bench::AttentionKernelTiming> attention_timings;
    if (a.attention == "both" && device == xlmr::Device::cpu) {
      try {
        for (const bench::Workload& w : workloads) {
          progress("timing the attention kernel alone: " + w.name);
          attention_timings.push_back(
              bench::time_attention_kernels(w, cfg.hidden, cfg.heads, base.threads, a.iters, a.min_time));
        }
      } catch (const xlmr::Error& e) {
        std::fprintf(stderr, "xlmr-bench: warning: %s: skipped\n", e.what());
      }
      print_attention_timings(human, attention_timings);
      std::fflush(human);
    }

    // ---- JSON
    if (!a.json_out.empty()) {
      json doc;
      doc["machine"] = {{"cpu", base.machine.cpu},
                        {"cores", base.machine.cores},
                        {"logical_cpus", base.machine.logical_cpus},
                        {"threads", base.threads},
                        {"isa", base.machine.isa()},
                        {"isa_features", base.machine.features}};
      doc["model"] = {{"source", model_desc},
                      {"hidden", cfg.hidden},
                      {"heads", cfg.heads},
                      {"ffn", cfg.ffn},
                      {"layers", cfg.layers},
                      {"vocab_size", cfg.vocab_size},
                      {"dtype", xlmr::dtype_name(cfg.dtype)},
                      {"tokenizer", tokenizer != nullptr}};
      doc["gemm_peak_gflops"] = {{"f32", opt_json(base.peak_f32)},
                                 {"bf16", opt_json(base.peak_bf16)},
                                 {"int8", opt_json(base.peak_int8)},
                                 {"shape", {bench::kPeakM, bench::kPeakK, bench::kPeakN}}};
      doc["mem_bandwidth_gbs"] = opt_json(base.bandwidth);
      doc["weight_bytes"] = uint64_t(base.weight_bytes);
      doc["weights_stream_ms"] = {{"f32", opt_json(base.stream_ms(xlmr::Precision::f32))},
                                  {"bf16", opt_json(base.stream_ms(xlmr::Precision::bf16))}};
      doc["runs"] = json::array();
      for (const RunResult& r : runs) doc["runs"].push_back(run_json(r));
      if (!attention_timings.empty()) {
        doc["attention_kernel"] = json::array();
        for (const auto& t : attention_timings)
          doc["attention_kernel"].push_back({{"workload", t.workload},
                                             {"n_seqs", t.n_seqs},
                                             {"n_tokens", t.n_tokens},
                                             {"unit", t.unit},
                                             {"pairs", t.pairs},
                                             {"f32_ms", t.f32_ms},
                                             {"bf16_ms", t.bf16_ms},
                                             {"f32_gflops", t.f32_gflops()},
                                             {"bf16_gflops", t.bf16_gflops()},
                                             {"ratio", t.ratio()}});
      }
      doc["comparisons"] = json::array();
      for (const Comparison& c : cmp)
        doc["comparisons"].push_back({{"workload", c.workload},
                                      {"what", c.what},
                                      {"numerator", c.numerator},
                                      {"denominator", c.denominator},
                                      {"ratio", c.ratio}});
      const std::string text = doc.dump(2) + "\n";
      if (a.json_out == "-") {
        XLMR_CHECK(std::fwrite(text.data(), 1, text.size(), stdout) == text.size() && std::fflush(stdout) == 0,
                   "failed writing the JSON to standard output");
      } else {
        std::ofstream f(a.json_out, std::ios::binary);
        f << text;
        f.flush();
        XLMR_CHECK(f.good(), "cannot write '" + a.json_out + "': " + std::strerror(errno));
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xlmr-bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
