// oneDNN GEMMs of the CPU backend (kernels/cpu/gemm.h) against ref::linear:
// row counts on and between buckets and across the 1024-row chunking,
// every epilogue, with and without bias, f32 and bf16, fine and coarse
// buckets, and rows past M left alone.
#ifdef XLMR_HAVE_ONEDNN

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/linear.h"

namespace {

std::vector<float> randn(size_t n, unsigned seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

uint16_t to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7FFFu + ((b >> 16) & 1u);
  return uint16_t(b >> 16);
}

float from_bf16(uint16_t h) {
  uint32_t b = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

}  // namespace

TEST_CASE("oneDNN GEMMs match ref::linear", "[cpu][gemm]") {
  const int I = 40, O = 24;
  const int max_rows = 1100;
  auto env = xlmr::cpu::make_gemm_env();
  const auto w = randn(size_t(O) * I, 1, 0.3f);
  const auto bias = randn(size_t(O), 2);
  const int padded = xlmr::cpu::gemm_padded_rows(max_rows);
  REQUIRE(padded >= max_rows);
  const auto in = randn(size_t(padded) * I, 3);
  std::vector<char> scratch;

  for (bool coarse : {false, true}) {
    for (xlmr::Epilogue ep : {xlmr::Epilogue::none, xlmr::Epilogue::gelu, xlmr::Epilogue::relu, xlmr::Epilogue::tanh}) {
      for (bool has_bias : {false, true}) {
        xlmr::cpu::GemmSpec spec{I, O, ep, has_bias, xlmr::Precision::f32, false, coarse};
        xlmr::cpu::Gemm g(env, spec, max_rows);
        auto packed = g.pack(w.data(), has_bias ? bias.data() : nullptr);
        scratch.assign(g.scratchpad_bytes() + 64, 0);
        for (int M : {0, 1, 3, 16, 17, 33, 255, 257, 700, 1024, 1025, 1100}) {
          const int rows = xlmr::cpu::gemm_padded_rows(M, coarse);
          std::vector<float> out(size_t(rows + 1) * O, -7.0f), want(size_t(std::max(M, 1)) * O);
          g.run(*packed, in.data(), out.data(), M, scratch.data());
          if (M == 0) {
            CHECK(out[0] == -7.0f);
            continue;
          }
          xlmr::ref::linear(want.data(), in.data(), w.data(), has_bias ? bias.data() : nullptr, M, O, I, ep);
          double d = 0;
          for (size_t i = 0; i < size_t(M) * O; ++i) d = std::max(d, double(std::abs(out[i] - want[i])));
          INFO("M " << M << " epilogue " << int(ep) << " bias " << has_bias << " coarse " << coarse);
          CHECK(d <= 1e-4);
          // Nothing is written past the padded rows the header promises.
          CHECK(out[size_t(rows) * O] == -7.0f);
        }
      }
    }
  }
}

TEST_CASE("bf16 GEMMs: bf16 inputs, fp32 accumulation, f32 or bf16 output", "[cpu][gemm][bf16]") {
  if (!__builtin_cpu_supports("avx512bw")) {
    WARN("no AVX-512: bf16 GEMMs not run");
    return;
  }
  const int I = 64, O = 48, M = 37;
  auto env = xlmr::cpu::make_gemm_env();
  const auto w = randn(size_t(O) * I, 4, 0.2f);
  const auto bias = randn(size_t(O), 5);
  const int rows = xlmr::cpu::gemm_padded_rows(M);
  const auto in = randn(size_t(rows) * I, 6);
  // The exact answer for bf16-rounded operands, accumulated in double.
  std::vector<uint16_t> in16(in.size());
  std::vector<float> in_r(in.size()), w_r(w.size());
  for (size_t i = 0; i < in.size(); ++i) in_r[i] = from_bf16(in16[i] = to_bf16(in[i]));
  for (size_t i = 0; i < w.size(); ++i) w_r[i] = from_bf16(to_bf16(w[i]));
  std::vector<float> want(size_t(M) * O);
  xlmr::ref::linear(want.data(), in_r.data(), w_r.data(), bias.data(), M, O, I, xlmr::Epilogue::gelu);

  for (bool bf16_out : {false, true}) {
    xlmr::cpu::Gemm g(env, {I, O, xlmr::Epilogue::gelu, true, xlmr::Precision::bf16, bf16_out, false}, 64);
    auto packed = g.pack(w.data(), bias.data());
    std::vector<char> scratch(g.scratchpad_bytes() + 64);
    std::vector<float> out32(size_t(rows) * O);
    std::vector<uint16_t> out16(size_t(rows) * O);
    g.run(*packed, in16.data(), bf16_out ? static_cast<void*>(out16.data()) : out32.data(), M, scratch.data());
    double d = 0;
    for (size_t i = 0; i < size_t(M) * O; ++i) {
      const float got = bf16_out ? from_bf16(out16[i]) : out32[i];
      // fp32 accumulation of exact bf16 products; a bf16 output adds one rounding.
      const double tol = bf16_out ? 1e-4 + std::abs(want[i]) / 128.0 : 1e-4;
      d = std::max(d, std::abs(double(got) - want[i]) - tol);
    }
    INFO("bf16 output " << bf16_out);
    CHECK(d <= 0);
  }
}

#endif  // XLMR_HAVE_ONEDNN
