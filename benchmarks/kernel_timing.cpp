#include "benchmarks/kernel_timing.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include "engine/error.h"

#ifdef XLMR_HAVE_ONEDNN
#include "kernels/cpu/cpu_kernels.h"
#endif

namespace bench {

#ifdef XLMR_HAVE_ONEDNN

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

AttentionKernelTiming time_attention_kernels(const Workload& w, int hidden, int heads, int threads, int min_pairs,
                                             double min_time) {
  using xlmr::cpu::AttentionProducts;
  XLMR_CHECK(heads >= 1 && hidden % heads == 0, "attention kernel timing: hidden size not divisible by the heads");
  const xlmr::cpu::Isa isa = xlmr::cpu::detect_isa();
  const int D = hidden / heads;
  const xlmr::cpu::Bf16Unit unit = xlmr::cpu::best_bf16_unit(isa, D);
  XLMR_CHECK(unit != xlmr::cpu::Bf16Unit::none,
             "attention kernel timing: bf16 products need AVX512_BF16 or AMX-BF16 and a head dim of 32, 64, 96 or "
             "128 (this model's is " + std::to_string(D) + ")");

  AttentionKernelTiming t;
  t.workload = w.name;
  t.unit = xlmr::cpu::to_string(unit);
  t.n_seqs = int(w.seqs.size());
  t.n_tokens = w.n_tokens();
  std::vector<int32_t> cu{0};
  double squares = 0;
  for (const auto& s : w.seqs) {
    cu.push_back(cu.back() + int32_t(s.size()));
    squares += double(s.size()) * double(s.size());
  }
  t.flops = 4.0 * squares * hidden;
  const int rows = cu.back();

  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> qkv(size_t(rows) * 3 * hidden), out(size_t(rows) * hidden);
  for (float& x : qkv) x = normal(rng);
  xlmr::cpu::AttentionWorkspace ws;
  ws.reserve(rows, heads, D, threads, w.longest());
  xlmr::cpu::VarlenAttentionArgs a{out.data(), nullptr, qkv.data(), cu.data(), nullptr, t.n_seqs, hidden, heads};

  using clock = std::chrono::steady_clock;
  auto call = [&](AttentionProducts p) {
    a.products = p;
    const auto t0 = clock::now();
    xlmr::cpu::varlen_attention(isa, a, ws, threads);
    return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  };
  call(AttentionProducts::f32);
  call(AttentionProducts::bf16);
  std::vector<double> f32, bf16;
  const auto start = clock::now();
  while (int(f32.size()) < min_pairs || std::chrono::duration<double>(clock::now() - start).count() < min_time) {
    f32.push_back(call(AttentionProducts::f32));
    bf16.push_back(call(AttentionProducts::bf16));
  }
  t.pairs = int(f32.size());
  t.f32_ms = median(f32);
  t.bf16_ms = median(bf16);
  return t;
}

#else

AttentionKernelTiming time_attention_kernels(const Workload&, int, int, int, int, double) {
  XLMR_THROW("attention kernel timing: this build has no fused CPU path (no oneDNN)");
}

#endif

}  // namespace bench
