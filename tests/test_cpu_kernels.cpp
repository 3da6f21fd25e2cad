// The fused CPU kernels (kernels/cpu) against their plain twins (kernels/ref),
// on every instruction set this CPU runs and on 1, 2 and 3 threads (and the
// OpenMP default for the row kernels).
//
// What is held:
//  - values: LayerNorm kernels within 1e-5 of the double-accumulating
//    reference, attention within 2e-5 (outputs are convex combinations of
//    V values of size ~1, so an absolute bound is the natural one);
//  - every bf16 copy is exactly the round-to-nearest-even image of the fp32
//    result the same call wrote (checked with a scalar RNE written here);
//  - results do not move by a single bit with the thread count, nor with
//    whether a bf16 copy is asked for;
//  - nothing is written past the end of an output (guard elements).
#ifdef XLMR_HAVE_ONEDNN

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/attention.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/embed.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"

namespace {

using xlmr::cpu::Isa;

const int kThreads[] = {1, 2, 3};
// The row kernels also under 0: the calling thread's OpenMP default.
const int kRowThreads[] = {1, 2, 3, 0};

// Elements past the end of each output buffer that no kernel may touch.
constexpr size_t kGuard = 37;
constexpr uint32_t kFloatSentinelBits = 0x7FC0DEADu;  // a NaN: an unwritten element cannot pass a value check
constexpr uint16_t kBf16Sentinel = 0xBEEF;

float float_from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// fp32 -> bf16, round to nearest, ties to even (finite and infinite inputs).
uint16_t bf16_rne(float f) {
  uint32_t b = bits_of(f);
  b += 0x7FFFu + ((b >> 16) & 1u);
  return uint16_t(b >> 16);
}

// The instruction sets under test: each one this CPU runs. One it lacks is
// reported and skipped, not failed.
std::vector<Isa> isas_under_test() {
  std::vector<Isa> isas;
  for (const char* name : {"avx512", "avx2"}) {
    try {
      const Isa isa = xlmr::cpu::choose_isa(name);
      CHECK(std::string(xlmr::cpu::to_string(isa)) == name);
      isas.push_back(isa);
    } catch (const xlmr::Error& e) {
      WARN("skipping ISA " << name << " on this CPU: " << e.what());
    }
  }
  return isas;
}

std::vector<float> normal_vector(size_t n, std::mt19937& rng, float mean = 0.0f, float stddev = 1.0f) {
  std::normal_distribution<float> dist(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> float_buffer(size_t n) { return std::vector<float>(n + kGuard, float_from_bits(kFloatSentinelBits)); }
std::vector<uint16_t> bf16_buffer(size_t n) { return std::vector<uint16_t>(n + kGuard, kBf16Sentinel); }

bool float_guard_intact(const std::vector<float>& v, size_t n) {
  for (size_t i = n; i < v.size(); ++i)
    if (bits_of(v[i]) != kFloatSentinelBits) return false;
  return true;
}

bool bf16_guard_intact(const std::vector<uint16_t>& v, size_t n) {
  for (size_t i = n; i < v.size(); ++i)
    if (v[i] != kBf16Sentinel) return false;
  return true;
}

// An element as a diagnostic: its value and its bits.
std::string show(float f) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g (0x%08X)", double(f), unsigned(bits_of(f)));
  return buf;
}
std::string show(uint16_t h) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%04X", unsigned(h));
  return buf;
}

// Checks |got - want| <= atol + rtol |want| over n elements, reporting the
// worst element (a NaN or an unwritten element counts as infinitely far).
void check_close(const float* got, const float* want, size_t n, double atol, double rtol) {
  double worst = 0.0, worst_diff = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = std::fabs(double(got[i]) - double(want[i]));
    if (std::isnan(d)) d = INFINITY;
    const double r = d / (atol + rtol * std::fabs(double(want[i])));
    if (r > worst) {
      worst = r;
      worst_diff = d;
      at = i;
    }
  }
  INFO("worst element " << at << " of " << n << ": got " << (n ? show(got[at]) : "-") << ", want "
                        << (n ? show(want[at]) : "-") << ", |diff| " << worst_diff << " (atol " << atol
                        << ", rtol " << rtol << ")");
  CHECK(worst <= 1.0);
}

// Every bf16 value must be the RNE image of the fp32 value next to it.
void check_bf16_of(const uint16_t* got16, const float* f, size_t n) {
  size_t bad = 0, first = n;
  for (size_t i = 0; i < n; ++i)
    if (got16[i] != bf16_rne(f[i])) {
      if (!bad) first = i;
      ++bad;
    }
  INFO(bad << " of " << n << " bf16 values differ from RNE(fp32)"
           << (bad ? ", first at " + std::to_string(first) + ": got " + show(got16[first]) + ", want " +
                         show(bf16_rne(f[first])) + " for fp32 " + show(f[first])
                   : std::string()));
  CHECK(bad == 0);
}

// Bitwise equality, reporting the first differing element.
template <typename T>
void check_same_bits(const std::vector<T>& got, const std::vector<T>& want, size_t n) {
  REQUIRE(got.size() >= n);
  REQUIRE(want.size() >= n);
  size_t first = n, bad = 0;
  for (size_t i = 0; i < n; ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      if (!bad) first = i;
      ++bad;
    }
  INFO(bad << " of " << n << " elements differ bitwise"
           << (bad ? ", first at " + std::to_string(first) + ": " + show(got[first]) + " vs " + show(want[first])
                   : std::string()));
  CHECK(bad == 0);
}

// ---- embed_layernorm ---------------------------------------------------------

struct EmbedCase {
  int N, E, V, P;
  std::vector<int32_t> ids, positions;
  std::vector<float> word, pos, type0, gamma, beta;

  EmbedCase(int n, int e, std::mt19937& rng) : N(n), E(e), V(57), P(33) {
    std::uniform_int_distribution<int32_t> vid(0, V - 1), pid(0, P - 1);
    for (int t = 0; t < N; ++t) {
      ids.push_back(vid(rng));
      positions.push_back(pid(rng));
    }
    word = normal_vector(size_t(V) * E, rng);
    pos = normal_vector(size_t(P) * E, rng);
    type0 = normal_vector(size_t(E), rng);
    gamma = normal_vector(size_t(E), rng, 1.0f, 0.1f);
    beta = normal_vector(size_t(E), rng, 0.0f, 0.1f);
  }

  xlmr::EmbedArgs args(float* out, bool with_type) const {
    const float* t0 = with_type ? type0.data() : nullptr;
    return {out, ids.data(), positions.data(), word.data(), pos.data(), t0, gamma.data(), beta.data(), N, E, 1e-5f};
  }
};

// Runs the CPU kernel on every ISA x {no bf16, bf16} x thread count and holds
// it to `want` (the reference output), to RNE for the bf16 copy, and to the
// first run of the same ISA bitwise.
void check_embed_case(const EmbedCase& c, bool with_type, const std::vector<float>& want,
                      const std::vector<Isa>& isas) {
  const size_t n = size_t(c.N) * c.E;
  for (Isa isa : isas) {
    std::vector<float> first;
    for (bool with_bf16 : {false, true})
      for (int threads : kRowThreads) {
        INFO("embed_layernorm: N " << c.N << ", E " << c.E << ", type0 " << with_type << ", ISA "
                                   << xlmr::cpu::to_string(isa) << ", threads " << threads << ", bf16 " << with_bf16);
        auto out = float_buffer(n);
        auto out16 = bf16_buffer(n);
        xlmr::cpu::embed_layernorm(isa, c.args(out.data(), with_type), with_bf16 ? out16.data() : nullptr, threads);
        check_close(out.data(), want.data(), n, 1e-5, 1e-5);
        CHECK(float_guard_intact(out, n));
        if (with_bf16) {
          check_bf16_of(out16.data(), out.data(), n);
          CHECK(bf16_guard_intact(out16, n));
        } else {
          CHECK(bf16_guard_intact(out16, 0));  // a null bf16 pointer: nothing anywhere
        }
        if (first.empty())
          first = out;
        else
          check_same_bits(out, first, n);
      }
  }
}

TEST_CASE("cpu embed_layernorm matches the reference on every ISA and thread count", "[cpu][kernels]") {
  const auto isas = isas_under_test();
  std::mt19937 rng(1234);
  for (int E : {3, 16, 40, 64, 100, 768, 1024})
    for (int N : {1, 7, 300}) {
      const EmbedCase c(N, E, rng);
      for (bool with_type : {false, true}) {
        std::vector<float> want(size_t(N) * E);
        xlmr::ref::embed_layernorm(c.args(want.data(), with_type));
        check_embed_case(c, with_type, want, isas);
      }
    }
}

// ---- add_bias_residual_layernorm ---------------------------------------------

struct ResidualCase {
  int N, E;
  std::vector<float> x, y, bias, gamma, beta;

  ResidualCase(int n, int e, std::mt19937& rng, float x_mean = 0.0f) : N(n), E(e) {
    x = normal_vector(size_t(N) * E, rng, x_mean, 1.0f);
    y = normal_vector(size_t(N) * E, rng);
    bias = normal_vector(size_t(E), rng, 0.0f, 0.5f);
    gamma = normal_vector(size_t(E), rng, 1.0f, 0.1f);
    beta = normal_vector(size_t(E), rng, 0.0f, 0.1f);
  }

  xlmr::ResidualLayerNormArgs args(float* x_inout) const {
    return {x_inout, y.data(), bias.data(), gamma.data(), beta.data(), N, E, 1e-5f};
  }
};

void check_residual_case(const ResidualCase& c, const std::vector<float>& want, const std::vector<Isa>& isas) {
  const size_t n = size_t(c.N) * c.E;
  for (Isa isa : isas) {
    std::vector<float> first;
    for (bool with_bf16 : {false, true})
      for (int threads : kRowThreads) {
        INFO("add_bias_residual_layernorm: N " << c.N << ", E " << c.E << ", ISA " << xlmr::cpu::to_string(isa)
                                               << ", threads " << threads << ", bf16 " << with_bf16);
        auto x = float_buffer(n);
        std::copy(c.x.begin(), c.x.end(), x.begin());
        auto out16 = bf16_buffer(n);
        xlmr::cpu::add_bias_residual_layernorm(isa, c.args(x.data()), with_bf16 ? out16.data() : nullptr, threads);
        check_close(x.data(), want.data(), n, 1e-5, 1e-5);
        CHECK(float_guard_intact(x, n));
        if (with_bf16) {
          check_bf16_of(out16.data(), x.data(), n);
          CHECK(bf16_guard_intact(out16, n));
        } else {
          CHECK(bf16_guard_intact(out16, 0));
        }
        if (first.empty())
          first = x;
        else
          check_same_bits(x, first, n);
      }
  }
}

TEST_CASE("cpu add_bias_residual_layernorm matches the reference on every ISA and thread count", "[cpu][kernels]") {
  const auto isas = isas_under_test();
  std::mt19937 rng(4321);
  for (int E : {3, 16, 40, 64, 100, 768, 1024})
    for (int N : {1, 7, 300}) {
      const ResidualCase c(N, E, rng);
      std::vector<float> want = c.x;
      xlmr::ref::add_bias_residual_layernorm(c.args(want.data()));
      check_residual_case(c, want, isas);
    }
}

// Pre-norm models (XLM-R XL): the kernels also keep the sum before LayerNorm
// (raw / x) and write the LayerNorm to a second buffer. Both against the
// reference, and the LayerNorm bit for bit the post-norm kernel's.
TEST_CASE("cpu LayerNorm kernels in pre-norm form: the sum kept and the LayerNorm beside it", "[cpu][kernels]") {
  const auto isas = isas_under_test();
  std::mt19937 rng(2468);
  for (int E : {3, 40, 64, 768})
    for (int N : {1, 7, 300}) {
      const size_t n = size_t(N) * E;
      const EmbedCase ec(N, E, rng);
      std::vector<float> want_out(n), want_raw(n);
      xlmr::EmbedArgs ra = ec.args(want_out.data(), true);
      ra.raw = want_raw.data();
      xlmr::ref::embed_layernorm(ra);
      const ResidualCase rc(N, E, rng);
      std::vector<float> want_x = rc.x, want_normed(n);
      xlmr::ResidualLayerNormArgs rr = rc.args(want_x.data());
      rr.normed = want_normed.data();
      xlmr::ref::add_bias_residual_layernorm(rr);
      for (Isa isa : isas)
        for (int threads : kRowThreads) {
          INFO("pre-norm kernels: N " << N << ", E " << E << ", ISA " << xlmr::cpu::to_string(isa) << ", threads "
                                      << threads);
          auto out = float_buffer(n), raw = float_buffer(n), post = float_buffer(n);
          auto out16 = bf16_buffer(n);
          xlmr::EmbedArgs a = ec.args(out.data(), true);
          a.raw = raw.data();
          xlmr::cpu::embed_layernorm(isa, a, out16.data(), threads);
          check_close(raw.data(), want_raw.data(), n, 1e-6, 1e-6);
          check_close(out.data(), want_out.data(), n, 1e-5, 1e-5);
          check_bf16_of(out16.data(), out.data(), n);
          CHECK(float_guard_intact(out, n));
          CHECK(float_guard_intact(raw, n));
          xlmr::cpu::embed_layernorm(isa, ec.args(post.data(), true), nullptr, threads);
          check_same_bits(out, post, n);

          auto x = float_buffer(n), normed = float_buffer(n), x_post = float_buffer(n);
          std::copy(rc.x.begin(), rc.x.end(), x.begin());
          std::copy(rc.x.begin(), rc.x.end(), x_post.begin());
          xlmr::ResidualLayerNormArgs b = rc.args(x.data());
          b.normed = normed.data();
          xlmr::cpu::add_bias_residual_layernorm(isa, b, out16.data(), threads);
          check_close(x.data(), want_x.data(), n, 1e-6, 1e-6);
          check_close(normed.data(), want_normed.data(), n, 1e-5, 1e-5);
          check_bf16_of(out16.data(), normed.data(), n);
          CHECK(float_guard_intact(x, n));
          CHECK(float_guard_intact(normed, n));
          xlmr::cpu::add_bias_residual_layernorm(isa, rc.args(x_post.data()), nullptr, threads);
          check_same_bits(normed, x_post, n);
        }
    }
}

TEST_CASE("cpu LayerNorm kernels: a large common offset and constant rows", "[cpu][kernels]") {
  const auto isas = isas_under_test();
  std::mt19937 rng(99);

  SECTION("rows centred far from zero keep their precision (two-pass variance)") {
    for (int E : {64, 100, 768}) {
      const ResidualCase c(5, E, rng, 10.0f);
      std::vector<float> want = c.x;
      xlmr::ref::add_bias_residual_layernorm(c.args(want.data()));
      check_residual_case(c, want, isas);
    }
  }

  SECTION("a constant row normalises to beta exactly") {
    // 0.5 + 0.25 is exact and so is its mean, so the centred row is 0 and the
    // output is beta with no rounding anywhere.
    for (int E : {3, 40, 768}) {
      ResidualCase c(4, E, rng);
      std::fill(c.x.begin(), c.x.end(), 0.5f);
      std::fill(c.y.begin(), c.y.end(), 0.25f);
      std::fill(c.bias.begin(), c.bias.end(), 0.0f);
      std::vector<float> want(size_t(c.N) * E);
      for (int t = 0; t < c.N; ++t) std::copy(c.beta.begin(), c.beta.end(), want.begin() + size_t(t) * E);
      check_residual_case(c, want, isas);

      EmbedCase e(4, E, rng);
      e.beta = c.beta;
      std::fill(e.word.begin(), e.word.end(), 0.5f);
      std::fill(e.pos.begin(), e.pos.end(), 0.25f);
      check_embed_case(e, false, want, isas);
      for (Isa isa : isas) {
        INFO("constant rows, E " << E << ", ISA " << xlmr::cpu::to_string(isa));
        auto out = float_buffer(want.size());
        xlmr::cpu::embed_layernorm(isa, e.args(out.data(), false), nullptr, 2);
        check_same_bits(out, want, want.size());
        auto x = float_buffer(want.size());
        std::copy(c.x.begin(), c.x.end(), x.begin());
        xlmr::cpu::add_bias_residual_layernorm(isa, c.args(x.data()), nullptr, 2);
        check_same_bits(x, want, want.size());
      }
    }
  }
}

// ---- cast_to_bf16 -------------------------------------------------------------

// Inputs that sit exactly on, just below and just above the halfway point
// between two bf16 values, with even and odd kept parts, plus zeros,
// subnormals, extremes and infinities; then random values at many scales.
std::vector<float> cast_inputs(size_t n, std::mt19937& rng) {
  const uint32_t special[] = {
      0x3F808000u,  // 1 + half an ulp, even below: tie stays down
      0x3F818000u,  // odd below: tie goes up
      0x3F807FFFu,  // just under half: down
      0x3F808001u,  // just over half: up
      0x3F81FFFFu,  // up, carries into the kept part
      0x3FFFFFFFu,  // up, carries into the exponent
      0xBF808000u, 0xBF818000u, 0xBF807FFFu, 0xBF808001u,  // the same, negative
      0x00000000u, 0x80000000u,                            // +0, -0
      0x00000001u, 0x00008000u, 0x00018000u, 0x007FFFFFu,  // subnormals, incl. ties
      0x00800000u, 0x80800000u,                            // smallest normals
      0x7F7FFFFFu, 0xFF7FFFFFu,                            // largest finite: round to infinity
      0x7F7F7FFFu, 0x7F7F8000u,                            // just below the top: down, tie (odd) up to inf
      0x7F800000u, 0xFF800000u,                            // infinities
      0x3F800000u, 0x40490FDBu, 0xC2F6E979u,               // exact 1, pi, -123.456
  };
  const size_t n_special = sizeof special / sizeof special[0];
  std::vector<float> v(n);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> scale(-30, 30);
  std::uniform_int_distribution<uint32_t> low16(0, 0xFFFF);
  for (size_t i = 0; i < n; ++i) {
    // Specials spread through the array so they land in vector bodies and in tails.
    if (i % 7 == 3 || i < n_special) {
      v[i] = float_from_bits(special[(i * 5 + i / 7) % n_special]);
    } else if (i % 3 == 0) {
      // Random value whose low half is forced to the tie pattern.
      v[i] = float_from_bits((bits_of(normal(rng)) & 0xFFFF0000u) | 0x8000u);
    } else {
      const float x = std::ldexp(normal(rng), scale(rng));
      v[i] = float_from_bits((bits_of(x) & 0xFFFF0000u) | low16(rng));
    }
  }
  return v;
}

TEST_CASE("cpu cast_to_bf16 rounds to nearest even on every ISA and thread count", "[cpu][kernels]") {
  const auto isas = isas_under_test();
  std::mt19937 rng(7);
  for (size_t n : {size_t(0), size_t(1), size_t(15), size_t(17), size_t(1000), size_t(100003)}) {
    const auto in = cast_inputs(n + 1, rng);  // one extra so the offset run below has n elements too
    for (Isa isa : isas) {
      std::vector<uint16_t> first;
      for (int threads : kRowThreads) {
        INFO("cast_to_bf16: n " << n << ", ISA " << xlmr::cpu::to_string(isa) << ", threads " << threads);
        auto out = bf16_buffer(n);
        xlmr::cpu::cast_to_bf16(isa, out.data(), in.data(), n, threads);
        check_bf16_of(out.data(), in.data(), n);
        CHECK(bf16_guard_intact(out, n));
        if (first.empty())
          first = out;
        else
          check_same_bits(out, first, n);

        // Pointers off any vector alignment: the header asks for none.
        auto out_off = bf16_buffer(n + 1);
        xlmr::cpu::cast_to_bf16(isa, out_off.data() + 1, in.data() + 1, n, threads);
        CHECK(out_off[0] == kBf16Sentinel);
        check_bf16_of(out_off.data() + 1, in.data() + 1, n);
        CHECK(bf16_guard_intact(out_off, n + 1));
      }
    }
  }
}

TEST_CASE("cpu int8 kernels: quantizing exactly as the reference, dequantizing within GELU's approximation",
          "[cpu][kernels][int8]") {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int K : {1, 7, 16, 33, 768}) {
    const int M = 37;
    std::vector<float> x(size_t(M) * K);
    for (auto& v : x) v = normal(rng) * 3.0f;
    for (int i = 0; i < K; ++i) x[size_t(5) * K + i] = 0.0f;          // a row of zeros
    for (int i = 0; i < K; ++i) x[size_t(6) * K + i] = float(i % 5 - 2);  // ties at x.5 after scaling
    x[size_t(7) * K] = 1e30f;                                          // one huge value
    for (float qmax : {127.0f, 63.0f}) {  // 63: 7-bit weights, for CPUs without VNNI
      std::vector<int8_t> want_q(x.size());
      std::vector<float> want_s(static_cast<size_t>(M));
      xlmr::ref::quantize_rows_s8(want_q.data(), want_s.data(), x.data(), M, K, qmax);
      CHECK(want_s[5] == 0.0f);
      for (Isa isa : isas_under_test()) {
        for (int threads : kRowThreads) {
          INFO("quantize: K " << K << ", qmax " << qmax << ", ISA " << xlmr::cpu::to_string(isa) << ", threads "
                              << threads);
          std::vector<int8_t> q(x.size() + 1, 99);
          std::vector<float> sc(static_cast<size_t>(M), -1.0f);
          xlmr::cpu::quantize_rows_s8(isa, {q.data(), sc.data(), x.data(), M, K, qmax}, threads);
          CHECK(std::memcmp(q.data(), want_q.data(), want_q.size()) == 0);
          CHECK(sc == want_s);
          CHECK(q.back() == 99);  // nothing past the rows
        }
      }
      // The scale's promise: every value within half a step of its integer, within +-qmax.
      for (int r = 0; r < M; ++r)
        for (int i = 0; i < K; ++i) {
          const size_t at = size_t(r) * K + i;
          CHECK(std::abs(int(want_q[at])) <= int(qmax));
          CHECK(std::abs(double(want_q[at]) * want_s[size_t(r)] - x[at]) <= 0.5001 * want_s[size_t(r)] + 1e-30);
        }
    }
  }
  // Activations: uint8 over each row's range, with a zero point; then the
  // same rows times per-column factors (an int8 GEMM's equalization).
  for (int K : {1, 7, 16, 33, 768})
  for (bool with_mul : {false, true}) {
    const int M = 37;
    std::vector<float> x(static_cast<size_t>(M) * K);
    for (auto& v : x) v = normal(rng) * 3.0f;
    for (int i = 0; i < K; ++i) x[size_t(5) * K + i] = 0.0f;                   // a row of zeros
    for (int i = 0; i < K; ++i) x[size_t(6) * K + i] = std::abs(x[size_t(6) * K + i]);  // no negatives
    for (int i = 0; i < K; ++i) x[size_t(7) * K + i] = -std::abs(x[size_t(7) * K + i]);  // no positives
    for (int i = 0; i < K; ++i) x[size_t(8) * K + i] = std::max(x[size_t(8) * K + i], -0.17f);  // GELU-like
    std::vector<float> mul;  // factors from 1/30 to 30
    std::uniform_real_distribution<float> log_mul(-3.4f, 3.4f);
    if (with_mul) for (int i = 0; i < K; ++i) mul.push_back(std::exp(log_mul(rng)));
    const float* col_mul = with_mul ? mul.data() : nullptr;
    std::vector<uint8_t> want_q(x.size());
    std::vector<float> want_s(static_cast<size_t>(M));
    std::vector<int32_t> want_z(static_cast<size_t>(M));
    xlmr::ref::quantize_rows_u8(want_q.data(), want_s.data(), want_z.data(), x.data(), M, K, col_mul);
    CHECK(want_s[5] == 0.0f);
    for (Isa isa : isas_under_test()) {
      for (int threads : kRowThreads) {
        INFO("quantize u8: K " << K << ", factors " << with_mul << ", ISA " << xlmr::cpu::to_string(isa)
                               << ", threads " << threads);
        std::vector<uint8_t> q(x.size() + 1, 99);
        std::vector<float> sc(static_cast<size_t>(M), -1.0f);
        std::vector<int32_t> z(static_cast<size_t>(M), -1);
        xlmr::cpu::quantize_rows_u8(isa, {q.data(), sc.data(), z.data(), x.data(), M, K, col_mul}, threads);
        CHECK(std::memcmp(q.data(), want_q.data(), want_q.size()) == 0);
        CHECK(sc == want_s);
        CHECK(z == want_z);
        CHECK(q.back() == 99);
      }
    }
    for (int r = 0; r < M; ++r) {
      const double sr = want_s[size_t(r)];
      CHECK(want_z[size_t(r)] >= 0);
      CHECK(want_z[size_t(r)] <= 255);
      for (int i = 0; i < K; ++i) {
        const size_t at = size_t(r) * K + i;
        // Within about half a step (the zero point is rounded too).
        const double xv = with_mul ? double(x[at] * mul[size_t(i)]) : double(x[at]);
        CHECK(std::abs((double(want_q[at]) - want_z[size_t(r)]) * sr - xv) <= 1.0001 * sr + 1e-30);
      }
    }
  }
  // A token with a NaN or an infinity: NaN results, as f32 would give, never quiet zeros.
  {
    const int M = 3, K = 37;
    std::vector<float> x(static_cast<size_t>(M) * K, 0.5f);
    x[size_t(0) * K + 20] = std::numeric_limits<float>::quiet_NaN();
    x[size_t(1) * K + 36] = -std::numeric_limits<float>::infinity();
    std::vector<uint8_t> want_q(x.size());
    std::vector<float> want_s(static_cast<size_t>(M));
    std::vector<int32_t> want_z(static_cast<size_t>(M));
    xlmr::ref::quantize_rows_u8(want_q.data(), want_s.data(), want_z.data(), x.data(), M, K);
    CHECK(std::isnan(want_s[0]));
    CHECK(std::isnan(want_s[1]));
    CHECK(want_s[2] == 0.5f / 255.0f);
    for (Isa isa : isas_under_test()) {
      INFO("quantize u8, NaN and infinity: ISA " << xlmr::cpu::to_string(isa));
      std::vector<uint8_t> q(x.size());
      std::vector<float> sc(static_cast<size_t>(M));
      std::vector<int32_t> z(static_cast<size_t>(M));
      xlmr::cpu::quantize_rows_u8(isa, {q.data(), sc.data(), z.data(), x.data(), M, K}, 1);
      // The bad rows' q is unspecified (their scale makes every result NaN); the good row's is exact.
      CHECK(std::memcmp(q.data() + 2 * K, want_q.data() + 2 * K, K) == 0);
      CHECK(z == want_z);
      CHECK(std::isnan(sc[0]));
      CHECK(std::isnan(sc[1]));
      CHECK(sc[2] == want_s[2]);
    }
  }
  for (int N : {1, 9, 16, 50, 3072}) {
    const int M = 21;
    std::vector<int32_t> acc(static_cast<size_t>(M) * N), zero(static_cast<size_t>(M)), col_sum(static_cast<size_t>(N));
    std::vector<float> row_scale(static_cast<size_t>(M)), col_scale(static_cast<size_t>(N)), bias(static_cast<size_t>(N));
    std::uniform_int_distribution<int32_t> big(-3000000, 3000000), z8(0, 255), cs(-20000, 20000);
    for (auto& v : acc) v = big(rng);
    for (auto& v : zero) v = z8(rng);
    for (auto& v : col_sum) v = cs(rng);
    for (auto& v : row_scale) v = std::abs(normal(rng)) * 0.02f;
    for (auto& v : col_scale) v = std::abs(normal(rng)) * 0.001f;
    for (auto& v : bias) v = normal(rng);
    for (xlmr::Epilogue ep : {xlmr::Epilogue::none, xlmr::Epilogue::gelu}) {
      for (bool has_bias : {false, true}) {
        std::vector<float> want(acc.size());
        xlmr::ref::dequantize_rows(want.data(), acc.data(), row_scale.data(), zero.data(), col_scale.data(),
                                   col_sum.data(), has_bias ? bias.data() : nullptr, M, N, ep);
        for (Isa isa : isas_under_test()) {
          for (int threads : kRowThreads) {
            INFO("dequantize: N " << N << ", ISA " << xlmr::cpu::to_string(isa) << ", threads " << threads
                                  << ", gelu " << (ep == xlmr::Epilogue::gelu) << ", bias " << has_bias);
            // In place, as the GEMM runs it: the int32 sums become the floats.
            std::vector<int32_t> buf = acc;
            float* y = reinterpret_cast<float*>(buf.data());
            xlmr::cpu::dequantize_rows(isa, {y, buf.data(), row_scale.data(), zero.data(), col_scale.data(),
                                             col_sum.data(), has_bias ? bias.data() : nullptr, M, N,
                                             ep == xlmr::Epilogue::gelu},
                                       threads);
            double worst = 0;
            for (size_t i = 0; i < want.size(); ++i) {
              float got;
              std::memcpy(&got, &buf[i], sizeof got);
              // Without GELU the same operations, bit for bit; with it, erf within 1.5e-7.
              const double tol = ep == xlmr::Epilogue::gelu ? 4e-7 * std::max(1.0, std::abs(double(want[i]))) : 0.0;
              worst = std::max(worst, std::abs(double(got) - want[i]) - tol);
            }
            CHECK(worst <= 0);
          }
        }
      }
    }
  }
}

TEST_CASE("bf16 test helper rounds to nearest even", "[cpu][kernels]") {
  // The oracle itself, on hand-worked cases.
  CHECK(bf16_rne(1.0f) == 0x3F80);
  CHECK(bf16_rne(float_from_bits(0x3F808000u)) == 0x3F80);  // tie, even: down
  CHECK(bf16_rne(float_from_bits(0x3F818000u)) == 0x3F82);  // tie, odd: up
  CHECK(bf16_rne(float_from_bits(0x3F807FFFu)) == 0x3F80);
  CHECK(bf16_rne(float_from_bits(0x3F808001u)) == 0x3F81);
  CHECK(bf16_rne(float_from_bits(0x7F7FFFFFu)) == 0x7F80);  // overflow to infinity
  CHECK(bf16_rne(-INFINITY) == 0xFF80);
}

// ---- varlen_attention ---------------------------------------------------------

// A packed batch: sequences of the given lengths, rows [cu[s], cu[s+1]).
struct AttnBatch {
  int H, D, E;
  float qk_scale;
  std::vector<int32_t> lens, cu;
  std::vector<float> qkv;  // [N, 3E]

  // Q and K are scaled by qk_scale: scores then have a spread of about
  // qk_scale^2, so a larger scale gives a peakier softmax.
  AttnBatch(std::vector<int32_t> lengths, int heads, int head_dim, std::mt19937& rng, float scale = 1.0f)
      : H(heads), D(head_dim), E(heads * head_dim), qk_scale(scale), lens(std::move(lengths)) {
    cu.push_back(0);
    for (int32_t n : lens) cu.push_back(cu.back() + n);
    qkv = normal_vector(size_t(rows()) * 3 * E, rng);
    for (size_t i = 0; i < qkv.size(); ++i)
      if (i % (size_t(3) * E) < size_t(2) * E) qkv[i] *= qk_scale;
  }
  int rows() const { return cu.back(); }
  int n_seqs() const { return int(lens.size()); }
  int max_len() const { return lens.empty() ? 0 : *std::max_element(lens.begin(), lens.end()); }
};

// The reference, run on a padded copy of the packed batch (pad rows filled
// with noise that must not leak), gathered back into packed row order.
std::vector<float> reference_attention(const AttnBatch& b, std::mt19937& rng) {
  const int S = b.n_seqs(), L = std::max(1, b.max_len()), E = b.E;
  std::vector<float> out(size_t(b.rows()) * E);
  if (S == 0) return out;
  std::vector<float> padded = normal_vector(size_t(S) * L * 3 * E, rng, 0.0f, 3.0f);
  for (int s = 0; s < S; ++s)
    std::copy(b.qkv.begin() + size_t(b.cu[s]) * 3 * E, b.qkv.begin() + size_t(b.cu[s + 1]) * 3 * E,
              padded.begin() + size_t(s) * L * 3 * E);
  std::vector<float> pout(size_t(S) * L * E), scores(static_cast<size_t>(L));
  xlmr::ref::attention_padded(pout.data(), padded.data(), b.lens.data(), scores.data(), S, L, b.H, b.D);
  for (int s = 0; s < S; ++s)
    std::copy(pout.begin() + size_t(s) * L * E, pout.begin() + (size_t(s) * L + b.lens[size_t(s)]) * E,
              out.begin() + size_t(b.cu[s]) * E);
  return out;
}

// The padded layout of a packed batch: sequence s at rows [s*L, (s+1)*L),
// its real rows copied, the pad rows noise; cu receives the row offsets.
std::vector<float> padded_copy(const AttnBatch& b, int L, std::mt19937& rng, std::vector<int32_t>* cu) {
  const int S = b.n_seqs(), E = b.E;
  std::vector<float> padded = normal_vector(size_t(S) * L * 3 * E, rng);
  cu->assign(size_t(S) + 1, 0);
  for (int s = 0; s <= S; ++s) (*cu)[size_t(s)] = s * L;
  for (int s = 0; s < S; ++s)
    std::copy(b.qkv.begin() + size_t(b.cu[s]) * 3 * E, b.qkv.begin() + size_t(b.cu[s + 1]) * 3 * E,
              padded.begin() + size_t(s) * L * 3 * E);
  return padded;
}

struct AttnRun {
  std::vector<float> out;
  std::vector<uint16_t> out16;
};

// One call of the CPU kernel over `rows` rows of qkv with the given layout.
AttnRun run_attention(Isa isa, const float* qkv, const int32_t* cu, const int32_t* kv_lens, int n_seqs, int rows,
                      int H, int D, bool with_bf16, xlmr::cpu::AttentionWorkspace& ws, int threads,
                      xlmr::cpu::AttentionProducts products = xlmr::cpu::AttentionProducts::f32,
                      xlmr::cpu::Bf16Unit unit = xlmr::cpu::Bf16Unit::none) {
  const size_t n = size_t(rows) * H * D;
  AttnRun r{float_buffer(n), bf16_buffer(n)};
  xlmr::cpu::VarlenAttentionArgs a;
  a.out = r.out.data();
  a.out_bf16 = with_bf16 ? r.out16.data() : nullptr;
  a.qkv = qkv;
  a.cu_seqlens = cu;
  a.kv_lens = kv_lens;
  a.n_seqs = n_seqs;
  a.hidden = H * D;
  a.heads = H;
  a.products = products;
  a.bf16_unit = unit;
  xlmr::cpu::varlen_attention(isa, a, ws, threads);
  CHECK(float_guard_intact(r.out, n));
  CHECK(bf16_guard_intact(r.out16, with_bf16 ? n : 0));
  return r;
}

std::string describe(const AttnBatch& b) {
  std::string s = "H " + std::to_string(b.H) + ", D " + std::to_string(b.D) + ", lengths {";
  for (size_t i = 0; i < b.lens.size(); ++i) s += (i ? "," : "") + std::to_string(b.lens[i]);
  s += "}";
  if (b.qk_scale != 1.0f) s += ", Q and K scaled by " + std::to_string(b.qk_scale);
  return s;
}

// Ragged layout: every ISA x thread count x {no bf16, bf16}, each against the
// reference, RNE for the bf16 copy, and bitwise against the first run of its
// ISA; passing kv_lens equal to the lengths changes nothing.
void check_attention_batch(const AttnBatch& b, const std::vector<Isa>& isas, std::mt19937& rng) {
  const auto want = reference_attention(b, rng);
  const size_t n = size_t(b.rows()) * b.E;
  xlmr::cpu::AttentionWorkspace ws;
  ws.reserve(b.rows(), b.H, b.D, 3);
  for (Isa isa : isas) {
    std::vector<float> first;
    for (bool with_bf16 : {false, true})
      for (int threads : kThreads) {
        INFO("varlen_attention (ragged): " << describe(b) << ", ISA " << xlmr::cpu::to_string(isa) << ", threads "
                                           << threads << ", bf16 " << with_bf16);
        const auto r = run_attention(isa, b.qkv.data(), b.cu.data(), nullptr, b.n_seqs(), b.rows(), b.H, b.D,
                                     with_bf16, ws, threads);
        check_close(r.out.data(), want.data(), n, 2e-5, 0.0);
        if (with_bf16) check_bf16_of(r.out16.data(), r.out.data(), n);
        if (first.empty())
          first = r.out;
        else
          check_same_bits(r.out, first, n);
      }
    INFO("varlen_attention (ragged, explicit kv_lens): " << describe(b) << ", ISA " << xlmr::cpu::to_string(isa));
    const auto r = run_attention(isa, b.qkv.data(), b.cu.data(), b.lens.data(), b.n_seqs(), b.rows(), b.H, b.D,
                                 false, ws, 2);
    check_same_bits(r.out, first, n);
  }
}

TEST_CASE("cpu varlen_attention matches the reference on every ISA and thread count", "[cpu][kernels]") {
  const auto isas = isas_under_test();
  std::mt19937 rng(2024);
  struct Case {
    int heads, head_dim;
    std::vector<int32_t> lens;
    float qk_scale = 1.0f;
  };
  const std::vector<int32_t> mixed = {1, 33, 65, 5, 100, 32};
  const std::vector<Case> cases = {
      // head dim 64, 12 heads (E = 768): one token, then one sequence on each
      // side of the 32-row and 64-key blocks
      {12, 64, {1}},
      {12, 64, {31}},
      {12, 64, {32}},
      {12, 64, {33}},
      {12, 64, {64}},
      {12, 64, {65}},
      {4, 64, {200}},
      {1, 64, {512}},
      {2, 64, {1}},
      {2, 64, {97}},
      // one long sequence among many short ones
      {2, 64, {3, 1, 7, 10, 2, 300, 5, 1, 9, 4, 6, 8, 2, 10, 1, 3}},
      {12, 64, {2, 9, 1, 70, 4, 10, 1, 6}},
      // other head dims, including ones that leave a tail in an AVX-512 and/or AVX2 vector
      {4, 16, mixed},
      {2, 32, mixed},
      {3, 24, mixed},
      {2, 40, mixed},
      {2, 20, mixed},
      {1, 8, {1, 40, 3}},
      // head dims past 8 vectors of one ISA or the other (80: AVX2; 136: both)
      {2, 80, {1, 33, 70}},
      {1, 128, {1, 33, 70}},
      {1, 136, {1, 33, 70}},
      // a peaky softmax (scores spread ~4): the running max moves between key tiles
      {2, 64, {200, 7, 70}, 2.0f},
  };
  for (const auto& c : cases) {
    const AttnBatch b(c.lens, c.heads, c.head_dim, rng, c.qk_scale);
    check_attention_batch(b, isas, rng);
  }
}

TEST_CASE("cpu varlen_attention on the padded layout", "[cpu][kernels]") {
  // Sequence s owns rows [s*L, (s+1)*L) and attends to its first kv_lens[s]
  // rows: real rows must equal the ragged result bit for bit; pad rows are
  // queries over the real keys of their sequence.
  const auto isas = isas_under_test();
  std::mt19937 rng(77);
  struct Case {
    int heads, head_dim, L;
    std::vector<int32_t> lens;
  };
  const std::vector<Case> cases = {
      {12, 64, 70, {5, 33, 1, 64, 17, 70}},
      {2, 64, 130, {129, 2, 64, 65}},
      {3, 24, 40, {1, 31, 33}},
  };
  for (const auto& c : cases) {
    const AttnBatch b(c.lens, c.heads, c.head_dim, rng);
    const int S = b.n_seqs(), L = c.L, E = b.E, D = b.D;
    const auto want = reference_attention(b, rng);

    std::vector<int32_t> cu;
    const std::vector<float> padded = padded_copy(b, L, rng, &cu);

    // Pad rows in double: softmax(q k^T / sqrt(D)) v over the sequence's real keys.
    std::vector<float> pad_want(size_t(S) * L * E, 0.0f);
    const size_t ld = size_t(3) * E;
    for (int s = 0; s < S; ++s)
      for (int i = b.lens[size_t(s)]; i < L; ++i)
        for (int h = 0; h < b.H; ++h) {
          const float* q = padded.data() + (size_t(s) * L + i) * ld + size_t(h) * D;
          const int n = b.lens[size_t(s)];
          std::vector<double> p(static_cast<size_t>(n));
          double mx = -INFINITY, sum = 0.0;
          for (int j = 0; j < n; ++j) {
            const float* k = padded.data() + (size_t(s) * L + j) * ld + E + size_t(h) * D;
            double dot = 0.0;
            for (int d = 0; d < D; ++d) dot += double(q[d]) * k[d];
            p[size_t(j)] = dot / std::sqrt(double(D));
            mx = std::max(mx, p[size_t(j)]);
          }
          for (auto& x : p) sum += (x = std::exp(x - mx));
          for (int d = 0; d < D; ++d) {
            double acc = 0.0;
            for (int j = 0; j < n; ++j) acc += p[size_t(j)] * padded[(size_t(s) * L + j) * ld + 2 * E + size_t(h) * D + d];
            pad_want[(size_t(s) * L + i) * E + size_t(h) * D + d] = float(acc / sum);
          }
        }

    xlmr::cpu::AttentionWorkspace ws;
    ws.reserve(S * L, b.H, D, 3);
    for (Isa isa : isas)
      for (int threads : kThreads) {
        INFO("varlen_attention (padded, L " << L << "): " << describe(b) << ", ISA " << xlmr::cpu::to_string(isa)
                                            << ", threads " << threads);
        const auto ragged = run_attention(isa, b.qkv.data(), b.cu.data(), nullptr, S, b.rows(), b.H, D, false, ws,
                                          threads);
        const auto pr = run_attention(isa, padded.data(), cu.data(), b.lens.data(), S, S * L, b.H, D, true, ws,
                                      threads);
        check_bf16_of(pr.out16.data(), pr.out.data(), size_t(S) * L * E);
        std::vector<float> real(size_t(b.rows()) * E);
        for (int s = 0; s < S; ++s)
          std::copy(pr.out.begin() + size_t(s) * L * E, pr.out.begin() + (size_t(s) * L + b.lens[size_t(s)]) * E,
                    real.begin() + size_t(b.cu[s]) * E);
        check_same_bits(real, ragged.out, real.size());
        check_close(real.data(), want.data(), real.size(), 2e-5, 0.0);
        for (int s = 0; s < S; ++s) {
          const size_t r0 = size_t(s) * L + b.lens[size_t(s)], r1 = size_t(s + 1) * L;
          INFO("pad rows [" << r0 << ", " << r1 << ") of sequence " << s);
          check_close(pr.out.data() + r0 * E, pad_want.data() + r0 * E, (r1 - r0) * E, 2e-5, 0.0);
        }
      }
  }
}

TEST_CASE("cpu varlen_attention: one workspace serves any split of its rows", "[cpu][kernels]") {
  // Reserved once for 300 rows, then used for batches of 300 rows split every
  // way from one sequence to 300 one-token sequences (the most work items),
  // and for smaller batches: the same bits as a workspace fitted to each.
  const auto isas = isas_under_test();
  std::mt19937 rng(5);
  const int H = 2, D = 64;
  xlmr::cpu::AttentionWorkspace shared_ws;
  shared_ws.reserve(300, H, D, 3);
  const std::vector<std::vector<int32_t>> splits = {
      {300}, std::vector<int32_t>(300, 1), std::vector<int32_t>(10, 30), {1, 299}, {33, 33, 33}, {7},
  };
  for (const auto& lens : splits) {
    const AttnBatch b(lens, H, D, rng);
    const size_t n = size_t(b.rows()) * b.E;
    xlmr::cpu::AttentionWorkspace own;
    own.reserve(b.rows(), H, D, 3);
    for (Isa isa : isas)
      for (int threads : kThreads) {
        INFO("shared workspace: " << b.n_seqs() << " sequences, " << b.rows() << " rows, ISA "
                                  << xlmr::cpu::to_string(isa) << ", threads " << threads);
        const auto a = run_attention(isa, b.qkv.data(), b.cu.data(), nullptr, b.n_seqs(), b.rows(), H, D, false,
                                     shared_ws, threads);
        const auto c = run_attention(isa, b.qkv.data(), b.cu.data(), nullptr, b.n_seqs(), b.rows(), H, D, false,
                                     own, threads);
        check_same_bits(a.out, c.out, n);
      }
    if (b.n_seqs() == 300) {
      // 300 one-token sequences: each row is its own V row.
      const auto want = reference_attention(b, rng);
      for (Isa isa : isas) {
        INFO("300 one-token sequences, ISA " << xlmr::cpu::to_string(isa));
        const auto r = run_attention(isa, b.qkv.data(), b.cu.data(), nullptr, b.n_seqs(), b.rows(), H, D, false,
                                     shared_ws, 3);
        check_close(r.out.data(), want.data(), n, 2e-5, 0.0);
      }
    }
  }
}

TEST_CASE("cpu varlen_attention accepts empty batches", "[cpu][kernels]") {
  const auto isas = isas_under_test();
  std::mt19937 rng(11);
  const int H = 12, D = 64;
  xlmr::cpu::AttentionWorkspace ws;
  ws.reserve(64, H, D, 3);
  xlmr::cpu::AttentionWorkspace ws0;
  ws0.reserve(0, H, D, 3);
  const std::vector<float> qkv = normal_vector(size_t(3) * H * D, rng);  // never read
  const int32_t cu0[1] = {0};
  const int32_t cu_empty[3] = {0, 0, 0};
  const int32_t kv_empty[2] = {0, 0};
  for (Isa isa : isas)
    for (int threads : kThreads) {
      INFO("empty batch, ISA " << xlmr::cpu::to_string(isa) << ", threads " << threads);
      run_attention(isa, qkv.data(), cu0, nullptr, 0, 0, H, D, true, ws, threads);
      run_attention(isa, qkv.data(), cu0, nullptr, 0, 0, H, D, true, ws0, threads);
      run_attention(isa, qkv.data(), cu_empty, nullptr, 2, 0, H, D, true, ws, threads);
      run_attention(isa, qkv.data(), cu_empty, kv_empty, 2, 0, H, D, true, ws, threads);
    }

  SECTION("zero-length sequences between real ones") {
    const AttnBatch b({0, 5, 0, 33, 0}, 2, 64, rng);
    check_attention_batch(b, isas, rng);
  }
}

TEST_CASE("cpu varlen_attention: a workspace reserved for shorter sequences refuses longer ones", "[cpu][kernels]") {
  // Reserved for 64 rows in sequences of at most 32 keys: a 40-row sequence,
  // or a padded layout whose kv_lens exceed 32, is an error, not an overrun
  // of the packed key and value scratch; 32 keys still run.
  std::mt19937 rng(13);
  const int H = 2, D = 64;
  xlmr::cpu::AttentionWorkspace ws;
  ws.reserve(64, H, D, 2, 32);
  const AttnBatch ok({32, 20}, H, D, rng), too_long({40}, H, D, rng);
  const int32_t cu_padded[3] = {0, 32, 64}, kv_over[2] = {32, 33};
  const std::vector<float> padded = normal_vector(size_t(64) * 3 * H * D, rng);
  for (Isa isa : isas_under_test()) {
    INFO("ISA " << xlmr::cpu::to_string(isa));
    const auto want = reference_attention(ok, rng);
    const auto r = run_attention(isa, ok.qkv.data(), ok.cu.data(), nullptr, ok.n_seqs(), ok.rows(), H, D, false,
                                 ws, 2);
    check_close(r.out.data(), want.data(), want.size(), 2e-5, 0.0);
    CHECK_THROWS_WITH(run_attention(isa, too_long.qkv.data(), too_long.cu.data(), nullptr, 1, too_long.rows(), H, D,
                                    false, ws, 2),
                      Catch::Contains("sequence longer than the reserved workspace"));
    CHECK_THROWS_WITH(run_attention(isa, padded.data(), cu_padded, kv_over, 2, 64, H, D, false, ws, 2),
                      Catch::Contains("sequence longer than the reserved workspace"));
  }
}

// ---- varlen_attention with bf16 products (AMX, AVX512_BF16) ---------------------

// The units this CPU runs bf16 attention on (head dim 64), each named; a
// warning for each it lacks, so that a run says what it did not test.
std::vector<xlmr::cpu::Bf16Unit> bf16_units_here() {
  using xlmr::cpu::Bf16Unit;
  std::vector<Bf16Unit> units;
  for (Bf16Unit u : {Bf16Unit::amx, Bf16Unit::avx512_bf16}) {
    if (xlmr::cpu::has_bf16_unit(u, Isa::avx512, 64))
      units.push_back(u);
    else
      WARN("skipping bf16 attention on " << xlmr::cpu::to_string(u) << ": this CPU (or its OS) does not run it");
  }
  return units;
}

float bf16_round(float f) { return float_from_bits(uint32_t(bf16_rne(f)) << 16); }

// Attention on the operands the bf16 kernels multiply - Q x 1/sqrt(D), K and
// V each rounded to bf16 - with double sums. What is left between this and
// the kernel is the rounding of each probability to bf16 (2^-9 relative) and
// fp32 summation. Also returns max |V| over the batch, which bounds the
// output error that rounding can cause.
std::vector<float> reference_on_bf16_operands(const AttnBatch& b, double* max_abs_v) {
  const int E = b.E, D = b.D;
  const size_t ld = size_t(3) * E;
  const float scale = 1.0f / std::sqrt(float(D));
  std::vector<float> out(size_t(b.rows()) * E);
  *max_abs_v = 0.0;
  for (int s = 0; s < b.n_seqs(); ++s) {
    const int r0 = b.cu[size_t(s)], n = b.lens[size_t(s)];
    for (int h = 0; h < b.H; ++h)
      for (int i = 0; i < n; ++i) {
        const float* q = b.qkv.data() + size_t(r0 + i) * ld + size_t(h) * D;
        std::vector<double> p(static_cast<size_t>(n));
        double mx = -INFINITY, sum = 0.0;
        for (int j = 0; j < n; ++j) {
          const float* k = b.qkv.data() + size_t(r0 + j) * ld + E + size_t(h) * D;
          double dot = 0.0;
          for (int d = 0; d < D; ++d) dot += double(bf16_round(q[d] * scale)) * double(bf16_round(k[d]));
          mx = std::max(mx, p[size_t(j)] = dot);
        }
        for (auto& x : p) sum += (x = std::exp(x - mx));
        for (int d = 0; d < D; ++d) {
          double acc = 0.0;
          for (int j = 0; j < n; ++j) {
            const double v = bf16_round(b.qkv[size_t(r0 + j) * ld + 2 * E + size_t(h) * D + d]);
            *max_abs_v = std::max(*max_abs_v, std::fabs(v));
            acc += p[size_t(j)] * v;
          }
          out[size_t(r0 + i) * E + size_t(h) * D + d] = float(acc / sum);
        }
      }
  }
  return out;
}

TEST_CASE("cpu varlen_attention with bf16 products against the references", "[cpu][kernels]") {
  using xlmr::cpu::AttentionProducts;
  for (const xlmr::cpu::Bf16Unit unit : bf16_units_here()) {
    std::mt19937 rng(4242);
    struct Case {
      int heads, head_dim;
      std::vector<int32_t> lens;
      float qk_scale = 1.0f;
    };
    const std::vector<Case> cases = {
        // one sequence on each side of the 4-row group, 16-row tile, 32-row
        // block and 64-key tile (below bf16_min_keys: the fp32 kernel)
        {12, 64, {1}}, {4, 64, {15}}, {4, 64, {16}}, {4, 64, {17}}, {4, 64, {31}}, {4, 64, {32}}, {4, 64, {33}},
        {4, 64, {18}}, {4, 64, {19}}, {4, 64, {34}}, {4, 64, {35}}, {4, 64, {36}}, {4, 64, {37}}, {4, 64, {47}},
        {4, 64, {49}},
        {4, 64, {63}}, {4, 64, {64}}, {4, 64, {65}}, {2, 64, {127}}, {2, 64, {129}}, {1, 64, {512}},
        // ragged batches
        {12, 64, {2, 9, 1, 70, 4, 10, 1, 6}},
        {2, 64, {3, 1, 7, 10, 2, 300, 5, 1, 9, 4, 6, 8, 2, 10, 1, 3}},
        // the other head dims it takes: 32 (one A tile of Q), 96 (a partial group of O tiles), 128
        {4, 32, {1, 33, 65, 5, 100, 32}}, {2, 96, {1, 40, 70}}, {2, 128, {1, 33, 90}},
        // a peaky softmax: the running max moves between key tiles
        {2, 64, {200, 7, 70}, 2.0f},
    };
    for (const auto& c : cases) {
      const AttnBatch b(c.lens, c.heads, c.head_dim, rng, c.qk_scale);
      const size_t n = size_t(b.rows()) * b.E;
      double max_v = 0.0;
      const auto want_bf16 = reference_on_bf16_operands(b, &max_v);
      const auto want_f32 = reference_attention(b, rng);
      xlmr::cpu::AttentionWorkspace ws;
      ws.reserve(b.rows(), b.H, b.D, 3, b.max_len());
      const auto f32_kernel = run_attention(Isa::avx512, b.qkv.data(), b.cu.data(), nullptr, b.n_seqs(), b.rows(),
                                            b.H, b.D, false, ws, 2).out;
      std::vector<float> first;
      for (int threads : kThreads) {
        INFO("bf16 products on " << xlmr::cpu::to_string(unit) << ": " << describe(b) << ", threads " << threads);
        // (run_attention checks that nothing past the outputs was written)
        const AttnRun r = run_attention(Isa::avx512, b.qkv.data(), b.cu.data(), nullptr, b.n_seqs(), b.rows(), b.H,
                                        b.D, true, ws, threads, AttentionProducts::bf16, unit);
        check_bf16_of(r.out16.data(), r.out.data(), n);
        for (int s = 0; s < b.n_seqs(); ++s) {
          const size_t at = size_t(b.cu[size_t(s)]) * b.E, len = size_t(b.lens[size_t(s)]) * b.E;
          INFO("sequence " << s << " of " << b.lens[size_t(s)] << " tokens");
          if (b.lens[size_t(s)] < xlmr::cpu::bf16_min_keys(unit)) {
            // Too short for the bf16 kernel to pay: the fp32 kernel's bits.
            check_same_bits(std::vector<float>(r.out.begin() + long(at), r.out.begin() + long(at + len)),
                            std::vector<float>(f32_kernel.begin() + long(at), f32_kernel.begin() + long(at + len)),
                            len);
            continue;
          }
          // The bf16 kernel ran: its roundings show somewhere.
          CHECK_FALSE(std::equal(r.out.begin() + long(at), r.out.begin() + long(at + len),
                                 f32_kernel.begin() + long(at)));
          // Probabilities rounded to bf16 move each output by at most about
          // 2^-9 x max|V|; the worst seen over these cases is a third of that.
          check_close(r.out.data() + at, want_bf16.data() + at, len, max_v / 512.0, 0.0);
          // Against the fp32 reference the rounding of Q, K and V adds to it:
          // worst seen 0.035 (the peaky case), max|V| / 64 is about 0.06.
          check_close(r.out.data() + at, want_f32.data() + at, len, max_v / 64.0, 0.0);
        }
        if (first.empty())
          first = r.out;
        else
          check_same_bits(r.out, first, n);
      }
    }
  }
}

TEST_CASE("cpu varlen_attention with bf16 products: padded layout and refusals", "[cpu][kernels]") {
  using xlmr::cpu::AttentionProducts;
  std::mt19937 rng(99);
  // Head dims it does not take are refused, on any CPU.
  for (int D : {16, 24, 48, 80, 160, 256}) CHECK_FALSE(xlmr::cpu::has_bf16_attention(Isa::avx512, D));
  CHECK_FALSE(xlmr::cpu::has_bf16_attention(Isa::avx2, 64));
  {
    const AttnBatch b({5, 9}, 2, 48, rng);
    xlmr::cpu::AttentionWorkspace ws;
    ws.reserve(b.rows(), b.H, b.D, 2);
    std::vector<float> out(size_t(b.rows()) * b.E);
    xlmr::cpu::VarlenAttentionArgs a{out.data(), nullptr, b.qkv.data(), b.cu.data(), nullptr, b.n_seqs(), b.E, b.H};
    a.products = AttentionProducts::bf16;
    CHECK_THROWS_WITH(xlmr::cpu::varlen_attention(Isa::avx512, a, ws, 2),
                      Catch::Contains("bf16 products need AVX512_BF16 or AMX-BF16"));
    // A unit asked for by name, refused by name.
    a.bf16_unit = xlmr::cpu::Bf16Unit::amx;
    CHECK_THROWS_WITH(xlmr::cpu::varlen_attention(Isa::avx512, a, ws, 2), Catch::Contains("bf16 products need AMX"));
  }
  CHECK_FALSE(xlmr::cpu::has_bf16_unit(xlmr::cpu::Bf16Unit::none, Isa::avx512, 64));
  CHECK(xlmr::cpu::has_bf16_attention(Isa::avx512, 64) ==
        (xlmr::cpu::best_bf16_unit(Isa::avx512, 64) != xlmr::cpu::Bf16Unit::none));
  // Padded: sequence s owns rows [s*L, (s+1)*L) and attends to its first
  // kv_lens[s]; its real rows must equal the ragged result bit for bit.
  for (const xlmr::cpu::Bf16Unit unit : bf16_units_here()) {
    INFO("bf16 products on " << xlmr::cpu::to_string(unit));
    const int H = 4, D = 64, L = 70;
    const AttnBatch b({5, 33, 1, 64, 17, 70}, H, D, rng);
    const int S = b.n_seqs(), E = b.E;
    std::vector<int32_t> cu;
    const std::vector<float> padded = padded_copy(b, L, rng, &cu);
    xlmr::cpu::AttentionWorkspace ws;
    ws.reserve(S * L, H, D, 3, L);
    const auto ragged = run_attention(Isa::avx512, b.qkv.data(), b.cu.data(), nullptr, S, b.rows(), H, D, false, ws,
                                      2, AttentionProducts::bf16, unit).out;
    const auto pout = run_attention(Isa::avx512, padded.data(), cu.data(), b.lens.data(), S, S * L, H, D, false, ws,
                                    3, AttentionProducts::bf16, unit).out;
    std::vector<float> real(size_t(b.rows()) * E);
    for (int s = 0; s < S; ++s)
      std::copy(pout.begin() + size_t(s) * L * E, pout.begin() + (size_t(s) * L + b.lens[size_t(s)]) * E,
                real.begin() + size_t(b.cu[s]) * E);
    check_same_bits(real, ragged, real.size());
    for (size_t i = 0; i < size_t(S) * L * E; ++i) REQUIRE(std::isfinite(pout[i]));  // pad rows too
  }
}

// ---- ISA choice -------------------------------------------------------------

TEST_CASE("cpu ISA choice", "[cpu]") {
  const Isa best = xlmr::cpu::detect_isa();
  CHECK(xlmr::cpu::choose_isa("") == best);
  CHECK(xlmr::cpu::choose_isa("auto") == best);
  CHECK_THROWS_AS(xlmr::cpu::choose_isa("bogus"), xlmr::Error);
  CHECK(std::string(xlmr::cpu::to_string(Isa::avx512)) == "avx512");
  CHECK(std::string(xlmr::cpu::to_string(Isa::avx2)) == "avx2");
  // The detected ISA is always one that choose_isa grants by name.
  CHECK(xlmr::cpu::choose_isa(xlmr::cpu::to_string(best)) == best);
  if (best == Isa::avx512) CHECK(xlmr::cpu::choose_isa("avx2") == Isa::avx2);  // AVX-512 CPUs all have AVX2 + FMA
}

}  // namespace

#endif  // XLMR_HAVE_ONEDNN
