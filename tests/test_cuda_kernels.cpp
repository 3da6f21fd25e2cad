// The CUDA row kernels and GEMMs against their plain twins in kernels/ref:
//   embed_layernorm, add_bias_residual_layernorm  vs ref::embed_layernorm,
//                                                    ref::add_bias_residual_layernorm
//   gather_first, mean_pool, activation             vs row copies, ref::mean_rows,
//                                                    tanh / ReLU
//   bias_activation (the unfused GEMM epilogue)     vs bias + ref::gelu
//   lt_gemm_run (cuBLASLt)                          vs ref::linear (none / GELU)
// in fp16 and bf16. The reference runs on the 16-bit inputs read back from the
// device, so the error measured is the kernel's alone. Held: cosine >= 0.999
// per row (rows of 16 values or more), every element within
// atol + rtol |ref| where rtol is twice the type's rounding error, nothing
// written past the output (guard elements keep a NaN pattern). Max abs errors
// are reported.
//
// The [cuda] cases also run on the CPU emulator (tests/emulation,
// xlmr-emulated-tests), where the cuBLASLt ones skip with a note.
//
// Without a GPU each case says so and passes, except the [cuda-errors] one,
// which checks that the runtime helpers then fail with xlmr::Error rather
// than crash (with a GPU: that an impossible allocation is reported as out of
// memory, with its size).
#ifdef XLMR_HAVE_CUDA

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device.h"
#include "kernels/embed.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/pooling.h"
#include "cuda_test_support.h"
#include "test_support.h"

namespace {

namespace cu = xlmr::cuda;
using cu::Half16;
using test::gpu::DeviceBuffer;
using test::gpu::parallel_for;
using test::gpu::StreamHolder;
using test::gpu::type_name;

bool have_gpu(const char* what) { return test::gpu::available(what); }

const Half16 kTypes[] = {Half16::f16, Half16::bf16};

// Twice the largest relative rounding error of the type (2^-11 and 2^-8).
double rtol_of(Half16 t) { return t == Half16::f16 ? 1.0 / 1024 : 1.0 / 128; }

constexpr uint16_t kSentinel = 0x7fff;  // NaN in both fp16 and bf16
constexpr size_t kGuard = 256;          // 16-bit elements past each output

std::vector<float> random_normal(size_t n, uint32_t seed, float scale, float offset = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = offset + scale * normal(rng);
  return v;
}

// n 16-bit device values widened to fp32 on the host.
std::vector<float> read16(Half16 t, const void* src, size_t n, cu::Stream s) {
  std::vector<float> out(n);
  if (n == 0) return out;
  DeviceBuffer tmp(n * sizeof(float));
  cu::convert_to_f32(t, tmp.as<float>(), src, n, s);
  cu::copy_to_host(out.data(), tmp.get(), n * sizeof(float), s);
  cu::sync(s);
  return out;
}

// A 16-bit device copy of host values, and those values as the device holds
// them (rounded), for the reference.
struct Device16 {
  std::unique_ptr<DeviceBuffer> buf;
  std::vector<float> rounded;
};

Device16 upload16(Half16 t, const std::vector<float>& host, cu::Stream s) {
  Device16 d;
  d.buf = std::make_unique<DeviceBuffer>(host.size() * 2);
  cu::upload_f32_as(t, d.buf->get(), host.data(), host.size(), s);
  d.rounded = read16(t, d.buf->get(), host.size(), s);
  return d;
}

template <typename T>
std::unique_ptr<DeviceBuffer> upload_raw(const std::vector<T>& host, cu::Stream s) {
  auto d = std::make_unique<DeviceBuffer>(host.size() * sizeof(T));
  cu::copy_to_device(d->get(), host.data(), host.size() * sizeof(T), s);
  cu::sync(s);
  return d;
}

// A 16-bit output of n elements followed by kGuard sentinel elements.
std::unique_ptr<DeviceBuffer> guarded_output(size_t n, cu::Stream s) {
  const std::vector<uint16_t> fill(n + kGuard, kSentinel);
  return upload_raw(fill, s);
}

// True when the elements [from, from + count) still hold the sentinel.
bool untouched(const DeviceBuffer& d, size_t from, size_t count, cu::Stream s) {
  std::vector<uint16_t> v(count);
  cu::copy_to_host(v.data(), d.as<uint16_t>() + from, count * 2, s);
  cu::sync(s);
  return std::all_of(v.begin(), v.end(), [](uint16_t x) { return x == kSentinel; });
}

struct Stats {
  double min_cosine = 1;
  double max_abs_error = 0;
  size_t out_of_tolerance = 0;
  size_t non_finite = 0;
  int worst_row = -1;
};

// rows x cols, row-major. Cosine per row only for rows of 16 values or more
// (a row of two logits near zero has no meaningful direction) and not for an
// all-zero reference row (an empty sequence's pool).
Stats compare(const std::vector<float>& want, const std::vector<float>& got, int rows, int cols, double atol,
              double rtol) {
  Stats st;
  for (int r = 0; r < rows; ++r) {
    const size_t off = size_t(r) * size_t(cols);
    for (int c = 0; c < cols; ++c) {
      const double a = want[off + size_t(c)], b = got[off + size_t(c)];
      if (!std::isfinite(b)) ++st.non_finite;
      const double err = std::fabs(a - b);
      if (!(err <= atol + rtol * std::fabs(a))) ++st.out_of_tolerance;
      if (err > st.max_abs_error) st.max_abs_error = err;
    }
    const bool zero_row = std::all_of(want.begin() + long(off), want.begin() + long(off) + cols,
                                      [](float v) { return v == 0.f; });
    if (cols >= 16 && !zero_row) {
      const std::vector<float> a(want.begin() + long(off), want.begin() + long(off) + cols);
      const std::vector<float> b(got.begin() + long(off), got.begin() + long(off) + cols);
      const double c = test::cosine(a, b);
      if (!(c >= st.min_cosine)) {  // also catches NaN
        st.min_cosine = std::isnan(c) ? -2 : c;
        st.worst_row = r;
      }
    }
  }
  return st;
}

// The worst numbers over the runs of one test case, reported once.
struct Summary {
  double min_cosine = 1;
  double max_abs_error = 0;
  int runs = 0;
  void add(const Stats& st) {
    min_cosine = std::min(min_cosine, st.min_cosine);
    max_abs_error = std::max(max_abs_error, st.max_abs_error);
    ++runs;
  }
};

void judge(const std::string& what, const Stats& st, bool guard_intact, Summary& sum) {
  INFO(what << ": min row cosine " << st.min_cosine << " (row " << st.worst_row << "), max abs error "
            << st.max_abs_error << ", " << st.out_of_tolerance << " elements out of tolerance, " << st.non_finite
            << " non-finite");
  CHECK(guard_intact);
  CHECK(st.non_finite == 0);
  CHECK(st.out_of_tolerance == 0);
  CHECK(st.min_cosine >= 0.999);
  sum.add(st);
}

constexpr float kEps = 1e-5f;
// Widths: odd (scalar path), XLM-R's, a multiple of 8 that leaves lanes idle,
// and past 1024 (one block per row) with and without 16-byte loads.
const int kHidden[] = {40, 64, 768, 1000, 1024, 1030, 2048};
const int kTokens[] = {1, 7, 300};

// pre_norm: the pre-norm form, with the sum before LayerNorm also kept (raw).
void check_embed(Half16 t, int N, int E, bool with_type, uint32_t seed, Summary& sum, bool pre_norm = false) {
  StreamHolder stream;
  const cu::Stream s = stream.get();
  const int V = 97, P = N + 2;
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(N)), positions(static_cast<size_t>(N));
  for (int i = 0; i < N; ++i) {
    ids[size_t(i)] = int32_t(rng() % V);
    positions[size_t(i)] = int32_t(rng() % P);
  }
  // A row mean well away from zero exercises the two-pass variance.
  const Device16 word = upload16(t, random_normal(size_t(V) * E, seed + 1, 0.7f, 0.5f), s);
  const Device16 pos = upload16(t, random_normal(size_t(P) * E, seed + 2, 0.3f), s);
  const Device16 type0 = upload16(t, random_normal(size_t(E), seed + 3, 0.2f, 0.1f), s);
  const std::vector<float> gamma = random_normal(size_t(E), seed + 4, 0.2f, 1.f);
  const std::vector<float> beta = random_normal(size_t(E), seed + 5, 0.1f);
  const auto d_ids = upload_raw(ids, s), d_pos_ids = upload_raw(positions, s);
  const auto d_gamma = upload_raw(gamma, s), d_beta = upload_raw(beta, s);
  const size_t n_out = size_t(N) * E;
  const auto d_out = guarded_output(n_out, s);
  const auto d_raw = guarded_output(pre_norm ? n_out : 0, s);

  cu::embed_layernorm(t, d_out->get(), d_ids->as<int32_t>(), d_pos_ids->as<int32_t>(), word.buf->get(),
                      pos.buf->get(), with_type ? type0.buf->get() : nullptr, d_gamma->as<float>(),
                      d_beta->as<float>(), N, E, kEps, s, pre_norm ? d_raw->get() : nullptr);
  cu::sync(s);
  const std::vector<float> got = read16(t, d_out->get(), n_out, s);

  std::vector<float> want(n_out), want_raw(pre_norm ? n_out : 0);
  xlmr::EmbedArgs a{};
  a.raw = pre_norm ? want_raw.data() : nullptr;
  a.out = want.data();
  a.ids = ids.data();
  a.positions = positions.data();
  a.word = word.rounded.data();
  a.pos = pos.rounded.data();
  a.type0 = with_type ? type0.rounded.data() : nullptr;
  a.gamma = gamma.data();
  a.beta = beta.data();
  a.n_tokens = N;
  a.hidden = E;
  a.eps = kEps;
  xlmr::ref::embed_layernorm(a);

  std::ostringstream what;
  what << "embed_layernorm " << type_name(t) << " N " << N << " E " << E << (with_type ? " with" : " without")
       << " type row" << (pre_norm ? ", pre-norm" : "");
  judge(what.str(), compare(want, got, N, E, 1e-4, rtol_of(t)), untouched(*d_out, n_out, kGuard, s), sum);
  if (pre_norm)
    judge(what.str() + ": the raw sum", compare(want_raw, read16(t, d_raw->get(), n_out, s), N, E, 1e-4, rtol_of(t)),
          untouched(*d_raw, n_out, kGuard, s), sum);
}

// pre_norm: x keeps the sum and the LayerNorm goes to a second buffer.
void check_residual(Half16 t, int N, int E, uint32_t seed, Summary& sum, bool pre_norm = false) {
  StreamHolder stream;
  const cu::Stream s = stream.get();
  const size_t n = size_t(N) * E;
  // x is written in place, so it carries the guard itself.
  std::vector<float> x_host = random_normal(n, seed + 1, 2.f, 3.f);
  const auto d_x = guarded_output(n, s);
  cu::upload_f32_as(t, d_x->get(), x_host.data(), n, s);
  std::vector<float> x = read16(t, d_x->get(), n, s);
  const Device16 y = upload16(t, random_normal(n, seed + 2, 1.f), s);
  const std::vector<float> bias = random_normal(size_t(E), seed + 3, 0.5f);
  const std::vector<float> gamma = random_normal(size_t(E), seed + 4, 0.2f, 1.f);
  const std::vector<float> beta = random_normal(size_t(E), seed + 5, 0.1f);
  const auto d_bias = upload_raw(bias, s), d_gamma = upload_raw(gamma, s), d_beta = upload_raw(beta, s);

  const auto d_normed = guarded_output(pre_norm ? n : 0, s);

  cu::add_bias_residual_layernorm(t, d_x->get(), y.buf->get(), d_bias->as<float>(), d_gamma->as<float>(),
                                  d_beta->as<float>(), N, E, kEps, s, pre_norm ? d_normed->get() : nullptr);
  cu::sync(s);
  const std::vector<float> got = read16(t, d_x->get(), n, s);

  std::vector<float> want_normed(pre_norm ? n : 0);
  xlmr::ResidualLayerNormArgs a{};
  a.normed = pre_norm ? want_normed.data() : nullptr;
  a.x = x.data();
  a.y = y.rounded.data();
  a.bias = bias.data();
  a.gamma = gamma.data();
  a.beta = beta.data();
  a.n_tokens = N;
  a.hidden = E;
  a.eps = kEps;
  xlmr::ref::add_bias_residual_layernorm(a);

  std::ostringstream what;
  what << "add_bias_residual_layernorm " << type_name(t) << " N " << N << " E " << E << (pre_norm ? ", pre-norm" : "");
  judge(what.str(), compare(x, got, N, E, 1e-4, rtol_of(t)), untouched(*d_x, n, kGuard, s), sum);
  if (pre_norm)
    judge(what.str() + ": the LayerNorm", compare(want_normed, read16(t, d_normed->get(), n, s), N, E, 1e-4, rtol_of(t)),
          untouched(*d_normed, n, kGuard, s), sum);
}

// ---- GEMMs -------------------------------------------------------------------

struct LtGemmDeleter {
  void operator()(cu::LtGemm* g) const noexcept { cu::lt_gemm_destroy(g); }
};
struct LtContextDeleter {
  void operator()(cu::LtContext* c) const noexcept { cu::lt_destroy(c); }
};
using GemmPtr = std::unique_ptr<cu::LtGemm, LtGemmDeleter>;
using ContextPtr = std::unique_ptr<cu::LtContext, LtContextDeleter>;

const char* epilogue_name(cu::LtEpilogue ep) {
  switch (ep) {
    case cu::LtEpilogue::none: return "none";
    case cu::LtEpilogue::bias: return "bias";
    case cu::LtEpilogue::bias_gelu: return "bias+gelu";
  }
  return "?";
}

// One plan for max(Ms) rows, run for every M in turn (so the per-M layouts and
// algorithm cache switch back and forth), each result against ref::linear.
void check_gemm(Half16 t, int I, int O, cu::LtEpilogue ep, const std::vector<int>& Ms, uint32_t seed, Summary& sum) {
  StreamHolder stream;
  const cu::Stream s = stream.get();
  const int max_rows = *std::max_element(Ms.begin(), Ms.end());
  const bool with_bias = ep != cu::LtEpilogue::none;
  const Device16 w = upload16(t, random_normal(size_t(O) * I, seed + 1, float(1.0 / std::sqrt(double(I)))), s);
  const Device16 a = upload16(t, random_normal(size_t(max_rows) * I, seed + 2, 1.f), s);
  const std::vector<float> bias = random_normal(size_t(O), seed + 3, 0.5f);
  const auto d_bias = upload_raw(bias, s);
  const size_t n_out = size_t(max_rows) * O;

  ContextPtr ctx(cu::lt_create(size_t(32) << 20));
  GemmPtr g(cu::lt_gemm_create(ctx.get(), t, I, O, ep, max_rows));
  // 16-bit rounding of the output, plus the tanh form of GELU in the fused
  // epilogue (within 5e-4 of the erf form) and a possible second rounding
  // when the bias is added by a separate kernel.
  const double atol = t == Half16::f16 ? 4e-3 : 2e-2;

  for (int M : Ms) {
    const auto d_out = guarded_output(n_out, s);
    cu::lt_gemm_run(g.get(), d_out->get(), a.buf->get(), w.buf->get(), with_bias ? d_bias->as<float>() : nullptr, M,
                    s);
    cu::sync(s);
    const std::vector<float> got = read16(t, d_out->get(), size_t(M) * O, s);

    std::vector<float> want(size_t(M) * O);
    const xlmr::Epilogue rep = ep == cu::LtEpilogue::bias_gelu ? xlmr::Epilogue::gelu : xlmr::Epilogue::none;
    constexpr int kRowsPerTask = 8;
    parallel_for(size_t((M + kRowsPerTask - 1) / kRowsPerTask), [&](size_t task) {
      const int r0 = int(task) * kRowsPerTask, rows = std::min(kRowsPerTask, M - r0);
      xlmr::ref::linear(want.data() + size_t(r0) * O, a.rounded.data() + size_t(r0) * I, w.rounded.data(),
                        with_bias ? bias.data() : nullptr, rows, O, I, rep);
    });

    std::ostringstream what;
    what << "GEMM " << type_name(t) << " M " << M << " I " << I << " O " << O << " epilogue "
         << epilogue_name(ep);
    const size_t written = size_t(M) * O;
    judge(what.str(), compare(want, got, M, O, atol, rtol_of(t)),
          untouched(*d_out, written, n_out + kGuard - written, s), sum);
  }
}

const std::vector<int> kGemmRows = {1, 17, 128, 1000, 17};

}  // namespace

// Tagged apart from [cuda]: the deliberate out-of-memory call would count as
// an API error under compute-sanitizer, which runs the [cuda] cases.
TEST_CASE("CUDA runtime helpers fail with xlmr::Error and never crash", "[cuda-errors]") {
  std::string why;
  if (!cu::device_available(&why)) {
    INFO("no CUDA device: " << why);
    try {
      void* p = cu::device_malloc(1024);
      cu::device_free(p);
      FAIL("device_malloc succeeded without a usable CUDA device");
    } catch (const xlmr::Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find("cudaMalloc") != std::string::npos);
    }
    CHECK_THROWS_AS(cu::stream_create(), xlmr::Error);
    CHECK_THROWS_AS(cu::lt_create(size_t(1) << 20), xlmr::Error);
    return;
  }
  // An allocation no GPU can hold: an out-of-memory error that names the size.
  const size_t huge = size_t(1) << 40;
  try {
    void* p = cu::device_malloc(huge);
    cu::device_free(p);
    FAIL("a 1 TiB cudaMalloc succeeded");
  } catch (const xlmr::Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find("out of GPU memory") != std::string::npos);
    CHECK(std::string(e.what()).find(std::to_string(huge)) != std::string::npos);
  }
  // The failure is not reported again by the next launch check.
  StreamHolder stream;
  DeviceBuffer in(64), out(128);
  CHECK_NOTHROW(cu::convert_to_f32(Half16::f16, out.as<float>(), in.get(), 32, stream.get()));
  CHECK_NOTHROW(cu::sync(stream.get()));
}

TEST_CASE("CUDA embed_layernorm matches ref::embed_layernorm", "[cuda]") {
  if (!have_gpu("embed_layernorm test")) return;
  Summary sum;
  uint32_t seed = 100;
  for (Half16 t : kTypes)
    for (int E : kHidden)
      for (int N : kTokens)
        for (bool with_type : {true, false}) check_embed(t, N, E, with_type, seed += 10, sum);
  WARN("embed_layernorm, " << sum.runs << " runs: min row cosine " << sum.min_cosine << ", max abs error "
                           << sum.max_abs_error);
}

TEST_CASE("CUDA add_bias_residual_layernorm matches ref::add_bias_residual_layernorm", "[cuda]") {
  if (!have_gpu("add_bias_residual_layernorm test")) return;
  Summary sum;
  uint32_t seed = 200;
  for (Half16 t : kTypes)
    for (int E : kHidden)
      for (int N : kTokens) check_residual(t, N, E, seed += 10, sum);
  WARN("add_bias_residual_layernorm, " << sum.runs << " runs: min row cosine " << sum.min_cosine
                                       << ", max abs error " << sum.max_abs_error);
}

TEST_CASE("CUDA LayerNorm kernels in pre-norm form keep the sum and write the LayerNorm beside it", "[cuda]") {
  if (!have_gpu("pre-norm LayerNorm test")) return;
  Summary sum;
  uint32_t seed = 300;
  for (Half16 t : kTypes)
    for (int E : {40, 768, 2048})  // scalar path, one warp per row, one block per row
      for (int N : {1, 7}) {
        check_embed(t, N, E, true, seed += 10, sum, true);
        check_residual(t, N, E, seed += 10, sum, true);
      }
  WARN("pre-norm LayerNorm kernels, " << sum.runs << " runs: min row cosine " << sum.min_cosine
                                      << ", max abs error " << sum.max_abs_error);
}

#ifdef XLMR_CUDA_EMULATION
namespace xlmr::emulation {
void set_schedule_seed(uint64_t seed);  // tests/emulation/emulator.h
}

// Emulator only: the LayerNorm kernels with warps drifting apart, so that a
// block reduction reusing its shared buffer without a barrier would show.
TEST_CASE("CUDA LayerNorm kernels under shuffled warp schedules", "[cuda]") {
  Summary sum;
  for (uint64_t seed : {1, 2, 3}) {
    xlmr::emulation::set_schedule_seed(seed);
    for (int E : {768, 2048, 1030}) check_residual(Half16::bf16, 9, E, uint32_t(600 + seed), sum);
    check_embed(Half16::f16, 9, 2048, true, uint32_t(610 + seed), sum);
  }
  xlmr::emulation::set_schedule_seed(0);
}
#endif

TEST_CASE("CUDA gather_first mean_pool and activation match the reference", "[cuda]") {
  if (!have_gpu("pooling test")) return;
  // Ragged, with an empty sequence (a zero row from both kernels).
  const std::vector<int> lengths = {1, 7, 0, 300, 2};
  std::vector<int32_t> cu_seqlens = {0};
  for (int len : lengths) cu_seqlens.push_back(cu_seqlens.back() + len);
  const int S = int(lengths.size()), N = cu_seqlens.back();
  Summary sum;
  for (Half16 t : kTypes) {
    for (int E : {40, 768}) {
      StreamHolder stream;
      const cu::Stream s = stream.get();
      const size_t n = size_t(N) * E;
      const Device16 x = upload16(t, random_normal(n, uint32_t(300 + E), 1.5f, 0.2f), s);
      const auto d_cu = upload_raw(cu_seqlens, s);
      const std::string tag = std::string(type_name(t)) + " E " + std::to_string(E);

      // gather_first: an exact copy of each first row.
      const auto d_first = guarded_output(size_t(S) * E, s);
      cu::gather_first(t, d_first->get(), x.buf->get(), d_cu->as<int32_t>(), S, E, s);
      cu::sync(s);
      const std::vector<float> first = read16(t, d_first->get(), size_t(S) * E, s);
      std::vector<float> first_want(size_t(S) * E, 0.f);
      for (int q = 0; q < S; ++q)
        if (lengths[size_t(q)] > 0)
          std::copy_n(x.rounded.begin() + long(cu_seqlens[size_t(q)]) * E, E, first_want.begin() + long(q) * E);
      INFO("gather_first " << tag);
      CHECK(first == first_want);
      CHECK(untouched(*d_first, size_t(S) * E, kGuard, s));

      // mean_pool: fp32 out, against ref::mean_rows per sequence.
      DeviceBuffer d_mean(size_t(S) * E * sizeof(float));
      cu::mean_pool(t, d_mean.as<float>(), x.buf->get(), d_cu->as<int32_t>(), S, E, s);
      std::vector<float> mean(size_t(S) * E), mean_want(size_t(S) * E);
      cu::copy_to_host(mean.data(), d_mean.get(), mean.size() * sizeof(float), s);
      cu::sync(s);
      for (int q = 0; q < S; ++q)
        xlmr::ref::mean_rows(mean_want.data() + size_t(q) * E, x.rounded.data() + size_t(cu_seqlens[size_t(q)]) * E,
                             lengths[size_t(q)], E);
      judge("mean_pool " + tag, compare(mean_want, mean, S, E, 1e-4, 1e-5), true, sum);

      // activation, in place on a copy of x.
      for (bool use_tanh : {true, false}) {
        const auto d_act = guarded_output(n, s);
        cu::upload_f32_as(t, d_act->get(), x.rounded.data(), n, s);  // exact: already 16-bit values
        cu::activation(t, d_act->get(), n, use_tanh, s);
        cu::sync(s);
        const std::vector<float> got = read16(t, d_act->get(), n, s);
        std::vector<float> want(n);
        for (size_t i = 0; i < n; ++i)
          want[i] = use_tanh ? std::tanh(x.rounded[i]) : (x.rounded[i] > 0.f ? x.rounded[i] : 0.f);
        // ReLU keeps exact values; tanh is rounded once more.
        judge(std::string(use_tanh ? "tanh " : "relu ") + tag,
              compare(want, got, N, E, use_tanh ? 1e-6 : 0.0, use_tanh ? rtol_of(t) : 0.0),
              untouched(*d_act, n, kGuard, s), sum);
      }
    }
  }
  WARN("pooling and activation, " << sum.runs << " runs: min row cosine " << sum.min_cosine << ", max abs error "
                                  << sum.max_abs_error);
}

TEST_CASE("CUDA bias_activation (the unfused GEMM epilogue) matches ref::gelu", "[cuda]") {
  if (!have_gpu("bias_activation test")) return;
  Summary sum;
  uint32_t seed = 350;
  for (Half16 t : kTypes)
    for (const auto& shape : std::vector<std::pair<int, int>>{{1, 2}, {7, 40}, {300, 768}, {33, 3072}})
      for (bool gelu : {false, true}) {
        const int rows = shape.first, cols = shape.second;
        StreamHolder stream;
        const cu::Stream s = stream.get();
        const size_t n = size_t(rows) * cols;
        const std::vector<float> bias = random_normal(size_t(cols), seed += 10, 0.5f);
        const auto d_bias = upload_raw(bias, s);
        const auto d = guarded_output(n, s);
        const Device16 x = upload16(t, random_normal(n, seed + 1, 2.f), s);
        cu::upload_f32_as(t, d->get(), x.rounded.data(), n, s);  // exact: already 16-bit values
        cu::bias_activation(t, d->get(), d_bias->as<float>(), rows, cols, gelu, s);
        cu::sync(s);
        const std::vector<float> got = read16(t, d->get(), n, s);
        std::vector<float> want(n);
        for (size_t i = 0; i < n; ++i) {
          const float v = x.rounded[i] + bias[i % size_t(cols)];
          want[i] = gelu ? xlmr::ref::gelu(v) : v;
        }
        // One rounding to the 16-bit type, from fp32 math.
        judge(std::string(type_name(t)) + " " + std::to_string(rows) + " x " + std::to_string(cols) +
                  (gelu ? " bias+GELU" : " bias"),
              compare(want, got, rows, cols, 1e-6, rtol_of(t)), untouched(*d, n, kGuard, s), sum);
      }
  WARN("bias_activation, " << sum.runs << " runs: min row cosine " << sum.min_cosine << ", max abs error "
                           << sum.max_abs_error);
}

TEST_CASE("CUDA cuBLASLt GEMMs match ref::linear at XLM-R base shapes", "[cuda]") {
  if (!test::gpu::cublas_available("GEMM test")) return;
  struct Shape {
    int in, out;
    cu::LtEpilogue ep;
  };
  const Shape shapes[] = {
      {768, 2304, cu::LtEpilogue::bias},       // QKV
      {768, 3072, cu::LtEpilogue::bias_gelu},  // FFN1
      {3072, 768, cu::LtEpilogue::none},       // FFN2 (bias goes to the LayerNorm)
      {3072, 768, cu::LtEpilogue::bias},
      {768, 768, cu::LtEpilogue::none},  // attention output
  };
  Summary sum;
  uint32_t seed = 400;
  for (Half16 t : kTypes)
    for (const Shape& sh : shapes) check_gemm(t, sh.in, sh.out, sh.ep, kGemmRows, seed += 10, sum);
  WARN("GEMMs at base shapes, " << sum.runs << " runs: min row cosine " << sum.min_cosine << ", max abs error "
                                << sum.max_abs_error);
}

TEST_CASE("CUDA cuBLASLt GEMMs match ref::linear at small and odd shapes", "[cuda]") {
  if (!test::gpu::cublas_available("GEMM test")) return;
  struct Shape {
    int in, out;
    cu::LtEpilogue ep;
  };
  const Shape shapes[] = {
      {768, 2, cu::LtEpilogue::bias},        // a 2-label head: output rows of 4 bytes
      {64, 256, cu::LtEpilogue::bias_gelu},  // a hidden-64 model's FFN1
      {256, 64, cu::LtEpilogue::none},
      {36, 20, cu::LtEpilogue::bias},        // rows of 72 and 40 bytes
      {40, 1000, cu::LtEpilogue::bias_gelu},
  };
  Summary sum;
  uint32_t seed = 500;
  for (Half16 t : kTypes)
    for (const Shape& sh : shapes) check_gemm(t, sh.in, sh.out, sh.ep, kGemmRows, seed += 10, sum);
  WARN("GEMMs at small shapes, " << sum.runs << " runs: min row cosine " << sum.min_cosine << ", max abs error "
                                 << sum.max_abs_error);
}

TEST_CASE("CUDA cuBLASLt GEMM refuses calls outside its plan", "[cuda]") {
  if (!test::gpu::cublas_available("GEMM argument test")) return;
  StreamHolder stream;
  const cu::Stream s = stream.get();
  ContextPtr ctx(cu::lt_create(size_t(1) << 20));
  GemmPtr with_bias(cu::lt_gemm_create(ctx.get(), Half16::f16, 64, 32, cu::LtEpilogue::bias, 16));
  GemmPtr without_bias(cu::lt_gemm_create(ctx.get(), Half16::bf16, 64, 32, cu::LtEpilogue::none, 16));
  DeviceBuffer a(64 * 17 * 2), w(64 * 32 * 2), d(32 * 17 * 2), bias(32 * 4);
  CHECK_THROWS_AS(cu::lt_gemm_run(with_bias.get(), d.get(), a.get(), w.get(), bias.as<float>(), 17, s),
                  xlmr::Error);  // more rows than planned
  CHECK_THROWS_AS(cu::lt_gemm_run(with_bias.get(), d.get(), a.get(), w.get(), nullptr, 4, s), xlmr::Error);
  CHECK_THROWS_AS(cu::lt_gemm_run(without_bias.get(), d.get(), a.get(), w.get(), bias.as<float>(), 4, s),
                  xlmr::Error);
  CHECK_NOTHROW(cu::lt_gemm_run(without_bias.get(), d.get(), a.get(), w.get(), nullptr, 0, s));
  CHECK_THROWS_AS(cu::lt_gemm_create(ctx.get(), Half16::f16, 0, 32, cu::LtEpilogue::none, 16), xlmr::Error);
  CHECK_NOTHROW(cu::sync(s));
}

#endif  // XLMR_HAVE_CUDA
