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

#include "engine/int8_equalize.h"
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

TEST_CASE("int8 GEMMs: the quantized product exactly, and near the f32 one", "[cpu][gemm][int8]") {
  const int I = 96, O = 40;
  auto env = xlmr::cpu::make_gemm_env();
  auto w = randn(size_t(O) * I, 7, 0.2f);
  for (int i = 0; i < I; ++i) w[size_t(3) * I + i] = 0.0f;  // an output channel of zeros
  const auto bias = randn(size_t(O), 8);
  const int max_rows = 1100;
  const int padded = xlmr::cpu::gemm_padded_rows(max_rows);
  auto in = randn(size_t(padded) * I, 9);
  for (int i = 0; i < I; ++i) in[size_t(2) * I + i] = 0.0f;  // a token of zeros
  in[size_t(4) * I + 5] = 60.0f;                              // an outlier: only its own row is coarser
  // Input channel scales s (equalization): W diag(s) is quantized, x diag(1 / s) too.
  // (Mild ones here, on inputs that need none; what they are for is tested below.)
  std::vector<float> in_scale, in_mul;
  std::mt19937 rng(10);
  std::uniform_real_distribution<float> log_s(-0.35f, 0.35f);
  for (int i = 0; i < I; ++i) {
    in_scale.push_back(std::exp(log_s(rng)));
    in_mul.push_back(1.0f / in_scale.back());
  }
  for (bool equalized : {false, true}) {
    // What the header promises: weights per output channel (int8), tokens per row (uint8, zero point).
    std::vector<float> wsc(w);
    if (equalized)
      for (int o = 0; o < O; ++o)
        for (int i = 0; i < I; ++i) wsc[size_t(o) * I + i] = w[size_t(o) * I + i] * in_scale[size_t(i)];
    std::vector<int8_t> wq(w.size());
    std::vector<uint8_t> xq(in.size());
    std::vector<float> ws(static_cast<size_t>(O)), xs(static_cast<size_t>(padded));
    std::vector<int32_t> xz(static_cast<size_t>(padded));
    xlmr::ref::quantize_rows_s8(wq.data(), ws.data(), wsc.data(), O, I, float(xlmr::cpu::int8_weight_max()));
    xlmr::ref::quantize_rows_u8(xq.data(), xs.data(), xz.data(), in.data(), padded, I,
                                equalized ? in_mul.data() : nullptr);
    for (auto isa : {xlmr::cpu::Isa::avx512, xlmr::cpu::Isa::avx2}) {
      if (isa == xlmr::cpu::Isa::avx512 && !__builtin_cpu_supports("avx512bw")) continue;
      for (xlmr::Epilogue ep : {xlmr::Epilogue::none, xlmr::Epilogue::gelu}) {
        for (bool has_bias : {false, true}) {
          xlmr::cpu::GemmSpec spec{I, O, ep, has_bias, xlmr::Precision::int8, false, false, isa};
          xlmr::cpu::Gemm g(env, spec, max_rows);
          auto packed = g.pack(w.data(), has_bias ? bias.data() : nullptr, equalized ? in_scale.data() : nullptr);
          std::vector<char> scratch(g.scratchpad_bytes() + 64);
          for (int M : {0, 1, 5, 17, 300, 1024, 1100}) {
            const int rows = xlmr::cpu::gemm_padded_rows(M);
            std::vector<float> out(size_t(rows + 1) * O, -7.0f);
            g.run(*packed, in.data(), out.data(), M, scratch.data());
            INFO("ISA " << xlmr::cpu::to_string(isa) << ", M " << M << ", gelu " << (ep == xlmr::Epilogue::gelu)
                        << ", bias " << has_bias << ", equalized " << equalized);
            CHECK(out[size_t(rows) * O] == -7.0f);
            if (M == 0) continue;
            std::vector<float> f32(size_t(M) * O);
            xlmr::ref::linear(f32.data(), in.data(), w.data(), has_bias ? bias.data() : nullptr, M, O, I, ep);
            double worst_exact = 0, dot = 0, n1 = 0, n2 = 0;
            for (int m = 0; m < M; ++m) {
              for (int o = 0; o < O; ++o) {
                long long acc = 0;
                for (int i = 0; i < I; ++i)
                  acc += (int(xq[size_t(m) * I + i]) - xz[size_t(m)]) * int(wq[size_t(o) * I + i]);
                double want = double(acc) * ws[size_t(o)] * xs[size_t(m)] + (has_bias ? bias[size_t(o)] : 0.0);
                if (ep == xlmr::Epilogue::gelu) want = xlmr::ref::gelu(float(want));
                const double got = out[size_t(m) * O + o];
                // Exact int32 sums; fp32 scaling (two roundings) and GELU's approximation.
                worst_exact = std::max(worst_exact, std::abs(got - want) - 1e-5 * std::max(1.0, std::abs(want)));
                const double ref = f32[size_t(m) * O + o];
                dot += got * ref;
                n1 += got * got;
                n2 += ref * ref;
              }
              if (!has_bias) CHECK(out[size_t(m) * O + 3] == 0.0f);  // the channel of zeros
            }
            CHECK(worst_exact <= 0);
            CHECK(dot / std::sqrt(n1 * n2) >= 0.999);
          }
        }
      }
    }
  }
  // Rows never mix: a row's result is the same alone as in a batch.
  xlmr::cpu::Gemm g(env, {I, O, xlmr::Epilogue::gelu, true, xlmr::Precision::int8, false, false,
                          xlmr::cpu::Isa::avx2}, 64);
  auto packed = g.pack(w.data(), bias.data());
  std::vector<char> scratch(g.scratchpad_bytes() + 64);
  std::vector<float> batch(size_t(xlmr::cpu::gemm_padded_rows(40)) * O), alone(static_cast<size_t>(O));
  g.run(*packed, in.data(), batch.data(), 40, scratch.data());
  for (int m : {0, 4, 39}) {
    g.run(*packed, in.data() + size_t(m) * I, alone.data(), 1, scratch.data());
    CHECK(std::memcmp(alone.data(), batch.data() + size_t(m) * O, sizeof(float) * O) == 0);
  }
  CHECK_THROWS(xlmr::cpu::Gemm(env, {I, O, xlmr::Epilogue::tanh, true, xlmr::Precision::int8, false, false}, 8));
  // Input channel scales: int8 only, and positive.
  xlmr::cpu::Gemm g32(env, {I, O, xlmr::Epilogue::none, false, xlmr::Precision::f32, false, false}, 8);
  CHECK_THROWS_WITH(g32.pack(w.data(), nullptr, in_scale.data()), Catch::Matchers::Contains("for int8"));
  in_scale[7] = 0.0f;
  CHECK_THROWS_WITH(g.pack(w.data(), bias.data(), in_scale.data()), Catch::Matchers::Contains("positive"));
  CHECK_THROWS_WITH(xlmr::cpu::Gemm(env, {70000, 8, xlmr::Epilogue::none, false, xlmr::Precision::int8, false, false}, 8),
                    Catch::Matchers::Contains("could overflow int32"));
}

TEST_CASE("int8 GEMMs with input channel scales: a matrix of many rows packs as exactly as a small one",
          "[cpu][gemm][int8]") {
  // pack() scales and quantizes the weights a block of rows at a time; 600
  // rows cross its blocks. The product must still be the exact one of the
  // whole scaled matrix, quantized row by row.
  const int I = 48, O = 600, M = 5;
  auto env = xlmr::cpu::make_gemm_env();
  const auto w = randn(size_t(O) * I, 31, 0.2f);
  const auto x = randn(size_t(xlmr::cpu::gemm_padded_rows(M)) * I, 32);
  std::vector<float> s, mul;
  for (int i = 0; i < I; ++i) {
    s.push_back(0.5f + 0.03f * float(i));
    mul.push_back(1.0f / s.back());
  }
  std::vector<float> wsc(w.size());
  for (int o = 0; o < O; ++o)
    for (int i = 0; i < I; ++i) wsc[size_t(o) * I + i] = w[size_t(o) * I + i] * s[size_t(i)];
  std::vector<int8_t> wq(w.size());
  std::vector<float> ws(static_cast<size_t>(O)), xs(static_cast<size_t>(M));
  std::vector<uint8_t> xq(size_t(M) * I);
  std::vector<int32_t> xz(static_cast<size_t>(M));
  xlmr::ref::quantize_rows_s8(wq.data(), ws.data(), wsc.data(), O, I, float(xlmr::cpu::int8_weight_max()));
  xlmr::ref::quantize_rows_u8(xq.data(), xs.data(), xz.data(), x.data(), M, I, mul.data());
  xlmr::cpu::Gemm g(env, {I, O, xlmr::Epilogue::none, false, xlmr::Precision::int8, false, false}, 8);
  auto packed = g.pack(w.data(), nullptr, s.data());
  std::vector<char> scratch(g.scratchpad_bytes() + 64);
  std::vector<float> out(size_t(xlmr::cpu::gemm_padded_rows(M)) * O);
  g.run(*packed, x.data(), out.data(), M, scratch.data());
  double worst = 0;
  for (int m = 0; m < M; ++m)
    for (int o = 0; o < O; ++o) {
      long long acc = 0;
      for (int i = 0; i < I; ++i) acc += (int(xq[size_t(m) * I + i]) - xz[size_t(m)]) * int(wq[size_t(o) * I + i]);
      const double want = double(acc) * ws[size_t(o)] * xs[size_t(m)];
      worst = std::max(worst, std::abs(out[size_t(m) * O + o] - want) - 1e-5 * std::max(1.0, std::abs(want)));
    }
  CHECK(worst <= 0);
}

TEST_CASE("int8 equalization: ranges and scales from the weights; a GEMM with outlier channels",
          "[cpu][gemm][int8]") {
  using Catch::Matchers::WithinRel;
  // A LayerNorm's output: 3 |gamma| + |beta|.
  const float g[] = {1.0f, -2.0f, 0.0f}, b[] = {0.0f, 1.0f, 0.0f};
  CHECK(xlmr::layernorm_output_range(g, b, 3) == std::vector<float>{3.0f, 7.0f, 0.0f});
  // y = W x + c over it: mean W.beta + c, spread ||W_r * gamma||.
  const float w2[] = {1.0f, 2.0f, 0.0f, -1.0f}, c2[] = {0.5f, 0.0f}, g2[] = {1.0f, 2.0f}, b2[] = {1.0f, 0.0f};
  const auto lin = xlmr::linear_output_range(w2, c2, 2, 2, g2, b2, false);
  CHECK_THAT(lin[0], WithinRel(1.5 + 3.0 * std::sqrt(17.0), 1e-6));
  CHECK_THAT(lin[1], WithinRel(6.0, 1e-6));
  const auto gel = xlmr::linear_output_range(w2, c2, 2, 2, g2, b2, true);  // GELU(-x) is near 0 for large x
  CHECK_THAT(gel[0], WithinRel(1.5 + 3.0 * std::sqrt(17.0), 1e-6));
  CHECK_THAT(gel[1], WithinRel(6.0 * 0.5 * (1.0 + std::erf(6.0 / std::sqrt(2.0))), 1e-6));
  // s = sqrt(range / max |W column|), geometric mean 1 over the channels that have both.
  const float w4[] = {2.0f, 1.0f, 5.0f, 0.0f, -1.0f, 0.5f, 1.0f, 0.0f};  // [2, 4]
  const auto s4 = xlmr::int8_equalization_scales({4.0f, 1.0f, 0.0f, 9.0f}, w4, 2, 4);
  CHECK_THAT(s4[0], WithinRel(std::pow(2.0, 0.25), 1e-6));
  CHECK_THAT(s4[1], WithinRel(std::pow(2.0, -0.25), 1e-6));
  CHECK(s4[2] == 1.0f);  // its range is 0
  CHECK(s4[3] == 1.0f);  // its weights are 0
  const float w1[] = {1.0f, 1.0f};
  const auto far = xlmr::int8_equalization_scales({1e16f, 1.0f}, w1, 1, 2);  // held within 1000x of the mean
  CHECK_THAT(far[0], WithinRel(1000.0, 1e-5));
  CHECK_THAT(far[1], WithinRel(0.001, 1e-5));
  CHECK_THROWS(xlmr::int8_equalization_scales({1.0f}, w1, 1, 2));

  // Three input channels 40x the others in every token, with weights 40x
  // smaller (so they do not drown the rest of the product): unequalized,
  // each token's 255 steps go to them; equalized, the product stays near f32's.
  const int I = 256, O = 64, M = 64;
  auto env = xlmr::cpu::make_gemm_env();
  auto w = randn(size_t(O) * I, 11, 0.05f);
  auto x = randn(size_t(xlmr::cpu::gemm_padded_rows(M)) * I, 12);
  std::vector<float> range(static_cast<size_t>(I), 3.0f);
  for (int c : {3, 100, 200}) {
    range[size_t(c)] = 120.0f;
    for (int m = 0; m < M; ++m) x[size_t(m) * I + c] *= 40.0f;
    for (int o = 0; o < O; ++o) w[size_t(o) * I + c] /= 40.0f;
  }
  std::vector<float> f32(size_t(M) * O);
  xlmr::ref::linear(f32.data(), x.data(), w.data(), nullptr, M, O, I, xlmr::Epilogue::none);
  const auto s = xlmr::int8_equalization_scales(range, w.data(), O, I);
  double cosine[2];
  for (bool equalized : {false, true}) {
    xlmr::cpu::Gemm gm(env, {I, O, xlmr::Epilogue::none, false, xlmr::Precision::int8, false, false}, M);
    auto packed = gm.pack(w.data(), nullptr, equalized ? s.data() : nullptr);
    std::vector<char> scratch(gm.scratchpad_bytes() + 64);
    std::vector<float> out(size_t(xlmr::cpu::gemm_padded_rows(M)) * O);
    gm.run(*packed, x.data(), out.data(), M, scratch.data());
    double dot = 0, n1 = 0, n2 = 0;
    for (size_t i = 0; i < f32.size(); ++i) {
      dot += double(out[i]) * f32[i];
      n1 += double(out[i]) * out[i];
      n2 += double(f32[i]) * f32[i];
    }
    cosine[equalized] = dot / std::sqrt(n1 * n2);
  }
  INFO("cosine to f32: unequalized " << cosine[0] << ", equalized " << cosine[1]);
  CHECK(cosine[1] >= 0.9995);
  CHECK(cosine[0] < 0.999);
}

#endif  // XLMR_HAVE_ONEDNN
